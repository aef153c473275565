//! What one session was and did: the facts the session gathers while it
//! relays and hands over when it ends. A leaf below both of their users:
//! [`crate::metrics`] turns them into counters and histograms, and
//! [`crate::recent`] keeps the last few as [`ClosureRecord`]s for
//! `/closures`.

use std::net::SocketAddr;
use std::time::SystemTime;

use serde::Serialize;
use tokio::time::Instant;

use crate::clients::ClientKey;
use crate::closure::{Closure, LegId};

/// `direction` label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Frames read from the client, written to the upstream.
    ClientToUpstream,
    /// Frames read from the upstream, written to the client.
    UpstreamToClient,
}

impl Direction {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ClientToUpstream => "client_to_upstream",
            Direction::UpstreamToClient => "upstream_to_client",
        }
    }

    /// The direction of what `leg` sent.
    pub fn from_leg(leg: LegId) -> Direction {
        match leg {
            LegId::Client => Direction::ClientToUpstream,
            LegId::Upstream => Direction::UpstreamToClient,
        }
    }
}

/// What the handshake knows about a session.
#[derive(Debug, Clone, Default)]
pub struct SessionInfo {
    /// The client's socket address, kept as one and formatted only where
    /// shown (`/closures`, logs): a per-session `to_string` was most of the
    /// handshake's formatting cost.
    pub client_addr: Option<SocketAddr>,
    /// The request path (without the query).
    pub path: String,
    /// The extension negotiated end to end: `"permessage-deflate"`, or
    /// `None` (`null` in `/closures`).
    pub compression: Option<&'static str>,
    /// The client's hashed identity, when tracking is on.
    pub client_key: Option<ClientKey>,
    /// Time from the client's previous ending to this upgrade request.
    pub reconnect_after: Option<std::time::Duration>,
}

/// The session's running counters, kept by the session itself (one owner,
/// no lock) and handed over at its end.
#[derive(Debug, Clone, Copy)]
pub struct SessionStats {
    /// Data messages client → upstream.
    pub messages_c2u: u64,
    /// Data messages upstream → client.
    pub messages_u2c: u64,
    /// Payload bytes client → upstream.
    pub bytes_c2u: u64,
    /// Payload bytes upstream → client.
    pub bytes_u2c: u64,
    /// When a frame last went either way (pings included).
    pub last_activity: Instant,
    /// Last proxy-ping RTT on the client leg, seconds.
    pub rtt_client: Option<f64>,
    /// Last proxy-ping RTT on the upstream leg, seconds.
    pub rtt_upstream: Option<f64>,
}

impl SessionStats {
    /// Zero counters, last activity at `now` (the session start).
    pub fn new(now: Instant) -> SessionStats {
        SessionStats {
            messages_c2u: 0,
            messages_u2c: 0,
            bytes_c2u: 0,
            bytes_u2c: 0,
            last_activity: now,
            rtt_client: None,
            rtt_upstream: None,
        }
    }

    /// One data message of `len` payload bytes went `dir`.
    #[inline]
    pub fn count(&mut self, dir: Direction, len: usize) {
        let (messages, bytes) = match dir {
            Direction::ClientToUpstream => (&mut self.messages_c2u, &mut self.bytes_c2u),
            Direction::UpstreamToClient => (&mut self.messages_u2c, &mut self.bytes_u2c),
        };
        *messages += 1;
        *bytes += len as u64;
    }

    /// The latest ping round trip on `leg`.
    pub fn rtt(&mut self, leg: LegId, seconds: f64) {
        match leg {
            LegId::Client => self.rtt_client = Some(seconds),
            LegId::Upstream => self.rtt_upstream = Some(seconds),
        }
    }
}

/// How a session ended and what it did: what the session hands to the
/// metrics when it is over.
#[derive(Debug, Clone)]
pub struct SessionEnd {
    /// The classified ending.
    pub closure: Closure,
    /// The reason of the session's first Close frame (at most 123 bytes).
    pub reason: String,
    /// The counters at the end.
    pub stats: SessionStats,
}

