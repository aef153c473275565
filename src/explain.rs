//! `wspulse explain`: a plain-language diagnosis of a running instance.
//!
//! [`diagnose`] is a pure function from the Prometheus text of `/metrics`
//! to a report, so it is tested on canned texts; [`fetch`] gets the text
//! from an admin URL. The knowledge is the field lore of WebSocket
//! operations: what each close kind usually means and what to do about it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::metrics::{IDLE_BUCKETS, names};

/// One parsed sample: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`/`_count` suffixes).
    pub name: String,
    /// Label pairs.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// Parse the Prometheus text format (the subset wspulse emits).
pub fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let Some((head, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
            None => (head, BTreeMap::new()),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        // Values are escaped with backslashes; find the closing quote.
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').trim().to_string(), value);
        rest = &after[end..];
    }
    labels
}

/// Closure kinds summed over routes: (code, side, cause) → count.
fn closures(samples: &[Sample]) -> BTreeMap<(String, String, String), f64> {
    let mut m = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name == names::CLOSED && s.value > 0.0)
    {
        let key = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
        *m.entry((key("code"), key("side"), key("cause")))
            .or_insert(0.0) += s.value;
    }
    m
}

/// What a closure kind means, in the two lengths wspulse shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meaning {
    /// A few words for a table cell (the `wspulse demo` table).
    pub short: &'static str,
    /// What happened, for a diagnosis.
    pub what: &'static str,
    /// Its usual cause and what to do about it.
    pub why: &'static str,
}

const fn m(short: &'static str, what: &'static str, why: &'static str) -> Meaning {
    Meaning { short, what, why }
}

/// A code with no advice of its own.
const OTHER: Meaning = m(
    "other code",
    "other close code",
    "see RFC 6455 §7.4 and the IANA registry",
);
/// An application's own code.
const APPLICATION: Meaning = m(
    "application code",
    "application-defined code",
    "its meaning is defined by your application",
);
/// No Close frame, and no more specific advice.
const NO_CLOSE: Meaning = m(
    "no Close frame",
    "no Close frame: the connection just ended",
    "look at the side and cause",
);

/// What a closure kind `{code, side, cause}` means, its usual cause, and
/// what to do: the one table behind `wspulse explain` and the demo's table.
/// The causes that decide the code come first (no Close frame: 1006;
/// `message_too_big`: 1009; `shutdown`: the drain code), then close codes;
/// see [`crate::closure::classify`] for the kinds that occur.
pub fn meaning(code: u16, side: &str, cause: &str) -> Meaning {
    const EOF: &str = "no Close frame: peer vanished / network / idle kill";
    const RESET: &str = "no Close frame: TCP reset (crash, or a middlebox cut it)";
    const SILENT: &str = "peer stopped answering pings (dead or black-holed)";
    const GOING_AWAY: &str = "going away (page closed, server leaving)";
    const TOO_BIG: &str = "message too big";
    const TOO_BIG_WHY: &str = "raise limits.max_message_size or make the sender split its messages";
    match (code, side, cause) {
        (1000, _, _) => m("normal closure", "normal closure", "nothing to do"),
        (_, _, "shutdown") => m(
            "proxy drain (shutdown)",
            "wspulse drained its sessions (a deploy or restart of the proxy)",
            "expected during rollouts; use shutdown.spread to avoid reconnect storms",
        ),
        (_, "client", "eof") => m(
            EOF,
            "client vanished without a Close frame",
            "usually a client losing network, a tab or app closed without calling close(), or an idle socket killed by a NAT or load balancer; make clients call close() and reconnect with backoff",
        ),
        (_, "client", "reset") => m(
            RESET,
            "client connection reset",
            "a middlebox (NAT, firewall, load balancer) or the client's OS killed the TCP connection; if it clusters at a fixed idle time it is an idle limit",
        ),
        (_, "client", "ping_timeout") => m(
            SILENT,
            "client stopped answering pings (dead or black-holed)",
            "phones losing coverage, sleeping laptops, expired NAT mappings; normal at a low rate on mobile, alarming if it jumps",
        ),
        (_, "upstream", "eof") => m(
            EOF,
            "upstream closed TCP without a Close frame",
            "upstream crashes, OOM kills or deploys that do not close sockets gracefully; check upstream restarts at those times and make it send Close 1001/1012 on shutdown",
        ),
        (_, "upstream", "reset") => m(
            RESET,
            "upstream connection reset",
            "upstream process killed or its host/network failed",
        ),
        (_, "upstream", "ping_timeout") => m(
            SILENT,
            "upstream stopped answering pings",
            "upstream overloaded or hung (blocked event loop, long GC pause, deadlock); check its CPU and latency",
        ),
        (_, _, "eof") => Meaning {
            short: EOF,
            ..NO_CLOSE
        },
        (_, _, "reset") => Meaning {
            short: RESET,
            ..NO_CLOSE
        },
        (_, _, "ping_timeout") => Meaning {
            short: SILENT,
            ..NO_CLOSE
        },
        (_, _, "io_error") => Meaning {
            short: "no Close frame: other network error",
            ..NO_CLOSE
        },
        (_, _, "internal") => Meaning {
            short: "no cause recorded (a wspulse bug)",
            ..NO_CLOSE
        },
        (_, _, "message_too_big") => m(
            "message too big (over limits.max_message_size)",
            TOO_BIG,
            TOO_BIG_WHY,
        ),
        (1001, "client", _) => m(
            GOING_AWAY,
            "client going away (tab closed, app backgrounded or navigated away)",
            "normal for browsers and mobile apps",
        ),
        (1001, "upstream", _) => m(
            GOING_AWAY,
            "upstream going away (it is shutting down or restarting)",
            "expected during upstream deploys; clients should reconnect with backoff",
        ),
        (1001, _, _) => Meaning {
            short: GOING_AWAY,
            ..OTHER
        },
        (1006, _, _) => NO_CLOSE,
        (1002, _, _) => m(
            "protocol error",
            "protocol error",
            "a buggy or hostile peer broke RFC 6455; check the client library and version",
        ),
        (1003, _, _) => Meaning {
            short: "unsupported data",
            ..OTHER
        },
        (1005, _, _) => m(
            "Close frame without a code",
            "Close frame without a code",
            "harmless, but the peer could say why",
        ),
        (1007, _, _) => m(
            "invalid payload: text that is not UTF-8",
            "invalid UTF-8 in a text message",
            "the sender must use binary frames for non-text data",
        ),
        (1008, _, _) => m(
            "policy violation",
            "policy violation",
            "the application refused the peer (auth, rate limit)",
        ),
        (1009, _, _) => m(TOO_BIG, TOO_BIG, TOO_BIG_WHY),
        (1010, _, _) => Meaning {
            short: "client needed an extension",
            ..OTHER
        },
        (1011, _, _) => m(
            "server error",
            "upstream internal error",
            "the server hit an unexpected condition; check its logs",
        ),
        (1012, _, _) => m(
            "service restart",
            "service restart",
            "expected during deploys",
        ),
        (1013, _, _) => m(
            "try again later",
            "try again later",
            "the server is overloaded and shedding sessions",
        ),
        (1014, _, _) => Meaning {
            short: "bad gateway",
            ..OTHER
        },
        (3000..=3999, _, _) => Meaning {
            short: "registered application code",
            ..APPLICATION
        },
        (4000..=4999, _, _) => APPLICATION,
        _ => OTHER,
    }
}

