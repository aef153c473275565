//! The demo's reconnecting clients: two groups that come back after every
//! abnormal ending, one without backoff and one with exponential backoff
//! and full jitter, each on a proxy instance of its own.
//!
//! Every session of theirs ends the same way: it chats for
//! [`SESSION_LIFE`], then the upstream crashes (`drop`: `1006 upstream
//! eof`, the client gets 1014). Then the client waits, per its group, and
//! reconnects:
//!
//! | group        | clients | wait before reconnect `n` (0-based)                          |
//! |--------------|---------|---------------------------------------------------------------|
//! | `no-backoff` | 3       | uniform 0–50 ms, every time                                   |
//! | `backoff`    | 6       | uniform 0–min(4 s, 250 ms·2ⁿ) (full jitter); never reset, as its sessions never last |
//!
//! A client sends its identity in the header [`HEADER`]; the instances
//! say `clients.identity = "header:X-Demo-Client"`, so each client is one
//! client to the proxy although all come from 127.0.0.1.
//!
//! What the table shows comes from the proxy only: each group's instance's
//! `wspulse_reconnect_delay_seconds{class="abnormal"}` buckets ([`GroupRow`])
//! and, for the growth of the backoff group's delays, its `/closures`
//! records (`client_key`, `reconnect_after_s`), read in-process
//! ([`FirstReconnects`]). The clients themselves count only what the check
//! needs to compare against: the sessions they opened.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::scenarios::Client;
use crate::explain::prom;
use crate::kit::raw::{RawError, RawPeer};
use crate::recent::Filter;
use crate::record::ClosureRecord;

/// The header each reconnecting client sends its identity in.
pub const HEADER: &str = "X-Demo-Client";
/// How long each of their sessions lasts before the upstream crashes.
pub const SESSION_LIFE: Duration = Duration::from_millis(200);
/// The no-backoff group's longest wait.
const NO_BACKOFF_MAX: Duration = Duration::from_millis(50);
/// The backoff group's first ceiling...
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// ...doubled per attempt up to this.
const BACKOFF_CAP: Duration = Duration::from_secs(4);
/// A client keeps at most this many problem lines (a broken proxy must
/// not grow the list of a client that retries every few ms).
const MAX_PROBLEMS: usize = 10;

/// A group of reconnecting clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    /// Reconnects within 0–50 ms of every abnormal end.
    NoBackoff,
    /// Exponential backoff with full jitter.
    Backoff,
}

impl Group {
    /// Both groups, in table order.
    pub const ALL: [Group; 2] = [Group::NoBackoff, Group::Backoff];

    /// Its name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Group::NoBackoff => "no-backoff",
            Group::Backoff => "backoff",
        }
    }

    /// How many clients it has.
    pub fn clients(self) -> usize {
        match self {
            Group::NoBackoff => 3,
            Group::Backoff => 6,
        }
    }

    /// The longest wait before reconnect `attempt` (0-based).
    pub fn ceiling(self, attempt: u32) -> Duration {
        match self {
            Group::NoBackoff => NO_BACKOFF_MAX,
            Group::Backoff => BACKOFF_BASE
                .saturating_mul(1u32 << attempt.min(16))
                .min(BACKOFF_CAP),
        }
    }

    /// What its clients do, for the table.
    pub fn policy(self) -> &'static str {
        match self {
            Group::NoBackoff => "waits 0-50 ms",
            Group::Backoff => "waits 0-250 ms, x2 each time, to 0-4 s",
        }
    }

    /// The wait before reconnect `attempt`: full jitter under the ceiling.
    fn delay(self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt).as_secs_f64();
        Duration::from_secs_f64(rand::random_range(0.0..=ceiling))
    }
}

// === The clients ===

/// What one reconnecting client did, from its side.
#[derive(Debug, Default)]
pub(super) struct ClientReport {
    /// Sessions it opened (got its 101): each must be counted
    /// `1006 upstream eof` by its group's instance.
    pub(super) sessions: u64,
    /// What it saw that it should not have (at most [`MAX_PROBLEMS`]).
    pub(super) problems: Vec<String>,
    /// Problems beyond those kept.
    pub(super) more_problems: usize,
}

