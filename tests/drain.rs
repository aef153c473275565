//! Graceful drain: readiness off, Close to both legs of every session,
//! spread over a window, bounded by drain_timeout, counted.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::time::Duration;

use tokio::time::Instant;

use futures_util::StreamExt;
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// Poll `/readyz` until it says `want`, bounded.
async fn wait_readyz(proxy: &Proxy, want: u16) {
    let deadline = Instant::now() + LIMIT;
    loop {
        if proxy.admin_get("/readyz").await.0 == want {
            return;
        }
        assert!(Instant::now() < deadline, "/readyz never became {want}");
        tokio::task::yield_now().await;
    }
}

/// N open sessions, then the shutdown future fires: /readyz turns 503,
/// every client and the upstream receive 1001, everything is counted
/// 1001/proxy/shutdown and drain outcome "closed", and serve returns well
/// within drain_timeout.
#[tokio::test]
async fn drain_closes_every_session_with_1001() {
    const N: usize = 5;
    let echo = EchoServer::start().await.unwrap();
    let mut s = settings(&echo.url());
    s.shutdown.drain_timeout = Duration::from_secs(5);
    // A short spread keeps the drain open long enough to see /readyz say 503.
    s.shutdown.spread = Duration::from_millis(500);
    let mut proxy = start_proxy(s).await;
    let mut clients = Vec::new();
    for i in 0..N {
        let mut ws = proxy.connect(&format!("/s{i}")).await;
        send_text(&mut ws, "hi").await;
        assert_eq!(next(&mut ws).await, Some(Message::text("hi")));
        clients.push(ws);
    }
    let started = Instant::now();
    proxy.trigger_stop();
    wait_readyz(&proxy, 503).await;
    // New clients are refused while draining (the listener is closed).
    assert!(
        tokio_tungstenite::connect_async(proxy.url("/late"))
            .await
            .is_err()
    );
    for ws in &mut clients {
        let (code, _) = expect_close(ws).await;
        assert_eq!(code, 1001);
        while ws.next().await.is_some() {}
    }
    let report = proxy.join().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drain took {:?}",
        started.elapsed()
    );
    assert!(!report.deadline_hit);
    assert_eq!(report.sessions, N);
    let closes = echo.closes();
    assert_eq!(closes.len(), N);
    assert!(
        closes.iter().all(|c| c.as_ref().map(|c| c.0) == Some(1001)),
        "{closes:?}"
    );
    let text = proxy.metrics.encode();
    assert_eq!(closed(&text, "1001", "proxy", "shutdown"), N as f64);
    assert_eq!(
        metric(
            &text,
            "wspulse_drain_sessions_total",
            &[("outcome", "closed")]
        ),
        N as f64
    );
    assert_eq!(
        metric(&text, "wspulse_drain_sessions_total", &[("outcome", "cut")]),
        0.0
    );
    assert_invariant(&text);
}

/// A client that ignores the Close is cut at drain_timeout, counted "cut";
/// serve still returns.
#[tokio::test]
async fn peer_ignoring_close_is_cut_at_drain_timeout() {
    let echo = EchoServer::start().await.unwrap();
    let mut s = settings(&echo.url());
    s.shutdown.drain_timeout = Duration::from_millis(500);
    let mut proxy = start_proxy(s).await;
    let _deaf = proxy.raw("/").await; // never reads, never replies
    let mut polite = proxy.connect("/").await;
    let started = Instant::now();
    proxy.trigger_stop();
    assert_eq!(expect_close(&mut polite).await.0, 1001);
    while polite.next().await.is_some() {}
    let report = proxy.join().await;
    let took = started.elapsed();
    assert!(report.deadline_hit);
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let text = proxy.metrics.encode();
    assert_eq!(
        metric(&text, "wspulse_drain_sessions_total", &[("outcome", "cut")]),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "wspulse_drain_sessions_total",
            &[("outcome", "closed")]
        ),
        1.0
    );
    assert_eq!(closed(&text, "1001", "proxy", "shutdown"), 2.0);
    assert_invariant(&text);
}

