//! Dialing the upstream: resolve, connect, WebSocket handshake, all within
//! `upstream.connect_timeout`; which client headers go along; and what a
//! failure means for the client (502, 504, or the upstream's own status).

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use rustls::ClientConfig;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{
    self, handshake::client::generate_key, protocol::WebSocketConfig,
};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::config::UpstreamUrl;
use crate::metrics::ConnectFailure;

/// Why the upstream could not be reached or refused the session.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed (refused, unreachable, …).
    #[error("cannot connect to {addr}: {source}")]
    Unreachable {
        /// The address tried last.
        addr: String,
        /// The connect error.
        source: io::Error,
    },
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Dns {
        /// The upstream host.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// `upstream.connect_timeout` elapsed.
    #[error("no WebSocket handshake within {0:?}")]
    Timeout(Duration),
    /// The upstream answered the upgrade with another status.
    #[error("upstream answered {status}")]
    Rejected {
        /// Its status.
        status: StatusCode,
        /// Its headers (content-type is passed on).
        headers: HeaderMap,
        /// Its body, if it sent one with the head.
        body: Vec<u8>,
    },
    /// TLS is needed but not available or failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The upstream did not speak the WebSocket handshake correctly.
    #[error("bad handshake from upstream: {0}")]
    Protocol(String),
}

impl UpstreamError {
    /// The `reason` label, or `None` for a rejection (counted by status instead).
    pub fn reason(&self) -> Option<ConnectFailure> {
        match self {
            UpstreamError::Unreachable { source, .. } => Some(match source.kind() {
                io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
                io::ErrorKind::TimedOut => ConnectFailure::Timeout,
                _ => ConnectFailure::Other,
            }),
            UpstreamError::Dns { .. } => Some(ConnectFailure::Dns),
            UpstreamError::Timeout(_) => Some(ConnectFailure::Timeout),
            UpstreamError::Rejected { .. } => None,
            UpstreamError::Tls(_) => Some(ConnectFailure::Tls),
            UpstreamError::Protocol(_) => Some(ConnectFailure::Protocol),
        }
    }

    /// The status the client gets.
    pub fn client_status(&self) -> StatusCode {
        match self {
            UpstreamError::Rejected { status, .. } => *status,
            UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            UpstreamError::Unreachable { source, .. }
                if source.kind() == io::ErrorKind::TimedOut =>
            {
                StatusCode::GATEWAY_TIMEOUT
            }
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

/// The upstream's byte stream: plain TCP for `ws://`, TLS for `wss://`.
pub type UpstreamStream = MaybeTlsStream<TcpStream>;

/// An established upstream leg.
pub struct Dialed {
    /// The WebSocket to the upstream.
    pub ws: WebSocketStream<UpstreamStream>,
    /// The subprotocol the upstream picked, if any.
    pub protocol: Option<HeaderValue>,
}

/// TLS client settings for `wss://` upstreams: the Mozilla roots (webpki)
/// plus the PEM certificates of `ca_file`, verified with ring.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let mut added = 0;
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("{}: bad PEM: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: bad certificate: {e}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("{}: no certificate found", path.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Dial `url` + `path_and_query` with `headers` (already filtered by
/// [`forward_headers`]); resolve, connect, TLS for `wss://` (with `tls`),
/// and upgrade, all within `timeout`.
pub async fn dial(
    url: &UpstreamUrl,
    path_and_query: &str,
    headers: HeaderMap,
    timeout: Duration,
    config: WebSocketConfig,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<Dialed, UpstreamError> {
    let tls = match (url.tls, tls) {
        (true, Some(t)) => Some(t.clone()),
        (true, None) => {
            return Err(UpstreamError::Tls(
                "no TLS configuration (see upstream.ca_file)".into(),
            ));
        }
        (false, _) => None,
    };
    let work = dial_inner(url, path_and_query, headers, config, tls);
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(UpstreamError::Timeout(timeout)))
}

async fn dial_inner(
    url: &UpstreamUrl,
    path_and_query: &str,
    headers: HeaderMap,
    config: WebSocketConfig,
    tls: Option<Arc<ClientConfig>>,
) -> Result<Dialed, UpstreamError> {
    let tcp = connect(&url.host, url.port).await?;
    let mut request = tungstenite::handshake::client::Request::builder()
        .uri(url.request_uri(path_and_query))
        .body(())
        .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
    let h = request.headers_mut();
    *h = headers;
    let host = url.authority();
    let host = HeaderValue::from_str(&host).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
    h.insert(header::HOST, host);
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    let key = HeaderValue::from_str(&generate_key())
        .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
    h.insert(header::SEC_WEBSOCKET_KEY, key);
    let handshake = match tls {
        Some(tls) => {
            let connector = Some(Connector::Rustls(tls));
            tokio_tungstenite::client_async_tls_with_config(request, tcp, Some(config), connector)
                .await
        }
        None => {
            let plain = MaybeTlsStream::Plain(tcp);
            tokio_tungstenite::client_async_with_config(request, plain, Some(config)).await
        }
    };
    match handshake {
        Ok((ws, response)) => {
            let protocol = response
                .headers()
                .get(header::SEC_WEBSOCKET_PROTOCOL)
                .cloned();
            Ok(Dialed { ws, protocol })
        }
        Err(tungstenite::Error::Http(response)) => {
            let (parts, body) = (*response).into_parts();
            Err(UpstreamError::Rejected {
                status: parts.status,
                headers: parts.headers,
                body: body.unwrap_or_default(),
            })
        }
        Err(tungstenite::Error::Tls(e)) => Err(UpstreamError::Tls(e.to_string())),
        // tokio-rustls reports certificate and handshake failures as InvalidData.
        Err(tungstenite::Error::Io(e)) if url.tls && e.kind() == io::ErrorKind::InvalidData => {
            Err(UpstreamError::Tls(e.to_string()))
        }
        Err(tungstenite::Error::Io(e)) => Err(UpstreamError::Unreachable {
            addr: format!("{}:{}", url.host, url.port),
            source: e,
        }),
        Err(e) => Err(UpstreamError::Protocol(e.to_string())),
    }
}

/// Resolve and connect, trying each address in turn.
async fn connect(host: &str, port: u16) -> Result<TcpStream, UpstreamError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| UpstreamError::Dns {
            host: host.to_string(),
            source,
        })?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    let mut last_addr = format!("{host}:{port}");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                // Frames are written whole and flushed once per burst;
                // Nagle would only add latency.
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(e) => {
                last = e;
                last_addr = addr.to_string();
            }
        }
    }
    Err(UpstreamError::Unreachable {
        addr: last_addr,
        source: last,
    })
}