/// Client `index` of `group`: session, wait, reconnect, until `stop`. A
/// session in progress when `stop` comes is played to its end (bounded by
/// the raw peer's limits); a wait is cut short.
pub(super) async fn run_client(
    group: Group,
    index: usize,
    addr: SocketAddr,
    stop: CancellationToken,
) -> ClientReport {
    let mut report = ClientReport::default();
    let identity = format!("{HEADER}: {}-{index}\r\n", group.name());
    let path = format!("/demo/{}", group.name());
    let mut attempt = 0u32;
    while !stop.is_cancelled() {
        let (established, problem) = session(addr, &path, &identity).await;
        report.sessions += u64::from(established);
        if let Some(p) = problem {
            if report.problems.len() < MAX_PROBLEMS {
                report.problems.push(p);
            } else {
                report.more_problems += 1;
            }
        }
        let wait = group.delay(attempt);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    report
}

/// One session: open it, chat for [`SESSION_LIFE`], have the upstream
/// crash, expect the proxy's 1014. Whether it was established, and what
/// went wrong, if anything.
async fn session(addr: SocketAddr, path: &str, identity: &str) -> (bool, Option<String>) {
    let peer = match RawPeer::connect_with(addr, path, identity).await {
        Ok(peer) => peer,
        Err(RawError::Refused { status, .. }) => {
            return (false, Some(format!("expected 101, got HTTP {status}")));
        }
        Err(e) => return (false, Some(e.to_string())),
    };
    let mut ws = Client::new(peer);
    let played = async {
        ws.echo("hello again").await?;
        ws.idle(SESSION_LIFE).await?;
        ws.send_script_expect_1014(b"drop").await
    };
    (true, played.await.err())
}

// === What the proxy recorded ===

/// One group's line of the table, from its instance's registry.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRow {
    /// The group.
    pub group: Group,
    /// Sessions its instance opened (`wspulse_connections_opened_total`).
    pub sessions: u64,
    /// `wspulse_reconnect_delay_seconds{class="abnormal"}` buckets (upper
    /// bound, cumulative count), both sides summed.
    pub delays: Vec<(f64, u64)>,
}

impl GroupRow {
    fn as_f64(&self) -> Vec<(f64, f64)> {
        self.delays.iter().map(|&(le, n)| (le, n as f64)).collect()
    }

    /// Reconnects observed.
    pub fn reconnects(&self) -> u64 {
        self.delays.last().map_or(0, |x| x.1)
    }

    /// The `q` quantile of the delays, interpolated in its bucket.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        prom::quantile(&self.as_f64(), q)
    }

    /// Share of the reconnects within `bound` seconds (a bucket bound).
    pub fn share_within(&self, bound: f64) -> Option<f64> {
        let total = self.reconnects();
        (total > 0).then(|| prom::count_within(&self.as_f64(), bound) / total as f64)
    }
}

/// How many of each backoff client's first reconnects are kept.
pub const KEEP: usize = 6;

/// The first [`KEEP`] reconnect delays of each client, in order, from a
/// group instance's `/closures` records. Read as the demo runs, so that
/// the ring (1000 records) never drops a client's first ones before they
/// are kept; bounded by clients × [`KEEP`].
#[derive(Debug, Default)]
pub struct FirstReconnects {
    by_client: BTreeMap<String, BTreeMap<SystemTime, f64>>,
}

impl FirstReconnects {
    /// Take in the ring's records (any order, seen before or not).
    pub fn absorb(&mut self, records: &[ClosureRecord]) {
        for r in records {
            let (Some(key), Some(after)) = (&r.client_key, r.reconnect_after_s) else {
                continue;
            };
            let first = self.by_client.entry(key.clone()).or_default();
            first.insert(r.start, after);
            while first.len() > KEEP {
                first.pop_last();
            }
        }
    }

    /// Take in what `metrics`' ring holds now.
    pub fn poll(&mut self, metrics: &crate::metrics::Metrics) {
        self.absorb(&metrics.recent().query(&Filter::default()));
    }

