//! Dialing the upstream: resolve, connect, WebSocket handshake, all within
//! `upstream.connect_timeout`; which client headers go along; and what a
//! failure means for the client (502, 504, or the upstream's own status).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::{CompressionMode, UpstreamUrl};
use crate::conn::{self, Conn};
use crate::extensions;
use crate::forwarded::Origin;
use crate::head::{self, Fields, Spans};
use crate::metrics::ConnectFailure;
use crate::protocol::Role;
use crate::resolver::Resolver;
use crate::ws::{Limits, WsStream};

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

/// An established upstream leg.
pub struct Dialed {
    /// The WebSocket to the upstream.
    pub ws: WsStream,
    /// The subprotocol the upstream picked, if any.
    pub protocol: Option<HeaderValue>,
    /// The upstream's `Sec-WebSocket-Extensions` answer (permessage-deflate
    /// and its parameters), to pass on to the client as sent.
    pub extensions: Option<HeaderValue>,
}

/// What of the client's request goes upstream.
#[derive(Clone, Copy)]
pub struct ClientHead<'a> {
    /// The request's path and query, appended to the upstream URL's path.
    pub path_and_query: &'a str,
    /// The request's header fields, forwarded by [`forward_headers`].
    pub headers: &'a Fields,
    /// Where the request came from, for `X-Forwarded-For` and `-Proto`.
    pub origin: &'a Origin,
    /// Whether the client's permessage-deflate offers go upstream.
    pub compression: CompressionMode,
}

/// Dial `url` for `client`'s request; resolve, connect, TLS for `wss://`
/// (with `tls`), and upgrade, all within `timeout`.
pub async fn dial(
    url: &UpstreamUrl,
    resolver: &Arc<Resolver>,
    client: ClientHead<'_>,
    timeout: Duration,
    limits: Limits,
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
    let work = dial_inner(url, resolver, client, limits, tls);
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(UpstreamError::Timeout(timeout)))
}

async fn dial_inner(
    url: &UpstreamUrl,
    resolver: &Arc<Resolver>,
    client: ClientHead<'_>,
    limits: Limits,
    tls: Option<Arc<ClientConfig>>,
) -> Result<Dialed, UpstreamError> {
    let tcp = connect(resolver).await?;
    let mut stream = match tls {
        Some(tls) => {
            let name = ServerName::try_from(url.host.clone())
                .map_err(|e| UpstreamError::Tls(format!("{}: {e}", url.host)))?;
            let tls = TlsConnector::from(tls)
                .connect(name, tcp)
                .await
                .map_err(|e| UpstreamError::Tls(e.to_string()))?;
            Conn::TlsClient(Box::new(tls))
        }
        None => Conn::Tcp(tcp),
    };
    let key = head::new_key();
    let request = upgrade_request(url, client, &key);
    let unreachable = |e: io::Error| UpstreamError::Unreachable {
        addr: url.authority(),
        source: e,
    };
    stream.write_all(&request).await.map_err(unreachable)?;
    let (head, mut rest) = read_head(&mut stream).await.map_err(unreachable)?;
    let head = parse_head(head)?;
    if head.status != StatusCode::SWITCHING_PROTOCOLS {
        read_small_body(&mut stream, &head.fields, &mut rest).await;
        return Err(UpstreamError::Rejected {
            status: head.status,
            headers: header_map(&head.fields),
            body: rest,
        });
    }
    let protocol = verify_upgrade(&head.fields, &key, client.headers)?;
    let extensions = verify_extensions(&head.fields, client)?;
    let mut ws = WsStream::new(stream, Role::Client, limits, &rest);
    ws.set_deflate(extensions.is_some());
    Ok(Dialed {
        ws,
        protocol,
        extensions,
    })
}

