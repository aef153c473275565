"""Part 6: permessage-deflate end to end (compression.mode = "passthrough").

Third-party peers that compress (Python `websockets`, Node `ws`, and the
Autobahn 12.*/13.* cases) on both ends of wspulse: the extension is
negotiated end to end, compressed messages come back byte-exact, and
wspulse counts the bytes that crossed the wire (compressed). With
`compression.mode = "off"` no extension reaches either side and everything
still relays.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

import harness
from conftest import require_impl
from test_conformance import kosoku_ok, run_kosoku, verdict, case_key

PY = [sys.executable, str(harness.PEERS / "deflate_peer.py")]
NODE = ["node", str(harness.PEERS / "deflate_node.js")]


def upstream(argv: list[str], name: str) -> tuple[harness.Proc, int]:
    p = harness.Proc(name, argv)
    ev = p.expect(lambda e: e.get("ev") == "listening", what="listening line")
    return p, int(ev["port"])


def client(argv: list[str], name: str, timeout: float = 120) -> dict:
    p = harness.Proc(name, argv)
    res = p.expect(lambda e: e.get("ev") in ("result", "error"), timeout=timeout, what="result")
    assert res["ev"] == "result", res
    p.wait(timeout=10)
    return res


def assert_compressed_session(proxy: harness.Wspulse, res: dict) -> None:
    """One session, negotiated end to end, every message compressed and
    counted at its wire size: well under the payload."""
    n = res["messages"]
    m = proxy.wait_metric(lambda m: m.closed() == 1, what="session counted")
    assert m.closures() == {("1000", "client", "close_frame"): 1}
    assert m.sum("wspulse_compressed_sessions_total") == 1
    for d in ("client_to_upstream", "upstream_to_client"):
        assert m.sum("wspulse_messages_total", direction=d) == n
        assert m.sum("wspulse_compressed_messages_total", direction=d) == n
        wire = m.sum("wspulse_message_bytes_total", direction=d)
        assert wire < 0.5 * res["payload_bytes"], (d, wire, res["payload_bytes"])
    status, body = proxy.admin("/closures")
    assert status == 200, status
    assert [c["compression"] for c in json.loads(body)["closures"]] == ["permessage-deflate"]


def test_python_websockets_both_ends_negotiate_and_relay_compressed():
    """Python websockets client and server, compression on by default as
    shipped: negotiated through wspulse, 100 compressible text and binary
    messages of 1-64 KiB byte-exact, the bytes counted compressed."""
    up, port = upstream(PY + ["server"], "py-deflate-upstream")
    proxy = harness.Wspulse(f"ws://127.0.0.1:{port}")
    res = client(PY + ["client", f"{proxy.url}/chat", "100"], "py-deflate-client")
    assert res["ok"], res
    assert res["extensions"].startswith("permessage-deflate"), res
    opened = up.expect(lambda e: e.get("ev") == "open")
    # The client's offer reached the upstream as sent; its answer came back as sent.
    assert opened["offered"] == ["permessage-deflate; client_max_window_bits"], opened
    assert opened["answered"] == res["extensions"], (opened, res)
    assert_compressed_session(proxy, res)
    assert not proxy.bad_log_lines(), proxy.bad_log_lines()[:5]
    logged = [r for r in proxy.log_records() if r.get("fields", {}).get("message") == "session ended"
              or r.get("message") == "session ended"]
    assert logged and "permessage-deflate" in str(logged[-1]), logged[-1:]


@pytest.mark.parametrize("opts", [
    "server_no_context_takeover",
    "client_no_context_takeover",
    "server_no_context_takeover,client_no_context_takeover",
    "client_max_window_bits=10",
    "server_max_window_bits=9,client_max_window_bits=9",
])
def test_context_takeover_and_window_bits_are_relayed(opts):
    """Each permessage-deflate parameter is offered through wspulse, agreed
    end to end, and 1,000 messages in that mode come back byte-exact."""
    up, port = upstream(PY + ["server", "--opts", opts], "py-deflate-upstream")
    proxy = harness.Wspulse(f"ws://127.0.0.1:{port}")
    res = client(PY + ["client", f"{proxy.url}/", "1000", "--opts", opts], "py-deflate-client",
                 timeout=240)
    assert res["ok"], res
    for param in opts.split(","):
        assert param.split("=")[0] in res["extensions"], (param, res["extensions"])
    opened = up.expect(lambda e: e.get("ev") == "open")
    assert opened["answered"] == res["extensions"]
    assert_compressed_session(proxy, res)


def test_node_ws_both_ends_negotiate_and_relay_compressed():
    """Node ws client with perMessageDeflate and a Node ws server with it on."""
    require_impl("node")
    up, port = upstream(NODE + ["server"], "node-deflate-upstream")
    proxy = harness.Wspulse(f"ws://127.0.0.1:{port}")
    res = client(NODE + ["client", f"{proxy.url}/", "100"], "node-deflate-client")
    assert res["ok"], res
    assert "permessage-deflate" in res["extensions"], res
    opened = up.expect(lambda e: e.get("ev") == "open")
    assert "permessage-deflate" in opened["offered"], opened
    assert_compressed_session(proxy, res)


def test_mode_off_negotiates_nothing_and_still_relays():
    """compression.mode = "off": the upstream sees no offer, the client no
    extension, and the messages relay uncompressed, counted at full size."""
    up, port = upstream(PY + ["server"], "py-deflate-upstream")
    proxy = harness.Wspulse(f"ws://127.0.0.1:{port}",
                            extra_env={"WSPULSE_COMPRESSION__MODE": "off"})
    res = client(PY + ["client", f"{proxy.url}/", "50"], "py-deflate-client")
    assert res["ok"], res
    assert res["extensions"] is None, res
    opened = up.expect(lambda e: e.get("ev") == "open")
    assert opened["offered"] == [] and opened["answered"] is None, opened
    m = proxy.wait_metric(lambda m: m.closed() == 1, what="session counted")
    assert m.sum("wspulse_compressed_sessions_total") == 0
    assert m.sum("wspulse_compressed_messages_total") == 0
    assert m.sum("wspulse_message_bytes_total", direction="client_to_upstream") == res["payload_bytes"]


def test_limits_apply_to_the_bytes_on_the_wire():
    """max_message_size = 64 KiB: 1 MiB of text that deflates to a few KiB
    crosses (the proxy never inflates; the endpoints bound what they
    inflate), while 64 KiB + 1 of random bytes, which deflate cannot
    shrink, gets the client a 1009."""
    _, port = upstream(PY + ["server"], "py-deflate-upstream")
    proxy = harness.Wspulse(f"ws://127.0.0.1:{port}", extra_env={
        "WSPULSE_LIMITS__MAX_MESSAGE_SIZE": "64KiB"})
    res = client(PY + ["big", f"{proxy.url}/", str(1 << 20), "text"], "py-big-text")
    assert res == {"ev": "result", "echoed": True, "code": None}, res
    res = client(PY + ["big", f"{proxy.url}/", str(64 * 1024 + 1), "random"], "py-big-random")
    assert res["code"] == 1009, res
    m = proxy.wait_metric(lambda m: m.closed() == 2, what="both sessions counted")
    assert m.closures() == {("1000", "client", "close_frame"): 1,
                            ("1009", "client", "message_too_big"): 1}


@pytest.mark.slow
def test_autobahn_compression_cases_same_verdicts_direct_and_through_wspulse():
    """Autobahn 12.* and 13.* (permessage-deflate, every parameter; messages
    up to 64 KiB) against a compressing Python websockets echo server,
    directly and through wspulse: the same verdict and close code for every
    case, and none fails."""
    ok, why = kosoku_ok()
    harness.need(ok, why)
    up, port = upstream(PY + ["server"], "py-deflate-echo")
    proxy = harness.Wspulse(f"ws://127.0.0.1:{port}")
    out = Path(os.environ["E2E_LOGS"]) / f"kosoku-deflate-{port}"
    include = ["12.*", "13.*"]
    # Sizes 10-18 (128 KiB to 16 MiB, 1,000 messages each) take most of the
    # nine minutes the whole set takes here, and kosoku fails a case that
    # is merely slow: on a shared machine their verdict measures the
    # machine. E2E_AUTOBAHN_FULL=1 runs them too.
    big = [f"{group}.*.{n}" for group in (12, 13) for n in range(10, 19)]
    exclude = [] if os.environ.get("E2E_AUTOBAHN_FULL") == "1" else big
    direct = run_kosoku(f"127.0.0.1:{port}", out / "direct", include=include, exclude=exclude)
    via = run_kosoku(f"127.0.0.1:{proxy.port}", out / "via-wspulse", include=include,
                     exclude=exclude)
    assert set(direct) == set(via) and len(via) >= 108, (len(direct), len(via))
    problems = []
    for case in sorted(via, key=case_key):
        d, v = verdict(direct[case]), verdict(via[case])
        if v[0] in ("FAILED", "ERROR") or v != d or \
                direct[case].get("remoteCloseCode") != via[case].get("remoteCloseCode"):
            problems.append(f"{case}: direct {d} vs through wspulse {v}")
    assert not problems, "\n".join(problems[:20])
    m = proxy.metrics()
    assert m.sum("wspulse_compressed_sessions_total") == len(via)
    assert not proxy.bad_log_lines(), proxy.bad_log_lines()[:5]
