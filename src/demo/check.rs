//! The demo's self-check: what the scenarios injected against what the
//! proxy recorded, row by row.

use std::collections::BTreeMap;
use std::fmt::Write as _;

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
}