/// The upstream's HTTP/1.1 upgrade request, as bytes.
fn upgrade_request(url: &UpstreamUrl, client: ClientHead<'_>, key: &[u8]) -> Vec<u8> {
    // Written piece by piece: this runs once per session, and formatting
    // the URI first and cutting the path back out cost more than the rest.
    let mut out = Vec::with_capacity(256 + client.headers.len() * 64);
    out.extend_from_slice(b"GET ");
    url.write_target(client.path_and_query, &mut out);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    url.write_authority(&mut out);
    out.extend_from_slice(
        b"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ",
    );
    out.extend_from_slice(key);
    out.extend_from_slice(b"\r\n");
    forward_headers(client.headers, client.origin, &mut out);
    if client.compression == CompressionMode::Passthrough {
        write_extension_offers(client.headers, &mut out);
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The client's permessage-deflate offers, as sent, in one
/// `Sec-WebSocket-Extensions` line; nothing when it made none. Other
/// extensions are left out: the proxy could not relay their frames.
fn write_extension_offers(client: &Fields, out: &mut Vec<u8>) {
    const NAME: &[u8] = b"sec-websocket-extensions: ";
    let start = out.len();
    out.extend_from_slice(NAME);
    if extensions::write_deflate_offers(client.get_all("sec-websocket-extensions"), out) {
        out.extend_from_slice(b"\r\n");
    } else {
        out.truncate(start);
    }
}

/// Largest response head accepted from the upstream.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Largest rejection body passed on to the client.
const MAX_REJECTION_BODY: usize = 64 * 1024;

/// Read up to the end of the response head; returns it and any bytes after it
/// (the start of the WebSocket stream, or of a rejection body).
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "response head too large",
            ));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "upstream closed during the handshake",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

struct Head {
    status: StatusCode,
    fields: Fields,
}

fn parse_head(bytes: Vec<u8>) -> Result<Head, UpstreamError> {
    let mut raw = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut raw);
    match response.parse(&bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(UpstreamError::Protocol("incomplete response head".into()));
        }
        Err(e) => return Err(UpstreamError::Protocol(format!("bad response head: {e}"))),
    }
    let status = response
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| UpstreamError::Protocol("no status code".into()))?;
    let spans = Spans::of(&bytes, response.headers);
    Ok(Head {
        status,
        fields: Fields::new(bytes, spans),
    })
}

/// A rejection's fields as a `HeaderMap`, for the client's answer.
fn header_map(fields: &Fields) -> HeaderMap {
    fields
        .iter()
        .filter_map(|(n, v)| {
            Some((
                HeaderName::from_bytes(n).ok()?,
                HeaderValue::from_bytes(v).ok()?,
            ))
        })
        .collect()
}

/// Complete a small rejection body, briefly: by Content-Length, or up to
/// the end of the stream when there is none (HTTP/1.1 close-delimited). A
/// chunked, too large or unfinished body is passed on as far as it got.
async fn read_small_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    fields: &Fields,
    body: &mut Vec<u8>,
) {
    if fields.get("transfer-encoding").is_some() {
        body.clear();
        return;
    }
    let len = fields
        .get("content-length")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let want = len.unwrap_or(MAX_REJECTION_BODY).min(MAX_REJECTION_BODY);
    let fill = async {
        let mut chunk = [0u8; 4096];
        while body.len() < want {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), fill).await;
    body.truncate(want);
}

/// Check a 101 answer (RFC 6455 §4.1): upgrade headers, the accept key, and
/// that any subprotocol is one the client offered. No subprotocol is fine
/// even when some were offered: the server may decline them all (tungstenite
/// refuses that case, which is why the proxy does this handshake itself).
fn verify_upgrade(
    resp: &Fields,
    key: &[u8],
    client: &Fields,
) -> Result<Option<HeaderValue>, UpstreamError> {
    if !resp.has_token("upgrade", "websocket") || !resp.has_token("connection", "upgrade") {
        return Err(UpstreamError::Protocol(
            "101 without Upgrade: websocket / Connection: Upgrade".into(),
        ));
    }
    if resp.get("sec-websocket-accept") != Some(&head::accept_key(key)[..]) {
        return Err(UpstreamError::Protocol("wrong Sec-WebSocket-Accept".into()));
    }
    let Some(chosen) = resp.get("sec-websocket-protocol") else {
        return Ok(None);
    };
    // Offered: sent by the client, and forwarded (not named hop-by-hop).
    let chosen = chosen.trim_ascii();
    let offered = forwarded(client, b"sec-websocket-protocol")
        && client
            .get_all("sec-websocket-protocol")
            .flat_map(|v| v.split(|&b| b == b','))
            .any(|p| p.trim_ascii() == chosen);
    let chosen = HeaderValue::from_bytes(chosen).ok().filter(|_| offered);
    if chosen.is_none() {
        return Err(UpstreamError::Protocol(
            "upstream chose a subprotocol that was not offered".into(),
        ));
    }
    Ok(chosen)
}

