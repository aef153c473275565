//! The last N ended sessions, for `GET /closures`.
//!
//! A bounded ring behind a mutex. The relay touches it once per session, at
//! the end (one push); readers copy out what they need. Counters say how
//! often; this says which sessions, on which route, after how much idle time.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::closure::Closure;
use crate::metrics::{SessionInfo, SessionStats};

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

/// Filters of `GET /closures`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Only this class (`clean` / `abnormal`).
    pub class: Option<String>,
    /// Only this code.
    pub code: Option<u16>,
    /// At most this many, newest first.
    pub limit: Option<usize>,
}

impl Filter {
    /// Parse a query string such as `class=abnormal&code=1006&limit=50`.
    pub fn parse(query: &str) -> Result<Filter, String> {
        let mut f = Filter::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "class" if v == "clean" || v == "abnormal" => f.class = Some(v.to_string()),
                "class" => return Err(format!("class must be clean or abnormal, not {v:?}")),
                "code" => {
                    f.code = Some(
                        v.parse()
                            .map_err(|_| format!("code must be a number, not {v:?}"))?,
                    )
                }
                "limit" => {
                    f.limit = Some(
                        v.parse()
                            .map_err(|_| format!("limit must be a number, not {v:?}"))?,
                    )
                }
                other => return Err(format!("unknown filter {other:?} (class, code, limit)")),
            }
        }
        Ok(f)
    }
}

/// A bounded ring of recent closures; capacity 0 disables it.
pub struct RecentClosures {
    capacity: usize,
    ring: Mutex<VecDeque<ClosureRecord>>,
}

impl RecentClosures {
    /// A ring holding at most `capacity` records.
    pub fn new(capacity: usize) -> RecentClosures {
        RecentClosures {
            capacity,
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
        }
    }

    /// Whether the ring is enabled.
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Add a record, dropping the oldest beyond capacity.
    pub fn push(&self, record: ClosureRecord) {
        if self.capacity == 0 {
            return;
        }
        // A poisoned lock only means another push panicked mid-way; the
        // ring is still a valid VecDeque, so keep using it.
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(record);
    }

    /// Matching records, newest first.
    pub fn query(&self, filter: &Filter) -> Vec<ClosureRecord> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter()
            .rev()
            .filter(|r| filter.class.as_deref().is_none_or(|c| c == r.class))
            .filter(|r| filter.code.is_none_or(|c| c == r.code))
            .take(filter.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }
}

fn serialize_rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

/// RFC 3339 UTC with milliseconds, without a date crate (civil-from-days,
/// Howard Hinnant's algorithm).
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::closure::{Side, TerminalEvent, classify};

    fn record(code: u16) -> ClosureRecord {
        let closure = classify(TerminalEvent::CloseFrame {
            side: Side::Client,
            code: Some(code),
        });
        let stats = SessionStats {
            messages_c2u: 1,
            messages_u2c: 2,
            bytes_c2u: 3,
            bytes_u2c: 4,
            last_activity: tokio::time::Instant::now(),
            rtt_client: None,
            rtt_upstream: Some(0.001),
        };
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
    fn ring_is_bounded_and_newest_first() {
        let r = RecentClosures::new(3);
        for code in [1000, 4001, 1011, 4002] {
            r.push(record(code));
        }
        let all = r.query(&Filter::default());
        assert_eq!(
            all.iter().map(|r| r.code).collect::<Vec<_>>(),
            vec![4002, 1011, 4001]
        );
        let abnormal = r.query(&Filter::parse("class=abnormal").unwrap());
        assert_eq!(abnormal.len(), 1);
        assert_eq!(r.query(&Filter::parse("code=4001").unwrap()).len(), 1);
        assert_eq!(r.query(&Filter::parse("limit=2").unwrap()).len(), 2);
        assert!(Filter::parse("class=weird").is_err());
        assert!(Filter::parse("limit=x").is_err());
    }

    #[test]
    fn disabled_ring_keeps_nothing() {
        let r = RecentClosures::new(0);
        r.push(record(1000));
        assert!(r.query(&Filter::default()).is_empty());
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_795_996_800_123);
        assert_eq!(rfc3339(t), "2026-11-30T00:00:00.123Z");
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
            "bytes_client_to_upstream",
            "messages_upstream_to_client",
            "last_rtt_upstream_s",
            "idle_before_close_s",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
    }
}