    /// The growth of the delays over the clients with at least
    /// [`GROWTH_REACH`] reconnects: the mean of their first reconnect's
    /// delay, and the mean of their 3rd to 6th.
    pub fn growth(&self) -> Growth {
        let reached: Vec<Vec<f64>> = self
            .by_client
            .values()
            .filter(|d| d.len() >= GROWTH_REACH)
            .map(|d| d.values().copied().collect())
            .collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let firsts: Vec<f64> = reached.iter().map(|d| d[0]).collect();
        let later: Vec<f64> = reached.iter().flat_map(|d| d[2..].to_vec()).collect();
        Growth {
            clients: reached.len(),
            first: mean(&firsts),
            later: mean(&later),
        }
    }
}

/// A client is counted for the growth once it has this many reconnects.
pub const GROWTH_REACH: usize = 4;

/// How the backoff group's delays grew, per [`FirstReconnects::growth`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Growth {
    /// Clients with at least [`GROWTH_REACH`] reconnects.
    pub clients: usize,
    /// Mean delay of their first reconnect, seconds.
    pub first: f64,
    /// Mean delay of their 3rd to 6th reconnects, seconds.
    pub later: f64,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_to_the_cap_and_delays_stay_under_them() {
        let ms = |d: Duration| d.as_millis();
        let b: Vec<u128> = (0..7).map(|n| ms(Group::Backoff.ceiling(n))).collect();
        assert_eq!(b, [250, 500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(ms(Group::Backoff.ceiling(u32::MAX)), 4000);
        assert_eq!(ms(Group::NoBackoff.ceiling(9)), 50);
        for n in 0..40 {
            for g in Group::ALL {
                assert!(g.delay(n) <= g.ceiling(n));
            }
        }
    }

    #[test]
    fn group_rows_read_their_buckets() {
        let row = GroupRow {
            group: Group::NoBackoff,
            sessions: 12,
            delays: vec![(0.05, 6), (1.0, 9), (f64::INFINITY, 10)],
        };
        assert_eq!(row.reconnects(), 10);
        assert_eq!(row.share_within(1.0), Some(0.9));
        let p50 = row.quantile(0.5).unwrap();
        assert!((p50 - 0.05 * 5.0 / 6.0).abs() < 1e-9, "{p50}");
        let empty = GroupRow {
            delays: vec![],
            ..row
        };
        assert_eq!((empty.reconnects(), empty.share_within(1.0)), (0, None));
    }

    fn record(key: &str, start_ms: u64, after: Option<f64>) -> ClosureRecord {
        let info = crate::record::SessionInfo {
            reconnect_after: after.map(Duration::from_secs_f64),
            ..Default::default()
        };
        let closure =
            crate::closure::classify(&crate::closure::TerminalEvent::Shutdown { code: 1001 });
        let stats = crate::record::SessionStats::new(tokio::time::Instant::now());
        let start = SystemTime::UNIX_EPOCH + Duration::from_millis(start_ms);
        let mut r = ClosureRecord::new(
            start,
            0.0,
            closure,
            String::new(),
            "default".into(),
            info,
            &stats,
            0.0,
        );
        // A ClientKey is made only by a tracker; the record shows its short form.
        r.client_key = Some(key.into());
        r
    }

    #[test]
    fn first_reconnects_keep_each_clients_first_ones_in_order() {
        let mut f = FirstReconnects::default();
        // Newest first, as the ring answers; the first session has none.
        let a: Vec<ClosureRecord> = (0..9)
            .rev()
            .map(|i| record("a", i * 1000, (i > 0).then(|| i as f64 / 10.0)))
            .collect();
        f.absorb(&a);
        // Polled again: the same records change nothing.
        f.absorb(&a[..3]);
        f.absorb(&[record("b", 0, Some(0.2)), record("b", 900, Some(0.3))]);
        let kept: Vec<f64> = f.by_client["a"].values().copied().collect();
        assert_eq!(kept, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]);
        // Only "a" has GROWTH_REACH reconnects: first 0.1, 3rd to 6th 0.3..0.6.
        let g = f.growth();
        assert_eq!(g.clients, 1);
        assert!(
            (g.first - 0.1).abs() < 1e-9 && (g.later - 0.45).abs() < 1e-9,
            "{g:?}"
        );
        assert_eq!(FirstReconnects::default().growth().clients, 0);
    }
}
