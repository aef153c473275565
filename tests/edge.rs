//! The edge listener: PROXY protocol v1/v2 over real TCP, trusted and
//! untrusted forwarding headers, TLS with a CA made here (rcgen) and a
//! tokio-rustls client, certificate reloads by file swap and on request,
//! and the refusals each is counted by.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use wspulse::metrics::names;

// === helpers ===

/// A connection from `source` (any 127/8 address) to `addr`.
async fn connect_from(source: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Upgrade `tcp` (already through any PROXY header) and echo one message.
async fn echo_once<S>(stream: S, url: &str) -> WebSocketStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut ws, _) = tokio::time::timeout(LIMIT, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("upgrade in time")
        .expect("upgrade");
    ws.send(Message::text("hello")).await.unwrap();
    let got = tokio::time::timeout(LIMIT, ws.next()).await.unwrap();
    assert_eq!(got.unwrap().unwrap(), Message::text("hello"));
    ws
}

/// Close a session and wait until the proxy has recorded it.
async fn close<S>(mut ws: WebSocketStream<S>, proxy: &Proxy, ended: u64)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.close(None).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(LIMIT, ws.next()).await {}
    proxy.wait_ended(ended).await;
}

/// `client_addr` of the newest `/closures` record.
async fn last_client_addr(proxy: &Proxy) -> String {
    let (status, body) = proxy.admin_get("/closures?limit=1").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let records = v.get("closures").unwrap_or(&v);
    records[0]["client_addr"].as_str().unwrap_or("").to_string()
}

/// Wait until `/metrics` satisfies `cond`, within [`LIMIT`].
async fn wait_metrics(proxy: &Proxy, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let text = proxy.scrape().await;
        if cond(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {LIMIT:?}\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn v2_header(src: [u8; 4], sport: u16, local: bool) -> Vec<u8> {
    let mut h = wspulse::proxy_header::V2_SIGNATURE.to_vec();
    h.push(if local { 0x20 } else { 0x21 });
    h.push(0x11);
    // 12 bytes of addresses and a 7-byte TLV the proxy must skip.
    h.extend_from_slice(&19u16.to_be_bytes());
    h.extend_from_slice(&src);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&8080u16.to_be_bytes());
    h.extend_from_slice(&[0x04, 0x00, 0x04, b'n', b'l', b'b', b'!']);
    h
}

// === PROXY protocol ===

#[tokio::test]
async fn proxy_protocol_v1_and_v2_name_the_client() {
    let echo = EchoServer::start().await.unwrap();
    let mut s = settings(&echo.url());
    s.listen.proxy_protocol = true;
    let proxy = start_proxy(s).await;
    let cases: [(Vec<u8>, &str, &str); 3] = [
        (
            b"PROXY TCP4 127.0.0.7 127.0.0.1 40001 8080\r\n".to_vec(),
            "127.0.0.7",
            "127.0.0.7:40001",
        ),
        (
            v2_header([127, 0, 0, 7], 40002, false),
            "127.0.0.7",
            "127.0.0.7:40002",
        ),
        // LOCAL (a balancer's health check): the TCP peer is the address.
        (v2_header([9, 9, 9, 9], 1, true), "127.0.0.1", "127.0.0.1:"),
    ];
    for (i, (header, xff, closure_addr)) in cases.into_iter().enumerate() {
        let tcp = TcpStream::connect(proxy.addr).await.unwrap();
        // The header and the request in one write: the edge must leave the
        // request's bytes in the socket for the HTTP layer.
        let request = upgrade_request(proxy.addr, "/pp", "");
        let tcp = handshake_raw(tcp, &header, &request).await;
        let mut ws = WebSocketStream::from_raw_socket(tcp, Role::Client, None).await;
        ws.send(Message::text("x")).await.unwrap();
        assert_eq!(next_msg(&mut ws).await, Message::text("x"));
        close(ws, &proxy, i as u64 + 1).await;
        let seen = echo.requests();
        assert_eq!(seen[i].header("x-forwarded-for"), Some(xff), "case {i}");
        let addr = last_client_addr(&proxy).await;
        assert!(addr.starts_with(closure_addr), "case {i}: {addr}");
    }
    proxy.finish().await;
}

async fn next_msg<S>(ws: &mut WebSocketStream<S>) -> Message
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::time::timeout(LIMIT, ws.next())
        .await
        .expect("a message in time")
        .expect("stream open")
        .expect("a message")
}

