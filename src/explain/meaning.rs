//! What a closure kind `{code, side, cause}` means: the one table of field
//! lore behind `wspulse explain`'s advice and the demo table's last column.

/// What a closure kind means, in the two lengths wspulse shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meaning {
    /// A few words for a table cell (the `wspulse demo` table).
    pub short: &'static str,
    /// What happened, for a diagnosis.
    pub what: &'static str,
    /// Its usual cause and what to do about it.
    pub why: &'static str,
}

const fn m(short: &'static str, what: &'static str, why: &'static str) -> Meaning {
    Meaning { short, what, why }
}

/// A code with no advice of its own.
const OTHER: Meaning = m(
    "other code",
    "other close code",
    "see RFC 6455 §7.4 and the IANA registry",
);
/// An application's own code.
const APPLICATION: Meaning = m(
    "application code",
    "application-defined code",
    "its meaning is defined by your application",
);
/// No Close frame, and no more specific advice.
const NO_CLOSE: Meaning = m(
    "no Close frame",
    "no Close frame: the connection just ended",
    "look at the side and cause",
);

/// What a closure kind `{code, side, cause}` means, its usual cause, and
/// what to do: the one table behind `wspulse explain` and the demo's table.
/// The causes that decide the code come first (no Close frame: 1006;
/// `message_too_big`: 1009; `shutdown`: the drain code), then close codes;
/// see [`crate::closure::classify`] for the kinds that occur.
pub fn meaning(code: u16, side: &str, cause: &str) -> Meaning {
    const EOF: &str = "no Close frame: peer vanished / network / idle kill";
    const RESET: &str = "no Close frame: TCP reset (crash, or a middlebox cut it)";
    const SILENT: &str = "peer stopped answering pings (dead or black-holed)";
    const GOING_AWAY: &str = "going away (page closed, server leaving)";
    const TOO_BIG: &str = "message too big";
    const TOO_BIG_WHY: &str = "raise limits.max_message_size or make the sender split its messages";
    match (code, side, cause) {
        (1000, _, _) => m("normal closure", "normal closure", "nothing to do"),
        (_, _, "shutdown") => m(
            "proxy drain (shutdown)",
            "wspulse drained its sessions (a deploy or restart of the proxy)",
            "expected during rollouts; use shutdown.spread to avoid reconnect storms",
        ),
        (_, "client", "eof") => m(
            EOF,
            "client vanished without a Close frame",
            "usually a client losing network, a tab or app closed without calling close(), or an idle socket killed by a NAT or load balancer; make clients call close() and reconnect with backoff",
        ),
        (_, "client", "reset") => m(
            RESET,
            "client connection reset",
            "a middlebox (NAT, firewall, load balancer) or the client's OS killed the TCP connection; if it clusters at a fixed idle time it is an idle limit",
        ),
        (_, "client", "ping_timeout") => m(
            SILENT,
            "client stopped answering pings (dead or black-holed)",
            "phones losing coverage, sleeping laptops, expired NAT mappings; normal at a low rate on mobile, alarming if it jumps",
        ),
        (_, "upstream", "eof") => m(
            EOF,
            "upstream closed TCP without a Close frame",
            "upstream crashes, OOM kills or deploys that do not close sockets gracefully; check upstream restarts at those times and make it send Close 1001/1012 on shutdown",
        ),
        (_, "upstream", "reset") => m(
            RESET,
            "upstream connection reset",
            "upstream process killed or its host/network failed",
        ),
        (_, "upstream", "ping_timeout") => m(
            SILENT,
            "upstream stopped answering pings",
            "upstream overloaded or hung (blocked event loop, long GC pause, deadlock); check its CPU and latency",
        ),
        (_, _, "eof") => Meaning {
            short: EOF,
            ..NO_CLOSE
        },
        (_, _, "reset") => Meaning {
            short: RESET,
            ..NO_CLOSE
        },
        (_, _, "ping_timeout") => Meaning {
            short: SILENT,
            ..NO_CLOSE
        },
        (_, _, "io_error") => Meaning {
            short: "no Close frame: other network error",
            ..NO_CLOSE
        },
        (_, _, "internal") => Meaning {
            short: "no cause recorded (a wspulse bug)",
            ..NO_CLOSE
        },
        (_, _, "message_too_big") => m(
            "message too big (over limits.max_message_size)",
            TOO_BIG,
            TOO_BIG_WHY,
        ),
        (1001, "client", _) => m(
            GOING_AWAY,
            "client going away (tab closed, app backgrounded or navigated away)",
            "normal for browsers and mobile apps",
        ),
        (1001, "upstream", _) => m(
            GOING_AWAY,
            "upstream going away (it is shutting down or restarting)",
            "expected during upstream deploys; clients should reconnect with backoff",
        ),
        (1001, _, _) => Meaning {
            short: GOING_AWAY,
            ..OTHER
        },
        (1006, _, _) => NO_CLOSE,
        (1002, _, _) => m(
            "protocol error",
            "protocol error",
            "a buggy or hostile peer broke RFC 6455; check the client library and version",
        ),
        (1003, _, _) => Meaning {
            short: "unsupported data",
            ..OTHER
        },
        (1005, _, _) => m(
            "Close frame without a code",
            "Close frame without a code",
            "harmless, but the peer could say why",
        ),
        (1007, _, _) => m(
            "invalid payload: text that is not UTF-8",
            "invalid UTF-8 in a text message",
            "the sender must use binary frames for non-text data",
        ),
        (1008, _, _) => m(
            "policy violation",
            "policy violation",
            "the application refused the peer (auth, rate limit)",
        ),
        (1009, _, _) => m(TOO_BIG, TOO_BIG, TOO_BIG_WHY),
        (1010, _, _) => Meaning {
            short: "client needed an extension",
            ..OTHER
        },
        (1011, _, _) => m(
            "server error",
            "upstream internal error",
            "the server hit an unexpected condition; check its logs",
        ),
        (1012, _, _) => m(
            "service restart",
            "service restart",
            "expected during deploys",
        ),
        (1013, _, _) => m(
            "try again later",
            "try again later",
            "the server is overloaded and shedding sessions",
        ),
        (1014, _, _) => Meaning {
            short: "bad gateway",
            ..OTHER
        },
        (3000..=3999, _, _) => Meaning {
            short: "registered application code",
            ..APPLICATION
        },
        (4000..=4999, _, _) => APPLICATION,
        _ => OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_decides_before_the_code() {
        // 1000 is normal whatever the rest says.
        assert_eq!(
            meaning(1000, "client", "close_frame").short,
            "normal closure"
        );
        // A drain is a drain whatever code it sent.
        for code in [1001, 1012] {
            assert_eq!(
                meaning(code, "proxy", "shutdown").short,
                "proxy drain (shutdown)"
            );
        }
        // No Close frame: the side and cause say why, not 1006.
        let m = meaning(1006, "upstream", "eof");
        assert_eq!(m.what, "upstream closed TCP without a Close frame");
        assert_eq!(
            meaning(1009, "client", "message_too_big").short,
            "message too big (over limits.max_message_size)"
        );
    }

    #[test]
    fn codes_without_advice_fall_back_by_range() {
        assert_eq!(
            meaning(3001, "client", "close_frame").short,
            "registered application code"
        );
        assert_eq!(
            meaning(4001, "upstream", "close_frame").short,
            "application code"
        );
        assert_eq!(meaning(2000, "client", "close_frame"), OTHER);
    }
}
