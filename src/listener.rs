//! The client-facing side: accept loop, HTTP/1.1 upgrade, one task per session.
//!
//! A connection first goes through the edge ([`crate::edge`]: the PROXY
//! header and TLS, when configured), under the same deadline as its request
//! head (`limits.handshake_timeout`). The client's address is then worked
//! out once ([`Origin`]) and used for the log line, `/closures` and the
//! upstream's `X-Forwarded-For`.
//!
//! Each accepted connection carries exactly one request, read and parsed
//! here (httparse; the request head is all wspulse needs of HTTP, and a
//! general HTTP server's machinery cost more per session than the rest of
//! the handshake together, bench/README.md). A valid WebSocket upgrade
//! dials the upstream *first* (so the client gets the upstream's answer:
//! its 101 and subprotocol, its 403, or 502/504), then answers 101 and
//! relays both legs in the same task ([`Session`]). Everything that is not
//! a session ends with an HTTP status, counted in
//! `wspulse_handshake_rejections_total{status}` (or the connect failures).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use hyper::header::HeaderValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::admission::{Admission, Refusal, Ticket};
use crate::clients::EndClass;
use crate::closure::{Closure, Side};
use crate::config::{Route, Settings};
use crate::conn::{self, Conn};
use crate::edge::{Edge, Opened};
use crate::extensions;
use crate::forwarded::Origin;
use crate::head::{self, Fields, Spans};
use crate::metrics::{AdmissionReason, Metrics, RouteId};
use crate::protocol::Role;
use crate::record::SessionInfo;
use crate::resolver::Resolver;
use crate::session::{CLOSE_TIMEOUT, Session, SessionConfig};
use crate::shutdown::Drain;
use crate::upstream;
use crate::ws::{Limits, WsStream};

/// Connections past `max_connections` still get a 503, but only this many
/// at once; beyond it they are dropped unanswered, so a flood cannot make
/// the proxy allocate without bound.
const MAX_REJECTING: usize = 256;

/// Largest request head accepted; past it the client gets 431.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Everything a connection task needs, shared.
pub(crate) struct Shared {
    pub settings: Settings,
    pub metrics: Metrics,
    pub drain: Drain,
    pub tracker: TaskTracker,
    pub sessions: Arc<Semaphore>,
    pub rejecting: Arc<Semaphore>,
    pub limits: Limits,
    pub session_config: SessionConfig,
    /// TLS client settings, built once, when the upstream is `wss://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The upstream's addresses, shared by every dial.
    pub resolver: Arc<Resolver>,
    /// Client identities, reconnect tracking and the admission limits.
    pub admission: Admission,
    /// PROXY protocol and TLS, before a request is read.
    pub edge: Edge,
    routes: Vec<(usize, Route)>,
}

impl Shared {
    pub(crate) fn new(
        settings: Settings,
        metrics: Metrics,
        drain: Drain,
        tracker: TaskTracker,
        edge: Edge,
    ) -> Shared {
        let limits = limits(&settings);
        let session_config = SessionConfig {
            keepalive_interval: settings.keepalive.interval,
            keepalive_timeout: settings.keepalive.timeout,
            shutdown_close_code: settings.shutdown.close_code,
            close_timeout: CLOSE_TIMEOUT,
        };
        // Longest prefix first, so the first match wins.
        let mut routes: Vec<(usize, Route)> = settings.routes.iter().cloned().enumerate().collect();
        routes.sort_by_key(|(_, r)| std::cmp::Reverse(r.path_prefix.len()));
        // The config check already built this once, so it fails here only
        // if the CA file changed since; dials then fail with reason `tls`.
        let tls = if settings.upstream.url.tls {
            crate::tls::client_config(settings.upstream.ca_file.as_deref())
                .map_err(|e| tracing::error!(error = %e, "upstream TLS configuration"))
                .ok()
        } else {
            None
        };
        let up = &settings.upstream;
        let resolver = Resolver::new(&up.url.host, up.url.port, up.dns_refresh);
        Shared {
            tls,
            resolver,
            admission: Admission::new(&settings, metrics.clone()),
            edge,
            sessions: Arc::new(Semaphore::new(settings.limits.max_connections)),
            rejecting: Arc::new(Semaphore::new(MAX_REJECTING)),
            settings,
            metrics,
            drain,
            tracker,
            limits,
            session_config,
            routes,
        }
    }

