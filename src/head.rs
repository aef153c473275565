//! HTTP/1.1 header fields as the handshake uses them: parsed once by
//! httparse and kept as offsets into the head's own bytes, looked up in
//! place.
//!
//! A session's handshake reads two heads (the client's request and the
//! upstream's 101) and writes two. Copying their fields into
//! `http::HeaderMap`s cost about 17 allocations and 8,000 instructions per
//! session, an eighth of wspulse's user-space work on a session's setup
//! (bench/README.md). Field names are compared ASCII-case-insensitively, as
//! HTTP says; httparse has already refused any name or value that is not
//! valid HTTP, so every field kept here is.
//!
//! Also the handshake's keys (RFC 6455 §4), built on the stack.

use std::ops::Range;

/// Where each field of a parsed head sits in the bytes it was parsed from.
#[derive(Debug, Default)]
pub struct Spans(Vec<(Range<u32>, Range<u32>)>);

impl Spans {
    /// The positions of `parsed`, fields httparse found in `bytes`. A field
    /// that does not lie within `bytes` is skipped.
    pub fn of(bytes: &[u8], parsed: &[httparse::Header<'_>]) -> Spans {
        let base = bytes.as_ptr() as usize;
        let span = |s: &[u8]| -> Option<Range<u32>> {
            let start = (s.as_ptr() as usize).checked_sub(base)?;
            let end = start.checked_add(s.len()).filter(|&e| e <= bytes.len())?;
            Some(u32::try_from(start).ok()?..u32::try_from(end).ok()?)
        };
        // Sized up front: collecting from `filter_map` would start small
        // and grow, a reallocation per head.
        let mut spans = Vec::with_capacity(parsed.len());
        spans.extend(
            parsed
                .iter()
                .filter_map(|h| Some((span(h.name.as_bytes())?, span(h.value)?))),
        );
        Spans(spans)
    }
}

/// A head's bytes and its fields.
#[derive(Debug, Default)]
pub struct Fields {
    bytes: Vec<u8>,
    spans: Vec<(Range<u32>, Range<u32>)>,
}

impl Fields {
    /// The fields at `spans` (taken with [`Spans::of`] from these bytes, or
    /// from a longer buffer they begin); spans past the end are dropped.
    pub fn new(bytes: Vec<u8>, spans: Spans) -> Fields {
        let mut spans = spans.0;
        spans.retain(|(n, v)| n.end as usize <= bytes.len() && v.end as usize <= bytes.len());
        Fields { bytes, spans }
    }

    /// Every field in the order received: name as sent, value.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans.iter().map(|(n, v)| {
            (
                &self.bytes[n.start as usize..n.end as usize],
                &self.bytes[v.start as usize..v.end as usize],
            )
        })
    }

    /// The values of every field named `name` (lowercase), in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The first value of `name`.
    pub fn get<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
        self.get_all(name).next()
    }

    /// Whether a comma-separated field (`Connection`, `Upgrade`) lists
    /// `token`, in any of its lines, case-insensitively.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name).any(|v| list_has(v, token.as_bytes()))
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// Whether the comma-separated list `value` holds `item`, ignoring case
/// and the spaces around items.
pub fn list_has(value: &[u8], item: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(item))
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2):
/// base64 of the SHA-1 of the key and the protocol's GUID, built on the
/// stack (tungstenite's `derive_accept_key` returns a `String`).
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    use sha1::Digest as _;
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut sha1 = sha1::Sha1::new();
    sha1.update(key);
    sha1.update(GUID);
    let mut out = [0u8; 28];
    data_encoding::BASE64.encode_mut(&sha1.finalize(), &mut out);
    out
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64 (RFC 6455 §4.1).
pub fn new_key() -> [u8; 24] {
    let mut out = [0u8; 24];
    data_encoding::BASE64.encode_mut(&rand::random::<[u8; 16]>(), &mut out);
    out
}

/// A request head's fields from `(name, value)` lines, as the listener
/// keeps them: for the unit tests of the modules that read them.
#[cfg(test)]
pub(crate) fn fields_of(lines: &[(&str, &str)]) -> Fields {
    let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
    for (k, v) in lines {
        raw.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    let mut slots = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut slots);
    assert!(req.parse(&raw).expect("valid").is_complete());
    let spans = Spans::of(&raw, req.headers);
    Fields::new(raw.clone(), spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Fields {
        let mut slots = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut slots);
        assert!(req.parse(raw).expect("valid").is_complete());
        // Offsets, not pointers: they hold in a copy of the bytes too.
        let spans = Spans::of(raw, req.headers);
        Fields::new(raw.to_vec(), spans)
    }

    #[test]
    fn lookups_ignore_case_and_keep_order() {
        let f = parse(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\n\
              UPGRADE: WebSocket\r\nx-a: 1\r\nX-A: 2\r\n\r\n",
        );
        assert_eq!(f.len(), 5);
        assert_eq!(f.get("host"), Some(&b"h"[..]));
        assert_eq!(f.get("x-a"), Some(&b"1"[..]));
        assert_eq!(f.get_all("x-a").collect::<Vec<_>>(), [&b"1"[..], b"2"]);
        assert_eq!(f.get("cookie"), None);
        assert!(f.has_token("connection", "upgrade"));
        assert!(f.has_token("upgrade", "websocket"));
        assert!(!f.has_token("connection", "close"));
        let names: Vec<&[u8]> = f.iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [&b"Host"[..], b"Connection", b"UPGRADE", b"x-a", b"X-A"]
        );
    }

    #[test]
    fn fields_outside_the_bytes_are_dropped() {
        let raw = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n";
        let mut slots = [httparse::EMPTY_HEADER; 4];
        let mut req = httparse::Request::new(&mut slots);
        req.parse(raw).expect("valid");
        let elsewhere = raw.to_vec();
        assert_eq!(Spans::of(&elsewhere, req.headers).0.len(), 0);
        let spans = Spans::of(raw, req.headers);
        let cut = raw.iter().position(|&b| b == b'B').expect("B");
        let f = Fields::new(raw[..cut].to_vec(), spans);
        assert_eq!(f.iter().collect::<Vec<_>>(), [(&b"A"[..], &b"1"[..])]);
    }

    #[test]
    fn lists() {
        assert!(list_has(b"a, B ,c", b"b"));
        assert!(list_has(b"upgrade", b"Upgrade"));
        assert!(!list_has(b"upgrades", b"upgrade"));
        assert!(!list_has(b"", b"upgrade"));
    }

    #[test]
    fn keys_are_rfc_6455s() {
        // The example of RFC 6455 §1.3.
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        assert_eq!(data_encoding::BASE64.decode(&a).map(|k| k.len()), Ok(16));
    }
}
