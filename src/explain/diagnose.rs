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

/// Build the diagnosis for a `/metrics` text.
pub fn diagnose(text: &str) -> String {
    let samples = prom::parse(text);
    let mut out = String::new();
    let opened = prom::sum(&samples, names::OPENED, &[]);
    let active = prom::sum(&samples, names::ACTIVE, &[]);
    let by_kind = closures(&samples);
    let closed: f64 = by_kind.values().sum();
    let abnormal: f64 = by_kind
        .iter()
        .filter(|((c, _, _), _)| !crate::protocol::is_clean_code(c.parse().unwrap_or(0)))
        .map(|(_, v)| v)
        .sum();
    let _ = writeln!(
        out,
        "wspulse explain: {opened:.0} sessions opened, {closed:.0} ended, {active:.0} active now."
    );
    if closed > 0.0 {
        let _ = writeln!(
            out,
            "{:.1}% of ended sessions were abnormal (not 1000, 1001 or an application code).",
            100.0 * abnormal / closed
        );
    }
    let mut findings = 0;
    if closed > 0.0 {
        let _ = writeln!(out, "\nHow sessions ended (top kinds):");
        let mut kinds: Vec<_> = by_kind.iter().collect();
        kinds.sort_by(|a, b| b.1.total_cmp(a.1));
        for ((code, side, cause), n) in kinds.iter().take(6) {
            let Meaning { what, why, .. } = meaning(code.parse().unwrap_or(0), side, cause);
            let _ = writeln!(
                out,
                "  {:>5.1}%  {code} {side}/{cause} ({n:.0}): {what}.\n          {why}.",
                100.0 * *n / closed
            );
        }
    }
    let _ = writeln!(out, "\nDiagnosis:");
    if let Some((limit, n, total)) = idle_cluster(&samples) {
        findings += 1;
        let _ = writeln!(
            out,
            "- {n:.0} of {total:.0} abnormal closures happened after about {limit:.0} s of idle time: that is an idle timeout \
             (a load balancer, proxy or NAT in the path; 60 s is the nginx and AWS ALB default, 350 s AWS NLB). \
             Lower keepalive.interval below {limit:.0} s so pings keep the connection busy, or raise that idle timeout."
        );
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
        findings += 1;
        let _ = writeln!(
            out,
            "- {:.0}% of sessions ended because the upstream dropped TCP without a Close frame: upstream crashes or deploys. \
             Correlate with upstream restarts; make the upstream close sessions with 1001/1012 when it stops.",
            100.0 * share(up_eof)
        );
    }
    let client_gone = kind("1006", "client", "eof")
        + kind("1006", "client", "reset")
        + kind("1006", "client", "ping_timeout");
    if client_gone >= 3.0 && share(client_gone) >= 0.3 {
        findings += 1;
        let _ = writeln!(
            out,
            "- {:.0}% of sessions ended with the client vanishing (no Close frame): lost networks, apps killed, or idle kills \
             between the client and wspulse. Make sure clients reconnect with backoff and call close() when they leave.",
            100.0 * share(client_gone)
        );
    }
    let pt = kind("1006", "upstream", "ping_timeout");
    if pt >= 1.0 {
        findings += 1;
        let _ = writeln!(
            out,
            "- {pt:.0} sessions ended because the upstream stopped answering pings: it is overloaded or hung."
        );
    }
    let failures = prom::sum(&samples, names::CONNECT_FAILURES, &[]);
    if failures > 0.0 {
        findings += 1;
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
        let _ = writeln!(
            out,
            "- {failures:.0} upstream dials failed ({}): clients got 502/504. Check that the upstream is running and reachable from wspulse.",
            reasons.join(", ")
        );
    }
    for s in samples
        .iter()
        .filter(|s| s.name == names::REJECTIONS && s.value > 0.0)
    {
        let status = s.labels.get("status").map_or("?", String::as_str);
        let why = match status {
            "503" => "over limits.max_connections or draining",
            "408" => {
                "clients that did not finish the upgrade within limits.handshake_timeout (slow or hostile)"
            }
            "400" | "426" => {
                "requests that were not WebSocket upgrades (health checks or scanners hitting the WebSocket port?)"
            }
            "431" => "request heads too large",
            _ => "the upstream refused the handshake with this status",
        };
        findings += 1;
        let _ = writeln!(
            out,
            "- {:.0} handshakes refused with {status}: {why}.",
            s.value
        );
    }
    for side in ["client", "upstream"] {
        let b = buckets(&samples, names::PING_RTT, ("side", side));
        if let Some(p99) = quantile(&b, 0.99).filter(|&p| p >= 0.5) {
            findings += 1;
            let _ = writeln!(
                out,
                "- p99 ping round trip on the {side} leg is about {:.0} ms: a slow network or an overloaded peer.",
                p99 * 1000.0
            );
        }
    }
    if findings == 0 {
        let _ = writeln!(
            out,
            "- nothing alarming: sessions end cleanly and the upstream is reachable."
        );
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
