//! Fuzz the relay: arbitrary bytes, as a client after a valid handshake
//! and/or as an upstream, go into a real [`wspulse::session::Session`]
//! over in-memory pipes, so the relay's own frame parser (`wspulse::ws`) and the session's
//! closure handling see exactly what a hostile peer could send.
//!
//! Input: `[flags, ext, payload...]`; `ext` bit 0: permessage-deflate was
//! negotiated on both legs (RSV1 then marks a compressed message, allowed on
//! a data message's first frame only).
//!
//! | flags bits | meaning                                                     |
//! |------------|-------------------------------------------------------------|
//! | 0          | the fuzzed leg: 0 client, 1 upstream                        |
//! | 1          | both legs fuzzed (payload split in half; bit 0 ignored)     |
//! | 2          | keepalive on (1 s interval, 1 s timeout)                    |
//! | 3          | the fuzzed peer keeps its socket open 30 s after its bytes  |
//! | 4          | a drain (shutdown) starts once the bytes are written        |
//! | 5–7        | write chunk size: 1, 2, 7, 64, 512, 4096, 65536, all        |
//!
//! The other leg is a well-behaved tokio-tungstenite peer that sends one
//! message and reads until the end. Time is paused (tokio test-util), so
//! close and keepalive timeouts cost nothing.
//!
//! Checked after every input: no panic anywhere; the session ends (a
//! session still running after 600 virtual seconds is a hang); exactly one
//! session was counted open and one closed, none active
//! (`opened == sum(closed) + active`); the code label is in 1000..=4999;
//! and a session whose only misbehaving peer is one leg is never blamed on
//! the other.
#![no_main]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role as PeerRole;
use wspulse::closure::Side;
use wspulse::config::Settings;
use wspulse::metrics::Metrics;
use wspulse::protocol::opcode::{CLOSE, PING, PONG, TEXT};
use wspulse::protocol::{Role, encode_frame};
use wspulse::record::SessionInfo;
use wspulse::session::{CLOSE_TIMEOUT, Session, SessionConfig};
use wspulse::shutdown::Drain;
use wspulse::ws::WsStream;

/// `WSPULSE_FUZZ_VERBOSE=1`: print how each input's session ended.
fn verbose() -> bool {
    static V: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *V.get_or_init(|| std::env::var_os("WSPULSE_FUZZ_VERBOSE").is_some())
}

const CHUNKS: [usize; 8] = [1, 2, 7, 64, 512, 4096, 65536, usize::MAX];

fuzz_target!(|data: &[u8]| {
    let [flags, ext, payload @ ..] = data else {
        return;
    };
    let (flags, deflate) = (*flags, ext & 1 != 0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(one_session(flags, deflate, payload));
});

/// Write `bytes` into a leg in chunks, then hold or end; read (and drop)
/// whatever the proxy sends back until it closes.
async fn hostile_peer(pipe: DuplexStream, bytes: Vec<u8>, chunk: usize, hold: bool) {
    let (mut r, mut w) = tokio::io::split(pipe);
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    for part in bytes.chunks(chunk.max(1)) {
        if w.write_all(part).await.is_err() {
            break;
        }
        tokio::task::yield_now().await;
    }
    if hold {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    let _ = w.shutdown().await;
    drop(w);
    let _ = reader.await;
}

/// A correct peer: one message, then read until the proxy ends the leg
/// (tungstenite answers pings and Close by itself while reading).
async fn good_peer(pipe: DuplexStream, role: PeerRole) {
    let mut ws = WebSocketStream::from_raw_socket(pipe, role, None).await;
    let _ = ws.send(Message::text("hello from the good peer")).await;
    while let Some(Ok(_)) = ws.next().await {}
}

/// A correct peer of a session that negotiated permessage-deflate: one
/// message, then it reads what comes until the proxy ends the leg,
/// answering Pings and the Close as any peer does. tungstenite cannot
/// inflate, so it would refuse the compressed frames the proxy rightly
/// relays; this peer takes them as a deflating peer would (it never looks
/// inside a data frame).
async fn lenient_peer(mut pipe: DuplexStream, role: PeerRole) {
    let mask = (role == PeerRole::Client).then_some([9, 8, 7, 6]);
    let hello = encode_frame(true, TEXT, b"hello from the good peer", mask);
    let _ = pipe.write_all(&hello).await;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 8192];
    loop {
        // Whole frames off the front of `buf`; the proxy's are unmasked
        // toward a client and masked toward an upstream.
        while let Some((op, payload, used)) = frame_at(&buf) {
            buf.drain(..used);
            let reply = match op {
                PING => Some(encode_frame(true, PONG, &payload, mask)),
                CLOSE => Some(encode_frame(true, CLOSE, &payload, mask)),
                _ => None,
            };
            if let Some(reply) = reply {
                let _ = pipe.write_all(&reply).await;
            }
        }
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The frame at the front of `buf`: opcode, unmasked payload, bytes used.
fn frame_at(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let (b0, b1) = (*buf.first()?, *buf.get(1)?);
    let (len, mut at) = match b1 & 0x7f {
        126 => (usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])), 4),
        127 => (usize::try_from(u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?)).ok()?, 10),
        n => (usize::from(n), 2),
    };
    let key = if b1 & 0x80 != 0 {
        let k: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(k)
    } else {
        None
    };
    let mut payload = buf.get(at..at.checked_add(len)?)?.to_vec();
    if let Some(k) = key {
        payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= k[i % 4]);
    }
    Some((b0 & 0x0f, payload, at + len))
}

