#!/usr/bin/env node
// A third-party WebSocket peer built on Node `ws` (npm, e2e/node_modules).
//
//   node_peer.js server HOST PORT scripted|echo
//   node_peer.js CLIENT-COMMAND URL [ARGS...]
//
// Same commands, same JSON lines and same behaviour as e2e/peers/py_peer.py
// (see its docstring), so every test runs against either implementation.
'use strict';

const http = require('http');
const path = require('path');
const crypto = require('crypto');
const WebSocket = require(path.join(__dirname, '..', 'node_modules', 'ws'));

const MAX = 16 * 1024 * 1024;
const SERVER_PROTOCOLS = ['chat.v2', 'chat.v1'];
const WAIT = 30000;

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// ------------------------------------------------------------------ corpus

function mibText() {
  const unit = 'aé€😀';
  const n = Math.floor((1 << 20) / 10);
  const s = unit.repeat(n) + 'aé€';
  if (Buffer.byteLength(s) !== 1 << 20) throw new Error('mibText size');
  return s;
}

function mibBinary() {
  const b = Buffer.alloc(1 << 20);
  for (let i = 0; i < b.length; i++) b[i] = (i * 7 + 3) & 0xff;
  return b;
}

// [name, type, fragments (Buffers)]; one fragment = one unfragmented message.
function corpus() {
  const t = (s) => Buffer.from(s, 'utf8');
  const smile = t('ed ✓ 😀');
  return [
    ['text-ascii', 'text', [t('hello')]],
    ['text-multibyte', 'text', [t('héllo wörld — 日本語 — 😀🚀 — Ελληνικά')]],
    ['text-empty', 'text', [t('')]],
    ['binary-empty', 'binary', [Buffer.alloc(0)]],
    ['binary-256', 'binary', [Buffer.from([...Array(256).keys()])]],
    ['binary-1MiB', 'binary', [mibBinary()]],
    ['text-1MiB', 'text', [t(mibText())]],
    // The last fragment boundary splits the 4-byte 😀 in two: legal, since
    // UTF-8 validity is a property of the whole message.
    ['text-fragmented', 'text', [t('frag-'), t('ment'), smile.subarray(0, smile.length - 2),
      smile.subarray(smile.length - 2)]],
    ['binary-fragmented', 'binary', [Buffer.from([0, 1]), Buffer.alloc(0), Buffer.alloc(1000, 0xff)]],
  ];
}

function sendFragments(ws, type, frags) {
  const binary = type === 'binary';
  frags.forEach((f, i) => ws.send(f, { binary, fin: i === frags.length - 1 }));
}

function digest(buf) {
  return crypto.createHash('sha256').update(buf).digest('hex').slice(0, 16);
}

// ------------------------------------------------------------------ server

