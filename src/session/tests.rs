//! The session's close table, close timeout, backpressure and drain
//! spread, over in-memory pipes with tokio-tungstenite peers, under paused
//! time: virtual seconds cost nothing and no margin is a wall-clock guess.

use std::sync::atomic::AtomicUsize;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role as PeerRole};

use super::*;
use crate::closure::Side;
use crate::protocol::{Role, encode_frame, opcode};
use crate::record::SessionInfo;
use crate::ws::Limits;

type Peer = WebSocketStream<DuplexStream>;

const LIMITS: Limits = Limits {
    max_message_size: 64 * 1024,
    max_frame_size: 16 * 1024,
};

fn config() -> SessionConfig {
    SessionConfig {
        keepalive_interval: Duration::ZERO,
        keepalive_timeout: Duration::from_secs(10),
        shutdown_close_code: 1012,
        close_timeout: CLOSE_TIMEOUT,
    }
}

/// A session over two pipes: the raw peer ends, the running session.
struct Rig {
    client: DuplexStream,
    upstream: DuplexStream,
    run: JoinHandle<Closure>,
    metrics: Metrics,
}

fn rig_with(config: SessionConfig, drain: Drain, pipe: usize) -> Rig {
    let metrics = Metrics::standalone(&[], 16).unwrap();
    let (c_proxy, client) = tokio::io::duplex(pipe);
    let (u_proxy, upstream) = tokio::io::duplex(pipe);
    let guard = metrics.open_session(metrics.route(None), SessionInfo::default());
    let session = Session::new(
        Box::new(WsStream::new(c_proxy, Role::Server, LIMITS, &[])),
        Box::new(WsStream::new(u_proxy, Role::Client, LIMITS, &[])),
        config,
        drain,
        metrics.clone(),
        guard,
    );
    Rig {
        client,
        upstream,
        run: tokio::spawn(session.run()),
        metrics,
    }
}

fn rig() -> Rig {
    rig_with(config(), Drain::new(Duration::ZERO), 64 * 1024)
}

async fn peer(pipe: DuplexStream, role: PeerRole) -> Peer {
    WebSocketStream::from_raw_socket(pipe, role, None).await
}

/// Both ends as tungstenite peers.
async fn peers(r: Rig) -> (Peer, Peer, JoinHandle<Closure>, Metrics) {
    let c = peer(r.client, PeerRole::Client).await;
    let u = peer(r.upstream, PeerRole::Server).await;
    (c, u, r.run, r.metrics)
}

/// The Close a peer reads next (skipping data), as (code, reason), 1005
/// for an empty one; `None` if the stream ends without one.
async fn close_of(p: &mut Peer) -> Option<(u16, String)> {
    while let Some(m) = p.next().await {
        if let Ok(Message::Close(f)) = m {
            return Some(f.map_or((1005, String::new()), |f| {
                (u16::from(f.code), f.reason.to_string())
            }));
        }
    }
    None
}

/// The next frame the proxy sends a client, read raw (a server's frames
/// are unmasked), as a Close's (code, reason). Raw because tungstenite
/// still refuses 1014 and would turn it into its own 1002.
async fn raw_close(pipe: &mut DuplexStream) -> (u16, String) {
    let mut head = [0u8; 2];
    pipe.read_exact(&mut head).await.unwrap();
    assert_eq!(head[0], 0x88, "a Close frame");
    let mut payload = vec![0u8; usize::from(head[1] & 0x7f)];
    pipe.read_exact(&mut payload).await.unwrap();
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    (code, String::from_utf8(payload[2..].to_vec()).unwrap())
}

fn labels(c: Closure) -> (u16, Side, &'static str) {
    (c.code, c.side, c.cause.as_str())
}

