//! The permessage-deflate line of bench/run (issue 25, item 5): a proxy that passes
//! permessage-deflate through relays compressed bytes and holds no compression state, so
//! its throughput and CPU per message on compressed traffic should match the proxies that
//! tunnel bytes, and every target should carry the same wire bytes per message.
//!
//! - `throughput-deflate`: closed-loop round trips (window 1) of 4 KiB JSON-like text
//!   messages over permessage-deflate, with the client's frames written and read by hand
//!   ([`crate::pmd`]): tungstenite 0.30 has no permessage-deflate and refuses RSV1. Each
//!   distinct message is compressed once, before the clock starts (no context takeover
//!   either way, so a message's compressed bytes never depend on the ones before it). It
//!   reports msg/s, the proxy's CPU per message and the wire bytes per payload byte.
//! - [`LINE`]: that line of the report, which `wsbench report-line --line deflate` adds to
//!   what `wsbench report` wrote ([`crate::line`]).

use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use clap::Args;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout_at};
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};

use crate::line::{Figure, Line};
use crate::pmd::{self, FrameError, Head};
use crate::{
    Common, Errors, Procs, expand_pids, host_port, join_all_bounded, join_load, round2, secs,
    watch_load,
};

/// The four bytes a sync flush ends with, which permessage-deflate leaves off the wire
/// (RFC 7692 §7.2.1) and the receiver appends before inflating (§7.2.2).
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Largest frame or message the client accepts.
const MAX_MESSAGE: usize = 64 << 20;
/// Largest upgrade response the client reads.
const MAX_RESPONSE: usize = 16 * 1024;

#[derive(Args, Debug)]
pub struct TpzArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 100)]
    sessions: usize,
    /// Size of each message before compression, bytes (JSON-like text, at least 64).
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// Distinct messages, each compressed once before the clock starts; session i sends
    /// message i, i+1, … in turn.
    #[arg(long, default_value_t = 64)]
    messages: usize,
    /// Measured window, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up before the measured window, seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Concurrent connection attempts while opening the sessions.
    #[arg(long, default_value_t = 50)]
    connect_concurrency: usize,
}

// ---------------------------------------------------------------------------------------
// messages and compression

/// A message of exactly `size` bytes (for `size` of 64 or more) that looks like what
/// WebSocket JSON APIs send: an object holding an array of event records (random ids,
/// prices, quantities, names drawn from short lists), closed by a space-padded field to
/// reach the size. Deterministic in `seed`. It compresses about as much as such traffic
/// does: to roughly a quarter.
pub fn json_message(seed: u64, size: usize) -> Vec<u8> {
    const EVENTS: [&str; 6] = [
        "order.created",
        "order.updated",
        "order.filled",
        "quote",
        "trade",
        "heartbeat",
    ];
    const SYMBOLS: [&str; 8] = [
        "ACME", "GLOBEX", "INITECH", "UMBRELLA", "HOOLI", "STARK", "WAYNE", "TYRELL",
    ];
    const VENUES: [&str; 4] = ["XNAS", "XNYS", "BATS", "ARCX"];
    const TAIL_MIN: usize = "],\"pad\":\"\"}".len();
    let mut rng = XorShift::new(seed);
    let mut s = format!("{{\"seq\":{seed},\"items\":[");
    let mut ts = 1_733_443_200_000 + rng.below(1_000_000);
    for i in 0..100_000 {
        ts += rng.below(250);
        let rec = format!(
            "{{\"id\":\"{:016x}\",\"ts\":{ts},\"user\":\"user-{}\",\"event\":\"{}\",\"symbol\":\"{}\",\
             \"price\":{}.{:02},\"qty\":{},\"side\":\"{}\",\"venue\":\"{}\",\"live\":{}}}",
            rng.next(),
            rng.below(100_000),
            EVENTS[rng.below(6) as usize],
            SYMBOLS[rng.below(8) as usize],
            50 + rng.below(200),
            rng.below(100),
            rng.below(5000),
            if rng.below(2) == 0 { "buy" } else { "sell" },
            VENUES[rng.below(4) as usize],
            rng.below(10) != 0,
        );
        let sep = usize::from(i > 0);
        if s.len() + sep + rec.len() + TAIL_MIN > size {
            break;
        }
        if sep == 1 {
            s.push(',');
        }
        s.push_str(&rec);
    }
    s.push_str("],\"pad\":\"");
    while s.len() + 2 < size {
        s.push(' ');
    }
    s.push_str("\"}");
    s.into_bytes()
}

