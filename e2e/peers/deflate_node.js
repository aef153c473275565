#!/usr/bin/env node
// permessage-deflate peers (Node `ws`) for e2e/test_compression.py.
// Prints one JSON object per line on stdout.
//
//   deflate_node.js server            echo server, perMessageDeflate on
//   deflate_node.js client URL N      N compressible messages (text and binary,
//                                     1-64 KiB), each checked against its echo
'use strict';

const WebSocket = require('ws');

const MAX = 1 << 20;
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const deflate = { threshold: 0 }; // compress every message, small ones too

function message(i) {
  const sizes = [1, 100, 1024, 4096, 16384, 65536];
  const size = sizes[i % sizes.length];
  let text = '';
  for (let row = 0; text.length < size; row++) {
    text += JSON.stringify({ id: i, seq: row, user: `user${(i * 7 + row) % 50}`,
      status: ['ok', 'pending', 'failed'][row % 3], value: (i * 31 + row) % 1000 }) + '\n';
  }
  text = text.slice(0, size);
  return i % 2 ? Buffer.from(text) : text;
}

function server() {
  const wss = new WebSocket.WebSocketServer({ host: '127.0.0.1', port: 0, maxPayload: MAX,
    perMessageDeflate: deflate });
  wss.on('listening', () => out({ ev: 'listening', port: wss.address().port }));
  wss.on('connection', (ws, req) => {
    out({ ev: 'open', offered: req.headers['sec-websocket-extensions'] || null,
      negotiated: ws.extensions });
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
}

function client(url, n) {
  const ws = new WebSocket(url, { maxPayload: MAX, perMessageDeflate: deflate });
  const timer = setTimeout(() => { out({ ev: 'error', error: 'timeout' }); process.exit(1); }, 120000);
  let i = 0;
  let payload = 0;
  const bad = [];
  let sent;
  const next = () => {
    if (i === n) { ws.close(1000, 'done'); return; }
    sent = message(i);
    payload += Buffer.byteLength(sent);
    ws.send(sent, { binary: typeof sent !== 'string' });
  };
  ws.on('open', next);
  ws.on('message', (data, isBinary) => {
    const want = typeof sent === 'string' ? Buffer.from(sent) : sent;
    if (isBinary !== (typeof sent !== 'string') || !Buffer.from(data).equals(want)) bad.push(i);
    i += 1;
    next();
  });
  ws.on('close', () => {
    clearTimeout(timer);
    out({ ev: 'result', ok: bad.length === 0 && i === n, bad: bad.slice(0, 10), messages: i,
      extensions: ws.extensions, payload_bytes: payload });
  });
  ws.on('error', (e) => { out({ ev: 'error', error: String(e) }); process.exit(1); });
}

const [mode, url, n] = process.argv.slice(2);
if (mode === 'server') server(); else client(url, Number(n));
