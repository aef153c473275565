//! `wspulse explain --prometheus`: the diagnosis of `explain --admin`, over
//! every instance a selector matches, read from Prometheus, plus what only a
//! fleet shows: which instances stand out, and whether the trouble is
//! fleet-wide or on a few pods.
//!
//! The fleet's increases over the window are read back as samples with the
//! names and labels of `/metrics` (`sum by (code, side, cause)
//! (increase(wspulse_connections_closed_total{…}[1h]))` is the fleet's
//! `wspulse_connections_closed_total`), so [`super::diagnose::analyse`],
//! the one diagnosis, reads them as it reads one instance. Then one query
//! per measure by `instance` (and `pod`, where Prometheus attaches it) ranks
//! the instances, and [`verdict`] judges the spread.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::diagnose::{Diagnosis, analyse};
use super::meaning::meaning;
use super::prom::Sample;
use super::promql::{Api, QueryError, Series};
use crate::metrics::names;

/// `wspulse_reconnect_delay_seconds`: named by INTERFACE.md, exposed once
/// client tracking is in; until then its ranking is left out with a note.
const RECONNECT_DELAY: &str = "wspulse_reconnect_delay_seconds";

/// Close codes of a clean ending (class `clean`): 1000, 1001, 3000–4999.
const CLEAN_CODES: &str = "1000|1001|[34][0-9][0-9][0-9]";

/// An instance stands out with at least this share of abnormal endings...
const ABNORMAL_RATIO: f64 = 0.05;
/// ...over at least this many ended sessions (fewer say nothing).
const MIN_ENDED: f64 = 5.0;
/// Or with at least this many failed upstream dials in the window.
const MIN_FAILURES: f64 = 3.0;
/// How many instances each ranking names.
const TOP: usize = 3;

/// Why the fleet could not be explained.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A query failed (Prometheus unreachable, not Prometheus, refused).
    #[error(transparent)]
    Query(#[from] QueryError),
    /// No target matches the selector at all.
    #[error(
        "the selector {{{selector}}} matches no target in Prometheus ({base}): check the job and label names (`up{{{selector}}}` is empty)"
    )]
    NoTargets {
        /// The selector.
        selector: String,
        /// Prometheus.
        base: String,
    },
    /// Targets match, but none exposes wspulse's metrics.
    #[error(
        "{targets} targets match {{{selector}}} in Prometheus ({base}), but none has the series {series}: \
         are they scraped on wspulse's admin port (/metrics)?"
    )]
    MissingSeries {
        /// The selector.
        selector: String,
        /// Prometheus.
        base: String,
        /// How many targets match.
        targets: usize,
        /// The series looked for.
        series: &'static str,
    },
}

/// One instance, as the fleet view ranks it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Instance {
    /// Its `instance` label (`host:port` of the scrape).
    pub instance: String,
    /// Its `pod` label, when Prometheus attaches one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Sessions it ended in the window.
    pub ended: f64,
    /// Its share of abnormal endings, 0 to 1 (0 with none ended).
    pub abnormal_ratio: f64,
    /// Its most frequent abnormal ending, `code side/cause`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_cause: Option<String>,
    /// What that ending means.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_cause_what: Option<&'static str>,
    /// Its failed upstream dials in the window.
    pub upstream_failures: f64,
    /// Median delay before a client came back, if the metric exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnect_delay_p50_seconds: Option<f64>,
}

impl Instance {
    /// The name a person knows it by: the pod, else the instance.
    pub fn name(&self) -> &str {
        self.pod.as_deref().unwrap_or(&self.instance)
    }

    /// Whether it has trouble worth naming: many abnormal endings, or
    /// failing upstream dials.
    pub fn troubled(&self) -> bool {
        (self.ended >= MIN_ENDED && self.abnormal_ratio >= ABNORMAL_RATIO)
            || self.upstream_failures >= MIN_FAILURES
    }
}

/// Where the trouble is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// No instance stands out.
    Healthy,
    /// Most instances see it: something they all share.
    FleetWide,
    /// A minority see it: something only they share.
    FewInstances,
}

/// The fleet-wide vs few-pods judgement.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verdict {
    /// Where the trouble is.
    pub scope: Scope,
    /// The instances with trouble (names), worst first.
    pub troubled: Vec<String>,
    /// The judgement in a sentence or two.
    pub explanation: String,
}

/// One entry of a ranking.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Ranked {
    /// The instance's name (pod, else instance).
    pub name: String,
    /// Its value.
    pub value: f64,
}

/// The instances that stand out, per measure, worst first.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Outliers {
    /// By share of abnormal endings.
    pub abnormal_ratio: Vec<Ranked>,
    /// By failed upstream dials.
    pub upstream_failures: Vec<Ranked>,
    /// By median reconnect delay (empty without the metric).
    pub reconnect_delay_p50_seconds: Vec<Ranked>,
}