/// `plain` as one permessage-deflate message payload with no context takeover (RFC 7692
/// §7.2.1): raw deflate of the message alone, sync-flushed, the final `00 00 ff ff` removed.
pub fn deflate_message(plain: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(plain.len() / 2 + 64),
        flate2::Compression::default(),
    );
    enc.write_all(plain)?;
    // A sync flush (flate2's `flush`): every input byte out, on a byte boundary, ending
    // with an empty stored block, which is the four bytes removed below.
    enc.flush()?;
    let mut out = std::mem::take(enc.get_mut());
    if !out.ends_with(&SYNC_TAIL) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "sync flush did not end with 00 00 ff ff",
        ));
    }
    out.truncate(out.len() - SYNC_TAIL.len());
    Ok(out)
}

/// Inflate one permessage-deflate message payload with a fresh context (RFC 7692 §7.2.2):
/// append `00 00 ff ff`, inflate; at most `max` bytes out.
pub fn inflate_message(payload: &[u8], max: usize) -> Result<Vec<u8>, String> {
    let mut input = Vec::with_capacity(payload.len() + SYNC_TAIL.len());
    input.extend_from_slice(payload);
    input.extend_from_slice(&SYNC_TAIL);
    let mut z = flate2::Decompress::new(false);
    let mut out: Vec<u8> = Vec::with_capacity(payload.len() * 4 + 64);
    for _ in 0..100_000 {
        let (in0, out0) = (z.total_in(), z.total_out());
        let at = usize::try_from(in0).map_err(|_| "inflate_overflow")?;
        z.decompress_vec(&input[at..], &mut out, flate2::FlushDecompress::Sync)
            .map_err(|_| "inflate_corrupt".to_string())?;
        let done = usize::try_from(z.total_in()).is_ok_and(|n| n == input.len());
        if done && out.len() < out.capacity() {
            return Ok(out);
        }
        if out.len() > max {
            return Err("inflate_too_long".into());
        }
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(4096));
        } else if (z.total_in(), z.total_out()) == (in0, out0) {
            return Err("inflate_stuck".into());
        }
    }
    Err("inflate_stuck".into())
}

/// xorshift64*: message contents and masking keys. Masking keys should be unpredictable to
/// the network (RFC 6455 §5.3, against cache poisoning through proxies that do not speak
/// WebSocket); on loopback, to a benchmark's echo, a seeded generator is enough.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

// ---------------------------------------------------------------------------------------
// raw-frame client

/// One client session speaking frames by hand.
struct RawWs {
    tcp: TcpStream,
    /// Bytes read and not yet parsed: `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The frame being written.
    wbuf: Vec<u8>,
    /// The payload of the last message read.
    msg: Vec<u8>,
    keys: XorShift,
    /// The server answered permessage-deflate.
    deflate: bool,
}

/// A message read by [`RawWs::recv`] (its payload is in `RawWs::msg`).
struct Incoming {
    opcode: u8,
    /// RSV1 of its first frame: compressed.
    rsv1: bool,
    /// Bytes of its frames on the wire, headers included.
    wire: usize,
}

fn frame_error(stage: &str, e: FrameError) -> String {
    let k = match e {
        FrameError::Reserved => "reserved_bits",
        FrameError::Opcode => "bad_opcode",
        FrameError::Control => "bad_control_frame",
        FrameError::TooLong => "frame_too_long",
    };
    format!("{stage}_{k}")
}

