"""Part 1: third-party peers on both ends of wspulse.

Clients and upstreams are Python `websockets` (PyPI) and Node `ws` (npm), in
every pairing. Each scenario is also run *without* the proxy where the
outcome should be the same, so a difference is the proxy's doing.
"""

import socket
import time
from urllib.parse import quote

import pytest

import harness
from conftest import IMPLS, require_impl


def run_client(impl: str, *args: str, timeout: float = 40.0) -> dict:
    p = harness.peer(impl, *args, name=f"{impl}-client-{args[0]}")
    res = p.expect(lambda e: e.get("ev") in ("result", "error"), timeout=timeout, what="result")
    assert res["ev"] == "result", res
    p.wait(timeout=10)
    return res


def upstream_close_event(up: harness.Proc, path_prefix: str, timeout: float = 10.0) -> dict:
    return up.expect(lambda e: e.get("ev") == "close" and e["path"].startswith(path_prefix),
                     timeout=timeout, what=f"upstream close event for {path_prefix}")


# ------------------------------------------------------------------ relay fidelity

@pytest.mark.parametrize("path", ["/echo", "/frag"], ids=["upstream-echoes-whole", "upstream-echoes-fragmented"])
def test_relay_fidelity(client_impl, upstream, proxy, path):
    """Text (ASCII, multi-byte, empty, 1 MiB), binary (empty, 256 B, 1 MiB) and
    fragmented messages cross the proxy both ways unchanged, type preserved."""
    impl, _, port = upstream
    direct = run_client(client_impl, "fidelity", f"ws://127.0.0.1:{port}{path}")
    assert direct["ok"], f"the peers disagree even without the proxy: {direct}"
    via = run_client(client_impl, "fidelity", f"{proxy.url}{path}")
    bad = [i for i in via["items"] if not (i["equal"] and i["sent_type"] == i["recv_type"])]
    assert via["ok"] and not bad, f"relay changed messages: {bad}"
    assert [i["sha"] for i in via["items"]] == [i["sha"] for i in direct["items"]]

    n = len(via["items"])
    sent_bytes = sum(i["sent_len"] for i in via["items"])
    m = proxy.wait_metric(lambda m: m.closed() == 1, what="session counted")
    assert m.closures() == {("1000", "client", "close_frame"): 1}
    assert m.sum("wspulse_messages_total", direction="client_to_upstream") == n
    assert m.sum("wspulse_messages_total", direction="upstream_to_client") == n
    # Bytes are counted as they crossed the wire. The Python upstream
    # accepts permessage-deflate (as shipped), which both clients offer:
    # then messages may cross compressed, and the count is what crossed.
    if m.sum("wspulse_compressed_sessions_total") == 0:
        assert m.sum("wspulse_message_bytes_total", direction="client_to_upstream") == sent_bytes
        assert m.sum("wspulse_message_bytes_total", direction="upstream_to_client") == sent_bytes
    else:
        assert impl == "py", "only the Python upstream compresses"
        assert 0 < m.sum("wspulse_message_bytes_total", direction="upstream_to_client") < sent_bytes
    assert m.invariant_holds() and m.active == 0


# ------------------------------------------------------------------ subprotocols

@pytest.mark.parametrize("offer,expected", [
    ("chat.v1,chat.v2", "chat.v2"),   # the upstream's preference wins, not the client's order
    ("chat.v1", "chat.v1"),
    ("x.unknown,chat.v1", "chat.v1"),
])
def test_subprotocol_negotiation(client_impl, upstream, proxy, offer, expected):
    _, up, port = upstream
    direct = run_client(client_impl, "subproto", f"ws://127.0.0.1:{port}/echo", offer)
    via = run_client(client_impl, "subproto", f"{proxy.url}/echo", offer)
    assert direct["protocol"] == expected, direct
    assert via == direct
    # The upstream saw the client's offer and picked the same one twice.
    opens = [up.expect(lambda e: e.get("ev") == "open") for _ in range(2)]
    assert [o["subprotocol"] for o in opens] == [expected, expected]


# Regression (found by this suite, fixed): the upstream dial used
# tungstenite's client handshake, which refuses a 101 without a subprotocol
# when some were offered; RFC 6455 §4.1 leaves that to the client.


