//! wspulse-soak: churn through a wspulse proxy with clients *and* a scripted
//! upstream in one process, so that every session's ending is planned and the
//! proxy's accounting can be checked exactly.
//!
//! ```text
//! wspulse-soak --proxy 127.0.0.1:P --upstream-port U [--sessions N] [--concurrency C]
//!              [--seed S] [--restarts R] [--victims V] [--probes K] [--limit BYTES]
//!              [--keepalive-ms I] [--keepalive-timeout-ms T] [--hold H] [--max-seconds M]
//! ```
//!
//! Session `id` gets a closure kind, a number of messages and a number of
//! extra upstream messages from a seeded hash of `id` (reproducible). Every
//! data message carries (session, seq, direction, length) in a header and a
//! filler derived from them, so both ends check order, loss, duplication and
//! content of every message. Kinds (what the generator does -> what wspulse
//! must count):
//!
//! | kind        | action after the echo phase                    | counted as                 |
//! |-------------|------------------------------------------------|----------------------------|
//! | c_close     | client Close 1000                              | 1000/client/close_frame    |
//! | c_app       | client Close 4001                              | 4001/client/close_frame    |
//! | c_empty     | client Close with no code                      | 1005/client/close_frame    |
//! | u_close     | upstream sends M more messages, Close 1000     | 1000/upstream/close_frame  |
//! | u_app       | upstream sends M more messages, Close 4002     | 4002/upstream/close_frame  |
//! | c_eof       | client FIN, no Close                           | 1006/client/eof            |
//! | c_reset     | client RST (SO_LINGER 0)                       | 1006/client/reset          |
//! | u_eof       | upstream FIN, no Close                         | 1006/upstream/eof          |
//! | u_reset     | upstream RST                                   | 1006/upstream/reset        |
//! | c_proto     | client sends an unmasked frame                 | 1002/client/protocol_error |
//! | c_utf8      | client sends invalid UTF-8 text                | 1007/client/protocol_error |
//! | c_big       | client frame or message over --limit           | 1009/client/message_too_big|
//! | u_proto     | upstream sends a masked frame                  | 1002/upstream/protocol_error|
//! | u_utf8      | upstream sends invalid UTF-8 text              | 1007/upstream/protocol_error|
//! | u_big       | upstream frame over --limit                    | 1009/upstream/message_too_big|
//! | c_ping      | client stops reading (no pongs)                | 1006/client/ping_timeout   |
//! | u_ping      | upstream stops reading (no pongs)              | 1006/upstream/ping_timeout |
//! | victim      | upstream restart kills it (FIN)                | 1006/upstream/eof          |
//!
//! R times during the run the upstream restarts: new sessions pause, the
//! in-flight ones finish, V victim sessions open, the upstream closes its
//! listener and every connection, K probe clients get 502 from the proxy
//! while it is down (`connect_failures{reason="refused"}`), and it comes back.
//! With `--hold H`, after the churn (and the line `hold` on stdin) H sessions
//! are opened and held, and the generator waits for the proxy's drain (the
//! driver sends SIGTERM). At each restart the generator prints `quiesced`
//! and idles for a second (no session open) so the driver can sample RSS.
//!
//! Output: JSON lines on stdout (`upstream_listening`, `quiesced`,
//! `churn_done`, `holding`, `hold_done`); e2e/soak.py reads them.
//!
//! Note: tungstenite <= 0.30 (this generator's client) cannot represent the
//! close code 1014 and hands over `1002 "Protocol violation"` instead; the
//! generator counts that as "the proxy sent a code tungstenite forbids". The
//! third-party tests (websockets, ws, Chromium) check 1014 on the wire.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;
type Res<T> = Result<T, String>;

// ---------------------------------------------------------------- settings

#[derive(Clone)]
struct Cfg {
    proxy: SocketAddr,
    upstream_port: u16,
    sessions: u64,
    concurrency: usize,
    seed: u64,
    restarts: u64,
    victims: u64,
    probes: u64,
    limit: usize,
    ka_interval: Duration,
    ka_timeout: Duration,
    hold: u64,
    max_seconds: u64,
    /// Bound on any single network wait.
    wait: Duration,
}

fn parse_args() -> Res<Cfg> {
    let mut m: HashMap<String, String> = HashMap::new();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let k = args[i].trim_start_matches("--").to_string();
        let v = args
            .get(i + 1)
            .cloned()
            .ok_or(format!("--{k} needs a value"))?;
        m.insert(k, v);
        i += 2;
    }
    let get = |k: &str, d: &str| m.get(k).cloned().unwrap_or_else(|| d.to_string());
    let num = |k: &str, d: &str| -> Res<u64> {
        get(k, d).parse::<u64>().map_err(|e| format!("--{k}: {e}"))
    };
    Ok(Cfg {
        proxy: get("proxy", "127.0.0.1:8080")
            .parse()
            .map_err(|e| format!("--proxy: {e}"))?,
        upstream_port: num("upstream-port", "9000")? as u16,
        sessions: num("sessions", "3000")?,
        concurrency: num("concurrency", "200")? as usize,
        seed: num("seed", "1")?,
        restarts: num("restarts", "3")?,
        victims: num("victims", "20")?,
        probes: num("probes", "5")?,
        limit: num("limit", "1048576")? as usize,
        ka_interval: Duration::from_millis(num("keepalive-ms", "1000")?),
        ka_timeout: Duration::from_millis(num("keepalive-timeout-ms", "1000")?),
        hold: num("hold", "50")?,
        max_seconds: num("max-seconds", "1800")?,
        wait: Duration::from_secs(20),
    })
}

fn ws_config() -> WebSocketConfig {
    // The generator itself must never be the limit.
    WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20))
}

