//! WebSocket frames and the upgrade handshake by hand, for the permessage-deflate line of
//! bench/run (RFC 6455 §5.2, RFC 7692). tungstenite 0.30 has no permessage-deflate and
//! refuses any frame with RSV1 set, so the load generator's `throughput-deflate` client and
//! the echo server's `--deflate` mode speak the wire format themselves. Shared by both
//! binaries (`mod pmd;` in each).

/// The extension both sides use: each message compressed on its own in both directions, so
/// a message's compressed bytes do not depend on the messages before it. The load generator
/// offers it and the echo answers with it.
pub const DEFLATE_NO_TAKEOVER: &str =
    "permessage-deflate; client_no_context_takeover; server_no_context_takeover";

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub fin: bool,
    pub rsv1: bool,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    /// Payload length.
    pub len: usize,
    /// Bytes of the header itself (2 to 14).
    pub header_len: usize,
}

impl Head {
    /// Header plus payload: the frame's bytes on the wire.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.len
    }
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Why a frame header is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// RSV2 or RSV3 set (nothing negotiates them).
    Reserved,
    /// An opcode RFC 6455 does not define.
    Opcode,
    /// A control frame fragmented, longer than 125 bytes, or with RSV1.
    Control,
    /// Longer than the caller's limit.
    TooLong,
}

/// The header at the start of `buf`: `Ok(None)` while `buf` holds only part of it. The
/// payload need not be in `buf` yet.
pub fn parse_head(buf: &[u8], max_len: usize) -> Result<Option<Head>, FrameError> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    let (fin, rsv1, opcode) = (b0 & 0x80 != 0, b0 & 0x40 != 0, b0 & 0x0F);
    if b0 & 0x30 != 0 {
        return Err(FrameError::Reserved);
    }
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(FrameError::Opcode);
    }
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            None => return Ok(None),
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
        },
        127 => match buf.get(2..10) {
            None => return Ok(None),
            Some(b) => {
                let mut x = [0u8; 8];
                x.copy_from_slice(b);
                (u64::from_be_bytes(x), 10)
            }
        },
        n => (u64::from(n), 2),
    };
    let mask = if masked {
        let Some(k) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([k[0], k[1], k[2], k[3]])
    } else {
        None
    };
    let head = Head {
        fin,
        rsv1,
        opcode,
        mask,
        len: usize::try_from(len).unwrap_or(usize::MAX),
        header_len: at,
    };
    if head.is_control() && (!fin || rsv1 || len > 125) {
        return Err(FrameError::Control);
    }
    if head.len > max_len {
        return Err(FrameError::TooLong);
    }
    Ok(Some(head))
}

/// Append a frame header (the payload length in its shortest form) to `out`.
pub fn write_head(
    out: &mut Vec<u8>,
    fin: bool,
    rsv1: bool,
    opcode: u8,
    len: usize,
    mask: Option<[u8; 4]>,
) {
    out.push((u8::from(fin) << 7) | (u8::from(rsv1) << 6) | (opcode & 0x0F));
    let m = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(m | len as u8);
    } else if let Ok(n) = u16::try_from(len) {
        out.push(m | 126);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(k) = mask {
        out.extend_from_slice(&k);
    }
}

/// XOR `data` with the masking key, the key's byte 0 on the data's byte 0 (RFC 6455 §5.3).
/// Masking and unmasking are the same operation.
pub fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    let k = u32::from_ne_bytes(key);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let x = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ k;
        c.copy_from_slice(&x.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i];
    }
}

