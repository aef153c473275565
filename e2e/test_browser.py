"""Part 2: a real browser (headless Chromium, Debian's package) through wspulse.

Session 1: the page exchanges messages, then the upstream process is killed;
the page's onclose must report 1014 (not 1006) and wspulse must count
1006/upstream/eof. Session 2 (upstream restarted on the same port): the page
closes normally with 1000, counted 1000/client/close_frame.

Run twice: over ws://, and over wss:// to a TLS listener whose certificate
(ECDSA P-256, signed by a CA `openssl` makes in the test) Chromium trusts
through its `--ignore-certificate-errors-spki-list` flag, which names the
leaf's public key and nothing else (no certificate store to touch).
"""

import os
import shutil

import pytest

import harness

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_chromium_sees_1014_then_closes_cleanly(scheme, tmp_path):
    ok, why = harness.node_ok()
    harness.need(ok, why)
    harness.need((harness.NODE_MODULES / "playwright-core").is_dir(),
                 "e2e/node_modules/playwright-core missing: run `npm ci --prefix e2e`")
    harness.need(os.path.exists(CHROMIUM) or shutil.which("chromium") is not None,
                 "chromium not installed (apt-get install -y chromium)")

    up, port = harness.start_upstream("py")
    env, url, extra_args = {}, None, ""
    if scheme == "wss":
        pki = harness.Pki(tmp_path)
        cert, key = pki.leaf(0x2001)
        env = {"WSPULSE_LISTEN__TLS__CERT_FILE": str(pki.install("tls.crt", cert)),
               "WSPULSE_LISTEN__TLS__KEY_FILE": str(pki.install("tls.key", key))}
        extra_args = f"--ignore-certificate-errors-spki-list={pki.spki_hash(cert)}"
    proxy = harness.Wspulse(f"ws://127.0.0.1:{port}", extra_env=env)
    url = f"wss://localhost:{proxy.port}/echo" if scheme == "wss" else f"{proxy.url}/echo"
    drv = harness.Proc("chromium-driver",
                       ["node", str(harness.E2E / "browser" / "drive.js"), url],
                       env={"CHROMIUM": CHROMIUM, "CHROMIUM_EXTRA_ARGS": extra_args},
                       term_first=True)
    is_report = lambda s, phase: (lambda e: e.get("ev") in ("report", "error") and  # noqa: E731
                                  (e.get("ev") == "error" or
                                   (e.get("session") == s and e.get("phase") == phase)))

    echoed = drv.expect(is_report("1", "echoed"), timeout=45, what="session 1 echoes")
    assert echoed.get("ok"), echoed
    assert echoed["protocol"] == "chat.v1", echoed
    # Chromium always offers permessage-deflate and the Python upstream
    # accepts it: negotiated end to end through wspulse (passthrough).
    assert echoed["extensions"].startswith("permessage-deflate"), echoed
    drv.expect(lambda e: e.get("ev") == "ready")

    up.kill()  # the upstream crashes
    closed = drv.expect(is_report("1", "closed"), what="session 1 close")
    assert closed.get("code") == 1014, f"Chromium's onclose saw {closed}, expected 1014 (not 1006)"
    m = proxy.wait_metric(lambda m: m.closed() == 1, what="session 1 counted")
    assert m.closures() == {("1006", "upstream", "eof"): 1}

    up2, _ = harness.start_upstream("py", port=port)  # the upstream comes back
    drv.send_line("next")
    echoed = drv.expect(is_report("2", "echoed"), what="session 2 echoes")
    assert echoed.get("ok"), echoed
    closed = drv.expect(is_report("2", "closed"), what="session 2 close")
    assert (closed["code"], closed["wasClean"]) == (1000, True), closed
    ev = up2.expect(lambda e: e.get("ev") == "close")
    assert (ev["code"], ev["reason"]) == (1000, "page done"), ev
    m = proxy.wait_metric(lambda m: m.closed() == 2, what="session 2 counted")
    assert m.closures() == {("1006", "upstream", "eof"): 1, ("1000", "client", "close_frame"): 1}
    assert m.invariant_holds() and m.active == 0
    if scheme == "wss":
        assert m.sum("wspulse_tls_handshake_failures_total") == 0
    drv.expect(lambda e: e.get("ev") == "done")
    assert drv.wait(timeout=20) == 0
