#!/usr/bin/env python3
"""Write the seed corpus for the `relay` fuzz target into seeds/relay/.

Each seed is [flags, ext] + WebSocket frames (ext bit 0: permessage-deflate
negotiated on both legs); client frames are masked, upstream
frames are not. See fuzz_targets/relay.rs for the flags byte."""
import os, struct

def frame(fin, op, payload, mask, rsv=0):
    b = bytes([(0x80 if fin else 0) | (rsv << 4) | op])
    m = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        b += bytes([m | n])
    elif n < 65536:
        b += bytes([m | 126]) + struct.pack(">H", n)
    else:
        b += bytes([m | 127]) + struct.pack(">Q", n)
    if mask:
        key = b"\x12\x34\x56\x78"
        b += key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))
    else:
        b += payload
    return b

def close(code, reason=b""):
    return struct.pack(">H", code) + reason

def seqs(mask):
    f = lambda fin, op, p, rsv=0: frame(fin, op, p, mask, rsv)
    return {
        "text": f(1, 1, b"hello") + f(1, 8, close(1000, b"bye")),
        "binary": f(1, 2, bytes(range(200))) + f(1, 8, close(4001)),
        "fragmented": f(0, 1, b"frag") + f(1, 9, b"ping") + f(0, 0, b"men") + f(1, 0, b"ted"),
        "ping_pong": f(1, 9, b"p1") + f(1, 10, b"unsolicited") + f(1, 1, b"x"),
        "close_empty": f(1, 8, b""),
        "close_forbidden": f(1, 8, close(1005)),
        "bad_utf8": f(1, 1, b"\xc3\x28"),
        "rsv": f(1, 1, b"x", rsv=4),
        "too_big": f(1, 2, b"z" * 1100),
        "long_len": bytes([0x82, (0x80 if mask else 0) | 127]) + struct.pack(">Q", 1 << 40) + (b"\x01\x02\x03\x04" if mask else b""),
        "data_after_close": f(1, 8, close(1000)) + f(1, 1, b"late"),
    }


def deflate_seqs(mask):
    """Frames for a session that negotiated permessage-deflate (ext = 1)."""
    f = lambda fin, op, p, rsv=0: frame(fin, op, p, mask, rsv)
    deflated = b"\xf2\x48\xcd\xc9\xc9\x07\x00"
    return {
        "compressed": f(1, 1, deflated, rsv=4) + f(1, 2, deflated, rsv=4) + f(1, 8, close(1000)),
        "compressed_fragments": f(0, 2, deflated[:3], rsv=4) + f(1, 0, deflated[3:]) + f(1, 1, b"plain"),
        "rsv1_ping": f(1, 9, b"p", rsv=4),
        "rsv1_continuation": f(0, 1, deflated, rsv=4) + f(1, 0, b"x", rsv=4),
        "rsv2": f(1, 1, deflated, rsv=2),
    }

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "relay")
os.makedirs(out, exist_ok=True)
for f in os.listdir(out):
    os.remove(os.path.join(out, f))
for ext, table in ((0, seqs), (1, deflate_seqs)):
    for name, data in table(True).items():
        # flags 0: client fuzzed; 0xe0: written whole; 0x04: keepalive on
        for flags in (0x00, 0xe0, 0xe4 | 0x08):
            open(os.path.join(out, f"client_{name}_{flags:02x}"), "wb").write(bytes([flags, ext]) + data)
    for name, data in table(False).items():
        for flags in (0x01, 0xe1, 0xf1):
            open(os.path.join(out, f"upstream_{name}_{flags:02x}"), "wb").write(bytes([flags, ext]) + data)
print(len(os.listdir(out)), "seeds in", out)
