//! The proxy as a whole: bind both listeners, serve, drain on shutdown.
//!
//! [`Server::bind`] reports an address in use by name; [`Server::run`]
//! takes the shutdown trigger as a future, so `main` passes
//! [`crate::shutdown::signal`]. [`Running`] is the same proxy started in
//! this process on loopback ports, stopped without signals and joined with
//! its panics re-raised: the handle of the integration tests, the demo and
//! the fuzz target.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Settings;
use crate::edge::Edge;
use crate::listener::{self, Shared};
use crate::metrics::Metrics;
use crate::shutdown::{self, Drain, DrainReport, FinalScrape};

/// The runtime `wspulse run` serves on.
///
/// One CPU (a container limit, or `taskset`): a single-threaded runtime
/// does the same work without the work-stealing scheduler's cross-thread
/// bookkeeping. Otherwise one worker per CPU. Each thread refreshes the
/// relay's cached time when it wakes up ([`crate::clock`]).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    if one_cpu {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .on_thread_unpark(crate::clock::refresh)
    .build()
}

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({what}): {source}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// `listen.addr`, `admin.addr`, or `listen.tls` (the pair did not load).
    pub what: &'static str,
    /// Why.
    pub source: std::io::Error,
}

/// A bound, not yet running proxy.
pub struct Server {
    listener: TcpListener,
    admin: TcpListener,
    shared: Arc<Shared>,
}

impl Server {
    /// Bind `listen.addr` and `admin.addr` (port 0 picks a free port).
    pub async fn bind(settings: Settings, metrics: Metrics) -> Result<Server, BindError> {
        let bind = |addr: SocketAddr, what| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| BindError { addr, what, source })
        };
        let listener = bind(settings.listen.addr, "listen.addr").await?;
        crate::conn::tune_listener(&listener);
        let admin = bind(settings.admin.addr, "admin.addr").await?;
        // The config check loaded the pair already; this fails only if a
        // file changed since, and then nothing could be served.
        let edge = Edge::new(&settings.listen, &metrics).map_err(|e| BindError {
            addr: settings.listen.addr,
            what: "listen.tls",
            source: std::io::Error::other(e.to_string()),
        })?;
        let drain = Drain::new(settings.shutdown.spread);
        let tracker = TaskTracker::new();
        let shared = Arc::new(Shared::new(settings, metrics, drain, tracker, edge));
        Ok(Server {
            listener,
            admin,
            shared,
        })
    }

    /// Where clients connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.shared.settings.listen.addr)
    }

    /// Where `/metrics` is served.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .unwrap_or_else(|_| self.shared.settings.admin.addr)
    }

    /// The metrics this server records into.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Serve until `shutdown` resolves, then drain; returns when every
    /// session is gone (at most `shutdown.drain_timeout` after the signal).
    ///
    /// `GET /drain` on the admin address starts the same drain without a
    /// signal; the process then stays up (not ready, admin still serving)
    /// until `shutdown` resolves. That is for a native Kubernetes sidecar,
    /// which is stopped only after the app: the app's `preStop` hook calls
    /// `/drain`, so clients are closed while the upstream still runs.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> DrainReport {
        let Server {
            listener,
            admin,
            shared,
        } = self;
        let stop_admin = CancellationToken::new();
        let admin_task = tokio::spawn(crate::admin::serve(
            admin,
            shared.metrics.clone(),
            shared.drain.clone(),
            stop_admin.clone(),
        ));
        // Certificate reloads go on through the drain: sessions still open.
        let certs_task = tokio::spawn({
            let (shared, stop) = (shared.clone(), stop_admin.clone());
            async move { shared.edge.watch_certificate(stop).await }
        });
        info!(
            listen = %listener.local_addr().map_or_else(|_| "?".into(), |a| a.to_string()),
            upstream = %shared.settings.upstream.url,
            "wspulse proxying"
        );
        tokio::pin!(shutdown);
        let requested = shared.drain.requested_token();
        let mut by_signal = false;
        // The accept loop is a task of its own, aborted when the drain
        // starts (which closes the listening socket): polled beside the
        // shutdown future, it re-polled the signal handlers on every
        // accepted connection, about 1,300 instructions of each session's
        // setup (bench/README.md).
        let accepting = tokio::spawn(listener::accept_loop(listener, shared.clone()));
        tokio::select! {
            _ = &mut shutdown => by_signal = true,
            _ = requested.cancelled() => info!("drain requested on the admin endpoint"),
        }
        accepting.abort();
        reraise(accepting.await);
        let open = shared.metrics.active();
        let report = shutdown::drain(
            &shared.drain,
            &shared.tracker,
            open,
            shared.settings.shutdown.drain_timeout,
        )
        .await;
        if report.deadline_hit {
            warn!(
                sessions = report.sessions,
                "drain deadline passed: remaining sessions were cut"
            );
        }
        if !by_signal {
            info!("drained on request; waiting for SIGTERM/SIGINT to exit");
            shutdown.await;
        }
        let mut report = report;
        report.final_scrape =
            shutdown::final_scrape(&shared.drain, shared.settings.shutdown.final_scrape).await;
        if report.final_scrape == FinalScrape::TimedOut {
            warn!(
                limit = ?shared.settings.shutdown.final_scrape,
                "no /metrics scrape after the drain within shutdown.final_scrape: its counts may not reach Prometheus"
            );
        }
        stop_admin.cancel();
        reraise(admin_task.await);
        reraise(certs_task.await);
        let t = shared.metrics.totals();
        info!(
            opened = t.opened,
            closed = t.closed,
            active = t.active,
            shutdown_closed = t.drained_closed,
            shutdown_cut = t.drained_cut,
            "final counts"
        );
        report
    }
}

