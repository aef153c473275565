//! A cached clock for per-message timestamps.
//!
//! The relay stamps every message it relays (a session's last activity,
//! which becomes `wspulse_idle_before_close_seconds`). Reading the clock
//! for each one was the largest single user-space symbol of the proxy at
//! small messages (`__vdso_clock_gettime`, about 1 % of its core in the
//! 64 B benchmark). nginx keeps its time the same way: it reads the clock
//! once when `epoll_wait` returns and every handler uses that
//! (`ngx_current_msec`).
//!
//! Here the runtime refreshes a per-thread copy when its thread wakes up
//! ([`refresh`], installed by [`crate::server::runtime`] as the `on_thread_unpark`
//! hook), and [`recent`] serves it, reading the real clock again every
//! [`REFRESH_EVERY`] calls. The copy is therefore never older than the
//! work the thread has done since it last woke up or since the last
//! [`REFRESH_EVERY`] stamps, whichever is shorter: microseconds under load,
//! where a thread handles events back to back without parking. On a thread
//! that never called [`refresh`] (tests, other runtimes) [`recent`] is
//! simply [`Instant::now`].
//!
//! Not for intervals that need precision at the microsecond scale: the
//! keepalive's round-trip times read the clock itself.

use std::cell::Cell;

use tokio::time::Instant;

/// Stamps served from one reading before the clock is read again. It bounds
/// the copy's age on a thread that stays busy and never parks.
pub const REFRESH_EVERY: u32 = 32;

thread_local! {
    /// The last reading and how many stamps it has served; `None` until
    /// [`refresh`] runs on this thread.
    static CACHED: Cell<Option<(Instant, u32)>> = const { Cell::new(None) };
}

/// Read the clock into this thread's copy. Called when a runtime thread
/// wakes up.
pub fn refresh() {
    CACHED.set(Some((Instant::now(), 0)));
}

/// The time now, give or take the work this thread did since its copy was
/// read (see the module docs).
pub fn recent() -> Instant {
    match CACHED.get() {
        Some((at, served)) if served < REFRESH_EVERY => {
            CACHED.set(Some((at, served + 1)));
            at
        }
        Some(_) => {
            let at = Instant::now();
            CACHED.set(Some((at, 1)));
            at
        }
        None => Instant::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn without_refresh_it_is_the_clock() {
        // Each test runs on a thread of its own, so nothing refreshed here.
        let a = recent();
        std::thread::sleep(Duration::from_millis(2));
        assert!(recent() >= a + Duration::from_millis(2));
    }

    #[test]
    fn a_refreshed_copy_serves_a_bounded_number_of_stamps() {
        refresh();
        let first = recent();
        std::thread::sleep(Duration::from_millis(2));
        // The cached reading is served until it has served REFRESH_EVERY
        // stamps (the one above was the first)...
        for _ in 1..REFRESH_EVERY {
            assert_eq!(recent(), first);
        }
        // ...then the clock is read again.
        let next = recent();
        assert!(next >= first + Duration::from_millis(2));
        // And a refresh (the thread woke up) reads it at once.
        std::thread::sleep(Duration::from_millis(2));
        refresh();
        assert!(recent() >= next + Duration::from_millis(2));
    }
}
