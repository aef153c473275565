//! Fuzz the PROXY protocol header parser ([`wspulse::proxy_header::parse`]),
//! the first code that reads a connection's bytes when
//! `listen.proxy_protocol` is on, before TLS or HTTP.
//!
//! Checked for every input: no panic; a complete header's length is at
//! least its fixed part and, for version 1, within the 107 bytes the spec
//! allows and the bytes given (the reader consumes exactly that many); the
//! answer does not change when more bytes follow a complete header (what
//! the client sends behind it is not the header's business); and every
//! prefix of an input that is incomplete or complete is itself incomplete
//! or complete with the same answer, never invalid: the reader consumes an
//! incomplete header's bytes, so "incomplete" must never be taken back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wspulse::proxy_header::{MAX_NEEDED, Parsed, V1_MAX, V2_SIGNATURE, parse};

fuzz_target!(|data: &[u8]| {
    let answer = parse(data);
    if let Parsed::Complete { len, .. } = answer {
        if data.starts_with(&V2_SIGNATURE) {
            assert!(len >= 16, "v2 header shorter than its fixed part: {len}");
        } else {
            assert!(len <= V1_MAX && len <= data.len(), "v1 length {len}");
            assert!(data[..len].ends_with(b"\r\n"));
        }
        let mut more = data.to_vec();
        more.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(parse(&more), answer, "bytes behind a header changed it");
    }
    if !matches!(answer, Parsed::Invalid(_)) {
        for n in 0..data.len().min(MAX_NEEDED) {
            let prefix = parse(&data[..n]);
            assert!(
                prefix == Parsed::Incomplete || prefix == answer,
                "prefix of {n} bytes: {prefix:?}, whole: {answer:?}"
            );
        }
    }
});
