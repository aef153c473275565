//! The proxy's own ping/pong on each leg, as a state machine with no I/O.
//!
//! The session asks [`Keepalive::deadline`] when to wake up, calls
//! [`Keepalive::on_tick`] then, and sends the pings it is told to; every
//! Pong it reads goes through [`Keepalive::on_pong`], which says whether the
//! pong was the proxy's (consume it, observe the RTT) or the peer's own
//! (relay it). Time is passed in, so tests drive it with
//! `tokio::time::pause()` or plain instants.
//!
//! Rule: every `interval` a ping goes out on each leg; a leg whose ping is
//! unanswered `timeout` after it was sent is dead. `timeout <= interval` is
//! enforced by the config, so at most one ping per leg is outstanding.

use std::time::Duration;

use tokio::time::Instant;

use crate::closure::LegId;

/// Prefix of the proxy's ping payloads: how its pongs are recognised.
pub const PAYLOAD_TAG: &[u8; 8] = b"wspulse\0";

/// Which leg, as an index.
fn idx(leg: LegId) -> usize {
    usize::from(leg == LegId::Upstream)
}

#[derive(Debug, Clone, Copy)]
struct LegState {
    /// When the next ping is due.
    next_ping: Instant,
    /// Sequence number and send time of the unanswered ping, if any.
    outstanding: Option<(u64, Instant)>,
}

/// What the session must do after a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a Ping with this payload on this leg.
    Ping(LegId, [u8; 16]),
    /// This leg did not answer in time: it is dead.
    Dead(LegId),
}

/// What a received Pong was.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pong {
    /// The answer to the proxy's outstanding ping; RTT attached. Consume it.
    Answered(Duration),
    /// The proxy's, but late or stale (a previous ping). Consume it.
    Stale,
    /// Not the proxy's: the peer's own pong, relay it.
    NotOurs,
}

/// Keepalive state of one session (both legs).
#[derive(Debug, Clone)]
pub struct Keepalive {
    interval: Duration,
    timeout: Duration,
    seq: u64,
    legs: [LegState; 2],
}

impl Keepalive {
    /// Keepalive starting at `now`; `None` when `interval` is zero (disabled).
    pub fn new(interval: Duration, timeout: Duration, now: Instant) -> Option<Keepalive> {
        if interval.is_zero() {
            return None;
        }
        let leg = LegState {
            next_ping: now + interval,
            outstanding: None,
        };
        Some(Keepalive {
            interval,
            timeout,
            seq: 0,
            legs: [leg, leg],
        })
    }

    /// The next instant at which [`on_tick`](Self::on_tick) has work to do.
    pub fn deadline(&self) -> Instant {
        self.legs
            .iter()
            .map(|l| match l.outstanding {
                Some((_, sent)) => (sent + self.timeout).min(l.next_ping),
                None => l.next_ping,
            })
            .min()
            .unwrap_or_else(|| Instant::now() + self.interval)
    }

    /// Advance to `now`. A dead leg is reported before any ping, client leg first.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        for id in [LegId::Client, LegId::Upstream] {
            let leg = &self.legs[idx(id)];
            if leg
                .outstanding
                .is_some_and(|(_, sent)| now >= sent + self.timeout)
            {
                actions.push(Action::Dead(id));
            }
        }
        if !actions.is_empty() {
            return actions;
        }
        for id in [LegId::Client, LegId::Upstream] {
            let leg = &mut self.legs[idx(id)];
            if now >= leg.next_ping {
                self.seq += 1;
                leg.outstanding = Some((self.seq, now));
                leg.next_ping = now + self.interval;
                actions.push(Action::Ping(id, payload(self.seq)));
            }
        }
        actions
    }

    /// Classify a Pong read on `from`.
    pub fn on_pong(&mut self, from: LegId, data: &[u8], now: Instant) -> Pong {
        let Some(seq) = parse_payload(data) else {
            return Pong::NotOurs;
        };
        let leg = &mut self.legs[idx(from)];
        match leg.outstanding {
            Some((expected, sent)) if expected == seq => {
                leg.outstanding = None;
                Pong::Answered(now.saturating_duration_since(sent))
            }
            _ => Pong::Stale,
        }
    }
}

/// The payload of the proxy's ping number `seq`.
fn payload(seq: u64) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..8].copy_from_slice(PAYLOAD_TAG);
    p[8..].copy_from_slice(&seq.to_be_bytes());
    p
}

/// The sequence number in a proxy ping payload, or `None` if it is not one.
fn parse_payload(data: &[u8]) -> Option<u64> {
    if data.len() != 16 || &data[..8] != PAYLOAD_TAG {
        return None;
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&data[8..]);
    Some(u64::from_be_bytes(seq))
}

#[cfg(test)]
mod tests;
