"""Part 5: Autobahn conformance cases (kosoku, PyPI) directly and through wspulse.

For each third-party echo upstream (Python websockets, Node ws) kosoku runs
the Autobahn fuzzing-client cases once against the upstream directly and
once through wspulse. Every case must get the same verdict (behavior,
behaviorClose) and the same close code both ways, except the 17 cases in PROXY_DECIDES, where
wspulse, being a WebSocket endpoint itself, legitimately decides: each lists
the verdicts allowed through wspulse and why. Nothing through wspulse may FAIL.

Excluded here: 12.* and 13.* (permessage-deflate): these echo upstreams
do not compress, and the cases take minutes; test_compression.py runs them
against a compressing upstream, directly and through wspulse. Pings (2.*) are answered by
wspulse hop by hop (its pong, not the upstream's); the verdicts are the same.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import harness
from conftest import require_impl

EXCLUDE = ["12.*", "13.*"]
KOSOKU_TIMEOUT = 300

RANK = {"OK": 0, "NON-STRICT": 1, "INFORMATIONAL": 2, "UNIMPLEMENTED": 3, "WRONG CODE": 4,
        "UNCLEAN": 4, "FAILED": 5}

# Cases where wspulse, being a WebSocket endpoint itself, legitimately decides
# the verdict whatever the upstream does: case -> (verdicts allowed through
# wspulse, why). Verdict = (behavior, behaviorClose). Every other case must
# get exactly the direct verdict.
_FAILFAST = ("wspulse fails the connection on the bad frame at once (1002), racing the "
             "upstream's echo of the valid message before it: with the echo first Autobahn "
             "says OK, without it NON-STRICT (both pass; Python websockets gets NON-STRICT "
             "directly)")
_UTF8 = ("wspulse validates UTF-8 as fragments arrive and closes with 1007 at the first "
         "invalid one (fail fast), whatever the upstream would have done")
_FRAGS = ("wspulse reassembles fragmented messages and relays them whole (INTERFACE.md: "
          "'fragmented messages arrive whole'): the upstream gets one frame, not 65536 "
          "(websockets caps a message at 4096 fragments, ws answers 1008: FAILED directly)")
_CLOSE = ("the closing handshake is terminated by wspulse: a data frame after the client's "
          "Close is discarded there and the Close answered with the client's own code")
_OK = {("OK", "OK")}
_OK_OR_NONSTRICT = {("OK", "OK"), ("NON-STRICT", "OK")}
PROXY_DECIDES: dict[str, tuple[set, str]] = {
    **{c: (_OK_OR_NONSTRICT, _FAILFAST) for c in
       ["3.2", "3.3", "3.4", "4.1.3", "4.1.4", "4.1.5", "4.2.3", "4.2.4", "4.2.5", "5.15"]},
    "6.4.1": (_OK, _UTF8),
    "6.4.2": (_OK, _UTF8),
    "7.1.5": (_OK, _CLOSE),
    **{c: (_OK, _FRAGS) for c in ["9.3.1", "9.3.2", "9.4.1", "9.4.2"]},
}


def kosoku_ok() -> tuple[bool, str]:
    if shutil.which("kosoku") is None:
        return False, "kosoku not installed (pip install -r e2e/requirements.txt)"
    return True, ""


def run_kosoku(target: str, outdir: Path, include: list[str] | None = None,
               exclude: list[str] | None = None) -> dict[str, dict]:
    """Run kosoku against `target`: every case but EXCLUDE, or `include` but `exclude`."""
    argv = ["kosoku", "-p", "2", "-o", str(outdir)]
    for x in include or []:
        argv += ["-i", x]
    for x in (exclude or []) if include else EXCLUDE:
        argv += ["-x", x]
    argv.append(target)
    t0 = time.monotonic()
    outdir.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=2 * KOSOKU_TIMEOUT if include else KOSOKU_TIMEOUT, text=True)
    (outdir / "kosoku.log").write_text(r.stdout)
    index = json.loads((outdir / "index.json").read_text())
    assert len(index) == 1, f"one agent expected in {outdir}/index.json"
    cases = next(iter(index.values()))
    print(f"\n[kosoku] {target}: {len(cases)} cases in {time.monotonic() - t0:.1f}s (exit {r.returncode})")
    return cases


def verdict(c: dict) -> tuple[str, str]:
    return c["behavior"], c["behaviorClose"]


def case_key(k: str) -> tuple[int, ...]:
    return tuple(int(x) for x in k.split("."))


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["py", "node"], ids=lambda i: f"upstream={i}")
def test_autobahn_same_verdicts_direct_and_through_wspulse(impl):
    ok, why = kosoku_ok()
    harness.need(ok, why)
    require_impl(impl)
    up, port = harness.start_upstream(impl, mode="echo")
    proxy = harness.Wspulse(f"ws://127.0.0.1:{port}")
    out = Path(os.environ["E2E_LOGS"]) / f"kosoku-{impl}-{port}"
    direct = run_kosoku(f"127.0.0.1:{port}", out / "direct")
    via = run_kosoku(f"127.0.0.1:{proxy.port}", out / "via-wspulse")

    assert set(direct) == set(via), "different case sets"
    assert len(via) > 250, f"only {len(via)} cases ran"
    problems = []
    counts = {"same": 0, "proxy_decides": 0, "differs_from_direct": 0}
    for case in sorted(via, key=case_key):
        d, v = verdict(direct[case]), verdict(via[case])
        if v[0] == "FAILED":
            problems.append(f"{case}: FAILED through wspulse")
        if case in PROXY_DECIDES:
            allowed, _why = PROXY_DECIDES[case]
            counts["proxy_decides"] += 1
            counts["differs_from_direct"] += v != d
            if v not in allowed:
                problems.append(f"{case}: through wspulse {v}, allowed {sorted(allowed)} (direct {d})")
            continue
        counts["same"] += 1
        if v != d or direct[case].get("remoteCloseCode") != via[case].get("remoteCloseCode"):
            problems.append(f"{case}: direct {d} vs through wspulse {v} "
                            f"(close codes {direct[case].get('remoteCloseCode')} / "
                            f"{via[case].get('remoteCloseCode')})")
    summary = {}
    for c in via.values():
        summary[c["behavior"]] = summary.get(c["behavior"], 0) + 1
    dsum = {}
    for c in direct.values():
        dsum[c["behavior"]] = dsum.get(c["behavior"], 0) + 1
    print(f"[kosoku] upstream={impl}: {counts['same']} cases required identical, "
          f"{counts['proxy_decides']} decided by wspulse ({counts['differs_from_direct']} differ "
          f"this run); direct: {dsum}; through wspulse: {summary}")
    assert not problems, "\n".join(problems)
    assert not proxy.bad_log_lines(), proxy.bad_log_lines()[:5]