/// What `explain --prometheus` reports; `Display` is its text,
/// serialization its `--output json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FleetReport {
    /// Prometheus' base URL.
    pub prometheus: String,
    /// The selector, without braces.
    pub selector: String,
    /// The window, as humantime writes it.
    pub window: String,
    /// Every matching instance.
    pub instances: Vec<Instance>,
    /// The diagnosis of the whole fleet over the window.
    pub diagnosis: Diagnosis,
    /// The instances that stand out.
    pub outliers: Outliers,
    /// Fleet-wide or a few pods.
    pub verdict: Verdict,
    /// What could not be read (a metric these instances do not expose).
    pub notes: Vec<String>,
}

/// The selector as PromQL matchers: `job="ws"` and `{job="ws"}` alike.
pub fn normalize_selector(selector: &str) -> String {
    let s = selector.trim();
    let s = s
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or(s);
    s.trim().trim_end_matches(',').to_string()
}

/// The PromQL of the fleet view for one selector and window.
#[derive(Debug, Clone)]
pub struct Queries {
    selector: String,
    window: String,
}

impl Queries {
    /// Queries over `selector` (matchers, no braces) and `window`.
    pub fn new(selector: &str, window: Duration) -> Queries {
        Queries {
            selector: normalize_selector(selector),
            // Whole seconds: Prometheus reads `3600s`; at least one.
            window: format!("{}s", window.as_secs().max(1)),
        }
    }

    /// `metric{selector,extra}`.
    pub fn select(&self, metric: &str, extra: &str) -> String {
        let both: Vec<&str> = [self.selector.as_str(), extra]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        format!("{metric}{{{}}}", both.join(","))
    }

    /// `sum by (by) (increase(metric{…}[window]))`.
    pub fn increase(&self, metric: &str, extra: &str, by: &str) -> String {
        format!(
            "sum by ({by}) (increase({}[{}]))",
            self.select(metric, extra),
            self.window
        )
    }

    /// The fleet's samples, as `/metrics` names them: (sample name,
    /// query). Histograms by bucket, counters as increases, the gauge now.
    pub fn fleet(&self) -> Vec<(String, String)> {
        let bucket = |h: &str| format!("{h}_bucket");
        vec![
            (names::OPENED.into(), self.increase(names::OPENED, "", "")),
            (
                names::ACTIVE.into(),
                format!("sum({})", self.select(names::ACTIVE, "")),
            ),
            (
                names::CLOSED.into(),
                self.increase(names::CLOSED, "", "code, side, cause"),
            ),
            (
                names::CONNECT_FAILURES.into(),
                self.increase(names::CONNECT_FAILURES, "", "reason"),
            ),
            (
                names::REJECTIONS.into(),
                self.increase(names::REJECTIONS, "", "status"),
            ),
            (
                bucket(names::IDLE_BEFORE_CLOSE),
                self.increase(&bucket(names::IDLE_BEFORE_CLOSE), "", "class, le"),
            ),
            (
                bucket(names::PING_RTT),
                self.increase(&bucket(names::PING_RTT), "", "side, le"),
            ),
            // The reconnect findings (no backoff, a storm after a crash or
            // a drain) read these against the endings above.
            (
                bucket(names::RECONNECT_DELAY),
                self.increase(&bucket(names::RECONNECT_DELAY), "", "class, side, le"),
            ),
        ]
    }

    /// Every matching instance, now (the gauge every instance exposes).
    pub fn instances(&self) -> String {
        format!(
            "sum by (instance, pod) ({})",
            self.select(names::ACTIVE, "")
        )
    }

    /// The targets the selector matches, wspulse or not.
    pub fn targets(&self) -> String {
        format!("count({})", self.select("up", ""))
    }

    /// Ended sessions per instance.
    pub fn ended(&self) -> String {
        self.increase(names::CLOSED, "", "instance, pod")
    }

    /// Abnormal endings per instance and kind.
    pub fn abnormal_kinds(&self) -> String {
        self.increase(
            names::CLOSED,
            &format!("code!~\"{CLEAN_CODES}\""),
            "instance, pod, code, side, cause",
        )
    }

    /// Failed upstream dials per instance.
    pub fn failures(&self) -> String {
        self.increase(names::CONNECT_FAILURES, "", "instance, pod")
    }

    /// Median reconnect delay per instance.
    pub fn reconnect_p50(&self) -> String {
        format!(
            "histogram_quantile(0.5, sum by (instance, pod, le) (rate({}[{}])))",
            self.select(&format!("{RECONNECT_DELAY}_bucket"), ""),
            self.window
        )
    }
}

