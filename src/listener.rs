//! The client-facing side: accept loop, HTTP/1.1 upgrade, one task per session.
//!
//! Each accepted connection is served by hyper for exactly one request.
//! A valid WebSocket upgrade dials the upstream *first* (so the client gets
//! the upstream's answer: its 101 and subprotocol, its 403, or 502/504),
//! then answers 101 and hands both legs to a [`Session`]. Everything that
//! is not a session ends with an HTTP status, counted in
//! `wspulse_handshake_rejections_total{status}` (or the connect failures).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::{Route, Settings};
use crate::metrics::{Metrics, RouteId, SessionInfo};
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

type Body = Full<Bytes>;

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
    routes: Vec<(usize, Route)>,
}

impl Shared {
    pub(crate) fn new(
        settings: Settings,
        metrics: Metrics,
        drain: Drain,
        tracker: TaskTracker,
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
            upstream::tls_config(settings.upstream.ca_file.as_deref())
                .map_err(|e| tracing::error!(error = %e, "upstream TLS configuration"))
                .ok()
        } else {
            None
        };
        Shared {
            tls,
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

/// Accept clients until `stop` fires.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
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
}

async fn serve_connection(tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let permit = shared.sessions.clone().try_acquire_owned().ok();
    // Over the limit: answer 503 while few are waiting, else drop the TCP.
    let _reject_permit = if permit.is_none() {
        match shared.rejecting.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                shared.metrics.rejection(503);
                debug!(%peer, status = 503, "over max_connections, dropped unanswered");
                return;
            }
        }
    } else {
        None
    };
    let seen = Arc::new(AtomicBool::new(false));
    let slot = Arc::new(Mutex::new(permit));
    let svc = {
        let (shared, seen) = (shared.clone(), seen.clone());
        service_fn(move |req| {
            seen.store(true, Ordering::SeqCst);
            let permit = slot.lock().map(|mut s| s.take()).unwrap_or(None);
            handle(req, peer, shared.clone(), permit)
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD_BYTES.max(8192))
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(tcp), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let deadline = tokio::time::sleep(shared.settings.limits.handshake_timeout);
    tokio::pin!(deadline);
    let result = tokio::select! {
        r = &mut conn => r,
        _ = &mut deadline => {
            if seen.load(Ordering::SeqCst) {
                // The request is in; the upstream dial has its own timeout.
                conn.await
            } else {
                // Slowloris or a dead client: cut it, count it as 408.
                shared.metrics.rejection(408);
                debug!(%peer, "handshake timeout");
                return;
            }
        }
    };
    if let Err(e) = result {
        if e.is_parse_too_large() {
            shared.metrics.rejection(431);
        } else if e.is_parse() {
            shared.metrics.rejection(400);
        }
        debug!(%peer, error = %e, "client connection error");
    }
}

fn respond(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // One request per connection: hyper closes after a `Connection: close`
    // response. (Its keep_alive(false) would also stamp that on the 101.)
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// What is wrong with a request that should be a WebSocket upgrade.
fn check_upgrade(req: &Request<Incoming>) -> Result<(), (StatusCode, &'static str)> {
    let h = req.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !h.contains_key(header::UPGRADE) {
        return Err((
            StatusCode::UPGRADE_REQUIRED,
            "this is a WebSocket endpoint: Upgrade: websocket required\n",
        ));
    }
    if req.method() != hyper::Method::GET || req.version() != hyper::Version::HTTP_11 {
        return Err((
            StatusCode::BAD_REQUEST,
            "WebSocket upgrade needs GET over HTTP/1.1\n",
        ));
    }
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return Err((
            StatusCode::BAD_REQUEST,
            "Upgrade: websocket and Connection: Upgrade required\n",
        ));
    }
    if h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Err((
            StatusCode::UPGRADE_REQUIRED,
            "Sec-WebSocket-Version: 13 required\n",
        ));
    }
    match h.get(header::SEC_WEBSOCKET_KEY) {
        // 16 random bytes, base64: 24 characters (RFC 6455 §4.1).
        Some(k) if k.len() == 24 => Ok(()),
        _ => Err((
            StatusCode::BAD_REQUEST,
            "missing or malformed Sec-WebSocket-Key\n",
        )),
    }
}

