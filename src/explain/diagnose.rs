//! The diagnosis: a pure function from the Prometheus text of `/metrics`
//! to a plain-language report, so it is tested on canned texts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::meaning::{Meaning, meaning};
use super::prom::{self, Sample, buckets, quantile};
use crate::metrics::{IDLE_BUCKETS, names};

/// Closure kinds summed over routes: (code, side, cause) → count.
fn closures(samples: &[Sample]) -> BTreeMap<(String, String, String), f64> {
    let mut m = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name == names::CLOSED && s.value > 0.0)
    {
        let key = |k: &str| s.label(k).to_string();
        *m.entry((key("code"), key("side"), key("cause")))
            .or_insert(0.0) += s.value;
    }
    m
}

/// The idle-limit signature: a narrow idle window (one of the windows
/// around a known limit) holding most abnormal closures.
fn idle_cluster(samples: &[Sample]) -> Option<(f64, f64, f64)> {
    let b = buckets(samples, names::IDLE_BEFORE_CLOSE, ("class", "abnormal"));
    let total = b.last().map_or(0.0, |x| x.1);
    if total < 5.0 {
        return None;
    }
    // Windows are the buckets whose lower edge is L-1 of a known limit L.
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, cum) in &b {
        let n = cum - below;
        let is_window = IDLE_BUCKETS
            .windows(2)
            .any(|w| w[0] == lower && w[1] == le && le - lower <= 3.0);
        if is_window && n / total >= 0.5 {
            return Some((lower + 1.0, n, total));
        }
        (lower, below) = (le, cum);
    }
    None
}

/// One kind of ending, `{code, side, cause}`, with its count and meaning.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Kind {
    /// The close code label.
    pub code: String,
    /// Which side ended the session.
    pub side: String,
    /// Why.
    pub cause: String,
    /// How many sessions ended so.
    pub count: f64,
    /// Their share of ended sessions, 0 to 1.
    pub share: f64,
    /// What happened ([`Meaning::what`]).
    pub what: &'static str,
    /// Its usual cause and what to do ([`Meaning::why`]).
    pub why: &'static str,
}

/// The diagnosis of a set of samples: the counts, the top kinds of
/// ending, and the findings in plain language. Its `Display` is the text
/// of `wspulse explain --admin`; it serializes for `--output json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Diagnosis {
    /// Sessions opened.
    pub opened: f64,
    /// Sessions ended.
    pub closed: f64,
    /// Sessions open now.
    pub active: f64,
    /// Ended sessions that were abnormal (not 1000, 1001 or an application code).
    pub abnormal: f64,
    /// The most frequent kinds of ending, most frequent first (at most six).
    pub kinds: Vec<Kind>,
    /// What stands out, one sentence each; empty when nothing does.
    pub findings: Vec<String>,
}

impl Diagnosis {
    /// Share of ended sessions that were abnormal, 0 to 1 (0 with none ended).
    pub fn abnormal_ratio(&self) -> f64 {
        if self.closed > 0.0 {
            self.abnormal / self.closed
        } else {
            0.0
        }
    }

    /// Everything after the first line: the abnormal share, the kinds, the
    /// findings. The fleet view writes its own first line above it.
    pub fn write_body(&self, out: &mut String) {
        if self.closed > 0.0 {
            let _ = writeln!(
                out,
                "{:.1}% of ended sessions were abnormal (not 1000, 1001 or an application code).",
                100.0 * self.abnormal_ratio()
            );
            let _ = writeln!(out, "\nHow sessions ended (top kinds):");
            for k in &self.kinds {
                let _ = writeln!(
                    out,
                    "  {:>5.1}%  {} {}/{} ({:.0}): {}.\n          {}.",
                    100.0 * k.share,
                    k.code,
                    k.side,
                    k.cause,
                    k.count,
                    k.what,
                    k.why
                );
            }
        }
        let _ = writeln!(out, "\nDiagnosis:");
        if self.findings.is_empty() {
            let _ = writeln!(
                out,
                "- nothing alarming: sessions end cleanly and the upstream is reachable."
            );
        }
        for f in &self.findings {
            let _ = writeln!(out, "- {f}");
        }
    }
}