def test_subprotocol_none_acceptable(client_impl, upstream, proxy):
    """Nothing acceptable offered: the upstream picks none, and the client reacts
    exactly as it does without the proxy (websockets and browsers: connect without
    one; ws: refuses 'Server sent no subprotocol' itself)."""
    _, _, port = upstream
    direct = run_client(client_impl, "subproto", f"ws://127.0.0.1:{port}/echo", "x.unknown")
    via = run_client(client_impl, "subproto", f"{proxy.url}/echo", "x.unknown")
    assert via["protocol"] is None and direct["protocol"] is None
    assert (via["error"] is None) == (direct["error"] is None), (direct, via)


# ------------------------------------------------------------------ close code and reason, both ways

CLIENT_REASON = "client bye ✓ ü"
UPSTREAM_REASON = "upstream bye ü 😀"


@pytest.mark.parametrize("code", [1000, 4001])
def test_close_client_to_upstream(client_impl, upstream, proxy, code):
    _, up, _ = upstream
    res = run_client(client_impl, "close", f"{proxy.url}/echo", str(code), CLIENT_REASON)
    assert res["echo"] == "before close"
    # The client's closing handshake completed (the proxy echoed its Close).
    assert res["code"] == code, res
    ev = upstream_close_event(up, "/echo")
    assert (ev["code"], ev["reason"]) == (code, CLIENT_REASON)
    m = proxy.wait_metric(lambda m: m.closed() == 1, what="session counted")
    assert m.closures() == {(str(code), "client", "close_frame"): 1}


@pytest.mark.parametrize("code", [1000, 4002])
def test_close_upstream_to_client(client_impl, upstream, proxy, code):
    _, up, _ = upstream
    path = f"/upclose?code={code}&reason={quote(UPSTREAM_REASON)}"
    res = run_client(client_impl, "expect_close", f"{proxy.url}{path}")
    assert res["echo"] == "hi"
    assert (res["code"], res["reason"]) == (code, UPSTREAM_REASON), res
    ev = upstream_close_event(up, "/upclose")
    assert ev["code"] == code  # the client's reply went back to the upstream
    m = proxy.wait_metric(lambda m: m.closed() == 1, what="session counted")
    assert m.closures() == {(str(code), "upstream", "close_frame"): 1}


# Regression (found by this suite, fixed): an empty Close frame (no code;
# RFC 6455 §5.5.1 allows it) must reach the far peer empty, so it sees 1005
# as it would directly, not 1000.


def test_empty_close_client_to_upstream(client_impl, upstream, proxy):
    _, up, port = upstream
    direct = run_client(client_impl, "close", f"ws://127.0.0.1:{port}/echo", "none")
    assert upstream_close_event(up, "/echo")["code"] == 1005
    via = run_client(client_impl, "close", f"{proxy.url}/echo", "none")
    assert via["code"] == direct["code"] == 1005
    m = proxy.wait_metric(lambda m: m.closed() == 1, what="session counted")
    assert m.closures() == {("1005", "client", "close_frame"): 1}
    ev = upstream_close_event(up, "/echo")
    assert ev["code"] == 1005, f"upstream saw {ev['code']} for an empty Close (direct: 1005)"


def test_empty_close_upstream_to_client(client_impl, upstream, proxy):
    _, up, port = upstream
    direct = run_client(client_impl, "expect_close", f"ws://127.0.0.1:{port}/upclose?code=none")
    assert direct["code"] == 1005
    via = run_client(client_impl, "expect_close", f"{proxy.url}/upclose?code=none")
    m = proxy.wait_metric(lambda m: m.closed() == 1, what="session counted")
    assert m.closures() == {("1005", "upstream", "close_frame"): 1}
    assert via["code"] == 1005, f"client saw {via['code']} for an empty Close (direct: 1005)"


# ------------------------------------------------------------------ pings and pongs