async fn one_session(flags: u8, deflate: bool, payload: &[u8]) {
    let both = flags & 2 != 0;
    let fuzz_upstream = flags & 1 != 0;
    let keepalive = flags & 4 != 0;
    let hold = flags & 8 != 0;
    let drain_after = flags & 16 != 0;
    let chunk = CHUNKS[usize::from(flags >> 5)];

    let mut settings = Settings::default();
    settings.limits.max_message_size = 4096;
    settings.limits.max_frame_size = 1024;
    let limits = wspulse::listener::limits(&settings);
    let metrics = Metrics::standalone(&[], 0).unwrap();
    let drain = Drain::new(Duration::from_millis(10));

    let (c_proxy, c_peer) = tokio::io::duplex(16 * 1024);
    let (u_proxy, u_peer) = tokio::io::duplex(16 * 1024);
    // In-memory pipes are legs like any socket (`wspulse::conn::Conn`).
    let mut client = Box::new(WsStream::new(c_proxy, Role::Server, limits, &[]));
    let mut upstream = Box::new(WsStream::new(u_proxy, Role::Client, limits, &[]));
    client.set_deflate(deflate);
    upstream.set_deflate(deflate);
    let guard = metrics.open_session(metrics.route(None), SessionInfo::default());
    let config = SessionConfig {
        keepalive_interval: if keepalive {
            Duration::from_secs(1)
        } else {
            Duration::ZERO
        },
        keepalive_timeout: Duration::from_secs(1),
        shutdown_close_code: 1001,
        close_timeout: CLOSE_TIMEOUT,
    };
    let session = Session::new(
        client,
        upstream,
        config,
        drain.clone(),
        metrics.clone(),
        guard,
    );
    let run = tokio::spawn(session.run());

    let (client_bytes, upstream_bytes) = if both {
        let (a, b) = payload.split_at(payload.len() / 2);
        (Some(a.to_vec()), Some(b.to_vec()))
    } else if fuzz_upstream {
        (None, Some(payload.to_vec()))
    } else {
        (Some(payload.to_vec()), None)
    };
    let client_peer = match client_bytes.clone() {
        Some(b) => tokio::spawn(hostile_peer(c_peer, b, chunk, hold)),
        None if deflate => tokio::spawn(lenient_peer(c_peer, PeerRole::Client)),
        None => tokio::spawn(good_peer(c_peer, PeerRole::Client)),
    };
    let upstream_peer = match upstream_bytes.clone() {
        Some(b) => tokio::spawn(hostile_peer(u_peer, b, chunk, hold)),
        None if deflate => tokio::spawn(lenient_peer(u_peer, PeerRole::Server)),
        None => tokio::spawn(good_peer(u_peer, PeerRole::Server)),
    };
    if drain_after {
        // Let the bytes in first: every task is idle before time moves.
        tokio::time::sleep(Duration::from_millis(1)).await;
        drain.start(1);
        // The server cuts what is left at `shutdown.drain_timeout` (10 s by
        // default); without it a drain waits for peers that never answer.
        let cut = drain.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            cut.cut();
        });
    }

    let closure = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("session still running after 600 virtual seconds")
        .expect("session task panicked");
    tokio::time::timeout(Duration::from_secs(600), async {
        client_peer.await.expect("client peer panicked");
        upstream_peer.await.expect("upstream peer panicked");
    })
    .await
    .expect("a peer was never let go");

    if verbose() {
        eprintln!(
            "flags={flags:#04x} payload={}B -> code={} side={} cause={}",
            payload.len(),
            closure.code,
            closure.side.as_str(),
            closure.cause.as_str()
        );
    }
    assert!(
        (1000..=4999).contains(&closure.code),
        "unbounded code label {closure:?}"
    );
    if !both {
        let innocent = if fuzz_upstream {
            Side::Client
        } else {
            Side::Upstream
        };
        assert_ne!(
            closure.side, innocent,
            "blamed the well-behaved leg: {closure:?}"
        );
    }
    let text = metrics.encode();
    let sum = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    let opened = sum("wspulse_connections_opened_total");
    let closed = sum("wspulse_connections_closed_total");
    let active = sum("wspulse_connections_active");
    assert_eq!(
        (opened, closed, active),
        (1.0, 1.0, 0.0),
        "invariant: {closure:?}"
    );
}