    /// The route for a request path: the longest configured prefix that
    /// matches whole path segments (`/chat` matches `/chat` and `/chat/x`,
    /// not `/chatroom`), else `other` (or `default` with no routes).
    pub(crate) fn route(&self, path: &str) -> RouteId {
        let hit = self
            .routes
            .iter()
            .find(|(_, r)| prefix_matches(&r.path_prefix, path))
            .map(|(i, _)| *i);
        self.metrics.route(hit)
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with('/')
            || path.len() == prefix.len()
            || path.as_bytes()[prefix.len()] == b'/')
}

/// Per-leg WebSocket limits, from `limits.*`.
pub fn limits(settings: &Settings) -> Limits {
    Limits {
        max_message_size: settings.limits.max_message_size,
        max_frame_size: settings.limits.max_frame_size,
    }
}

/// Accept clients, each into a task of its own, until the task running
/// this is aborted (the drain's start). Between two awaits it only spawns,
/// so an abort never leaves a connection half taken.
pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let shared2 = shared.clone();
                shared.tracker.spawn(serve_connection(tcp, peer, shared2));
            }
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One client connection: the handshake, then the session. The handshake's
/// state (request, upstream dial, buffers) lives in its own heap allocation,
/// freed when it ends: a task's memory is sized for its largest state, and
/// an idle session should not pay for the handshake it finished long ago.
async fn serve_connection(tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    // Taken apart in place: a named `Accepted` would keep its slot (200
    // bytes) in this future for the whole session after its fields moved out.
    let Some(Accepted {
        client,
        upstream,
        route,
        info,
        permit,
        mut ticket,
    }) = Box::pin(handshake(tcp, peer, &shared)).await
    else {
        return;
    };
    let closure = run_session(client, upstream, route, info, &shared).await;
    ticket.session_ended(&closure);
    drop(permit);
}

/// A client whose upgrade succeeded: both legs, ready to relay.
struct Accepted<'a> {
    client: Box<WsStream>,
    upstream: Box<WsStream>,
    route: RouteId,
    info: SessionInfo,
    /// The `max_connections` slot, held until the session ends.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Its place in admission: told how the session ended.
    ticket: Ticket<'a>,
}