function server(host, port, mode) {
  const scripted = mode !== 'echo';
  const wss = new WebSocket.WebSocketServer({
    noServer: true,
    maxPayload: MAX,
    perMessageDeflate: false,
    handleProtocols: (offered) => SERVER_PROTOCOLS.find((p) => offered.has(p)) || false,
  });
  const srv = http.createServer((req, res) => {
    res.writeHead(426, { 'Content-Type': 'text/plain' });
    res.end('websocket only\n');
  });
  srv.on('upgrade', (req, socket, head) => {
    const m = /^\/reject\/(\d{3})/.exec(req.url);
    if (scripted && m) {
      const body = `denied by upstream ${m[1]}\n`;
      socket.end(`HTTP/1.1 ${m[1]} ${http.STATUS_CODES[m[1]] || 'Rejected'}\r\n` +
        `Content-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
        `Connection: close\r\n\r\n${body}`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => (scripted ? onScripted(ws, req) : onEcho(ws)));
  });
  srv.listen(Number(port), host, () => {
    out({ ev: 'listening', port: srv.address().port, impl: 'node-ws',
      version: require(path.join(__dirname, '..', 'node_modules', 'ws', 'package.json')).version });
  });
}

function onEcho(ws) {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});
}

function onScripted(ws, req) {
  const p = req.url;
  out({ ev: 'open', path: p, subprotocol: ws.protocol || null });
  ws.on('error', () => {});
  ws.on('close', (code, reason) => out({ ev: 'close', path: p, code, reason: reason.toString() }));
  ws.on('ping', (data) => out({ ev: 'ping', path: p, data: data.toString() }));
  ws.on('pong', (data) => out({ ev: 'pong', path: p, data: data.toString() }));
  if (p.startsWith('/info')) {
    const headers = {};
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const k = req.rawHeaders[i].toLowerCase();
      (headers[k] = headers[k] || []).push(req.rawHeaders[i + 1]);
    }
    ws.send(JSON.stringify({ path: p, headers, subprotocol: ws.protocol || null }));
  }
  if (p.startsWith('/upclose')) {
    const q = new URL(p, 'http://x').searchParams;
    ws.once('message', (data, isBinary) => {
      ws.send(data, { binary: isBinary });
      if (q.get('code') === 'none') ws.close(); // an empty Close frame
      else ws.close(Number(q.get('code')), q.get('reason') || '');
    });
    return;
  }
  const frag = p.startsWith('/frag');
  ws.on('message', (data, isBinary) => {
    if (frag && data.length >= 3) {
      // Split on byte offsets; for text that may cut a character in two,
      // which is legal across fragments.
      const third = Math.floor(data.length / 3);
      sendFragments(ws, isBinary ? 'binary' : 'text',
        [data.subarray(0, third), data.subarray(third, 2 * third), data.subarray(2 * third)]);
    } else {
      ws.send(data, { binary: isBinary });
    }
  });
}

// ------------------------------------------------------------------ clients

function openWs(url, opts = {}) {
  // wss:// trusts the CA of $E2E_CA_FILE (the edge tests make one).
  const ca = process.env.E2E_CA_FILE && url.startsWith('wss:')
    ? { ca: require('fs').readFileSync(process.env.E2E_CA_FILE) } : {};
  return new WebSocket(url, opts.protocols || [], {
    ...ca,
    maxPayload: MAX,
    handshakeTimeout: 10000,
    headers: opts.headers || {},
    origin: opts.origin,
  });
}

function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([
    promise,
    new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timeout: ${what}`)), ms); }),
  ]).finally(() => clearTimeout(t));
}

// A queue of incoming messages and the close, as promises.
function track(ws) {
  const inbox = [];
  const waiters = [];
  let closed = null;
  const closeWaiters = [];
  ws.on('error', () => {}); // the close event that follows carries the outcome
  ws.on('message', (data, isBinary) => {
    const m = { data: Buffer.from(data), isBinary };
    if (waiters.length) waiters.shift()(m); else inbox.push(m);
  });
  ws.on('close', (code, reason) => {
    closed = { code, reason: reason.toString() };
    closeWaiters.splice(0).forEach((f) => f(closed));
  });
  return {
    next: () => withTimeout(new Promise((res) => {
      if (inbox.length) res(inbox.shift()); else waiters.push(res);
    }), WAIT, 'message'),
    closed: (ms = WAIT) => withTimeout(new Promise((res) => {
      if (closed) res(closed); else closeWaiters.push(res);
    }), ms, 'close'),
  };
}

function opened(ws) {
  return withTimeout(new Promise((res, rej) => {
    ws.once('open', res);
    ws.once('error', rej);
  }), WAIT, 'open');
}

async function fidelity(url) {
  const ws = openWs(url);
  const t = track(ws);
  await opened(ws);
  const items = [];
  for (const [name, type, frags] of corpus()) {
    sendFragments(ws, type, frags);
    const want = Buffer.concat(frags);
    const got = await t.next();
    const recvType = got.isBinary ? 'binary' : 'text';
    items.push({
      name, sent_type: type, recv_type: recvType, sent_len: want.length,
      recv_len: got.data.length, equal: want.equals(got.data), sha: digest(got.data),
    });
  }
  ws.close(1000, 'fidelity done');
  await t.closed();
  out({ ev: 'result', ok: items.every((i) => i.equal && i.sent_type === i.recv_type), items });
}