/// A task's panic, raised again in the task that joins it; its other
/// results (a normal end, a cancellation) are nothing to report. A panic
/// in the accept loop or the admin endpoint is a bug that must not end
/// quietly with `final counts`.
fn reraise<T>(joined: Result<T, tokio::task::JoinError>) {
    if let Err(e) = joined
        && let Ok(panic) = e.try_into_panic()
    {
        std::panic::resume_unwind(panic);
    }
}

/// Why [`Running::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The metric families could not be registered.
    #[error("cannot register the metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// A proxy running in this process, on 127.0.0.1 ports the OS picked
/// (linkerd's `Listening`): [`addr`](Running::addr) for clients,
/// [`admin_addr`](Running::admin_addr) for `/metrics`, its
/// [`metrics`](Running::metrics) to assert on.
///
/// [`stop`](Running::stop) starts the drain, as SIGTERM does;
/// [`join`](Running::join) waits for it and raises again, in the caller,
/// any panic of the proxy's serving, accept and admin tasks, so a bug
/// fails the test that found it. Dropped without a join, it stops the
/// proxy (the drain then runs on in the runtime, unwatched).
///
/// Usable from any crate with a tokio runtime (`time`, `net` and `rt`
/// enabled); it spawns onto the current one.
pub struct Running {
    addr: SocketAddr,
    admin_addr: SocketAddr,
    metrics: Metrics,
    /// `None` only in the unit tests' hand-made handles.
    shared: Option<Arc<Shared>>,
    drain: Drain,
    stop: StopOnDrop,
    task: JoinHandle<DrainReport>,
}