async fn handle(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    permit: Option<OwnedSemaphorePermit>,
) -> Result<Response<Body>, Infallible> {
    let m = &shared.metrics;
    if let Err((status, body)) = check_upgrade(&req) {
        m.rejection(status.as_u16());
        debug!(%peer, status = status.as_u16(), reason = body.trim_end(), "not a WebSocket upgrade");
        let mut r = respond(status, body);
        if status == StatusCode::UPGRADE_REQUIRED {
            r.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        return Ok(r);
    }
    let Some(permit) = permit else {
        m.rejection(503);
        debug!(%peer, status = 503, "over max_connections");
        return Ok(respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections\n",
        ));
    };
    if shared.drain.is_draining() {
        m.rejection(503);
        debug!(%peer, status = 503, "draining");
        return Ok(respond(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"));
    }
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let path = req.uri().path().to_string();
    let headers = upstream::forward_headers(req.headers(), peer.ip());
    let s = &shared.settings;
    let dialed = match upstream::dial(
        &s.upstream.url,
        &path_and_query,
        headers,
        s.upstream.connect_timeout,
        shared.limits,
        shared.tls.as_ref(),
    )
    .await
    {
        Ok(d) => d,
        Err(e) => {
            let status = e.client_status();
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
            return Ok(rejection_response(e, status));
        }
    };
    let accept = match req.headers().get(header::SEC_WEBSOCKET_KEY) {
        Some(k) => derive_accept_key(k.as_bytes()),
        None => {
            return Ok(respond(
                StatusCode::BAD_REQUEST,
                "missing Sec-WebSocket-Key\n",
            ));
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    // Each leg lives on the heap, so moving it through the nested session
    // futures copies a pointer, not the struct, and an idle session does
    // not carry several stale copies.
    let upstream_ws = Box::new(dialed.ws);
    let route = shared.route(&path);
    let info = SessionInfo {
        client_addr: peer.to_string(),
        path,
    };
    let shared2 = shared.clone();
    shared.tracker.spawn(async move {
        let _permit = permit;
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                debug!(%peer, error = %e, "client upgrade failed after 101");
                return;
            }
        };
        // Take the TCP stream back from hyper: the relay then reads and writes
        // it directly instead of through hyper's boxed, rewinding wrapper.
        // Bytes hyper read past the request head (a client may send its
        // first frame right behind it) are the leg's first input.
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                let hyper::upgrade::Parts { io, read_buf, .. } = parts;
                let client = Box::new(WsStream::new(
                    io.into_inner(),
                    Role::Server,
                    shared2.limits,
                    &read_buf,
                ));
                // Free hyper's read buffer now, not when the session ends.
                drop(read_buf);
                run_session(client, upstream_ws, route, info, &shared2).await;
            }
            Err(upgraded) => {
                let client = Box::new(WsStream::new(
                    TokioIo::new(upgraded),
                    Role::Server,
                    shared2.limits,
                    &[],
                ));
                run_session(client, upstream_ws, route, info, &shared2).await;
            }
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = dialed.protocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    Ok(r)
}

async fn run_session<C: crate::session::Ws, U: crate::session::Ws>(
    client: C,
    upstream: U,
    route: RouteId,
    info: SessionInfo,
    shared: &Shared,
) {
    let (peer, path) = (info.client_addr.clone(), info.path.clone());
    let guard = shared.metrics.open_session(route, info);
    let started = guard.started();
    let session = Session::new(
        client,
        upstream,
        shared.session_config.clone(),
        shared.drain.clone(),
        shared.metrics.clone(),
        guard,
    );
    let closure = session.run().await;
    info!(
        code = closure.code,
        side = closure.side.as_str(),
        cause = closure.cause.as_str(),
        duration_s = started.elapsed().as_secs_f64(),
        client = %peer,
        path,
        route = shared.metrics.route_name(route),
        "session ended"
    );
}

/// The client's copy of an upstream failure: the upstream's own status and
/// small body for a rejection, 502/504 otherwise.
fn rejection_response(e: upstream::UpstreamError, status: StatusCode) -> Response<Body> {
    match e {
        upstream::UpstreamError::Rejected { headers, body, .. } => {
            let body = if body.len() <= 64 * 1024 {
                body
            } else {
                Vec::new()
            };
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = status;
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            if let Some(ct) = headers.get(header::CONTENT_TYPE) {
                r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
            }
            r
        }
        upstream::UpstreamError::Timeout(_) => respond(status, "upstream did not answer in time\n"),
        _ => respond(status, "upstream unavailable\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_matches;

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/chat", "/chat"));
        assert!(prefix_matches("/chat", "/chat/room"));
        assert!(!prefix_matches("/chat", "/chatroom"));
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/api/", "/api/x"));
    }
}