/// Series as samples named `name` (the fleet's `/metrics`).
fn as_samples(name: &str, series: Vec<Series>) -> impl Iterator<Item = Sample> + '_ {
    series
        .into_iter()
        .filter(|s| s.value.is_finite())
        .map(move |s| Sample {
            name: name.to_string(),
            labels: s
                .labels
                .into_iter()
                .filter(|(k, _)| k != "__name__")
                .collect(),
            // Prometheus writes an empty sum as -0; a count is never negative.
            value: if s.value == 0.0 { 0.0 } else { s.value },
        })
}

/// `(instance, pod)` of a per-instance series.
fn key(s: &Series) -> (String, String) {
    (s.label("instance").to_string(), s.label("pod").to_string())
}

/// The per-instance answers, joined into instances (pure, so tested on
/// canned series).
pub fn instances(
    present: &[Series],
    ended: &[Series],
    abnormal: &[Series],
    failures: &[Series],
    reconnect: &[Series],
) -> Vec<Instance> {
    let mut by_key: BTreeMap<(String, String), Instance> = BTreeMap::new();
    for s in present {
        let (instance, pod) = key(s);
        by_key.entry(key(s)).or_insert_with(|| Instance {
            instance,
            pod: (!pod.is_empty()).then_some(pod),
            ended: 0.0,
            abnormal_ratio: 0.0,
            top_cause: None,
            top_cause_what: None,
            upstream_failures: 0.0,
            reconnect_delay_p50_seconds: None,
        });
    }
    let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
    for s in ended {
        if let Some(i) = by_key.get_mut(&key(s)) {
            i.ended = finite(s.value);
        }
    }
    let mut worst: BTreeMap<(String, String), (f64, f64, &Series)> = BTreeMap::new();
    for s in abnormal.iter().filter(|s| s.value.is_finite()) {
        let e = worst.entry(key(s)).or_insert((0.0, f64::MIN, s));
        e.0 += s.value;
        if s.value > e.1 {
            (e.1, e.2) = (s.value, s);
        }
    }
    for (k, (total, top, s)) in worst {
        if let Some(i) = by_key.get_mut(&k) {
            if i.ended > 0.0 {
                i.abnormal_ratio = (total / i.ended).min(1.0);
            }
            if top > 0.0 {
                let (code, side, cause) = (s.label("code"), s.label("side"), s.label("cause"));
                i.top_cause = Some(format!("{code} {side}/{cause}"));
                i.top_cause_what = Some(meaning(code.parse().unwrap_or(0), side, cause).what);
            }
        }
    }
    for s in failures {
        if let Some(i) = by_key.get_mut(&key(s)) {
            i.upstream_failures = finite(s.value);
        }
    }
    for s in reconnect.iter().filter(|s| s.value.is_finite()) {
        if let Some(i) = by_key.get_mut(&key(s)) {
            i.reconnect_delay_p50_seconds = Some(s.value);
        }
    }
    by_key.into_values().collect()
}

/// The top instances by `measure`, worst first, those above zero only.
fn rank(instances: &[Instance], measure: impl Fn(&Instance) -> Option<f64>) -> Vec<Ranked> {
    let mut ranked: Vec<Ranked> = instances
        .iter()
        .filter_map(|i| {
            measure(i).filter(|v| *v > 0.0).map(|value| Ranked {
                name: i.name().to_string(),
                value,
            })
        })
        .collect();
    ranked.sort_by(|a, b| b.value.total_cmp(&a.value));
    ranked.truncate(TOP);
    ranked
}

/// The instances that stand out, per measure.
pub fn outliers(instances: &[Instance]) -> Outliers {
    Outliers {
        abnormal_ratio: rank(instances, |i| {
            (i.ended >= MIN_ENDED).then_some(i.abnormal_ratio)
        }),
        upstream_failures: rank(instances, |i| Some(i.upstream_failures)),
        reconnect_delay_p50_seconds: rank(instances, |i| i.reconnect_delay_p50_seconds),
    }
}

