//! The Prometheus text format, read back: the one parser that `explain`,
//! the demo's table and the integration tests share.
//!
//! It reads the subset wspulse emits (what [`crate::metrics::Metrics::encode`]
//! writes and `/metrics` serves): `# …` lines are skipped, a sample is
//! `name{label="value",…} value` with backslash escapes in label values, and
//! an optional timestamp after the value is ignored. A line it cannot read
//! is skipped, never a panic: the text may come from any admin address.

use std::collections::BTreeMap;

/// One sample: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, with its `_bucket`/`_sum`/`_count` suffix for histograms.
    pub name: String,
    /// Label pairs.
    pub labels: BTreeMap<String, String>,
    /// Value (`+Inf`, `-Inf` and `NaN` included, as Prometheus writes them).
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, or `""` when the sample has no such label.
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }

    /// Whether every `(key, value)` of `want` is one of its labels.
    pub fn has_labels(&self, want: &[(&str, &str)]) -> bool {
        want.iter()
            .all(|(k, v)| self.labels.get(*k).is_some_and(|l| l == v))
    }
}

/// Every sample of a `/metrics` text, in order.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    // The name ends at `{` or at the first blank.
    let name_end = line.find(['{', ' ', '\t'])?;
    let name = &line[..name_end];
    let (labels, rest) = if line[name_end..].starts_with('{') {
        parse_labels(&line[name_end + 1..])?
    } else {
        (BTreeMap::new(), &line[name_end..])
    };
    // The value, then an optional timestamp.
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `key="value",…}` → the labels and what follows the `}`.
fn parse_labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, after) = s.split_once("=\"")?;
        // Values escape `\`, `"` and newlines with a backslash; find the
        // closing quote that is not escaped.
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => {
                    let (_, n) = chars.next()?;
                    value.push(if n == 'n' { '\n' } else { n });
                }
                '"' => break i + 1,
                c => value.push(c),
            }
        };
        labels.insert(key.trim().to_string(), value);
        s = &after[end..];
    }
}

/// The sum of `name` over the samples whose labels include all of `want`
/// (0 when there is none): a counter summed over routes, say.
pub fn sum(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && s.has_labels(want))
        // fold from +0: `Sum` of no f64 is -0, which prints as "-0".
        .fold(0.0, |a, s| a + s.value)
}

/// The buckets of one histogram series as exposed, (upper bound `le`,
/// cumulative count), sorted by bound: `{name}_bucket` samples whose
/// `label.0` is `label.1`.
pub fn buckets(samples: &[Sample], name: &str, label: (&str, &str)) -> Vec<(f64, f64)> {
    let bucket = format!("{name}_bucket");
    let mut cumulative: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.name == bucket && s.has_labels(&[label]))
        .filter_map(|s| {
            let le = s.labels.get("le")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, s.value))
        })
        .collect();
    cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
    cumulative
}

/// The buckets of a histogram summed over every series that `keep`
/// selects, bound by bound: (upper bound `le`, cumulative count), sorted
/// by bound. The sum of cumulative buckets is the cumulative bucket of the
/// sum, so this is the histogram of all those series together (for
/// example `wspulse_reconnect_delay_seconds` over both sides of a class).
pub fn buckets_summed(
    samples: &[Sample],
    name: &str,
    keep: impl Fn(&Sample) -> bool,
) -> Vec<(f64, f64)> {
    let bucket = format!("{name}_bucket");
    let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == bucket && keep(s)) {
        let le = match s.labels.get("le").map(String::as_str) {
            Some("+Inf") => f64::INFINITY,
            Some(v) => match v.parse::<f64>() {
                Ok(le) => le,
                Err(_) => continue,
            },
            None => continue,
        };
        by_le.entry(le.to_bits()).or_insert((le, 0.0)).1 += s.value;
    }
    let mut cumulative: Vec<(f64, f64)> = by_le.into_values().collect();
    cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
    cumulative
}

/// How many observations of a histogram given as [`buckets`] returns them
/// were at most `bound`: the cumulative count of the largest bucket bound
/// not above it (exact when `bound` is a bucket bound; 0 below the first).
pub fn count_within(cumulative: &[(f64, f64)], bound: f64) -> f64 {
    cumulative
        .iter()
        .filter(|(le, _)| *le <= bound)
        .map(|&(_, n)| n)
        .fold(0.0, f64::max)
}