/// Starts the drain when dropped: a [`Running`] that goes out of scope
/// (a test that panicked, say) never leaves a proxy serving.
struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl Running {
    /// Start a proxy with `settings`, except that both listeners
    /// (`listen.addr`, `admin.addr`) are on 127.0.0.1 with a port the OS
    /// picks, so runs never collide. Its metrics go to a registry of its
    /// own (the routes and `admin.recent_closures` of `settings`).
    pub async fn start(settings: Settings) -> Result<Running, StartError> {
        let routes: Vec<String> = settings.routes.iter().map(|r| r.name.clone()).collect();
        let metrics = Metrics::standalone(&routes, settings.admin.recent_closures)?;
        Running::start_with(settings, metrics).await
    }

    /// [`Running::start`] recording into `metrics` (registered by the
    /// caller, with the routes of `settings`).
    pub async fn start_with(
        mut settings: Settings,
        metrics: Metrics,
    ) -> Result<Running, StartError> {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        settings.listen.addr = loopback;
        settings.admin.addr = loopback;
        let server = Server::bind(settings, metrics.clone()).await?;
        let (addr, admin_addr) = (server.local_addr(), server.admin_addr());
        let shared = Some(server.shared.clone());
        let drain = server.shared.drain.clone();
        let stop = CancellationToken::new();
        let task = tokio::spawn(server.run(stop.clone().cancelled_owned()));
        Ok(Running {
            addr,
            admin_addr,
            metrics,
            shared,
            drain,
            stop: StopOnDrop(stop),
            task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics`, `/healthz`, `/readyz`, `/closures` are served.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The metrics it records into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Reload the listener's certificate pair now, as SIGHUP does (without
    /// TLS, nothing happens). The outcome shows in `wspulse_tls_reloads_total`.
    pub fn reload_tls(&self) {
        if let Some(shared) = &self.shared {
            shared.edge.reload_certificate();
        }
    }

    /// Resolves once the drain has finished (every session gone), while
    /// the process may still wait for its final scrape
    /// (`shutdown.final_scrape`).
    pub async fn drained(&self) {
        self.drain.finished_token().cancelled_owned().await;
    }

    /// Start the drain, as SIGTERM does, without waiting for it; a second
    /// call does nothing.
    pub fn stop(&self) {
        self.stop.0.cancel();
    }

    /// Wait until the proxy has drained and returned; a panic of its
    /// serving, accept or admin task is raised again here. Returns at most
    /// `shutdown.drain_timeout` after [`Running::stop`] (never, without it).
    pub async fn join(self) -> DrainReport {
        // `stop` lives until the task has ended: dropping it would stop
        // the proxy, and joining must not.
        let Running { task, stop, .. } = self;
        let joined = task.await;
        drop(stop);
        match joined {
            Ok(report) => report,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // The task is never aborted, and a runtime shutting down
                // drops this future along with the task.
                Err(e) => unreachable!("the proxy task was cancelled: {e}"),
            },
        }
    }

    /// [`stop`](Running::stop), then [`join`](Running::join).
    pub async fn shutdown(self) -> DrainReport {
        self.stop();
        self.join().await
    }
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("addr", &self.addr)
            .field("admin_addr", &self.admin_addr)
            .field("stopped", &self.stop.0.is_cancelled())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn panic_text(e: tokio::task::JoinError) -> String {
        let panic = e.into_panic();
        panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn join_raises_the_panic_of_the_proxy_task() {
        let running = Running {
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 2)),
            metrics: Metrics::standalone(&[], 0).unwrap(),
            shared: None,
            drain: Drain::new(std::time::Duration::ZERO),
            stop: StopOnDrop(CancellationToken::new()),
            task: tokio::spawn(async { panic!("bug in the proxy") }),
        };
        let joined = tokio::spawn(running.join()).await;
        assert_eq!(panic_text(joined.unwrap_err()), "bug in the proxy");
    }

    #[tokio::test]
    async fn a_sub_task_panic_is_raised_a_cancellation_is_not() {
        let panicked = tokio::spawn(async { panic!("bug in the accept loop") });
        let joiner = tokio::spawn(async move { reraise(panicked.await) });
        assert_eq!(
            panic_text(joiner.await.unwrap_err()),
            "bug in the accept loop"
        );
        let aborted = tokio::spawn(std::future::pending::<()>());
        aborted.abort();
        reraise(aborted.await);
    }
}
