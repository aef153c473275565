//! What the proxy's registries say, read back from the Prometheus text
//! they encode ([`crate::explain::prom`]): the rows of the demo's table and
//! the totals above it, summed over the demo's instances and routes.

use std::collections::BTreeMap;

use crate::explain::{meaning, prom};
use crate::metrics::names;

/// One row of the table: a series of the proxy's outcome counters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RowKey {
    /// `wspulse_connections_closed_total{code, side, cause}`, summed over routes.
    Closed {
        /// Close code.
        code: u16,
        /// `client`, `upstream` or `proxy`.
        side: String,
        /// The cause label.
        cause: String,
    },
    /// `wspulse_handshake_rejections_total{status}`.
    Rejected {
        /// The HTTP status the client got.
        status: u16,
    },
    /// `wspulse_upstream_connect_failures_total{reason}`.
    ConnectFailed {
        /// The reason label.
        reason: String,
    },
}

impl RowKey {
    /// The first three columns: code, side, cause.
    pub(super) fn columns(&self) -> (String, String, String) {
        match self {
            RowKey::Closed { code, side, cause } => (code.to_string(), side.clone(), cause.clone()),
            RowKey::Rejected { status } => {
                let side = match status {
                    400 | 408 | 426 | 431 => "client",
                    503 => "proxy",
                    _ => "upstream",
                };
                (format!("HTTP {status}"), side.into(), "rejected".into())
            }
            RowKey::ConnectFailed { reason } => {
                let status = if reason == "timeout" { 504 } else { 502 };
                (format!("HTTP {status}"), "upstream".into(), reason.clone())
            }
        }
    }

    /// `code/side/cause`, for the check's messages.
    pub(super) fn short(&self) -> String {
        let (a, b, c) = self.columns();
        format!("{a}/{b}/{c}")
    }

    /// What the row means, in plain language.
    pub fn meaning(&self) -> String {
        match self {
            RowKey::Closed { code, side, cause } => meaning(*code, side, cause).short.into(),
            RowKey::Rejected { status } => match status {
                400 => "not a valid WebSocket upgrade".into(),
                408 => "client too slow to send its upgrade".into(),
                426 => "Upgrade header or WebSocket version missing".into(),
                431 => "request head too large".into(),
                503 => "over limits.max_connections, or draining".into(),
                s => format!("upstream refused the upgrade; client got {s} too, no session"),
            },
            RowKey::ConnectFailed { reason } => match reason.as_str() {
                "refused" => "upstream unreachable: connection refused",
                "timeout" => "upstream did not answer within connect_timeout",
                "dns" => "upstream host name did not resolve",
                "tls" => "TLS to the upstream failed",
                "protocol" => "upstream broke the WebSocket handshake",
                _ => "upstream connect failed",
            }
            .into(),
        }
    }
}

/// What the proxy's registries say, summed over instances and routes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Outcome counters, zero-valued series included.
    pub rows: BTreeMap<RowKey, u64>,
    /// `wspulse_connections_opened_total`.
    pub opened: u64,
    /// `wspulse_connections_active`.
    pub active: u64,
    /// `wspulse_messages_total`: client→upstream, upstream→client.
    pub messages: [u64; 2],
    /// `wspulse_ping_rtt_seconds` buckets (upper bound, cumulative count):
    /// client leg, upstream leg.
    pub rtt: [Vec<(f64, u64)>; 2],
    /// `wspulse_idle_before_close_seconds{class="abnormal"}` buckets
    /// (upper bound, cumulative count): the idle-limit fingerprint.
    pub idle: Vec<(f64, u64)>,
    /// `wspulse_reconnect_delay_seconds{class="abnormal"}` buckets (upper
    /// bound, cumulative count), both sides summed: how soon clients came
    /// back after an abnormal ending.
    pub reconnect: Vec<(f64, u64)>,
}

