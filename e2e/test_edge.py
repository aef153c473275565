"""Part 6: the edge listener with peers nobody here wrote.

- TLS: a CA and ECDSA P-256 leaves made by `openssl` in the test; Python
  `websockets` and Node `ws` clients trust that CA (wss://), the upstream
  sees X-Forwarded-Proto https; plain HTTP, no shared cipher and an
  untrusted certificate are refused and counted by reason; a certificate swapped on disk (rename over)
  and one loaded on SIGHUP serve new connections while an old session keeps
  relaying; a broken pair keeps the old one served and is counted.
- PROXY protocol: a real HAProxy in front (`send-proxy-v2`, `send-proxy`),
  the client bound to 127.0.0.7: the upstream's X-Forwarded-For and
  /closures name 127.0.0.7; a connection without the header gets no 101
  and is counted.
- Trusted proxies: HAProxy in HTTP mode with `option forwardfor`, trusted,
  names the client; the same spoofed X-Forwarded-For sent straight to
  wspulse from an untrusted address is only appended to.

Headless Chromium over wss:// is in test_browser.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

import harness
from conftest import require_impl

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidMessage, InvalidStatus


@pytest.fixture
def pki(tmp_path) -> harness.Pki:
    return harness.Pki(tmp_path)


def tls_env(pki: harness.Pki, cert: str, key: str, reload_interval: str = "200ms") -> dict:
    return {
        "WSPULSE_LISTEN__TLS__CERT_FILE": str(pki.install("tls.crt", cert)),
        "WSPULSE_LISTEN__TLS__KEY_FILE": str(pki.install("tls.key", key)),
        "WSPULSE_LISTEN__TLS__RELOAD_INTERVAL": reload_interval,
    }


def closures(proxy: harness.Wspulse) -> list[dict]:
    status, body = proxy.admin("/closures")
    assert status == 200, body
    return json.loads(body)["closures"]


def run(coro, timeout: float = harness.LIMIT):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# ------------------------------------------------------------------ TLS with third-party clients

def test_wss_third_party_clients(client_impl, pki, monkeypatch):
    """Python websockets and Node ws over wss://, trusting the test's CA."""
    require_impl(client_impl)
    cert, key = pki.leaf(0x1001)
    up, port = harness.start_upstream("py")
    proxy = harness.Wspulse(f"ws://127.0.0.1:{port}", extra_env=tls_env(pki, cert, key))
    monkeypatch.setenv("E2E_CA_FILE", str(pki.ca))
    p = harness.peer(client_impl, "info", f"wss://localhost:{proxy.port}/info?tls=1")
    res = p.expect(lambda e: e.get("ev") in ("result", "error"), timeout=30, what="result")
    assert res["ev"] == "result", res
    info = res["info"]
    assert info["path"] == "/info?tls=1"
    assert info["headers"]["x-forwarded-proto"] == ["https"]
    assert info["headers"]["x-forwarded-for"] == ["127.0.0.1"]
    m = proxy.wait_metric(lambda m: m.closed() == 1, what="session counted")
    assert m.closures() == {("1000", "client", "close_frame"): 1}
    assert m.sum("wspulse_tls_handshake_failures_total") == 0
    # The expiry gauge is the served certificate's notAfter.
    r = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in", str(pki.dir / "tls.crt")],
                       capture_output=True, check=True, timeout=30)
    not_after = r.stdout.decode().strip().split("=", 1)[1]
    expected = time.mktime(time.strptime(not_after, "%b %d %H:%M:%S %Y GMT")) - time.timezone
    assert abs(m.sum("wspulse_tls_certificate_expiry_timestamp_seconds") - expected) < 2
    assert not proxy.bad_log_lines()


def test_refused_tls_handshakes_are_counted_by_reason(pki):
    """Plain HTTP on the TLS port, no suite in common, a certificate the
    client does not trust: each refused and counted under its reason."""
    cert, key = pki.leaf(0x1002)
    up, port = harness.start_upstream("py")
    proxy = harness.Wspulse(f"ws://127.0.0.1:{port}", extra_env=tls_env(pki, cert, key))

    async def plain():
        try:
            async with connect(f"ws://127.0.0.1:{proxy.port}/echo", open_timeout=5):
                return None
        except InvalidStatus as e:
            return e.response.status_code

    assert run(plain()) == 400

    # A TLS 1.2 client whose only suite wspulse does not offer (RSA key
    # exchange, CBC): refused, counted as no shared cipher.
    old_client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old_client.maximum_version = ssl.TLSVersion.TLSv1_2
    old_client.set_ciphers("AES128-SHA")
    old_client.load_verify_locations(str(pki.ca))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as raw:
        with pytest.raises(ssl.SSLError):
            old_client.wrap_socket(raw, server_hostname="localhost")
    # A client that does not trust the certificate (the system roots only).
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            ssl.create_default_context().wrap_socket(raw, server_hostname="localhost")
    m = proxy.wait_metric(
        lambda m: m.sum("wspulse_tls_handshake_failures_total") == 3,
        what="three failures counted")
    for reason in ("plaintext", "no_shared_cipher", "bad_certificate"):
        assert m.sum("wspulse_tls_handshake_failures_total", reason=reason) == 1, (reason, m.text)
    assert m.opened == 0


