//! The demo's self-check: what the scenarios injected against what the
//! proxy recorded, row by row; and whether the reconnecting groups'
//! delays, as the proxy recorded them, show the behaviour each group has.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::reconnect::{GROWTH_REACH, GroupRow, Growth};
use super::snapshot::RowKey;

/// Every row where what was injected and what the proxy recorded differ.
pub fn check(
    expected: &BTreeMap<RowKey, u64>,
    recorded: &BTreeMap<RowKey, u64>,
) -> Vec<(RowKey, u64, u64)> {
    let mut keys: Vec<&RowKey> = expected.keys().chain(recorded.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let want = expected.get(k).copied().unwrap_or(0);
            let got = recorded.get(k).copied().unwrap_or(0);
            (want != got).then(|| (k.clone(), want, got))
        })
        .collect()
}

/// The closing lines: the check, then the clients' problems, if any.
pub(super) fn check_report(
    scenarios: u64,
    mismatches: &[(RowKey, u64, u64)],
    problems: &[String],
    expected: &BTreeMap<RowKey, u64>,
) -> String {
    let mut o = String::new();
    let kinds = expected.len();
    if mismatches.is_empty() {
        let _ = writeln!(
            o,
            "\ndemo check: {scenarios} scenarios, all classified as injected ({kinds} kinds of ending)"
        );
    } else {
        let _ = writeln!(
            o,
            "\ndemo check: {scenarios} scenarios, {} mismatches:",
            mismatches.len()
        );
        for (k, want, got) in mismatches {
            let _ = writeln!(
                o,
                "  mismatch: {}: injected {want}, proxy recorded {got}",
                k.short()
            );
        }
    }
    if !problems.is_empty() {
        let _ = writeln!(o, "client-side problems ({}):", problems.len());
        for p in problems.iter().take(50) {
            let _ = writeln!(o, "  {p}");
        }
        if problems.len() > 50 {
            let _ = writeln!(o, "  … and {} more", problems.len() - 50);
        }
    }
    o
}

// === The reconnecting groups ===

/// Fewer reconnects than this in a group: too few to judge its delays.
pub const MIN_RECONNECTS: u64 = 5;
/// The no-backoff group: at least this share of reconnects within 1 s.
pub const NO_BACKOFF_WITHIN_1S: f64 = 0.9;
/// The backoff group's median: at least this many times the no-backoff's.
pub const P50_RATIO: f64 = 2.0;
/// Growth is judged over at least this many backoff clients with
/// [`GROWTH_REACH`] reconnects...
pub const GROWTH_MIN_CLIENTS: usize = 4;
/// ...whose 3rd to 6th delays average at least this many times their first.
pub const GROWTH_RATIO: f64 = 2.0;

/// What a group's clients did: the sessions they opened, and how many of
/// them opened any (each one's first session is no reconnect).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Made {
    /// Sessions opened.
    pub sessions: u64,
    /// Clients that opened at least one.
    pub clients: u64,
}

/// The reconnect check's findings: what held, what did not, and what
/// there was too little to judge.
#[derive(Debug, Default, PartialEq)]
pub struct ReconnectCheck {
    /// Checks that held, one phrase each.
    pub held: Vec<String>,
    /// Checks that did not, one phrase each.
    pub failed: Vec<String>,
    /// Checks not made (too few observations: a short run).
    pub unchecked: Vec<String>,
}

fn ms(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.1} s")
    }
}