/// Fleet-wide or a few pods: a majority of troubled instances means a
/// cause they all share (the upstream service, the network in front of
/// them); a minority, something only they share (a node, a zone, a rollout).
pub fn verdict(instances: &[Instance]) -> Verdict {
    let mut troubled: Vec<&Instance> = instances.iter().filter(|i| i.troubled()).collect();
    troubled.sort_by(|a, b| {
        b.abnormal_ratio
            .total_cmp(&a.abnormal_ratio)
            .then(b.upstream_failures.total_cmp(&a.upstream_failures))
    });
    let names: Vec<String> = troubled.iter().map(|i| i.name().to_string()).collect();
    let (k, n) = (troubled.len(), instances.len());
    let (scope, explanation) = if k == 0 {
        (
            Scope::Healthy,
            format!(
                "no instance stands out: none of the {n} has over {:.0}% abnormal endings or failing upstream dials.",
                100.0 * ABNORMAL_RATIO
            ),
        )
    } else if 2 * k > n {
        (
            Scope::FleetWide,
            format!(
                "fleet-wide: {k} of {n} instances see it. When (nearly) every pod suffers alike the cause is \
                 something they all share: the upstream service or what it depends on, or the network in front \
                 of the pods (load balancer, ingress), not a pod."
            ),
        )
    } else {
        let causes: Vec<String> = troubled
            .iter()
            .map(|i| match (&i.top_cause, i.top_cause_what) {
                (Some(c), Some(what)) => format!(
                    "{} ({:.0}% abnormal, mostly {c}: {what}{})",
                    i.name(),
                    100.0 * i.abnormal_ratio,
                    failures_note(i)
                ),
                _ => format!(
                    "{} ({:.0} upstream dials failed)",
                    i.name(),
                    i.upstream_failures
                ),
            })
            .collect();
        (
            Scope::FewInstances,
            format!(
                "on a few instances: {k} of {n}: {}. The others are fine, so look at what these share: \
                 a node, a zone, a bad rollout of the app beside them (compare their nodes and image versions).",
                causes.join("; ")
            ),
        )
    };
    Verdict {
        scope,
        troubled: names,
        explanation,
    }
}

fn failures_note(i: &Instance) -> String {
    if i.upstream_failures >= 1.0 {
        format!(", {:.0} upstream dials failed", i.upstream_failures)
    } else {
        String::new()
    }
}

/// Read the fleet from Prometheus at `url` and explain it.
pub async fn explain(
    url: &str,
    selector: &str,
    window: Duration,
) -> Result<FleetReport, FleetError> {
    let api = Api::new(url)?;
    let q = Queries::new(selector, window);
    let present = api.query(&q.instances()).await?;
    if present.is_empty() {
        let targets = api
            .query(&q.targets())
            .await?
            .first()
            .map_or(0, |s| s.value as usize);
        let (selector, base) = (q.selector.clone(), api.base());
        return Err(if targets == 0 {
            FleetError::NoTargets { selector, base }
        } else {
            FleetError::MissingSeries {
                selector,
                base,
                targets,
                series: names::ACTIVE,
            }
        });
    }
    let mut samples = Vec::new();
    for (name, query) in q.fleet() {
        samples.extend(as_samples(&name, api.query(&query).await?));
    }
    let ended = api.query(&q.ended()).await?;
    let abnormal = api.query(&q.abnormal_kinds()).await?;
    let failures = api.query(&q.failures()).await?;
    let reconnect = api.query(&q.reconnect_p50()).await?;
    let mut notes = Vec::new();
    if reconnect.is_empty() {
        notes.push(format!(
            "no {RECONNECT_DELAY} series over the window: reconnect delays are not ranked"
        ));
    }
    let instances = instances(&present, &ended, &abnormal, &failures, &reconnect);
    Ok(FleetReport {
        prometheus: api.base(),
        selector: q.selector.clone(),
        window: humantime::format_duration(window).to_string(),
        diagnosis: analyse(&samples),
        outliers: outliers(&instances),
        verdict: verdict(&instances),
        instances,
        notes,
    })
}

impl std::fmt::Display for FleetReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = &self.diagnosis;
        let mut out = format!(
            "wspulse explain: {} instance{} matching {{{}}} in {}, last {}: \
             {:.0} sessions opened, {:.0} ended, {:.0} active now.\n",
            self.instances.len(),
            if self.instances.len() == 1 { "" } else { "s" },
            self.selector,
            self.prometheus,
            self.window,
            d.opened,
            d.closed,
            d.active
        );
        d.write_body(&mut out);
        let _ = writeln!(out, "\nInstances that stand out:");
        let line = |out: &mut String, what: &str, r: &[Ranked], fmt: &dyn Fn(f64) -> String| {
            let list: Vec<String> = r
                .iter()
                .map(|r| format!("{} {}", r.name, fmt(r.value)))
                .collect();
            let list = if list.is_empty() {
                "none".to_string()
            } else {
                list.join(", ")
            };
            let _ = writeln!(out, "  {what}: {list}");
        };
        let o = &self.outliers;
        line(&mut out, "abnormal endings", &o.abnormal_ratio, &|v| {
            format!("{:.1}%", 100.0 * v)
        });
        line(
            &mut out,
            "upstream dial failures",
            &o.upstream_failures,
            &|v| format!("{v:.0}"),
        );
        if !o.reconnect_delay_p50_seconds.is_empty() {
            line(
                &mut out,
                "median reconnect delay",
                &o.reconnect_delay_p50_seconds,
                &|v| format!("{v:.1} s"),
            );
        }
        let _ = writeln!(out, "\nVerdict: {}", self.verdict.explanation);
        for n in &self.notes {
            let _ = writeln!(out, "(note: {n})");
        }
        f.write_str(&out)
    }
}
