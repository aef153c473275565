//! Who may open a session, and what their coming back says: the client's
//! identity (`clients.identity`), its reconnect delay, and the admission
//! limits (`limits.max_connections`, `max_connections_per_client`,
//! `max_handshakes_per_second`).
//!
//! The listener asks once per upgrade request ([`Admission::arrive`]) and
//! gets a [`Ticket`]; the ticket says whether the client is admitted and,
//! when the attempt ends (a refused handshake, or the session's end),
//! tells the tracker how, so the client's next upgrade can be measured
//! against it. A ticket dropped on a path that forgot to end it counts as
//! a refused handshake on the client's side, so the per-client count of
//! open sessions cannot leak.

use std::net::IpAddr;

use tokio::time::Instant;

use crate::clients::{self, ClientKey, EndClass, RateLimit, Reconnect, Tracker};
use crate::closure::{Closure, Side};
use crate::config::{ClientIdentity, Settings};
use crate::head::Fields;
use crate::metrics::{AdmissionReason, Metrics};

/// The seconds `Retry-After` starts from (then jittered up to twice that).
const RETRY_AFTER_BASE: u32 = 2;

/// The admission state shared by every connection.
pub struct Admission {
    tracker: Tracker,
    rate: RateLimit,
    identity: ClientIdentity,
    per_client: u32,
    metrics: Metrics,
}

/// Why a client is refused, and the `Retry-After` it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The `reason` label.
    pub reason: AdmissionReason,
    /// Seconds, jittered.
    pub retry_after: u32,
}

impl Admission {
    /// From the settings; `metrics` gets the observations.
    pub fn new(settings: &Settings, metrics: Metrics) -> Admission {
        let now = Instant::now();
        Admission {
            tracker: Tracker::new(settings.clients.track, settings.clients.remember),
            rate: RateLimit::new(settings.limits.max_handshakes_per_second, now),
            identity: settings.clients.identity.clone(),
            per_client: settings.limits.max_connections_per_client,
            metrics,
        }
    }

    /// An upgrade request from `ip` with these headers and target arrived:
    /// its identity, its reconnect delay (observed now), and a ticket.
    pub fn arrive(&self, headers: &Fields, path_and_query: &str, ip: IpAddr) -> Ticket<'_> {
        let now = Instant::now();
        let mut ticket = Ticket {
            admission: self,
            key: None,
            reconnect: None,
            over_cap: false,
            done: false,
        };
        if !self.tracker.enabled() {
            return ticket;
        }
        // The address by its octets: no string formatted per upgrade.
        let key = match (identity(&self.identity, headers, path_and_query), ip) {
            (Some(id), _) => self.tracker.key(id),
            (None, IpAddr::V4(v4)) => self.tracker.key(&v4.octets()),
            (None, IpAddr::V6(v6)) => self.tracker.key(&v6.octets()),
        };
        let (reconnect, admitted) = self.tracker.arrived(key, now, self.per_client);
        if let Some(r) = &reconnect {
            self.metrics
                .reconnect(r.class, r.side, r.after.as_secs_f64());
        }
        self.metrics.clients_tracked(self.tracker.tracked());
        ticket.key = Some(key);
        ticket.reconnect = reconnect;
        ticket.over_cap = !admitted;
        if !admitted {
            // Not one of its open sessions: nothing to give back later.
            ticket.done = true;
        }
        ticket
    }
}

/// One upgrade attempt's place in admission.
pub struct Ticket<'a> {
    admission: &'a Admission,
    key: Option<ClientKey>,
    reconnect: Option<Reconnect>,
    over_cap: bool,
    /// The attempt's ending was recorded (or there is none to record).
    done: bool,
}

