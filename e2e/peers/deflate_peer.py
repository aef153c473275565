#!/usr/bin/env python3
"""permessage-deflate peers (Python `websockets`) for e2e/test_compression.py.

Prints one JSON object per line on stdout.

  deflate_peer.py server [--opts OPTS]          echo server; OPTS configure its
                                                permessage-deflate (see below)
  deflate_peer.py client URL N [--opts OPTS]    N compressible messages (text and
                                                binary, 1-64 KiB), each checked
                                                against its echo
  deflate_peer.py big URL N KIND                one message of N bytes, KIND `text`
                                                (compressible) or `random` (not):
                                                its echo, or the Close it got

OPTS is a comma list of `server_no_context_takeover`, `client_no_context_takeover`,
`server_max_window_bits=N`, `client_max_window_bits=N`, or `none` (compression off).
Every wait is bounded.
"""

import asyncio
import hashlib
import json
import random
import sys

import websockets
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)

MAX = 1 << 20
LIMIT = 60


def out(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def options(spec: str) -> dict | None:
    """Factory keyword arguments from OPTS; None: no compression."""
    if spec == "none":
        return None
    kw: dict = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        kw[key] = int(value) if value else True
    return kw


def compression_kw(spec: str, factory) -> dict:
    kw = options(spec)
    if kw is None:
        return {"compression": None}
    if not kw:
        return {}  # the library's default permessage-deflate
    return {"compression": None, "extensions": [factory(**kw)]}


def message(i: int, rng: random.Random) -> str | bytes:
    """A compressible JSON-like message of 1-64 KiB; odd ones binary."""
    size = rng.choice([1, 100, 1024, 4096, 16384, 65536])
    rows = []
    n = 0
    while n < size:
        row = json.dumps({"id": i, "seq": len(rows), "user": f"user{rng.randrange(50)}",
                          "status": rng.choice(["ok", "pending", "failed"]), "value": rng.randrange(1000)})
        rows.append(row)
        n += len(row) + 1
    text = "\n".join(rows)[:size]
    return text.encode() if i % 2 else text


async def server(spec: str) -> None:
    async def echo(ws):
        req = ws.request.headers.get_all("Sec-WebSocket-Extensions")
        resp = ws.response.headers.get("Sec-WebSocket-Extensions")
        out({"ev": "open", "offered": req, "answered": resp})
        try:
            async for msg in ws:
                await ws.send(msg)
        except websockets.ConnectionClosed:
            pass

    kw = compression_kw(spec, ServerPerMessageDeflateFactory)
    async with serve(echo, "127.0.0.1", 0, max_size=MAX, ping_interval=None, **kw) as s:
        out({"ev": "listening", "port": s.sockets[0].getsockname()[1],
             "version": websockets.__version__})
        await asyncio.Future()


async def client(url: str, n: int, spec: str) -> None:
    rng = random.Random(7)
    kw = compression_kw(spec, ClientPerMessageDeflateFactory)
    payload = 0
    bad = []
    async with connect(url, max_size=MAX, ping_interval=None, open_timeout=10,
                       close_timeout=10, **kw) as ws:
        ext = ws.response.headers.get("Sec-WebSocket-Extensions")
        for i in range(n):
            msg = message(i, rng)
            payload += len(msg.encode() if isinstance(msg, str) else msg)
            await ws.send(msg)
            echo = await asyncio.wait_for(ws.recv(), LIMIT)
            if echo != msg:
                bad.append(i)
        await ws.close(1000, "done")
    digest = hashlib.sha256(str(bad).encode()).hexdigest()[:8]
    out({"ev": "result", "ok": not bad, "bad": bad[:10], "extensions": ext,
         "payload_bytes": payload, "messages": n, "digest": digest})


async def big(url: str, n: int, kind: str) -> None:
    msg = ("x" * n) if kind == "text" else random.Random(3).randbytes(n)
    async with connect(url, max_size=MAX, ping_interval=None, open_timeout=10,
                       close_timeout=10) as ws:
        await ws.send(msg)
        try:
            echo = await asyncio.wait_for(ws.recv(), LIMIT)
            out({"ev": "result", "echoed": echo == msg, "code": None})
        except websockets.ConnectionClosed as e:
            out({"ev": "result", "echoed": False, "code": e.rcvd.code if e.rcvd else None})


def main() -> None:
    args = sys.argv[1:]
    spec = ""
    if "--opts" in args:
        i = args.index("--opts")
        spec = args[i + 1]
        del args[i:i + 2]
    try:
        if args[0] == "server":
            asyncio.run(server(spec))
        elif args[0] == "big":
            asyncio.run(asyncio.wait_for(big(args[1], int(args[2]), args[3]), 2 * LIMIT))
        else:
            asyncio.run(asyncio.wait_for(client(args[1], int(args[2]), spec), 5 * LIMIT))
    except Exception as e:  # reported, not hidden: the test reads it
        out({"ev": "error", "error": f"{type(e).__name__}: {e}"})
        sys.exit(1)


if __name__ == "__main__":
    main()
