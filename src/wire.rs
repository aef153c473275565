//! Hand-built WebSocket frames for the demo's misbehaving clients and the
//! tests: what well-behaved libraries refuse to send (unmasked client
//! frames, masked server frames, odd fragmentations).

/// Opcodes (RFC 6455 §5.2).
pub mod opcode {
    /// Continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0;
    /// Text frame.
    pub const TEXT: u8 = 1;
    /// Binary frame.
    pub const BINARY: u8 = 2;
    /// Close.
    pub const CLOSE: u8 = 8;
    /// Ping.
    pub const PING: u8 = 9;
    /// Pong.
    pub const PONG: u8 = 10;
}

/// Encode one frame (RFC 6455 §5.2): FIN bit, opcode, payload length in
/// the shortest form, and the payload, masked with `mask` when given (as a
/// client must) and sent as is otherwise (as a server does).
pub fn encode_frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push((u8::from(fin) << 7) | (opcode & 0x0f));
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= 0xffff => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_masking() {
        assert_eq!(encode_frame(true, 1, b"hi", None), [0x81, 2, b'h', b'i']);
        let masked = encode_frame(false, 2, b"ab", Some([1, 2, 3, 4]));
        assert_eq!(masked, [0x02, 0x82, 1, 2, 3, 4, b'a' ^ 1, b'b' ^ 2]);
        let mid = encode_frame(true, 2, &[0; 126], None);
        assert_eq!(&mid[..4], &[0x82, 126, 0, 126]);
        assert_eq!(mid.len(), 4 + 126);
        let big = encode_frame(true, 2, &[0; 0x10000], None);
        assert_eq!(&big[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }
}