/// Check the groups' delays as the proxy recorded them (`no`, `back`: the
/// instances' histograms; `growth`: the backoff instance's `/closures`)
/// against what the clients do, and their counts against what they `made`:
///
/// | check | holds when |
/// |-------|------------|
/// | counted | each group's reconnects recorded are its sessions minus its clients (each client's first session is none), or up to one fewer per client |
/// | no backoff | at least [`NO_BACKOFF_WITHIN_1S`] (90 %) of the no-backoff group's reconnects within 1 s |
/// | apart | the backoff group's p50 at least [`P50_RATIO`] (2) times the no-backoff group's |
/// | growing | over at least [`GROWTH_MIN_CLIENTS`] (4) backoff clients with [`GROWTH_REACH`] (4) reconnects, their 3rd–6th delays average at least [`GROWTH_RATIO`] (2) times their first |
///
/// The last three need [`MIN_RECONNECTS`] per group (or the clients for
/// growth); with fewer (a run of a second or two) they are listed as not
/// checked, not failed.
pub fn check_reconnects(
    no: &GroupRow,
    back: &GroupRow,
    made: [Made; 2],
    growth: &Growth,
) -> ReconnectCheck {
    let mut c = ReconnectCheck::default();
    for (g, m) in [no, back].into_iter().zip(made) {
        // A client whose next upgrade raced its previous ending's record
        // is measured against the ending before: its 2nd session only then
        // goes unobserved. Hence "up to one fewer per client".
        let want = m.sessions.saturating_sub(m.clients);
        let got = g.reconnects();
        let name = g.group.name();
        if got <= want && got + m.clients >= want {
            c.held
                .push(format!("{name} {got} reconnects recorded of {want} made"));
        } else {
            c.failed.push(format!(
                "{name}: {want} reconnects made ({} sessions, {} clients), proxy recorded {got}",
                m.sessions, m.clients
            ));
        }
    }
    let enough = |g: &GroupRow| g.reconnects() >= MIN_RECONNECTS;
    match no.share_within(1.0).filter(|_| enough(no)) {
        None => c.unchecked.push(format!(
            "no-backoff delays: {} reconnects, fewer than {MIN_RECONNECTS}",
            no.reconnects()
        )),
        Some(share) if share >= NO_BACKOFF_WITHIN_1S => c
            .held
            .push(format!("no-backoff {:.0}% within 1 s", 100.0 * share)),
        Some(share) => c.failed.push(format!(
            "no-backoff: {:.0}% of its reconnects within 1 s, expected at least {:.0}%",
            100.0 * share,
            100.0 * NO_BACKOFF_WITHIN_1S
        )),
    }
    match (no.quantile(0.5), back.quantile(0.5)) {
        (Some(a), Some(b)) if enough(no) && enough(back) => {
            if b >= P50_RATIO * a {
                c.held.push(format!(
                    "backoff p50 {} = {:.0}x no-backoff's {}",
                    ms(b),
                    b / a.max(1e-9),
                    ms(a)
                ));
            } else {
                c.failed.push(format!(
                    "backoff p50 {} is not {P50_RATIO}x no-backoff's {}",
                    ms(b),
                    ms(a)
                ));
            }
        }
        _ => c.unchecked.push(format!(
            "the p50s: {} and {} reconnects, fewer than {MIN_RECONNECTS}",
            no.reconnects(),
            back.reconnects()
        )),
    }
    if growth.clients < GROWTH_MIN_CLIENTS {
        c.unchecked.push(format!(
            "growth: {} backoff clients with {GROWTH_REACH} reconnects, fewer than {GROWTH_MIN_CLIENTS}",
            growth.clients
        ));
    } else if growth.later >= GROWTH_RATIO * growth.first {
        c.held.push(format!(
            "backoff delays grow: 1st reconnect {} on average, 3rd-6th {} ({} clients)",
            ms(growth.first),
            ms(growth.later),
            growth.clients
        ));
    } else {
        c.failed.push(format!(
            "backoff delays do not grow: 1st reconnect {} on average, 3rd-6th {} ({} clients), expected {GROWTH_RATIO}x",
            ms(growth.first),
            ms(growth.later),
            growth.clients
        ));
    }
    c
}

