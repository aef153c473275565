use super::*;

use LegId::{Client as C, Upstream as U};
use TerminalEvent as E;
use ws::{Error as W, Violation as V};

fn close(leg: LegId, code: Option<u16>) -> TerminalEvent {
    E::CloseFrame { leg, code }
}

fn failed(leg: LegId, error: ws::Error) -> TerminalEvent {
    E::Failed { leg, error }
}

/// One row per row of the table in [`classify`]'s doc comment.
#[test]
fn classify_table() {
    let io = || std::io::Error::from(std::io::ErrorKind::TimedOut);
    let rows: Vec<(TerminalEvent, u16, Side, &str, &str)> = vec![
        (
            close(C, Some(1000)),
            1000,
            Side::Client,
            "close_frame",
            "clean",
        ),
        (
            close(U, Some(4001)),
            4001,
            Side::Upstream,
            "close_frame",
            "clean",
        ),
        (
            close(U, Some(1011)),
            1011,
            Side::Upstream,
            "close_frame",
            "abnormal",
        ),
        (
            close(U, Some(1014)),
            1014,
            Side::Upstream,
            "close_frame",
            "abnormal",
        ),
        (
            close(C, None),
            1005,
            Side::Client,
            "close_frame",
            "abnormal",
        ),
        (
            close(C, Some(1004)),
            1002,
            Side::Client,
            "protocol_error",
            "abnormal",
        ),
        (
            close(C, Some(5000)),
            1002,
            Side::Client,
            "protocol_error",
            "abnormal",
        ),
        (failed(C, W::Eof), 1006, Side::Client, "eof", "abnormal"),
        (
            failed(U, W::Reset),
            1006,
            Side::Upstream,
            "reset",
            "abnormal",
        ),
        (
            failed(U, W::Io(io())),
            1006,
            Side::Upstream,
            "io_error",
            "abnormal",
        ),
        (
            E::PingTimeout(C),
            1006,
            Side::Client,
            "ping_timeout",
            "abnormal",
        ),
        (
            failed(C, W::Protocol(V::ReservedBits)),
            1002,
            Side::Client,
            "protocol_error",
            "abnormal",
        ),
        (
            failed(U, W::Protocol(V::InvalidUtf8)),
            1007,
            Side::Upstream,
            "protocol_error",
            "abnormal",
        ),
        (
            failed(C, W::TooBig { size: 2, max: 1 }),
            1009,
            Side::Client,
            "message_too_big",
            "abnormal",
        ),
        (
            E::Shutdown { code: 1001 },
            1001,
            Side::Proxy,
            "shutdown",
            "clean",
        ),
        (
            E::Shutdown { code: 1012 },
            1012,
            Side::Proxy,
            "shutdown",
            "abnormal",
        ),
    ];
    for (event, code, side, cause, class) in rows {
        let c = classify(&event);
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
        let c = classify(&close(C, Some(raw)));
        assert!((1000..=4999).contains(&c.code), "{raw} -> {}", c.code);
        assert!(c.code != ABNORMAL && c.code != 1015, "{raw}");
    }
}

#[test]
fn every_violation_is_a_protocol_error_with_its_code() {
    for v in [
        V::UnmaskedFromClient,
        V::MaskedFromServer,
        V::ReservedBits,
        V::UnknownOpcode(3),
        V::FragmentedControl,
        V::ControlTooBig,
        V::UnexpectedContinuation,
        V::ExpectedContinuation,
        V::AfterClose,
        V::ClosePayload,
        V::ForbiddenCloseCode(1006),
        V::InvalidUtf8,
    ] {
        let c = classify(&failed(U, W::Protocol(v)));
        assert_eq!(c.cause, Cause::ProtocolError, "{v:?}");
        assert_eq!(c.code, v.close_code(), "{v:?}");
        assert!(v.reason().len() <= crate::protocol::MAX_CLOSE_REASON);
    }
}

#[test]
fn io_errors_map_by_kind() {
    use std::io::{Error, ErrorKind as K};
    let e = |k| W::from_io(Error::from(k));
    assert!(matches!(e(K::ConnectionReset), W::Reset));
    assert!(matches!(e(K::BrokenPipe), W::Reset));
    assert!(matches!(e(K::ConnectionAborted), W::Reset));
    assert!(matches!(e(K::UnexpectedEof), W::Eof));
    assert!(matches!(e(K::TimedOut), W::Io(_)));
}

#[test]
fn legs_are_never_the_proxy() {
    assert_eq!(C.side(), Side::Client);
    assert_eq!(U.side(), Side::Upstream);
    assert_eq!(C.other(), U);
    assert_eq!(U.other(), C);
}
