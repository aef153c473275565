#!/usr/bin/env python3
"""Soak: a bounded churn of sessions through wspulse, checked exactly.

    python3 e2e/soak.py --sessions 100000            # the documented long run
    python3 e2e/soak.py --sessions 3000              # what the test suite runs

Builds and runs e2e/soak (a Rust generator: the clients *and* a scripted
upstream, see e2e/soak/src/main.rs) against `wspulse run`, then checks:

- zero lost, duplicated, reordered or corrupted messages (every message
  carries session, sequence number and direction; clean sessions must have
  delivered every message both ways);
- per-(code, side, cause) counts in /metrics equal to what was injected, and
  opened == sum(closed) + active, exactly, with active == 0 at the end;
- 502 + connect_failures{reason="refused"} for every probe during the
  upstream restarts;
- the drain: H held sessions all get 1001 (client) / 1001 (upstream) on
  SIGTERM, and wspulse exits 0;
- RSS of wspulse after all sessions ended back near its baseline (start) and
  near its idle RSS at the first upstream restart (a leak grows with the
  number of sessions; allocator retention does not);
- no panic and no ERROR line in wspulse's log.

Prints a JSON report (figures and every check) and exits 0 only if all pass.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

SOAK_DIR = harness.E2E / "soak"
GENERATOR = SOAK_DIR / "target" / "release" / "wspulse-soak"


def build_generator() -> None:
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet",
                    "--manifest-path", str(SOAK_DIR / "Cargo.toml")],
                   check=True, timeout=900)


def main_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--restarts", type=int, default=3)
    ap.add_argument("--victims", type=int, default=20, help="sessions killed by each upstream restart")
    ap.add_argument("--probes", type=int, default=5, help="clients that must get 502 during each restart")
    ap.add_argument("--hold", type=int, default=50, help="sessions held open for the final drain")
    ap.add_argument("--limit", default="1MiB", help="wspulse limits.max_message_size/max_frame_size")
    ap.add_argument("--max-seconds", type=int, default=1800)
    ap.add_argument("--rss-slack-mib", type=float, default=32.0,
                    help="allowed growth of idle RSS from the first restart to the end "
                         "(twice this from the very start)")
    ap.add_argument("--wspulse", help="binary under test (default: $E2E_WSPULSE_BIN, target/release, target/debug)")
    ap.add_argument("--no-build", action="store_true", help="do not (re)build the generator")
    ap.add_argument("--json", help="also write the report to this file")
    return ap.parse_args(argv)


LIMITS = {"1MiB": 1 << 20}


def run_soak(args: argparse.Namespace) -> dict:
    if args.wspulse:
        import os
        os.environ["E2E_WSPULSE_BIN"] = args.wspulse
    if not args.no_build or not GENERATOR.exists():
        build_generator()
    limit_bytes = LIMITS.get(args.limit) or int(args.limit)
    checks: dict[str, bool] = {}
    report: dict = {"sessions": args.sessions, "concurrency": args.concurrency, "checks": checks}
    upstream_port = harness.free_port()
    proxy = gen = None
    try:
        proxy = harness.Wspulse(
            f"ws://127.0.0.1:{upstream_port}",
            extra_env={
                "WSPULSE_KEEPALIVE__INTERVAL": "1s",
                "WSPULSE_KEEPALIVE__TIMEOUT": "1s",
                "WSPULSE_LIMITS__MAX_MESSAGE_SIZE": str(limit_bytes),
                "WSPULSE_LIMITS__MAX_FRAME_SIZE": str(limit_bytes),
                "WSPULSE_LIMITS__MAX_CONNECTIONS": "100000",
                "WSPULSE_SHUTDOWN__DRAIN_TIMEOUT": "10s",
                "WSPULSE_UPSTREAM__CONNECT_TIMEOUT": "5s",
            },
            stdout_to_log=True)
        report["wspulse_binary"] = str(harness.wspulse_bin())
        time.sleep(0.3)
        rss_before = harness.rss_kib(proxy.pid)
        peak = [rss_before]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                try:
                    peak[0] = max(peak[0], harness.rss_kib(proxy.pid))
                except (OSError, RuntimeError):
                    return
                stop.wait(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        gen = harness.Proc("soak-generator", [
            str(GENERATOR), "--proxy", f"127.0.0.1:{proxy.port}",
            "--upstream-port", str(upstream_port), "--sessions", str(args.sessions),
            "--concurrency", str(args.concurrency), "--seed", str(args.seed),
            "--restarts", str(args.restarts), "--victims", str(args.victims),
            "--probes", str(args.probes), "--limit", str(limit_bytes),
            "--keepalive-ms", "1000", "--keepalive-timeout-ms", "1000",
            "--hold", str(args.hold), "--max-seconds", str(args.max_seconds)])
        t0 = time.monotonic()
        warm = []  # idle RSS at each upstream restart (no session open)
        while True:
            ev = gen.expect(lambda e: e.get("ev") in ("quiesced", "churn_done", "fatal"),
                            timeout=args.max_seconds + 60, what="churn_done")
            if ev["ev"] == "quiesced":
                time.sleep(0.5)
                warm.append(harness.rss_kib(proxy.pid))
                continue
            break
        churn = ev
        if churn["ev"] == "fatal":
            raise AssertionError(f"generator failed: {churn}")
        report["churn"] = {k: v for k, v in churn.items() if k != "ev"}
        report["wall_s"] = round(time.monotonic() - t0, 1)

        m = proxy.wait_metric(lambda m: m.active == 0, timeout=20, what="active == 0")
        got = {"/".join(k): v for k, v in sorted(m.closures().items())}
        report["metrics_closures"] = got
        report["opened"], report["closed"], report["active"] = m.opened, m.closed_total, m.active
        checks["closures_equal_injected"] = got == churn["expected"]
        checks["opened_equals_sessions"] = m.opened == churn["sessions_total"]
        checks["invariant_opened_eq_closed_plus_active"] = m.opened == m.closed_total + m.active
        refused = int(m.sum("wspulse_upstream_connect_failures_total", reason="refused"))
        report["connect_failures_refused"] = refused
        checks["refused_502_counted"] = (refused == churn["refused_502"]
                                         == args.restarts * args.probes)
        checks["no_lost_dup_reordered_corrupt"] = (
            churn["lost"] == churn["dup_or_reordered"] == churn["corrupt"] == 0)
        checks["clean_sessions_complete"] = churn["clean_sessions_complete"] == churn["clean_sessions"]
        checks["no_generator_anomalies"] = churn["anomalies"] == 0
        # Every message a client sent reached the upstream through the proxy, once.
        checks["proxy_c2u_equals_upstream_received"] = (
            int(m.sum("wspulse_messages_total", direction="client_to_upstream")) == churn["messages_c2u"]
            and int(m.sum("wspulse_message_bytes_total", direction="client_to_upstream")) == churn["bytes_c2u"])
        # ... and every message the proxy relayed toward a client arrived there, verified.
        checks["proxy_u2c_equals_client_received"] = (
            int(m.sum("wspulse_messages_total", direction="upstream_to_client")) == churn["messages_u2c"]
            and int(m.sum("wspulse_message_bytes_total", direction="upstream_to_client")) == churn["bytes_u2c"])
        report["proxy_messages"] = {
            "c2u": int(m.sum("wspulse_messages_total", direction="client_to_upstream")),
            "u2c": int(m.sum("wspulse_messages_total", direction="upstream_to_client")),
            "bytes_c2u": int(m.sum("wspulse_message_bytes_total", direction="client_to_upstream")),
            "bytes_u2c": int(m.sum("wspulse_message_bytes_total", direction="upstream_to_client")),
        }

        time.sleep(1.0)  # let the allocator settle
        stop.set()
        rss_after = harness.rss_kib(proxy.pid)
        report["rss_kib"] = {"before": rss_before, "idle_at_restarts": warm,
                             "peak": peak[0], "after": rss_after}
        # A leak shows as idle RSS growing from restart to restart while
        # sessions accumulate (each idle point is taken with no session open);
        # memory glibc keeps after the busiest moment is not a leak, so the
        # final figure is only bounded against the start, not against the
        # first idle point (a CI run kept its 68 MiB peak: after 67 MiB vs a
        # first idle point of 32 MiB, while idle points went 32 -> 48 -> 44).
        # With 10 restarts over 100k sessions the trend check catches a leak
        # of about 0.4 KiB per session; the 3,000-session CI run, about 16 KiB.
        slack = args.rss_slack_mib * 1024
        checks["rss_back_near_baseline"] = (rss_after - rss_before <= 2 * slack
                                            and (len(warm) < 2 or warm[-1] - warm[0] <= slack))

        if args.hold:
            gen.send_line("hold")
            gen.expect(lambda e: e.get("ev") == "holding", timeout=60, what="holding")
            m = proxy.wait_metric(lambda m: m.active == args.hold, timeout=10, what="held sessions active")
            opened_before_drain = m.opened
            t1 = time.monotonic()
            proxy.proc.signal(signal.SIGTERM)
            code = proxy.proc.wait(timeout=25)
            report["drain_s"] = round(time.monotonic() - t1, 2)
            checks["exit_0_after_sigterm"] = code == 0
            done = gen.expect(lambda e: e.get("ev") in ("hold_done", "fatal"), timeout=60, what="hold_done")
            report["hold"] = {k: v for k, v in done.items() if k != "ev"}
            checks["held_clients_got_1001"] = done.get("client_codes") == {"1001": args.hold}
            checks["held_upstreams_got_1001"] = done.get("upstream_codes") == {"1001": args.hold}
            checks["no_generator_anomalies"] &= done.get("anomalies") == 0
            final = [r for r in proxy.log_records() if r.get("message") == "final counts"]
            if final:
                f = final[-1]
                report["final_counts_log"] = f
                checks["final_counts_consistent"] = (
                    f.get("opened") == opened_before_drain == f.get("closed")
                    and f.get("active") == 0 and f.get("shutdown_closed") == args.hold)
        gen.wait(timeout=30)
        bad = proxy.bad_log_lines()
        report["bad_log_lines"] = bad[:20]
        checks["no_panic_or_error_log"] = not bad
        report["ok"] = all(checks.values())
        return report
    finally:
        harness.Proc.kill_all()


def main() -> int:
    args = main_args()
    try:
        report = run_soak(args)
    except AssertionError as e:
        report = {"ok": False, "error": str(e)}
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
