//! Graceful drain: signals, readiness, the spread schedule, the deadline.
//!
//! A [`Drain`] is shared by the listener, the admin server and every
//! session. When the shutdown future fires, [`drain`] runs the sequence:
//!
//! 1. stop accepting and turn `/readyz` to 503 ([`Drain::start`]);
//! 2. every session sends its Close frames, session *i* of *N* after
//!    `spread × i / N`, so thousands of clients do not reconnect in the same
//!    second (nginx, HAProxy and Envoy cut TCP on drain; Caddy sends every
//!    Close at once);
//! 3. wait for the sessions, at most `drain_timeout` ([`TaskTracker::wait`]);
//! 4. past the deadline, cut what is left ([`Drain::cut`]) and log how many;
//! 5. with `shutdown.final_scrape` set, keep the admin server up until one
//!    `/metrics` scrape has been served after the last session ended, or
//!    that long has passed ([`final_scrape`]): the drain's own counts
//!    (`1001/proxy/shutdown`, drained vs cut) happen after the last scrape
//!    a process would otherwise see, so without it they never reach
//!    Prometheus.
//!
//! Sessions are tracked by a [`TaskTracker`] of our own: hyper's graceful
//! shutdown does not wait for upgraded connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

struct Inner {
    /// Someone asked for a drain without a signal (`GET /drain`).
    requested: CancellationToken,
    /// The drain has finished: every session is gone.
    finished: CancellationToken,
    /// A `/metrics` scrape was served that began after `finished`: the
    /// drain's counts have been read.
    scraped: CancellationToken,
    started: CancellationToken,
    cut: CancellationToken,
    ready: AtomicBool,
    spread: Duration,
    /// Sessions open when the drain started: the denominator of the spread.
    total: AtomicUsize,
    /// Next slot in the spread schedule.
    next: AtomicUsize,
}

/// The drain state shared by the listener, the admin server and sessions.
#[derive(Clone)]
pub struct Drain {
    inner: Arc<Inner>,
}

impl Drain {
    /// A drain that spreads Close frames over `spread`.
    pub fn new(spread: Duration) -> Drain {
        Drain {
            inner: Arc::new(Inner {
                requested: CancellationToken::new(),
                finished: CancellationToken::new(),
                scraped: CancellationToken::new(),
                started: CancellationToken::new(),
                cut: CancellationToken::new(),
                ready: AtomicBool::new(true),
                spread,
                total: AtomicUsize::new(0),
                next: AtomicUsize::new(0),
            }),
        }
    }

    /// Begin draining `sessions` open sessions: readiness off, sessions told.
    pub fn start(&self, sessions: usize) {
        self.inner.ready.store(false, Ordering::SeqCst);
        self.inner.total.store(sessions.max(1), Ordering::SeqCst);
        self.inner.started.cancel();
    }

    /// Ask for a drain now, as a signal would (`GET /drain`).
    pub fn request(&self) {
        self.inner.requested.cancel();
    }

    /// Fires when a drain is requested through [`Drain::request`].
    pub fn requested_token(&self) -> CancellationToken {
        self.inner.requested.clone()
    }

    /// Fires when the drain has finished.
    pub fn finished_token(&self) -> CancellationToken {
        self.inner.finished.clone()
    }

    /// Whether the drain has finished (every session gone).
    pub fn is_finished(&self) -> bool {
        self.inner.finished.is_cancelled()
    }

    /// A `/metrics` answer is about to be sent whose text was encoded
    /// after `finished_before_encode` was read as true: the final counts
    /// are in it. The admin server reads [`Drain::is_finished`] *before*
    /// encoding, so a scrape racing the drain's end never counts.
    pub fn note_scrape(&self, finished_before_encode: bool) {
        if finished_before_encode {
            self.inner.scraped.cancel();
        }
    }

    /// Past the deadline: sessions stop waiting for Close replies.
    pub fn cut(&self) {
        self.inner.cut.cancel();
    }

