//! `shutdown.final_scrape`: after a drain the process stays up until one
//! `/metrics` scrape has carried the drain's counts, or the limit passes.
//! Without it a rollout's `1001/proxy/shutdown` and drained-vs-cut counts
//! happen after the last scrape and never reach Prometheus.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::time::Duration;

use support::*;
use tokio::time::Instant;
use wspulse::server::Running;
use wspulse::shutdown::FinalScrape;

/// One session drained; the process waits (final_scrape far beyond the
/// test's bound), the scrape after the drain shows its counts, and the
/// process exits right after that scrape.
#[tokio::test]
async fn the_process_waits_for_one_scrape_then_exits() {
    let echo = EchoServer::start().await.unwrap();
    let mut s = settings(&echo.url());
    s.shutdown.final_scrape = Duration::from_secs(600);
    let running = Running::start(s).await.unwrap();
    let admin = running.admin_addr();
    let mut c = raw_echoed(running.addr()).await;
    running.stop();
    answer_drain(&mut c).await;
    tokio::time::timeout(LIMIT, running.drained())
        .await
        .expect("the drain did not finish");
    let joined = tokio::spawn(running.join());
    // Drained, not scraped: still serving (it would wait 600 s).
    let (status, _) = http_get(admin, "/healthz").await;
    assert_eq!(status, 200);
    assert!(!joined.is_finished());

    let scraped_at = Instant::now();
    assert_drained(&http_get(admin, "/metrics").await.1, 1.0);
    let report = tokio::time::timeout(LIMIT, joined)
        .await
        .expect("the process did not exit after its final scrape")
        .unwrap();
    assert_eq!(report.final_scrape, FinalScrape::Served);
    assert_eq!(report.sessions, 1);
    assert!(
        scraped_at.elapsed() < Duration::from_secs(5),
        "exit took {:?} after the scrape",
        scraped_at.elapsed()
    );
}

/// Nobody scrapes: the process exits once `final_scrape` has passed, and
/// says so in its report.
#[tokio::test]
async fn without_a_scrape_it_exits_after_the_limit() {
    let echo = EchoServer::start().await.unwrap();
    let mut s = settings(&echo.url());
    let limit = Duration::from_millis(300);
    s.shutdown.final_scrape = limit;
    let running = Running::start(s).await.unwrap();
    running.stop();
    tokio::time::timeout(LIMIT, running.drained())
        .await
        .unwrap();
    let drained_at = Instant::now();
    let report = tokio::time::timeout(LIMIT, running.join()).await.unwrap();
    assert_eq!(report.final_scrape, FinalScrape::TimedOut);
    let waited = drained_at.elapsed();
    assert!(
        waited >= limit && waited < limit + Duration::from_secs(5),
        "{waited:?}"
    );
}

/// The default, "0s", keeps today's behaviour: exit as soon as drained.
#[tokio::test]
async fn zero_exits_at_once() {
    let echo = EchoServer::start().await.unwrap();
    let running = Running::start(settings(&echo.url())).await.unwrap();
    let report = tokio::time::timeout(LIMIT, running.shutdown())
        .await
        .unwrap();
    assert_eq!(report.final_scrape, FinalScrape::Off);
}