impl RawWs {
    /// Connect, offer permessage-deflate ([`pmd::DEFLATE_NO_TAKEOVER`]) and check the 101.
    /// Returns the session and the server's `Sec-WebSocket-Extensions` answer.
    async fn connect(url: &str, t: Duration, seed: u64) -> Result<(RawWs, String), String> {
        let hp = match host_port(url) {
            Some((hp, false)) => hp,
            _ => return Err("bad_url (only ws:// is supported)".to_string()),
        };
        let path = url
            .strip_prefix("ws://")
            .and_then(|r| r.find('/').map(|i| &r[i..]))
            .unwrap_or("/");
        let deadline = Instant::now() + t;
        let mut tcp = match timeout_at(deadline, TcpStream::connect(hp.as_str())).await {
            Err(_) => return Err("connect_timeout".into()),
            Ok(Err(e)) => return Err(format!("connect_{:?}", e.kind()).to_lowercase()),
            Ok(Ok(s)) => s,
        };
        let _ = tcp.set_nodelay(true);
        let key = generate_key();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {hp}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Extensions: {}\r\n\r\n",
            pmd::DEFLATE_NO_TAKEOVER
        );
        match timeout_at(deadline, tcp.write_all(req.as_bytes())).await {
            Err(_) => return Err("handshake_timeout".into()),
            Ok(Err(e)) => return Err(format!("handshake_io_{:?}", e.kind()).to_lowercase()),
            Ok(Ok(())) => {}
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut end = 0;
        let head_len = loop {
            if let Some(n) = pmd::head_end(&buf[..end]) {
                break n;
            }
            if end >= MAX_RESPONSE {
                return Err("handshake_response_too_long".into());
            }
            match timeout_at(deadline, tcp.read(&mut buf[end..MAX_RESPONSE])).await {
                Err(_) => return Err("handshake_timeout".into()),
                Ok(Err(e)) => return Err(format!("handshake_io_{:?}", e.kind()).to_lowercase()),
                Ok(Ok(0)) => return Err("handshake_closed".into()),
                Ok(Ok(n)) => end += n,
            }
        };
        let head = std::str::from_utf8(&buf[..head_len]).map_err(|_| "handshake_not_utf8")?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        if status != 101 {
            return Err(format!("handshake_http_{status}"));
        }
        let want = derive_accept_key(key.as_bytes());
        if pmd::header_values(head, "Sec-WebSocket-Accept").next() != Some(want.as_str()) {
            return Err("handshake_bad_accept".into());
        }
        let answer = pmd::header_values(head, "Sec-WebSocket-Extensions")
            .collect::<Vec<_>>()
            .join(", ");
        let deflate = pmd::names_deflate(std::iter::once(answer.as_str()));
        let ws = RawWs {
            tcp,
            buf,
            start: head_len,
            end,
            wbuf: Vec::with_capacity(16 * 1024),
            msg: Vec::with_capacity(16 * 1024),
            keys: XorShift::new(seed),
            deflate,
        };
        Ok((ws, answer))
    }

    /// Write one masked frame holding a whole message; returns its bytes on the wire.
    async fn send(
        &mut self,
        opcode: u8,
        rsv1: bool,
        payload: &[u8],
        deadline: Instant,
    ) -> Result<usize, String> {
        let key = self.keys.next().to_le_bytes();
        let key = [key[0], key[1], key[2], key[3]];
        self.wbuf.clear();
        pmd::write_head(&mut self.wbuf, true, rsv1, opcode, payload.len(), Some(key));
        let at = self.wbuf.len();
        self.wbuf.extend_from_slice(payload);
        pmd::apply_mask(&mut self.wbuf[at..], key);
        match timeout_at(deadline, self.tcp.write_all(&self.wbuf)).await {
            Err(_) => Err("send_timeout".into()),
            Ok(Err(e)) => Err(format!("send_io_{:?}", e.kind()).to_lowercase()),
            Ok(Ok(())) => Ok(self.wbuf.len()),
        }
    }