impl Ticket<'_> {
    /// The client's key (for `/closures`), when tracking is on.
    pub fn key(&self) -> Option<ClientKey> {
        self.key
    }

    /// How long since the client's previous ending, if it is remembered.
    pub fn reconnect(&self) -> Option<Reconnect> {
        self.reconnect
    }

    /// Whether the client may open a session, given whether a
    /// `max_connections` slot is free. The limits in order: the process's
    /// sessions, this client's, then the handshake rate (a refused client
    /// takes no token). A refusal is counted and remembered as the
    /// client's ending (`rejected/proxy`).
    pub fn admit(&mut self, slot_free: bool) -> Result<(), Refusal> {
        let a = self.admission;
        let reason = if !slot_free {
            AdmissionReason::MaxConnections
        } else if self.over_cap {
            AdmissionReason::PerClient
        } else if !a.rate.take(Instant::now()) {
            AdmissionReason::Rate
        } else {
            return Ok(());
        };
        a.metrics.admission_rejected(reason);
        if let Some(key) = self.key {
            if self.done {
                a.tracker.refused(key, Instant::now(), Side::Proxy);
            } else {
                self.end(EndClass::Rejected, Side::Proxy);
            }
        }
        Err(Refusal {
            reason,
            retry_after: clients::retry_after(RETRY_AFTER_BASE),
        })
    }

    /// The attempt ended: a handshake refused by `side`, or a session.
    pub fn end(&mut self, class: EndClass, side: Side) {
        if let (Some(key), false) = (self.key, self.done) {
            self.admission
                .tracker
                .ended(key, Instant::now(), class, side);
            self.admission
                .metrics
                .clients_tracked(self.admission.tracker.tracked());
        }
        self.done = true;
    }

    /// The session ended as `closure`.
    pub fn session_ended(&mut self, closure: &Closure) {
        let class = match closure.class() {
            "clean" => EndClass::Clean,
            _ => EndClass::Abnormal,
        };
        self.end(class, closure.side);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        // A path that forgot to say how the attempt ended: the client left
        // before a session began.
        self.end(EndClass::Rejected, Side::Client);
    }
}

/// The identity `how` names in this request, if the request carries it.
fn identity<'a>(
    how: &'a ClientIdentity,
    headers: &'a Fields,
    path_and_query: &'a str,
) -> Option<&'a [u8]> {
    match how {
        ClientIdentity::Ip => None,
        ClientIdentity::Header(name) => headers.get(name).filter(|v| !v.is_empty()),
        ClientIdentity::Cookie(name) => headers.get_all("cookie").find_map(|v| {
            v.split(|&b| b == b';').find_map(|pair| {
                let pair = pair.trim_ascii();
                let eq = pair.iter().position(|&b| b == b'=')?;
                (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
            })
        }),
        ClientIdentity::Query(name) => {
            let query = path_and_query.split_once('?')?.1;
            query.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == name && !v.is_empty()).then_some(v.as_bytes())
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(lines: &[(&str, &str)]) -> Fields {
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for (k, v) in lines {
            raw.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        let mut parsed = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut parsed);
        req.parse(&raw).unwrap();
        let spans = crate::head::Spans::of(&raw, req.headers);
        Fields::new(raw, spans)
    }

    #[test]
    fn identities_come_from_where_the_config_says() {
        let h = fields(&[
            ("X-Device", "phone-7"),
            ("Cookie", "theme=dark; sid=abc123"),
        ]);
        let id = |how: &str, pq| {
            identity(&how.parse().unwrap(), &h, pq).map(|v| String::from_utf8(v.to_vec()).unwrap())
        };
        assert_eq!(id("ip", "/"), None);
        assert_eq!(id("header:x-device", "/"), Some("phone-7".into()));
        assert_eq!(id("header:X-Other", "/"), None);
        assert_eq!(id("cookie:sid", "/"), Some("abc123".into()));
        assert_eq!(id("cookie:nope", "/"), None);
        assert_eq!(id("query:token", "/ws?a=1&token=t9"), Some("t9".into()));
        assert_eq!(id("query:token", "/ws?token="), None);
        assert_eq!(id("query:token", "/ws"), None);
    }
}