// ---------------------------------------------------------------- plan

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    CClose,
    CApp,
    CEmpty,
    UClose,
    UApp,
    CEof,
    CReset,
    UEof,
    UReset,
    CProto,
    CUtf8,
    CBig,
    UProto,
    UUtf8,
    UBig,
    CPing,
    UPing,
    Victim,
    Hold,
}

use Kind::*;

/// (kind, weight per 1000 sessions).
const WEIGHTS: &[(Kind, u64)] = &[
    (CClose, 234),
    (CApp, 90),
    (CEmpty, 40),
    (UClose, 80),
    (UApp, 80),
    (CEof, 60),
    (CReset, 60),
    (UEof, 60),
    (UReset, 60),
    (CProto, 40),
    (CUtf8, 40),
    (CBig, 40),
    (UProto, 40),
    (UUtf8, 30),
    (UBig, 40),
    (CPing, 3),
    (UPing, 3),
];

const ALL: &[Kind] = &[
    CClose, CApp, CEmpty, UClose, UApp, CEof, CReset, UEof, UReset, CProto, CUtf8, CBig, UProto,
    UUtf8, UBig, CPing, UPing, Victim, Hold,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            CClose => "c_close",
            CApp => "c_app",
            CEmpty => "c_empty",
            UClose => "u_close",
            UApp => "u_app",
            CEof => "c_eof",
            CReset => "c_reset",
            UEof => "u_eof",
            UReset => "u_reset",
            CProto => "c_proto",
            CUtf8 => "c_utf8",
            CBig => "c_big",
            UProto => "u_proto",
            UUtf8 => "u_utf8",
            UBig => "u_big",
            CPing => "c_ping",
            UPing => "u_ping",
            Victim => "victim",
            Hold => "hold",
        }
    }

    fn from_name(s: &str) -> Option<Kind> {
        ALL.iter().copied().find(|k| k.name() == s)
    }

    /// What wspulse must count: `code/side/cause`. Hold sessions end in the
    /// drain (1001/proxy/shutdown), checked separately.
    fn expected(self) -> &'static str {
        match self {
            CClose => "1000/client/close_frame",
            CApp => "4001/client/close_frame",
            CEmpty => "1005/client/close_frame",
            UClose => "1000/upstream/close_frame",
            UApp => "4002/upstream/close_frame",
            CEof => "1006/client/eof",
            CReset => "1006/client/reset",
            UEof | Victim => "1006/upstream/eof",
            UReset => "1006/upstream/reset",
            CProto => "1002/client/protocol_error",
            CUtf8 => "1007/client/protocol_error",
            CBig => "1009/client/message_too_big",
            UProto => "1002/upstream/protocol_error",
            UUtf8 => "1007/upstream/protocol_error",
            UBig => "1009/upstream/message_too_big",
            CPing => "1006/client/ping_timeout",
            UPing => "1006/upstream/ping_timeout",
            Hold => "1001/proxy/shutdown",
        }
    }

    /// The Close code the upstream must receive from the proxy (None: none,
    /// the proxy just drops the leg). `CEmpty` accepts 1000 or 1005.
    fn upstream_close(self) -> Option<u16> {
        match self {
            CClose | CEmpty | UClose => Some(1000),
            CApp => Some(4001),
            UApp => Some(4002),
            CEof | CReset | CProto | CUtf8 | CBig | CPing | Hold => Some(1001),
            UProto => Some(1002),
            UUtf8 => Some(1007),
            UBig => Some(1009),
            UEof | UReset | UPing | Victim => None,
        }
    }

    /// A session that ends with a Close frame from a peer: zero loss allowed.
    fn clean(self) -> bool {
        matches!(self, CClose | CApp | CEmpty | UClose | UApp)
    }
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn rng(seed: u64, a: u64, b: u64) -> u64 {
    mix(seed ^ mix(a) ^ mix(b).rotate_left(17))
}

#[derive(Clone, Copy)]
struct Plan {
    id: u64,
    kind: Kind,
    /// Messages the client sends (each echoed).
    n: u32,
    /// Extra messages the upstream sends before its Close (u_close, u_app).
    m: u32,
}

fn plan(seed: u64, id: u64) -> Plan {
    let mut r = rng(seed, id, 0) % 1000;
    let mut kind = CClose;
    for &(k, w) in WEIGHTS {
        if r < w {
            kind = k;
            break;
        }
        r -= w;
    }
    Plan {
        id,
        kind,
        n: (rng(seed, id, 1) % 7) as u32,
        m: (rng(seed, id, 2) % 4) as u32,
    }
}

/// Size and type of message `seq` of `session` in direction `dir`.
fn shape(seed: u64, session: u64, seq: u32, dir: u8) -> (usize, bool) {
    let r = rng(seed ^ u64::from(dir) << 40, session, u64::from(seq) + 1000);
    let pick = r % 1000;
    let span = |lo: usize, hi: usize| lo + ((r >> 20) as usize % (hi - lo + 1));
    let len = match pick {
        0..=449 => span(TEXT_HDR, 128),
        450..=749 => span(129, 2048),
        750..=919 => span(2049, 32 << 10),
        920..=989 => span((32 << 10) + 1, 256 << 10),
        _ => span((256 << 10) + 1, 512 << 10),
    };
    (len, (r >> 10) & 1 == 0)
}

// ---------------------------------------------------------------- payloads

const TEXT_HDR: usize = 38; // "S{:016x}:{:08x}:{d}:{:08x}|"
const BIN_HDR: usize = 19; // "SQ" u64 u32 u8 u32

fn text_fill(out: &mut String, mut rem: usize, start: usize) {
    const PAT: [char; 4] = ['a', 'é', '€', '😀'];
    let mut i = start;
    while rem > 0 {
        let c = PAT[i % 4];
        if c.len_utf8() <= rem {
            out.push(c);
            rem -= c.len_utf8();
        } else {
            out.push('a');
            rem -= 1;
        }
        i += 1;
    }
}