    /// The next whole frame in the buffer, reading more as needed.
    async fn next_frame(&mut self, deadline: Instant) -> Result<Head, String> {
        for _ in 0..1_000_000 {
            match pmd::parse_head(&self.buf[self.start..self.end], MAX_MESSAGE) {
                Err(e) => return Err(frame_error("echo", e)),
                Ok(Some(h)) if self.end - self.start >= h.frame_len() => {
                    if h.mask.is_some() {
                        return Err("echo_masked_frame".into());
                    }
                    return Ok(h);
                }
                Ok(_) => {}
            }
            // Room for more: a partial frame moves to the front, a long one grows the buffer.
            if self.start == self.end {
                (self.start, self.end) = (0, 0);
            } else if self.end == self.buf.len() && self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            }
            if self.end == self.buf.len() {
                let n = (self.buf.len() * 2).min(MAX_MESSAGE + 14);
                if n == self.buf.len() {
                    return Err("echo_frame_too_long".into());
                }
                self.buf.resize(n, 0);
            }
            match timeout_at(deadline, self.tcp.read(&mut self.buf[self.end..])).await {
                Err(_) => return Err("echo_timeout".into()),
                Ok(Err(e)) => return Err(format!("echo_io_{:?}", e.kind()).to_lowercase()),
                Ok(Ok(0)) => return Err("echo_closed".into()),
                Ok(Ok(n)) => self.end += n,
            }
        }
        Err("echo_too_many_reads".into())
    }

    /// The next data message or Close (payload in `self.msg`); pings are answered with a
    /// pong and skipped, pongs skipped. Fragments are joined.
    async fn recv(&mut self, deadline: Instant) -> Result<Incoming, String> {
        self.msg.clear();
        let mut first: Option<(u8, bool)> = None;
        let mut wire = 0usize;
        for _ in 0..1_000_000 {
            let h = self.next_frame(deadline).await?;
            let payload = self.start + h.header_len..self.start + h.frame_len();
            self.start += h.frame_len();
            match h.opcode {
                pmd::OP_PING => {
                    let mut p = [0u8; 125];
                    let n = payload.len();
                    p[..n].copy_from_slice(&self.buf[payload]);
                    self.send(pmd::OP_PONG, false, &p[..n], deadline).await?;
                    continue;
                }
                pmd::OP_PONG => continue,
                pmd::OP_CLOSE => {
                    self.msg.extend_from_slice(&self.buf[payload]);
                    return Ok(Incoming {
                        opcode: pmd::OP_CLOSE,
                        rsv1: false,
                        wire: h.frame_len(),
                    });
                }
                pmd::OP_CONTINUATION if first.is_none() || h.rsv1 => {
                    return Err("echo_bad_continuation".into());
                }
                pmd::OP_CONTINUATION => {}
                _ if first.is_some() => return Err("echo_interleaved_message".into()),
                op => first = Some((op, h.rsv1)),
            }
            self.msg.extend_from_slice(&self.buf[payload]);
            wire += h.frame_len();
            if self.msg.len() > MAX_MESSAGE {
                return Err("echo_message_too_long".into());
            }
            if h.fin
                && let Some((opcode, rsv1)) = first
            {
                return Ok(Incoming { opcode, rsv1, wire });
            }
        }
        Err("echo_too_many_frames".into())
    }

    /// Closing handshake: send Close (1000), read until the peer's Close, then until EOF.
    async fn close(mut self, t: Duration) -> Result<(), String> {
        let deadline = Instant::now() + t;
        self.send(pmd::OP_CLOSE, false, &1000u16.to_be_bytes(), deadline)
            .await
            .map_err(|e| format!("close_{e}"))?;
        for _ in 0..100_000 {
            match self.recv(deadline).await {
                Ok(m) if m.opcode == pmd::OP_CLOSE => {
                    // The server closes the TCP connection first (RFC 6455 §7.1.1).
                    let mut sink = [0u8; 4096];
                    for _ in 0..1000 {
                        match timeout_at(deadline, self.tcp.read(&mut sink)).await {
                            Err(_) => return Err("close_timeout".into()),
                            Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
                            Ok(Ok(_)) => {}
                        }
                    }
                    return Err("close_too_much_data".into());
                }
                Ok(_) => {}
                Err(e) if e == "echo_closed" => return Ok(()),
                Err(e) => return Err(format!("close_{e}")),
            }
        }
        Err("close_too_many_messages".into())
    }
}

// ---------------------------------------------------------------------------------------
// throughput-deflate

/// One distinct message: as sent without the extension, and its compressed payload.
struct Msg {
    plain: Vec<u8>,
    z: Vec<u8>,
}

/// Shared counters of the sessions, read at the start and end of the measured window.
#[derive(Default)]
struct Counts {
    /// Echoes received.
    msgs: AtomicU64,
    /// Bytes of the data frames sent whose echoes came back (headers and masks included).
    wire_sent: AtomicU64,
    /// Bytes of the echoed data frames received (headers included).
    wire_received: AtomicU64,
    /// Uncompressed bytes of the messages those echoes carry.
    payload: AtomicU64,
}

impl Counts {
    fn snapshot(&self) -> [u64; 4] {
        [
            self.msgs.load(Ordering::Relaxed),
            self.wire_sent.load(Ordering::Relaxed),
            self.wire_received.load(Ordering::Relaxed),
            self.payload.load(Ordering::Relaxed),
        ]
    }
}

