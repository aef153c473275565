"""Part 4: the short soak (3,000 sessions) in the suite; the long one is
`python3 e2e/soak.py --sessions 100000` (see e2e/README.md and soak.py)."""

import json
import os
import shutil

import harness
import soak


def test_soak_3000_sessions():
    harness.need(shutil.which("cargo") is not None, "cargo not found: cannot build e2e/soak")
    sessions = int(os.environ.get("E2E_SOAK_SESSIONS", "3000"))
    args = soak.main_args(["--sessions", str(sessions), "--restarts", "3", "--hold", "50",
                           "--max-seconds", "600"])
    report = soak.run_soak(args)
    churn = report.get("churn", {})
    print("\n[soak] " + json.dumps({
        "sessions": churn.get("sessions_total"), "wall_s": report.get("wall_s"),
        "messages": churn.get("messages_c2u", 0) + churn.get("messages_u2c", 0),
        "bytes": churn.get("bytes_c2u", 0) + churn.get("bytes_u2c", 0),
        "rss_kib": report.get("rss_kib"), "drain_s": report.get("drain_s")}))
    failed = [k for k, ok in report["checks"].items() if not ok]
    assert report["ok"], (f"failed checks: {failed}\n"
                          + json.dumps({k: report.get(k) for k in (
                              "metrics_closures", "rss_kib", "bad_log_lines")}, indent=1)
                          + "\nexpected: " + json.dumps(churn.get("expected"))
                          + "\nanomalies: " + json.dumps(churn.get("anomaly_samples")))