#[tokio::test]
async fn without_a_valid_proxy_header_no_101_and_counted_400() {
    let echo = EchoServer::start().await.unwrap();
    let mut s = settings(&echo.url());
    s.listen.proxy_protocol = true;
    s.limits.handshake_timeout = std::time::Duration::from_millis(300);
    let proxy = start_proxy(s).await;
    let plain = upgrade_request(proxy.addr, "/", "");
    for bad in [
        plain.as_bytes().to_vec(),
        b"PROXY TCP4 127.0.0.7 127.0.0.1 99999 80\r\n".to_vec(),
        b"PROXY TCP9 x\r\n".to_vec(),
    ] {
        let (status, answer) = exchange(proxy.addr, &bad).await.unwrap();
        assert_eq!(
            (status, answer.as_str()),
            (None, ""),
            "closed without an answer"
        );
    }
    // A header that trickles and stops: cut at the deadline, counted 408.
    let (status, answer) = exchange(proxy.addr, b"PROXY TCP4 127.0").await.unwrap();
    assert_eq!((status, answer.as_str()), (None, ""));
    let text = proxy.scrape().await;
    assert_eq!(metric(&text, names::REJECTIONS, &[("status", "400")]), 3.0);
    assert_eq!(metric(&text, names::REJECTIONS, &[("status", "408")]), 1.0);
    assert_eq!(metric(&text, names::OPENED, &[]), 0.0);
    assert!(echo.requests().is_empty(), "the upstream is never dialed");
    proxy.finish().await;
}

// === trusted proxies ===

#[tokio::test]
async fn forwarding_headers_are_believed_only_from_trusted_proxies() {
    let echo = EchoServer::start().await.unwrap();
    let mut s = settings(&echo.url());
    s.listen.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let proxy = start_proxy(s).await;
    let spoof = "X-Forwarded-For: 6.6.6.6, 203.0.113.5\r\nX-Forwarded-Proto: https\r\n";
    // From 127.0.0.1 (a trusted proxy): the rightmost untrusted entry.
    // From 127.0.0.7 (anyone else): the headers are claims, appended to.
    let cases = [
        (
            [127, 0, 0, 1],
            "6.6.6.6, 203.0.113.5",
            "https",
            "203.0.113.5:0",
        ),
        (
            [127, 0, 0, 7],
            "6.6.6.6, 203.0.113.5, 127.0.0.7",
            "http",
            "127.0.0.7:",
        ),
    ];
    for (i, (source, xff, proto, client)) in cases.into_iter().enumerate() {
        let tcp = connect_from(source, proxy.addr).await;
        let request = upgrade_request(proxy.addr, "/fwd", spoof);
        let tcp = handshake_raw(tcp, b"", &request).await;
        let ws = WebSocketStream::from_raw_socket(tcp, Role::Client, None).await;
        close(ws, &proxy, i as u64 + 1).await;
        let seen = &echo.requests()[i];
        assert_eq!(seen.header("x-forwarded-for"), Some(xff), "case {i}");
        assert_eq!(seen.header("x-forwarded-proto"), Some(proto), "case {i}");
        let addr = last_client_addr(&proxy).await;
        assert!(addr.starts_with(client), "case {i}: {addr}");
    }
    proxy.finish().await;
}