impl Snapshot {
    /// Read the Prometheus text of [`crate::metrics::Metrics::encode`]
    /// (what `/metrics` serves).
    pub fn from_text(text: &str) -> Snapshot {
        // A sample's value as a count (0 for junk).
        let count = |v: f64| {
            if v.is_finite() && v > 0.0 {
                v.round() as u64
            } else {
                0
            }
        };
        let samples = prom::parse(text);
        let mut s = Snapshot::default();
        for sample in &samples {
            let get = |k: &str| sample.label(k);
            let n = count(sample.value);
            let mut row = |key: RowKey| *s.rows.entry(key).or_default() += n;
            match sample.name.as_str() {
                names::CLOSED => row(RowKey::Closed {
                    code: get("code").parse().unwrap_or(0),
                    side: get("side").into(),
                    cause: get("cause").into(),
                }),
                names::REJECTIONS => row(RowKey::Rejected {
                    status: get("status").parse().unwrap_or(0),
                }),
                names::CONNECT_FAILURES => row(RowKey::ConnectFailed {
                    reason: get("reason").into(),
                }),
                names::OPENED => s.opened += n,
                names::ACTIVE => s.active += n,
                names::MESSAGES => match get("direction") {
                    "client_to_upstream" => s.messages[0] += n,
                    "upstream_to_client" => s.messages[1] += n,
                    _ => {}
                },
                _ => {}
            }
        }
        let buckets = |name: &str, label: (&str, &str)| -> Vec<(f64, u64)> {
            prom::buckets(&samples, name, label)
                .into_iter()
                .map(|(le, c)| (le, count(c)))
                .collect()
        };
        s.rtt = ["client", "upstream"].map(|side| buckets(names::PING_RTT, ("side", side)));
        s.idle = buckets(names::IDLE_BEFORE_CLOSE, ("class", "abnormal"));
        s.reconnect = prom::buckets_summed(&samples, names::RECONNECT_DELAY, |x| {
            x.has_labels(&[("class", "abnormal")])
        })
        .into_iter()
        .map(|(le, c)| (le, count(c)))
        .collect();
        s
    }

    /// Add another instance's snapshot.
    pub fn add(&mut self, other: &Snapshot) {
        for (k, v) in &other.rows {
            *self.rows.entry(k.clone()).or_default() += v;
        }
        self.opened += other.opened;
        self.active += other.active;
        for i in 0..2 {
            self.messages[i] += other.messages[i];
            self.rtt[i] = merge_buckets(&self.rtt[i], &other.rtt[i], |a, b| a + b);
        }
        self.idle = merge_buckets(&self.idle, &other.idle, |a, b| a + b);
        self.reconnect = merge_buckets(&self.reconnect, &other.reconnect, |a, b| a + b);
    }

    /// What happened since `base`: counters as deltas, `active` as is.
    pub fn since(&self, base: &Snapshot) -> Snapshot {
        let rows = self
            .rows
            .iter()
            .map(|(k, v)| {
                let b = base.rows.get(k).copied().unwrap_or(0);
                (k.clone(), v.saturating_sub(b))
            })
            .collect();
        Snapshot {
            rows,
            opened: self.opened.saturating_sub(base.opened),
            active: self.active,
            messages: [
                self.messages[0].saturating_sub(base.messages[0]),
                self.messages[1].saturating_sub(base.messages[1]),
            ],
            rtt: [
                merge_buckets(&self.rtt[0], &base.rtt[0], u64::saturating_sub),
                merge_buckets(&self.rtt[1], &base.rtt[1], u64::saturating_sub),
            ],
            idle: merge_buckets(&self.idle, &base.idle, u64::saturating_sub),
            reconnect: merge_buckets(&self.reconnect, &base.reconnect, u64::saturating_sub),
        }
    }
}

