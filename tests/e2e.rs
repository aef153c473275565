//! Runs the end-to-end suite in `e2e/` (see e2e/README.md) against the
//! `wspulse` binary this `cargo test` just built: third-party peers (Python
//! `websockets`, Node `ws`), headless Chromium (over ws:// and wss://),
//! network faults in network namespaces, a short soak, the Autobahn cases
//! (kosoku), the edge listener (TLS reloads, HAProxy sending the PROXY
//! protocol, trusted forwarding headers), and the deploy kit's rules and
//! dashboard in a real Prometheus.
//!
//! The suite is `python3 -m pytest e2e`; this test fails if it fails.
//!
//! It never passes without running: in CI (`CI=true`, seen by `build.rs` as
//! `cfg(wspulse_ci)`) it runs with `cargo test`, and outside CI it is
//! `#[ignore]`d with the tools it needs, to be run with
//! `cargo test --test e2e -- --ignored`. Whenever it runs, every tool is
//! required: a missing one (Python packages, Node, Chromium, root for the
//! network namespaces) fails it, with the install command, instead of
//! skipping any part. `E2E_PYTEST_ARGS` adds pytest arguments (e.g.
//! `-k soak`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// Bound on the whole suite; it normally takes a few minutes.
const LIMIT: Duration = Duration::from_secs(30 * 60);

/// Straight to the terminal: libtest captures `println!`/`eprintln!` of passing tests.
fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn python_ready(root: &Path) -> Result<(), String> {
    let out = Command::new("python3")
        .args(["-c", "import pytest, websockets"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("python3 not runnable: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "python3 lacks pytest/websockets ({})",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ))
    }
}

#[test]
#[cfg_attr(
    not(wspulse_ci),
    ignore = "needs python3 with e2e/requirements.txt, `npm ci --prefix e2e`, chromium, \
              iproute2, nftables, haproxy, openssl, prometheus and root (e2e/README.md); runs \
              by itself when CI=true, else: cargo test --test e2e -- --ignored"
)]
fn e2e_suite() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let install = "install: python3 -m pip install -r e2e/requirements.txt; npm ci --prefix e2e; \
                   apt-get install -y chromium iproute2 iptables nftables haproxy openssl \
                   prometheus (see e2e/README.md)";
    if let Err(why) = python_ready(root) {
        panic!("e2e: {why}; {install}");
    }

    let logs = std::env::temp_dir().join(format!("wspulse-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&logs).expect("create the e2e log directory");
    say(&format!("e2e: process logs in {}", logs.display()));
    let mut args: Vec<String> = [
        "-m",
        "pytest",
        "e2e",
        "-q",
        "-rfEsxX",
        "-p",
        "no:cacheprovider",
    ]
    .map(String::from)
    .to_vec();
    // Extra pytest arguments for development, e.g. E2E_PYTEST_ARGS="-k soak".
    let extra = std::env::var("E2E_PYTEST_ARGS").unwrap_or_default();
    args.extend(extra.split_whitespace().map(String::from));
    let mut cmd = Command::new("python3");
    cmd.args(&args)
        .current_dir(root)
        .env("E2E_WSPULSE_BIN", env!("CARGO_BIN_EXE_wspulse"))
        .env("E2E_LOGS", &logs)
        // Whenever the suite runs, a missing tool fails its test: nothing
        // passes without having run.
        .env("E2E_NO_SKIP", "1")
        .stdin(Stdio::null())
        // Its own process group, so a timeout can end pytest and everything it
        // started, by that group's id.
        .process_group(0);
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn python3 -m pytest");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for pytest") {
            break status;
        }
        if started.elapsed() > LIMIT {
            let pgid = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &pgid]).status();
            let _ = child.wait();
            panic!("e2e suite still running after {LIMIT:?}: killed (process group {pgid})");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    say(&format!(
        "e2e: pytest finished in {:.0}s with {status}",
        started.elapsed().as_secs_f64()
    ));
    if status.success() {
        // Kept only when something failed.
        let _ = std::fs::remove_dir_all(&logs);
    }
    assert!(
        status.success(),
        "e2e suite failed ({status}); process logs in {}",
        logs.display()
    );
}
