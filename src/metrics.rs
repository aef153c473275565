//! Prometheus metrics: names, handles, and the session guard.
//!
//! The registry is built by the caller (main, a test, the demo) and injected;
//! there are no globals, so every test scrapes a registry of its own.
//! Handles whose labels are fixed (direction, side, route, outcome) are
//! resolved once here, because `with_label_values` hashes and locks on every
//! call; the relay hot path only touches atomics. The closure counter is
//! resolved once per session, when it ends.
//!
//! [`SessionGuard`] keeps `opened_total == sum(closed_total) + active` true
//! by construction: it counts the open when it is made and the close when it
//! is dropped, whatever path the session took.

use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};
use tokio::time::Instant;

use crate::clients::EndClass;
use crate::closure::{Cause, Closure, LegId, Side};
use crate::recent::RecentClosures;
use crate::record::{ClosureRecord, Direction, SessionEnd, SessionInfo, SessionStats};

/// Metric names, as in INTERFACE.md. Dashboards and alerts depend on them.
pub mod names {
    /// Sessions opened (client got its 101).
    pub const OPENED: &str = "wspulse_connections_opened_total";
    /// Sessions open now.
    pub const ACTIVE: &str = "wspulse_connections_active";
    /// Sessions ended, by code, side, cause and route.
    pub const CLOSED: &str = "wspulse_connections_closed_total";
    /// Session lifetime, by class and route.
    pub const DURATION: &str = "wspulse_session_duration_seconds";
    /// Round-trip time of the proxy's own pings, by leg.
    pub const PING_RTT: &str = "wspulse_ping_rtt_seconds";
    /// Data messages relayed, by direction.
    pub const MESSAGES: &str = "wspulse_messages_total";
    /// Payload bytes relayed, by direction.
    pub const MESSAGE_BYTES: &str = "wspulse_message_bytes_total";
    /// Upstream dials that failed, by reason.
    pub const CONNECT_FAILURES: &str = "wspulse_upstream_connect_failures_total";
    /// Handshakes refused, by the HTTP status the client got.
    pub const REJECTIONS: &str = "wspulse_handshake_rejections_total";
    /// Sessions ended by a drain, by outcome (`closed` or `cut`).
    pub const DRAIN: &str = "wspulse_drain_sessions_total";
    /// Time since the last frame when a session ended, by class.
    pub const IDLE_BEFORE_CLOSE: &str = "wspulse_idle_before_close_seconds";
    /// Sessions opened with permessage-deflate negotiated, by route.
    pub const COMPRESSED_SESSIONS: &str = "wspulse_compressed_sessions_total";
    /// Compressed data messages relayed (RSV1), by direction.
    pub const COMPRESSED_MESSAGES: &str = "wspulse_compressed_messages_total";
    /// Time from a client's previous ending to its next upgrade request,
    /// by how that ending went (`class`, `side`).
    pub const RECONNECT_DELAY: &str = "wspulse_reconnect_delay_seconds";
    /// Client identities remembered now.
    pub const CLIENTS_TRACKED: &str = "wspulse_clients_tracked";
    /// Upgrade requests refused by an admission limit, by `reason`.
    pub const ADMISSION_REJECTIONS: &str = "wspulse_admission_rejections_total";
    /// The served certificate's notAfter, Unix seconds (TLS listeners only).
    pub const TLS_EXPIRY: &str = "wspulse_tls_certificate_expiry_timestamp_seconds";
    /// Certificate reloads, by outcome (`ok` or `error`).
    pub const TLS_RELOADS: &str = "wspulse_tls_reloads_total";
    /// Client TLS handshakes that failed, by reason.
    pub const TLS_HANDSHAKE_FAILURES: &str = "wspulse_tls_handshake_failures_total";
}

/// Which admission limit refused a client: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmissionReason {
    /// `limits.max_handshakes_per_second`.
    Rate,
    /// `limits.max_connections_per_client`.
    PerClient,
    /// `limits.max_connections`.
    MaxConnections,
}