/// Combine two bucket lists bound by bound (a bound missing in one counts 0).
fn merge_buckets(a: &[(f64, u64)], b: &[(f64, u64)], f: fn(u64, u64) -> u64) -> Vec<(f64, u64)> {
    let mut bounds: Vec<f64> = a.iter().chain(b).map(|x| x.0).collect();
    bounds.sort_by(f64::total_cmp);
    bounds.dedup();
    let at = |l: &[(f64, u64)], le: f64| l.iter().find(|x| x.0 == le).map_or(0, |x| x.1);
    bounds
        .into_iter()
        .map(|le| (le, f(at(a, le), at(b, le))))
        .collect()
}

/// Messages per second each way between two snapshots `dt` seconds apart.
pub(super) fn rates(prev: &Snapshot, now: &Snapshot, dt: f64) -> [f64; 2] {
    let dt = dt.max(0.001);
    [0, 1].map(|i| now.messages[i].saturating_sub(prev.messages[i]) as f64 / dt)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_metrics_encode_says() {
        let text = "\
# HELP wspulse_connections_closed_total x
# TYPE wspulse_connections_closed_total counter
wspulse_connections_closed_total{cause=\"eof\",code=\"1006\",route=\"default\",side=\"client\"} 3
wspulse_connections_closed_total{cause=\"eof\",code=\"1006\",route=\"chat\",side=\"client\"} 2
wspulse_connections_closed_total{cause=\"close_frame\",code=\"1000\",route=\"default\",side=\"upstream\"} 0
wspulse_handshake_rejections_total{status=\"403\"} 4
wspulse_upstream_connect_failures_total{reason=\"refused\"} 1
wspulse_connections_opened_total{route=\"default\"} 7
wspulse_connections_active 2
wspulse_messages_total{direction=\"client_to_upstream\"} 10
wspulse_ping_rtt_seconds_bucket{side=\"client\",le=\"0.001\"} 1
wspulse_ping_rtt_seconds_bucket{side=\"client\",le=\"+Inf\"} 2
wspulse_reconnect_delay_seconds_bucket{class=\"abnormal\",side=\"client\",le=\"1\"} 3
wspulse_reconnect_delay_seconds_bucket{class=\"abnormal\",side=\"upstream\",le=\"1\"} 4
wspulse_reconnect_delay_seconds_bucket{class=\"clean\",side=\"client\",le=\"1\"} 50
";
        let s = Snapshot::from_text(text);
        let eof = RowKey::Closed {
            code: 1006,
            side: "client".into(),
            cause: "eof".into(),
        };
        assert_eq!(s.rows[&eof], 5);
        assert_eq!(s.rows[&RowKey::Rejected { status: 403 }], 4);
        assert_eq!(s.opened, 7);
        assert_eq!(s.active, 2);
        assert_eq!(s.messages, [10, 0]);
        assert_eq!(s.rtt[0], vec![(0.001, 1), (f64::INFINITY, 2)]);
        assert_eq!(s.reconnect, vec![(1.0, 7)]);
        let d = s.since(&s);
        assert!(d.rows.values().all(|v| *v == 0));
        assert_eq!(d.active, 2);
    }

    #[test]
    fn snapshots_add_up_and_subtract_bucket_by_bucket() {
        let a = Snapshot::from_text(
            "wspulse_connections_opened_total 3
wspulse_ping_rtt_seconds_bucket{side=\"client\",le=\"0.001\"} 1
",
        );
        let b = Snapshot::from_text(
            "wspulse_connections_opened_total 4
wspulse_ping_rtt_seconds_bucket{side=\"client\",le=\"0.005\"} 2
",
        );
        let mut sum = a.clone();
        sum.add(&b);
        assert_eq!(sum.opened, 7);
        assert_eq!(sum.rtt[0], vec![(0.001, 1), (0.005, 2)]);
        let d = sum.since(&a);
        assert_eq!(
            (d.opened, d.rtt[0].clone()),
            (4, vec![(0.001, 0), (0.005, 2)])
        );
    }
}
