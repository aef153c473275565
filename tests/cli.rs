//! The binary's command line: `check` and `run`, as an operator uses them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::process::Command;

fn wspulse() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wspulse"));
    // Tests never inherit the developer's WSPULSE_* settings.
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("WSPULSE")) {
        c.env_remove(k);
    }
    c
}

fn temp_config(name: &str, body: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wspulse-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("wspulse.toml");
    std::fs::write(&p, body).unwrap();
    p
}

/// An unknown key and a bad duration: exit 2, both keys named, one line each.
#[test]
fn check_reports_every_problem_and_exits_2() {
    let p = temp_config(
        "bad",
        "[listen]\nadr = \"127.0.0.1:1\"\n[keepalive]\ninterval = \"15x\"\n",
    );
    let out = wspulse()
        .args(["check", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen.adr"), "{err}");
    assert!(err.contains("keepalive.interval"), "{err}");
    assert!(
        err.lines()
            .filter(|l| l.contains("listen.adr") || l.contains("keepalive.interval"))
            .count()
            >= 2
    );
}

/// A valid file: exit 0 and the effective settings; the environment wins over the file.
#[test]
fn check_prints_effective_settings_with_env_override() {
    let p = temp_config("good", "[upstream]\nurl = \"ws://127.0.0.1:9000\"\n");
    let out = wspulse()
        .args(["check", "--config"])
        .arg(&p)
        .env("WSPULSE_UPSTREAM__URL", "ws://10.0.0.5:9001")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ws://10.0.0.5:9001"), "{text}");
    assert!(text.contains("[keepalive]"), "{text}");
}

/// `run` with a bad environment value refuses to start with exit 2.
#[test]
fn run_refuses_bad_env() {
    let out = wspulse()
        .arg("run")
        .env("WSPULSE_SHUTDOWN__CLOSE_CODE", "1000")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("shutdown.close_code"));
}

/// A listen address already in use: exit 1, naming the address.
#[test]
fn run_reports_address_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = wspulse()
        .arg("run")
        .env("WSPULSE_LISTEN__ADDR", &addr)
        .env("WSPULSE_ADMIN__ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr) && err.contains("listen.addr"), "{err}");
}