fn bin_byte(session: u64, seq: u32, i: usize) -> u8 {
    (i as u64)
        .wrapping_mul(131)
        .wrapping_add(session.wrapping_mul(7))
        .wrapping_add(u64::from(seq) * 13) as u8
}

fn make(session: u64, seq: u32, dir: u8, len: usize, text: bool) -> Message {
    if text {
        let mut s = format!("S{session:016x}:{seq:08x}:{dir}:{len:08x}|");
        text_fill(&mut s, len - TEXT_HDR, (session as usize) ^ (seq as usize));
        Message::text(s)
    } else {
        let mut b = Vec::with_capacity(len);
        b.extend_from_slice(b"SQ");
        b.extend_from_slice(&session.to_le_bytes());
        b.extend_from_slice(&seq.to_le_bytes());
        b.push(dir);
        b.extend_from_slice(&(len as u32).to_le_bytes());
        for i in BIN_HDR..len {
            b.push(bin_byte(session, seq, i));
        }
        Message::binary(b)
    }
}

/// A message's defect, if any (fields are read through Debug).
#[derive(Debug)]
#[allow(dead_code)]
enum Defect {
    Lost(u32, u32),
    DupOrReorder(u32, u32),
    Corrupt(String),
}

fn check(msg: &Message, session: u64, want_seq: u32, dir: u8) -> Result<usize, Defect> {
    let (sess, seq, d, len, total) = match msg {
        Message::Text(t) => {
            let s = t.as_str();
            let h = s
                .get(..TEXT_HDR)
                .ok_or(Defect::Corrupt("short text".into()))?;
            let p = |r: std::ops::Range<usize>| {
                u64::from_str_radix(&h[r], 16).map_err(|_| Defect::Corrupt(format!("header {h}")))
            };
            let (sess, seq, d, len) = (p(1..17)?, p(18..26)? as u32, p(27..28)? as u8, p(29..37)?);
            let mut want = String::with_capacity(s.len());
            want.push_str(h);
            if (len as usize) < TEXT_HDR {
                return Err(Defect::Corrupt(format!("len {len}")));
            }
            text_fill(
                &mut want,
                len as usize - TEXT_HDR,
                (sess as usize) ^ (seq as usize),
            );
            if want != s {
                return Err(Defect::Corrupt(format!("text body of {sess}/{seq}")));
            }
            (sess, seq, d, len as usize, s.len())
        }
        Message::Binary(b) => {
            if b.len() < BIN_HDR || &b[..2] != b"SQ" {
                return Err(Defect::Corrupt("short binary".into()));
            }
            let u64at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
            let u32at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
            let (sess, seq, d, len) = (u64at(2), u32at(10), b[14], u32at(15) as usize);
            if (BIN_HDR..b.len()).any(|i| b[i] != bin_byte(sess, seq, i)) {
                return Err(Defect::Corrupt(format!("binary body of {sess}/{seq}")));
            }
            (sess, seq, d, len, b.len())
        }
        other => return Err(Defect::Corrupt(format!("unexpected {other:?}"))),
    };
    if sess != session || d != dir || len != total {
        return Err(Defect::Corrupt(format!(
            "header says {sess}/{seq}/{d}/{len}, want {session}/{want_seq}/{dir}, size {total}"
        )));
    }
    if seq > want_seq {
        return Err(Defect::Lost(want_seq, seq));
    }
    if seq < want_seq {
        return Err(Defect::DupOrReorder(want_seq, seq));
    }
    Ok(total)
}

// ---------------------------------------------------------------- shared state

#[derive(Default)]
struct UpRec {
    kind: Option<Kind>,
    received: u32,
    close: Option<u16>,
}

#[derive(Default)]
struct Stats {
    msgs_c2u: AtomicU64,
    msgs_u2c: AtomicU64,
    bytes_c2u: AtomicU64,
    bytes_u2c: AtomicU64,
    lost: AtomicU64,
    dup: AtomicU64,
    corrupt: AtomicU64,
    anomalies: AtomicU64,
    samples: Mutex<Vec<String>>,
    up: Mutex<HashMap<u64, UpRec>>,
    up_active: AtomicUsize,
    /// Close codes clients saw from the proxy, by kind ("none" when none).
    client_close: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    refused: AtomicU64,
    clean_verified: AtomicU64,
}

impl Stats {
    fn anomaly(&self, s: String) {
        self.anomalies.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut v) = self.samples.lock() {
            if v.len() < 40 {
                v.push(s);
            }
        }
    }

    fn defect(&self, who: &str, id: u64, d: Defect) {
        match &d {
            Defect::Lost(..) => self.lost.fetch_add(1, Ordering::Relaxed),
            Defect::DupOrReorder(..) => self.dup.fetch_add(1, Ordering::Relaxed),
            Defect::Corrupt(_) => self.corrupt.fetch_add(1, Ordering::Relaxed),
        };
        self.anomaly(format!("{who} session {id}: {d:?}"));
    }

    fn saw_close(&self, kind: Kind, code: String) {
        if let Ok(mut m) = self.client_close.lock() {
            *m.entry(kind.name().into())
                .or_default()
                .entry(code)
                .or_default() += 1;
        }
    }

    fn up_rec<F: FnOnce(&mut UpRec)>(&self, id: u64, f: F) {
        if let Ok(mut m) = self.up.lock() {
            f(m.entry(id).or_default());
        }
    }
}

struct Ctx {
    cfg: Cfg,
    stats: Stats,
}

async fn bounded<T, F: std::future::Future<Output = T>>(d: Duration, what: &str, f: F) -> Res<T> {
    tokio::time::timeout(d, f)
        .await
        .map_err(|_| format!("timeout: {what}"))
}