async def serial_of(ws) -> int:
    der = ws.transport.get_extra_info("ssl_object").getpeercert()
    return int(der["serialNumber"], 16)


def test_certificate_swap_and_sighup_while_a_session_relays(pki):
    """Rename-over on disk, then SIGHUP: new connections see the new serial,
    the session opened first keeps relaying; a broken pair keeps the old one."""
    cert, key = pki.leaf(0xA1)
    up, port = harness.start_upstream("py")
    # Polled often enough for the swap; SIGHUP for the rest.
    proxy = harness.Wspulse(f"ws://127.0.0.1:{port}", extra_env=tls_env(pki, cert, key, "100ms"))
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    url = f"wss://localhost:{proxy.port}/echo"

    def reloads(outcome: str) -> float:
        return proxy.metrics().sum("wspulse_tls_reloads_total", outcome=outcome)

    async def scenario():
        async with connect(url, ssl=ctx, ping_interval=None) as old:
            assert await serial_of(old) == 0xA1

            async def still_relays(text: str):
                await old.send(text)
                assert await asyncio.wait_for(old.recv(), 5) == text

            await still_relays("before")
            # 1. Swap on disk: key and certificate renamed over the old ones.
            cert2, key2 = pki.leaf(0xB2)
            pki.install("tls.key", key2)
            pki.install("tls.crt", cert2)
            await wait_for(lambda: reloads("ok") >= 1, "reload after the swap")
            async with connect(url, ssl=ctx) as new:
                assert await serial_of(new) == 0xB2
            await still_relays("after the swap")

            # 2. SIGHUP with a new pair written in place. The poll may see
            # the certificate before the key (an error); SIGHUP after both.
            ok = reloads("ok")
            cert3, key3 = pki.leaf(0xC3)
            (pki.dir / "tls.crt").write_text(cert3)
            (pki.dir / "tls.key").write_text(key3)
            proxy.proc.signal(signal.SIGHUP)
            await wait_for(lambda: reloads("ok") > ok, "reload on SIGHUP")
            async with connect(url, ssl=ctx) as new:
                assert await serial_of(new) == 0xC3
            await still_relays("after SIGHUP")

            # 3. A broken pair: a key that is not the certificate's.
            errors = reloads("error")
            _, other_key = pki.leaf(0xD4)
            pki.install("tls.key", other_key)
            proxy.proc.signal(signal.SIGHUP)
            await wait_for(lambda: reloads("error") > errors, "error counted")
            async with connect(url, ssl=ctx) as new:
                assert await serial_of(new) == 0xC3, "the previous pair is still served"
            await still_relays("after a broken pair")

    async def wait_for(cond, what: str):
        deadline = time.monotonic() + harness.LIMIT
        while not cond():
            assert time.monotonic() < deadline, f"{what}: not within {harness.LIMIT}s"
            await asyncio.sleep(0.05)

    run(scenario(), timeout=60)
    m = proxy.wait_metric(lambda m: m.closed() == 4 and m.active == 0, what="sessions counted")
    assert m.closures() == {("1000", "client", "close_frame"): 4}
    errors = [r for r in proxy.log_records() if r.get("level") == "ERROR"]
    assert errors and all("reload failed" in r.get("message", "") for r in errors), errors


# ------------------------------------------------------------------ HAProxy in front

def haproxy_bin() -> str:
    path = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    harness.need(path is not None, "haproxy not installed (apt-get install -y haproxy)")
    return path


def start_haproxy(tmp_path: Path, cfg: str) -> tuple[harness.Proc, int]:
    port = harness.free_port()
    conf = tmp_path / "haproxy.cfg"
    conf.write_text(cfg.replace("@PORT@", str(port)))
    bin_ = haproxy_bin()
    check = subprocess.run([bin_, "-c", "-f", str(conf)], capture_output=True, timeout=30)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    p = harness.Proc("haproxy", [bin_, "-db", "-f", str(conf)])
    deadline = time.monotonic() + harness.LIMIT
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return p, port
        except OSError:
            assert p.p.poll() is None, f"haproxy exited: {p.log_text()}"
            assert time.monotonic() < deadline, "haproxy did not listen"
            time.sleep(0.05)