/// Row 1 of the close table: a Close frame goes on with its code and
/// reason, the sender's leg gets its echo, and the session ends once both
/// handshakes are done.
#[tokio::test(start_paused = true)]
async fn a_close_frame_is_forwarded_with_its_code_and_reason() {
    let (mut c, mut u, run, _) = peers(rig()).await;
    c.send(Message::text("hi")).await.unwrap();
    assert_eq!(u.next().await.unwrap().unwrap(), Message::text("hi"));
    c.close(Some(CloseFrame {
        code: CloseCode::Library(4001),
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    assert_eq!(close_of(&mut u).await, Some((4001, "bye".into())));
    assert_eq!(close_of(&mut c).await, Some((4001, "bye".into())), "echo");
    drop((c, u));
    let closure = run.await.unwrap();
    assert_eq!(labels(closure), (4001, Side::Client, "close_frame"));
}

/// Row 2: a leg that ends without a Close is dropped; the other peer gets
/// 1014 (toward the client) or 1001 (toward the upstream).
#[tokio::test(start_paused = true)]
async fn eof_gets_the_other_leg_going_away() {
    let mut r = rig();
    drop(r.upstream);
    let (code, reason) = raw_close(&mut r.client).await;
    assert_eq!(code, 1014);
    assert_eq!(reason, "wspulse: upstream went away");
    drop(r.client);
    assert_eq!(labels(r.run.await.unwrap()), (1006, Side::Upstream, "eof"));

    let r = rig();
    let mut u = peer(r.upstream, PeerRole::Server).await;
    drop(r.client);
    assert_eq!(close_of(&mut u).await.unwrap().0, 1001);
    drop(u);
    assert_eq!(labels(r.run.await.unwrap()), (1006, Side::Client, "eof"));
}

/// Rows 4 and 5: the offender is told the code it earned, the other peer
/// gets going-away, and the closure names the offender.
#[tokio::test(start_paused = true)]
async fn violations_earn_their_code_and_the_other_leg_goes_away() {
    for (frame, code, cause) in [
        // Unmasked from a client.
        (
            encode_frame(true, opcode::TEXT, b"x", None),
            1002,
            "protocol_error",
        ),
        // Bad UTF-8.
        (
            encode_frame(true, opcode::TEXT, &[0xff], Some([1, 2, 3, 4])),
            1007,
            "protocol_error",
        ),
        // A frame over max_frame_size, refused on its header.
        (
            encode_frame(
                true,
                opcode::BINARY,
                &vec![0; 16 * 1024 + 1],
                Some([1, 2, 3, 4]),
            ),
            1009,
            "message_too_big",
        ),
    ] {
        let r = rig();
        let mut client = r.client;
        let mut u = peer(r.upstream, PeerRole::Server).await;
        let _ = client.write_all(&frame).await;
        assert_eq!(raw_close(&mut client).await.0, code, "the offender's Close");
        assert_eq!(close_of(&mut u).await.unwrap().0, 1001);
        drop((client, u));
        assert_eq!(labels(r.run.await.unwrap()), (code, Side::Client, cause));
    }
}

/// A peer that never answers our Close is given `close_timeout`, in
/// virtual time, and no longer.
#[tokio::test(start_paused = true)]
async fn the_closing_handshake_is_bounded_by_the_close_timeout() {
    let r = rig();
    let mut c = peer(r.client, PeerRole::Client).await;
    // The upstream's end stays open and silent: it never echoes.
    let _silent_upstream = r.upstream;
    let started = Instant::now();
    c.close(None).await.unwrap();
    let closure = r.run.await.unwrap();
    assert_eq!(labels(closure), (1005, Side::Client, "close_frame"));
    assert_eq!(started.elapsed(), CLOSE_TIMEOUT);
}

/// A reader that stops reading slows its writer down: the session stops
/// reading the writer's leg (its pipe fills and the writer blocks) instead
/// of buffering without bound, and every message arrives, in order, once
/// the reader reads again.
#[tokio::test(start_paused = true)]
async fn a_slow_reader_pushes_back_on_the_writer() {
    let r = rig_with(config(), Drain::new(Duration::ZERO), 16 * 1024);
    let (mut c, mut u, run, _) = peers(r).await;
    let payload = vec![7u8; 1000];
    let mut sent = 0u32;
    // Write until the writes stop completing: the upstream reads nothing.
    loop {
        let mut msg = payload.clone();
        msg[..4].copy_from_slice(&sent.to_be_bytes());
        let send = c.send(Message::binary(msg));
        match tokio::time::timeout(Duration::from_secs(1), send).await {
            Ok(r) => r.unwrap(),
            Err(_) => break,
        }
        sent += 1;
        assert!(sent < 1000, "the writer was never held back");
    }
    // Two 16 KiB pipes and the session's bounded write buffer: well under
    // a hundred 1 KB messages, not the thousand a growing buffer takes.
    assert!(sent < 100, "{sent} messages went before the push back");
    let reader = tokio::spawn(async move {
        for i in 0..sent {
            let m = u.next().await.unwrap().unwrap().into_data();
            assert_eq!(m[..4], i.to_be_bytes(), "in order");
        }
        u
    });
    let mut u = reader.await.unwrap();
    c.close(None).await.unwrap();
    assert_eq!(close_of(&mut u).await, Some((1005, String::new())));
    drop((c, u));
    assert_eq!(
        labels(run.await.unwrap()),
        (1005, Side::Client, "close_frame")
    );
}

/// A drain spreads the sessions' Closes over `shutdown.spread`: session i
/// of N sends its Close after spread × i / N, the client gets
/// `shutdown.close_code`, the upstream 1001, and each ends as
/// `close_code/proxy/shutdown`.
#[tokio::test(start_paused = true)]
async fn a_drain_spreads_the_closes_over_the_spread() {
    let drain = Drain::new(Duration::from_secs(10));
    let mut clients = Vec::new();
    let mut runs = Vec::new();
    for _ in 0..4 {
        let r = rig_with(config(), drain.clone(), 64 * 1024);
        let mut u = peer(r.upstream, PeerRole::Server).await;
        tokio::spawn(async move { close_of(&mut u).await });
        clients.push(peer(r.client, PeerRole::Client).await);
        runs.push(r.run);
    }
    let started = Instant::now();
    drain.start(4);
    let mut times = Vec::new();
    for mut c in clients {
        times.push(tokio::spawn(async move {
            let close = close_of(&mut c).await;
            (close, started.elapsed())
        }));
    }
    let mut at = Vec::new();
    for t in times {
        let (close, elapsed) = t.await.unwrap();
        assert_eq!(close.unwrap().0, 1012);
        at.push(elapsed.as_millis());
    }
    at.sort_unstable();
    assert_eq!(at, [0, 2500, 5000, 7500]);
    for run in runs {
        assert_eq!(labels(run.await.unwrap()), (1012, Side::Proxy, "shutdown"));
    }
}

struct Task(AtomicUsize);

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn each_source_wakes_the_task_and_says_which_it_was() {
    let wakes = Wakes::new();
    let task = Arc::new(Task(AtomicUsize::new(0)));
    let waker = Waker::from(task.clone());
    let cx = Context::from_waker(&waker);
    assert_eq!(wakes.take(&cx), 0);
    wakes.upstream.wake_by_ref();
    assert_eq!(task.0.load(Ordering::SeqCst), 1);
    // By value, as the timer wheel wakes.
    let timers = wakes.timers.clone();
    timers.wake();
    assert_eq!(wakes.take(&cx), Wakes::UPSTREAM | Wakes::TIMERS);
    assert_eq!(wakes.take(&cx), 0, "taking clears the flags");
    wakes.client.wake_by_ref();
    assert_eq!(
        task.0.load(Ordering::SeqCst),
        2,
        "take registered the task again"
    );
    assert_eq!(wakes.take(&cx), Wakes::CLIENT);
}
