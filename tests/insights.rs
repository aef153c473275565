//! Answers beyond counters: per-route labels, `/closures`, the idle-time
//! fingerprint, and `wspulse explain` against a live instance.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use support::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use wspulse::config::Route;

async fn close_cleanly(mut ws: Client, code: u16, reason: &str) {
    ws.close(Some(CloseFrame {
        code: code.into(),
        reason: reason.into(),
    }))
    .await
    .unwrap();
    while ws.next().await.is_some() {}
}

/// Longest whole-segment prefix wins; unmatched paths are route="other";
/// the label is on opened, closed and duration.
#[tokio::test]
async fn routes_label_sessions_by_longest_prefix() {
    let echo = EchoServer::start().await.unwrap();
    let mut s = settings(&echo.url());
    s.routes = vec![
        Route {
            name: "api".into(),
            path_prefix: "/api".into(),
        },
        Route {
            name: "feed".into(),
            path_prefix: "/api/feed".into(),
        },
    ];
    let proxy = start_proxy(s).await;
    for path in [
        "/api/x",
        "/api/feed/live?x=1",
        "/api/feedback",
        "/elsewhere",
        "/apix",
    ] {
        close_cleanly(proxy.connect(path).await, 1000, "").await;
    }
    proxy.wait_ended(5).await;
    let text = proxy.scrape().await;
    let opened = |r: &str| metric(&text, "wspulse_connections_opened_total", &[("route", r)]);
    // /api/x and /api/feedback → api; /api/feed/live → feed; /elsewhere and /apix → other.
    assert_eq!(
        (opened("api"), opened("feed"), opened("other")),
        (2.0, 1.0, 2.0)
    );
    assert_eq!(
        metric(
            &text,
            "wspulse_connections_closed_total",
            &[("route", "feed"), ("code", "1000")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "wspulse_session_duration_seconds_count",
            &[("route", "other"), ("class", "clean")]
        ),
        2.0
    );
    assert!(
        !text.contains("route=\"default\""),
        "default route exists only without routes"
    );
    proxy.finish().await;
}

/// `/closures` returns the last ended sessions, newest first, with the
/// documented fields, and filters by class, code and limit.
#[tokio::test]
async fn closures_endpoint_lists_recent_sessions_with_filters() {
    let (_echo, proxy) = echo_and_proxy().await;
    let mut ws = proxy.connect("/a?q=1").await;
    send_text(&mut ws, "hello").await;
    assert_eq!(next(&mut ws).await, Some(Message::text("hello")));
    close_cleanly(ws, 4001, "a reason that is kept").await;
    proxy.wait_ended(1).await;
    let mut ws = proxy.connect("/b").await;
    send_text(&mut ws, "drop").await; // upstream vanishes → 1006
    while ws.next().await.is_some() {}
    proxy.wait_ended(2).await;

    let (status, body) = proxy.admin_get("/closures").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let all = v["closures"].as_array().unwrap();
    assert_eq!(all.len(), 2);
    let (newest, oldest) = (&all[0], &all[1]);
    assert_eq!(newest["code"], 1006);
    assert_eq!(newest["side"], "upstream");
    assert_eq!(newest["cause"], "eof");
    assert_eq!(newest["class"], "abnormal");
    assert_eq!(oldest["code"], 4001);
    assert_eq!(oldest["reason"], "a reason that is kept");
    assert_eq!(oldest["path"], "/a");
    assert_eq!(oldest["route"], "default");
    assert_eq!(oldest["messages_client_to_upstream"], 1);
    assert_eq!(oldest["bytes_upstream_to_client"], 5);
    assert!(
        oldest["client_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    for key in [
        "start",
        "end",
        "duration_s",
        "idle_before_close_s",
        "last_rtt_client_s",
        "last_rtt_upstream_s",
    ] {
        assert!(oldest.get(key).is_some(), "{key} missing");
    }
    let get = |q: &'static str| {
        let p = &proxy;
        async move {
            let (s, b) = p.admin_get(&format!("/closures?{q}")).await;
            assert_eq!(s, 200, "{q}: {b}");
            serde_json::from_str::<serde_json::Value>(&b).unwrap()["closures"]
                .as_array()
                .unwrap()
                .len()
        }
    };
    assert_eq!(get("class=abnormal").await, 1);
    assert_eq!(get("class=clean").await, 1);
    assert_eq!(get("code=4001").await, 1);
    assert_eq!(get("limit=1").await, 1);
    assert_eq!(proxy.admin_get("/closures?class=bogus").await.0, 400);
    proxy.finish().await;
}

/// A session that ends after a known idle time lands in the matching
/// `wspulse_idle_before_close_seconds` bucket: the time since its *last*
/// message, not its first.
#[tokio::test]
async fn idle_before_close_records_the_idle_time() {
    talk_pause_talk_then_vanish().await;
}

/// The same on the runtime `wspulse run` serves on, where the relay stamps
/// messages with the cached time its threads refresh when they wake up
/// (`wspulse::clock`): the stamp of the last message must still be its time.
#[test]
fn idle_before_close_is_right_with_the_cached_clock() {
    let runtime = wspulse::server::runtime().unwrap();
    runtime.block_on(talk_pause_talk_then_vanish());
}

async fn talk_pause_talk_then_vanish() {
    let echo = EchoServer::start().await.unwrap();
    let mut s = settings(&echo.url());
    s.keepalive.interval = Duration::ZERO; // no pings: the session is truly idle
    let proxy = start_proxy(s).await;
    let mut ws = proxy.connect("/").await;
    // The scenario itself: a message, 1.2 s of silence, another message,
    // then 0.6 s of silence and the client vanishes (FIN).
    for pause in [1200, 600] {
        send_text(&mut ws, "words").await;
        assert_eq!(next(&mut ws).await, Some(Message::text("words")));
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    drop(ws);
    proxy.wait_ended(1).await;
    let text = proxy.scrape().await;
    let bucket = |le: &str| {
        metric(
            &text,
            "wspulse_idle_before_close_seconds_bucket",
            &[("class", "abnormal"), ("le", le)],
        )
    };
    assert_eq!(bucket("0.5"), 0.0, "idle time under 0.5 s recorded");
    assert_eq!(bucket("1"), 1.0, "idle time of ~0.6 s not in (0.5, 1]");
    proxy.finish().await;
}

/// `wspulse explain --admin URL` reads a live instance and names what it saw.
#[tokio::test]
async fn explain_reads_a_live_instance() {
    let (_echo, proxy) = echo_and_proxy().await;
    for _ in 0..4 {
        let mut ws = proxy.connect("/").await;
        send_text(&mut ws, "drop").await;
        while ws.next().await.is_some() {}
    }
    proxy.wait_ended(4).await;
    let admin = format!("http://{}", proxy.admin);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wspulse"))
        .args(["explain", "--admin", &admin])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("4 sessions opened, 4 ended"), "{text}");
    assert!(
        text.contains("100% of sessions ended because the upstream dropped TCP"),
        "{text}"
    );
    // An address that answers, but not with /metrics: exit 1 with the status.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wspulse"))
        .args(["explain", "--admin", &format!("{admin}/nope")])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nope/metrics: HTTP 404"), "{err}");
    // `--output json`: the same diagnosis, for scripts.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wspulse"))
        .args(["explain", "--admin", &admin, "--output", "json"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["closed"], 4.0);
    assert_eq!(json["kinds"][0]["cause"], "eof");
    // `--prometheus` at something that is not Prometheus: exit 1, saying so.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wspulse"))
        .args(["explain", "--prometheus", &admin])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/api/v1/query: not a Prometheus API answer (HTTP 404)"),
        "{err}"
    );
    let admin_addr = proxy.admin;
    proxy.finish().await;
    // Nothing listening: exit 1 with the address.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wspulse"))
        .args(["explain", "--admin", &admin])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot connect to {admin_addr}")),
        "{err}"
    );
}
