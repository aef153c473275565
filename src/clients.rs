//! The third cure for abnormal closures: see how clients come back, and
//! keep a storm of them from reaching the upstream.
//!
//! [`Tracker`] remembers, for up to `clients.track` client identities, how
//! each one's last session ended and when, and how many sessions it holds
//! open. An identity is hashed with a key drawn at start ([`ClientKey`]): the
//! raw address, header, cookie or query value is never stored, shown or
//! used as a label. The map is an LRU bounded by `track` entries, whatever
//! clients send; an entry older than `clients.remember` counts as unknown.
//!
//! [`RateLimit`] is the handshake token bucket (`limits.max_handshakes_per_second`).
//!
//! Both are touched once per upgrade and once per ending, never per message.

use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::closure::Side;

/// A client identity, hashed with the process's key: 64 bits, so distinct
/// clients collide only by chance (about one pair in 10^9 among 100,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(u64);

impl ClientKey {
    /// The short form shown in `/closures`: 12 hex digits (48 bits), enough
    /// to follow one client's history by eye.
    pub fn short(self) -> String {
        format!("{:012x}", self.0 >> 16)
    }
}

/// How a client's previous attempt ended: the `class` label of
/// `wspulse_reconnect_delay_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndClass {
    /// A session that ended with a clean code (1000, 1001, 3000–4999).
    Clean,
    /// A session that ended any other way.
    Abnormal,
    /// A handshake that never became a session (502, 503, 504, 403, …).
    Rejected,
}

impl EndClass {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            EndClass::Clean => "clean",
            EndClass::Abnormal => "abnormal",
            EndClass::Rejected => "rejected",
        }
    }
}

/// A client's previous ending, as seen when it comes back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reconnect {
    /// From that ending to this upgrade request.
    pub after: Duration,
    /// How it ended.
    pub class: EndClass,
    /// Who ended it.
    pub side: Side,
}

/// What the tracker keeps per client: about 40 bytes of value, plus the
/// LRU's node and table slot.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The last ending, if any yet.
    last_end: Option<(Instant, EndClass, Side)>,
    /// Sessions (and handshakes in progress) this client holds now.
    open: u32,
}

/// Client identities, their last endings and open sessions.
pub struct Tracker {
    hasher: std::collections::hash_map::RandomState,
    remember: Duration,
    map: Option<Mutex<lru::LruCache<ClientKey, Entry>>>,
}

impl Tracker {
    /// A tracker of at most `track` clients (`0`: tracking off), each
    /// remembered for `remember` after its last ending.
    pub fn new(track: usize, remember: Duration) -> Tracker {
        Tracker {
            // std's hasher with keys drawn from the OS at start: SipHash,
            // so a client cannot aim its identity at another's slot.
            hasher: std::collections::hash_map::RandomState::new(),
            remember,
            map: NonZeroUsize::new(track).map(|n| Mutex::new(lru::LruCache::new(n))),
        }
    }

    /// Whether tracking is on (`clients.track > 0`).
    pub fn enabled(&self) -> bool {
        self.map.is_some()
    }

    /// The key of an identity (an address, a header, cookie or query value).
    pub fn key(&self, identity: &[u8]) -> ClientKey {
        ClientKey(self.hasher.hash_one(identity))
    }

    fn with<T>(&self, f: impl FnOnce(&mut lru::LruCache<ClientKey, Entry>) -> T) -> Option<T> {
        let map = self.map.as_ref()?;
        // A poisoned lock only means a panic elsewhere mid-update; the map
        // is still a valid map.
        let mut guard = map.lock().unwrap_or_else(|e| e.into_inner());
        Some(f(&mut guard))
    }

    /// `key` asks for an upgrade at `now`: its previous ending (if it is
    /// remembered and recent enough), and whether it may open one more
    /// session under `max_open` (`0`: no cap). When it may, the attempt is
    /// counted open until [`Self::ended`] or [`Self::released`].
    pub fn arrived(
        &self,
        key: ClientKey,
        now: Instant,
        max_open: u32,
    ) -> (Option<Reconnect>, bool) {
        let remember = self.remember;
        self.with(|map| {
            let entry = map.get_or_insert_mut(key, || Entry {
                last_end: None,
                open: 0,
            });
            let previous = entry.last_end.and_then(|(at, class, side)| {
                let after = now.saturating_duration_since(at);
                (after <= remember).then_some(Reconnect { after, class, side })
            });
            let admitted = max_open == 0 || entry.open < max_open;
            if admitted {
                entry.open += 1;
            }
            (previous, admitted)
        })
        .unwrap_or((None, true))
    }

    /// `key`'s attempt (a session or a refused handshake) ended at `now`.
    pub fn ended(&self, key: ClientKey, now: Instant, class: EndClass, side: Side) {
        self.with(|map| {
            let entry = map.get_or_insert_mut(key, || Entry {
                last_end: None,
                open: 1,
            });
            entry.open = entry.open.saturating_sub(1);
            entry.last_end = Some((now, class, side));
        });
    }

    /// `key`'s attempt was refused before it counted as one of its own (a
    /// per-client cap refusal is remembered as an ending, not an open).
    pub fn refused(&self, key: ClientKey, now: Instant, side: Side) {
        self.with(|map| {
            let entry = map.get_or_insert_mut(key, || Entry {
                last_end: None,
                open: 0,
            });
            entry.last_end = Some((now, EndClass::Rejected, side));
        });
    }

    /// Clients remembered now (`wspulse_clients_tracked`).
    pub fn tracked(&self) -> usize {
        self.with(|map| map.len()).unwrap_or(0)
    }
}

/// The handshake token bucket: `rate` tokens a second, a burst of one
/// second's worth; `0` lets everything through.
pub struct RateLimit {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    /// A bucket of `per_second` (`0`: unlimited), full at `now`.
    pub fn new(per_second: u32, now: Instant) -> RateLimit {
        let rate = f64::from(per_second);
        RateLimit {
            rate,
            state: Mutex::new((rate, now)),
        }
    }

    /// Take a token at `now`; `false` when the bucket is empty.
    pub fn take(&self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = &mut *state;
        let refill = now.saturating_duration_since(*last).as_secs_f64() * self.rate;
        *tokens = (*tokens + refill).min(self.rate);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A `Retry-After` value in whole seconds: `base` plus up to as much again
/// at random, so refused clients do not all come back in the same second.
pub fn retry_after(base: u32) -> u32 {
    let base = base.max(1);
    base + rand::random_range(0..=base)
}

#[cfg(test)]
mod tests;
