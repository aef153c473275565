//! The in-process proxy handle (`server::Running`) as another crate (the
//! tests, the fuzz target) uses it: loopback ports whatever the settings
//! say, a drain on stop and on drop, and the drain's report on join.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use support::*;
use wspulse::server::Running;
use wspulse::shutdown::{DrainReport, FinalScrape};

/// Listeners configured elsewhere (a privileged port, every interface) are
/// moved to 127.0.0.1 with ports the OS picks, so runs never collide.
#[tokio::test]
async fn it_listens_on_loopback_whatever_the_settings_say() {
    let echo = EchoServer::start().await.unwrap();
    let mut s = settings(&echo.url());
    s.listen.addr = "0.0.0.0:1".parse().unwrap();
    s.admin.addr = "0.0.0.0:2".parse().unwrap();
    let running = Running::start(s).await.unwrap();
    for addr in [running.addr(), running.admin_addr()] {
        assert!(addr.ip().is_loopback(), "{addr}");
        assert!(addr.port() > 2, "{addr}");
    }
    let (status, body) = http_get(running.admin_addr(), "/healthz").await;
    assert_eq!(status, 200, "{body}");
    let report = tokio::time::timeout(LIMIT, running.shutdown())
        .await
        .unwrap();
    assert_eq!(
        report,
        DrainReport {
            sessions: 0,
            deadline_hit: false,
            final_scrape: FinalScrape::Off,
        }
    );
}

/// `stop` drains like SIGTERM: the open session gets 1001, and `join`
/// returns once it has closed, with the count.
#[tokio::test]
async fn stop_drains_and_join_reports() {
    let echo = EchoServer::start().await.unwrap();
    let running = Running::start(settings(&echo.url())).await.unwrap();
    let mut c = raw_echoed(running.addr()).await;
    running.stop();
    answer_drain(&mut c).await;
    let report = tokio::time::timeout(LIMIT, running.join()).await.unwrap();
    assert_eq!(
        report,
        DrainReport {
            sessions: 1,
            deadline_hit: false,
            final_scrape: FinalScrape::Off,
        }
    );
}

/// A handle dropped without a join (a test that failed half-way) still
/// stops its proxy: the session gets the drain's 1001.
#[tokio::test]
async fn dropping_the_handle_stops_the_proxy() {
    let echo = EchoServer::start().await.unwrap();
    let running = Running::start(settings(&echo.url())).await.unwrap();
    let metrics = running.metrics().clone();
    let mut c = raw_echoed(running.addr()).await;
    drop(running);
    assert_eq!(c.expect_close().await.unwrap().close_code(), Some(1001));
    drop(c);
    assert!(metrics.wait_ended(1, LIMIT).await);
    assert_eq!(closed(&metrics.encode(), "1001", "proxy", "shutdown"), 1.0);
}