/// Take the client through the edge (PROXY header, TLS), read its
/// request, dial the upstream and answer 101, or answer the refusal and
/// close (`None`).
async fn handshake(tcp: TcpStream, peer: SocketAddr, shared: &Shared) -> Option<Accepted<'_>> {
    conn::tune_accepted(&tcp);
    let permit = shared.sessions.clone().try_acquire_owned().ok();
    // Over the limit: answer 503 while few are waiting, else drop the TCP.
    let _reject_permit = if permit.is_none() {
        match shared.rejecting.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                shared.metrics.rejection(503);
                shared
                    .metrics
                    .admission_rejected(AdmissionReason::MaxConnections);
                debug!(%peer, status = 503, "over max_connections, dropped unanswered");
                return None;
            }
        }
    } else {
        None
    };
    let m = &shared.metrics;
    // One deadline for the PROXY header, TLS and the request head.
    let deadline = tokio::time::Instant::now() + shared.settings.limits.handshake_timeout;
    let (mut tcp, peer) = match shared.edge.open(tcp, peer, deadline, m).await {
        Opened::Stream(conn, peer) => (conn, peer),
        Opened::Plaintext(tcp) => {
            let body = "this port speaks TLS: use https:// or wss://\n";
            refuse(
                Conn::Tcp(tcp),
                plain_response(StatusCode::BAD_REQUEST, body),
            )
            .await;
            return None;
        }
        Opened::Closed => return None,
    };
    let head = tokio::time::timeout_at(deadline, read_head(&mut tcp)).await;
    let (req, rest) = match head {
        Ok(Ok(Head::Complete(req, rest))) => (req, rest),
        Ok(Ok(Head::Refused(status, body))) => {
            m.rejection(status.as_u16());
            debug!(%peer, status = status.as_u16(), reason = body.trim_end(), "bad request head");
            refuse(tcp, plain_response(status, body)).await;
            return None;
        }
        // The client left before its request was complete: nobody to answer.
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "client left during the handshake");
            return None;
        }
        Err(_) => {
            // Slowloris or a dead client: cut it, count it as 408.
            m.rejection(408);
            debug!(%peer, status = 408, "handshake timeout");
            return None;
        }
    };
    if let Err((status, body)) = check_upgrade(&req) {
        m.rejection(status.as_u16());
        debug!(%peer, status = status.as_u16(), reason = body.trim_end(), "not a WebSocket upgrade");
        refuse(tcp, plain_response(status, body)).await;
        return None;
    }
    // The client's address, once: the log line, /closures, X-Forwarded-For
    // and the client's identity for admission.
    let origin = Origin::of(
        peer,
        shared.edge.tls(),
        &shared.settings.listen.trusted_proxies,
        &req.headers,
    );
    let peer = origin.client;
    let mut ticket = shared
        .admission
        .arrive(&req.headers, &req.path_and_query, peer.ip());
    if let Err(refusal) = ticket.admit(permit.is_some()) {
        m.rejection(503);
        debug!(%peer, status = 503, reason = refusal.reason.as_str(), "admission limit");
        refuse(tcp, refusal_response(refusal)).await;
        return None;
    }
    if shared.drain.is_draining() {
        ticket.end(EndClass::Rejected, Side::Proxy);
        m.rejection(503);
        debug!(%peer, status = 503, "draining");
        let r = plain_response(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
        refuse(tcp, r).await;
        return None;
    }
    let s = &shared.settings;
    let client_head = upstream::ClientHead {
        path_and_query: &req.path_and_query,
        headers: &req.headers,
        origin: &origin,
        compression: s.compression.mode,
    };
    let dialed = match upstream::dial(
        &s.upstream.url,
        &shared.resolver,
        client_head,
        s.upstream.connect_timeout,
        shared.limits,
        shared.tls.as_ref(),
    )
    .await
    {
        Ok(d) => d,
        Err(e) => {
            let status = e.client_status();
            let path = req.path();
            match e.reason() {
                Some(reason) => {
                    m.connect_failure(reason);
                    warn!(upstream = %s.upstream.url, %peer, path, reason = reason.as_str(), status = status.as_u16(), error = %e, "upstream connect failed");
                }
                None => {
                    m.rejection(status.as_u16());
                    info!(upstream = %s.upstream.url, %peer, path, status = status.as_u16(), "upstream rejected handshake");
                }
            }
            ticket.end(EndClass::Rejected, Side::Upstream);
            refuse(tcp, rejection_response(e, status)).await;
            return None;
        }
    };
    let switching = switching_response(
        req.key(),
        dialed.protocol.as_ref(),
        dialed.extensions.as_ref(),
    );
    if let Err(e) = tcp.write_all(&switching).await {
        debug!(%peer, error = %e, "client gone before the 101");
        return None;
    }
    // Bytes read past the request head (a client may send its first frame
    // right behind it) are the client leg's first input. Each leg lives on
    // the heap, so moving it through the nested session futures copies a
    // pointer, not the struct.
    let mut client = Box::new(WsStream::new(tcp, Role::Server, shared.limits, &rest));
    // Both legs share the one compression the upstream accepted.
    let compression = dialed
        .extensions
        .is_some()
        .then_some(extensions::PERMESSAGE_DEFLATE);
    client.set_deflate(compression.is_some());
    let path = req.path().to_string();
    Some(Accepted {
        client,
        upstream: Box::new(dialed.ws),
        route: shared.route(&path),
        info: SessionInfo {
            client_addr: Some(peer),
            path,
            compression,
            client_key: ticket.key(),
            reconnect_after: ticket.reconnect().map(|r| r.after),
        },
        permit,
        ticket,
    })
}

/// A parsed request head, owned: its fields sit in the bytes read.
struct ClientRequest {
    method_get: bool,
    http11: bool,
    /// Origin-form path and query, also taken from an absolute-form target.
    path_and_query: String,
    headers: Fields,
}

impl ClientRequest {
    fn path(&self) -> &str {
        let p = self.path_and_query.split('?').next().unwrap_or("/");
        if p.is_empty() { "/" } else { p }
    }

    /// Sec-WebSocket-Key, empty when absent (checked by `check_upgrade`).
    fn key(&self) -> &[u8] {
        self.headers.get("sec-websocket-key").unwrap_or_default()
    }
}

/// How reading a request head ended.
enum Head {
    /// A request, and the bytes read past its head: a client may send
    /// its first frame right behind it.
    Complete(ClientRequest, Vec<u8>),
    /// Not a request we can take: the status and body to answer.
    Refused(StatusCode, &'static str),
}

/// Most headers accepted in a request head; past it the client gets 431.
const MAX_HEADERS: usize = 100;

/// Read until `buf` holds a whole request head, parsing as bytes arrive so
/// that garbage is refused at once rather than at the timeout.
async fn read_head(tcp: &mut Conn) -> io::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        if buf.len() >= MAX_HEAD_BYTES {
            return Ok(Head::Refused(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head too large\n",
            ));
        }
        buf.reserve(1024);
        if tcp.read_buf(&mut buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(head) = parse_head(&mut buf) {
            return Ok(head);
        }
    }
}

