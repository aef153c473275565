//! wsbench-echo: the WebSocket echo upstream used for every target of bench/run.
//!
//! Every Text/Binary message is sent back unchanged on the same connection; pings are
//! answered by tungstenite; a Close is answered and the connection ends. Runs on a
//! single-threaded tokio runtime (bench/run pins it to core 0 next to the load generator).
//! Errors on one connection never affect the others, and never panic the process.
//!
//! With `--deflate` it serves bench/run's permessage-deflate line instead, on raw frames
//! (tungstenite refuses RSV1): it accepts a permessage-deflate offer with no context
//! takeover either way and mirrors every data frame back as it came, RSV1 included.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

mod pmd;

#[derive(Parser, Debug)]
#[command(
    name = "wsbench-echo",
    about = "WebSocket echo server for the wspulse benchmark"
)]
struct Cli {
    /// Address to listen on (loopback only in bench/run).
    #[arg(long, default_value = "127.0.0.1:9000")]
    addr: SocketAddr,
    /// Tokio worker threads; 1 = current-thread runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Stop by itself after this many seconds (0 = run until killed).
    #[arg(long, default_value_t = 0)]
    max_runtime_secs: u64,
    /// Read buffer per connection, bytes. tungstenite zero-fills the free part of it, up
    /// to this size, before every read, so it costs the echo's core in proportion; the
    /// default holds one whole 16 KiB frame, bench/run's largest message, in one read.
    #[arg(long, default_value_t = 20 * 1024)]
    read_buffer: usize,
    /// Serve the permessage-deflate line (see `handle_deflate`) instead of tungstenite's echo.
    #[arg(long)]
    deflate: bool,
}

fn main() {
    let cli = Cli::parse();
    let rt = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wsbench-echo: cannot build runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(serve(cli));
    std::process::exit(code);
}

async fn serve(cli: Cli) -> i32 {
    let listener = match bind(cli.addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("wsbench-echo: cannot listen on {}: {e}", cli.addr);
            return 1;
        }
    };
    // The bound address, so that a caller may pass port 0 and read the port from here.
    let bound = listener.local_addr().unwrap_or(cli.addr);
    eprintln!("wsbench-echo: listening on {bound}");
    let accept_loop = async {
        loop {
            match listener.accept().await {
                Ok((stream, _)) if cli.deflate => {
                    tokio::spawn(handle_deflate(stream));
                }
                Ok((stream, _)) => {
                    tokio::spawn(handle(stream, cli.read_buffer));
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    eprintln!("wsbench-echo: accept error: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    };
    let limit = async {
        if cli.max_runtime_secs == 0 {
            std::future::pending::<()>().await
        } else {
            tokio::time::sleep(Duration::from_secs(cli.max_runtime_secs)).await
        }
    };
    tokio::select! {
        _ = accept_loop => {}
        _ = limit => { eprintln!("wsbench-echo: max runtime reached, exiting"); }
        _ = tokio::signal::ctrl_c() => {}
    }
    0
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(4096)
}

async fn handle(stream: TcpStream, read_buffer: usize) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0)
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let hs = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::accept_async_with_config(stream, Some(config)),
    )
    .await;
    let mut ws = match hs {
        Ok(Ok(ws)) => ws,
        _ => return,
    };
    while let Some(msg) = ws.next().await {
        let msg = match msg {
            Ok(m) => m,
            Err(_) => return,
        };
        match msg {
            Message::Text(_) | Message::Binary(_) => {
                if ws.send(msg).await.is_err() {
                    return;
                }
            }
            Message::Close(_) => {
                // tungstenite queued the Close reply; drive it out and finish.
                let _ = ws.flush().await;
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// --deflate: raw frames, permessage-deflate passthrough peer

/// Largest frame or message accepted in `--deflate` mode (as tungstenite's limit above).
const DEFLATE_MAX_FRAME: usize = 64 << 20;
/// Largest upgrade request accepted.
const MAX_REQUEST: usize = 16 * 1024;

/// One connection of `--deflate` mode. The upgrade is answered by hand: an offer of
/// permessage-deflate (any parameters) is accepted with
/// `client_no_context_takeover; server_no_context_takeover`, a request without one gets no
/// extension. Then every data frame is sent back as it came (FIN, RSV1, opcode and payload
/// kept, unmasked): with no context takeover either way each compressed message stands
/// alone, so the mirror is a valid permessage-deflate stream from the server. Pings get
/// their pong, a Close gets its echo and ends the connection, pongs are dropped.
async fn handle_deflate(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    let hs = tokio::time::timeout(
        Duration::from_secs(10),
        accept_deflate(&mut stream, &mut buf),
    )
    .await;
    let (mut start, mut end) = match hs {
        Ok(Ok(leftover)) => (leftover.0, leftover.1),
        _ => return,
    };
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        // Every whole frame in the buffer.
        let mut closing = false;
        while start < end {
            let head = match pmd::parse_head(&buf[start..end], DEFLATE_MAX_FRAME) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(_) => return,
            };
            if end - start < head.frame_len() {
                break;
            }
            let Some(key) = head.mask else {
                return; // a client's frames are masked (RFC 6455 §5.1)
            };
            let payload = &mut buf[start + head.header_len..start + head.frame_len()];
            pmd::apply_mask(payload, key);
            let reply = match head.opcode {
                pmd::OP_PING => Some(pmd::OP_PONG),
                pmd::OP_PONG => None,
                pmd::OP_CLOSE => {
                    closing = true;
                    Some(pmd::OP_CLOSE)
                }
                op => Some(op),
            };
            if let Some(op) = reply {
                pmd::write_head(&mut out, head.fin, head.rsv1, op, head.len, None);
                out.extend_from_slice(payload);
            }
            start += head.frame_len();
            if closing {
                break;
            }
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if closing {
            let _ = stream.shutdown().await;
            return;
        }
        // Room for the next read: move a partial frame to the front, grow for a long one.
        if start == end {
            (start, end) = (0, 0);
        } else if start > 0 {
            buf.copy_within(start..end, 0);
            (start, end) = (0, end - start);
        }
        if end == buf.len() {
            if buf.len() >= DEFLATE_MAX_FRAME + 14 {
                return;
            }
            buf.resize((buf.len() * 2).min(DEFLATE_MAX_FRAME + 14), 0);
        }
        match stream.read(&mut buf[end..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => end += n,
        }
    }
}

/// Read the upgrade request into `buf` and answer it. Returns where the bytes after the
/// request start and end in `buf` (a client may send its first frame right behind it).
async fn accept_deflate(stream: &mut TcpStream, buf: &mut [u8]) -> Result<(usize, usize), ()> {
    let (mut end, limit) = (0, MAX_REQUEST.min(buf.len()));
    let head_len = loop {
        if let Some(n) = pmd::head_end(&buf[..end]) {
            break n;
        }
        if end >= limit {
            return Err(());
        }
        match stream.read(&mut buf[end..limit]).await {
            Ok(0) | Err(_) => return Err(()),
            Ok(n) => end += n,
        }
    };
    let head = std::str::from_utf8(&buf[..head_len]).map_err(|_| ())?;
    let key = pmd::header_values(head, "Sec-WebSocket-Key")
        .next()
        .ok_or(())?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let ext = if pmd::names_deflate(pmd::header_values(head, "Sec-WebSocket-Extensions")) {
        format!("Sec-WebSocket-Extensions: {}\r\n", pmd::DEFLATE_NO_TAKEOVER)
    } else {
        String::new()
    };
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n{ext}\r\n"
    );
    stream.write_all(answer.as_bytes()).await.map_err(|_| ())?;
    Ok((head_len, end))
}