/// The messages of a phase: `n` JSON-like messages of `size` bytes, each compressed and
/// checked to inflate back to itself.
fn messages(n: usize, size: usize) -> Result<Vec<Msg>, String> {
    (0..n)
        .map(|i| {
            let plain = json_message(i as u64, size);
            let z = deflate_message(&plain).map_err(|e| format!("deflate_{:?}", e.kind()))?;
            if inflate_message(&z, MAX_MESSAGE)? != plain {
                return Err("deflate_round_trip".into());
            }
            Ok(Msg { plain, z })
        })
        .collect()
}

pub async fn throughput_deflate(a: TpzArgs) -> Value {
    let io_t = secs(a.common.io_timeout);
    let errors = Arc::new(Errors::default());
    let procs = Procs::new(&a.common);
    let size = a.size.max(64);
    let msgs = match messages(a.messages.clamp(1, 4096), size) {
        Ok(m) => Arc::new(m),
        Err(e) => {
            errors.add(e);
            let (ej, et) = errors.to_json();
            return json!({ "phase": "throughput_deflate", "url": a.common.url,
                           "errors": ej, "errors_total": et });
        }
    };
    let z_mean = msgs.iter().map(|m| m.z.len()).sum::<usize>() as f64 / msgs.len() as f64;

    // Open the sessions, at most `connect_concurrency` attempts at a time.
    let seed = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let open_deadline = Instant::now() + io_t + Duration::from_secs(10);
    let mut sessions: Vec<RawWs> = Vec::with_capacity(a.sessions);
    let mut answer: Option<String> = None;
    {
        let url = a.common.url.as_str();
        let mut s = futures_util::stream::iter(0..a.sessions)
            .map(|i| RawWs::connect(url, io_t, seed ^ i as u64))
            .buffer_unordered(a.connect_concurrency.max(1));
        loop {
            match timeout_at(open_deadline, s.next()).await {
                Err(_) => {
                    errors.add("open_deadline");
                    break;
                }
                Ok(None) => break,
                Ok(Some(Ok((ws, ans)))) => {
                    answer.get_or_insert(ans);
                    sessions.push(ws);
                }
                Ok(Some(Err(e))) => errors.add(e),
            }
        }
    }
    let opened = sessions.len();
    let negotiated = sessions.iter().filter(|s| s.deflate).count();

    let counts = Arc::new(Counts::default());
    let inflated = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let hard_deadline =
        Instant::now() + secs(a.warmup + a.duration) + io_t * 2 + Duration::from_secs(5);
    let mut handles = Vec::with_capacity(opened);
    for (i, ws) in sessions.into_iter().enumerate() {
        let s = Session {
            msgs: msgs.clone(),
            first: i,
            stop: stop.clone(),
            counts: counts.clone(),
            inflated: inflated.clone(),
            errors: errors.clone(),
            io_t,
            hard_deadline,
        };
        handles.push(tokio::spawn(s.run(ws)));
    }
    let m_start = Instant::now() + secs(a.warmup);
    let load = tokio::spawn(watch_load(
        procs.clone(),
        m_start,
        m_start + secs(a.duration),
    ));
    tokio::time::sleep_until(m_start).await;
    let (c0, cpu0, h0, t0) = (
        counts.snapshot(),
        procs.cpu_seconds(),
        procs.harness_cpu_seconds(),
        Instant::now(),
    );
    sleep(secs(a.duration)).await;
    let (c1, cpu1, h1, t1) = (
        counts.snapshot(),
        procs.cpu_seconds(),
        procs.harness_cpu_seconds(),
        Instant::now(),
    );
    stop.store(true, Ordering::Relaxed);
    let (foreign, foreign_peak) = join_load(load).await;
    join_all_bounded(handles, hard_deadline, &errors).await;

    let elapsed = (t1 - t0).as_secs_f64();
    let [n, wire_sent, wire_received, payload] = [0, 1, 2, 3].map(|i| c1[i].saturating_sub(c0[i]));
    let rate = (opened > 0 && elapsed > 0.0).then(|| (n as f64 / elapsed).round());
    let cpu = cpu0.zip(cpu1).map(|(x, y)| y - x);
    let per_payload =
        |w: u64| (payload > 0).then(|| (w as f64 / payload as f64 * 1e4).round() / 1e4);
    let (ej, et) = errors.to_json();
    json!({
        "phase": "throughput_deflate",
        "url": a.common.url,
        "size_bytes": size,
        "distinct_messages": msgs.len(),
        "compressed_mean_bytes": round2(z_mean),
        "extension_offered": pmd::DEFLATE_NO_TAKEOVER,
        "extension_answer": answer,
        "sessions_requested": a.sessions,
        "sessions_open": opened,
        "sessions_deflate": negotiated,
        "window": 1,
        "warmup_s": a.warmup,
        "measured_s": (elapsed * 1000.0).round() / 1000.0,
        "messages": n,
        "msgs_per_s": rate,
        "cpu_s": cpu.map(|c| (c * 1000.0).round() / 1000.0),
        "cpu_s_per_million": cpu.filter(|_| n > 0).map(|c| round2(c / (n as f64 / 1e6))),
        "target_cpu_cores": cpu.filter(|_| elapsed > 0.0).map(|c| round2(c / elapsed)),
        "harness_cpu_cores": (elapsed > 0.0).then(|| round2((h1 - h0) / elapsed)),
        "wire_bytes_sent": wire_sent,
        "wire_bytes_received": wire_received,
        "payload_bytes": payload,
        // The headline: what the target delivered to the client per byte of message.
        "wire_per_payload": per_payload(wire_received),
        "wire_per_payload_sent": per_payload(wire_sent),
        "inflate_checks": inflated.load(Ordering::Relaxed),
        "foreign_cpu_cores": foreign,
        "foreign_cpu_cores_peak": foreign_peak,
        "pids": expand_pids(&procs.roots),
        "errors": ej,
        "errors_total": et,
    })
}

