//! `wss://` upstreams: TLS verified against `upstream.ca_file`, failures
//! counted with reason `tls`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::sync::Arc;

use futures_util::StreamExt;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// A TLS terminator on 127.0.0.1:0 in front of `backend`, with a fresh
/// self-signed certificate for "localhost". Returns its port and the PEM.
async fn tls_front(backend: std::net::SocketAddr) -> (u16, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (port, ck.cert.pem())
}

fn write_pem(pem: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!(
        "wspulse-tls-{}-{}.pem",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::write(&p, pem).unwrap();
    p
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// With the upstream's CA in `ca_file`, a wss:// upstream relays like ws://.
#[tokio::test]
async fn wss_upstream_relays_with_trusted_ca() {
    let echo = EchoServer::start().await.unwrap();
    let (port, pem) = tls_front(echo.addr()).await;
    let mut s = settings(&format!("wss://localhost:{port}"));
    s.upstream.ca_file = Some(write_pem(&pem));
    let proxy = start_proxy(s).await;
    let mut ws = proxy.connect("/secure").await;
    send_text(&mut ws, "over tls").await;
    assert_eq!(next(&mut ws).await, Some(Message::text("over tls")));
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    proxy.wait_ended(1).await;
    assert_eq!(echo.requests()[0].uri, "/secure");
    proxy.finish().await;
}

/// An untrusted certificate: 502 to the client, reason="tls".
#[tokio::test]
async fn untrusted_upstream_certificate_is_502_tls() {
    let echo = EchoServer::start().await.unwrap();
    let (port, _) = tls_front(echo.addr()).await;
    let mut s = settings(&format!("wss://localhost:{port}"));
    s.upstream.ca_file = None;
    let proxy = start_proxy(s).await;
    match tokio_tungstenite::connect_async(proxy.url("/")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 502),
        other => panic!("expected 502, got {:?}", other.map(|_| ())),
    }
    let text = proxy.scrape().await;
    assert_eq!(
        metric(
            &text,
            "wspulse_upstream_connect_failures_total",
            &[("reason", "tls")]
        ),
        1.0
    );
    proxy.finish().await;
}

/// A CA file that is not PEM is refused by the config check, naming the key.
#[test]
fn bad_ca_file_is_refused_by_config() {
    let p = write_pem("not a certificate\n");
    let toml = format!(
        "[upstream]\nurl = \"wss://localhost:1\"\nca_file = {:?}\n",
        p.display().to_string()
    );
    let err = wspulse::config::load_str(&toml, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("upstream.ca_file"), "{err}");
}
