#!/usr/bin/env python3
"""A third-party WebSocket peer built on Python `websockets` (PyPI).

    py_peer.py server HOST PORT scripted|echo|drop
    py_peer.py CLIENT-COMMAND URL [ARGS...]

It speaks one JSON object per line on stdout, which the tests read. The
server and client behaviours mirror e2e/peers/node_peer.js exactly, so each
test runs the same script against either implementation.

Server, mode `scripted` (by request path):
  /echo...           echo every message, same type
  /frag...           echo every message as a fragmented message (3 frames)
  /info...           first send a JSON text message describing the request
                     (path with query, headers, subprotocol), then echo
  /reject/NNN        answer the upgrade with HTTP NNN and a short body
  /upclose?code=C&reason=R
                     echo the first message, then close with (C, R)
  anything else      echo
  It prints {"ev":"open",...} and {"ev":"close","code":..,"reason":..} per
  connection; `code` is what the client's Close frame said (1005 for an
  empty one, 1006 for none at all).
Server, mode `echo`: a plain echo on every path, no logging, 16 MiB messages
(the Autobahn conformance upstream).
Server, mode `drop` (Python only; the faulty upstream of test_prometheus.py):
echo the first message of every session, then drop its TCP connection
without a Close frame (an upstream that crashes under every session).

Client commands (each prints a final {"ev":"result",...}):
  fidelity URL              send the corpus (below), compare every echo
  subproto URL A,B,...      offer subprotocols, report the one negotiated
  close URL CODE REASON     exchange a message, close with (CODE, REASON),
                            report the peer's Close reply; CODE "none" sends
                            an empty Close frame
  expect_close URL          send one message, read its echo, then report the
                            Close that arrives
  handshake URL             report the HTTP status of the upgrade (101 or not)
  hold URL                  exchange a message, print {"ev":"ready"}, then
                            report the Close that arrives (within 60 s)
  ping URL                  ping (payload client-ping-1), wait for its pong,
                            send an unsolicited pong, exchange a message
  send_big URL SIZE         send one binary message of SIZE bytes, report
                            the Close that arrives
  info URL                  connect with extra end-to-end and hop-by-hop
                            headers, report the upstream's /info message

A wss:// URL is verified against the CA file $E2E_CA_FILE when it is set.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import ssl
import sys
import time
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import websockets
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

logging.disable(logging.CRITICAL)

MAX = 16 * 1024 * 1024
SERVER_PROTOCOLS = ["chat.v2", "chat.v1"]  # server preference order
WAIT = 30.0  # bound on any single wait in a client command


def out(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=True) + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------ corpus

def mib_text() -> str:
    unit = "aé€😀"  # 1 + 2 + 3 + 4 = 10 bytes of UTF-8
    n, rest = divmod(1 << 20, 10)
    s = unit * n + "aé€"  # + 6 bytes = exactly 1 MiB
    assert len(s.encode()) == (1 << 20) and rest == 6
    return s


def corpus() -> list[tuple[str, object]]:
    """(name, message) pairs; a list message is sent fragmented (one frame per item)."""
    return [
        ("text-ascii", "hello"),
        ("text-multibyte", "héllo wörld — 日本語 — 😀🚀 — Ελληνικά"),
        ("text-empty", ""),
        ("binary-empty", b""),
        ("binary-256", bytes(range(256))),
        ("binary-1MiB", bytes((i * 7 + 3) & 0xFF for i in range(1 << 20))),
        ("text-1MiB", mib_text()),
        ("text-fragmented", ["frag-", "ment", "ed ✓ 😀"]),
        ("binary-fragmented", [b"\x00\x01", b"", b"\xff" * 1000]),
    ]


def whole(msg):
    if isinstance(msg, list):
        return "".join(msg) if isinstance(msg[0], str) else b"".join(msg)
    return msg


def kind(msg) -> str:
    return "text" if isinstance(msg, str) else "binary"


def digest(msg) -> str:
    data = msg.encode() if isinstance(msg, str) else bytes(msg)
    return hashlib.sha256(data).hexdigest()[:16]


# ------------------------------------------------------------------ server

def close_info(ws) -> tuple[int, str]:
    rcvd = ws.protocol.close_rcvd
    if rcvd is None:
        return 1006, ""
    return int(rcvd.code), rcvd.reason


async def scripted_handler(ws) -> None:
    req = ws.request
    path = req.path
    out({"ev": "open", "path": path, "subprotocol": ws.subprotocol})
    try:
        if path.startswith("/info"):
            headers: dict[str, list[str]] = {}
            for k, v in req.headers.raw_items():
                headers.setdefault(k.lower(), []).append(v)
            await ws.send(json.dumps({"path": path, "headers": headers,
                                      "subprotocol": ws.subprotocol}))
        if path.startswith("/upclose"):
            q = parse_qs(urlsplit(path).query)
            msg = await ws.recv()
            await ws.send(msg)
            code = q["code"][0]  # "none": an empty Close frame
            await ws.close(None if code == "none" else int(code), q.get("reason", [""])[0])
        else:
            frag = path.startswith("/frag")
            async for msg in ws:
                if frag and len(msg) >= 3:
                    third = len(msg) // 3
                    await ws.send([msg[:third], msg[third:2 * third], msg[2 * third:]])
                else:
                    await ws.send(msg)
    except ConnectionClosed:
        pass
    finally:
        code, reason = close_info(ws)
        out({"ev": "close", "path": path, "code": code, "reason": reason})


def process_request(conn, request):
    if request.path.startswith("/reject/"):
        status = int(request.path.split("/")[2])
        return conn.respond(HTTPStatus(status), f"denied by upstream {status}\n")
    return None


def select_subprotocol(conn, offered):
    for p in SERVER_PROTOCOLS:
        if p in offered:
            return p
    return None


async def echo_handler(ws) -> None:
    try:
        async for msg in ws:
            await ws.send(msg)
    except ConnectionClosed:
        pass


async def drop_handler(ws) -> None:
    try:
        await ws.send(await ws.recv())
    except ConnectionClosed:
        return
    # No closing handshake: the TCP connection just ends.
    ws.transport.abort()


async def server(host: str, port: int, mode: str) -> None:
    common = dict(max_size=MAX, ping_interval=None, close_timeout=5)
    if mode == "drop":
        srv = serve(drop_handler, host, port, compression=None, **common)
    elif mode == "echo":
        srv = serve(echo_handler, host, port, compression=None, max_queue=None, **common)
    else:
        srv = serve(scripted_handler, host, port, process_request=process_request,
                    select_subprotocol=select_subprotocol, subprotocols=SERVER_PROTOCOLS,
                    **common)
    async with srv as s:
        port = s.sockets[0].getsockname()[1]
        out({"ev": "listening", "port": port, "impl": "python-websockets",
             "version": websockets.__version__})
        await asyncio.Future()


# ------------------------------------------------------------------ clients

def open_ws(url: str, **kw):
    # wss:// trusts the CA of $E2E_CA_FILE (the edge tests make one).
    ca = os.environ.get("E2E_CA_FILE")
    if ca and url.startswith("wss:"):
        kw.setdefault("ssl", ssl.create_default_context(cafile=ca))
    kw.setdefault("max_size", MAX)
    kw.setdefault("ping_interval", None)
    kw.setdefault("open_timeout", 10)
    kw.setdefault("close_timeout", 10)
    return connect(url, **kw)


async def recv(ws):
    return await asyncio.wait_for(ws.recv(), WAIT)


async def fidelity(url: str) -> None:
    items = []
    async with open_ws(url) as ws:
        for name, msg in corpus():
            await ws.send(msg)
            got = await recv(ws)
            want = whole(msg)
            items.append({
                "name": name, "sent_type": kind(want), "recv_type": kind(got),
                "sent_len": len(want.encode() if isinstance(want, str) else want),
                "recv_len": len(got.encode() if isinstance(got, str) else got),
                "equal": got == want, "sha": digest(got),
            })
        await ws.close(1000, "fidelity done")
    out({"ev": "result", "ok": all(i["equal"] and i["sent_type"] == i["recv_type"] for i in items),
         "items": items})


async def subproto(url: str, offers: str) -> None:
    offered = [p for p in offers.split(",") if p]
    try:
        async with open_ws(url, subprotocols=offered) as ws:
            out({"ev": "result", "protocol": ws.subprotocol, "error": None})
            await ws.close(1000)
    except Exception as e:  # noqa: BLE001 - reported, compared by the test
        out({"ev": "result", "protocol": None, "error": type(e).__name__ + ": " + str(e)})


async def close_cmd(url: str, code: str, reason: str = "") -> None:
    async with open_ws(url) as ws:
        await ws.send("before close")
        echo = await recv(ws)
        # code "none": a Close frame with no payload at all (no code, no reason)
        await asyncio.wait_for(ws.close(None if code == "none" else int(code), reason), WAIT)
        rcvd = ws.protocol.close_rcvd
        out({"ev": "result", "echo": echo,
             "code": rcvd.code if rcvd else 1006, "reason": rcvd.reason if rcvd else ""})


async def wait_close(ws, deadline: float) -> dict:
    t0 = time.monotonic()
    try:
        while True:
            await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
    except ConnectionClosed as e:
        rcvd = e.rcvd
        return {"code": rcvd.code if rcvd else 1006, "reason": rcvd.reason if rcvd else "",
                "elapsed": time.monotonic() - t0}
    except asyncio.TimeoutError:
        return {"code": None, "reason": "timeout: no close", "elapsed": time.monotonic() - t0}


async def expect_close(url: str) -> None:
    async with open_ws(url) as ws:
        await ws.send("hi")
        echo = await recv(ws)
        res = await wait_close(ws, time.monotonic() + WAIT)
        out({"ev": "result", "echo": echo, **res})


async def send_big(url: str, size: str) -> None:
    async with open_ws(url) as ws:
        await ws.send(b"\x42" * int(size))
        res = await wait_close(ws, time.monotonic() + WAIT)
        out({"ev": "result", **res})


async def ping_cmd(url: str) -> None:
    async with open_ws(url) as ws:
        waiter = await ws.ping(b"client-ping-1")
        await asyncio.wait_for(waiter, WAIT)  # resolves on the Pong with this payload
        await ws.pong(b"unsolicited-pong-1")
        await ws.send("after pongs")
        echo = await recv(ws)
        await ws.close(1000)
    out({"ev": "result", "pong": "client-ping-1", "echo": echo})


async def handshake(url: str) -> None:
    try:
        async with open_ws(url) as ws:
            out({"ev": "result", "status": 101, "body": ""})
            await ws.close(1000)
    except InvalidStatus as e:
        body = (e.response.body or b"").decode("utf-8", "replace")
        out({"ev": "result", "status": e.response.status_code, "body": body})


async def hold(url: str) -> None:
    async with open_ws(url) as ws:
        await ws.send("hold-1")
        echo = await recv(ws)
        out({"ev": "ready", "echo": echo})
        res = await wait_close(ws, time.monotonic() + 60)
        out({"ev": "result", **res})


INFO_HEADERS = {
    "Cookie": "session=abc123; theme=dark",
    "Authorization": "Bearer t0k3n",
    "X-Custom-E2E": "yes",
    "Keep-Alive": "timeout=5",  # hop-by-hop: must not reach the upstream
}


async def info(url: str) -> None:
    async with open_ws(url, additional_headers=INFO_HEADERS, origin="http://e2e.test",
                       user_agent_header="e2e-python-websockets") as ws:
        first = json.loads(await recv(ws))
        await ws.close(1000)
    out({"ev": "result", "info": first})


def main() -> None:
    cmd = sys.argv[1]
    if cmd == "server":
        asyncio.run(server(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
        return
    fn = {"fidelity": fidelity, "subproto": subproto, "close": close_cmd,
          "expect_close": expect_close, "handshake": handshake, "hold": hold,
          "info": info, "send_big": send_big,
          "ping": ping_cmd}[cmd]
    asyncio.run(fn(*sys.argv[2:]))


if __name__ == "__main__":
    main()
