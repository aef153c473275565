//! Shared test harness around the lib's kit: a proxy running in-process
//! ([`Running`], on 127.0.0.1 ports the OS picks) in front of an upstream
//! from [`wspulse::kit`], its `/metrics` scraped over HTTP as a user's
//! scraper does and read with the lib's parser ([`prom`]).
//!
//! Raw-frame peers come straight from the kit ([`RawPeer`],
//! [`RawUpstream`], [`exchange`]); tokio-tungstenite is the well-behaved
//! client. Every wait is bounded by [`LIMIT`].
// Each test crate uses a part of the harness.
#![allow(dead_code, unused_imports)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wspulse::config::Settings;
use wspulse::explain::prom;
use wspulse::metrics::{Metrics, names};
use wspulse::server::Running;
use wspulse::shutdown::DrainReport;

pub use wspulse::kit::EchoServer;
pub use wspulse::kit::raw::{
    CLIENT_KEY, CLIENT_MASK, End, RawFrame, RawPeer, RawUpstream, exchange, upgrade_request,
};
pub use wspulse::protocol::{close_payload, encode_frame};

/// Every wait in the tests is bounded by this.
pub const LIMIT: Duration = Duration::from_secs(10);

/// A tokio-tungstenite client connection.
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A running proxy: the kit's [`Running`], with its addresses at hand.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The admin address.
    pub admin: SocketAddr,
    /// Its registry.
    pub metrics: Metrics,
    /// `None` once joined.
    running: Option<Running>,
}

/// Settings for tests: the defaults, with the given upstream.
pub fn settings(upstream_url: &str) -> Settings {
    let mut s = Settings::default();
    s.upstream.url = upstream_url.parse().unwrap();
    s
}

/// Start a proxy with `settings` (both listeners on 127.0.0.1:0).
pub async fn start_proxy(settings: Settings) -> Proxy {
    let running = Running::start(settings).await.unwrap();
    Proxy {
        addr: running.addr(),
        admin: running.admin_addr(),
        metrics: running.metrics().clone(),
        running: Some(running),
    }
}

/// An echo upstream and a default proxy in front of it.
pub async fn echo_and_proxy() -> (EchoServer, Proxy) {
    let echo = EchoServer::start().await.unwrap();
    let proxy = start_proxy(settings(&echo.url())).await;
    (echo, proxy)
}

impl Proxy {
    /// `ws://addr/path`.
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

    /// Connect a raw-frame client; panics unless the answer is 101.
    pub async fn raw(&self, path: &str) -> RawPeer {
        RawPeer::connect(self.addr, path).await.unwrap()
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

    /// Reload the TLS certificate pair, as SIGHUP does.
    pub fn reload_tls(&self) {
        if let Some(running) = &self.running {
            running.reload_tls();
        }
    }

    /// Start the drain without waiting.
    pub fn trigger_stop(&self) {
        if let Some(running) = &self.running {
            running.stop();
        }
    }

    /// Wait for the proxy to return; its panics are raised here.
    pub async fn join(&mut self) -> DrainReport {
        let running = self.running.take().expect("joined twice");
        tokio::time::timeout(3 * LIMIT, running.join())
            .await
            .expect("the proxy did not return")
    }

    /// Assert `opened == sum(closed) + active` on a scrape, then stop.
    pub async fn finish(self) {
        let text = self.scrape().await;
        assert_invariant(&text);
        self.stop().await;
    }
}

/// `GET path` from `addr` over HTTP/1.1 (the lib's admin client); returns
/// (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let answer = wspulse::explain::fetch::get(&addr.to_string(), path, LIMIT)
        .await
        .unwrap();
    (answer.status.as_u16(), answer.body)
}

/// Sum of `name` over series whose labels include all of `want`.
pub fn metric(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    prom::sum(&prom::parse(text), name, want)
}

/// `wspulse_connections_closed_total{code,side,cause}` summed over routes.
pub fn closed(text: &str, code: &str, side: &str, cause: &str) -> f64 {
    metric(
        text,
        names::CLOSED,
        &[("code", code), ("side", side), ("cause", cause)],
    )
}

/// A drain's counts in a scrape: `n` sessions closed `1001/proxy/shutdown`,
/// all of them within the deadline (`drain_sessions_total{outcome="closed"}`).
pub fn assert_drained(text: &str, n: f64) {
    assert_eq!(closed(text, "1001", "proxy", "shutdown"), n);
    assert_eq!(
        metric(text, names::DRAIN, &[("outcome", "closed")]),
        n,
        "drained in time"
    );
}

/// A raw client of the proxy at `addr` whose first message came back.
pub async fn raw_echoed(addr: SocketAddr) -> RawPeer {
    let mut c = RawPeer::connect(addr, "/").await.unwrap();
    c.send(true, wspulse::protocol::opcode::TEXT, b"hi")
        .await
        .unwrap();
    assert_eq!(c.read_frame().await.unwrap().payload, b"hi");
    c
}

/// Read the drain's Close (1001) and answer it, as a well-behaved client.
pub async fn answer_drain(c: &mut RawPeer) {
    let close = c.expect_close().await.unwrap();
    assert_eq!(close.close_code(), Some(1001));
    c.send(true, wspulse::protocol::opcode::CLOSE, &close.payload)
        .await
        .unwrap();
}

/// The invariant users alert on: opened == sum(closed) + active.
pub fn assert_invariant(text: &str) {
    let opened = metric(text, names::OPENED, &[]);
    let closed = metric(text, names::CLOSED, &[]);
    let active = metric(text, names::ACTIVE, &[]);
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
