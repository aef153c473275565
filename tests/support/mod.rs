//! Shared test harness: a proxy on 127.0.0.1:0 in front of an upstream,
//! a real `/metrics` scrape, and parsers for what it says.
#![allow(dead_code)]

pub mod raw;

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wspulse::config::Settings;
use wspulse::metrics::Metrics;
use wspulse::server::Server;
use wspulse::shutdown::DrainReport;

pub use wspulse::echo::EchoServer;

/// Every wait in the tests is bounded by this.
pub const LIMIT: Duration = Duration::from_secs(10);

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A running proxy.
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
    pub metrics: Metrics,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<DrainReport>>,
}

/// Settings for tests: both listeners on port 0, the given upstream.
pub fn settings(upstream_url: &str) -> Settings {
    let mut s = Settings::default();
    s.listen.addr = "127.0.0.1:0".parse().unwrap();
    s.admin.addr = "127.0.0.1:0".parse().unwrap();
    s.upstream.url = upstream_url.parse().unwrap();
    s
}

/// Start a proxy with `settings`.
pub async fn start_proxy(settings: Settings) -> Proxy {
    let routes: Vec<String> = settings.routes.iter().map(|r| r.name.clone()).collect();
    let metrics = Metrics::standalone(&routes, settings.admin.recent_closures).unwrap();
    let server = Server::bind(settings, metrics.clone()).await.unwrap();
    let (addr, admin) = (server.local_addr(), server.admin_addr());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    Proxy {
        addr,
        admin,
        metrics,
        stop: Some(tx),
        task: Some(task),
    }
}

/// An echo upstream and a default proxy in front of it.
pub async fn echo_and_proxy() -> (EchoServer, Proxy) {
    let echo = EchoServer::start().await.unwrap();
    let proxy = start_proxy(settings(&echo.url())).await;
    (echo, proxy)
}

impl Proxy {
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Connect a tokio-tungstenite client.
    pub async fn connect(&self, path: &str) -> Client {
        let (ws, _) = tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(self.url(path)))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        ws
    }

    /// `GET path` on the admin address; returns (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path).await
    }

    /// The `/metrics` text, as a user's scraper sees it.
    pub async fn scrape(&self) -> String {
        let (status, body) = self.admin_get("/metrics").await;
        assert_eq!(status, 200);
        body
    }

    /// Wait until `n` sessions have ended.
    pub async fn wait_ended(&self, n: u64) {
        assert!(
            self.metrics.wait_ended(n, LIMIT).await,
            "{n} sessions did not end in time"
        );
    }

    /// Trigger shutdown and wait for the drain to finish.
    pub async fn stop(mut self) -> DrainReport {
        self.trigger_stop();
        self.join().await
    }

    /// Fire the shutdown future without waiting.
    pub fn trigger_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Wait for `run` to return.
    pub async fn join(&mut self) -> DrainReport {
        let task = self.task.take().expect("joined twice");
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("serve did not return")
            .expect("serve panicked")
    }

    /// Assert `opened == sum(closed) + active` on a scrape, then stop.
    pub async fn finish(self) {
        let text = self.scrape().await;
        assert_invariant(&text);
        self.stop().await;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Minimal HTTP/1.1 GET over a raw socket.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        parse_response(&buf)
    };
    tokio::time::timeout(LIMIT, fut)
        .await
        .expect("admin request timed out")
}

/// Send raw bytes as an HTTP request to `addr`; returns (status, headers+body text).
pub async fn raw_request(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String) {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        parse_response(&buf)
    };
    tokio::time::timeout(LIMIT, fut)
        .await
        .expect("request timed out")
}

fn parse_response(buf: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    // Undo chunked encoding if present (hyper uses it for bodies of unknown size).
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        wspulse::explain::dechunk(&body)
    } else {
        body
    };
    (status, body)
}

/// Parse the Prometheus text format: (name, labels) → value.
pub fn parse_metrics(text: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let Some((head, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or(f64::NAN);
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => {
                let rest = rest.trim_end_matches('}');
                let labels = rest
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .filter_map(|p| p.split_once("=\""))
                    .map(|(k, v)| (k.to_string(), v.trim_end_matches('"').to_string()))
                    .collect();
                (n.to_string(), labels)
            }
            None => (head.to_string(), HashMap::new()),
        };
        out.push((name, labels, value));
    }
    out
}

/// Sum of `name` over series whose labels include all of `want`.
pub fn metric(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    parse_metrics(text)
        .into_iter()
        .filter(|(n, l, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

/// `wspulse_connections_closed_total{code,side,cause}` summed over routes.
pub fn closed(text: &str, code: &str, side: &str, cause: &str) -> f64 {
    metric(
        text,
        "wspulse_connections_closed_total",
        &[("code", code), ("side", side), ("cause", cause)],
    )
}

/// The invariant users alert on: opened == sum(closed) + active.
pub fn assert_invariant(text: &str) {
    let opened = metric(text, "wspulse_connections_opened_total", &[]);
    let closed = metric(text, "wspulse_connections_closed_total", &[]);
    let active = metric(text, "wspulse_connections_active", &[]);
    assert_eq!(
        opened,
        closed + active,
        "invariant broken: opened {opened} != closed {closed} + active {active}"
    );
}

/// Read the next message, bounded in time. `None` when the stream ended.
pub async fn next(ws: &mut Client) -> Option<Message> {
    match tokio::time::timeout(LIMIT, ws.next())
        .await
        .expect("no message in time")
    {
        Some(Ok(m)) => Some(m),
        Some(Err(_)) | None => None,
    }
}

/// Read until a Close frame (skipping data/pings); returns its (code, reason).
pub async fn expect_close(ws: &mut Client) -> (u16, String) {
    loop {
        match next(ws).await {
            Some(Message::Close(Some(CloseFrame { code, reason }))) => {
                return (u16::from(code), reason.to_string());
            }
            Some(Message::Close(None)) => return (1005, String::new()),
            Some(_) => continue,
            None => panic!("stream ended without a Close frame"),
        }
    }
}

/// Send a text message.
pub async fn send_text(ws: &mut Client, text: &str) {
    ws.send(Message::text(text)).await.expect("send failed");
}

/// A port on 127.0.0.1 with nothing listening.
pub async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}
