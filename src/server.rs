//! The proxy as a whole: bind both listeners, serve, drain on shutdown.
//!
//! [`Server::bind`] reports an address in use by name; [`Server::run`]
//! takes the shutdown trigger as a future, so tests stop the proxy without
//! signals and `main` passes [`crate::shutdown::signal`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Settings;
use crate::listener::{self, Shared};
use crate::metrics::Metrics;
use crate::shutdown::{self, Drain, DrainReport};

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
    /// `listen.addr` or `admin.addr`.
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
        let drain = Drain::new(settings.shutdown.spread);
        let shared = Arc::new(Shared::new(settings, metrics, drain, TaskTracker::new()));
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
        let _ = accepting.await;
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
        stop_admin.cancel();
        let _ = admin_task.await;
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
