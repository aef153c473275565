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

/// Reconnects within this many seconds of the previous ending are "fast"
/// (a bound of [`crate::metrics::RECONNECT_BUCKETS`], so counted exactly).
pub const FAST_RECONNECT_S: f64 = 1.0;

/// "Clients reconnect without backoff": the reconnect delays after
/// abnormal endings (`wspulse_reconnect_delay_seconds{class="abnormal"}`,
/// both sides summed).
///
/// | reconnects after an abnormal ending | share within [`FAST_RECONNECT_S`] | finding |
/// |-------------------------------------|-----------------------------------|---------|
/// | fewer than 5                        | any                               | none (too few to say) |
/// | 5 or more                           | below 50 %                        | none (they back off) |
/// | 5 or more                           | 50 % or more                      | the share, p50 and p90, and what to do |
fn reconnects_without_backoff(samples: &[Sample]) -> Option<String> {
    let cumulative = prom::buckets_summed(samples, names::RECONNECT_DELAY, |s| {
        s.has_labels(&[("class", "abnormal")])
    });
    let total = cumulative.last()?.1;
    let within = prom::count_within(&cumulative, FAST_RECONNECT_S);
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

/// A storm needs at least this many clients back within
/// [`FAST_RECONNECT_S`] of one kind of mass ending...
pub const STORM_MIN_RECONNECTS: f64 = 20.0;
/// ...and at least this share of the sessions that ended that way.
pub const STORM_MIN_SHARE: f64 = 0.5;

/// A mass ending that a reconnect storm follows: the sessions that ended
/// that way, and the reconnects labelled with it.
struct StormTrigger {
    /// Sessions that ended this way (`wspulse_connections_closed_total`).
    ended: f64,
    /// Reconnect delays after such endings (cumulative buckets).
    delays: Vec<(f64, f64)>,
}

/// The two mass endings a storm follows, from a scrape (or a window's
/// increases): an upstream crash, and the proxy's own drain.
///
/// - Upstream crash: sessions ended abnormally on the upstream's side
///   (`side="upstream"`, a code that is not 1000/1001/3000–4999: 1006
///   eof/reset/ping timeout, 1011, …), against
///   `wspulse_reconnect_delay_seconds{class="abnormal",side="upstream"}`.
/// - Drain: sessions the proxy closed when draining (`side="proxy"`,
///   `cause="shutdown"`, code `shutdown.close_code`: 1001 is class
///   `clean`, 1012 `abnormal`), against the reconnect delays with
///   `side="proxy"` and class `clean` or `abnormal` (not `rejected`: that
///   is a client coming back after a 503). An instance sees these when
///   clients come back to it while it drains (a spread drain, a single
///   instance, a load balancer slow to drop it); they are refused 503, but
///   the delay is observed first. Clients that land on another instance
///   are first-time clients there and add nothing.
fn storm_triggers(
    samples: &[Sample],
    by_kind: &BTreeMap<(String, String, String), f64>,
) -> [(&'static str, StormTrigger); 2] {
    let ended = |keep: &dyn Fn(&str, &str, &str) -> bool| {
        by_kind
            .iter()
            .filter(|((code, side, cause), _)| keep(code, side, cause))
            .fold(0.0, |a, (_, n)| a + n)
    };
    let crash = StormTrigger {
        ended: ended(&|code, side, _| {
            side == "upstream" && !crate::protocol::is_clean_code(code.parse().unwrap_or(0))
        }),
        delays: prom::buckets_summed(samples, names::RECONNECT_DELAY, |s| {
            s.has_labels(&[("class", "abnormal"), ("side", "upstream")])
        }),
    };
    let drain = StormTrigger {
        ended: ended(&|_, side, cause| side == "proxy" && cause == "shutdown"),
        delays: prom::buckets_summed(samples, names::RECONNECT_DELAY, |s| {
            s.label("side") == "proxy" && matches!(s.label("class"), "clean" | "abnormal")
        }),
    };
    [("upstream", crash), ("drain", drain)]
}

/// "A reconnect storm after a drain or an upstream crash": many of the
/// clients whose sessions a crash or a drain ended came back within
/// [`FAST_RECONNECT_S`]. Per trigger of [`storm_triggers`], with *fast* the
/// reconnects after that kind of ending within 1 s (the `le="1"` bucket)
/// and *ended* the sessions that ended that way:
///
/// | ended | fast                              | fast ÷ ended | finding |
/// |-------|-----------------------------------|--------------|---------|
/// | 0     | any                               | –            | none (no such ending here) |
/// | > 0   | below [`STORM_MIN_RECONNECTS`] (20) | any        | none (a few quick reconnects are no storm) |
/// | > 0   | 20 or more                        | below [`STORM_MIN_SHARE`] (50 %) | none (most of those clients waited) |
/// | > 0   | 20 or more                        | 50 % or more | the counts, the share, the p50, and what to do |
///
/// The share is capped at 100 % (a window's increases can hold reconnects
/// whose endings fell just before it). A scrape holds totals, not their
/// timing: the finding says how many came back within a second of *their*
/// ending; when those endings came together (one crash, one drain), that
/// is that many upgrades in about a second.
fn reconnect_storms(
    samples: &[Sample],
    by_kind: &BTreeMap<(String, String, String), f64>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (trigger, t) in storm_triggers(samples, by_kind) {
        let fast = prom::count_within(&t.delays, FAST_RECONNECT_S);
        if t.ended <= 0.0 || fast < STORM_MIN_RECONNECTS {
            continue;
        }
        let share = (fast / t.ended).min(1.0);
        if share < STORM_MIN_SHARE {
            continue;
        }
        let p50 = quantile(&t.delays, 0.5).map_or_else(String::new, |p| {
            format!(", half of all returns within about {:.0} ms", p * 1000.0)
        });
        let head = format!(
            "{fast:.0} clients came back within 1 s of their session's end, {:.0}% of the {:.0}",
            100.0 * share,
            t.ended
        );
        out.push(match trigger {
            "upstream" => format!(
                "A reconnect storm after upstream crashes: {head} sessions the upstream ended abnormally \
                 (crash, reset, hang){p50}. When those endings come together, that is as many upgrades in a second, \
                 aimed at an upstream that is just coming back. Give clients exponential backoff with jitter \
                 (from about 0.5-1 s, doubling, capped) and have them honour 1012/1013 and Retry-After; cap what still \
                 comes with limits.max_handshakes_per_second (refused with 503 and a jittered Retry-After)."
            ),
            _ => format!(
                "A reconnect storm after a drain: {head} sessions the proxy closed while draining{p50}. \
                 Spread the drain's closes with shutdown.spread (sessions / spread at most the upgrades per second \
                 the upstream takes), send shutdown.close_code = 1012 so clients know the service restarts, give \
                 clients exponential backoff with jitter that honours 1012/1013 and Retry-After, and cap what still \
                 comes with limits.max_handshakes_per_second."
            ),
        });
    }
    out
}

/// Build the diagnosis for a `/metrics` text.
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
    out.extend(reconnect_storms(samples, by_kind));
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

    /// `wspulse_reconnect_delay_seconds` buckets of one series, from
    /// per-bucket counts (upper bound, count), made cumulative.
    fn reconnect_lines(class: &str, side: &str, counts: &[(f64, u32)]) -> String {
        let mut s = String::new();
        let mut cum = 0;
        for le in crate::metrics::RECONNECT_BUCKETS {
            cum += counts
                .iter()
                .filter(|(b, _)| b == le)
                .map(|(_, n)| n)
                .sum::<u32>();
            s += &format!(
                "wspulse_reconnect_delay_seconds_bucket{{class=\"{class}\",side=\"{side}\",le=\"{le}\"}} {cum}\n"
            );
        }
        cum += counts
            .iter()
            .filter(|(b, _)| b.is_infinite())
            .map(|(_, n)| n)
            .sum::<u32>();
        s + &format!(
            "wspulse_reconnect_delay_seconds_bucket{{class=\"{class}\",side=\"{side}\",le=\"+Inf\"}} {cum}\n"
        )
    }

    fn storms(text: &str) -> Vec<String> {
        analyse(&prom::parse(text))
            .findings
            .into_iter()
            .filter(|f| f.starts_with("A reconnect storm"))
            .collect()
    }

    #[test]
    fn a_storm_after_upstream_crashes_is_counted_and_cured() {
        // 100 sessions dropped by the upstream; 90 of those clients back
        // within 1 s (60 within 50 ms), 5 later.
        let text = format!(
            "{}{}{}",
            closed_line("1006", "upstream", "eof", 80),
            closed_line("1006", "upstream", "reset", 20),
            reconnect_lines("abnormal", "upstream", &[(0.05, 60), (1.0, 30), (5.0, 5)]),
        );
        let found = storms(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert!(f.starts_with("A reconnect storm after upstream crashes: 90 clients came back within 1 s of their session's end, 90% of the 100 sessions the upstream ended abnormally"), "{f}");
        assert!(f.contains("half of all returns within about"), "{f}");
        for cure in [
            "exponential backoff with jitter",
            "1012/1013",
            "Retry-After",
            "limits.max_handshakes_per_second",
        ] {
            assert!(f.contains(cure), "{cure}: {f}");
        }
        // The whole report carries it too.
        assert!(diagnose(&text).contains("A reconnect storm after upstream crashes"));
    }

    #[test]
    fn a_storm_after_a_drain_counts_the_drain_reconnects_not_the_refusals() {
        // 200 sessions closed by the drain (1001 and 1012); 150 back within
        // 1 s; 500 refused clients retrying (rejected/proxy) are not a drain's.
        let text = format!(
            "{}{}{}{}{}",
            closed_line("1001", "proxy", "shutdown", 150),
            closed_line("1012", "proxy", "shutdown", 50),
            reconnect_lines("clean", "proxy", &[(0.1, 100), (0.5, 20), (10.0, 30)]),
            reconnect_lines("abnormal", "proxy", &[(1.0, 30)]),
            reconnect_lines("rejected", "proxy", &[(0.5, 500)]),
        );
        let found = storms(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert!(f.starts_with("A reconnect storm after a drain: 150 clients came back within 1 s of their session's end, 75% of the 200 sessions the proxy closed while draining"), "{f}");
        assert!(f.contains("shutdown.spread") && f.contains("1012"), "{f}");
        // Refusals alone after a drain are no drain storm.
        let refused_only = format!(
            "{}{}",
            closed_line("1001", "proxy", "shutdown", 200),
            reconnect_lines("rejected", "proxy", &[(0.5, 500)]),
        );
        assert!(storms(&refused_only).is_empty());
    }

    #[test]
    fn storm_thresholds_count_and_share() {
        let with = |ended: u32, fast: u32| {
            format!(
                "{}{}",
                closed_line("1006", "upstream", "eof", ended),
                reconnect_lines("abnormal", "upstream", &[(0.2, fast), (30.0, 3)])
            )
        };
        // 20 within 1 s and half of the endings: fires.
        assert_eq!(storms(&with(40, 20)).len(), 1);
        // 19 within 1 s: a few quick reconnects, no storm.
        assert!(storms(&with(19, 19)).is_empty());
        // 20 within 1 s but under half of 41 endings: most waited.
        assert!(storms(&with(41, 20)).is_empty());
        // Reconnects with no such ending in the scrape: nothing to blame.
        let no_ending = reconnect_lines("abnormal", "upstream", &[(0.2, 50)]);
        assert!(storms(&no_ending).is_empty());
        // More reconnects than endings (a window's edge): capped at 100%.
        let f = storms(&with(20, 30));
        assert!(f[0].contains("100% of the 20 sessions"), "{f:?}");
    }

    #[test]
    fn clients_with_backoff_after_a_crash_raise_no_storm() {
        // The healthy case: a crash ends 100 sessions, the clients back
        // off (jittered, from 0.5 s up): 10 back within 1 s, the rest later.
        let text = format!(
            "wspulse_connections_opened_total{{route=\"default\"}} 300\nwspulse_connections_active 100\n{}{}{}",
            closed_line("1000", "client", "close_frame", 100),
            closed_line("1006", "upstream", "eof", 100),
            reconnect_lines(
                "abnormal",
                "upstream",
                &[(0.75, 4), (1.0, 6), (2.0, 30), (5.0, 50), (10.0, 10)]
            ),
        );
        let d = diagnose(&text);
        assert!(!d.contains("reconnect storm"), "{d}");
        assert!(!d.contains("without backoff"), "{d}");
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