/// What one session of `throughput-deflate` needs besides its connection.
struct Session {
    msgs: Arc<Vec<Msg>>,
    /// The message it starts with.
    first: usize,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    inflated: Arc<AtomicU64>,
    errors: Arc<Errors>,
    io_t: Duration,
    hard_deadline: Instant,
}

impl Session {
    /// Send, await the echo, repeat (window 1) until told to stop; then close. An echo must
    /// come back as sent: a text message, compressed if the extension was negotiated, its
    /// payload byte for byte what was sent. The first compressed echo is also inflated and
    /// compared with the plain message, end to end; the others need no inflating, since
    /// each distinct payload was checked to inflate to its message before the start.
    async fn run(self, mut ws: RawWs) {
        let n = self.msgs.len();
        let mut i = self.first % n;
        let mut checked = false;
        while !self.stop.load(Ordering::Relaxed) {
            if Instant::now() > self.hard_deadline {
                self.errors.add("session_deadline");
                return;
            }
            let m = &self.msgs[i];
            let (body, rsv1) = if ws.deflate {
                (&m.z, true)
            } else {
                (&m.plain, false)
            };
            let deadline = Instant::now() + self.io_t;
            let sent = match ws.send(pmd::OP_TEXT, rsv1, body, deadline).await {
                Ok(s) => s,
                Err(e) => return self.errors.add(e),
            };
            let echo = match ws.recv(deadline).await {
                Ok(e) if e.opcode == pmd::OP_CLOSE => return self.errors.add("echo_close_frame"),
                Ok(e) => e,
                Err(e) => return self.errors.add(e),
            };
            if echo.opcode != pmd::OP_TEXT {
                self.errors.add("echo_not_text");
            } else if echo.rsv1 != rsv1 {
                self.errors.add(if rsv1 {
                    "echo_not_compressed"
                } else {
                    "echo_compressed_unasked"
                });
            } else if ws.msg != *body {
                self.errors.add("echo_mismatch");
            } else if rsv1 && !checked {
                checked = true;
                self.inflated.fetch_add(1, Ordering::Relaxed);
                if inflate_message(&ws.msg, MAX_MESSAGE).ok().as_ref() != Some(&m.plain) {
                    self.errors.add("echo_inflate_mismatch");
                }
            }
            let c = &self.counts;
            c.msgs.fetch_add(1, Ordering::Relaxed);
            c.wire_sent.fetch_add(sent as u64, Ordering::Relaxed);
            c.wire_received
                .fetch_add(echo.wire as u64, Ordering::Relaxed);
            c.payload.fetch_add(m.plain.len() as u64, Ordering::Relaxed);
            i = (i + 1) % n;
        }
        if let Err(e) = ws.close(self.io_t).await {
            self.errors.add(e);
        }
    }
}