/// Parse a request head: `None` while incomplete. Once it is complete,
/// `buf` is split: the head's bytes go into the request's [`Fields`], what
/// follows them is returned beside it. The header array lives only in this
/// call, so it never weighs on the connection's future.
fn parse_head(buf: &mut Vec<u8>) -> Option<Head> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return None,
        Err(httparse::Error::TooManyHeaders) => {
            return Some(Head::Refused(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many headers\n",
            ));
        }
        Err(_) => {
            return Some(Head::Refused(
                StatusCode::BAD_REQUEST,
                "malformed HTTP request\n",
            ));
        }
    };
    let bad = |body| Some(Head::Refused(StatusCode::BAD_REQUEST, body));
    // The same URI parser hyper uses: an absolute-form target
    // (`GET ws://elsewhere/x`) gives its path only; the upstream is fixed.
    let Ok(uri) = hyper::Uri::try_from(req.path.unwrap_or("/")) else {
        return bad("malformed request target\n");
    };
    // httparse has checked every name and value against HTTP's grammar.
    let spans = Spans::of(buf, req.headers);
    let (method_get, http11) = (req.method == Some("GET"), req.version == Some(1));
    let rest = buf.split_off(len);
    let request = ClientRequest {
        method_get,
        http11,
        path_and_query: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        headers: Fields::new(std::mem::take(buf), spans),
    };
    Some(Head::Complete(request, rest))
}

/// Answer `response` and close, reading what the client still sends for a
/// moment (a lingering close, as nginx does): closing with unread input
/// would send a reset, and the client could lose the answer.
async fn refuse(mut tcp: Conn, response: Vec<u8>) {
    let answer = async {
        tcp.write_all(&response).await?;
        tcp.shutdown().await?;
        let mut sink = [0u8; 4096];
        while tcp.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(LINGER, answer).await;
}

/// How long a refused connection is read (and discarded) before it is closed.
const LINGER: Duration = Duration::from_secs(2);

/// A small response that ends the connection.
fn response(status: StatusCode, content_type: Option<&[u8]>, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(160 + body.len());
    r.extend_from_slice(b"HTTP/1.1 ");
    r.extend_from_slice(status.as_str().as_bytes());
    r.push(b' ');
    r.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    r.extend_from_slice(b"\r\nconnection: close\r\n");
    if let Some(ct) = content_type {
        r.extend_from_slice(b"content-type: ");
        r.extend_from_slice(ct);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(extra.as_bytes());
    r.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    r.extend_from_slice(body);
    r
}

/// A 503 from an admission limit, with a `Retry-After` jittered so that
/// the clients refused together do not come back together.
fn refusal_response(refusal: Refusal) -> Vec<u8> {
    let body: &[u8] = match refusal.reason {
        AdmissionReason::Rate => b"too many new connections, retry later\n",
        AdmissionReason::PerClient => b"too many connections from this client\n",
        AdmissionReason::MaxConnections => b"too many connections\n",
    };
    let extra = format!("retry-after: {}\r\n", refusal.retry_after);
    response(
        StatusCode::SERVICE_UNAVAILABLE,
        Some(b"text/plain; charset=utf-8"),
        &extra,
        body,
    )
}

fn plain_response(status: StatusCode, body: &'static str) -> Vec<u8> {
    // A 426 names the version wspulse speaks (RFC 6455 §4.4).
    let extra = if status == StatusCode::UPGRADE_REQUIRED {
        "sec-websocket-version: 13\r\nupgrade: websocket\r\n"
    } else {
        ""
    };
    response(
        status,
        Some(b"text/plain; charset=utf-8"),
        extra,
        body.as_bytes(),
    )
}

/// The 101 that completes the client's handshake.
fn switching_response(
    key: &[u8],
    protocol: Option<&HeaderValue>,
    extensions: Option<&HeaderValue>,
) -> Vec<u8> {
    let mut r = Vec::with_capacity(160);
    r.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ",
    );
    r.extend_from_slice(&head::accept_key(key));
    r.extend_from_slice(b"\r\n");
    if let Some(p) = protocol {
        r.extend_from_slice(b"sec-websocket-protocol: ");
        r.extend_from_slice(p.as_bytes());
        r.extend_from_slice(b"\r\n");
    }
    if let Some(e) = extensions {
        r.extend_from_slice(b"sec-websocket-extensions: ");
        r.extend_from_slice(e.as_bytes());
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"\r\n");
    r
}

/// What is wrong with a request that should be a WebSocket upgrade.
fn check_upgrade(req: &ClientRequest) -> Result<(), (StatusCode, &'static str)> {
    let h = &req.headers;
    if h.get("upgrade").is_none() {
        return Err((
            StatusCode::UPGRADE_REQUIRED,
            "this is a WebSocket endpoint: Upgrade: websocket required\n",
        ));
    }
    if !req.method_get || !req.http11 {
        return Err((
            StatusCode::BAD_REQUEST,
            "WebSocket upgrade needs GET over HTTP/1.1\n",
        ));
    }
    if !h.has_token("upgrade", "websocket") || !h.has_token("connection", "upgrade") {
        return Err((
            StatusCode::BAD_REQUEST,
            "Upgrade: websocket and Connection: Upgrade required\n",
        ));
    }
    if h.get("sec-websocket-version") != Some(b"13") {
        return Err((
            StatusCode::UPGRADE_REQUIRED,
            "Sec-WebSocket-Version: 13 required\n",
        ));
    }
    // 16 random bytes, base64: 24 characters (RFC 6455 §4.1).
    if req.key().len() != 24 || h.get_all("sec-websocket-key").count() != 1 {
        return Err((
            StatusCode::BAD_REQUEST,
            "missing or malformed Sec-WebSocket-Key\n",
        ));
    }
    Ok(())
}

/// The session over two upgraded legs, from its guard's opening to its
/// record.
fn run_session(
    client: Box<WsStream>,
    upstream: Box<WsStream>,
    route: RouteId,
    info: SessionInfo,
    shared: &Shared,
) -> impl Future<Output = Closure> + Send + 'static {
    // Not an `async fn`: its future would hold its arguments and the guard
    // beside the session's own future, all moved out at the start. The
    // guard logs the `session ended` line.
    let guard = shared.metrics.open_session(route, info);
    Session::new(
        client,
        upstream,
        shared.session_config.clone(),
        shared.drain.clone(),
        shared.metrics.clone(),
        guard,
    )
    .run()
}