def test_pings_hop_by_hop_pongs_forwarded(client_impl, upstream, proxy):
    """A client's Ping is answered by wspulse (same payload) and not relayed;
    an unsolicited Pong is relayed. (Only Node ws exposes what an upstream
    receives, so the upstream side is checked with upstream=node.)"""
    impl, up, _ = upstream
    res = run_client(client_impl, "ping", f"{proxy.url}/echo")
    assert res["pong"] == "client-ping-1" and res["echo"] == "after pongs", res
    upstream_close_event(up, "/echo")
    if impl == "node":
        seen = [ln for ln in up.lines if '"ev":"ping"' in ln or '"ev":"pong"' in ln]
        assert not any("client-ping-1" in ln for ln in seen), f"client ping relayed: {seen}"
        assert any("unsolicited-pong-1" in ln for ln in seen), f"unsolicited pong not relayed: {seen}"


# ------------------------------------------------------------------ rejected handshakes

@pytest.mark.parametrize("status", [403, 404])
def test_rejection_status_passes_through(client_impl, upstream, proxy, status):
    _, _, port = upstream
    direct = run_client(client_impl, "handshake", f"ws://127.0.0.1:{port}/reject/{status}")
    via = run_client(client_impl, "handshake", f"{proxy.url}/reject/{status}")
    assert direct["status"] == status
    assert via["status"] == status, via
    assert f"denied by upstream {status}" in via["body"], via
    m = proxy.metrics()
    assert m.sum("wspulse_handshake_rejections_total", status=status) == 1
    assert m.opened == 0 and m.closed() == 0


def test_unreachable_upstream_is_502(client_impl):
    port = harness.free_port()  # nothing listens there
    proxy = harness.Wspulse(f"ws://127.0.0.1:{port}")
    res = run_client(client_impl, "handshake", f"{proxy.url}/echo")
    assert res["status"] == 502, res
    m = proxy.metrics()
    assert m.sum("wspulse_upstream_connect_failures_total", reason="refused") == 1
    assert m.opened == 0


# ------------------------------------------------------------------ headers

def test_headers_reach_the_upstream(client_impl, upstream, proxy):
    _, _, port = upstream
    path = "/info/room?x=1&y=%C3%A9"
    res = run_client(client_impl, "info", f"{proxy.url}{path}")
    info = res["info"]
    h = {k: v for k, v in info["headers"].items()}
    assert info["path"] == path
    assert h["cookie"] == ["session=abc123; theme=dark"]
    assert h["authorization"] == ["Bearer t0k3n"]
    assert h["x-custom-e2e"] == ["yes"]
    assert h["origin"] == ["http://e2e.test"]
    assert h["user-agent"][0].startswith("e2e-")
    assert h["x-forwarded-for"] == ["127.0.0.1"]
    assert h["x-forwarded-proto"] == ["http"]
    assert h["x-forwarded-host"] == [f"127.0.0.1:{proxy.port}"]
    assert "keep-alive" not in h, "hop-by-hop header forwarded"
    # Only permessage-deflate offers go upstream (compression passthrough).
    for offer in h.get("sec-websocket-extensions", []):
        assert offer.startswith("permessage-deflate"), h["sec-websocket-extensions"]


# ------------------------------------------------------------------ the upstream vanishes: 1014

def test_upstream_vanishes_client_sees_1014(client_impl, upstream, proxy):
    _, up, _ = upstream
    c = harness.peer(client_impl, "hold", f"{proxy.url}/echo", name=f"{client_impl}-hold")
    assert c.expect(lambda e: e.get("ev") == "ready")["echo"] == "hold-1"
    up.kill()  # SIGKILL: the upstream process is gone, the kernel closes its sockets
    res = c.expect(lambda e: e.get("ev") == "result", timeout=15)
    assert res["code"] == 1014, f"client saw {res}, INTERFACE.md promises 1014"
    m = proxy.wait_metric(lambda m: m.closed() == 1, what="session counted")
    assert m.closures() == {("1006", "upstream", "eof"): 1}
    assert m.invariant_holds() and m.active == 0


# ------------------------------------------------------------------ drain on SIGTERM: 1001

