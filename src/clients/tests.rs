use super::*;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[tokio::test(start_paused = true)]
async fn a_returning_client_sees_how_and_when_it_last_ended() {
    let t = Tracker::new(100, secs(600.0));
    let a = t.key(b"10.0.0.1");
    let now = Instant::now();
    // First time: nothing to report.
    assert_eq!(t.arrived(a, now, 0), (None, true));
    t.ended(a, now + secs(1.0), EndClass::Abnormal, Side::Client);
    let (back, ok) = t.arrived(a, now + secs(1.4), 0);
    assert!(ok);
    let back = back.unwrap();
    assert_eq!((back.class, back.side), (EndClass::Abnormal, Side::Client));
    assert!((back.after.as_secs_f64() - 0.4).abs() < 1e-9);
    // Another identity is another client.
    assert_eq!(t.arrived(t.key(b"10.0.0.2"), now, 0), (None, true));
    // Too long ago: forgotten.
    t.ended(a, now + secs(2.0), EndClass::Clean, Side::Upstream);
    assert_eq!(t.arrived(a, now + secs(700.0), 0).0, None);
}

#[test]
fn identities_are_hashed_per_process_and_shown_short() {
    let (t, u) = (Tracker::new(1, secs(1.0)), Tracker::new(1, secs(1.0)));
    assert_eq!(t.key(b"x"), t.key(b"x"));
    assert_ne!(t.key(b"x"), t.key(b"y"));
    // Another process (another key) hashes the same identity elsewhere.
    assert_ne!(t.key(b"x"), u.key(b"x"));
    assert_eq!(t.key(b"x").short().len(), 12);
}

#[tokio::test(start_paused = true)]
async fn memory_is_bounded_by_track_whatever_clients_send() {
    let t = Tracker::new(100, secs(600.0));
    let now = Instant::now();
    for i in 0..10_000u32 {
        let k = t.key(&i.to_be_bytes());
        t.arrived(k, now, 0);
        t.ended(k, now, EndClass::Clean, Side::Client);
    }
    assert_eq!(t.tracked(), 100);
    // The most recent are the ones remembered.
    let last = t.key(&9_999u32.to_be_bytes());
    assert!(t.arrived(last, now, 0).0.is_some());
    let first = t.key(&0u32.to_be_bytes());
    assert!(t.arrived(first, now, 0).0.is_none());
}

#[tokio::test(start_paused = true)]
async fn the_per_client_cap_counts_open_sessions() {
    let t = Tracker::new(100, secs(600.0));
    let (a, now) = (t.key(b"a"), Instant::now());
    assert!(t.arrived(a, now, 2).1);
    assert!(t.arrived(a, now, 2).1);
    assert!(!t.arrived(a, now, 2).1, "a third is over the cap");
    assert!(t.arrived(t.key(b"b"), now, 2).1, "others are served");
    t.ended(a, now, EndClass::Clean, Side::Client);
    assert!(t.arrived(a, now, 2).1, "one ended: room again");
}

#[test]
fn tracking_off_remembers_nothing_and_caps_nothing() {
    let t = Tracker::new(0, secs(600.0));
    assert!(!t.enabled());
    let (a, now) = (t.key(b"a"), Instant::now());
    t.ended(a, now, EndClass::Abnormal, Side::Client);
    assert_eq!(t.arrived(a, now, 1), (None, true));
    assert_eq!(t.tracked(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_bucket_allows_a_second_of_burst_then_the_rate() {
    let now = Instant::now();
    let b = RateLimit::new(10, now);
    assert_eq!((0..20).filter(|_| b.take(now)).count(), 10, "burst");
    assert!(!b.take(now + secs(0.05)));
    assert!(b.take(now + secs(0.1)), "one token per 100 ms");
    assert!(!b.take(now + secs(0.1)));
    // Unlimited.
    let u = RateLimit::new(0, now);
    assert!((0..1000).all(|_| u.take(now)));
}

#[test]
fn retry_after_is_jittered_between_base_and_twice_base() {
    let seen: std::collections::HashSet<u32> = (0..200).map(|_| retry_after(2)).collect();
    assert!(seen.iter().all(|s| (2..=4).contains(s)), "{seen:?}");
    assert!(seen.len() > 1, "jittered");
}
