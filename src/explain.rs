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

/// What a closure kind means, its usual cause, and what to do.
pub fn meaning(code: &str, side: &str, cause: &str) -> (&'static str, &'static str) {
    match (code, side, cause) {
        ("1000", _, _) => ("normal closure", "nothing to do"),
        ("1001", _, "shutdown") | (_, "proxy", "shutdown") => (
            "wspulse drained its sessions (a deploy or restart of the proxy)",
            "expected during rollouts; use shutdown.spread to avoid reconnect storms",
        ),
        ("1001", "client", _) => (
            "client going away (tab closed, app backgrounded or navigated away)",
            "normal for browsers and mobile apps",
        ),
        ("1001", "upstream", _) => (
            "upstream going away (it is shutting down or restarting)",
            "expected during upstream deploys; clients should reconnect with backoff",
        ),
        ("1006", "client", "eof") => (
            "client vanished without a Close frame",
            "usually a client losing network, a tab or app closed without calling close(), or an idle socket killed by a NAT or load balancer; make clients call close() and reconnect with backoff",
        ),
        ("1006", "client", "reset") => (
            "client connection reset",
            "a middlebox (NAT, firewall, load balancer) or the client's OS killed the TCP connection; if it clusters at a fixed idle time it is an idle limit",
        ),
        ("1006", "client", "ping_timeout") => (
            "client stopped answering pings (dead or black-holed)",
            "phones losing coverage, sleeping laptops, expired NAT mappings; normal at a low rate on mobile, alarming if it jumps",
        ),
        ("1006", "upstream", "eof") => (
            "upstream closed TCP without a Close frame",
            "upstream crashes, OOM kills or deploys that do not close sockets gracefully; check upstream restarts at those times and make it send Close 1001/1012 on shutdown",
        ),
        ("1006", "upstream", "reset") => (
            "upstream connection reset",
            "upstream process killed or its host/network failed",
        ),
        ("1006", "upstream", "ping_timeout") => (
            "upstream stopped answering pings",
            "upstream overloaded or hung (blocked event loop, long GC pause, deadlock); check its CPU and latency",
        ),
        ("1006", _, _) => (
            "no Close frame: the connection just ended",
            "look at the side and cause",
        ),
        ("1002", _, _) => (
            "protocol error",
            "a buggy or hostile peer broke RFC 6455; check the client library and version",
        ),
        ("1007", _, _) => (
            "invalid UTF-8 in a text message",
            "the sender must use binary frames for non-text data",
        ),
        ("1008", _, _) => (
            "policy violation",
            "the application refused the peer (auth, rate limit)",
        ),
        ("1009", _, _) => (
            "message too big",
            "raise limits.max_message_size or make the sender split its messages",
        ),
        ("1011", _, _) => (
            "upstream internal error",
            "the server hit an unexpected condition; check its logs",
        ),
        ("1012", _, _) => ("service restart", "expected during deploys"),
        ("1013", _, _) => (
            "try again later",
            "the server is overloaded and shedding sessions",
        ),
        ("1005", _, _) => (
            "Close frame without a code",
            "harmless, but the peer could say why",
        ),
        (c, _, _) if c.starts_with('3') || c.starts_with('4') => (
            "application-defined code",
            "its meaning is defined by your application",
        ),
        _ => (
            "other close code",
            "see RFC 6455 §7.4 and the IANA registry",
        ),
    }
}

/// Histogram buckets of one series as (upper bound, count in that bucket).
fn buckets(samples: &[Sample], name: &str, label: (&str, &str)) -> Vec<(f64, f64)> {
    let mut cumulative: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| {
            s.name == format!("{name}_bucket")
                && s.labels.get(label.0).map(String::as_str) == Some(label.1)
        })
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
    let mut prev = 0.0;
    cumulative
        .into_iter()
        .map(|(le, c)| {
            let n = c - prev;
            prev = c;
            (le, n)
        })
        .collect()
}

/// The p-quantile of a histogram by linear interpolation inside buckets.
pub fn quantile(b: &[(f64, f64)], q: f64) -> Option<f64> {
    let total: f64 = b.iter().map(|x| x.1).sum();
    if total <= 0.0 {
        return None;
    }
    let target = q * total;
    let (mut seen, mut lower) = (0.0, 0.0);
    for &(le, n) in b {
        if seen + n >= target && n > 0.0 {
            if le.is_infinite() {
                return Some(lower);
            }
            return Some(lower + (le - lower) * ((target - seen) / n));
        }
        seen += n;
        if le.is_finite() {
            lower = le;
        }
    }
    Some(lower)
}

/// The idle-limit signature: a narrow idle window (one of the windows
/// around a known limit) holding most abnormal closures.
fn idle_cluster(samples: &[Sample]) -> Option<(f64, f64, f64)> {
    let b = buckets(samples, names::IDLE_BEFORE_CLOSE, ("class", "abnormal"));
    let total: f64 = b.iter().map(|x| x.1).sum();
    if total < 5.0 {
        return None;
    }
    // Windows are the buckets whose lower edge is L-1 of a known limit L.
    for (i, &(le, n)) in b.iter().enumerate() {
        let lower = if i == 0 { 0.0 } else { b[i - 1].0 };
        let is_window = IDLE_BUCKETS
            .windows(2)
            .any(|w| w[0] == lower && w[1] == le && le - lower <= 3.0);
        if is_window && n / total >= 0.5 {
            return Some((lower + 1.0, n, total));
        }
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
        .filter(|((c, _, _), _)| !crate::closure::is_clean_code(c.parse().unwrap_or(0)))
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
            let (what, why) = meaning(code, side, cause);
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

fn dechunk(mut s: &str) -> String {
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
        let b = vec![(0.001, 50.0), (0.01, 50.0), (f64::INFINITY, 0.0)];
        assert!((quantile(&b, 0.5).unwrap() - 0.001).abs() < 1e-9);
        assert!((quantile(&b, 0.99).unwrap() - 0.00982).abs() < 1e-5);
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn parses_escaped_labels() {
        let s = parse("m{a=\"x\\\"y\",b=\"z\"} 3\n# HELP x\n");
        assert_eq!(s[0].labels["a"], "x\"y");
        assert_eq!(s[0].labels["b"], "z");
        assert_eq!(s[0].value, 3.0);
    }
}
