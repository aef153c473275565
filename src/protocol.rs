//! RFC 6455 rules that the relay, the closure classification, the demo and
//! the tests share: opcodes, close codes and which of them may be sent,
//! the roles' masking duty, and the reference frame encoder.
//!
//! A leaf: it imports nothing from the crate, so every module that speaks
//! the protocol points down to it.

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

/// Close codes wspulse sends or reports (RFC 6455 §7.4.1, IANA registry).
pub mod close {
    /// 1000: normal closure.
    pub const NORMAL: u16 = 1000;
    /// 1001: going away; sent to the upstream when the client vanished.
    pub const GOING_AWAY: u16 = 1001;
    /// 1002: protocol error.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// 1005: "no status received"; never on the wire, used for an empty
    /// Close frame.
    pub const NO_STATUS: u16 = 1005;
    /// 1006: "abnormal closure"; never on the wire, used when there was no
    /// Close frame.
    pub const ABNORMAL: u16 = 1006;
    /// 1007: invalid frame payload data (invalid UTF-8 in text).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// 1009: message too big.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// 1012: service restart (a `shutdown.close_code` choice).
    pub const SERVICE_RESTART: u16 = 1012;
    /// 1014: bad gateway; sent to the client when the upstream vanished.
    pub const BAD_GATEWAY: u16 = 1014;
}

/// The largest control-frame payload (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The largest close reason: a control frame's 125 bytes less the code.
pub const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

/// Which end of a WebSocket connection a leg plays: a client masks every
/// frame it sends, a server never does (§5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The end that opened the connection (wspulse toward the upstream).
    Client,
    /// The end that accepted it (wspulse toward its clients).
    Server,
}

/// Whether a peer may put `code` in a Close frame: RFC 6455 §7.4 and the
/// IANA registry (1012–1014 were registered later; tungstenite's
/// `is_allowed` still refuses 1014).
pub fn code_allowed_on_wire(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Whether a close code counts as a clean ending: 1000, 1001, or an
/// application code (3000–4999).
pub fn is_clean_code(code: u16) -> bool {
    matches!(code, 1000 | 1001 | 3000..=4999)
}

/// `reason` cut to what fits in a Close frame (at most
/// [`MAX_CLOSE_REASON`] bytes, on a char boundary).
pub fn close_reason(reason: &str) -> &str {
    &reason[..reason.floor_char_boundary(MAX_CLOSE_REASON)]
}

/// Encode one frame (§5.2): FIN bit, opcode, payload length in the
/// shortest form, and the payload, masked with `mask` when given (as a
/// client must) and sent as is otherwise (as a server does).
///
/// The reference encoder for the demo's misbehaving clients and the tests;
/// the relay encodes into its own buffers (`ws`).
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

/// A Close frame's payload: the code, big-endian, then the reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(2 + reason.len());
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(reason.as_bytes());
    p
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

    #[test]
    fn close_reasons_are_cut_on_char_boundaries() {
        assert_eq!(close_reason("abc"), "abc");
        let long = "é".repeat(100); // 200 bytes
        let cut = close_reason(&long);
        assert!(cut.len() <= MAX_CLOSE_REASON && cut.len() >= MAX_CLOSE_REASON - 1);
        assert_eq!(cut.len(), 122, "61 two-byte chars fit in 123 bytes");
    }

    #[test]
    fn codes_on_the_wire() {
        for (code, allowed) in [
            (999, false),
            (1000, true),
            (1003, true),
            (1004, false),
            (1005, false),
            (1006, false),
            (1014, true),
            (1015, false),
            (2999, false),
            (3000, true),
            (4999, true),
            (5000, false),
        ] {
            assert_eq!(code_allowed_on_wire(code), allowed, "{code}");
        }
    }
}
