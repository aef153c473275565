//! The demo's table: what the registries say, one row per kind of ending,
//! with its meaning; plain lines, redrawn in place on a terminal.

use std::fmt::Write as _;

use super::reconnect::GroupRow;
use super::snapshot::{RowKey, Snapshot};
use crate::explain::prom;

/// Addresses shown in the table header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// `ws://` address of the main proxy.
    pub proxy: String,
    /// `ws://` address of the echo upstream.
    pub upstream: String,
    /// `/metrics` URL of the main proxy.
    pub metrics: String,
    /// `/metrics` URL of the instance whose upstream is unreachable.
    pub metrics_unreachable: String,
}

/// Everything one rendering of the table shows.
pub struct View<'a> {
    /// `12.3 s, running` or `final, after 5.0 s`.
    pub title: String,
    /// Addresses for the header.
    pub endpoints: &'a Endpoints,
    /// Scenarios started.
    pub started: u64,
    /// Scenarios finished.
    pub done: u64,
    /// Client-side problems so far.
    pub problems: usize,
    /// What the registries say (deltas since the demo started).
    pub snap: &'a Snapshot,
    /// Over what the message rates are taken.
    pub rate_label: String,
    /// Messages/s client→upstream, upstream→client.
    pub rates: [f64; 2],
    /// The reconnecting groups, each from its own instance (none: no section).
    pub groups: &'a [GroupRow],
    /// `/metrics` URLs of the groups' instances, in the order of `groups`.
    pub group_metrics: &'a [String],
}

fn fmt_ms(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".into(),
        Some(s) => {
            let ms = s * 1000.0;
            if ms < 10.0 {
                format!("{ms:.2} ms")
            } else if ms < 100.0 {
                format!("{ms:.1} ms")
            } else {
                format!("{ms:.0} ms")
            }
        }
    }
}

/// The table, as plain text lines.
pub fn render(v: &View<'_>) -> String {
    let s = v.snap;
    let mut o = String::new();
    let e = v.endpoints;
    let _ = writeln!(o, "wspulse demo: {}", v.title);
    let _ = writeln!(
        o,
        "  clients -> proxy {} -> echo upstream {}",
        e.proxy, e.upstream
    );
    let _ = writeln!(
        o,
        "  metrics: {}   (502 scenario: {})",
        e.metrics, e.metrics_unreachable
    );
    let _ = writeln!(
        o,
        "  scenarios: {} started, {} done, {} client-side problems",
        v.started, v.done, v.problems
    );
    let _ = writeln!(
        o,
        "  sessions: {} opened, {} active   messages/s ({}): {:.1} client->upstream, {:.1} upstream->client",
        s.opened, s.active, v.rate_label, v.rates[0], v.rates[1]
    );
    let rtt = s
        .rtt
        .each_ref()
        .map(|b| b.iter().map(|&(le, n)| (le, n as f64)).collect::<Vec<_>>());
    let p = |i: usize, q: f64| fmt_ms(prom::quantile(&rtt[i], q));
    let _ = writeln!(
        o,
        "  ping RTT (from histogram buckets): client p50 {} p99 {}, upstream p50 {} p99 {}",
        p(0, 0.5),
        p(0, 0.99),
        p(1, 0.5),
        p(1, 0.99)
    );
    let idle: Vec<(f64, f64)> = s.idle.iter().map(|&(le, n)| (le, n as f64)).collect();
    let secs = |q: f64| {
        prom::quantile(&idle, q).map_or_else(|| "n/a".to_string(), |v| format!("{v:.1} s"))
    };
    let _ = writeln!(
        o,
        "  idle before an abnormal close (a cluster at 30/60/100/350 s = an idle timeout): p50 {} p99 {}",
        secs(0.5),
        secs(0.99)
    );
    let rows: Vec<(&RowKey, u64)> = s
        .rows
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| (k, *n))
        .collect();
    let total: u64 = rows.iter().map(|(_, n)| n).sum();
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "  {:<8}  {:<8}  {:<15}  {:>7}  {:>6}  meaning",
        "code", "side", "cause", "count", "share"
    );
    let mut in_http = false;
    for (key, n) in &rows {
        let http = !matches!(key, RowKey::Closed { .. });
        if http && !in_http {
            let _ = writeln!(o, "  -- handshakes that never became sessions --");
            in_http = true;
        }
        let (code, side, cause) = key.columns();
        let share = 100.0 * *n as f64 / total.max(1) as f64;
        let _ = writeln!(
            o,
            "  {code:<8}  {side:<8}  {cause:<15}  {n:>7}  {share:>5.1}%  {}",
            key.meaning()
        );
    }
    if rows.is_empty() {
        let _ = writeln!(o, "  (nothing has ended yet)");
    }
    let _ = writeln!(
        o,
        "\n  rows: wspulse_connections_closed_total{{code,side,cause}}; HTTP rows: \
         wspulse_handshake_rejections_total{{status}}, wspulse_upstream_connect_failures_total{{reason}}"
    );
    if !v.groups.is_empty() {
        render_groups(&mut o, v.groups, v.group_metrics);
    }
    o
}

