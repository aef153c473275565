use super::*;

use crate::tls::tests::TempFile;

fn pair_pem(name: &str) -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

#[test]
fn a_matching_pair_loads_with_its_expiry_and_serial() {
    let (cert, key) = pair_pem("localhost");
    let (c, k) = (
        TempFile::new("certs-ok-c", &cert),
        TempFile::new("certs-ok-k", &key),
    );
    let pair = load(&c.0, &k.0).unwrap();
    // rcgen's default validity ends in 4096.
    assert!(pair.not_after > 4_000_000_000, "{}", pair.not_after);
    assert!(!pair.serial.is_empty());
    assert!(pair.serial.bytes().all(|b| b.is_ascii_hexdigit()));
    let live = LiveCert::new(pair.clone());
    assert!(server_config(live.clone()).is_ok());
    let (cert2, key2) = pair_pem("localhost");
    let (c2, k2) = (
        TempFile::new("certs-ok-c2", &cert2),
        TempFile::new("certs-ok-k2", &key2),
    );
    let next = load(&c2.0, &k2.0).unwrap();
    live.swap(next.clone());
    assert_eq!(live.current().serial, next.serial);
    assert_ne!(next.serial, pair.serial);
}

#[test]
fn each_broken_file_is_named() {
    let (cert, key) = pair_pem("localhost");
    let (_, other_key) = pair_pem("localhost");
    let c = TempFile::new("certs-c", &cert);
    let k = TempFile::new("certs-k", &key);
    let other = TempFile::new("certs-other", &other_key);
    let junk = TempFile::new("certs-junk", "not PEM at all\n");
    let e = load(&c.0, &other.0).unwrap_err();
    assert!(matches!(e, Error::Mismatch { .. }), "{e}");
    assert!(
        e.to_string().contains("does not match the certificate"),
        "{e}"
    );
    let e = load(&junk.0, &k.0).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}: no certificate found", junk.0.display())
    );
    let e = load(&c.0, &junk.0).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}: no private key found", junk.0.display())
    );
    // A key where the certificate should be: no certificate in it.
    let e = load(&k.0, &k.0).unwrap_err();
    assert!(e.to_string().contains("no certificate found"), "{e}");
    let missing = Path::new("/nonexistent/wspulse-cert.pem");
    let e = load(missing, &k.0).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot read /nonexistent/wspulse-cert.pem: "),
        "{e}"
    );
    let corrupt = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let corrupt = TempFile::new("certs-corrupt", corrupt);
    let e = load(&corrupt.0, &k.0).unwrap_err();
    assert!(e.to_string().contains("bad certificate"), "{e}");
}