/// The upstream's `Sec-WebSocket-Extensions` answer, to pass on to the
/// client as sent, once it is known to answer one of the offers the proxy
/// forwarded (none in `compression.mode = "off"`).
fn verify_extensions(
    resp: &Fields,
    client: ClientHead<'_>,
) -> Result<Option<HeaderValue>, UpstreamError> {
    let mut answers = resp.get_all("sec-websocket-extensions");
    let Some(answer) = answers.next() else {
        return Ok(None);
    };
    let refuse = |why: &str| Err(UpstreamError::Protocol(why.into()));
    if answers.next().is_some() {
        return refuse(extensions::BadAnswer::OtherExtension.as_str());
    }
    let offers = client.headers.get_all("sec-websocket-extensions");
    let checked = match client.compression {
        CompressionMode::Passthrough => extensions::check_answer(answer, offers),
        CompressionMode::Off => Err(extensions::BadAnswer::NotOffered),
    };
    if let Err(bad) = checked {
        return refuse(bad.as_str());
    }
    match HeaderValue::from_bytes(answer.trim_ascii()) {
        Ok(v) => Ok(Some(v)),
        Err(_) => refuse(extensions::BadAnswer::BadParameter.as_str()),
    }
}

/// Connect one address: no Nagle (frames are written whole and flushed
/// once per burst, Nagle would only add latency), and the handshake's last
/// ACK carried by our upgrade request (see [`conn::piggyback_acks`]).
async fn dial_tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    let _ = socket.set_nodelay(true);
    conn::piggyback_acks(&socket);
    socket.connect(addr).await
}

/// Connect to the first of the upstream's addresses that accepts
/// ([`Resolver`] knows them and which one worked last).
async fn connect(resolver: &Arc<Resolver>) -> Result<TcpStream, UpstreamError> {
    let candidates = resolver
        .candidates()
        .await
        .map_err(|source| UpstreamError::Dns {
            host: resolver.host().to_string(),
            source,
        })?;
    // The error is built only when every address failed: on the happy path
    // (every session) nothing is formatted or allocated here.
    let mut last = None;
    for (i, addr) in candidates.iter().enumerate() {
        match dial_tcp(addr).await {
            Ok(tcp) => {
                if i > 0 {
                    resolver.connected(addr);
                }
                return Ok(tcp);
            }
            Err(e) => last = Some((addr, e)),
        }
    }
    resolver.all_failed();
    let (addr, source) = match last {
        Some((addr, e)) => (addr.to_string(), e),
        None => (
            resolver.host().to_string(),
            io::Error::new(io::ErrorKind::NotFound, "no address"),
        ),
    };
    Err(UpstreamError::Unreachable { addr, source })
}

/// Headers never forwarded: hop-by-hop (RFC 9110 §7.6.1) and the ones the
/// proxy sets itself for its own handshake with the upstream, lowercase.
const NOT_FORWARDED: &[&[u8]] = &[
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"host",
    b"content-length",
    b"sec-websocket-key",
    b"sec-websocket-version",
    b"sec-websocket-accept",
    // Written by the proxy itself: only the permessage-deflate offers go
    // on, and only in passthrough mode (`write_extension_offers`).
    b"sec-websocket-extensions",
];

/// Whether the client's field `name` goes upstream: not hop-by-hop, not
/// named in its `Connection` (which makes it hop-by-hop too), and not an
/// `X-Forwarded-*` the proxy writes itself.
fn forwarded(client: &Fields, name: &[u8]) -> bool {
    const XF: &[u8] = b"x-forwarded-";
    !(NOT_FORWARDED.iter().any(|n| n.eq_ignore_ascii_case(name))
        || name
            .get(..XF.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(XF))
        || client
            .get_all("connection")
            .any(|v| head::list_has(v, name)))
}

/// Write the header lines to send upstream for a client request into
/// `out`: end-to-end headers (`Sec-WebSocket-Protocol`, `Cookie`,
/// `Authorization`, `Origin`, `User-Agent`, …) as they came, in their
/// order, hop-by-hop ones dropped, then `X-Forwarded-For` and
/// `X-Forwarded-Proto` as [`Origin`] writes them (the client's address
/// last) and `X-Forwarded-Host` (set). A client's own `Forwarded` goes
/// along only from a trusted proxy: from anyone else it could name any
/// address. The fields are written straight from the request's bytes:
/// nothing is copied into a map first.
pub fn forward_headers(client: &Fields, origin: &Origin, out: &mut Vec<u8>) {
    for (name, value) in client.iter() {
        if forwarded(client, name)
            && (origin.via_trusted || !name.eq_ignore_ascii_case(b"forwarded"))
        {
            push_field(out, name, value);
        }
    }
    origin.write_headers(client, out);
    if let Some(host) = client.get("host") {
        push_field(out, b"x-forwarded-host", host);
    }
}

/// Append one header line.
fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests;
