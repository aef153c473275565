//! TLS client settings for `wss://` upstreams: the Mozilla roots plus the
//! certificates of `upstream.ca_file`, verified with ring.
//!
//! A leaf: it imports nothing from the crate. `config` builds it once to
//! refuse a bad `upstream.ca_file` at start (so `wspulse check` reports it,
//! not the first dial), and the listener builds the one the dials share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ClientConfig;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Why the TLS client settings cannot be built; each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CA file cannot be opened or read.
    #[error("cannot read {}: {reason}", path.display())]
    Read {
        /// The CA file.
        path: PathBuf,
        /// The I/O error, as text.
        reason: String,
    },
    /// A PEM section of the CA file cannot be decoded.
    #[error("{}: bad PEM: {reason}", path.display())]
    Pem {
        /// The CA file.
        path: PathBuf,
        /// What the PEM decoder said.
        reason: String,
    },
    /// A certificate of the CA file is not a usable trust anchor.
    #[error("{}: bad certificate: {source}", path.display())]
    Certificate {
        /// The CA file.
        path: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The CA file holds no certificate at all: almost surely the wrong file.
    #[error("{}: no certificate found", path.display())]
    Empty {
        /// The CA file.
        path: PathBuf,
    },
    /// rustls refused the protocol versions of the ring provider.
    #[error("{0}")]
    Provider(rustls::Error),
}

/// TLS client settings for `wss://` upstreams: the Mozilla roots (webpki)
/// plus the PEM certificates of `ca_file`, verified with ring.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let mut added = 0;
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| Error::Read {
            path: path.into(),
            reason: e.to_string(),
        })?;
        for cert in certs {
            let cert = cert.map_err(|e| Error::Pem {
                path: path.into(),
                reason: e.to_string(),
            })?;
            roots.add(cert).map_err(|source| Error::Certificate {
                path: path.into(),
                source,
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(Error::Empty { path: path.into() });
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Error::Provider)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A file of its own under the temp dir, removed when dropped (also
    /// the certificate tests' files).
    pub(crate) struct TempFile(pub(crate) PathBuf);

    impl TempFile {
        pub(crate) fn new(name: &str, text: &str) -> TempFile {
            let path = std::env::temp_dir().join(format!(
                "wspulse-tls-unit-{}-{name}.pem",
                std::process::id()
            ));
            std::fs::write(&path, text).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn without_a_ca_file_the_mozilla_roots_suffice() {
        assert!(client_config(None).is_ok());
    }

    #[test]
    fn a_ca_file_with_a_certificate_is_trusted() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let file = TempFile::new("good", &ck.cert.pem());
        assert!(client_config(Some(&file.0)).is_ok());
    }

    #[test]
    fn a_missing_file_is_named() {
        let path = Path::new("/nonexistent/wspulse-ca.pem");
        let e = client_config(Some(path)).unwrap_err();
        assert!(matches!(e, Error::Read { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("cannot read /nonexistent/wspulse-ca.pem: "),
            "{e}"
        );
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let file = TempFile::new("empty", "not a certificate\n");
        let e = client_config(Some(&file.0)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: no certificate found", file.0.display())
        );
    }

    #[test]
    fn a_corrupt_certificate_is_refused() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let file = TempFile::new("corrupt", pem);
        let e = client_config(Some(&file.0)).unwrap_err();
        assert!(matches!(e, Error::Certificate { .. }), "{e:?}");
        assert!(e.to_string().contains(": bad certificate: "), "{e}");
    }
}