impl ReconnectCheck {
    /// Whether nothing failed.
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }

    /// Its lines of the report: `demo check: reconnects: …`.
    pub fn report(&self) -> String {
        let mut o = String::new();
        if self.ok() {
            let _ = writeln!(
                o,
                "demo check: reconnects as injected: {}",
                self.held.join("; ")
            );
        } else {
            let _ = writeln!(
                o,
                "demo check: reconnects: {} mismatches:",
                self.failed.len()
            );
            for f in &self.failed {
                let _ = writeln!(o, "  mismatch: {f}");
            }
        }
        for u in &self.unchecked {
            let _ = writeln!(o, "  not checked (run longer): {u}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_lists_every_difference() {
        let k = |c: u16| RowKey::Closed {
            code: c,
            side: "client".into(),
            cause: "close_frame".into(),
        };
        let expected = BTreeMap::from([(k(1000), 3), (RowKey::Rejected { status: 403 }, 1)]);
        let recorded = BTreeMap::from([
            (k(1000), 3),
            (k(1001), 0),
            (k(1005), 1),
            (RowKey::Rejected { status: 403 }, 0),
        ]);
        let m = check(&expected, &recorded);
        assert_eq!(
            m,
            vec![(k(1005), 0, 1), (RowKey::Rejected { status: 403 }, 1, 0)]
        );
        let text = check_report(4, &m, &[], &expected);
        assert!(
            text.contains("demo check: 4 scenarios, 2 mismatches:"),
            "{text}"
        );
        assert!(text.contains("1005/client/close_frame: injected 0, proxy recorded 1"));
        let ok = check_report(4, &[], &[], &expected);
        assert!(ok.contains("demo check: 4 scenarios, all classified as injected"));
    }

    use super::super::reconnect::Group;

    fn row(group: Group, delays: &[(f64, u64)]) -> GroupRow {
        GroupRow {
            group,
            sessions: 0,
            delays: delays.to_vec(),
        }
    }

    const INF: f64 = f64::INFINITY;

    #[test]
    fn reconnect_groups_that_behave_pass() {
        let no = row(
            Group::NoBackoff,
            &[(0.025, 20), (0.05, 40), (1.0, 40), (INF, 40)],
        );
        let back = row(
            Group::Backoff,
            &[(0.1, 3), (0.5, 10), (1.0, 14), (5.0, 20), (INF, 20)],
        );
        let made = [
            Made {
                sessions: 43,
                clients: 3,
            },
            Made {
                sessions: 26,
                clients: 6,
            },
        ];
        let growth = Growth {
            clients: 6,
            first: 0.12,
            later: 1.1,
        };
        let c = check_reconnects(&no, &back, made, &growth);
        assert!(c.ok() && c.unchecked.is_empty(), "{c:?}");
        let text = c.report();
        assert!(text.starts_with("demo check: reconnects as injected: no-backoff 40 reconnects recorded of 40 made; backoff 20 reconnects recorded of 20 made; no-backoff 100% within 1 s; backoff p50 500 ms = 20x no-backoff's 25 ms; backoff delays grow: 1st reconnect 120 ms on average, 3rd-6th 1.1 s (6 clients)"), "{text}");
    }

    #[test]
    fn reconnect_groups_that_misbehave_fail_each_check() {
        // No-backoff clients that wait: most past 1 s; a backoff group no
        // slower than them, whose delays do not grow; counts that differ.
        let no = row(Group::NoBackoff, &[(0.5, 2), (2.0, 10), (INF, 10)]);
        let back = row(Group::Backoff, &[(0.5, 3), (2.0, 10), (INF, 10)]);
        let made = [
            Made {
                sessions: 13,
                clients: 3,
            },
            Made {
                sessions: 30,
                clients: 6,
            },
        ];
        let growth = Growth {
            clients: 5,
            first: 1.0,
            later: 1.2,
        };
        let c = check_reconnects(&no, &back, made, &growth);
        assert_eq!(c.failed.len(), 4, "{c:?}");
        let text = c.report();
        assert!(
            text.starts_with("demo check: reconnects: 4 mismatches:"),
            "{text}"
        );
        assert!(
            text.contains(
                "mismatch: backoff: 24 reconnects made (30 sessions, 6 clients), proxy recorded 10"
            ),
            "{text}"
        );
        assert!(
            text.contains("no-backoff: 20% of its reconnects within 1 s, expected at least 90%"),
            "{text}"
        );
        assert!(text.contains("is not 2x no-backoff's"), "{text}");
        assert!(text.contains("backoff delays do not grow"), "{text}");
    }

    #[test]
    fn a_short_run_is_not_checked_rather_than_failed() {
        let no = row(Group::NoBackoff, &[(0.05, 3), (INF, 3)]);
        let back = row(Group::Backoff, &[(0.2, 1), (INF, 1)]);
        let made = [
            Made {
                sessions: 6,
                clients: 3,
            },
            Made {
                sessions: 7,
                clients: 6,
            },
        ];
        let growth = Growth {
            clients: 0,
            first: 0.0,
            later: 0.0,
        };
        let c = check_reconnects(&no, &back, made, &growth);
        assert!(c.ok(), "{c:?}");
        assert_eq!(c.unchecked.len(), 3, "{c:?}");
        // A raced record: one fewer for a client still holds; two fewer
        // than one per client does not.
        let raced = row(Group::NoBackoff, &[(0.05, 2), (INF, 2)]);
        assert!(check_reconnects(&raced, &back, made, &growth).ok());
        let lost = [
            Made {
                sessions: 9,
                clients: 3,
            },
            made[1],
        ];
        assert!(!check_reconnects(&raced, &back, lost, &growth).ok());
    }
}