/// The buckets of one histogram series as exposed, (upper bound `le`,
/// cumulative count), sorted by bound: `{name}_bucket` samples whose
/// `label.0` is `label.1`.
pub fn buckets(samples: &[Sample], name: &str, label: (&str, &str)) -> Vec<(f64, f64)> {
    let bucket = format!("{name}_bucket");
    let mut cumulative: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.name == bucket && s.labels.get(label.0).map(String::as_str) == Some(label.1))
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
    let samples = parse(text);
    let mut out = String::new();
    let sum = |name: &str| {
        samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum::<f64>()
    };
    let opened = sum(names::OPENED);
    let active = sum(names::ACTIVE);
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
    let failures: f64 = samples
        .iter()
        .filter(|s| s.name == names::CONNECT_FAILURES)
        .map(|s| s.value)
        .sum();
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

/// Fetch `/metrics` from an admin base URL such as `http://127.0.0.1:9090`.
pub async fn fetch(admin: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = admin
        .strip_prefix("http://")
        .ok_or_else(|| format!("{admin}: only http:// admin URLs are supported"))?;
    // Accept the base URL or the full /metrics URL.
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let path = path.trim_end_matches('/');
    let path = if path.ends_with("metrics") {
        format!("/{path}")
    } else if path.is_empty() {
        "/metrics".into()
    } else {
        format!("/{path}/metrics")
    };
    let work = async {
        let mut s = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(buf)
    };
    let buf = tokio::time::timeout(std::time::Duration::from_secs(10), work)
        .await
        .map_err(|_| format!("{admin}: no answer within 10 s"))??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "{admin}{path}: {}",
            head.lines().next().unwrap_or("")
        ));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_string())
}

/// Undo HTTP/1.1 chunked transfer encoding of a body already read whole.
pub fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
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

    #[test]
    fn quantile_interpolates() {
        let b = vec![(0.001, 50.0), (0.01, 100.0), (f64::INFINITY, 100.0)];
        assert!((quantile(&b, 0.5).unwrap() - 0.001).abs() < 1e-9);
        assert!((quantile(&b, 0.99).unwrap() - 0.00982).abs() < 1e-5);
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let b = [(0.001, 50.0), (0.002, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(&b, 0.5), Some(0.001));
        let p75 = quantile(&b, 0.75).unwrap();
        assert!((p75 - 0.0015).abs() < 1e-12, "{p75}");
        assert_eq!(quantile(&[(0.001, 0.0), (f64::INFINITY, 0.0)], 0.5), None);
        // Everything past the last finite bound: that bound.
        assert_eq!(
            quantile(&[(0.001, 0.0), (f64::INFINITY, 4.0)], 0.99),
            Some(0.001)
        );
    }

    #[test]
    fn parses_escaped_labels() {
        let s = parse("m{a=\"x\\\"y\",b=\"z\"} 3\n# HELP x\n");
        assert_eq!(s[0].labels["a"], "x\"y");
        assert_eq!(s[0].labels["b"], "z");
        assert_eq!(s[0].value, 3.0);
    }
}
