//! wsbench-tunnel: the least a proxy can do, as a reference row for the steady-load line
//! of bench/run (issue 29). It accepts a connection, connects to the upstream and copies
//! bytes both ways until either side closes: no HTTP, no WebSocket framing, no timers. A
//! WebSocket session passes through it because it never looks at the bytes.
//!
//! One thread and one `epoll` set (mio, edge-triggered, as tokio uses it) with no async
//! runtime on top: what it costs per message is the kernel's part of relaying (two
//! sockets, a read and a write per message, the wake-ups), which every proxy pays. Its
//! write pattern is wspulse's: whatever one read brought leaves in one write, so a
//! message that arrives whole leaves in one segment. `--split N` writes at most N bytes
//! per call instead (HAProxy's 16 KiB buffer splits a 16 KiB message in two writes),
//! for the experiments in bench/README.md.
//!
//! A prototype, not a product: writes to a full socket wait by yielding (the benchmark
//! never fills one), and a failed connection only closes that pair.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
// A plain clock read here (no runtime): tokio's Instant is std's outside a paused test.
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(
    name = "wsbench-tunnel",
    about = "Byte tunnel (epoll, one thread) for the wspulse benchmark"
)]
struct Cli {
    /// Address to listen on (port 0: the OS picks; the port is logged).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// The upstream to copy to.
    #[arg(long)]
    upstream: SocketAddr,
    /// Bytes read per call (wspulse's read buffer holds a 16 KiB frame whole).
    #[arg(long, default_value_t = 32 * 1024)]
    buffer: usize,
    /// Write at most this many bytes per call (0: all that one read brought).
    #[arg(long, default_value_t = 0)]
    split: usize,
    /// Register for writability too, as tokio registers every socket (edge-triggered
    /// EPOLLIN|EPOLLOUT|EPOLLRDHUP); by default readability only.
    #[arg(long)]
    writable_too: bool,
    /// Stop by itself after this many seconds.
    #[arg(long, default_value_t = 3600)]
    max_runtime_secs: u64,
}

const LISTENER: Token = Token(0);

/// Both sockets of one relayed connection; tokens 2·id (client) and 2·id+1 (upstream).
struct Pair {
    client: TcpStream,
    upstream: TcpStream,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(&cli) {
        eprintln!("wsbench-tunnel: {e}");
        std::process::exit(1);
    }
}

fn run(cli: &Cli) -> std::io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(cli.addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("wsbench-tunnel: listening on {}", listener.local_addr()?);
    let deadline = Instant::now() + Duration::from_secs(cli.max_runtime_secs);
    let mut pairs: HashMap<usize, Pair> = HashMap::new();
    let mut next_id = 1usize;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; cli.buffer.max(1)];
    let split = if cli.split == 0 {
        usize::MAX
    } else {
        cli.split
    };
    while Instant::now() < deadline {
        match poll.poll(&mut events, Some(Duration::from_secs(1))) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                let interest = match cli.writable_too {
                    true => Interest::READABLE | Interest::WRITABLE,
                    false => Interest::READABLE,
                };
                accept_all(
                    &listener,
                    &poll,
                    cli.upstream,
                    interest,
                    &mut pairs,
                    &mut next_id,
                );
                continue;
            }
            if !ev.is_readable() && !ev.is_read_closed() {
                continue; // writability alone: nothing waits to be written
            }
            let (id, from_client) = (ev.token().0 / 2, ev.token().0 % 2 == 0);
            let Some(p) = pairs.get_mut(&id) else {
                continue;
            };
            let (from, to) = match from_client {
                true => (&mut p.client, &mut p.upstream),
                false => (&mut p.upstream, &mut p.client),
            };
            if !relay(from, to, &mut buf, split, ev.is_read_closed()) {
                pairs.remove(&id); // dropping both sockets closes them
            }
        }
    }
    Ok(())
}

fn accept_all(
    listener: &TcpListener,
    poll: &Poll,
    upstream: SocketAddr,
    interest: Interest,
    pairs: &mut HashMap<usize, Pair>,
    next_id: &mut usize,
) {
    for _ in 0..10_000 {
        let Ok((mut client, _)) = listener.accept() else {
            return;
        };
        // A blocking connect, then non-blocking: the benchmark opens its sessions before
        // it measures, and loopback connects at once.
        let upstream = std::net::TcpStream::connect(upstream).and_then(|s| {
            s.set_nonblocking(true)?;
            s.set_nodelay(true)?;
            Ok(TcpStream::from_std(s))
        });
        let Ok(mut upstream) = upstream else {
            continue; // drops the client: it sees the connection close
        };
        let id = *next_id;
        *next_id += 1;
        let registered = client.set_nodelay(true).and_then(|()| {
            poll.registry()
                .register(&mut client, Token(2 * id), interest)?;
            poll.registry()
                .register(&mut upstream, Token(2 * id + 1), interest)
        });
        if registered.is_ok() {
            pairs.insert(id, Pair { client, upstream });
        }
    }
}

/// Copy what `from` has to `to` until `from` would block (edge-triggered: all of it).
/// `closed`: the event said the peer closed its side, so read on to the end of the
/// stream (its edge came with the last bytes and will not come again).
/// `false`: the pair is done (end of stream or an error on either side).
fn relay(
    from: &mut TcpStream,
    to: &mut TcpStream,
    buf: &mut [u8],
    split: usize,
    closed: bool,
) -> bool {
    for _ in 0..1_000_000 {
        let n = match from.read(buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        let mut off = 0;
        let mut spins = 0u32;
        while off < n {
            let end = off.saturating_add(split).min(n);
            match to.write(&buf[off..end]) {
                Ok(0) => return false,
                Ok(k) => off += k,
                Err(e) if e.kind() == ErrorKind::WouldBlock && spins < 1_000_000 => {
                    spins += 1;
                    std::thread::yield_now();
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        // A read that did not fill the buffer drained the socket (wspulse's rule too).
        if n < buf.len() && !closed {
            return true;
        }
    }
    true
}
