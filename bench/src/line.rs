//! A line of the benchmark beside the main table: its own table appended to the
//! `latest.md` that `wsbench report` wrote, its keys added to `latest.json`, and the same
//! comparison with nginx and HAProxy as the main table (the median round of each target,
//! every round's figures, the same-round ratios with their 95 % interval and verdict).
//!
//! Two lines use it: compressed traffic (`deflate.rs`, one phase `tpz`) and steady load
//! (`steady.rs`, phases `st64` and `st16k`). A [`Line`] says which phase file and field
//! each figure comes from; `wsbench report-line --line NAME` writes it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{Map, Value, json};

use crate::{min_max, read_json, same_rounds, verdict, write_atomic};

/// One figure of a line: a column of its table and a key of `latest.json`.
pub struct Figure {
    /// Key under `targets.TARGET`, `ratios.*`, `rounds_won.*` and `spread.TARGET`.
    pub key: &'static str,
    /// The phase file it comes from: `rounds/N/TARGET/PHASE.json`, and the median round
    /// in `res/TARGET/PHASE.json`.
    pub phase: &'static str,
    /// The field of that file.
    pub field: &'static str,
    pub higher_is_better: bool,
    /// Column heading.
    pub column: &'static str,
    /// Decimals shown.
    pub decimals: usize,
}

/// Looks up a field of any phase result of the line (the first target that has it),
/// formatted for prose; "?" when none has it.
pub type Lookup<'a> = &'a dyn Fn(&str, &str) -> String;

/// A line: its figures, its heading and prose, and its own notes.
pub struct Line {
    /// Heading of its section in latest.md.
    pub title: &'static str,
    /// The phases the line reads, each with the label its notes carry in latest.json.
    pub phases: &'static [(&'static str, &'static str)],
    pub figures: &'static [Figure],
    /// The targets wspulse is compared with, a ratio row (and the across-rounds rows) each.
    pub others: &'static [&'static str],
    /// The prose above the table: what was measured, how (markdown bullets).
    pub about: fn(Lookup) -> String,
    /// Notes of the line's own about one phase result (beside the busy-machine and
    /// load-generator notes every line gets).
    pub notes: fn(&Value) -> Vec<String>,
}

#[derive(Args, Debug)]
pub struct LineArgs {
    /// Which line: `deflate` or `steady`.
    #[arg(long)]
    pub line: String,
    /// Directory with one subdirectory per target holding the line's phase files (the
    /// median round) and notes.txt, as for `report`.
    #[arg(long)]
    dir: PathBuf,
    /// bench/run's rounds directory (`N/TARGET/PHASE.json`): every round's figures.
    #[arg(long)]
    rounds: PathBuf,
    #[arg(long, default_value = "direct,wspulse,nginx,haproxy")]
    targets: String,
    /// The `latest.md` that `report` wrote: the line's table is appended.
    #[arg(long)]
    md: PathBuf,
    /// The `latest.json` that `report` wrote: the line's keys are added.
    #[arg(long)]
    json: PathBuf,
    /// As `report --busy-threshold`.
    #[arg(long, default_value_t = 0.1)]
    busy_threshold: f64,
    /// As `report --saturated-threshold`.
    #[arg(long, default_value_t = 0.95)]
    saturated_threshold: f64,
}

fn fmt_cell(f: &Figure, v: Option<f64>) -> String {
    v.map_or("—".into(), |x| format!("{x:.*}", f.decimals))
}

/// Round number → figure of one field, from `rounds/N/TARGET/PHASE.json`.
fn rounds_of(rounds: &Path, target: &str, phase: &str, field: &str) -> BTreeMap<u64, f64> {
    let Ok(rd) = std::fs::read_dir(rounds) else {
        return Default::default();
    };
    rd.flatten()
        .take(10_000)
        .filter_map(|e| {
            let r: u64 = e.file_name().to_str()?.parse().ok()?;
            let v = read_json(&e.path().join(target).join(format!("{phase}.json")))?;
            Some((r, v.get(field)?.as_f64().filter(|x| x.is_finite())?))
        })
        .collect()
}

