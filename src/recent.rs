//! The last N ended sessions, for `GET /closures`.
//!
//! A bounded ring behind a mutex. The relay touches it once per session, at
//! the end (one push); readers copy out what they need. Counters say how
//! often; this says which sessions, on which route, after how much idle time.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::record::ClosureRecord;

/// Filters of `GET /closures`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Only this class (`clean` / `abnormal`).
    pub class: Option<String>,
    /// Only this code.
    pub code: Option<u16>,
    /// At most this many, newest first.
    pub limit: Option<usize>,
}

impl Filter {
    /// Parse a query string such as `class=abnormal&code=1006&limit=50`.
    pub fn parse(query: &str) -> Result<Filter, String> {
        let mut f = Filter::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "class" if v == "clean" || v == "abnormal" => f.class = Some(v.to_string()),
                "class" => return Err(format!("class must be clean or abnormal, not {v:?}")),
                "code" => {
                    f.code = Some(
                        v.parse()
                            .map_err(|_| format!("code must be a number, not {v:?}"))?,
                    )
                }
                "limit" => {
                    f.limit = Some(
                        v.parse()
                            .map_err(|_| format!("limit must be a number, not {v:?}"))?,
                    )
                }
                other => return Err(format!("unknown filter {other:?} (class, code, limit)")),
            }
        }
        Ok(f)
    }
}

/// A bounded ring of recent closures; capacity 0 disables it.
pub struct RecentClosures {
    capacity: usize,
    ring: Mutex<VecDeque<ClosureRecord>>,
}

impl RecentClosures {
    /// A ring holding at most `capacity` records.
    pub fn new(capacity: usize) -> RecentClosures {
        RecentClosures {
            capacity,
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
        }
    }

    /// Whether the ring is enabled.
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Add a record, dropping the oldest beyond capacity.
    pub fn push(&self, record: ClosureRecord) {
        if self.capacity == 0 {
            return;
        }
        // A poisoned lock only means another push panicked mid-way; the
        // ring is still a valid VecDeque, so keep using it.
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(record);
    }

    /// Matching records, newest first.
    pub fn query(&self, filter: &Filter) -> Vec<ClosureRecord> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter()
            .rev()
            .filter(|r| filter.class.as_deref().is_none_or(|c| c == r.class))
            .filter(|r| filter.code.is_none_or(|c| c == r.code))
            .take(filter.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::record;

    #[test]
    fn ring_is_bounded_and_newest_first() {
        let r = RecentClosures::new(3);
        for code in [1000, 4001, 1011, 4002] {
            r.push(record(code));
        }
        let all = r.query(&Filter::default());
        assert_eq!(
            all.iter().map(|r| r.code).collect::<Vec<_>>(),
            vec![4002, 1011, 4001]
        );
        let abnormal = r.query(&Filter::parse("class=abnormal").unwrap());
        assert_eq!(abnormal.len(), 1);
        assert_eq!(r.query(&Filter::parse("code=4001").unwrap()).len(), 1);
        assert_eq!(r.query(&Filter::parse("limit=2").unwrap()).len(), 2);
        assert!(Filter::parse("class=weird").is_err());
        assert!(Filter::parse("limit=x").is_err());
    }

    #[test]
    fn disabled_ring_keeps_nothing() {
        let r = RecentClosures::new(0);
        r.push(record(1000));
        assert!(r.query(&Filter::default()).is_empty());
    }
}
