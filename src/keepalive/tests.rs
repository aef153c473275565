use super::*;

const S: Duration = Duration::from_secs(1);

fn ka(now: Instant) -> Keepalive {
    Keepalive::new(15 * S, 10 * S, now).unwrap()
}

#[test]
fn zero_interval_disables() {
    assert!(Keepalive::new(Duration::ZERO, S, Instant::now()).is_none());
}

#[tokio::test(start_paused = true)]
async fn pings_both_legs_every_interval_and_measures_rtt() {
    let t0 = Instant::now();
    let mut k = ka(t0);
    assert_eq!(k.deadline(), t0 + 15 * S);
    assert!(k.on_tick(t0 + 14 * S).is_empty());
    tokio::time::advance(15 * S).await;
    let now = Instant::now();
    let actions = k.on_tick(now);
    assert_eq!(actions.len(), 2);
    let Action::Ping(LegId::Client, p_client) = actions[0] else {
        panic!("{actions:?}")
    };
    let Action::Ping(LegId::Upstream, p_up) = actions[1] else {
        panic!("{actions:?}")
    };
    assert_ne!(p_client, p_up);
    // Deadline is now the pong timeout.
    assert_eq!(k.deadline(), now + 10 * S);
    tokio::time::advance(Duration::from_millis(20)).await;
    assert_eq!(
        k.on_pong(LegId::Client, &p_client, Instant::now()),
        Pong::Answered(Duration::from_millis(20))
    );
    // A second copy is stale, a pong for the other leg's ping on this leg too.
    assert_eq!(
        k.on_pong(LegId::Client, &p_client, Instant::now()),
        Pong::Stale
    );
    assert_eq!(k.on_pong(LegId::Client, &p_up, Instant::now()), Pong::Stale);
    assert_eq!(
        k.on_pong(LegId::Upstream, &p_up, Instant::now()),
        Pong::Answered(Duration::from_millis(20))
    );
    assert_eq!(k.deadline(), now + 15 * S);
}

#[tokio::test(start_paused = true)]
async fn unanswered_ping_kills_that_leg_only() {
    let t0 = Instant::now();
    let mut k = ka(t0);
    tokio::time::advance(15 * S).await;
    let actions = k.on_tick(Instant::now());
    let Action::Ping(_, p_client) = actions[0] else {
        panic!()
    };
    assert_eq!(
        k.on_pong(LegId::Client, &p_client, Instant::now()),
        Pong::Answered(Duration::ZERO)
    );
    tokio::time::advance(10 * S - Duration::from_millis(1)).await;
    assert!(k.on_tick(Instant::now()).is_empty());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(k.deadline(), Instant::now());
    assert_eq!(
        k.on_tick(Instant::now()),
        vec![Action::Dead(LegId::Upstream)]
    );
}

#[test]
fn foreign_pongs_are_not_ours() {
    let mut k = ka(Instant::now());
    assert_eq!(
        k.on_pong(LegId::Client, b"hello", Instant::now()),
        Pong::NotOurs
    );
    assert_eq!(
        k.on_pong(LegId::Client, b"wspulse\0", Instant::now()),
        Pong::NotOurs
    );
    assert_eq!(
        k.on_pong(LegId::Client, &payload(99), Instant::now()),
        Pong::Stale
    );
}

#[tokio::test(start_paused = true)]
async fn timeout_equal_to_interval_still_detects() {
    let t0 = Instant::now();
    let mut k = Keepalive::new(S, S, t0).unwrap();
    tokio::time::advance(S).await;
    assert_eq!(k.on_tick(Instant::now()).len(), 2);
    tokio::time::advance(S).await;
    assert_eq!(
        k.on_tick(Instant::now()),
        vec![Action::Dead(LegId::Client), Action::Dead(LegId::Upstream)]
    );
}
