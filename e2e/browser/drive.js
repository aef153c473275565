#!/usr/bin/env node
// Drives headless Chromium (Debian's /usr/bin/chromium) through playwright-core.
//
//   node drive.js WS_URL
//
// Serves page.html from 127.0.0.1:<free port>, opens it twice:
//   session 1 (mode=hold): echo check, then prints {"ev":"ready"} and waits
//     for the far end to close; the test crashes the upstream meanwhile.
//   session 2 (mode=close), after the line "next" on stdin: echo check, then
//     the page closes with 1000.
// Every report the page POSTs is printed as {"ev":"report",...}. Bounded:
// any wait over 30 s ends the run with exit 1.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const http = require('http');
const readline = require('readline');
const { chromium } = require(path.join(__dirname, '..', 'node_modules', 'playwright-core'));

const WAIT = 30000;
const wsUrl = process.argv[2];
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

const reports = [];
const waiters = [];
function onReport(r) {
  out({ ev: 'report', ...r });
  reports.push(r);
  for (const w of waiters.splice(0)) w();
}
function waitReport(session, phase) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${phase} report for session ${session}`)), WAIT);
    const check = () => {
      const r = reports.find((x) => x.session === String(session) && x.phase === phase);
      if (r) { clearTimeout(t); resolve(r); } else waiters.push(check);
    };
    check();
  });
}

const page = fs.readFileSync(path.join(__dirname, 'page.html'));
const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/report') {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      try { onReport(JSON.parse(body)); } catch (e) { out({ ev: 'bad-report', body }); }
      res.writeHead(204); res.end();
    });
    return;
  }
  if (req.url.startsWith('/page.html')) {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(page);
    return;
  }
  res.writeHead(404); res.end();
});

const stdinLines = readline.createInterface({ input: process.stdin });
function nextLine() {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no "next" on stdin')), WAIT);
    stdinLines.once('line', (l) => { clearTimeout(t); resolve(l); });
  });
}

async function main() {
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${server.address().port}/page.html`;
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wspulse-chromium-'));
  const ctx = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    timeout: WAIT,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run',
      // The edge test trusts its own certificate: --ignore-certificate-errors-spki-list=...
      ...(process.env.CHROMIUM_EXTRA_ARGS || '').split(' ').filter(Boolean)],
  });
  try {
    out({ ev: 'browser', version: ctx.browser() ? ctx.browser().version() : 'persistent' });
    const url = (session, mode) =>
      `${base}?session=${session}&mode=${mode}&ws=${encodeURIComponent(wsUrl)}`;

    const p1 = await ctx.newPage();
    await p1.goto(url(1, 'hold'), { timeout: WAIT });
    await waitReport(1, 'echoed');
    out({ ev: 'ready', session: 1 });
    await waitReport(1, 'closed');

    await nextLine();
    const p2 = await ctx.newPage();
    await p2.goto(url(2, 'close'), { timeout: WAIT });
    await waitReport(2, 'echoed');
    await waitReport(2, 'closed');
    out({ ev: 'done' });
  } finally {
    await ctx.close();
    server.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}

main().then(() => process.exit(0), (e) => {
  out({ ev: 'error', error: String((e && e.stack) || e) });
  process.exit(1);
});
