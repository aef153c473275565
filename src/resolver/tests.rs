use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fake DNS: answers from `answers` (the last one repeats), counts calls.
fn fake(
    refresh: Duration,
    answers: Vec<io::Result<Vec<SocketAddr>>>,
) -> (Arc<Resolver>, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let answers: Arc<Vec<_>> = Arc::new(
        answers
            .into_iter()
            .map(|a| a.map_err(|e| (e.kind(), e.to_string())))
            .collect(),
    );
    let c = calls.clone();
    let r = Resolver::with_lookup(
        "upstream.test",
        9000,
        refresh,
        Box::new(move |host, port| {
            assert_eq!((host.as_str(), port), ("upstream.test", 9000));
            let n = c.fetch_add(1, Ordering::SeqCst);
            let a = answers[n.min(answers.len() - 1)].clone();
            Box::pin(async move { a.map_err(|(k, m)| io::Error::new(k, m)) })
        }),
    );
    (r, calls)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

async fn list(r: &Arc<Resolver>) -> Vec<SocketAddr> {
    r.candidates().await.expect("resolves").iter().collect()
}

/// Let a spawned background resolution run to its end.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn an_ip_address_is_never_resolved() {
    let r = Resolver::new("127.0.0.1", 9000, Duration::ZERO);
    assert_eq!(list(&r).await, [addr("127.0.0.1:9000")]);
    let r = Resolver::new("::1", 9000, Duration::from_secs(5));
    assert_eq!(list(&r).await, [addr("[::1]:9000")]);
}

#[tokio::test(start_paused = true)]
async fn resolved_once_per_interval_then_in_the_background() {
    let (r, calls) = fake(
        Duration::from_secs(5),
        vec![
            Ok(vec![addr("10.0.0.1:9000")]),
            Ok(vec![addr("10.0.0.2:9000")]),
        ],
    );
    for _ in 0..100 {
        assert_eq!(list(&r).await, [addr("10.0.0.1:9000")]);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one resolution for 100 dials"
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    // Due: this dial still gets the old address, the new one comes in
    // the background, and only one resolution starts.
    assert_eq!(list(&r).await, [addr("10.0.0.1:9000")]);
    assert_eq!(list(&r).await, [addr("10.0.0.1:9000")]);
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(list(&r).await, [addr("10.0.0.2:9000")]);
}

#[tokio::test(start_paused = true)]
async fn zero_interval_resolves_for_every_dial() {
    let (r, calls) = fake(Duration::ZERO, vec![Ok(vec![addr("10.0.0.1:9000")])]);
    for _ in 0..3 {
        list(&r).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_keeps_the_last_addresses() {
    let (r, calls) = fake(
        Duration::from_secs(5),
        vec![
            Ok(vec![addr("10.0.0.1:9000")]),
            Err(io::Error::other("SERVFAIL")),
            Ok(vec![addr("10.0.0.3:9000")]),
        ],
    );
    list(&r).await;
    tokio::time::advance(Duration::from_secs(6)).await;
    list(&r).await;
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(list(&r).await, [addr("10.0.0.1:9000")], "kept");
    // No retry a second later (no query and no warning every second
    // while the DNS is down)...
    tokio::time::advance(MIN_RETRY).await;
    list(&r).await;
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // ...the next try waits for the interval again, then succeeds.
    tokio::time::advance(Duration::from_secs(6)).await;
    list(&r).await;
    settle().await;
    assert_eq!(list(&r).await, [addr("10.0.0.3:9000")]);
}

#[tokio::test(start_paused = true)]
async fn the_first_resolution_failing_is_the_dials_error() {
    let (r, _) = fake(
        Duration::from_secs(5),
        vec![Err(io::Error::other("NXDOMAIN")), Ok(vec![])],
    );
    assert!(r.candidates().await.is_err());
    let e = r.candidates().await.err().expect("no address is an error");
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
}

#[tokio::test(start_paused = true)]
async fn the_address_that_connected_is_tried_first_and_kept_across_refreshes() {
    let (a, b) = (addr("[::1]:9000"), addr("127.0.0.1:9000"));
    let (r, _) = fake(
        Duration::from_secs(5),
        vec![Ok(vec![a, b]), Ok(vec![addr("10.9.9.9:9000"), a, b])],
    );
    assert_eq!(list(&r).await, [a, b]);
    r.connected(b);
    assert_eq!(list(&r).await, [b, a]);
    tokio::time::advance(Duration::from_secs(5)).await;
    list(&r).await;
    settle().await;
    assert_eq!(list(&r).await, [b, addr("10.9.9.9:9000"), a]);
}

#[tokio::test(start_paused = true)]
async fn when_every_address_fails_it_re_resolves_early_but_not_in_a_loop() {
    let (r, calls) = fake(
        Duration::from_secs(300),
        vec![
            Ok(vec![addr("10.0.0.1:9000")]),
            Ok(vec![addr("10.0.0.2:9000")]),
        ],
    );
    list(&r).await;
    // Within MIN_RETRY of the first resolution: no new one yet.
    r.all_failed();
    list(&r).await;
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::advance(MIN_RETRY).await;
    assert_eq!(list(&r).await, [addr("10.0.0.1:9000")]);
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(list(&r).await, [addr("10.0.0.2:9000")]);
    // Working again: no more resolutions until the interval.
    for _ in 0..10 {
        list(&r).await;
    }
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