async function subproto(url, offers) {
  const offered = offers.split(',').filter(Boolean);
  const ws = openWs(url, { protocols: offered });
  const t = track(ws);
  try {
    await opened(ws);
  } catch (e) {
    out({ ev: 'result', protocol: null, error: String(e.message || e) });
    return;
  }
  out({ ev: 'result', protocol: ws.protocol || null, error: null });
  ws.close(1000);
  await t.closed();
}

async function closeCmd(url, code, reason) {
  const ws = openWs(url);
  const t = track(ws);
  await opened(ws);
  ws.send('before close');
  const echo = (await t.next()).data.toString();
  if (code === 'none') ws.close(); // an empty Close frame: no code, no reason
  else ws.close(Number(code), reason);
  const c = await t.closed();
  out({ ev: 'result', echo, code: c.code, reason: c.reason });
}

async function waitClose(t, ms) {
  const t0 = Date.now();
  try {
    const c = await t.closed(ms);
    return { code: c.code, reason: c.reason, elapsed: (Date.now() - t0) / 1000 };
  } catch (e) {
    return { code: null, reason: 'timeout: no close', elapsed: (Date.now() - t0) / 1000 };
  }
}

async function expectClose(url) {
  const ws = openWs(url);
  const t = track(ws);
  await opened(ws);
  ws.send('hi');
  const echo = (await t.next()).data.toString();
  out({ ev: 'result', echo, ...(await waitClose(t, WAIT)) });
}

async function sendBig(url, size) {
  const ws = openWs(url);
  const t = track(ws);
  await opened(ws);
  ws.send(Buffer.alloc(Number(size), 0x42));
  out({ ev: 'result', ...(await waitClose(t, WAIT)) });
}

async function pingPong(url) {
  const ws = openWs(url);
  const t = track(ws);
  await opened(ws);
  const pong = withTimeout(new Promise((res) => ws.once('pong', (d) => res(d.toString()))), WAIT, 'pong');
  ws.ping('client-ping-1');
  const got = await pong;
  ws.pong('unsolicited-pong-1');
  ws.send('after pongs');
  const echo = (await t.next()).data.toString();
  ws.close(1000);
  await t.closed();
  out({ ev: 'result', pong: got, echo });
}

async function handshake(url) {
  const ws = openWs(url);
  const t = track(ws);
  const status = await withTimeout(new Promise((res, rej) => {
    ws.once('open', () => res({ status: 101, body: '' }));
    ws.once('unexpected-response', (req, resp) => {
      let body = '';
      resp.on('data', (c) => { body += c; });
      resp.on('end', () => res({ status: resp.statusCode, body }));
      resp.on('error', () => res({ status: resp.statusCode, body }));
    });
    ws.once('error', rej);
  }), WAIT, 'handshake');
  out({ ev: 'result', ...status });
  if (status.status === 101) {
    ws.close(1000);
    await t.closed();
  }
}

async function hold(url) {
  const ws = openWs(url);
  const t = track(ws);
  await opened(ws);
  ws.send('hold-1');
  const echo = (await t.next()).data.toString();
  out({ ev: 'ready', echo });
  out({ ev: 'result', ...(await waitClose(t, 60000)) });
}

async function info(url) {
  const ws = openWs(url, {
    origin: 'http://e2e.test',
    headers: {
      Cookie: 'session=abc123; theme=dark',
      Authorization: 'Bearer t0k3n',
      'X-Custom-E2E': 'yes',
      'Keep-Alive': 'timeout=5',
      'User-Agent': 'e2e-node-ws',
    },
  });
  const t = track(ws);
  await opened(ws);
  const first = JSON.parse((await t.next()).data.toString());
  ws.close(1000);
  await t.closed();
  out({ ev: 'result', info: first });
}

async function main() {
  const [cmd, ...args] = process.argv.slice(2);
  if (cmd === 'server') {
    server(args[0], args[1], args[2]);
    return;
  }
  const fn = { fidelity, subproto, close: closeCmd, expect_close: expectClose, handshake, hold, info, send_big: sendBig, ping: pingPong }[cmd];
  if (!fn) throw new Error(`unknown command ${cmd}`);
  await fn(...args);
  process.exit(0);
}

main().catch((e) => {
  out({ ev: 'error', error: String((e && e.stack) || e) });
  process.exit(1);
});
