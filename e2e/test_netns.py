"""Part 3: real network faults, in network namespaces joined by veth pairs.

The client, wspulse and the upstream each run in their own namespace (see
netns.py). Once keepalive has been seen working across the links, every
packet into and out of the client's (or the upstream's) namespace is dropped.
With keepalive.interval = 1s and keepalive.timeout = 1s the proxy must count
1006/<side>/ping_timeout within interval + timeout (2 s, plus 0.6 s for
polling), and close the live leg (1001 to the upstream, 1014 to the client).
"""

import sys
import time

import pytest

import harness
import netns

INTERVAL, TIMEOUT = 1.0, 1.0
SLACK = 0.6


@pytest.fixture
def topo():
    ok, why = netns.available()
    if not ok:
        # Printed by pytest -rs; in CI (E2E_NO_SKIP=1) a failure instead.
        harness.need(False, f"network namespaces unavailable: {why}")
    t = netns.Topology()
    with t:
        try:
            yield t
        finally:
            harness.Proc.kill_all()  # processes first, then the namespaces they live in


def start_all(t: netns.Topology):
    up, uport = harness.start_upstream("py", host=netns.UPSTREAM_IP,
                                       prefix=t.exec_prefix(t.upstream))
    relay = harness.Proc("ns-http", t.exec_prefix(t.proxy) +
                         [sys.executable, str(harness.PEERS / "ns_http.py")])

    def admin_get(port, path):
        relay.send_line(f"http://127.0.0.1:{port}{path}")
        r = relay.expect(lambda e: e.get("ev") == "http", timeout=5, what="admin response")
        if r["status"] == 0:
            raise OSError(r.get("error"))
        return r["status"], r["body"]

    proxy = harness.Wspulse(
        f"ws://{netns.UPSTREAM_IP}:{uport}", listen_host=netns.PROXY_C_IP,
        prefix=t.exec_prefix(t.proxy), admin_get=admin_get,
        extra_env={"WSPULSE_KEEPALIVE__INTERVAL": "1s", "WSPULSE_KEEPALIVE__TIMEOUT": "1s"})
    client = harness.peer("py", "hold", f"ws://{netns.PROXY_C_IP}:{proxy.port}/echo",
                          name="ns-client", prefix=t.exec_prefix(t.client))
    assert client.expect(lambda e: e.get("ev") == "ready")["echo"] == "hold-1"
    # Keepalive works across both links before the fault: pings answered, nobody closed.
    m = proxy.wait_metric(
        lambda m: m.sum("wspulse_ping_rtt_seconds_count", side="client") >= 2
        and m.sum("wspulse_ping_rtt_seconds_count", side="upstream") >= 2,
        timeout=6, what="two answered pings on each leg")
    assert m.active == 1 and m.closed() == 0
    return up, proxy, client


def wait_detected(proxy, side: str, t0: float) -> float:
    proxy.wait_metric(lambda m: m.closed(1006, side, "ping_timeout") == 1,
                      timeout=INTERVAL + TIMEOUT + 5, what=f"1006/{side}/ping_timeout")
    return time.monotonic() - t0


def test_client_link_drops_everything(topo):
    up, proxy, client = start_all(topo)
    tool = topo.drop_all(topo.client)
    t0 = time.monotonic()
    took = wait_detected(proxy, "client", t0)
    print(f"\n[netns] client link dropped ({tool}): 1006/client/ping_timeout after {took:.2f}s")
    assert took <= INTERVAL + TIMEOUT + SLACK, f"detected after {took:.2f}s"
    m = proxy.metrics()
    assert m.closures() == {("1006", "client", "ping_timeout"): 1}
    assert m.invariant_holds() and m.active == 0
    ev = up.expect(lambda e: e.get("ev") == "close", timeout=5)
    assert ev["code"] == 1001, ev  # the live upstream was told: the client went away


def test_upstream_link_drops_everything(topo):
    up, proxy, client = start_all(topo)
    tool = topo.drop_all(topo.upstream)
    t0 = time.monotonic()
    took = wait_detected(proxy, "upstream", t0)
    print(f"\n[netns] upstream link dropped ({tool}): 1006/upstream/ping_timeout after {took:.2f}s")
    assert took <= INTERVAL + TIMEOUT + SLACK, f"detected after {took:.2f}s"
    res = client.expect(lambda e: e.get("ev") == "result", timeout=5)
    assert res["code"] == 1014, res  # the live client was told: bad gateway
    m = proxy.metrics()
    assert m.closures() == {("1006", "upstream", "ping_timeout"): 1}
    assert m.invariant_holds() and m.active == 0
