//! Memory per tracked client, measured: the tracker filled to its bound
//! in a process of its own (this file holds one test, so nothing else
//! allocates beside it), read as the growth of the process's RSS.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::time::Duration;

use tokio::time::Instant;
use wspulse::clients::{EndClass, Tracker};
use wspulse::closure::Side;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

#[test]
fn a_tracked_client_costs_under_a_hundred_and_fifty_bytes() {
    const N: usize = 200_000;
    let before = rss_bytes();
    let t = Tracker::new(N, Duration::from_secs(600));
    let now = Instant::now();
    for i in 0..(2 * N) as u64 {
        let k = t.key(&i.to_le_bytes());
        t.arrived(k, now, 0);
        t.ended(k, now, EndClass::Abnormal, Side::Client);
    }
    assert_eq!(t.tracked(), N);
    let per_client = (rss_bytes() - before) as f64 / N as f64;
    println!("{per_client:.0} bytes per tracked client ({N} tracked)");
    assert!(
        per_client < 150.0,
        "{per_client:.0} bytes per tracked client"
    );
    drop(t);
}