/// Headers never forwarded: hop-by-hop (RFC 9110 §7.6.1) and the ones the
/// proxy sets itself for its own handshake with the upstream.
const NOT_FORWARDED: &[HeaderName] = &[
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::HOST,
    header::CONTENT_LENGTH,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_ACCEPT,
    // No extension (permessage-deflate) is negotiated on either leg: the
    // proxy inspects every frame and would have to re-compress.
    header::SEC_WEBSOCKET_EXTENSIONS,
];

/// The headers to send upstream for a client request: end-to-end headers
/// (`Sec-WebSocket-Protocol`, `Cookie`, `Authorization`, `Origin`,
/// `User-Agent`, …) as they are, hop-by-hop ones dropped, and
/// `X-Forwarded-For` (appended to, never replaced), `X-Forwarded-Proto`
/// and `X-Forwarded-Host` (set).
pub fn forward_headers(client: &HeaderMap, client_ip: std::net::IpAddr) -> HeaderMap {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<String> = client
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    let mut out = HeaderMap::with_capacity(client.len() + 3);
    for (name, value) in client {
        let n = name.as_str();
        if NOT_FORWARDED.contains(name)
            || n == "keep-alive"
            || n == "proxy-connection"
            || n.starts_with("x-forwarded-")
            || named.iter().any(|c| c == n)
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    let prior: Vec<&str> = client
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let xff = if prior.is_empty() {
        client_ip.to_string()
    } else {
        format!("{}, {client_ip}", prior.join(", "))
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        out.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    // The listener speaks plain HTTP; a TLS-terminating balancer in front
    // must be trusted explicitly, which wspulse does not do (yet).
    out.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    if let Some(host) = client.get(header::HOST) {
        out.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_end_to_end_and_drops_hop_by_hop() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("host", "proxy.example:8080"),
            ("connection", "Upgrade, X-Secret-Hop"),
            ("upgrade", "websocket"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
            ("sec-websocket-extensions", "permessage-deflate"),
            ("sec-websocket-protocol", "chat, superchat"),
            ("cookie", "a=1"),
            ("authorization", "Bearer t"),
            ("origin", "https://app.example"),
            ("user-agent", "test"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = forward_headers(&h, "10.1.2.3".parse().unwrap());
        for gone in [
            "connection",
            "upgrade",
            "x-secret-hop",
            "keep-alive",
            "sec-websocket-key",
            "sec-websocket-extensions",
            "host",
        ] {
            assert!(out.get(gone).is_none(), "{gone} forwarded");
        }
        for kept in [
            "sec-websocket-protocol",
            "cookie",
            "authorization",
            "origin",
            "user-agent",
        ] {
            assert_eq!(out.get(kept), h.get(kept), "{kept}");
        }
        assert_eq!(out["x-forwarded-for"], "203.0.113.7, 10.1.2.3");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(out["x-forwarded-host"], "proxy.example:8080");
    }

    #[test]
    fn statuses_for_failures() {
        let refused = UpstreamError::Unreachable {
            addr: "x".into(),
            source: io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(refused.client_status(), StatusCode::BAD_GATEWAY);
        assert_eq!(refused.reason(), Some(ConnectFailure::Refused));
        assert_eq!(
            UpstreamError::Timeout(Duration::from_secs(1)).client_status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        let rejected = UpstreamError::Rejected {
            status: StatusCode::FORBIDDEN,
            headers: HeaderMap::new(),
            body: vec![],
        };
        assert_eq!(rejected.client_status(), StatusCode::FORBIDDEN);
        assert_eq!(rejected.reason(), None);
    }
}