/// The next data message (Ping/Pong are handled by tungstenite), or Err with
/// what came instead.
async fn next_data(ws: &mut Ws, wait: Duration) -> Res<Message> {
    loop {
        match bounded(wait, "next message", ws.next()).await? {
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => return Ok(m),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Close(f))) => return Err(format!("close {}", close_str(&f))),
            Some(Err(e)) => return Err(format!("error {e}")),
            None => return Err("end of stream".into()),
        }
    }
}

fn close_str(f: &Option<CloseFrame>) -> String {
    match f {
        None => "empty".into(),
        // tungstenite <= 0.30 replaces a code it does not know as allowed
        // (such as 1014) with exactly this frame.
        Some(f) if f.code == CloseCode::Protocol && f.reason.as_str() == "Protocol violation" => {
            "forbidden-by-tungstenite(1014)".into()
        }
        Some(f) => format!("{}", u16::from(f.code)),
    }
}

/// Read until the stream ends; returns the first Close seen.
async fn drain(ws: &mut Ws, wait: Duration) -> Option<Option<CloseFrame>> {
    let mut first = None;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => {
                if first.is_none() {
                    first = Some(f);
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_))) | Ok(None) | Err(_) => return first,
        }
    }
}

// ---------------------------------------------------------------- raw frames

