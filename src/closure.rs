//! How a session ended, as the three labels operators alert on.
//!
//! [`classify`] is a pure function from the [`TerminalEvent`] that ended a
//! session to a [`Closure`] `{code, side, cause}`. Everything that decides
//! what `wspulse_connections_closed_total` says lives here, so the whole
//! policy can be read (and tested) in one place. [`event_of_error`] maps
//! tungstenite errors onto terminal events by variant and `io::ErrorKind`,
//! never by message text.

use std::io;

use crate::protocol::close::{
    ABNORMAL, INVALID_PAYLOAD, MESSAGE_TOO_BIG, NO_STATUS, PROTOCOL_ERROR,
};
use crate::protocol::{code_allowed_on_wire, is_clean_code};

use tokio_tungstenite::tungstenite::{self, error::CapacityError};

/// Which side of the proxy a leg faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The WebSocket client that connected to the proxy.
    Client,
    /// The upstream WebSocket server the proxy dialed.
    Upstream,
    /// The proxy itself (a decision of its own, such as a drain).
    Proxy,
}

impl Side {
    /// The `side` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
            Side::Proxy => "proxy",
        }
    }
}

/// Why a session ended: the `cause` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// A peer sent a Close frame.
    CloseFrame,
    /// A peer's TCP stream ended (FIN) without a Close frame.
    Eof,
    /// A peer's TCP connection was reset (RST, broken pipe, aborted).
    Reset,
    /// A peer did not answer the proxy's ping within `keepalive.timeout`.
    PingTimeout,
    /// A peer broke RFC 6455 (bad framing, invalid UTF-8, forbidden close code).
    ProtocolError,
    /// A peer sent a message or frame over the configured limits.
    MessageTooBig,
    /// The proxy closed the session because it is shutting down.
    Shutdown,
    /// Any other I/O failure on a leg (rare; kept apart from `reset` so it stays visible).
    IoError,
    /// The session task ended without recording a closure: a wspulse bug.
    /// Never produced by [`classify`]; the session guard uses it.
    Internal,
}

impl Cause {
    /// The `cause` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::CloseFrame => "close_frame",
            Cause::Eof => "eof",
            Cause::Reset => "reset",
            Cause::PingTimeout => "ping_timeout",
            Cause::ProtocolError => "protocol_error",
            Cause::MessageTooBig => "message_too_big",
            Cause::Shutdown => "shutdown",
            Cause::IoError => "io_error",
            Cause::Internal => "internal",
        }
    }
}

/// What kind of protocol violation a peer committed; decides 1002 vs 1007.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// Framing, opcode, masking, control-frame or close-code rules (RFC 6455 §5, §7.4).
    Framing,
    /// A text message that is not valid UTF-8 (RFC 6455 §8.1).
    InvalidUtf8,
}

/// The first thing that ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminalEvent {
    /// `side` sent a Close frame. `code` is `None` when the frame had no body.
    /// `allowed` is false when the code may not appear on the wire.
    CloseFrame {
        /// The leg that sent the frame.
        side: Side,
        /// The close code, if the frame carried one.
        code: Option<u16>,
    },
    /// `side` closed its TCP stream without a Close frame.
    Eof(Side),
    /// `side`'s TCP connection was reset.
    Reset(Side),
    /// Some other I/O error on `side`.
    IoError(Side),
    /// `side` did not answer the proxy's ping in time.
    PingTimeout(Side),
    /// `side` broke the protocol.
    Protocol(Side, Violation),
    /// `side` sent a message or frame over the limits.
    TooBig(Side),
    /// The proxy is draining; `code` is what it sends to the client.
    Shutdown {
        /// `shutdown.close_code` (1001 or 1012).
        code: u16,
    },
}

/// How a session ended: the labels of `wspulse_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closure {
    /// The code of the session's first Close frame, 1005 for an empty one,
    /// 1006 when there was none.
    pub code: u16,
    /// Which side ended the session.
    pub side: Side,
    /// Why it ended.
    pub cause: Cause,
}

