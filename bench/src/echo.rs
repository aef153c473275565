//! wsbench-echo: the WebSocket echo upstream used for every target of bench/run.
//!
//! Every Text/Binary message is sent back unchanged on the same connection; pings are
//! answered by tungstenite; a Close is answered and the connection ends. Runs on a
//! single-threaded tokio runtime (bench/run pins it to core 0 next to the load generator).
//! Errors on one connection never affect the others, and never panic the process.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

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