impl std::fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = format!(
            "wspulse explain: {:.0} sessions opened, {:.0} ended, {:.0} active now.\n",
            self.opened, self.closed, self.active
        );
        self.write_body(&mut out);
        f.write_str(&out)
    }
}

/// Build the diagnosis for a `/metrics` text.
/// The reconnect delays after abnormal endings, summed over sides, as
/// cumulative buckets: "clients reconnect without backoff" when at least
/// half of at least five came back within a second.
fn reconnects_without_backoff(samples: &[Sample]) -> Option<String> {
    let bucket = format!("{}_bucket", names::RECONNECT_DELAY);
    let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name == bucket && s.has_labels(&[("class", "abnormal")]))
    {
        let le = match s.labels.get("le").map(String::as_str) {
            Some("+Inf") => f64::INFINITY,
            Some(v) => v.parse().ok()?,
            None => continue,
        };
        by_le.entry(le.to_bits()).or_insert((le, 0.0)).1 += s.value;
    }
    let mut cumulative: Vec<(f64, f64)> = by_le.into_values().collect();
    cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = cumulative.last()?.1;
    let within = cumulative
        .iter()
        .filter(|(le, _)| *le <= 1.0)
        .map(|&(_, n)| n)
        .fold(0.0, f64::max);
    if total < 5.0 || within / total < 0.5 {
        return None;
    }
    let p50 = quantile(&cumulative, 0.5)?;
    let p90 = quantile(&cumulative, 0.9)?;
    Some(format!(
        "{:.0}% of the {total:.0} clients that came back after an abnormal ending did so within 1 s \
         (p50 about {:.0} ms, p90 about {:.0} ms): clients without backoff, which turn an upstream restart into a \
         reconnect storm. Give them exponential backoff with jitter, honour close codes 1012/1013 and Retry-After; \
         spread drains with shutdown.spread and cap storms with limits.max_handshakes_per_second.",
        100.0 * within / total,
        p50 * 1000.0,
        p90 * 1000.0
    ))
}

pub fn diagnose(text: &str) -> String {
    analyse(&prom::parse(text)).to_string()
}

/// The diagnosis of `samples`, whatever they came from: one instance's
/// `/metrics`, or the fleet's increases over a window read from Prometheus
/// ([`super::fleet`]), in the same names and labels.
pub fn analyse(samples: &[Sample]) -> Diagnosis {
    let opened = prom::sum(samples, names::OPENED, &[]);
    let active = prom::sum(samples, names::ACTIVE, &[]);
    let by_kind = closures(samples);
    // fold from +0: `Sum` of no f64 is -0, printed "-0 ended".
    let closed: f64 = by_kind.values().fold(0.0, |a, b| a + b);
    let abnormal: f64 = by_kind
        .iter()
        .filter(|((c, _, _), _)| !crate::protocol::is_clean_code(c.parse().unwrap_or(0)))
        .fold(0.0, |a, (_, v)| a + v);
    let mut sorted: Vec<_> = by_kind.iter().collect();
    sorted.sort_by(|a, b| b.1.total_cmp(a.1));
    let kinds = sorted
        .iter()
        .take(6)
        .map(|((code, side, cause), n)| {
            let Meaning { what, why, .. } = meaning(code.parse().unwrap_or(0), side, cause);
            Kind {
                code: code.clone(),
                side: side.clone(),
                cause: cause.clone(),
                count: **n,
                share: if closed > 0.0 { **n / closed } else { 0.0 },
                what,
                why,
            }
        })
        .collect();
    Diagnosis {
        opened,
        closed,
        active,
        abnormal,
        kinds,
        findings: findings(samples, &by_kind, closed),
    }
}