HAPROXY_TCP = """
global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:@PORT@
    default_backend wspulse
backend wspulse
    server w 127.0.0.1:{wspulse} {send}
"""

HAPROXY_HTTP = """
global
    maxconn 100
defaults
    mode http
    option forwardfor
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout tunnel 1h
frontend fe
    bind 127.0.0.1:@PORT@
    default_backend wspulse
backend wspulse
    server w 127.0.0.1:{wspulse}
"""


async def info_from(source: str, host: str, port: int, headers: dict | None = None) -> dict:
    """The upstream's /info message for a session opened from `source`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    async with connect(f"ws://{host}:{port}/info", sock=sock, additional_headers=headers or {},
                       open_timeout=10) as ws:
        info = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return info


@pytest.mark.parametrize("send", ["send-proxy-v2", "send-proxy"])
def test_haproxy_proxy_protocol_names_the_client(tmp_path, send):
    up, port = harness.start_upstream("py")
    proxy = harness.Wspulse(f"ws://127.0.0.1:{port}",
                            extra_env={"WSPULSE_LISTEN__PROXY_PROTOCOL": "true"})
    _, hport = start_haproxy(tmp_path, HAPROXY_TCP.format(wspulse=proxy.port, send=send))
    # A client spoofing X-Forwarded-For through a balancer wspulse does not trust.
    info = run(info_from("127.0.0.7", "127.0.0.1", hport, {"X-Forwarded-For": "6.6.6.6"}))
    assert info["headers"]["x-forwarded-for"] == ["6.6.6.6, 127.0.0.7"], info
    m = proxy.wait_metric(lambda m: m.closed() == 1, what="session counted")
    assert m.closures() == {("1000", "client", "close_frame"): 1}
    addr = closures(proxy)[0]["client_addr"]
    assert addr.startswith("127.0.0.7:"), addr
    session_logs = [r for r in proxy.log_records() if r.get("message") == "session ended"]
    assert session_logs and session_logs[-1]["client"].startswith("127.0.0.7:"), session_logs

    # Straight to wspulse, without a header: no 101, counted 400.
    async def no_header():
        try:
            async with connect(f"ws://127.0.0.1:{proxy.port}/info", open_timeout=5):
                return "101"
        except (InvalidMessage, InvalidStatus, EOFError, OSError) as e:
            return type(e).__name__

    assert run(no_header()) != "101"
    m = proxy.wait_metric(
        lambda m: m.sum("wspulse_handshake_rejections_total", status="400") == 1,
        what="missing header counted")
    assert m.opened == 1


def test_trusted_and_untrusted_forwarded_for(tmp_path):
    """HAProxy (HTTP mode, option forwardfor) is trusted and names the
    client; the same spoof sent straight from 127.0.0.7 is only appended to."""
    up, port = harness.start_upstream("py")
    proxy = harness.Wspulse(f"ws://127.0.0.1:{port}",
                            extra_env={"WSPULSE_LISTEN__TRUSTED_PROXIES": "127.0.0.1/32"})
    _, hport = start_haproxy(tmp_path, HAPROXY_HTTP.format(wspulse=proxy.port))
    spoof = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"}

    via = run(info_from("127.0.0.7", "127.0.0.1", hport, spoof))
    # HAProxy appended 127.0.0.7; wspulse trusts HAProxy (127.0.0.1) and
    # takes the rightmost untrusted entry; the last entry upstream is it.
    assert via["headers"]["x-forwarded-for"] == ["6.6.6.6, 127.0.0.7"], via
    proxy.wait_metric(lambda m: m.closed() == 1, what="session 1")
    assert closures(proxy)[0]["client_addr"].startswith("127.0.0.7:")

    direct = run(info_from("127.0.0.7", "127.0.0.1", proxy.port, spoof))
    assert direct["headers"]["x-forwarded-for"] == ["6.6.6.6, 127.0.0.7"], direct
    assert direct["headers"]["x-forwarded-proto"] == ["http"], "an untrusted peer's proto is replaced"
    proxy.wait_metric(lambda m: m.closed() == 2, what="session 2")
    assert closures(proxy)[0]["client_addr"].startswith("127.0.0.7:")

    # A client on the trusted address itself may name anyone: that is what
    # trusting 127.0.0.1 means, and why the list must hold only balancers.
    own = run(info_from("127.0.0.1", "127.0.0.1", proxy.port, {"X-Forwarded-For": "203.0.113.9"}))
    assert own["headers"]["x-forwarded-for"] == ["203.0.113.9"], own
    proxy.wait_metric(lambda m: m.closed() == 3, what="session 3")
    assert closures(proxy)[0]["client_addr"] == "203.0.113.9:0"