/// The client's copy of an upstream failure: the upstream's own status and
/// small body for a rejection, 502/504 otherwise.
fn rejection_response(e: upstream::UpstreamError, status: StatusCode) -> Vec<u8> {
    match e {
        upstream::UpstreamError::Rejected { headers, body, .. } => {
            let body = if body.len() <= 64 * 1024 {
                body
            } else {
                Vec::new()
            };
            let ct = headers
                .get(hyper::header::CONTENT_TYPE)
                .map(|v| v.as_bytes());
            response(status, ct, "", &body)
        }
        upstream::UpstreamError::Timeout(_) => {
            plain_response(status, "upstream did not answer in time\n")
        }
        _ => plain_response(status, "upstream unavailable\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::{Head, prefix_matches};

    /// The size of the future an async fn of three arguments returns.
    fn future_size<A, B, C, F: Future>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every idle session holds its task's future: 2,136 bytes when the
    /// session sat in it twice (an `async fn`'s argument beside the local
    /// it is moved into) and moved-out handshake results kept their slots.
    #[test]
    fn a_session_task_stays_under_a_kilobyte() {
        let size = future_size(super::serve_connection);
        assert!(size <= 1024, "serve_connection's future: {size} bytes");
    }

    fn parsed(raw: &[u8]) -> Option<Head> {
        super::parse_head(&mut raw.to_vec())
    }

    #[test]
    fn request_heads() {
        use super::{Head, StatusCode};
        let upgrade = b"GET ws://elsewhere.example/a/b?x=1 HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: k\r\n\r\nFRAME";
        match parsed(upgrade) {
            Some(Head::Complete(req, rest)) => {
                assert_eq!(
                    req.path_and_query, "/a/b?x=1",
                    "absolute form gives its path only"
                );
                assert_eq!(req.path(), "/a/b");
                assert_eq!(rest, b"FRAME");
                assert_eq!(
                    (req.method_get, req.http11, req.key()),
                    (true, true, &b"k"[..])
                );
            }
            _ => panic!("not parsed"),
        }
        assert!(
            parsed(b"GET / HTTP/1.1\r\nHost: h\r\n").is_none(),
            "incomplete"
        );
        let refused = |raw: &[u8]| match parsed(raw) {
            Some(Head::Refused(status, _)) => status,
            _ => panic!("not refused: {}", String::from_utf8_lossy(raw)),
        };
        assert_eq!(refused(b"\x16\x03\x01\x00"), StatusCode::BAD_REQUEST);
        assert_eq!(refused(b"PRI * HTTP/2.0\r\n\r\n"), StatusCode::BAD_REQUEST);
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            refused(raw.as_bytes()),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/chat", "/chat"));
        assert!(prefix_matches("/chat", "/chat/room"));
        assert!(!prefix_matches("/chat", "/chatroom"));
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/api/", "/api/x"));
    }
}
