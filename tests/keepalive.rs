//! Keepalive on both legs: dead peers found within interval + timeout, the
//! proxy's pings consumed, the peers' own pings still answered, RTT observed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::time::Duration;

use tokio::time::Instant;

use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio_tungstenite::tungstenite::Message;
use wspulse::protocol::opcode::{CLOSE, TEXT};

const INTERVAL: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_millis(300);
/// Scheduling slack on a shared, noisy 2-core machine.
const MARGIN: Duration = Duration::from_millis(700);

async fn keepalive_proxy(echo: &EchoServer) -> Proxy {
    let mut s = settings(&echo.url());
    s.keepalive.interval = INTERVAL;
    s.keepalive.timeout = TIMEOUT;
    start_proxy(s).await
}

/// A client that completed the handshake and then reads nothing is found
/// dead within interval + timeout, counted 1006/client/ping_timeout, and
/// the upstream gets Close 1001.
#[tokio::test]
async fn silent_client_is_detected_within_interval_plus_timeout() {
    let echo = EchoServer::start().await.unwrap();
    let proxy = keepalive_proxy(&echo).await;
    let started = Instant::now();
    let _silent = proxy.raw("/").await; // never read again
    proxy.wait_ended(1).await;
    let took = started.elapsed();
    eprintln!(
        "client leg: interval+timeout = {:?}, detected after {took:?}",
        INTERVAL + TIMEOUT
    );
    assert!(
        took >= INTERVAL + TIMEOUT - Duration::from_millis(50),
        "too early: {took:?}"
    );
    assert!(took <= INTERVAL + TIMEOUT + MARGIN, "too late: {took:?}");
    let text = proxy.scrape().await;
    assert_eq!(closed(&text, "1006", "client", "ping_timeout"), 1.0);
    assert!(echo.wait_until(LIMIT, |e| !e.closes().is_empty()).await);
    assert_eq!(echo.closes()[0].as_ref().map(|c| c.0), Some(1001));
    proxy.finish().await;
}

/// An upstream that stops reading is found dead the same way; the client
/// (which keeps answering pings) gets Close 1014.
#[tokio::test]
async fn silent_upstream_is_detected_and_client_gets_1014() {
    let echo = EchoServer::start().await.unwrap();
    let proxy = keepalive_proxy(&echo).await;
    let mut c = proxy.raw("/").await;
    c.answer_pings(true);
    c.send(true, TEXT, b"silent").await.unwrap();
    let started = Instant::now();
    let close = c.expect_close().await.expect("no Close");
    let took = started.elapsed();
    eprintln!(
        "upstream leg: interval+timeout = {:?}, detected after {took:?}",
        INTERVAL + TIMEOUT
    );
    assert_eq!(close.close_code(), Some(1014));
    // The first ping goes out one interval after the session started, so
    // detection is at most interval + timeout after "silent" was sent.
    assert!(took <= INTERVAL + TIMEOUT + MARGIN, "too late: {took:?}");
    // Complete the closing handshake, as a real client would.
    c.send(true, CLOSE, &close.payload).await.unwrap();
    c.expect_end().await.unwrap();
    proxy.wait_ended(1).await;
    let text = proxy.scrape().await;
    assert_eq!(closed(&text, "1006", "upstream", "ping_timeout"), 1.0);
    proxy.finish().await;
}

/// The proxy's own pings are answered by each peer and their pongs are
/// consumed: the client never receives a Pong it did not ask for, the
/// upstream never receives one either. A client's own ping gets its pong.
/// Each answered proxy ping adds one RTT observation for that leg.
#[tokio::test]
async fn proxy_pongs_are_consumed_and_peer_pings_answered() {
    let echo = EchoServer::start().await.unwrap();
    let mut s = settings(&echo.url());
    s.keepalive.interval = Duration::from_millis(100);
    s.keepalive.timeout = Duration::from_millis(100);
    let proxy = start_proxy(s).await;
    let mut ws = proxy.connect("/").await;
    let (mut pings, mut pongs) = (0, 0);
    // Keep the session busy until the client has answered 5 proxy pings.
    let mut i = 0;
    while pings < 5 {
        i += 1;
        send_text(&mut ws, &format!("m{i}")).await;
        loop {
            match next(&mut ws).await.expect("session ended") {
                Message::Ping(_) => pings += 1,
                Message::Pong(_) => pongs += 1,
                Message::Text(t) => {
                    assert_eq!(t.as_str(), format!("m{i}"));
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(pongs, 0, "a proxy pong leaked to the client");
    // The client's own ping is answered (by the proxy, hop by hop).
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    loop {
        match next(&mut ws).await.expect("session ended") {
            Message::Pong(p) => {
                assert_eq!(&p[..], b"are you there");
                break;
            }
            Message::Ping(_) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    let text = proxy.scrape().await;
    let rtt_client = metric(
        &text,
        "wspulse_ping_rtt_seconds_count",
        &[("side", "client")],
    );
    let rtt_upstream = metric(
        &text,
        "wspulse_ping_rtt_seconds_count",
        &[("side", "upstream")],
    );
    // One observation per answered ping; the newest pong may still be in flight.
    assert!(
        rtt_client == pings as f64 || rtt_client == pings as f64 - 1.0,
        "rtt {rtt_client} vs {pings} pings"
    );
    assert!(rtt_upstream >= 4.0, "upstream rtt count {rtt_upstream}");
    assert_eq!(echo.pongs(), 0, "a proxy pong leaked to the upstream");
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    proxy.wait_ended(1).await;
    proxy.finish().await;
}

/// `keepalive.interval = "0s"` disables keepalive: a silent client is not
/// pinged and stays connected.
#[tokio::test]
async fn zero_interval_disables_keepalive() {
    let echo = EchoServer::start().await.unwrap();
    let mut s = settings(&echo.url());
    s.keepalive.interval = Duration::ZERO;
    let proxy = start_proxy(s).await;
    let mut c = proxy.raw("/").await;
    // If keepalive were on, the proxy would ping within the window below.
    let idle = tokio::time::timeout(Duration::from_millis(500), c.read_frame()).await;
    assert!(idle.is_err(), "got a frame with keepalive off: {idle:?}");
    let text = proxy.scrape().await;
    assert_eq!(metric(&text, "wspulse_connections_active", &[]), 1.0);
    c.send(true, CLOSE, &close_payload(1000, "")).await.unwrap();
    proxy.wait_ended(1).await;
    proxy.finish().await;
}
