//! `wspulse demo` as a user runs it: the built binary, a short duration.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// Every row the demo's scenarios must produce, as the first tokens of
/// its table line: code, side, cause.
const EXPECTED_ROWS: &[&[&str]] = &[
    &["1000", "client", "close_frame"],
    &["1000", "upstream", "close_frame"],
    &["1001", "client", "close_frame"],
    &["1002", "client", "protocol_error"],
    &["1006", "client", "eof"],
    &["1006", "client", "ping_timeout"],
    &["1006", "client", "reset"],
    &["1006", "upstream", "eof"],
    &["1006", "upstream", "ping_timeout"],
    &["1006", "upstream", "reset"],
    &["1007", "upstream", "protocol_error"],
    &["1009", "client", "message_too_big"],
    &["4001", "upstream", "close_frame"],
    &["HTTP", "403", "upstream", "rejected"],
    &["HTTP", "502", "upstream", "refused"],
];

/// Runs `wspulse demo --duration 5` (killed past 30 s): exit 0, a final
/// table with a non-zero row for every scenario, the reconnecting groups
/// apart, and clean check lines (every check of the groups made, none
/// left unchecked: 5 s is enough for each backoff client's 4th reconnect).
#[test]
fn demo_runs_every_scenario_and_checks_out() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wspulse"))
        .args(["demo", "--duration", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wspulse demo --duration 5 still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = reader.join().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");

    // Not a terminal: plain lines, no escape sequences.
    assert!(!out.contains('\x1b'), "{out}");
    let final_table = out
        .rsplit_once("wspulse demo: final")
        .map(|(_, t)| t)
        .unwrap_or_else(|| panic!("no final table:\n{out}"));
    for row in EXPECTED_ROWS {
        let line = final_table.lines().find(|l| {
            let tokens: Vec<&str> = l.split_whitespace().collect();
            tokens.starts_with(row)
        });
        let line = line.unwrap_or_else(|| panic!("no row {row:?} in:\n{final_table}"));
        let count: u64 = line
            .split_whitespace()
            .nth(row.len())
            .unwrap()
            .parse()
            .unwrap();
        assert!(count > 0, "row {row:?} has no count: {line}");
    }
    let check = final_table
        .lines()
        .find(|l| l.starts_with("demo check: "))
        .unwrap_or_else(|| panic!("no check line:\n{final_table}"));
    assert!(
        check.contains("all classified as injected"),
        "check failed:\n{final_table}"
    );
    assert!(!final_table.contains("mismatch"), "{final_table}");
    assert!(
        !final_table.contains("client-side problems ("),
        "{final_table}"
    );
    assert!(
        final_table.contains("0 client-side problems"),
        "{final_table}"
    );
    assert!(out.contains("/metrics"), "the admin URL is printed: {out}");

    // The reconnecting groups, each from its own instance's histogram:
    // group, sessions, reconnects, p50, p90, share < 1 s.
    assert!(
        final_table.contains("reconnects after an abnormal ending"),
        "{final_table}"
    );
    for group in ["no-backoff", "backoff"] {
        let line = final_table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(group))
            .unwrap_or_else(|| panic!("no {group} line in:\n{final_table}"));
        let reconnects: u64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert!(reconnects >= 5, "{group}: too few reconnects: {line}");
    }
    let reconnect_check = final_table
        .lines()
        .find(|l| l.starts_with("demo check: reconnects"))
        .unwrap_or_else(|| panic!("no reconnect check line:\n{final_table}"));
    for held in [
        "demo check: reconnects as injected:",
        "within 1 s",
        "x no-backoff's",
        "backoff delays grow",
    ] {
        assert!(reconnect_check.contains(held), "{held}: {final_table}");
    }
    assert!(!final_table.contains("not checked"), "{final_table}");
}