/// The `q` quantile of a histogram given as [`buckets`] returns them
/// (cumulative counts), interpolated linearly in its bucket (as
/// Prometheus' `histogram_quantile`); `None` without samples. Past the
/// last finite bound, that bound.
pub fn quantile(cumulative: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = cumulative.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, cum) in cumulative {
        if cum >= rank && cum > below {
            if le.is_infinite() {
                return Some(lower);
            }
            return Some(lower + (le - lower) * ((rank - below) / (cum - below)));
        }
        if le.is_finite() {
            lower = le;
        }
        below = cum;
    }
    Some(lower)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_metrics_encode_writes() {
        let m = crate::metrics::Metrics::standalone(&[], 0).unwrap();
        m.rejection(403);
        let samples = parse(&m.encode());
        assert_eq!(
            sum(
                &samples,
                crate::metrics::names::REJECTIONS,
                &[("status", "403")]
            ),
            1.0
        );
        assert!(
            samples
                .iter()
                .any(|s| s.name == crate::metrics::names::ACTIVE && s.labels.is_empty())
        );
    }

    #[test]
    fn parses_escaped_labels_timestamps_and_skips_junk() {
        let s = parse(
            "m{a=\"x\\\"y\",b=\"z,}\\n\"} 3\n# HELP x\n\nbare 4.5 1700000000\n\
             broken{a=\"x\" 1\nnovalue\nm2{} +Inf\n",
        );
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(s[0].label("a"), "x\"y");
        assert_eq!(s[0].label("b"), "z,}\n");
        assert_eq!(s[0].value, 3.0);
        assert_eq!((s[1].name.as_str(), s[1].value), ("bare", 4.5));
        assert!(s[1].labels.is_empty());
        assert_eq!(s[2].value, f64::INFINITY);
    }

    #[test]
    fn sums_over_the_labels_not_asked_for() {
        let s = parse(
            "c{code=\"1006\",route=\"a\"} 2\nc{code=\"1006\",route=\"b\"} 3\nc{code=\"1000\",route=\"a\"} 7\n",
        );
        assert_eq!(sum(&s, "c", &[("code", "1006")]), 5.0);
        assert_eq!(sum(&s, "c", &[]), 12.0);
        assert_eq!(sum(&s, "c", &[("code", "1001")]), 0.0);
        assert_eq!(sum(&s, "other", &[]), 0.0);
    }

    #[test]
    fn buckets_are_sorted_by_bound() {
        let s = parse(
            "h_bucket{side=\"client\",le=\"+Inf\"} 4\nh_bucket{side=\"client\",le=\"0.5\"} 1\n\
             h_bucket{side=\"upstream\",le=\"0.5\"} 9\nh_bucket{side=\"client\",le=\"1\"} 3\n",
        );
        assert_eq!(
            buckets(&s, "h", ("side", "client")),
            vec![(0.5, 1.0), (1.0, 3.0), (f64::INFINITY, 4.0)]
        );
    }

    #[test]
    fn summed_buckets_add_series_bound_by_bound() {
        let s = parse(
            "h_bucket{class=\"abnormal\",side=\"client\",le=\"1\"} 3\n\
             h_bucket{class=\"abnormal\",side=\"upstream\",le=\"1\"} 2\n\
             h_bucket{class=\"abnormal\",side=\"client\",le=\"+Inf\"} 4\n\
             h_bucket{class=\"abnormal\",side=\"upstream\",le=\"+Inf\"} 5\n\
             h_bucket{class=\"clean\",side=\"client\",le=\"1\"} 100\n\
             h_bucket{class=\"abnormal\",side=\"client\",le=\"junk\"} 100\n",
        );
        let b = buckets_summed(&s, "h", |s| s.has_labels(&[("class", "abnormal")]));
        assert_eq!(b, vec![(1.0, 5.0), (f64::INFINITY, 9.0)]);
        assert_eq!(count_within(&b, 1.0), 5.0);
        assert_eq!(count_within(&b, 2.0), 5.0);
        assert_eq!(count_within(&b, 0.5), 0.0);
        assert_eq!(count_within(&b, f64::INFINITY), 9.0);
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let b = [(0.001, 50.0), (0.002, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(&b, 0.5), Some(0.001));
        let p75 = quantile(&b, 0.75).unwrap();
        assert!((p75 - 0.0015).abs() < 1e-12, "{p75}");
        let b = [(0.001, 50.0), (0.01, 100.0), (f64::INFINITY, 100.0)];
        assert!((quantile(&b, 0.99).unwrap() - 0.00982).abs() < 1e-5);
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[(0.001, 0.0), (f64::INFINITY, 0.0)], 0.5), None);
        // Everything past the last finite bound: that bound.
        assert_eq!(
            quantile(&[(0.001, 0.0), (f64::INFINITY, 4.0)], 0.99),
            Some(0.001)
        );
    }
}
