//! What can end a leg other than a finished closing handshake, in the
//! relay's own words: [`crate::closure`] maps each variant to one row of
//! its table, and nothing here borrows another library's meaning.

use std::io;

use crate::protocol::close;

/// Why a leg's stream stopped early, or why a write to it failed.
#[derive(Debug)]
pub enum Error {
    /// The TCP stream ended (FIN) before any Close frame.
    Eof,
    /// The connection was reset: RST, broken pipe, aborted, or a write
    /// that took nothing.
    Reset,
    /// Any other I/O failure; kept apart from `Reset` so it stays visible.
    Io(io::Error),
    /// The peer broke RFC 6455; the leg sends it the code this earns.
    Protocol(Violation),
    /// A frame (on its header alone) or a message over the limits (1009).
    TooBig {
        /// The size announced or reached, in bytes.
        size: u64,
        /// The limit it went over.
        max: usize,
    },
}

impl Error {
    /// An I/O error by its kind (never by its message): resets and broken
    /// pipes are `Reset`, an unexpected end is `Eof`, the rest `Io`.
    pub fn from_io(e: io::Error) -> Error {
        use io::ErrorKind as K;
        match e.kind() {
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => Error::Reset,
            K::UnexpectedEof => Error::Eof,
            _ => Error::Io(e),
        }
    }

    /// The close code the offending peer is sent: 1002, 1007 or 1009.
    /// `None` for the errors after which no Close can reach the peer.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Error::Protocol(v) => Some(v.close_code()),
            Error::TooBig { .. } => Some(close::MESSAGE_TOO_BIG),
            Error::Eof | Error::Reset | Error::Io(_) => None,
        }
    }

    /// The close reason the offending peer is sent (at most 123 bytes).
    pub fn close_reason(&self) -> &'static str {
        match self {
            Error::Protocol(v) => v.reason(),
            Error::TooBig { .. } => "message too big",
            Error::Eof | Error::Reset | Error::Io(_) => "",
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Eof => f.write_str("connection ended without a Close frame"),
            Error::Reset => f.write_str("connection reset"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Protocol(v) => f.write_str(v.reason()),
            Error::TooBig { size, max } => write!(f, "{size} bytes over the limit of {max}"),
        }
    }
}

impl std::error::Error for Error {}

/// A breach of RFC 6455 by the peer, each with the code it earns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A client frame without a mask (§5.1).
    UnmaskedFromClient,
    /// A server frame with a mask (§5.1).
    MaskedFromServer,
    /// RSV bits set with no extension negotiated (§5.2).
    ReservedBits,
    /// An opcode RFC 6455 does not define (§5.2).
    UnknownOpcode(u8),
    /// A control frame without FIN (§5.5).
    FragmentedControl,
    /// A control frame payload over 125 bytes (§5.5).
    ControlTooBig,
    /// A continuation frame with no message to continue (§5.4).
    UnexpectedContinuation,
    /// A new data frame in the middle of a fragmented message (§5.4).
    ExpectedContinuation,
    /// A frame after the closing handshake (§5.5.1).
    AfterClose,
    /// A Close payload of one byte (§5.5.1).
    ClosePayload,
    /// A close code that may not be sent (§7.4.1–7.4.2).
    ForbiddenCloseCode(u16),
    /// Invalid UTF-8 in a text message or a close reason (§8.1): 1007.
    InvalidUtf8,
}

impl Violation {
    /// 1007 for invalid UTF-8, 1002 for everything else (§7.4.1).
    pub fn close_code(self) -> u16 {
        match self {
            Violation::InvalidUtf8 => close::INVALID_PAYLOAD,
            _ => close::PROTOCOL_ERROR,
        }
    }

    /// What the offender is told in its Close frame.
    pub fn reason(self) -> &'static str {
        match self {
            Violation::UnmaskedFromClient => "unmasked frame from client",
            Violation::MaskedFromServer => "masked frame from server",
            Violation::ReservedBits => "reserved bits set",
            Violation::UnknownOpcode(_) => "unknown opcode",
            Violation::FragmentedControl => "fragmented control frame",
            Violation::ControlTooBig => "control frame over 125 bytes",
            Violation::UnexpectedContinuation => "continuation frame without a message",
            Violation::ExpectedContinuation => "new message inside a fragmented one",
            Violation::AfterClose => "frame after the closing handshake",
            Violation::ClosePayload | Violation::ForbiddenCloseCode(_) => {
                "invalid close frame: forbidden code or 1-byte payload"
            }
            Violation::InvalidUtf8 => "invalid UTF-8 in text message",
        }
    }
}

impl From<std::str::Utf8Error> for Error {
    fn from(_: std::str::Utf8Error) -> Error {
        Error::Protocol(Violation::InvalidUtf8)
    }
}