// ---------------------------------------------------------------------------------------
// the line in the report

/// The compressed-traffic line of the report (`wsbench report-line --line deflate`).
pub const LINE: Line = Line {
    title: "Compressed traffic: permessage-deflate",
    phases: &[("tpz", "4 KiB deflate")],
    others: &["nginx", "haproxy"],
    figures: &[
        Figure {
            key: "throughput_4k_deflate",
            phase: "tpz",
            field: "msgs_per_s",
            higher_is_better: true,
            column: "msg/s 4 KiB deflate",
            decimals: 0,
        },
        Figure {
            key: "cpu_s_per_million_deflate",
            phase: "tpz",
            field: "cpu_s_per_million",
            higher_is_better: false,
            column: "CPU s per 1M msgs",
            decimals: 2,
        },
        Figure {
            key: "wire_per_payload_deflate",
            phase: "tpz",
            field: "wire_per_payload",
            higher_is_better: false,
            column: "wire/payload",
            decimals: 3,
        },
    ],
    about: |n| {
        let n = |f: &str| n("tpz", f);
        let mut s = format!(
            "- msg/s 4 KiB deflate: {} sessions, window 1 (as the 16 KiB line): each sends a {}-byte JSON-like text message compressed with permessage-deflate (RSV1 set; `{}` offered by the load generator and answered by the echo, `wsbench-echo --deflate`, which sends every frame back as it came) and waits for its echo. {} distinct messages, each compressed once before the clock starts, {} bytes compressed on average. Counts echoed round trips per second.\n",
            n("sessions_requested"),
            n("size_bytes"),
            pmd::DEFLATE_NO_TAKEOVER,
            n("distinct_messages"),
            n("compressed_mean_bytes"),
        );
        s.push_str("- CPU s per 1M msgs: the proxy's utime+stime over the same window, per million round trips. wire/payload: bytes of the echoed data frames the load generator received, headers included, divided by the uncompressed size of the messages they carry: what crosses the client's connection per byte of message (a proxy that inflated would show about 1).\n");
        s
    },
    notes: |v| {
        let f = |k: &str| v.get(k).and_then(Value::as_f64);
        match (f("sessions_open"), f("sessions_deflate")) {
            (Some(open), Some(z)) if z < open => vec![format!(
                "permessage-deflate negotiated on {z} of {open} sessions (answer: {})",
                v.get("extension_answer")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .unwrap_or("none")
            )],
            _ => Vec::new(),
        }
    },
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_json_of_the_asked_size_and_compress() {
        for (seed, size) in [(0u64, 4096usize), (7, 4096), (3, 64), (1, 16384)] {
            let m = json_message(seed, size);
            assert_eq!(m.len(), size, "seed {seed}");
            let v: Value = serde_json::from_slice(&m).expect("valid JSON");
            assert_eq!(v["seq"], json!(seed));
        }
        assert_ne!(json_message(1, 4096), json_message(2, 4096));
        assert_eq!(json_message(5, 4096), json_message(5, 4096));
        let z = deflate_message(&json_message(0, 4096)).unwrap();
        // JSON-like traffic shrinks by well over half; not to nothing (random ids).
        assert!(z.len() < 4096 / 2 && z.len() > 4096 / 10, "{}", z.len());
    }

    #[test]
    fn compression_follows_rfc_7692() {
        // §7.2.3.1: "Hello" compressed with no context takeover, as the RFC gives it.
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate_message(&hello, 100).unwrap(), b"Hello");
        // §7.2.3.3: the same message in an uncompressed (stored) block.
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(inflate_message(&stored, 100).unwrap(), b"Hello");
        // Ours: the trailing 00 00 ff ff removed, and each message inflates on its own,
        // with a fresh context, to what was compressed.
        let z = deflate_message(b"Hello").unwrap();
        assert!(!z.ends_with(&SYNC_TAIL));
        assert_eq!(inflate_message(&z, 100).unwrap(), b"Hello");
        assert_eq!(z, deflate_message(b"Hello").unwrap());
        for m in messages(8, 4096).unwrap() {
            assert_eq!(inflate_message(&m.z, MAX_MESSAGE).unwrap(), m.plain);
        }
        let empty = deflate_message(b"").unwrap();
        assert_eq!(inflate_message(&empty, 100).unwrap(), b"");
        // Not deflate, or more than allowed.
        assert!(inflate_message(&[0xff, 0xff, 0xff], 100).is_err());
        let big = deflate_message(&[b'a'; 10_000]).unwrap();
        assert_eq!(inflate_message(&big, 100), Err("inflate_too_long".into()));
    }

    #[test]
    fn the_compressed_frame_is_what_the_rfc_sends() {
        // §7.2.3.1 as a frame: text, FIN and RSV1 set, unmasked, 7 bytes.
        let z = deflate_message(b"Hello").unwrap();
        let mut f = Vec::new();
        pmd::write_head(&mut f, true, true, pmd::OP_TEXT, z.len(), None);
        f.extend_from_slice(&z);
        assert_eq!(&f[..2], &[0xc1, z.len() as u8]);
        let h = pmd::parse_head(&f, 1 << 20).unwrap().unwrap();
        assert!(h.rsv1 && h.fin && h.opcode == pmd::OP_TEXT);
        assert_eq!(
            inflate_message(&f[h.header_len..h.frame_len()], 100).unwrap(),
            b"Hello"
        );
    }

    /// The client and the echo's `--deflate` mode end to end, over loopback: a tiny
    /// permessage-deflate echo written here from the same helpers.
    #[tokio::test]
    async fn raw_client_round_trip_against_a_mirror() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 65536];
            let mut end = 0;
            let n = loop {
                end += s.read(&mut buf[end..]).await.unwrap();
                if let Some(n) = pmd::head_end(&buf[..end]) {
                    break n;
                }
            };
            let head = std::str::from_utf8(&buf[..n]).unwrap().to_string();
            let key = pmd::header_values(&head, "sec-websocket-key")
                .next()
                .unwrap();
            assert!(pmd::names_deflate(pmd::header_values(
                &head,
                "Sec-WebSocket-Extensions"
            )));
            let resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Extensions: {}\r\n\r\n",
                derive_accept_key(key.as_bytes()),
                pmd::DEFLATE_NO_TAKEOVER
            );
            // A ping first, to be answered, then a mirror of each frame until Close.
            let mut out = resp.into_bytes();
            pmd::write_head(&mut out, true, false, pmd::OP_PING, 2, None);
            out.extend_from_slice(b"hi");
            s.write_all(&out).await.unwrap();
            let (mut start, mut pongs) = (n, 0);
            loop {
                match pmd::parse_head(&buf[start..end], 1 << 20).unwrap() {
                    Some(h) if end - start >= h.frame_len() => {
                        let key = h.mask.unwrap();
                        let p = &mut buf[start + h.header_len..start + h.frame_len()];
                        pmd::apply_mask(p, key);
                        let mut o = Vec::new();
                        if h.opcode == pmd::OP_PONG {
                            assert_eq!(p, b"hi");
                            pongs += 1;
                        } else {
                            pmd::write_head(&mut o, h.fin, h.rsv1, h.opcode, h.len, None);
                            o.extend_from_slice(p);
                            s.write_all(&o).await.unwrap();
                        }
                        start += h.frame_len();
                        if h.opcode == pmd::OP_CLOSE {
                            return pongs;
                        }
                    }
                    _ => {
                        let r = s.read(&mut buf[end..]).await.unwrap();
                        assert!(r > 0);
                        end += r;
                    }
                }
            }
        });
        let url = format!("ws://{addr}/");
        let t = Duration::from_secs(5);
        let (mut ws, answer) = RawWs::connect(&url, t, 1).await.unwrap();
        assert!(ws.deflate, "{answer}");
        let msgs = messages(3, 4096).unwrap();
        for m in &msgs {
            let sent = ws
                .send(pmd::OP_TEXT, true, &m.z, Instant::now() + t)
                .await
                .unwrap();
            assert_eq!(sent, m.z.len() + 4 + 4); // 2-byte header, 16-bit length, mask
            let e = ws.recv(Instant::now() + t).await.unwrap();
            assert!(e.rsv1 && e.opcode == pmd::OP_TEXT);
            assert_eq!(e.wire, m.z.len() + 4); // unmasked
            assert_eq!(ws.msg, m.z);
            assert_eq!(inflate_message(&ws.msg, MAX_MESSAGE).unwrap(), m.plain);
        }
        ws.close(t).await.unwrap();
        assert_eq!(server.await.unwrap(), 1);
    }
}