impl AdmissionReason {
    /// Every reason, in label order.
    pub const ALL: [AdmissionReason; 3] = [
        AdmissionReason::Rate,
        AdmissionReason::PerClient,
        AdmissionReason::MaxConnections,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AdmissionReason::Rate => "rate",
            AdmissionReason::PerClient => "per_client",
            AdmissionReason::MaxConnections => "max_connections",
        }
    }
}

/// Reconnect-delay buckets, seconds: dense below 1 s, where a client
/// without backoff shows, then out to `clients.remember`'s default.
pub const RECONNECT_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    600.0,
];

/// Why an upstream dial failed: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    /// TCP connection refused (nothing listening).
    Refused,
    /// `upstream.connect_timeout` elapsed (TCP connect or upgrade).
    Timeout,
    /// The upstream host name did not resolve.
    Dns,
    /// TLS failed.
    Tls,
    /// The upstream spoke something other than a WebSocket handshake.
    Protocol,
    /// Anything else (unreachable network, reset during the handshake, …).
    Other,
}

impl ConnectFailure {
    /// Every reason, for pre-registering series.
    pub const ALL: [ConnectFailure; 6] = [
        ConnectFailure::Refused,
        ConnectFailure::Timeout,
        ConnectFailure::Dns,
        ConnectFailure::Tls,
        ConnectFailure::Protocol,
        ConnectFailure::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectFailure::Refused => "refused",
            ConnectFailure::Timeout => "timeout",
            ConnectFailure::Dns => "dns",
            ConnectFailure::Tls => "tls",
            ConnectFailure::Protocol => "protocol",
            ConnectFailure::Other => "other",
        }
    }
}

/// Ping RTT buckets: loopback (0.5 ms) to intercontinental and worse (10 s).
const RTT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Session lifetimes from a blip to a day.
const DURATION_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0,
    86400.0,
];

/// Idle-before-close buckets: a narrow window just around each common
/// load-balancer / proxy idle limit, so a cluster of closures there stands out
/// as one bucket. 30 s GCP/ELB-classic style, 60 s nginx `proxy_read_timeout`
/// and AWS ALB default, 100 s Cloudflare, 120 s, 240 s Azure Load Balancer
/// (4 min), 300 s, 350 s AWS NLB TCP idle, 900 s, 3600 s. A window is
/// `[L-1, L+2)`: the proxy sees the kill slightly after the limit.
pub const IDLE_BUCKETS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 20.0, 29.0, 32.0, 59.0, 62.0, 99.0, 102.0, 119.0, 122.0, 239.0, 242.0,
    299.0, 302.0, 349.0, 352.0, 899.0, 902.0, 3599.0, 3602.0,
];

/// The `route` label value when no routes are configured.
pub const DEFAULT_ROUTE: &str = "default";
/// The `route` label value for paths no configured route matches.
pub const OTHER_ROUTE: &str = "other";

/// Handles for one route, resolved once.
struct RouteHandles {
    name: String,
    opened: IntCounter,
    compressed: IntCounter,
    duration_clean: Histogram,
    duration_abnormal: Histogram,
}

struct Inner {
    active: IntGauge,
    closed: IntCounterVec,
    routes: Vec<RouteHandles>,
    idle_clean: Histogram,
    idle_abnormal: Histogram,
    rtt_client: Histogram,
    rtt_upstream: Histogram,
    messages: [IntCounter; 2],
    bytes: [IntCounter; 2],
    compressed_messages: [IntCounter; 2],
    /// By `EndClass` (clean, abnormal, rejected), then side (client,
    /// upstream, proxy).
    reconnect: [[Histogram; 3]; 3],
    clients_tracked: IntGauge,
    admission: [IntCounter; 3],
    connect_failures: IntCounterVec,
    rejections: IntCounterVec,
    drain_closed: IntCounter,
    drain_cut: IntCounter,
    registry: Registry,
    recent: RecentClosures,
    /// Sessions ended so far; lets tests and the demo wait for a closure
    /// instead of polling.
    ended: tokio::sync::watch::Sender<u64>,
}

/// All of wspulse's metrics, registered in one registry. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

/// Index of a route's handles, resolved when the session is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteId(pub usize);