/// Send `prefix` and a hand-written upgrade on `tcp` in one write, and
/// read the 101.
async fn handshake_raw(mut tcp: TcpStream, prefix: &[u8], request: &str) -> TcpStream {
    let mut first = prefix.to_vec();
    first.extend_from_slice(request.as_bytes());
    tcp.write_all(&first).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(LIMIT, tcp.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed during the handshake: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tcp
}

// === TLS ===

/// A CA made for the test and the leaf certificates it signs.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    dir: PathBuf,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: a client that trusts another test CA must not
        // find that one as this leaf's issuer.
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("wspulse test CA {name}"));
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        let dir = std::env::temp_dir().join(format!(
            "wspulse-edge-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TestCa {
            issuer: Issuer::new(params, key),
            pem,
            dir,
        }
    }

    /// A leaf for `localhost` (ECDSA P-256): its DER, cert PEM, key PEM.
    fn leaf(&self) -> (Vec<u8>, String, String) {
        let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.der().to_vec(), cert.pem(), key.serialize_pem())
    }

    /// Write `text` to `name` in the test's directory by renaming a
    /// temporary file over it, as a Kubernetes Secret update does.
    fn install(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    /// Settings for a TLS proxy in front of `upstream`, serving a new leaf
    /// installed as `tls.crt` and `tls.key`; returns its DER too.
    fn settings(&self, upstream: &str) -> (wspulse::config::Settings, Vec<u8>) {
        let (der, cert, key) = self.leaf();
        let mut s = settings(upstream);
        s.listen.tls.cert_file = Some(self.install("tls.crt", &cert));
        s.listen.tls.key_file = Some(self.install("tls.key", &key));
        (s, der)
    }

    fn connector(&self) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

use rustls_pki_types::pem::PemObject;

type Wss = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// A wss:// session through the proxy: the session and the certificate
/// the proxy presented.
async fn wss(ca: &TestCa, addr: SocketAddr, path: &str) -> (Wss, Vec<u8>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(LIMIT, ca.connector().connect(name, tcp))
        .await
        .unwrap()
        .expect("TLS handshake");
    let (_, conn) = tls.get_ref();
    assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let served = conn.peer_certificates().unwrap()[0].to_vec();
    let ws = echo_once(tls, &format!("wss://localhost{path}")).await;
    (ws, served)
}

#[tokio::test]
async fn wss_clients_are_served_with_the_configured_certificate() {
    let echo = EchoServer::start().await.unwrap();
    let ca = TestCa::new("serve");
    let (s, der) = ca.settings(&echo.url());
    let cert_file = s.listen.tls.cert_file.clone().unwrap();
    let proxy = start_proxy(s).await;
    let (ws, served) = wss(&ca, proxy.addr, "/secure").await;
    assert_eq!(served, der);
    close(ws, &proxy, 1).await;
    let seen = &echo.requests()[0];
    assert_eq!(seen.uri, "/secure");
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    let text = proxy.scrape().await;
    let pair = wspulse::certs::load_chain(&cert_file).unwrap();
    assert_eq!(metric(&text, names::TLS_EXPIRY, &[]), pair.1 as f64);
    assert_eq!(metric(&text, names::TLS_RELOADS, &[]), 0.0);
    proxy.finish().await;
}

#[tokio::test]
async fn a_plain_listener_exposes_no_tls_metrics() {
    let (_echo, proxy) = echo_and_proxy().await;
    let text = proxy.scrape().await;
    assert!(!text.contains(names::TLS_EXPIRY), "{text}");
    proxy.finish().await;
}

#[tokio::test]
async fn failed_tls_handshakes_are_refused_and_counted() {
    let echo = EchoServer::start().await.unwrap();
    let ca = TestCa::new("refuse");
    let (mut s, _) = ca.settings(&echo.url());
    s.limits.handshake_timeout = std::time::Duration::from_millis(300);
    let proxy = start_proxy(s).await;
    // Plain HTTP on the TLS port: a 400 that says so.
    let request = upgrade_request(proxy.addr, "/", "");
    let (status, answer) = exchange(proxy.addr, request.as_bytes()).await.unwrap();
    assert_eq!(status, Some(400), "{answer}");
    assert!(answer.contains("this port speaks TLS"), "{answer}");
    // A client that does not trust the certificate: its alert is counted.
    let other = TestCa::new("untrusted");
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    assert!(other.connector().connect(name, tcp).await.is_err());
    // A client that says nothing: cut at the handshake timeout.
    let (status, _) = exchange(proxy.addr, b"").await.unwrap();
    assert_eq!(status, None);
    // A ClientHello cut short, then silence.
    let (status, _) = exchange(proxy.addr, b"\x16\x03\x01\x00\x50\x01")
        .await
        .unwrap();
    assert_eq!(status, None);
    let text = wait_metrics(&proxy, "four failures", |t| {
        metric(t, names::TLS_HANDSHAKE_FAILURES, &[]) >= 4.0
    })
    .await;
    let failures = |reason| metric(&text, names::TLS_HANDSHAKE_FAILURES, &[("reason", reason)]);
    assert_eq!(failures("plaintext"), 1.0);
    assert_eq!(failures("bad_certificate"), 1.0);
    assert_eq!(failures("timeout"), 2.0);
    assert_eq!(failures("other") + failures("no_shared_cipher"), 0.0);
    assert_eq!(metric(&text, names::OPENED, &[]), 0.0);
    proxy.finish().await;
}

#[tokio::test]
async fn a_swapped_certificate_serves_new_sessions_while_old_ones_relay() {
    let echo = EchoServer::start().await.unwrap();
    let ca = TestCa::new("swap");
    let (mut s, first) = ca.settings(&echo.url());
    s.listen.tls.reload_interval = std::time::Duration::from_millis(50);
    let proxy = start_proxy(s).await;
    let (mut old, served) = wss(&ca, proxy.addr, "/old").await;
    assert_eq!(served, first);

    // Swap both files on disk (rename over): picked up by the poll.
    let (second, cert, key) = ca.leaf();
    ca.install("tls.key", &key);
    ca.install("tls.crt", &cert);
    // A key installed before its certificate may be tried alone (an
    // error, counted); the only pair that loads is the new one.
    wait_metrics(&proxy, "reload after the swap", |t| {
        metric(t, names::TLS_RELOADS, &[("outcome", "ok")]) >= 1.0
    })
    .await;
    let (new, served) = wss(&ca, proxy.addr, "/new").await;
    assert_eq!(served, second, "new sessions see the new certificate");
    old.send(Message::text("still here")).await.unwrap();
    assert_eq!(next_msg(&mut old).await, Message::text("still here"));

    // A broken pair: the old one is still served, the error counted.
    let errors_before = metric(
        &proxy.scrape().await,
        names::TLS_RELOADS,
        &[("outcome", "error")],
    );
    ca.install(
        "tls.key",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    wait_metrics(&proxy, "the broken key counted", |t| {
        metric(t, names::TLS_RELOADS, &[("outcome", "error")]) > errors_before
    })
    .await;
    let (still, served) = wss(&ca, proxy.addr, "/still").await;
    assert_eq!(served, second, "the previous pair is still served");

    old.send(Message::text("after two reloads")).await.unwrap();
    assert_eq!(next_msg(&mut old).await, Message::text("after two reloads"));
    close(old, &proxy, 1).await;
    close(new, &proxy, 2).await;
    close(still, &proxy, 3).await;
    proxy.finish().await;
}

/// With polling off, a reload comes only when asked for (what SIGHUP does).
#[tokio::test]
async fn a_reload_on_request_serves_the_files_as_they_are_now() {
    let echo = EchoServer::start().await.unwrap();
    let ca = TestCa::new("request");
    let (mut s, first) = ca.settings(&echo.url());
    s.listen.tls.reload_interval = std::time::Duration::ZERO;
    let proxy = start_proxy(s).await;
    let (second, cert, key) = ca.leaf();
    std::fs::write(ca.dir.join("tls.crt"), &cert).unwrap();
    std::fs::write(ca.dir.join("tls.key"), &key).unwrap();
    let (ws, served) = wss(&ca, proxy.addr, "/before").await;
    assert_eq!(served, first, "no reload without a request");
    close(ws, &proxy, 1).await;
    proxy.reload_tls();
    let text = wait_metrics(&proxy, "reload on request", |t| {
        metric(t, names::TLS_RELOADS, &[("outcome", "ok")]) >= 1.0
    })
    .await;
    assert_eq!(
        metric(&text, names::TLS_RELOADS, &[("outcome", "error")]),
        0.0
    );
    let (ws, served) = wss(&ca, proxy.addr, "/after").await;
    assert_eq!(served, second);
    let expiry = wspulse::certs::load_chain(&ca.dir.join("tls.crt"))
        .unwrap()
        .1;
    assert_eq!(metric(&text, names::TLS_EXPIRY, &[]), expiry as f64);
    close(ws, &proxy, 2).await;
    proxy.finish().await;
}