/// Classify the event that ended a session.
///
/// | event                                  | code            | side      | cause             |
/// |----------------------------------------|-----------------|-----------|-------------------|
/// | Close frame with code `c` (allowed)    | `c`             | sender    | `close_frame`     |
/// | Close frame without a code             | 1005            | sender    | `close_frame`     |
/// | Close frame with a forbidden code¹     | 1002            | sender    | `protocol_error`  |
/// | TCP FIN without Close frame            | 1006            | that leg  | `eof`             |
/// | TCP RST / broken pipe / aborted        | 1006            | that leg  | `reset`           |
/// | other I/O error                        | 1006            | that leg  | `io_error`        |
/// | no pong within `keepalive.timeout`     | 1006            | dead leg  | `ping_timeout`    |
/// | framing violation²                     | 1002            | offender  | `protocol_error`  |
/// | invalid UTF-8 in a text message        | 1007            | offender  | `protocol_error`  |
/// | message or frame over the limits       | 1009            | sender    | `message_too_big` |
/// | proxy drain (SIGTERM / SIGINT)         | `close_code`    | `proxy`   | `shutdown`        |
///
/// ¹ RFC 6455 §7.4.1–7.4.2: 1004–1006, 1015, 1016–2999, 0–999 and ≥ 5000
/// may not be sent. Reporting them as 1002 keeps the `code` label bounded
/// whatever a peer sends. ² Unmasked client frame, masked server frame,
/// reserved bits, unknown opcode, fragmented or oversize (> 125 B) control
/// frame, continuation without a start (RFC 6455 §5.1–5.5).
///
/// For the error rows (1002, 1007, 1009) the code is the one the proxy sends
/// to the offender, which is the session's first Close frame.
pub fn classify(event: TerminalEvent) -> Closure {
    use TerminalEvent as E;
    let (code, side, cause) = match event {
        E::CloseFrame { side, code: None } => (NO_STATUS, side, Cause::CloseFrame),
        E::CloseFrame {
            side,
            code: Some(c),
        } if code_allowed_on_wire(c) => (c, side, Cause::CloseFrame),
        E::CloseFrame {
            side,
            code: Some(_),
        } => (PROTOCOL_ERROR, side, Cause::ProtocolError),
        E::Eof(side) => (ABNORMAL, side, Cause::Eof),
        E::Reset(side) => (ABNORMAL, side, Cause::Reset),
        E::IoError(side) => (ABNORMAL, side, Cause::IoError),
        E::PingTimeout(side) => (ABNORMAL, side, Cause::PingTimeout),
        E::Protocol(side, Violation::Framing) => (PROTOCOL_ERROR, side, Cause::ProtocolError),
        E::Protocol(side, Violation::InvalidUtf8) => (INVALID_PAYLOAD, side, Cause::ProtocolError),
        E::TooBig(side) => (MESSAGE_TOO_BIG, side, Cause::MessageTooBig),
        E::Shutdown { code } => (code, Side::Proxy, Cause::Shutdown),
    };
    Closure { code, side, cause }
}

impl Closure {
    /// `clean` or `abnormal`: the `class` label of the duration histogram.
    ///
    /// Clean: the session ended with a Close frame whose code is 1000, 1001,
    /// or an application code (3000–4999). Everything else is abnormal,
    /// including error codes (1002, 1009, 1011, …) and 1006.
    pub fn class(&self) -> &'static str {
        if is_clean_code(self.code) {
            "clean"
        } else {
            "abnormal"
        }
    }

    /// The code as a label value.
    pub fn code_label(&self) -> String {
        self.code.to_string()
    }
}

/// Map a tungstenite read/write error on `side` to the event it means.
///
/// By variant and `io::ErrorKind` only. An EOF without a Close frame is
/// reported (by `ws::WsStream`, as by tungstenite) as `ResetWithoutClosingHandshake`.
pub fn event_of_error(side: Side, err: &tungstenite::Error) -> TerminalEvent {
    use tungstenite::Error as W;
    use tungstenite::error::ProtocolError as P;
    match err {
        W::ConnectionClosed | W::AlreadyClosed => TerminalEvent::Eof(side),
        W::Protocol(P::ResetWithoutClosingHandshake) => TerminalEvent::Eof(side),
        W::Io(e) => event_of_io(side, e),
        W::Capacity(CapacityError::MessageTooLong { .. }) => TerminalEvent::TooBig(side),
        W::Capacity(CapacityError::TooManyHeaders) => {
            TerminalEvent::Protocol(side, Violation::Framing)
        }
        W::Utf8(_) => TerminalEvent::Protocol(side, Violation::InvalidUtf8),
        W::Protocol(_) | W::AttackAttempt => TerminalEvent::Protocol(side, Violation::Framing),
        // WriteBufferFull cannot happen (the buffer limit is unbounded) and
        // the rest are handshake-time errors; count them as I/O trouble.
        _ => TerminalEvent::IoError(side),
    }
}