/// One ended session, as `/closures` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ClosureRecord {
    /// Start; shown as RFC 3339 UTC. Formatted only when `/closures` is
    /// read: every session ends with a record, few records are ever read.
    #[serde(serialize_with = "serialize_rfc3339")]
    pub start: SystemTime,
    /// End; shown as RFC 3339 UTC.
    #[serde(serialize_with = "serialize_rfc3339")]
    pub end: SystemTime,
    /// Lifetime in seconds.
    pub duration_s: f64,
    /// Close code (as in the `code` label).
    pub code: u16,
    /// Close reason of the first Close frame, at most 123 bytes.
    pub reason: String,
    /// `clean` or `abnormal`.
    pub class: &'static str,
    /// Who ended it.
    pub side: &'static str,
    /// Why.
    pub cause: &'static str,
    /// The route label.
    pub route: String,
    /// The client's address (serialised as `"ip:port"`).
    pub client_addr: Option<SocketAddr>,
    /// The request path.
    pub path: String,
    /// `"permessage-deflate"` when negotiated end to end, else `null`.
    pub compression: Option<&'static str>,
    /// Short hash of the client's identity (`clients.identity`), to follow
    /// one client's sessions; `null` when tracking is off.
    pub client_key: Option<String>,
    /// Seconds from this client's previous ending to this session's
    /// upgrade request; `null` for a client seen for the first time.
    pub reconnect_after_s: Option<f64>,
    /// Data messages client → upstream.
    pub messages_client_to_upstream: u64,
    /// Data messages upstream → client.
    pub messages_upstream_to_client: u64,
    /// Payload bytes client → upstream.
    pub bytes_client_to_upstream: u64,
    /// Payload bytes upstream → client.
    pub bytes_upstream_to_client: u64,
    /// Last keepalive RTT on the client leg, seconds.
    pub last_rtt_client_s: Option<f64>,
    /// Last keepalive RTT on the upstream leg, seconds.
    pub last_rtt_upstream_s: Option<f64>,
    /// Seconds since the last frame either way when it ended.
    pub idle_before_close_s: f64,
}

impl ClosureRecord {
    /// Build a record from what the session guard knows.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        started: SystemTime,
        duration_s: f64,
        closure: Closure,
        reason: String,
        route: String,
        info: SessionInfo,
        stats: &SessionStats,
        idle_s: f64,
    ) -> ClosureRecord {
        let end = started + std::time::Duration::from_secs_f64(duration_s.max(0.0));
        ClosureRecord {
            start: started,
            end,
            duration_s,
            code: closure.code,
            reason,
            class: closure.class(),
            side: closure.side.as_str(),
            cause: closure.cause.as_str(),
            route,
            client_addr: info.client_addr,
            path: info.path,
            compression: info.compression,
            client_key: info.client_key.map(ClientKey::short),
            reconnect_after_s: info.reconnect_after.map(|d| d.as_secs_f64()),
            messages_client_to_upstream: stats.messages_c2u,
            messages_upstream_to_client: stats.messages_u2c,
            bytes_client_to_upstream: stats.bytes_c2u,
            bytes_upstream_to_client: stats.bytes_u2c,
            last_rtt_client_s: stats.rtt_client,
            last_rtt_upstream_s: stats.rtt_upstream,
            idle_before_close_s: idle_s,
        }
    }
}

fn serialize_rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::closure::{TerminalEvent, classify};
    use std::time::UNIX_EPOCH;

    /// A record as the guard builds it.
    pub(crate) fn record(code: u16) -> ClosureRecord {
        let closure = classify(&TerminalEvent::CloseFrame {
            leg: LegId::Client,
            code: Some(code),
        });
        let mut stats = SessionStats::new(Instant::now());
        stats.count(Direction::ClientToUpstream, 3);
        stats.count(Direction::UpstreamToClient, 2);
        stats.count(Direction::UpstreamToClient, 2);
        stats.rtt(LegId::Upstream, 0.001);
        ClosureRecord::new(
            UNIX_EPOCH,
            1.5,
            closure,
            "bye".into(),
            "default".into(),
            SessionInfo::default(),
            &stats,
            0.5,
        )
    }

    #[test]
    fn record_serialises_with_documented_fields() {
        let v = serde_json::to_value(record(1000)).unwrap();
        for key in [
            "start",
            "end",
            "duration_s",
            "code",
            "reason",
            "side",
            "cause",
            "route",
            "client_addr",
            "compression",
            "client_key",
            "reconnect_after_s",
            "bytes_client_to_upstream",
            "messages_upstream_to_client",
            "last_rtt_upstream_s",
            "idle_before_close_s",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert_eq!(v["start"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["end"], "1970-01-01T00:00:01.500Z");
        assert_eq!(v["messages_upstream_to_client"], 2);
        assert_eq!(v["bytes_upstream_to_client"], 4);
        assert_eq!(v["last_rtt_upstream_s"], 0.001);
        assert!(v["compression"].is_null());
    }
}