/// With 20 sessions and spread = 2s, the Close frames reach the clients
/// over about two seconds, not in one burst.
#[tokio::test]
async fn spread_spaces_close_frames_over_the_window() {
    const N: usize = 20;
    let echo = EchoServer::start().await.unwrap();
    let mut s = settings(&echo.url());
    s.shutdown.spread = Duration::from_secs(2);
    s.shutdown.drain_timeout = Duration::from_secs(6);
    s.shutdown.close_code = 1012;
    let mut proxy = start_proxy(s).await;
    let mut clients = Vec::new();
    for _ in 0..N {
        clients.push(proxy.connect("/").await);
    }
    let t0 = Instant::now();
    proxy.trigger_stop();
    let arrivals = futures_util::future::join_all(clients.into_iter().map(|mut ws| async move {
        let (code, _) = expect_close(&mut ws).await;
        let at = t0.elapsed();
        while ws.next().await.is_some() {}
        (code, at)
    }))
    .await;
    proxy.join().await;
    let mut times: Vec<Duration> = arrivals.iter().map(|(_, t)| *t).collect();
    times.sort();
    assert!(
        arrivals.iter().all(|(c, _)| *c == 1012),
        "clients get shutdown.close_code"
    );
    let span = times[N - 1] - times[0];
    eprintln!(
        "close arrivals over {span:?}: first {:?}, last {:?}",
        times[0],
        times[N - 1]
    );
    assert!(
        span >= Duration::from_millis(1500),
        "burst, not spread: {span:?}"
    );
    assert!(
        times[N - 1] <= Duration::from_millis(3500),
        "spread overran: {:?}",
        times[N - 1]
    );
    // Roughly even: no more than a quarter of the closes in any 200 ms bucket.
    let mut buckets = [0usize; 20];
    for t in &times {
        buckets[(t.as_millis() / 200).min(19) as usize] += 1;
    }
    assert!(buckets.iter().all(|&b| b <= N / 4), "{buckets:?}");
    let text = proxy.metrics.encode();
    assert_eq!(closed(&text, "1012", "proxy", "shutdown"), N as f64);
    assert_invariant(&text);
}

/// The built binary, sent SIGTERM with a session open: the client gets
/// 1001, the process exits 0, and its final log line has the final counts.
#[tokio::test]
async fn sigterm_drains_the_real_binary_and_exits_0() {
    let echo = EchoServer::start().await.unwrap();
    let (listen, admin) = (free_port().await, free_port().await);
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wspulse"))
        .arg("run")
        .env("WSPULSE_LISTEN__ADDR", format!("127.0.0.1:{listen}"))
        .env("WSPULSE_ADMIN__ADDR", format!("127.0.0.1:{admin}"))
        .env("WSPULSE_UPSTREAM__URL", echo.url())
        .env("WSPULSE_LOG__FORMAT", "json")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("ws://127.0.0.1:{listen}/term");
    // Wait (bounded) until the proxy accepts.
    let deadline = Instant::now() + LIMIT;
    let mut ws = loop {
        match tokio_tungstenite::connect_async(&url).await {
            Ok((ws, _)) => break ws,
            Err(_) if Instant::now() < deadline => tokio::task::yield_now().await,
            Err(e) => panic!("proxy never came up: {e}"),
        }
    };
    send_text(&mut ws, "before").await;
    assert_eq!(next(&mut ws).await, Some(Message::text("before")));
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(expect_close(&mut ws).await.0, 1001);
    while ws.next().await.is_some() {}
    let out = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .expect("did not exit")
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let log = String::from_utf8_lossy(&out.stdout);
    let last = log
        .lines()
        .rev()
        .find(|l| l.contains("final counts"))
        .unwrap_or_else(|| panic!("{log}"));
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["opened"], 1, "{last}");
    assert_eq!(v["closed"], 1, "{last}");
    assert_eq!(v["active"], 0, "{last}");
    assert_eq!(v["shutdown_closed"], 1, "{last}");
}

async fn free_port() -> u16 {
    closed_port().await
}

/// `GET /drain` (for a native sidecar's preStop hook) drains like a signal,
/// answers once every session is gone, and leaves the process up, not
/// ready, until the real signal comes.
#[tokio::test]
async fn admin_drain_request_drains_and_waits_for_the_signal() {
    let echo = EchoServer::start().await.unwrap();
    let proxy = start_proxy(settings(&echo.url())).await;
    let mut ws = proxy.connect("/").await;
    let admin = proxy.admin;
    let drain = tokio::spawn(async move { http_get(admin, "/drain").await });
    assert_eq!(expect_close(&mut ws).await.0, 1001);
    while ws.next().await.is_some() {}
    let (status, body) = drain.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "drained\n"));
    assert_eq!(proxy.admin_get("/readyz").await.0, 503);
    assert_drained(&proxy.scrape().await, 1.0);
    // Still up until the signal; then it exits promptly.
    assert_eq!(proxy.admin_get("/healthz").await.0, 200);
    let report = proxy.stop().await;
    assert_eq!(report.sessions, 1);
}