def raw_upgrade(port: int, path: str = "/echo") -> socket.socket:
    """A client that completes the upgrade and then never reads again: it keeps
    the drain waiting until `drain_timeout`, leaving a window to scrape /metrics."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        assert chunk, "proxy closed during upgrade"
        buf += chunk
    assert buf.startswith(b"HTTP/1.1 101"), buf[:100]
    return s


def test_sigterm_drain_client_sees_1001(client_impl, upstream):
    _, up, port = upstream
    proxy = harness.Wspulse(f"ws://127.0.0.1:{port}",
                            extra_env={"WSPULSE_SHUTDOWN__DRAIN_TIMEOUT": "3s"})
    c = harness.peer(client_impl, "hold", f"{proxy.url}/echo", name=f"{client_impl}-hold")
    c.expect(lambda e: e.get("ev") == "ready")
    holder = raw_upgrade(proxy.port)
    try:
        proxy.wait_metric(lambda m: m.active == 2, what="two sessions active")
        t0 = time.monotonic()
        proxy.sigterm()
        res = c.expect(lambda e: e.get("ev") == "result", timeout=10)
        assert res["code"] == 1001, f"client saw {res}"
        ev = upstream_close_event(up, "/echo")
        assert ev["code"] == 1001, ev
        # The third-party client's session is done; the raw holder keeps the
        # drain (and the admin server) up until the 3 s deadline.
        m = proxy.wait_metric(lambda m: m.closed(1001, "proxy", "shutdown") == 1,
                              timeout=2.5, what="1001/proxy/shutdown counted")
        assert m.closures() == {("1001", "proxy", "shutdown"): 1}
        assert m.sum("wspulse_drain_sessions_total", outcome="closed") == 1
        assert proxy.admin("/readyz")[0] == 503
        assert proxy.proc.wait(timeout=10) == 0
        took = time.monotonic() - t0
        assert took < 3 + 2.5, f"drain took {took:.1f}s with drain_timeout 3s"
    finally:
        holder.close()
    assert not proxy.bad_log_lines(), proxy.bad_log_lines()


def test_sigterm_drain_with_close_code_1012(upstream):
    """`shutdown.close_code = 1012` reaches a third-party client as 1012."""
    _, up, port = upstream
    require_impl("py")
    proxy = harness.Wspulse(f"ws://127.0.0.1:{port}",
                            extra_env={"WSPULSE_SHUTDOWN__CLOSE_CODE": "1012"})
    clients = [harness.peer(i, "hold", f"{proxy.url}/echo", name=f"{i}-hold")
               for i in IMPLS if i == "py" or harness.node_ok()[0]]
    for c in clients:
        c.expect(lambda e: e.get("ev") == "ready")
    proxy.sigterm()
    for c in clients:
        assert c.expect(lambda e: e.get("ev") == "result")["code"] == 1012
    assert proxy.proc.wait(timeout=15) == 0


# ------------------------------------------------------------------ the client vanishes / sends too much

def test_client_vanishes_upstream_sees_1001(client_impl, upstream, proxy):
    _, up, _ = upstream
    c = harness.peer(client_impl, "hold", f"{proxy.url}/echo", name=f"{client_impl}-hold")
    c.expect(lambda e: e.get("ev") == "ready")
    c.kill()  # SIGKILL the client process: its socket is closed by the kernel
    ev = upstream_close_event(up, "/echo")
    assert ev["code"] == 1001, ev
    m = proxy.wait_metric(lambda m: m.closed() == 1, what="session counted")
    assert m.closures() == {("1006", "client", "eof"): 1}


def test_message_too_big_from_client_is_1009(client_impl, upstream):
    """max_message_size = 64 KiB: a 64 KiB + 1 message gets the client a 1009,
    the upstream a 1001, and the session is counted 1009/client/message_too_big."""
    _, up, port = upstream
    # Limits apply to the bytes on the wire: a compressed message this big
    # would cross (test_compression.py covers that), so compression is off.
    proxy = harness.Wspulse(f"ws://127.0.0.1:{port}", extra_env={
        "WSPULSE_LIMITS__MAX_MESSAGE_SIZE": "64KiB", "WSPULSE_LIMITS__MAX_FRAME_SIZE": "64KiB",
        "WSPULSE_COMPRESSION__MODE": "off"})
    res = run_client(client_impl, "send_big", f"{proxy.url}/echo", str(64 * 1024 + 1))
    assert res["code"] == 1009, res
    m = proxy.wait_metric(lambda m: m.closed() == 1, what="session counted")
    assert m.closures() == {("1009", "client", "message_too_big"): 1}
    ev = upstream_close_event(up, "/echo")
    assert ev["code"] == 1001, ev