/// What stands out, one sentence each.
fn findings(
    samples: &[Sample],
    by_kind: &BTreeMap<(String, String, String), f64>,
    closed: f64,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some((limit, n, total)) = idle_cluster(samples) {
        out.push(format!(
            "{n:.0} of {total:.0} abnormal closures happened after about {limit:.0} s of idle time: that is an idle timeout \
             (a load balancer, proxy or NAT in the path; 60 s is the nginx and AWS ALB default, 350 s AWS NLB). \
             Lower keepalive.interval below {limit:.0} s so pings keep the connection busy, or raise that idle timeout."
        ));
    }
    let kind = |code: &str, side: &str, cause: &str| {
        by_kind
            .get(&(code.into(), side.into(), cause.into()))
            .copied()
            .unwrap_or(0.0)
    };
    let share = |n: f64| if closed > 0.0 { n / closed } else { 0.0 };
    let up_eof = kind("1006", "upstream", "eof") + kind("1006", "upstream", "reset");
    if up_eof >= 3.0 && share(up_eof) >= 0.2 {
        out.push(format!(
            "{:.0}% of sessions ended because the upstream dropped TCP without a Close frame: upstream crashes or deploys. \
             Correlate with upstream restarts; make the upstream close sessions with 1001/1012 when it stops.",
            100.0 * share(up_eof)
        ));
    }
    let client_gone = kind("1006", "client", "eof")
        + kind("1006", "client", "reset")
        + kind("1006", "client", "ping_timeout");
    if client_gone >= 3.0 && share(client_gone) >= 0.3 {
        out.push(format!(
            "{:.0}% of sessions ended with the client vanishing (no Close frame): lost networks, apps killed, or idle kills \
             between the client and wspulse. Make sure clients reconnect with backoff and call close() when they leave.",
            100.0 * share(client_gone)
        ));
    }
    let pt = kind("1006", "upstream", "ping_timeout");
    if pt >= 1.0 {
        out.push(format!(
            "{pt:.0} sessions ended because the upstream stopped answering pings: it is overloaded or hung."
        ));
    }
    let failures = prom::sum(samples, names::CONNECT_FAILURES, &[]);
    if failures > 0.0 {
        let reasons: Vec<String> = samples
            .iter()
            .filter(|s| s.name == names::CONNECT_FAILURES && s.value > 0.0)
            .map(|s| {
                format!(
                    "{} {:.0}",
                    s.labels.get("reason").map_or("?", String::as_str),
                    s.value
                )
            })
            .collect();
        out.push(format!(
            "{failures:.0} upstream dials failed ({}): clients got 502/504. Check that the upstream is running and reachable from wspulse.",
            reasons.join(", ")
        ));
    }
    for s in samples
        .iter()
        .filter(|s| s.name == names::REJECTIONS && s.value > 0.0)
    {
        let status = s.labels.get("status").map_or("?", String::as_str);
        let why = match status {
            "503" => {
                "over an admission limit (max_connections, max_connections_per_client, max_handshakes_per_second) or draining"
            }
            "408" => {
                "clients that did not finish the upgrade within limits.handshake_timeout (slow or hostile)"
            }
            "400" | "426" => {
                "requests that were not WebSocket upgrades (health checks or scanners hitting the WebSocket port?)"
            }
            "431" => "request heads too large",
            _ => "the upstream refused the handshake with this status",
        };
        out.push(format!(
            "{:.0} handshakes refused with {status}: {why}.",
            s.value
        ));
    }
    if let Some(line) = reconnects_without_backoff(samples) {
        out.push(line);
    }
    for side in ["client", "upstream"] {
        let b = buckets(samples, names::PING_RTT, ("side", side));
        if let Some(p99) = quantile(&b, 0.99).filter(|&p| p >= 0.5) {
            out.push(format!(
                "p99 ping round trip on the {side} leg is about {:.0} ms: a slow network or an overloaded peer.",
                p99 * 1000.0
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed_line(code: &str, side: &str, cause: &str, n: u32) -> String {
        format!(
            "wspulse_connections_closed_total{{cause=\"{cause}\",code=\"{code}\",route=\"default\",side=\"{side}\"}} {n}\n"
        )
    }

    fn idle_lines(class: &str, counts: &[(f64, u32)]) -> String {
        // counts: per-bucket (upper bound, count), converted to cumulative.
        let mut s = String::new();
        let mut cum = 0;
        for le in IDLE_BUCKETS {
            cum += counts
                .iter()
                .filter(|(b, _)| b == le)
                .map(|(_, n)| n)
                .sum::<u32>();
            s += &format!(
                "wspulse_idle_before_close_seconds_bucket{{class=\"{class}\",le=\"{le}\"}} {cum}\n"
            );
        }
        s + &format!(
            "wspulse_idle_before_close_seconds_bucket{{class=\"{class}\",le=\"+Inf\"}} {cum}\n"
        )
    }

    #[test]
    fn idle_limit_scenario_names_the_limit() {
        let text = format!(
            "wspulse_connections_opened_total{{route=\"default\"}} 120\nwspulse_connections_active 0\n{}{}{}",
            closed_line("1006", "client", "reset", 100),
            closed_line("1000", "client", "close_frame", 20),
            idle_lines("abnormal", &[(62.0, 90), (5.0, 10)])
        );
        let d = diagnose(&text);
        assert!(d.contains("after about 60 s of idle time"), "{d}");
        assert!(d.contains("keepalive.interval below 60 s"), "{d}");
        assert!(d.contains("client connection reset"), "{d}");
    }

    #[test]
    fn upstream_crash_scenario_blames_the_upstream() {
        let text = format!(
            "wspulse_connections_opened_total{{route=\"default\"}} 50\nwspulse_connections_active 10\n{}{}\
             wspulse_upstream_connect_failures_total{{reason=\"refused\"}} 7\n",
            closed_line("1006", "upstream", "eof", 30),
            closed_line("1000", "client", "close_frame", 10),
        );
        let d = diagnose(&text);
        assert!(
            d.contains("75% of sessions ended because the upstream dropped TCP"),
            "{d}"
        );
        assert!(d.contains("7 upstream dials failed (refused 7)"), "{d}");
        assert!(d.contains("upstream crashes, OOM kills or deploys"), "{d}");
    }

    #[test]
    fn clients_without_backoff_are_named_with_their_delays() {
        let text = "wspulse_reconnect_delay_seconds_bucket{class=\"abnormal\",side=\"client\",le=\"0.1\"} 6\n\
            wspulse_reconnect_delay_seconds_bucket{class=\"abnormal\",side=\"client\",le=\"1\"} 8\n\
            wspulse_reconnect_delay_seconds_bucket{class=\"abnormal\",side=\"client\",le=\"+Inf\"} 10\n\
            wspulse_reconnect_delay_seconds_bucket{class=\"abnormal\",side=\"upstream\",le=\"0.1\"} 2\n\
            wspulse_reconnect_delay_seconds_bucket{class=\"abnormal\",side=\"upstream\",le=\"1\"} 2\n\
            wspulse_reconnect_delay_seconds_bucket{class=\"abnormal\",side=\"upstream\",le=\"+Inf\"} 2\n";
        let out = diagnose(text);
        assert!(
            out.contains("83% of the 12 clients that came back"),
            "{out}"
        );
        assert!(out.contains("p50 about 75 ms"), "{out}");
        // With backoff: nothing said.
        let patient = "wspulse_reconnect_delay_seconds_bucket{class=\"abnormal\",side=\"client\",le=\"1\"} 1\n\
            wspulse_reconnect_delay_seconds_bucket{class=\"abnormal\",side=\"client\",le=\"+Inf\"} 10\n";
        assert!(!diagnose(patient).contains("without backoff"));
    }

    #[test]
    fn a_fresh_instance_reads_zero_not_minus_zero() {
        let d = diagnose("wspulse_connections_active 0\n");
        assert!(
            d.starts_with("wspulse explain: 0 sessions opened, 0 ended, 0 active now."),
            "{d}"
        );
    }

    #[test]
    fn healthy_scenario_says_so() {
        let text = format!(
            "wspulse_connections_opened_total{{route=\"default\"}} 100\nwspulse_connections_active 2\n{}{}",
            closed_line("1000", "client", "close_frame", 90),
            closed_line("1001", "client", "close_frame", 8),
        );
        let d = diagnose(&text);
        assert!(d.contains("0.0% of ended sessions were abnormal"), "{d}");
        assert!(d.contains("nothing alarming"), "{d}");
    }
}
