"""Part 7: how clients reconnect, with Python `websockets` clients.

A client identified by a header vanishes and comes back; wspulse measures
the delay by how the previous session ended. Admission limits answer 503
with a Retry-After the client library reports.
"""

from __future__ import annotations

import asyncio
import time

import harness
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

DELAY = "wspulse_reconnect_delay_seconds"


def hdr(client_id: str) -> dict:
    return {"additional_headers": {"X-Client-Id": client_id}, "open_timeout": 10,
            "ping_interval": None}


def count(m: harness.Metrics, cls: str, side: str) -> float:
    return m.sum(f"{DELAY}_count", **{"class": cls, "side": side})


def test_a_vanished_client_coming_back_is_measured():
    up, port = harness.start_upstream("py")
    proxy = harness.Wspulse(f"ws://127.0.0.1:{port}",
                            extra_env={"WSPULSE_CLIENTS__IDENTITY": "header:x-client-id"})

    async def scenario() -> float:
        ws = await connect(f"{proxy.url}/echo", **hdr("phone-1"))
        await ws.send("hi")
        assert await asyncio.wait_for(ws.recv(), 10) == "hi"
        # Bounds for what the proxy measures: its session ended after the
        # abort and before the metric showed it; the reconnect came 0.4 s
        # after that, and before connect() returned.
        vanished = time.monotonic()
        ws.transport.abort()  # the phone vanishes: no Close, a reset
        await asyncio.to_thread(proxy.wait_metric, lambda m: m.closed() == 1,
                                what="the vanished session counted")
        await asyncio.sleep(0.4)
        back = await connect(f"{proxy.url}/echo", **hdr("phone-1"))
        elapsed = time.monotonic() - vanished
        await back.close()
        return elapsed

    elapsed = asyncio.run(asyncio.wait_for(scenario(), 60))
    m = proxy.wait_metric(lambda m: m.closed() == 2, what="both sessions counted")
    assert count(m, "abnormal", "client") == 1, m.text
    observed = m.sum(f"{DELAY}_sum", **{"class": "abnormal", "side": "client"})
    assert 0.4 <= observed <= elapsed, (observed, elapsed)
    # The first visit of a client adds nothing: one observation in all.
    assert m.sum(f"{DELAY}_count") == 1
    assert m.sum("wspulse_clients_tracked") == 1


def test_the_per_client_cap_answers_503_with_retry_after():
    up, port = harness.start_upstream("py")
    proxy = harness.Wspulse(f"ws://127.0.0.1:{port}", extra_env={
        "WSPULSE_CLIENTS__IDENTITY": "header:x-client-id",
        "WSPULSE_LIMITS__MAX_CONNECTIONS_PER_CLIENT": "1"})

    async def scenario() -> tuple[int, str]:
        first = await connect(f"{proxy.url}/echo", **hdr("tab-user"))
        try:
            await connect(f"{proxy.url}/echo", **hdr("tab-user"))
        except InvalidStatus as e:
            refused = (e.response.status_code, e.response.headers.get("Retry-After"))
        else:
            raise AssertionError("a second session from the same client was admitted")
        other = await connect(f"{proxy.url}/echo", **hdr("someone-else"))
        await other.send("served")
        assert await asyncio.wait_for(other.recv(), 10) == "served"
        await other.close()
        await first.close()
        return refused

    status, retry = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert status == 503 and retry is not None and 2 <= int(retry) <= 4, (status, retry)
    m = proxy.wait_metric(lambda m: m.closed() == 2, what="two sessions counted")
    assert m.sum("wspulse_admission_rejections_total", reason="per_client") == 1
    assert m.sum("wspulse_handshake_rejections_total", status="503") == 1