/// The notes every line gets about one phase result: missing, or why its figures should
/// not be used.
fn common_notes(v: Option<&Value>, a: &LineArgs) -> Vec<String> {
    let Some(v) = v else {
        return vec!["no figure (see the notes of the table above)".into()];
    };
    let f = |k: &str| v.get(k).and_then(Value::as_f64);
    let mut notes = Vec::new();
    if let Some(x) = f("foreign_cpu_cores")
        && x > a.busy_threshold
    {
        notes.push(format!(
            "busy machine: other processes used {x:.2} cores; figures unreliable"
        ));
    }
    if let Some(h) = f("harness_cpu_cores")
        && h >= a.saturated_threshold
    {
        let own = f("target_cpu_cores").map_or(String::new(), |c| format!(", the target's {c:.2}"));
        notes.push(format!(
            "bounded by the load generator's core ({h:.2} cores busy{own})"
        ));
    }
    notes
}

/// wspulse against one other proxy on each figure: "wspulse/OTHER", the ratio of the
/// median rounds, and the same-round comparison (`rounds_won`'s JSON).
type RatioRow = (String, Vec<Option<f64>>, Vec<Option<Value>>);

pub fn report_line(a: LineArgs, line: &Line) -> i32 {
    let targets = crate::target_list(&a.targets);
    let Some(mut out) = read_json(&a.json) else {
        eprintln!("wsbench report-line: cannot read {}", a.json.display());
        return 1;
    };
    let Ok(mut md) = std::fs::read_to_string(&a.md) else {
        eprintln!("wsbench report-line: cannot read {}", a.md.display());
        return 1;
    };
    // (target, phase) → the median round's result.
    let phase: BTreeMap<(String, String), Value> = targets
        .iter()
        .flat_map(|t| line.phases.iter().map(move |(p, _)| (t, *p)))
        .filter_map(|(t, p)| {
            Some((
                (t.clone(), p.to_string()),
                read_json(&a.dir.join(t).join(format!("{p}.json")))?,
            ))
        })
        .collect();
    let get = |t: &str, p: &str| phase.get(&(t.to_string(), p.to_string()));
    let figure = |t: &str, f: &Figure| {
        get(t, f.phase)?
            .get(f.field)?
            .as_f64()
            .filter(|x| x.is_finite())
    };
    // Every round's figures, per target, in the order of the line's figures.
    let per_round: Vec<(String, Vec<_>)> = targets
        .iter()
        .map(|t| {
            let v = line
                .figures
                .iter()
                .map(|f| rounds_of(&a.rounds, t, f.phase, f.field))
                .collect();
            (t.clone(), v)
        })
        .collect();
    let many_rounds = per_round.iter().any(|(_, v)| v.iter().any(|m| m.len() > 1));

    // latest.json
    let obj = |v: &mut Value, k: &str| -> Option<Map<String, Value>> {
        v.as_object_mut()?.remove(k)?.as_object().cloned()
    };
    let (mut tj, mut ratios, mut won, mut spread, mut details, mut notes_j) = (
        obj(&mut out, "targets").unwrap_or_default(),
        obj(&mut out, "ratios").unwrap_or_default(),
        obj(&mut out, "rounds_won").unwrap_or_default(),
        obj(&mut out, "spread").unwrap_or_default(),
        obj(&mut out, "details").unwrap_or_default(),
        obj(&mut out, "notes").unwrap_or_default(),
    );
    let insert = |m: &mut Map<String, Value>, t: &str, k: &str, v: Value| {
        let e = m.entry(t.to_string()).or_insert_with(|| json!({}));
        if let Some(o) = e.as_object_mut() {
            o.insert(k.to_string(), v);
        }
    };
    let mut notes_of: Vec<(String, Vec<String>, Option<u64>)> = Vec::new();
    for t in &targets {
        for f in line.figures {
            insert(&mut tj, t, f.key, json!(figure(t, f)));
        }
        let (mut notes, mut errors) = (Vec::new(), None::<u64>);
        for (p, label) in line.phases {
            let v = get(t, p);
            if let Some(v) = v {
                insert(&mut details, t, p, v.clone());
                if let Some(e) = v.get("errors_total").and_then(Value::as_u64) {
                    errors = Some(errors.unwrap_or(0) + e);
                }
            }
            let mut n = common_notes(v, &a);
            n.extend(v.map(line.notes).unwrap_or_default());
            if let Some(arr) = notes_j
                .entry(t.clone())
                .or_insert_with(|| json!([]))
                .as_array_mut()
            {
                arr.extend(n.iter().map(|n| json!(format!("{label}: {n}"))));
            }
            // The table names the phase only when the line has several.
            let multi = line.phases.len() > 1;
            notes.extend(
                n.into_iter()
                    .map(|n| if multi { format!("{label}: {n}") } else { n }),
            );
        }
        notes_of.push((t.clone(), notes, errors));
    }
    for (t, lines) in &per_round {
        for (f, v) in line.figures.iter().zip(lines) {
            if let Some((lo, hi)) = min_max(v) {
                insert(
                    &mut spread,
                    t,
                    f.key,
                    json!({ "min": lo, "max": hi, "rounds": v.len() }),
                );
            }
        }
    }
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    let mut ratio_rows: Vec<RatioRow> = Vec::new();
    for &other in line.others {
        let name = format!("wspulse/{other}");
        if !(targets.iter().any(|t| t == "wspulse") && targets.iter().any(|t| t == other)) {
            continue;
        }
        let rounds = |t: &str| per_round.iter().find(|(x, _)| x == t).map(|(_, v)| v);
        let (mut ratio, mut paired) = (Vec::new(), Vec::new());
        for (i, f) in line.figures.iter().enumerate() {
            let r = match (figure("wspulse", f), figure(other, f)) {
                (Some(x), Some(y)) if y != 0.0 => Some(r3(x / y)),
                _ => None,
            };
            insert(&mut ratios, &name, f.key, json!(r));
            ratio.push(r);
            let p = match (rounds("wspulse"), rounds(other)) {
                (Some(w), Some(o)) => Some(same_rounds(&w[i], &o[i], f.higher_is_better)),
                _ => None,
            };
            let cell = p.filter(|p| p.of > 0).map(|p| {
                let interval = p.interval.map(|(lo, hi)| [r3(lo), r3(hi)]);
                let v = p
                    .interval
                    .map(|(lo, hi)| verdict(lo, hi, f.higher_is_better));
                json!({ "won": p.won, "of": p.of, "median_ratio": p.median_ratio.map(r3),
                        "median_ratio_95": interval, "verdict": v })
            });
            if let Some(c) = &cell {
                insert(&mut won, &name, f.key, c.clone());
            }
            paired.push(cell);
        }
        ratio_rows.push((name, ratio, paired));
    }
    if let Some(o) = out.as_object_mut() {
        o.insert("targets".into(), Value::Object(tj));
        o.insert("ratios".into(), Value::Object(ratios));
        o.insert("rounds_won".into(), Value::Object(won));
        o.insert("spread".into(), Value::Object(spread));
        o.insert("notes".into(), Value::Object(notes_j));
        o.insert("details".into(), Value::Object(details));
    }

    // latest.md
    let lookup = |p: &str, field: &str| {
        targets
            .iter()
            .find_map(|t| get(t, p)?.get(field)?.as_f64())
            .map_or("?".into(), |x| format!("{x}"))
    };
    let mut s = format!("\n### {}\n\n", line.title);
    s.push_str(&(line.about)(&lookup));
    s.push('\n');
    let columns: Vec<&str> = line.figures.iter().map(|f| f.column).collect();
    s.push_str(&format!(
        "| target | {} | errors | notes |\n|---|{}---:|---|\n",
        columns.join(" | "),
        "---:|".repeat(columns.len())
    ));
    for (t, notes, errors) in &notes_of {
        let cells: Vec<String> = line
            .figures
            .iter()
            .map(|f| fmt_cell(f, figure(t, f)))
            .collect();
        s.push_str(&format!(
            "| {t} | {} | {} | {} |\n",
            cells.join(" | "),
            errors.map_or("—".into(), |e| e.to_string()),
            notes.join("; ").replace('|', "\\|")
        ));
    }
    for (name, ratio, _) in &ratio_rows {
        let cells: Vec<String> = ratio
            .iter()
            .map(|r| r.map_or("—".into(), |x| format!("{x:.2}×")))
            .collect();
        s.push_str(&format!("| *{name}* | {} | | |\n", cells.join(" | ")));
    }
    if many_rounds {
        s.push_str("\nAcross rounds, as in the table above: lowest–highest round per target; against each other proxy the rounds in which wspulse did better, the median same-round ratio and its 95 % interval with the verdict.\n\n");
        s.push_str(&format!(
            "| target | {} |\n|---|{}\n",
            columns.join(" | "),
            "---:|".repeat(columns.len())
        ));
        for (t, lines) in &per_round {
            let cells: Vec<String> = line
                .figures
                .iter()
                .zip(lines)
                .map(|(f, v)| match min_max(v) {
                    Some((lo, hi)) => {
                        format!("{}–{}", fmt_cell(f, Some(lo)), fmt_cell(f, Some(hi)))
                    }
                    None => "—".into(),
                })
                .collect();
            s.push_str(&format!("| {t} | {} |\n", cells.join(" | ")));
        }
        for (label, cell) in crate::ratio_rows() {
            for (name, _, paired) in &ratio_rows {
                let cells: Vec<String> = paired
                    .iter()
                    .map(|p| p.as_ref().and_then(cell).unwrap_or_else(|| "—".into()))
                    .collect();
                s.push_str(&format!("| *{name}: {label}* | {} |\n", cells.join(" | ")));
            }
        }
    }
    print!("{s}");
    md.push_str(&s);
    let text = serde_json::to_string_pretty(&out).unwrap_or_else(|_| "{}".into());
    write_atomic(&a.json, &format!("{text}\n")) | write_atomic(&a.md, &md)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run's directories as bench/run leaves them: each round's phase files and
    /// the median round in `res/`; the report's latest.md and latest.json.
    fn run_dir(name: &str, cpu: &[(&str, [f64; 6])]) -> (PathBuf, LineArgs) {
        let d = std::env::temp_dir().join(format!("wsbench-line-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        for (t, rounds) in cpu {
            for (r, x) in rounds.iter().enumerate() {
                let dir = d.join(format!("rounds/{}/{t}", r + 1));
                std::fs::create_dir_all(&dir).unwrap();
                let v = json!({"cpu_us_per_rt": x, "runs_per_rt": 2.0, "rate_target": 8000.0,
                               "achieved_rate": 8000.0, "sessions_open": 100, "errors_total": 0});
                std::fs::write(dir.join("st64.json"), v.to_string()).unwrap();
                if r == 0 {
                    std::fs::create_dir_all(d.join("res").join(t)).unwrap();
                    std::fs::write(d.join("res").join(t).join("st64.json"), v.to_string()).unwrap();
                }
            }
        }
        std::fs::write(d.join("latest.md"), "## main table\n").unwrap();
        std::fs::write(
            d.join("latest.json"),
            r#"{"targets": {"wspulse": {"x": 1}}}"#,
        )
        .unwrap();
        let a = LineArgs {
            line: "steady".into(),
            dir: d.join("res"),
            rounds: d.join("rounds"),
            targets: "wspulse,nginx,haproxy".into(),
            md: d.join("latest.md"),
            json: d.join("latest.json"),
            busy_threshold: 0.1,
            saturated_threshold: 0.95,
        };
        (d, a)
    }

    #[test]
    fn a_line_is_appended_with_its_ratios_and_verdicts() {
        let (d, a) = run_dir(
            "steady",
            &[
                ("wspulse", [40.0, 41.0, 42.0, 40.5, 41.5, 40.0]),
                ("nginx", [50.0, 50.0, 51.0, 52.0, 50.5, 49.0]),
                ("haproxy", [39.0, 41.0, 42.0, 40.5, 40.0, 41.0]),
            ],
        );
        assert_eq!(report_line(a, &crate::steady::LINE), 0);
        let md = std::fs::read_to_string(d.join("latest.md")).unwrap();
        assert!(md.starts_with("## main table\n"), "{md}");
        assert!(md.contains("### Steady load"), "{md}");
        assert!(md.contains("| wspulse | 40.00 | 2.00 | — | — | 0 | steady 16 KiB: no figure"));
        // Six rounds give an interval: wspulse costs less than nginx in every round.
        assert!(
            md.contains("| *wspulse/nginx: its 95 % interval* | 0.78–0.82× ahead |"),
            "{md}"
        );
        assert!(
            md.contains("| *wspulse/haproxy: rounds better* | 1/6 |"),
            "{md}"
        );
        let v = read_json(&d.join("latest.json")).unwrap();
        assert_eq!(
            v["targets"]["wspulse"]["x"],
            json!(1),
            "the report's keys stay"
        );
        assert_eq!(
            v["targets"]["nginx"]["cpu_us_per_rt_64b_steady"],
            json!(50.0)
        );
        assert_eq!(
            v["targets"]["nginx"]["cpu_us_per_rt_16k_steady"],
            Value::Null
        );
        assert_eq!(
            v["rounds_won"]["wspulse/nginx"]["cpu_us_per_rt_64b_steady"]["verdict"],
            json!("ahead")
        );
        assert_eq!(
            v["ratios"]["wspulse/nginx"]["cpu_us_per_rt_64b_steady"],
            json!(0.8)
        );
        let _ = std::fs::remove_dir_all(d);
    }
}
