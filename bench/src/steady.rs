//! The steady-load line of bench/run (issue 29): what the proxy spends per round trip at
//! a fixed, moderate, open-loop rate, the load a sidecar runs most of its life. Below
//! saturation every message travels alone and wakes the proxy on its own, so this line
//! shows the cost of sleeping, waking and polling that the closed-loop throughput phase
//! (where one wake-up carries several messages) hides.
//!
//! The phases are `wsbench latency` runs (`st64`: 64 B, `st16k`: 16 KiB), which sample the
//! proxy's schedstat over the measured window; [`LINE`] is their table in the report.

use serde_json::Value;

use crate::line::{Figure, Line};

/// The steady-load line of the report (`wsbench report-line --line steady`).
pub const LINE: Line = Line {
    title: "Steady load: CPU per round trip at a moderate rate",
    phases: &[("st64", "steady 64 B"), ("st16k", "steady 16 KiB")],
    // The tunnel (`wsbench-tunnel`) is the floor: what the kernel's part of relaying costs.
    others: &["nginx", "haproxy", "tunnel"],
    figures: &[
        Figure {
            key: "cpu_us_per_rt_64b_steady",
            phase: "st64",
            field: "cpu_us_per_rt",
            higher_is_better: false,
            column: "CPU µs per round trip, 64 B",
            decimals: 2,
        },
        Figure {
            key: "runs_per_rt_64b_steady",
            phase: "st64",
            field: "runs_per_rt",
            higher_is_better: false,
            column: "wake-ups per round trip, 64 B",
            decimals: 2,
        },
        Figure {
            key: "cpu_us_per_rt_16k_steady",
            phase: "st16k",
            field: "cpu_us_per_rt",
            higher_is_better: false,
            column: "CPU µs per round trip, 16 KiB",
            decimals: 2,
        },
        Figure {
            key: "runs_per_rt_16k_steady",
            phase: "st16k",
            field: "runs_per_rt",
            higher_is_better: false,
            column: "wake-ups per round trip, 16 KiB",
            decimals: 2,
        },
    ],
    about: |n| {
        format!(
            "- Open loop, as the latency phase: {} round trips/s of 64 B messages and {} of 16 KiB, spread evenly over {} sessions; each session sends its message at its scheduled time whatever the echoes do, so messages travel alone and each wakes the proxy, as below saturation. Binary messages, echoed by the same upstream.\n\
             - CPU µs per round trip: the proxy's on-CPU time (every thread of every process, from /proc/PID/task/TID/schedstat, in nanoseconds) over the measured window, divided by the round trips scheduled in it and echoed. A round trip is two relayed messages.\n\
             - Wake-ups per round trip: the times the kernel put one of the proxy's threads on a CPU (schedstat's run count) over the same window: 2 is one per relayed message.\n\
             - tunnel: `wsbench-tunnel`, a reference, not a proxy: one thread copying bytes between the two sockets over epoll (mio), no HTTP, no framing, no timers, each read written in one call as wspulse does. What it spends is the kernel's part of relaying, which every proxy pays; wspulse/tunnel is what everything above the sockets costs.\n",
            n("st64", "rate_target"),
            n("st16k", "rate_target"),
            n("st64", "sessions_open"),
        )
    },
    notes: |v| {
        let f = |k: &str| v.get(k).and_then(Value::as_f64);
        let mut notes = Vec::new();
        if let (Some(rate), Some(got)) = (f("rate_target"), f("achieved_rate"))
            && got < 0.97 * rate
        {
            notes.push(format!(
                "echoed {got:.0} of the {rate:.0} round trips/s scheduled"
            ));
        }
        if f("cpu_us_per_rt").is_none() {
            notes.push("no CPU figure (schedstat unreadable)".into());
        }
        notes
    },
};

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_rate_the_generator_did_not_reach_is_noted() {
        let ok = json!({"rate_target": 8000.0, "achieved_rate": 7990.0, "cpu_us_per_rt": 40.0});
        assert!((LINE.notes)(&ok).is_empty());
        let short = json!({"rate_target": 8000.0, "achieved_rate": 6000.0});
        assert_eq!(
            (LINE.notes)(&short),
            [
                "echoed 6000 of the 8000 round trips/s scheduled",
                "no CPU figure (schedstat unreadable)"
            ]
        );
    }

    #[test]
    fn schedstat_counts_this_process() {
        let pid = std::process::id();
        let spin = std::hint::black_box((0..2_000_000u64).sum::<u64>());
        let (ns, runs) = crate::sched_of(&[pid]).expect("schedstat readable");
        assert!(ns > 0 && runs > 0 && spin > 0, "{ns} {runs}");
    }
}