/// Map an I/O error on `side` to the event it means.
pub fn event_of_io(side: Side, err: &io::Error) -> TerminalEvent {
    use io::ErrorKind as K;
    match err.kind() {
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => TerminalEvent::Reset(side),
        K::UnexpectedEof => TerminalEvent::Eof(side),
        _ => TerminalEvent::IoError(side),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use Side::{Client as C, Proxy as P, Upstream as U};
    use TerminalEvent as E;

    /// One row per row of the table in [`classify`]'s doc comment.
    #[test]
    fn classify_table() {
        let rows: &[(TerminalEvent, u16, Side, &str, &str)] = &[
            (
                E::CloseFrame {
                    side: C,
                    code: Some(1000),
                },
                1000,
                C,
                "close_frame",
                "clean",
            ),
            (
                E::CloseFrame {
                    side: U,
                    code: Some(4001),
                },
                4001,
                U,
                "close_frame",
                "clean",
            ),
            (
                E::CloseFrame {
                    side: U,
                    code: Some(1011),
                },
                1011,
                U,
                "close_frame",
                "abnormal",
            ),
            (
                E::CloseFrame {
                    side: U,
                    code: Some(1014),
                },
                1014,
                U,
                "close_frame",
                "abnormal",
            ),
            (
                E::CloseFrame {
                    side: C,
                    code: Some(1004),
                },
                1002,
                C,
                "protocol_error",
                "abnormal",
            ),
            (
                E::CloseFrame {
                    side: C,
                    code: None,
                },
                1005,
                C,
                "close_frame",
                "abnormal",
            ),
            (
                E::CloseFrame {
                    side: C,
                    code: Some(1006),
                },
                1002,
                C,
                "protocol_error",
                "abnormal",
            ),
            (
                E::CloseFrame {
                    side: U,
                    code: Some(1005),
                },
                1002,
                U,
                "protocol_error",
                "abnormal",
            ),
            (
                E::CloseFrame {
                    side: C,
                    code: Some(1015),
                },
                1002,
                C,
                "protocol_error",
                "abnormal",
            ),
            (
                E::CloseFrame {
                    side: C,
                    code: Some(999),
                },
                1002,
                C,
                "protocol_error",
                "abnormal",
            ),
            (
                E::CloseFrame {
                    side: C,
                    code: Some(5000),
                },
                1002,
                C,
                "protocol_error",
                "abnormal",
            ),
            (E::Eof(C), 1006, C, "eof", "abnormal"),
            (E::Reset(U), 1006, U, "reset", "abnormal"),
            (E::IoError(U), 1006, U, "io_error", "abnormal"),
            (E::PingTimeout(C), 1006, C, "ping_timeout", "abnormal"),
            (
                E::Protocol(C, Violation::Framing),
                1002,
                C,
                "protocol_error",
                "abnormal",
            ),
            (
                E::Protocol(U, Violation::InvalidUtf8),
                1007,
                U,
                "protocol_error",
                "abnormal",
            ),
            (E::TooBig(C), 1009, C, "message_too_big", "abnormal"),
            (E::Shutdown { code: 1001 }, 1001, P, "shutdown", "clean"),
            (E::Shutdown { code: 1012 }, 1012, P, "shutdown", "abnormal"),
        ];
        for &(event, code, side, cause, class) in rows {
            let c = classify(event);
            assert_eq!(
                (c.code, c.side, c.cause.as_str(), c.class()),
                (code, side, cause, class),
                "{event:?}"
            );
        }
    }

    #[test]
    fn every_wire_code_gives_a_bounded_label() {
        // Whatever a peer sends, the code label is a valid wire code or 1002/1005.
        for raw in 0..=u16::MAX {
            let c = classify(E::CloseFrame {
                side: C,
                code: Some(raw),
            });
            assert!((1000..=4999).contains(&c.code), "{raw} -> {}", c.code);
            assert!(c.code != ABNORMAL && c.code != 1015, "{raw}");
        }
    }

    #[test]
    fn io_errors_map_by_kind() {
        let e = |k| event_of_io(C, &io::Error::from(k));
        assert_eq!(e(io::ErrorKind::ConnectionReset), E::Reset(C));
        assert_eq!(e(io::ErrorKind::BrokenPipe), E::Reset(C));
        assert_eq!(e(io::ErrorKind::UnexpectedEof), E::Eof(C));
        assert_eq!(e(io::ErrorKind::TimedOut), E::IoError(C));
    }

    #[test]
    fn tungstenite_errors_map_by_variant() {
        use tungstenite::error::ProtocolError as PE;
        let w = |e: tungstenite::Error| event_of_error(U, &e);
        assert_eq!(
            w(tungstenite::Error::Protocol(
                PE::ResetWithoutClosingHandshake
            )),
            E::Eof(U)
        );
        assert_eq!(
            w(tungstenite::Error::Protocol(PE::NonZeroReservedBits)),
            E::Protocol(U, Violation::Framing)
        );
        assert_eq!(
            w(tungstenite::Error::Utf8("x".into())),
            E::Protocol(U, Violation::InvalidUtf8)
        );
        assert_eq!(
            w(tungstenite::Error::Capacity(
                CapacityError::MessageTooLong {
                    size: 2,
                    max_size: 1
                }
            )),
            E::TooBig(U)
        );
    }
}