    /// Whether `/readyz` should say 200.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
    }

    /// Whether the drain has started.
    pub fn is_draining(&self) -> bool {
        self.inner.started.is_cancelled()
    }

    /// Fires when the drain starts.
    pub fn started_token(&self) -> CancellationToken {
        self.inner.started.clone()
    }

    /// Fires at the drain deadline.
    pub fn cut_token(&self) -> CancellationToken {
        self.inner.cut.clone()
    }

    /// How long the calling session waits before sending its Close: the
    /// next slot of an even schedule over `spread`.
    pub fn next_delay(&self) -> Duration {
        if self.inner.spread.is_zero() {
            return Duration::ZERO;
        }
        let slot = self.inner.next.fetch_add(1, Ordering::SeqCst) as u32;
        let total = self.inner.total.load(Ordering::SeqCst).max(1) as u32;
        // Slots beyond the count taken at the start (a session that was
        // mid-handshake) go at the end of the window.
        self.inner
            .spread
            .mul_f64(f64::from(slot.min(total)) / f64::from(total))
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Sessions open when the drain started.
    pub sessions: usize,
    /// Whether the deadline passed with sessions still open.
    pub deadline_hit: bool,
    /// What became of the final scrape (`shutdown.final_scrape`).
    pub final_scrape: FinalScrape,
}

/// The wait for one last `/metrics` scrape after a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalScrape {
    /// `shutdown.final_scrape = "0s"`: no wait.
    Off,
    /// A scrape was served after the last session ended.
    Served,
    /// No scrape came within `shutdown.final_scrape`.
    TimedOut,
}

/// Run the drain sequence over the sessions in `tracker`; returns when they
/// are all gone. `sessions` is the number open now (for the spread).
pub async fn drain(
    drain: &Drain,
    tracker: &TaskTracker,
    sessions: usize,
    timeout: Duration,
) -> DrainReport {
    tracing::info!(sessions, timeout = ?timeout, "draining: readiness off, closing sessions");
    drain.start(sessions);
    tracker.close();
    let deadline_hit = tokio::time::timeout(timeout, tracker.wait()).await.is_err();
    if deadline_hit {
        drain.cut();
        tracker.wait().await;
    }
    drain.inner.finished.cancel();
    DrainReport {
        sessions,
        deadline_hit,
        final_scrape: FinalScrape::Off,
    }
}

/// After the drain has finished, wait until a `/metrics` scrape has been
/// served ([`Drain::note_scrape`]) or `limit` has passed; zero does not
/// wait. A scrape served between the drain's end and this call counts.
pub async fn final_scrape(drain: &Drain, limit: Duration) -> FinalScrape {
    if limit.is_zero() {
        return FinalScrape::Off;
    }
    tracing::info!(limit = ?limit, "drained; waiting for one /metrics scrape before exiting");
    match tokio::time::timeout(limit, drain.inner.scraped.cancelled()).await {
        Ok(()) => FinalScrape::Served,
        Err(_) => FinalScrape::TimedOut,
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_even_over_the_window() {
        let d = Drain::new(Duration::from_secs(2));
        d.start(4);
        let delays: Vec<_> = (0..4).map(|_| d.next_delay().as_millis()).collect();
        assert_eq!(delays, vec![0, 500, 1000, 1500]);
        // A late joiner lands at the end of the window, never beyond it.
        assert_eq!(d.next_delay(), Duration::from_secs(2));
        assert!(!d.is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn final_scrape_waits_for_a_scrape_after_the_drain() {
        let d = Drain::new(Duration::ZERO);
        let tracker = TaskTracker::new();
        // A scrape during the drain does not carry its final counts.
        d.note_scrape(d.is_finished());
        drain(&d, &tracker, 0, Duration::from_secs(1)).await;
        assert!(d.is_finished());
        let waiting = tokio::spawn({
            let d = d.clone();
            async move { final_scrape(&d, Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_secs(10)).await; // paused time: no real wait
        assert!(!waiting.is_finished());
        d.note_scrape(d.is_finished());
        assert_eq!(waiting.await.unwrap(), FinalScrape::Served);
    }

    #[tokio::test(start_paused = true)]
    async fn final_scrape_gives_up_after_its_limit() {
        let d = Drain::new(Duration::ZERO);
        drain(&d, &TaskTracker::new(), 0, Duration::from_secs(1)).await;
        let t0 = tokio::time::Instant::now();
        let got = final_scrape(&d, Duration::from_secs(30)).await;
        assert_eq!(got, FinalScrape::TimedOut);
        assert_eq!(t0.elapsed(), Duration::from_secs(30));
        assert_eq!(final_scrape(&d, Duration::ZERO).await, FinalScrape::Off);
    }

    #[test]
    fn zero_spread_closes_at_once() {
        let d = Drain::new(Duration::ZERO);
        d.start(10);
        assert_eq!(d.next_delay(), Duration::ZERO);
    }
}
