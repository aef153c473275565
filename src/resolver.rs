//! The upstream's addresses: resolved once, reused for every session, and
//! re-resolved in the background every `upstream.dns_refresh`.
//!
//! Resolving the upstream's host name for every session costs a hop to the
//! blocking pool and a `getaddrinfo` (files, then DNS; in Kubernetes with
//! `ndots:5`, several queries to the cluster DNS per session). With
//! `ws://localhost:…` that was about a sixth more proxy CPU per session
//! (`bench/README.md`). nginx resolves its
//! upstreams once at start; Envoy re-resolves a name on a timer
//! (`dns_refresh_rate`, 5 s). wspulse does what Envoy does, so a Service
//! or pod that moves is followed within the interval:
//!
//! | state of the cache                         | the session dialing           |
//! |--------------------------------------------|-------------------------------|
//! | URL names an IP address                    | uses it; nothing is resolved  |
//! | `dns_refresh = "0s"`                       | resolves, waits for it        |
//! | never resolved (first session)             | resolves, waits for it        |
//! | not due yet                                | uses the cached addresses     |
//! | due                                        | uses the cached addresses and starts one background resolution, unless one runs |
//!
//! A resolution is due `dns_refresh` after the last one ended, whether it
//! found addresses or failed, and [`MIN_RETRY`] after it once every cached
//! address has failed to connect. A background resolution that fails keeps
//! the addresses it had (an unreachable DNS server does not take a working
//! upstream down with it) and says so in the log, once per interval. Addresses are tried in the resolver's order,
//! starting with the one that connected last, so a name with an address
//! that refuses (`localhost` as `::1` for a server on `127.0.0.1`) costs
//! one failed connect, not one per session.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

/// When every cached address failed, the next resolution is due this long
/// after the last one ended (not at once), so a dead upstream whose
/// sessions all fail does not turn into a query per session against the
/// DNS server.
pub const MIN_RETRY: Duration = Duration::from_secs(1);

type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;
/// How a name becomes addresses: `tokio::net::lookup_host`, or a fake in tests.
type Lookup = dyn Fn(String, u16) -> LookupFuture + Send + Sync;

/// The upstream host's addresses (see the module docs).
pub struct Resolver {
    host: String,
    port: u16,
    refresh: Duration,
    /// The URL names an IP address: nothing to resolve, no lock to take
    /// (kept as the slice every dial shares, so a dial allocates nothing).
    literal: Option<Arc<[SocketAddr]>>,
    lookup: Box<Lookup>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The last successful resolution; empty until the first (a lookup
    /// that finds no address is an error).
    addrs: Arc<[SocketAddr]>,
    /// When the last resolution (good or bad) ended.
    tried_at: Option<Instant>,
    /// When the next resolution is due.
    due_at: Option<Instant>,
    /// Index in `addrs` of the address that connected last: tried first.
    preferred: usize,
    /// A background resolution is under way.
    refreshing: bool,
}

/// The addresses to try for one dial, in order.
pub struct Candidates {
    addrs: Arc<[SocketAddr]>,
    first: usize,
}

impl Candidates {
    /// The addresses, starting with the one that connected last.
    pub fn iter(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        let n = self.addrs.len();
        (0..n).map(move |k| self.addrs[(self.first + k) % n])
    }
}

impl Resolver {
    /// A resolver for `host:port` that re-resolves every `refresh` (zero:
    /// for every dial).
    pub fn new(host: &str, port: u16, refresh: Duration) -> Arc<Resolver> {
        Self::with_lookup(
            host,
            port,
            refresh,
            Box::new(|host, port| {
                Box::pin(async move {
                    Ok(tokio::net::lookup_host((host.as_str(), port))
                        .await?
                        .collect())
                })
            }),
        )
    }

    fn with_lookup(host: &str, port: u16, refresh: Duration, lookup: Box<Lookup>) -> Arc<Self> {
        Arc::new(Resolver {
            host: host.to_string(),
            port,
            refresh,
            literal: host
                .parse::<IpAddr>()
                .ok()
                .map(|ip| Arc::from([SocketAddr::from((ip, port))])),
            lookup,
            state: Mutex::new(State::default()),
        })
    }

    /// The host name it resolves, for error messages.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; a poisoned lock still has good data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The addresses to dial now (see the table in the module docs).
    pub async fn candidates(self: &Arc<Self>) -> io::Result<Candidates> {
        if let Some(addrs) = &self.literal {
            return Ok(Candidates {
                addrs: addrs.clone(),
                first: 0,
            });
        }
        if !self.refresh.is_zero() {
            let now = crate::clock::recent();
            let mut st = self.state();
            if !st.addrs.is_empty() {
                let due = st.due_at.is_none_or(|d| now >= d);
                if due && !st.refreshing {
                    st.refreshing = true;
                    let me = self.clone();
                    tokio::spawn(async move { me.resolve().await });
                }
                return Ok(Candidates {
                    addrs: st.addrs.clone(),
                    first: st.preferred,
                });
            }
        }
        let addrs = self.resolve().await?;
        Ok(Candidates { addrs, first: 0 })
    }

    /// Resolve now and keep the result; on failure keep what we had.
    async fn resolve(&self) -> io::Result<Arc<[SocketAddr]>> {
        let found = (self.lookup)(self.host.clone(), self.port).await;
        let found = found.and_then(|a| match a.is_empty() {
            true => Err(io::Error::new(io::ErrorKind::NotFound, "no address")),
            false => Ok(a),
        });
        let now = Instant::now();
        let mut st = self.state();
        st.refreshing = false;
        st.tried_at = Some(now);
        // A refresh too long to add to the clock ("100000years"): a century.
        let century = Duration::from_secs(100 * 365 * 86_400);
        st.due_at = Some(
            now.checked_add(self.refresh)
                .unwrap_or_else(|| now + century),
        );
        let had = !st.addrs.is_empty();
        match found {
            Ok(addrs) => {
                if had && *st.addrs != *addrs {
                    info!(host = %self.host, old = ?st.addrs, new = ?addrs, "upstream addresses changed");
                }
                // Keep preferring the address that worked, if it is still there.
                let kept = st.addrs.get(st.preferred).copied();
                st.preferred = kept
                    .and_then(|a| addrs.iter().position(|&b| b == a))
                    .unwrap_or(0);
                st.addrs = addrs.into();
                Ok(st.addrs.clone())
            }
            Err(e) => {
                if had {
                    warn!(host = %self.host, error = %e, kept = ?st.addrs, "cannot re-resolve the upstream; keeping its last addresses");
                }
                Err(e)
            }
        }
    }

    /// `addr` connected: try it first from now on.
    pub fn connected(&self, addr: SocketAddr) {
        if self.literal.is_some() {
            return;
        }
        let mut st = self.state();
        if let Some(i) = st.addrs.iter().position(|&a| a == addr) {
            st.preferred = i;
        }
    }

    /// Every candidate failed: resolve again early (see [`MIN_RETRY`]).
    pub fn all_failed(&self) {
        if self.literal.is_some() {
            return;
        }
        let mut st = self.state();
        if let Some(soon) = st.tried_at.map(|t| t + MIN_RETRY) {
            st.due_at = Some(st.due_at.map_or(soon, |d| d.min(soon)));
        }
    }
}

#[cfg(test)]
mod tests;
