//! Tells the test targets whether they run in CI (`CI=true` or `CI=1`, as
//! `.ci/run` and the usual CI services set it), as `cfg(wspulse_ci)`.
//!
//! The end-to-end suite (`tests/e2e.rs`) needs tools a developer's machine
//! may lack (Python packages, Node, Chromium, root for network
//! namespaces). In CI it runs and a missing tool fails it; elsewhere it is
//! `#[ignore]`d with the reason, so `cargo test` reports it as ignored
//! instead of passing it green without running it. The cfg changes nothing
//! in the library or the binary.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rustc-check-cfg=cfg(wspulse_ci)");
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        println!("cargo::rustc-cfg=wspulse_ci");
    }
}