/// The length of an HTTP head (through the blank line) at the start of `buf`, once complete.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Every value of header `name` (case-insensitive) in an HTTP head, trimmed; the first line
/// (request or status line) is skipped.
pub fn header_values<'a>(head: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> {
    head.split("\r\n").skip(1).filter_map(move |line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Whether any element of these `Sec-WebSocket-Extensions` values is permessage-deflate.
pub fn names_deflate<'a>(mut values: impl Iterator<Item = &'a str>) -> bool {
    values.any(|v| {
        v.split(',').any(|e| {
            e.split(';')
                .next()
                .is_some_and(|n| n.trim().eq_ignore_ascii_case("permessage-deflate"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, rsv1: bool, op: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = Vec::new();
        write_head(&mut out, fin, rsv1, op, payload.len(), mask);
        let at = out.len();
        out.extend_from_slice(payload);
        if let Some(k) = mask {
            apply_mask(&mut out[at..], k);
        }
        out
    }

    #[test]
    fn rfc_6455_examples_encode_and_parse() {
        // §5.7: a single-frame unmasked text message "Hello", and the masked one.
        let unmasked = frame(true, false, OP_TEXT, b"Hello", None);
        assert_eq!(unmasked, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let masked = frame(true, false, OP_TEXT, b"Hello", Some(key));
        assert_eq!(
            masked,
            [
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
        let h = parse_head(&masked, 1 << 20).unwrap().unwrap();
        assert_eq!(
            h,
            Head {
                fin: true,
                rsv1: false,
                opcode: OP_TEXT,
                mask: Some(key),
                len: 5,
                header_len: 6
            }
        );
        let mut p = masked[h.header_len..].to_vec();
        apply_mask(&mut p, key);
        assert_eq!(p, b"Hello");
        // A fragmented unmasked text message: "Hel", then "lo".
        let h = parse_head(&[0x01, 0x03, 0x48], 10).unwrap().unwrap();
        assert!(!h.fin && h.opcode == OP_TEXT && h.len == 3);
        let h = parse_head(&[0x80, 0x02], 10).unwrap().unwrap();
        assert!(h.fin && h.opcode == OP_CONTINUATION);
    }

    #[test]
    fn lengths_take_their_shortest_form_and_round_trip() {
        for (len, header_len) in [
            (0usize, 2usize),
            (125, 2),
            (126, 4),
            (4096, 4),
            (65535, 4),
            (65536, 10),
        ] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let payload = vec![0x5a; len];
                let f = frame(true, true, OP_BINARY, &payload, mask);
                let extra = if mask.is_some() { 4 } else { 0 };
                assert_eq!(f.len(), header_len + extra + len, "len {len}");
                let h = parse_head(&f, 1 << 20).unwrap().unwrap();
                assert_eq!(
                    (h.len, h.header_len, h.mask),
                    (len, header_len + extra, mask)
                );
                assert!(h.rsv1 && h.fin && h.opcode == OP_BINARY);
                assert_eq!(h.frame_len(), f.len());
                // Any strict prefix of the header asks for more bytes.
                for cut in 0..h.header_len {
                    assert_eq!(parse_head(&f[..cut], 1 << 20), Ok(None), "cut {cut}");
                }
            }
        }
    }

    #[test]
    fn bad_headers_are_refused() {
        assert_eq!(parse_head(&[0xA1, 0x00], 10), Err(FrameError::Reserved)); // RSV2
        assert_eq!(parse_head(&[0x93, 0x00], 10), Err(FrameError::Reserved)); // RSV3
        assert_eq!(parse_head(&[0x83, 0x00], 10), Err(FrameError::Opcode));
        assert_eq!(parse_head(&[0x09, 0x00], 10), Err(FrameError::Control)); // fragmented ping
        assert_eq!(parse_head(&[0xC9, 0x00], 10), Err(FrameError::Control)); // ping with RSV1
        assert_eq!(
            parse_head(&[0x89, 0x7E, 0, 126], 1000),
            Err(FrameError::Control)
        );
        assert_eq!(parse_head(&[0x82, 0x0B], 10), Err(FrameError::TooLong));
    }

    #[test]
    fn mask_matches_the_definition_at_every_length() {
        let key = [0x12, 0x34, 0x56, 0x78];
        for len in 0..20 {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut m = data.clone();
            apply_mask(&mut m, key);
            let want: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert_eq!(m, want);
        }
    }

    #[test]
    fn http_heads_and_extension_answers() {
        let head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            sec-websocket-extensions:  permessage-deflate; server_no_context_takeover \r\n\r\nrest";
        assert_eq!(head_end(head.as_bytes()), Some(head.len() - 4));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        let v: Vec<&str> = header_values(head, "Sec-WebSocket-Extensions").collect();
        assert_eq!(v, ["permessage-deflate; server_no_context_takeover"]);
        assert!(names_deflate(v.into_iter()));
        assert!(names_deflate(
            ["x-foo, Permessage-Deflate ; a=1"].into_iter()
        ));
        assert!(!names_deflate(["x-webkit-deflate-frame"].into_iter()));
        assert!(!names_deflate(std::iter::empty()));
        assert!(names_deflate([DEFLATE_NO_TAKEOVER].into_iter()));
    }
}