fn masked_frame(fin_opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut f = vec![fin_opcode];
    let n = payload.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else if n < 65536 {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

async fn raw_write(ws: &mut Ws, bytes: &[u8]) -> Res<()> {
    ws.flush().await.map_err(|e| format!("flush: {e}"))?;
    ws.get_mut()
        .write_all(bytes)
        .await
        .map_err(|e| format!("raw write: {e}"))
}

// ---------------------------------------------------------------- upstream

struct Upstream {
    gen_tx: watch::Sender<u64>,
    accept: Option<tokio::task::JoinHandle<()>>,
}

impl Upstream {
    async fn bind(ctx: &Arc<Ctx>) -> Res<TcpListener> {
        let addr = SocketAddr::from(([127, 0, 0, 1], ctx.cfg.upstream_port));
        let mut last = String::new();
        for _ in 0..50 {
            match TcpListener::bind(addr).await {
                Ok(l) => return Ok(l),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("upstream bind {addr}: {last}"))
    }

    async fn start(ctx: Arc<Ctx>) -> Res<Upstream> {
        let (gen_tx, _) = watch::channel(0u64);
        let mut up = Upstream {
            gen_tx,
            accept: None,
        };
        up.up(ctx).await?;
        Ok(up)
    }

    async fn up(&mut self, ctx: Arc<Ctx>) -> Res<()> {
        let listener = Upstream::bind(&ctx).await?;
        let mut gen_rx = self.gen_tx.subscribe();
        gen_rx.borrow_and_update();
        self.accept = Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = gen_rx.changed() => return, // restart: the listener is dropped
                    r = listener.accept() => if let Ok((tcp, _)) = r {
                        let ctx = ctx.clone();
                        let rx = gen_rx.clone();
                        ctx.stats.up_active.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(async move {
                            if let Err(e) = up_conn(&ctx, tcp, rx).await {
                                ctx.stats.anomaly(format!("upstream: {e}"));
                            }
                            ctx.stats.up_active.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                }
            }
        }));
        Ok(())
    }

    /// Close the listener and every connection (FIN), wait until all are gone.
    async fn down(&mut self, ctx: &Ctx) -> Res<()> {
        self.gen_tx.send_modify(|g| *g += 1);
        if let Some(h) = self.accept.take() {
            let _ = h.await;
        }
        wait_zero(&ctx.stats.up_active, Duration::from_secs(15)).await
    }
}

async fn wait_zero(n: &AtomicUsize, limit: Duration) -> Res<()> {
    let t0 = Instant::now();
    while n.load(Ordering::SeqCst) != 0 {
        if t0.elapsed() > limit {
            return Err(format!(
                "{} upstream connections still open",
                n.load(Ordering::SeqCst)
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn parse_path(p: &str) -> Option<(u64, Kind, u32, u32)> {
    // /s/{id}/{kind}/{n}/{m}
    let mut it = p.trim_start_matches('/').split('/');
    if it.next()? != "s" {
        return None;
    }
    let id = it.next()?.parse().ok()?;
    let kind = Kind::from_name(it.next()?)?;
    let n = it.next()?.parse().ok()?;
    let m = it.next()?.parse().ok()?;
    Some((id, kind, n, m))
}

async fn up_conn(ctx: &Arc<Ctx>, tcp: TcpStream, mut gen: watch::Receiver<u64>) -> Res<()> {
    let cfg = &ctx.cfg;
    let path = Arc::new(Mutex::new(String::new()));
    let p2 = path.clone();
    // The callback's error type is tungstenite's (large) ErrorResponse.
    #[allow(clippy::result_large_err)]
    let cb = move |req: &Request, resp: Response| {
        if let Ok(mut p) = p2.lock() {
            *p = req.uri().path().to_string();
        }
        Ok(resp)
    };
    let mut ws = bounded(
        cfg.wait,
        "upstream handshake",
        tokio_tungstenite::accept_hdr_async_with_config(tcp, cb, Some(ws_config())),
    )
    .await?
    .map_err(|e| format!("upstream handshake: {e}"))?;
    let p = path.lock().map(|p| p.clone()).unwrap_or_default();
    let (id, kind, n, m) = parse_path(&p).ok_or(format!("bad path {p}"))?;
    ctx.stats.up_rec(id, |r| r.kind = Some(kind));

    // Echo phase: verify every client message, echo it.
    for seq in 0..n {
        let msg = tokio::select! {
            _ = gen.changed() => return restart_fin(&mut ws, cfg.wait).await,
            m = next_data(&mut ws, cfg.wait) => m.map_err(|e| format!("session {id} ({}) upstream echo phase: {e}", kind.name()))?,
        };
        match check(&msg, id, seq, 0) {
            Ok(len) => {
                ctx.stats.msgs_c2u.fetch_add(1, Ordering::Relaxed);
                ctx.stats.bytes_c2u.fetch_add(len as u64, Ordering::Relaxed);
                ctx.stats.up_rec(id, |r| r.received += 1);
            }
            Err(d) => {
                ctx.stats.defect("upstream", id, d);
                return Ok(());
            }
        }
        ws.send(msg)
            .await
            .map_err(|e| format!("session {id} upstream echo: {e}"))?;
    }

    let limit = cfg.limit;
    match kind {
        UClose | UApp => {
            for j in 0..m {
                let (len, text) = shape(cfg.seed, id, n + j, 1);
                ws.send(make(id, n + j, 1, len, text))
                    .await
                    .map_err(|e| format!("session {id} upstream extra: {e}"))?;
            }
            let code = if kind == UClose { 1000 } else { 4002 };
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: "soak-bye".into(),
            };
            let _ = ws.close(Some(frame)).await;
            let reply = drain(&mut ws, cfg.wait).await;
            record_up_close(ctx, id, reply);
        }
        UEof => {
            let _ = ws.flush().await;
            let _ = ws.get_mut().shutdown().await;
            let seen = drain(&mut ws, cfg.wait).await;
            record_up_close(ctx, id, seen);
        }
        UReset => {
            let _ = ws.flush().await;
            // Linger 0: close() sends RST at once (no blocking).
            #[allow(deprecated)]
            let _ = ws.get_ref().set_linger(Some(Duration::ZERO));
            drop(ws);
        }
        UProto => {
            // Servers must not mask (RFC 6455 §5.1).
            raw_write(&mut ws, &masked_frame(0x81, b"hi")).await?;
            let seen = drain(&mut ws, cfg.wait).await;
            record_up_close(ctx, id, seen);
        }
        UUtf8 => {
            raw_write(&mut ws, &[0x81, 0x02, 0xff, 0xfe]).await?;
            let seen = drain(&mut ws, cfg.wait).await;
            record_up_close(ctx, id, seen);
        }
        UBig => {
            let mut f = vec![0x82u8, 127];
            f.extend_from_slice(&(limit as u64 + 1).to_be_bytes());
            raw_write(&mut ws, &f).await?;
            let seen = drain(&mut ws, cfg.wait).await;
            record_up_close(ctx, id, seen);
        }
        UPing => {
            // Stop reading: no pongs. The proxy must give up on this leg.
            tokio::time::sleep(cfg.ka_interval + cfg.ka_timeout + Duration::from_millis(1500))
                .await;
            drop(ws);
        }
        _ => {
            // Client-driven kinds, victims and held sessions: read until the end;
            // a restart closes the connection with a FIN.
            loop {
                tokio::select! {
                    _ = gen.changed() => return restart_fin(&mut ws, cfg.wait).await,
                    r = bounded(Duration::from_secs(120), "upstream idle", ws.next()) => match r? {
                        Some(Ok(Message::Close(f))) => {
                            record_up_close(ctx, id, Some(f));
                        }
                        Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                            ctx.stats.anomaly(format!("session {id} ({}): unexpected data at upstream", kind.name()));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return Ok(()),
                    }
                }
            }
        }
    }
    Ok(())
}

fn record_up_close(ctx: &Ctx, id: u64, f: Option<Option<CloseFrame>>) {
    let code = match f {
        None => None,
        Some(None) => Some(1005),
        Some(Some(f)) => Some(u16::from(f.code)),
    };
    ctx.stats.up_rec(id, |r| r.close = code);
}

/// The upstream "crashes": FIN without a Close frame, then read to the end.
async fn restart_fin(ws: &mut Ws, wait: Duration) -> Res<()> {
    let _ = ws.get_mut().shutdown().await;
    let _ = drain(ws, wait).await;
    Ok(())
}

// ---------------------------------------------------------------- clients

async fn connect(ctx: &Ctx, id: u64, path: &str) -> Res<Result<Ws, u16>> {
    // Spread clients over 127.0.0.2-254 so 100k sessions do not run out of
    // ephemeral ports to the one proxy address.
    let src = Ipv4Addr::new(127, 0, 0, 2 + (id % 253) as u8);
    let sock = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    sock.bind(SocketAddr::V4(SocketAddrV4::new(src, 0)))
        .map_err(|e| format!("bind {src}: {e}"))?;
    let tcp = bounded(ctx.cfg.wait, "tcp connect", sock.connect(ctx.cfg.proxy))
        .await?
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).ok();
    let url = format!("ws://{}{}", ctx.cfg.proxy, path);
    match bounded(
        ctx.cfg.wait,
        "ws handshake",
        tokio_tungstenite::client_async_with_config(url, tcp, Some(ws_config())),
    )
    .await?
    {
        Ok((ws, _)) => Ok(Ok(ws)),
        Err(tungstenite::Error::Http(resp)) => Ok(Err(resp.status().as_u16())),
        Err(e) => Err(format!("handshake: {e}")),
    }
}

/// Send `n` messages and read their echoes concurrently (no head-of-line
/// deadlock on large messages).
async fn exchange(ctx: &Ctx, ws: Ws, p: &Plan) -> Res<Ws> {
    let (mut sink, mut stream) = ws.split();
    let (id, n, seed, wait) = (p.id, p.n, ctx.cfg.seed, ctx.cfg.wait);
    let send = async {
        for seq in 0..n {
            let (len, text) = shape(seed, id, seq, 0);
            bounded(wait, "send", sink.send(make(id, seq, 0, len, text)))
                .await?
                .map_err(|e| format!("send: {e}"))?;
        }
        Ok::<_, String>(())
    };
    let recv = async {
        for seq in 0..n {
            let msg = loop {
                match bounded(wait, "echo", stream.next()).await? {
                    Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => break m,
                    Some(Ok(Message::Close(f))) => {
                        return Err(format!("close {} during echoes", close_str(&f)))
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(format!("echo read: {e}")),
                    None => return Err("end during echoes".into()),
                }
            };
            match check(&msg, id, seq, 0) {
                Ok(len) => {
                    ctx.stats.msgs_u2c.fetch_add(1, Ordering::Relaxed);
                    ctx.stats.bytes_u2c.fetch_add(len as u64, Ordering::Relaxed);
                }
                Err(d) => {
                    ctx.stats.defect("client", id, d);
                    return Err("defect".into());
                }
            }
        }
        Ok::<_, String>(())
    };
    let (s, r) = tokio::join!(send, recv);
    s?;
    r?;
    stream.reunite(sink).map_err(|e| format!("reunite: {e}"))
}

/// Read the proxy's Close (after any data), bounded; records it per kind.
async fn expect_close(ctx: &Ctx, ws: &mut Ws, p: &Plan, want: &str) -> Res<()> {
    let wait = ctx.cfg.wait;
    let got = loop {
        match bounded(wait, "close", ws.next()).await? {
            Some(Ok(Message::Close(f))) => break close_str(&f),
            Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                return Err(format!("data instead of close {want}"))
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => break format!("error:{}", err_kind(&e)),
            None => break "none".into(),
        }
    };
    let _ = drain(ws, Duration::from_secs(5)).await;
    ctx.stats.saw_close(p.kind, got.clone());
    if got != want {
        return Err(format!("client saw close {got}, want {want}"));
    }
    Ok(())
}

fn err_kind(e: &tungstenite::Error) -> &'static str {
    match e {
        tungstenite::Error::Io(_) => "io",
        tungstenite::Error::Protocol(_) => "protocol",
        _ => "other",
    }
}

async fn client_session(ctx: Arc<Ctx>, p: Plan, ready: Option<mpsc::Sender<u64>>) -> Res<()> {
    let cfg = &ctx.cfg;
    let path = format!("/s/{}/{}/{}/{}", p.id, p.kind.name(), p.n, p.m);
    let mut ws = match connect(&ctx, p.id, &path).await? {
        Ok(ws) => ws,
        Err(status) => return Err(format!("HTTP {status} instead of 101")),
    };
    ws = match exchange(&ctx, ws, &p).await {
        Ok(ws) => ws,
        // An upstream that resets its connection discards whatever its own
        // kernel had not sent yet (RFC 793 RST semantics): echoes may be
        // missing, in order, before the proxy's Close. Not a relay defect.
        Err(e) if p.kind == UReset && e.starts_with("close forbidden-by-tungstenite(1014)") => {
            ctx.stats.saw_close(
                p.kind,
                "forbidden-by-tungstenite(1014) before all echoes".into(),
            );
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    match p.kind {
        CClose | CApp | CEmpty => {
            let frame = match p.kind {
                CClose => Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "soak".into(),
                }),
                CApp => Some(CloseFrame {
                    code: CloseCode::from(4001),
                    reason: "soak-app".into(),
                }),
                _ => None,
            };
            bounded(cfg.wait, "close", ws.close(frame))
                .await?
                .map_err(|e| format!("close: {e}"))?;
            let reply = drain(&mut ws, cfg.wait).await;
            let got = reply
                .map(|f| close_str(&f))
                .unwrap_or_else(|| "none".into());
            ctx.stats.saw_close(p.kind, got.clone());
            let want = match p.kind {
                CClose => "1000",
                CApp => "4001",
                _ => &got, // an empty Close: any reply is fine
            };
            if got != want {
                return Err(format!("close reply {got}, want {want}"));
            }
            ctx.stats.clean_verified.fetch_add(1, Ordering::Relaxed);
        }
        UClose | UApp => {
            for j in 0..p.m {
                let msg = next_data(&mut ws, cfg.wait).await?;
                match check(&msg, p.id, p.n + j, 1) {
                    Ok(len) => {
                        ctx.stats.msgs_u2c.fetch_add(1, Ordering::Relaxed);
                        ctx.stats.bytes_u2c.fetch_add(len as u64, Ordering::Relaxed);
                    }
                    Err(d) => {
                        ctx.stats.defect("client", p.id, d);
                        return Ok(());
                    }
                }
            }
            let want = if p.kind == UClose { "1000" } else { "4002" };
            expect_close(&ctx, &mut ws, &p, want).await?;
            ctx.stats.clean_verified.fetch_add(1, Ordering::Relaxed);
        }
        UEof | UReset | UProto | UUtf8 | UBig | UPing => {
            expect_close(&ctx, &mut ws, &p, "forbidden-by-tungstenite(1014)").await?;
        }
        CEof => {
            let _ = ws.flush().await;
            let _ = ws.get_mut().shutdown().await;
            let _ = drain(&mut ws, cfg.wait).await;
        }
        CReset => {
            let _ = ws.flush().await;
            // Linger 0: close() sends RST at once (no blocking).
            #[allow(deprecated)]
            let _ = ws.get_ref().set_linger(Some(Duration::ZERO));
            drop(ws);
        }
        CProto => {
            raw_write(&mut ws, &[0x81, 0x02, b'h', b'i']).await?; // unmasked
            expect_close(&ctx, &mut ws, &p, "1002").await?;
        }
        CUtf8 => {
            raw_write(&mut ws, &masked_frame(0x81, &[0xff, 0xfe])).await?;
            expect_close(&ctx, &mut ws, &p, "1007").await?;
        }
        CBig => {
            if p.id.is_multiple_of(2) {
                // One frame header announcing limit + 1 bytes: refused on the header.
                let mut f = vec![0x82u8, 0x80 | 127];
                f.extend_from_slice(&(cfg.limit as u64 + 1).to_be_bytes());
                f.extend_from_slice(&[1, 2, 3, 4]);
                raw_write(&mut ws, &f).await?;
            } else {
                // Two frames within the frame limit, a message over the limit.
                let part = vec![0x5au8; cfg.limit * 2 / 3];
                let mut f = masked_frame(0x02, &part); // binary, not final
                f.extend(masked_frame(0x80, &part)); // continuation, final
                raw_write(&mut ws, &f).await?;
            }
            expect_close(&ctx, &mut ws, &p, "1009").await?;
        }
        CPing => {
            // Stop reading: no pongs go out. The proxy drops this leg.
            tokio::time::sleep(cfg.ka_interval + cfg.ka_timeout + Duration::from_millis(1500))
                .await;
            let _ = drain(&mut ws, Duration::from_secs(5)).await;
        }
        Victim | Hold => {
            if let Some(tx) = ready {
                let _ = tx.send(p.id).await;
            }
            let want = if p.kind == Victim {
                "forbidden-by-tungstenite(1014)"
            } else {
                "1001"
            };
            let wait = Duration::from_secs(90);
            let got = loop {
                match bounded(wait, "held close", ws.next()).await? {
                    Some(Ok(Message::Close(f))) => break close_str(&f),
                    Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                        return Err("data while held".into())
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => break format!("error:{}", err_kind(&e)),
                    None => break "none".into(),
                }
            };
            let _ = drain(&mut ws, Duration::from_secs(5)).await;
            ctx.stats.saw_close(p.kind, got.clone());
            if got != want {
                return Err(format!("held session saw {got}, want {want}"));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- main

fn out(v: serde_json::Value) {
    println!("{v}");
}

async fn run_batch(ctx: &Arc<Ctx>, plans: Vec<Plan>) -> Res<()> {
    let (tx, mut rx) = mpsc::channel::<u64>(plans.len().max(1));
    let total = plans.len();
    let mut set = JoinSet::new();
    for p in plans {
        let (ctx, tx) = (ctx.clone(), tx.clone());
        set.spawn(async move {
            if let Err(e) = client_session(ctx.clone(), p, Some(tx)).await {
                ctx.stats
                    .anomaly(format!("session {} ({}): {e}", p.id, p.kind.name()));
            }
        });
    }
    drop(tx);
    for _ in 0..total {
        bounded(Duration::from_secs(30), "held sessions ready", rx.recv())
            .await?
            .ok_or("a held session failed before it was ready")?;
    }
    // The caller now ends them (restart or drain); keep the tasks running.
    tokio::spawn(async move { while set.join_next().await.is_some() {} });
    Ok(())
}

async fn probe_502(ctx: &Arc<Ctx>, id: u64) -> Res<()> {
    match connect(ctx, id, &format!("/s/{id}/probe/0/0")).await? {
        Err(502) => {
            ctx.stats.refused.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(s) => Err(format!("probe got HTTP {s}, want 502")),
        Ok(_) => Err("probe got 101 while the upstream is down".into()),
    }
}

async fn run(cfg: Cfg) -> Res<()> {
    let ctx = Arc::new(Ctx {
        cfg: cfg.clone(),
        stats: Stats::default(),
    });
    let mut upstream = Upstream::start(ctx.clone()).await?;
    out(json!({"ev": "upstream_listening", "port": cfg.upstream_port}));

    let t0 = Instant::now();
    let deadline = Duration::from_secs(cfg.max_seconds);
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut planned: HashMap<u64, Plan> = HashMap::new();
    let sem = Arc::new(Semaphore::new(cfg.concurrency));
    let mut set = JoinSet::new();
    let restart_at: Vec<u64> = (1..=cfg.restarts)
        .map(|i| i * cfg.sessions / (cfg.restarts + 1))
        .collect();
    let mut next_extra = cfg.sessions; // ids for victims, probes, held sessions
    let mut restarts_done = 0u64;
    let mut last_progress = Instant::now();

    for id in 0..cfg.sessions {
        if t0.elapsed() > deadline {
            return Err(format!(
                "--max-seconds {} passed at session {id}",
                cfg.max_seconds
            ));
        }
        if restart_at.contains(&id) {
            // Quiesce: every in-flight session (and its upstream side) finishes.
            while set.join_next().await.is_some() {}
            wait_zero(&ctx.stats.up_active, Duration::from_secs(30)).await?;
            // Idle for a moment: the driver samples the proxy's RSS here.
            out(json!({"ev": "quiesced", "at": id}));
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let victims: Vec<Plan> = (0..cfg.victims)
                .map(|k| Plan {
                    id: next_extra + k,
                    kind: Victim,
                    n: (rng(cfg.seed, next_extra + k, 1) % 4) as u32,
                    m: 0,
                })
                .collect();
            next_extra += cfg.victims;
            for v in &victims {
                *expected.entry(Victim.expected().into()).or_default() += 1;
                *kinds.entry(Victim.name().into()).or_default() += 1;
                planned.insert(v.id, *v);
            }
            run_batch(&ctx, victims).await?;
            upstream.down(&ctx).await?;
            for _ in 0..cfg.probes {
                if let Err(e) = probe_502(&ctx, next_extra).await {
                    ctx.stats.anomaly(format!("probe {next_extra}: {e}"));
                }
                next_extra += 1;
            }
            upstream.up(ctx.clone()).await?;
            restarts_done += 1;
        }
        let p = plan(cfg.seed, id);
        *expected.entry(p.kind.expected().into()).or_default() += 1;
        *kinds.entry(p.kind.name().into()).or_default() += 1;
        planned.insert(id, p);
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| format!("semaphore: {e}"))?;
        let c = ctx.clone();
        set.spawn(async move {
            if let Err(e) = client_session(c.clone(), p, None).await {
                c.stats
                    .anomaly(format!("session {} ({}): {e}", p.id, p.kind.name()));
            }
            drop(permit);
        });
        while let Some(r) = set.try_join_next() {
            if let Err(e) = r {
                ctx.stats.anomaly(format!("task: {e}"));
            }
        }
        if last_progress.elapsed() > Duration::from_secs(5) {
            last_progress = Instant::now();
            eprintln!(
                "[soak] {id}/{} sessions launched, {:.0}s, anomalies {}",
                cfg.sessions,
                t0.elapsed().as_secs_f64(),
                ctx.stats.anomalies.load(Ordering::Relaxed)
            );
        }
    }
    while set.join_next().await.is_some() {}
    wait_zero(&ctx.stats.up_active, Duration::from_secs(30)).await?;
    let duration = t0.elapsed().as_secs_f64();

    // Cross-check what the upstream saw, per session.
    let (mut clean_sessions, mut clean_ok) = (0u64, 0u64);
    let mut up_close_by_kind: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    {
        let up = ctx.stats.up.lock().map_err(|_| "poisoned")?;
        for (id, p) in &planned {
            let rec = up.get(id);
            let got = rec.and_then(|r| r.close);
            *up_close_by_kind
                .entry(p.kind.name().into())
                .or_default()
                .entry(got.map_or("none".into(), |c| c.to_string()))
                .or_default() += 1;
            let ok = match (p.kind, got) {
                (CEmpty, Some(1000 | 1005)) => true,
                (k, g) => k.upstream_close() == g,
            };
            if !ok {
                ctx.stats.anomaly(format!(
                    "session {id} ({}): upstream got close {got:?}, want {:?}",
                    p.kind.name(),
                    p.kind.upstream_close()
                ));
            }
            if p.kind.clean() {
                clean_sessions += 1;
                if rec.map(|r| r.received) == Some(p.n) {
                    clean_ok += 1;
                } else {
                    ctx.stats.lost.fetch_add(1, Ordering::Relaxed);
                    ctx.stats.anomaly(format!(
                        "session {id} ({}): upstream received {:?} of {} messages",
                        p.kind.name(),
                        rec.map(|r| r.received),
                        p.n
                    ));
                }
            }
        }
    }
    let s = &ctx.stats;
    let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
    out(json!({
        "ev": "churn_done",
        "sessions": cfg.sessions,
        "sessions_total": planned.len(),
        "restarts": restarts_done,
        "victims": restarts_done * cfg.victims,
        "refused_502": ld(&s.refused),
        "duration_s": duration,
        "messages_c2u": ld(&s.msgs_c2u),
        "messages_u2c": ld(&s.msgs_u2c),
        "bytes_c2u": ld(&s.bytes_c2u),
        "bytes_u2c": ld(&s.bytes_u2c),
        "expected": expected,
        "kinds": kinds,
        "clean_sessions": clean_sessions,
        "clean_sessions_complete": clean_ok,
        "clean_verified_by_client": ld(&s.clean_verified),
        "lost": ld(&s.lost),
        "dup_or_reordered": ld(&s.dup),
        "corrupt": ld(&s.corrupt),
        "anomalies": ld(&s.anomalies),
        "anomaly_samples": s.samples.lock().map(|v| v.clone()).unwrap_or_default(),
        "client_close_by_kind": s.client_close.lock().map(|m| m.clone()).unwrap_or_default(),
        "upstream_close_by_kind": up_close_by_kind,
    }));

    if cfg.hold > 0 {
        // The driver checks the idle proxy first, then says "hold".
        let mut line = String::new();
        let stdin = tokio::task::spawn_blocking(move || {
            let _ = std::io::stdin().read_line(&mut line);
            line
        });
        let line = bounded(Duration::from_secs(300), "'hold' on stdin", stdin)
            .await?
            .map_err(|e| format!("stdin: {e}"))?;
        if line.trim() != "hold" {
            return Err(format!("expected 'hold' on stdin, got {line:?}"));
        }
        let holds: Vec<Plan> = (0..cfg.hold)
            .map(|k| Plan {
                id: next_extra + k,
                kind: Hold,
                n: (rng(cfg.seed, next_extra + k, 1) % 4) as u32,
                m: 0,
            })
            .collect();
        let ids: Vec<u64> = holds.iter().map(|p| p.id).collect();
        run_batch(&ctx, holds).await?;
        out(json!({"ev": "holding", "n": cfg.hold}));
        // The driver sends SIGTERM to the proxy now; wait for every held session.
        let t = Instant::now();
        loop {
            let done = s
                .client_close
                .lock()
                .map(|m| m.get("hold").map_or(0, |c| c.values().sum::<u64>()))
                .unwrap_or(0);
            if done >= cfg.hold {
                break;
            }
            if t.elapsed() > Duration::from_secs(60) {
                return Err(format!("only {done} of {} held sessions closed", cfg.hold));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        wait_zero(&s.up_active, Duration::from_secs(15)).await?;
        let mut up_codes: BTreeMap<String, u64> = BTreeMap::new();
        if let Ok(up) = s.up.lock() {
            for id in &ids {
                let c = up.get(id).and_then(|r| r.close);
                *up_codes
                    .entry(c.map_or("none".into(), |c| c.to_string()))
                    .or_default() += 1;
            }
        }
        out(json!({
            "ev": "hold_done",
            "client_codes": s.client_close.lock().map(|m| m.get("hold").cloned().unwrap_or_default()).unwrap_or_default(),
            "upstream_codes": up_codes,
            "anomalies": ld(&s.anomalies),
            "anomaly_samples": s.samples.lock().map(|v| v.clone()).unwrap_or_default(),
        }));
    }
    Ok(())
}

fn main() {
    let cfg = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wspulse-soak: {e}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wspulse-soak: runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cfg)) {
        out(json!({"ev": "fatal", "error": e}));
        std::process::exit(1);
    }
}