/// A reconnect delay: ms below a second, else seconds.
fn fmt_delay(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".into(),
        Some(s) if s < 1.0 => format!("{:.0} ms", s * 1000.0),
        Some(s) => format!("{s:.1} s"),
    }
}

/// The reconnect section: one line per group, from its instance's
/// `wspulse_reconnect_delay_seconds{class="abnormal"}`.
fn render_groups(o: &mut String, groups: &[GroupRow], metrics: &[String]) {
    let _ = writeln!(
        o,
        "\n  reconnects after an abnormal ending (upstream crash), one proxy instance per group:"
    );
    let _ = writeln!(
        o,
        "  {:<10}  {:>8}  {:>10}  {:>8}  {:>8}  {:>11}  clients",
        "group", "sessions", "reconnects", "p50", "p90", "share < 1 s"
    );
    for g in groups {
        let share = g
            .share_within(1.0)
            .map_or_else(|| "-".to_string(), |s| format!("{:.1}%", 100.0 * s));
        let _ = writeln!(
            o,
            "  {:<10}  {:>8}  {:>10}  {:>8}  {:>8}  {:>11}  {} x {}",
            g.group.name(),
            g.sessions,
            g.reconnects(),
            fmt_delay(g.quantile(0.5)),
            fmt_delay(g.quantile(0.9)),
            share,
            g.group.clients(),
            g.group.policy(),
        );
    }
    let _ = writeln!(
        o,
        "  from wspulse_reconnect_delay_seconds{{class=\"abnormal\"}} buckets: {}",
        metrics.join(", ")
    );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::demo::reconnect::Group;

    /// The table for a fixed set of counts, character for character.
    #[test]
    fn table_snapshot() {
        let closed = |code: u16, side: &str, cause: &str| RowKey::Closed {
            code,
            side: side.into(),
            cause: cause.into(),
        };
        let rows = BTreeMap::from([
            (closed(1000, "client", "close_frame"), 40),
            (closed(1000, "upstream", "close_frame"), 20),
            (closed(1006, "client", "eof"), 10),
            (closed(1006, "client", "ping_timeout"), 5),
            (closed(1006, "upstream", "eof"), 0), // pre-registered, hidden
            (closed(1009, "client", "message_too_big"), 5),
            (closed(4001, "upstream", "close_frame"), 10),
            (RowKey::Rejected { status: 403 }, 5),
            (RowKey::Rejected { status: 503 }, 0),
            (
                RowKey::ConnectFailed {
                    reason: "refused".into(),
                },
                5,
            ),
        ]);
        let snap = Snapshot {
            rows,
            opened: 93,
            active: 3,
            messages: [120, 118],
            rtt: [
                vec![(0.0005, 10), (0.001, 20), (f64::INFINITY, 20)],
                vec![(0.0005, 0), (0.001, 4), (0.0025, 5), (f64::INFINITY, 5)],
            ],
            idle: vec![(0.5, 10), (1.0, 18), (5.0, 20), (f64::INFINITY, 20)],
            reconnect: vec![],
        };
        let endpoints = Endpoints {
            proxy: "ws://127.0.0.1:40001".into(),
            upstream: "ws://127.0.0.1:40000".into(),
            metrics: "http://127.0.0.1:40002/metrics".into(),
            metrics_unreachable: "http://127.0.0.1:40004/metrics".into(),
        };
        let view = View {
            title: "12.0 s, running".into(),
            endpoints: &endpoints,
            started: 100,
            done: 97,
            problems: 0,
            snap: &snap,
            rate_label: "last 1 s".into(),
            rates: [40.0, 39.5],
            groups: &[
                GroupRow {
                    group: Group::NoBackoff,
                    sessions: 66,
                    delays: vec![
                        (0.01, 10),
                        (0.025, 30),
                        (0.05, 62),
                        (1.0, 63),
                        (f64::INFINITY, 63),
                    ],
                },
                GroupRow {
                    group: Group::Backoff,
                    sessions: 30,
                    delays: vec![
                        (0.1, 4),
                        (0.3, 10),
                        (1.0, 16),
                        (2.0, 22),
                        (5.0, 24),
                        (f64::INFINITY, 24),
                    ],
                },
            ],
            group_metrics: &[
                "http://127.0.0.1:40006/metrics".into(),
                "http://127.0.0.1:40008/metrics".into(),
            ],
        };
        let expected = "\
wspulse demo: 12.0 s, running
  clients -> proxy ws://127.0.0.1:40001 -> echo upstream ws://127.0.0.1:40000
  metrics: http://127.0.0.1:40002/metrics   (502 scenario: http://127.0.0.1:40004/metrics)
  scenarios: 100 started, 97 done, 0 client-side problems
  sessions: 93 opened, 3 active   messages/s (last 1 s): 40.0 client->upstream, 39.5 upstream->client
  ping RTT (from histogram buckets): client p50 0.50 ms p99 0.99 ms, upstream p50 0.81 ms p99 2.43 ms
  idle before an abnormal close (a cluster at 30/60/100/350 s = an idle timeout): p50 0.5 s p99 4.6 s

  code      side      cause              count   share  meaning
  1000      client    close_frame           40   40.0%  normal closure
  1000      upstream  close_frame           20   20.0%  normal closure
  1006      client    eof                   10   10.0%  no Close frame: peer vanished / network / idle kill
  1006      client    ping_timeout           5    5.0%  peer stopped answering pings (dead or black-holed)
  1009      client    message_too_big        5    5.0%  message too big (over limits.max_message_size)
  4001      upstream  close_frame           10   10.0%  application code
  -- handshakes that never became sessions --
  HTTP 403  upstream  rejected               5    5.0%  upstream refused the upgrade; client got 403 too, no session
  HTTP 502  upstream  refused                5    5.0%  upstream unreachable: connection refused

  rows: wspulse_connections_closed_total{code,side,cause}; HTTP rows: wspulse_handshake_rejections_total{status}, wspulse_upstream_connect_failures_total{reason}

  reconnects after an abnormal ending (upstream crash), one proxy instance per group:
  group       sessions  reconnects       p50       p90  share < 1 s  clients
  no-backoff        66          63     26 ms     46 ms       100.0%  3 x waits 0-50 ms
  backoff           30          24    533 ms     1.9 s        66.7%  6 x waits 0-250 ms, x2 each time, to 0-4 s
  from wspulse_reconnect_delay_seconds{class=\"abnormal\"} buckets: http://127.0.0.1:40006/metrics, http://127.0.0.1:40008/metrics
";
        let got = render(&view);
        assert_eq!(got, expected, "\n--- got ---\n{got}");
    }
}
