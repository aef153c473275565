//! How a session ended, as the three labels operators alert on.
//!
//! [`classify`] is a pure function from the [`TerminalEvent`] that ended a
//! session to a [`Closure`] `{code, side, cause}`. Everything that decides
//! what `wspulse_connections_closed_total` says lives here, so the whole
//! policy can be read (and tested) in one place. A leg's own errors
//! ([`ws::Error`]) map one to one onto rows of the table; I/O errors were
//! sorted by `io::ErrorKind` in `ws`, never by message text.

use crate::protocol::close::{ABNORMAL, NO_STATUS, PROTOCOL_ERROR};
use crate::protocol::{code_allowed_on_wire, is_clean_code};
use crate::ws;

/// One of a session's two legs. The proxy is never a leg: its own
/// decisions (a drain) are [`Side::Proxy`], which leg code cannot name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegId {
    /// The leg to the WebSocket client.
    Client,
    /// The leg to the upstream server.
    Upstream,
}

impl LegId {
    /// The `side` this leg is reported as.
    pub fn side(self) -> Side {
        match self {
            LegId::Client => Side::Client,
            LegId::Upstream => Side::Upstream,
        }
    }

    /// The other leg.
    pub fn other(self) -> LegId {
        match self {
            LegId::Client => LegId::Upstream,
            LegId::Upstream => LegId::Client,
        }
    }

    /// `client` or `upstream`.
    pub fn as_str(self) -> &'static str {
        self.side().as_str()
    }
}

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

/// The first thing that ended a session.
#[derive(Debug)]
pub enum TerminalEvent {
    /// `leg` sent a Close frame. `code` is `None` when the frame had no body.
    CloseFrame {
        /// The leg that sent the frame.
        leg: LegId,
        /// The close code, if the frame carried one.
        code: Option<u16>,
    },
    /// `leg` failed: its stream ended or broke, or it broke the protocol.
    Failed {
        /// The leg that failed.
        leg: LegId,
        /// How, in the leg's own words.
        error: ws::Error,
    },
    /// `leg` did not answer the proxy's ping in time.
    PingTimeout(LegId),
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
/// | event                                         | code         | side     | cause             |
/// |-----------------------------------------------|--------------|----------|-------------------|
/// | Close frame with code `c` (allowed)           | `c`          | sender   | `close_frame`     |
/// | Close frame without a code                    | 1005         | sender   | `close_frame`     |
/// | Close frame with a forbidden code¹            | 1002         | sender   | `protocol_error`  |
/// | [`ws::Error::Eof`]: TCP FIN, no Close frame   | 1006         | that leg | `eof`             |
/// | [`ws::Error::Reset`]: RST, broken pipe        | 1006         | that leg | `reset`           |
/// | [`ws::Error::Io`]: other I/O error            | 1006         | that leg | `io_error`        |
/// | no pong within `keepalive.timeout`            | 1006         | dead leg | `ping_timeout`    |
/// | [`ws::Error::Protocol`]: framing violation²   | 1002         | offender | `protocol_error`  |
/// | [`ws::Error::Protocol`]: invalid UTF-8        | 1007         | offender | `protocol_error`  |
/// | [`ws::Error::TooBig`]: over the limits        | 1009         | sender   | `message_too_big` |
/// | proxy drain (SIGTERM / SIGINT)                | `close_code` | `proxy`  | `shutdown`        |
///
/// ¹ RFC 6455 §7.4.1–7.4.2: 1004–1006, 1015, 1016–2999, 0–999 and ≥ 5000
/// may not be sent. Reporting them as 1002 keeps the `code` label bounded
/// whatever a peer sends. ² Unmasked client frame, masked server frame,
/// reserved bits, unknown opcode, fragmented or oversize (> 125 B) control
/// frame, continuation without a start, a 1-byte Close (RFC 6455 §5.1–5.5,
/// [`ws::Violation`]).
///
/// For the error rows (1002, 1007, 1009) the code is the one the proxy sends
/// to the offender ([`ws::Error::close_code`]), which is the session's
/// first Close frame.
pub fn classify(event: &TerminalEvent) -> Closure {
    use TerminalEvent as E;
    use ws::Error as W;
    let (code, side, cause) = match event {
        E::CloseFrame { leg, code: None } => (NO_STATUS, leg.side(), Cause::CloseFrame),
        E::CloseFrame { leg, code: Some(c) } if code_allowed_on_wire(*c) => {
            (*c, leg.side(), Cause::CloseFrame)
        }
        E::CloseFrame { leg, code: Some(_) } => (PROTOCOL_ERROR, leg.side(), Cause::ProtocolError),
        E::Failed { leg, error } => {
            let cause = match error {
                W::Eof => Cause::Eof,
                W::Reset => Cause::Reset,
                W::Io(_) => Cause::IoError,
                W::Protocol(_) => Cause::ProtocolError,
                W::TooBig { .. } => Cause::MessageTooBig,
            };
            (error.close_code().unwrap_or(ABNORMAL), leg.side(), cause)
        }
        E::PingTimeout(leg) => (ABNORMAL, leg.side(), Cause::PingTimeout),
        E::Shutdown { code } => (*code, Side::Proxy, Cause::Shutdown),
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

#[cfg(test)]
mod tests;