impl Metrics {
    /// Register every family in `registry`. `routes` are the configured
    /// route names: empty gives the single route `default`, otherwise the
    /// names plus `other`. `recent_closures` sizes the `/closures` ring.
    pub fn register(
        registry: &Registry,
        routes: &[String],
        recent_closures: usize,
    ) -> prometheus::Result<Metrics> {
        let opened = IntCounterVec::new(
            Opts::new(
                names::OPENED,
                "WebSocket sessions opened (client upgraded).",
            ),
            &["route"],
        )?;
        let active = IntGauge::new(names::ACTIVE, "WebSocket sessions open now.")?;
        let closed = IntCounterVec::new(
            Opts::new(
                names::CLOSED,
                "WebSocket sessions ended, by close code, side and cause.",
            ),
            &["code", "side", "cause", "route"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(names::DURATION, "Session lifetime in seconds.")
                .buckets(DURATION_BUCKETS.to_vec()),
            &["class", "route"],
        )?;
        let idle = HistogramVec::new(
            HistogramOpts::new(
                names::IDLE_BEFORE_CLOSE,
                "Seconds since the last frame (any direction) when a session ended.",
            )
            .buckets(IDLE_BUCKETS.to_vec()),
            &["class"],
        )?;
        let rtt = HistogramVec::new(
            HistogramOpts::new(
                names::PING_RTT,
                "Round-trip time of the proxy's keepalive pings.",
            )
            .buckets(RTT_BUCKETS.to_vec()),
            &["side"],
        )?;
        let messages = IntCounterVec::new(
            Opts::new(names::MESSAGES, "Data messages relayed."),
            &["direction"],
        )?;
        let bytes = IntCounterVec::new(
            Opts::new(
                names::MESSAGE_BYTES,
                "Payload bytes of data messages relayed.",
            ),
            &["direction"],
        )?;
        let compressed_sessions = IntCounterVec::new(
            Opts::new(
                names::COMPRESSED_SESSIONS,
                "Sessions opened with permessage-deflate negotiated end to end.",
            ),
            &["route"],
        )?;
        let compressed_messages = IntCounterVec::new(
            Opts::new(
                names::COMPRESSED_MESSAGES,
                "Compressed (permessage-deflate) data messages relayed as they were.",
            ),
            &["direction"],
        )?;
        let reconnect = HistogramVec::new(
            HistogramOpts::new(
                names::RECONNECT_DELAY,
                "Seconds from a client's previous ending to its next upgrade request, by how that ending went.",
            )
            .buckets(RECONNECT_BUCKETS.to_vec()),
            &["class", "side"],
        )?;
        let clients_tracked = IntGauge::new(
            names::CLIENTS_TRACKED,
            "Client identities remembered for reconnect tracking.",
        )?;
        let admission = IntCounterVec::new(
            Opts::new(
                names::ADMISSION_REJECTIONS,
                "Upgrade requests refused (503) by an admission limit.",
            ),
            &["reason"],
        )?;
        let connect_failures = IntCounterVec::new(
            Opts::new(names::CONNECT_FAILURES, "Upstream dials that failed."),
            &["reason"],
        )?;
        let rejections = IntCounterVec::new(
            Opts::new(
                names::REJECTIONS,
                "Client handshakes refused, by HTTP status.",
            ),
            &["status"],
        )?;
        let drain = IntCounterVec::new(
            Opts::new(
                names::DRAIN,
                "Sessions ended by a drain: closed cleanly or cut at the deadline.",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(opened.clone()))?;
        registry.register(Box::new(active.clone()))?;
        registry.register(Box::new(closed.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(idle.clone()))?;
        registry.register(Box::new(rtt.clone()))?;
        registry.register(Box::new(messages.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(compressed_sessions.clone()))?;
        registry.register(Box::new(compressed_messages.clone()))?;
        registry.register(Box::new(reconnect.clone()))?;
        registry.register(Box::new(clients_tracked.clone()))?;
        registry.register(Box::new(admission.clone()))?;
        registry.register(Box::new(connect_failures.clone()))?;
        registry.register(Box::new(rejections.clone()))?;
        registry.register(Box::new(drain.clone()))?;

        let mut route_names: Vec<String> = routes.to_vec();
        route_names.push(
            if routes.is_empty() {
                DEFAULT_ROUTE
            } else {
                OTHER_ROUTE
            }
            .to_string(),
        );
        let routes = route_names
            .into_iter()
            .map(|name| RouteHandles {
                opened: opened.with_label_values(&[&name]),
                compressed: compressed_sessions.with_label_values(&[&name]),
                duration_clean: duration.with_label_values(&["clean", &name]),
                duration_abnormal: duration.with_label_values(&["abnormal", &name]),
                name,
            })
            .collect::<Vec<_>>();
        // Zero-valued series for the closures every dashboard shows, so
        // rate() and ratios have data before the first such closure.
        for r in &routes {
            for (code, side, cause) in [
                ("1000", "client", "close_frame"),
                ("1000", "upstream", "close_frame"),
                ("1006", "client", "eof"),
                ("1006", "upstream", "eof"),
                ("1006", "client", "ping_timeout"),
                ("1006", "upstream", "ping_timeout"),
            ] {
                closed.with_label_values(&[code, side, cause, &r.name]);
            }
        }
        for reason in ConnectFailure::ALL {
            connect_failures.with_label_values(&[reason.as_str()]);
        }
        for status in ["400", "408", "426", "431", "503"] {
            rejections.with_label_values(&[status]);
        }
        let d = |dir: Direction| dir.as_str();
        let inner = Inner {
            active,
            routes,
            idle_clean: idle.with_label_values(&["clean"]),
            idle_abnormal: idle.with_label_values(&["abnormal"]),
            rtt_client: rtt.with_label_values(&["client"]),
            rtt_upstream: rtt.with_label_values(&["upstream"]),
            messages: [
                messages.with_label_values(&[d(Direction::ClientToUpstream)]),
                messages.with_label_values(&[d(Direction::UpstreamToClient)]),
            ],
            bytes: [
                bytes.with_label_values(&[d(Direction::ClientToUpstream)]),
                bytes.with_label_values(&[d(Direction::UpstreamToClient)]),
            ],
            compressed_messages: [
                compressed_messages.with_label_values(&[d(Direction::ClientToUpstream)]),
                compressed_messages.with_label_values(&[d(Direction::UpstreamToClient)]),
            ],
            reconnect: [EndClass::Clean, EndClass::Abnormal, EndClass::Rejected].map(|class| {
                [Side::Client, Side::Upstream, Side::Proxy]
                    .map(|side| reconnect.with_label_values(&[class.as_str(), side.as_str()]))
            }),
            clients_tracked,
            admission: AdmissionReason::ALL.map(|r| admission.with_label_values(&[r.as_str()])),
            closed,
            connect_failures,
            rejections,
            drain_closed: drain.with_label_values(&["closed"]),
            drain_cut: drain.with_label_values(&["cut"]),
            registry: registry.clone(),
            recent: RecentClosures::new(recent_closures),
            ended: tokio::sync::watch::Sender::new(0),
        };
        Ok(Metrics {
            inner: Arc::new(inner),
        })
    }

    /// A fresh registry with every family registered (tests, the demo).
    pub fn standalone(routes: &[String], recent_closures: usize) -> prometheus::Result<Metrics> {
        Metrics::register(&Registry::new(), routes, recent_closures)
    }

    /// The route id for a route's index in the configured list, or the
    /// `default` / `other` fallback for `None`.
    pub fn route(&self, configured_index: Option<usize>) -> RouteId {
        let fallback = self.inner.routes.len() - 1;
        RouteId(
            configured_index
                .filter(|&i| i < fallback)
                .unwrap_or(fallback),
        )
    }

    /// The label value of a route.
    pub fn route_name(&self, route: RouteId) -> &str {
        &self.inner.routes[route.0].name
    }

    /// Count one relayed data message of `len` payload bytes as on the
    /// wire (compressed where `compressed`).
    #[inline]
    pub fn message(&self, dir: Direction, len: usize, compressed: bool) {
        let i = dir as usize;
        self.inner.messages[i].inc();
        self.inner.bytes[i].inc_by(len as u64);
        if compressed {
            self.inner.compressed_messages[i].inc();
        }
    }

    /// Observe the round-trip time of one of the proxy's pings.
    pub fn ping_rtt(&self, leg: LegId, seconds: f64) {
        match leg {
            LegId::Upstream => self.inner.rtt_upstream.observe(seconds),
            LegId::Client => self.inner.rtt_client.observe(seconds),
        }
    }

    /// Count an upstream dial failure.
    pub fn connect_failure(&self, reason: ConnectFailure) {
        self.inner
            .connect_failures
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// Count a refused client handshake by the HTTP status it got.
    pub fn rejection(&self, status: u16) {
        self.inner
            .rejections
            .with_label_values(&[&status.to_string()])
            .inc();
    }

    /// Observe a client's reconnect delay: `seconds` since its previous
    /// ending, which went `class` and was `side`'s doing.
    pub fn reconnect(&self, class: EndClass, side: Side, seconds: f64) {
        self.inner.reconnect[class as usize][side as usize].observe(seconds);
    }

    /// Client identities remembered now.
    pub fn clients_tracked(&self, n: usize) {
        self.inner
            .clients_tracked
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Count an upgrade refused by an admission limit.
    pub fn admission_rejected(&self, reason: AdmissionReason) {
        self.inner.admission[reason as usize].inc();
    }

    /// Count a session ended by a drain.
    pub fn drained(&self, cut: bool) {
        if cut {
            &self.inner.drain_cut
        } else {
            &self.inner.drain_closed
        }
        .inc();
    }

    /// Watch the number of sessions ended so far.
    pub fn ended(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.ended.subscribe()
    }

    /// Wait until at least `n` sessions have ended, at most `limit`.
    /// Returns whether they had.
    pub async fn wait_ended(&self, n: u64, limit: std::time::Duration) -> bool {
        let mut rx = self.ended();
        tokio::time::timeout(limit, rx.wait_for(|&v| v >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Whole-process totals, for the final log line and the demo.
    pub fn totals(&self) -> Totals {
        let sum = |name: &str| -> u64 {
            self.inner
                .registry
                .gather()
                .iter()
                .filter(|f| f.name() == name)
                .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value()))
                .sum::<f64>() as u64
        };
        Totals {
            opened: sum(names::OPENED),
            closed: sum(names::CLOSED),
            active: self.active() as u64,
            drained_closed: self.inner.drain_closed.get(),
            drained_cut: self.inner.drain_cut.get(),
        }
    }

    /// Sessions open now.
    pub fn active(&self) -> usize {
        usize::try_from(self.inner.active.get()).unwrap_or(0)
    }

    /// The recent-closures ring behind `/closures`.
    pub fn recent(&self) -> &RecentClosures {
        &self.inner.recent
    }

    /// The registry these metrics live in.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Everything in the registry, in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut buf = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail on I/O; a failure would mean a
        // malformed family, which register() rules out.
        if TextEncoder::new()
            .encode(&self.inner.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Start accounting for one session. See [`SessionGuard`].
    pub fn open_session(&self, route: RouteId, info: SessionInfo) -> SessionGuard {
        let handles = &self.inner.routes[route.0];
        handles.opened.inc();
        if info.compression.is_some() {
            handles.compressed.inc();
        }
        self.inner.active.inc();
        let now = Instant::now();
        SessionGuard {
            metrics: self.clone(),
            route,
            started: now,
            started_wall: std::time::SystemTime::now(),
            info,
            finished: false,
        }
    }
}

/// Whole-process session totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// `wspulse_connections_opened_total`, all routes.
    pub opened: u64,
    /// `wspulse_connections_closed_total`, all labels.
    pub closed: u64,
    /// `wspulse_connections_active`.
    pub active: u64,
    /// Drain sessions that closed cleanly.
    pub drained_closed: u64,
    /// Drain sessions cut at the deadline.
    pub drained_cut: u64,
}

/// Accounts for one session: counted open when made, counted closed
/// when the session hands over its end ([`Self::finish`]). If it never
/// does (a bug, or the runtime dropped the task) the drop records it as
/// `1006/proxy/internal`, so `opened == closed + active` still holds and
/// the gap is visible.
pub struct SessionGuard {
    metrics: Metrics,
    route: RouteId,
    started: Instant,
    started_wall: std::time::SystemTime,
    info: SessionInfo,
    finished: bool,
}

impl SessionGuard {
    /// When the session started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Record how the session ended: the closed counter, the duration and
    /// idle histograms, the `session ended` log line, the `/closures`
    /// record, then the `ended` watch.
    /// Only the first call counts.
    pub fn finish(&mut self, end: SessionEnd) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let m = &self.metrics.inner;
        let SessionEnd {
            closure,
            reason,
            stats,
        } = end;
        let route = &m.routes[self.route.0];
        let clean = closure.class() == "clean";
        let now = Instant::now();
        let duration = now.saturating_duration_since(self.started).as_secs_f64();
        let idle = now
            .saturating_duration_since(stats.last_activity)
            .as_secs_f64();
        m.closed
            .with_label_values(&[
                &closure.code_label(),
                closure.side.as_str(),
                closure.cause.as_str(),
                &route.name,
            ])
            .inc();
        if clean {
            &route.duration_clean
        } else {
            &route.duration_abnormal
        }
        .observe(duration);
        if clean {
            &m.idle_clean
        } else {
            &m.idle_abnormal
        }
        .observe(idle);
        m.active.dec();
        tracing::info!(
            code = closure.code,
            side = closure.side.as_str(),
            cause = closure.cause.as_str(),
            duration_s = duration,
            client = self.info.client_addr.map(tracing::field::display),
            path = self.info.path,
            route = route.name,
            compression = self.info.compression,
            "session ended"
        );
        m.recent.push(ClosureRecord::new(
            self.started_wall,
            duration,
            closure,
            reason,
            route.name.clone(),
            std::mem::take(&mut self.info),
            &stats,
            idle,
        ));
        // Last, so a waiter sees the counters and the record.
        m.ended.send_modify(|n| *n += 1);
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(SessionEnd {
                closure: Closure {
                    code: crate::protocol::close::ABNORMAL,
                    side: Side::Proxy,
                    cause: Cause::Internal,
                },
                reason: String::new(),
                stats: SessionStats::new(self.started),
            });
        }
    }
}

// === TLS listener ===

/// Why a client's TLS handshake failed: the `reason` label, bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The client spoke plain HTTP (or anything but TLS) on the TLS port.
    Plaintext,
    /// No protocol version or cipher suite in common.
    NoSharedCipher,
    /// The client refused our certificate (an alert such as unknown CA).
    BadCertificate,
    /// `limits.handshake_timeout` elapsed.
    Timeout,
    /// Anything else (a reset, a malformed message, an early close).
    Other,
}

impl TlsFailure {
    /// Every reason, for pre-registering series.
    pub const ALL: [TlsFailure; 5] = [
        TlsFailure::Plaintext,
        TlsFailure::NoSharedCipher,
        TlsFailure::BadCertificate,
        TlsFailure::Timeout,
        TlsFailure::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsFailure::Plaintext => "plaintext",
            TlsFailure::NoSharedCipher => "no_shared_cipher",
            TlsFailure::BadCertificate => "bad_certificate",
            TlsFailure::Timeout => "timeout",
            TlsFailure::Other => "other",
        }
    }
}

/// The TLS listener's metrics, registered only when the listener speaks
/// TLS: a plain listener exposes no expiry gauge for an alert to misread.
#[derive(Clone)]
pub struct TlsMetrics {
    expiry: IntGauge,
    reload_ok: IntCounter,
    reload_error: IntCounter,
    failures: [IntCounter; 5],
}

impl Metrics {
    /// Register the TLS listener's families in this registry.
    pub fn register_tls(&self) -> prometheus::Result<TlsMetrics> {
        let expiry = IntGauge::new(
            names::TLS_EXPIRY,
            "notAfter of the certificate the listener serves, Unix seconds.",
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                names::TLS_RELOADS,
                "Certificate reloads (file change or SIGHUP), by outcome.",
            ),
            &["outcome"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                names::TLS_HANDSHAKE_FAILURES,
                "Client TLS handshakes that failed, by reason.",
            ),
            &["reason"],
        )?;
        let registry = &self.inner.registry;
        registry.register(Box::new(expiry.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        Ok(TlsMetrics {
            expiry,
            reload_ok: reloads.with_label_values(&["ok"]),
            reload_error: reloads.with_label_values(&["error"]),
            failures: TlsFailure::ALL.map(|r| failures.with_label_values(&[r.as_str()])),
        })
    }
}

impl TlsMetrics {
    /// The certificate served now expires at `not_after` (Unix seconds).
    pub fn serving(&self, not_after: i64) {
        self.expiry.set(not_after);
    }

    /// Count a reload: served a new pair (`ok`) or kept the old (`error`).
    pub fn reloaded(&self, ok: bool) {
        if ok {
            &self.reload_ok
        } else {
            &self.reload_error
        }
        .inc();
    }

    /// Count a failed client handshake.
    pub fn handshake_failed(&self, reason: TlsFailure) {
        self.failures[reason as usize].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::closure::{TerminalEvent, classify};
    use crate::ws;

    /// The value of the series `name` with exactly `labels` (as the
    /// explain parser reads them).
    fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
        let samples = crate::explain::prom::parse(text);
        let mut found = samples
            .iter()
            .filter(|s| s.name == name && s.labels.len() == labels.len() && s.has_labels(labels));
        match (found.next(), found.next()) {
            (Some(s), None) => s.value,
            _ => f64::NAN,
        }
    }

    #[test]
    fn guard_keeps_the_invariant() {
        let m = Metrics::standalone(&[], 10).unwrap();
        let r = m.route(None);
        let mut g1 = m.open_session(r, SessionInfo::default());
        let g2 = m.open_session(r, SessionInfo::default());
        let end = |leg| SessionEnd {
            closure: classify(&TerminalEvent::Failed {
                leg,
                error: ws::Error::Eof,
            }),
            reason: String::new(),
            stats: SessionStats::new(Instant::now()),
        };
        g1.finish(end(LegId::Client));
        g1.finish(end(LegId::Upstream));
        drop(g1);
        let text = m.encode();
        let closed = |side| {
            value(
                &text,
                names::CLOSED,
                &[
                    ("cause", "eof"),
                    ("code", "1006"),
                    ("route", "default"),
                    ("side", side),
                ],
            )
        };
        assert_eq!(value(&text, names::OPENED, &[("route", "default")]), 2.0);
        assert_eq!(value(&text, names::ACTIVE, &[]), 1.0);
        assert_eq!(closed("client"), 1.0);
        assert_eq!(closed("upstream"), 0.0);
        drop(g2);
        let text = m.encode();
        assert_eq!(value(&text, names::ACTIVE, &[]), 0.0);
        assert!(
            text.contains("cause=\"internal\",code=\"1006\",route=\"default\",side=\"proxy\"} 1")
        );
    }

    #[test]
    fn every_family_is_exposed_before_traffic() {
        let m = Metrics::standalone(&[], 0).unwrap();
        let text = m.encode();
        for name in [
            names::OPENED,
            names::ACTIVE,
            names::CLOSED,
            names::DURATION,
            names::PING_RTT,
            names::MESSAGES,
            names::MESSAGE_BYTES,
            names::CONNECT_FAILURES,
            names::REJECTIONS,
            names::DRAIN,
            names::IDLE_BEFORE_CLOSE,
            names::COMPRESSED_SESSIONS,
            names::COMPRESSED_MESSAGES,
            names::RECONNECT_DELAY,
            names::CLIENTS_TRACKED,
            names::ADMISSION_REJECTIONS,
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
    }

    #[test]
    fn routes_get_other() {
        let m = Metrics::standalone(&["chat".into()], 0).unwrap();
        assert_eq!(m.route_name(m.route(Some(0))), "chat");
        assert_eq!(m.route_name(m.route(None)), "other");
    }
}
