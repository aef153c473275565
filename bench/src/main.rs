//! wsbench: the load generator and report writer behind `bench/run`.
//!
//! Subcommands (each prints one JSON object on stdout, and writes it to `--out` if given):
//! - `throughput`: N sessions, closed loop (send, await the echo, repeat; `--window` messages
//!   in flight per session), counts echoed messages per second after a warm-up, and the CPU
//!   seconds of the `--pid` processes (and their descendants) over the same window.
//! - `latency`: open-loop schedule at a fixed total rate spread evenly over N sessions; each
//!   message carries its *scheduled* send time, so the round trip is measured from the
//!   schedule (no coordinated omission). Reports p50/p90/p99/p99.9/max in microseconds, and
//!   the proxy's on-CPU time and wake-ups per round trip over the measured window, exact
//!   from schedstat: bench/run's steady-load line (`steady.rs`) is this phase at a moderate
//!   rate.
//! - `idle`: RSS of the `--pid` processes (and descendants) with no session, then with N idle
//!   sessions open; reports the difference per session in KiB.
//! - `setup`: C concurrent openers, each looping connect + upgrade + one message + close.
//! - `probe`: one session (connect, one echo, close); exit 0 if it worked.
//! - `free-ports`: print N currently free loopback TCP ports.
//! - `report`: merge the per-phase JSON files of a run into the markdown table and JSON.
//! - `throughput-deflate`: the permessage-deflate line (`deflate.rs`).
//! - `report-line`: a line beside the main table (deflate, steady) added to the report
//!   (`line.rs`).
//!
//! Robustness rules: every loop is bounded by a count and a deadline, every network wait has
//! a timeout, and failures are counted by kind in the `errors` map instead of panicking.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout, timeout_at};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};

type Ws = WebSocketStream<Stream>;

/// The bytes under a session: plain TCP for ws://, TLS over TCP for wss://.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The TLS client settings for wss:// targets, built once from `--ca` (set in `main`).
static TLS: std::sync::OnceLock<Option<tokio_rustls::TlsConnector>> = std::sync::OnceLock::new();

/// TLS settings trusting only the CA certificates of `ca` (PEM), ALPN http/1.1, and no
/// session resumption: every wss:// session in `setup` pays a full handshake, as a new
/// client does.
fn tls_connector(ca: &Path) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("--ca {}: {e}", ca.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("--ca {}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("--ca {}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

mod deflate;
mod line;
mod pmd;
mod steady;

#[derive(Parser, Debug)]
#[command(
    name = "wsbench",
    about = "WebSocket load generator for the wspulse benchmark"
)]
struct Cli {
    /// Tokio worker threads for the load generator; 1 = current-thread runtime (bench/run
    /// pins the load generator to one core, so 1 is the sensible value there).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    /// CA certificates (PEM) trusted for wss:// URLs (the only roots: a benchmark's own).
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Closed-loop round-trip throughput.
    Throughput(TpArgs),
    /// Open-loop latency at a fixed rate, measured from the scheduled send time.
    Latency(LatArgs),
    /// RSS per idle session of the given processes.
    Idle(IdleArgs),
    /// New sessions per second (connect, upgrade, one message, close).
    Setup(SetupArgs),
    /// One session through URL; exit 0 if the echo came back.
    Probe(ProbeArgs),
    /// Print N free loopback TCP ports, space separated.
    FreePorts {
        #[arg(default_value_t = 1)]
        n: usize,
    },
    /// Build the markdown table and JSON from a results directory.
    Report(ReportArgs),
    /// Wait (at most MAX_WAIT seconds) until the machine has been quiet for one second:
    /// all processes together busy for less than THRESHOLD cores. Always exits 0.
    Quiet {
        #[arg(long, default_value_t = 0.25)]
        threshold: f64,
        #[arg(long, default_value_t = 60.0)]
        max_wait: f64,
    },
    /// Of several rounds of one phase (result files), write the one whose KEY is the
    /// median to OUT, with every round's KEY (and its other headline figures) added under
    /// "rounds". Always exits 0 when at least one file holds KEY.
    Median {
        #[arg(long)]
        key: String,
        #[arg(long)]
        out: PathBuf,
        files: Vec<PathBuf>,
    },
    /// Closed-loop round trips of 4 KiB JSON-like text over permessage-deflate (raw frames).
    ThroughputDeflate(deflate::TpzArgs),
    /// Add a line (`deflate`: compressed traffic; `steady`: CPU per round trip at a steady
    /// rate) to the latest.md and latest.json `report` wrote.
    ReportLine(line::LineArgs),
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// ws:// URL of the target (proxy or echo server).
    #[arg(long)]
    url: String,
    /// Process(es) to measure (their descendants are included, e.g. nginx workers).
    #[arg(long)]
    pid: Vec<u32>,
    /// Other processes of the harness (the echo upstream): their CPU is not counted as
    /// foreign load in `foreign_cpu_cores`.
    #[arg(long)]
    other_pid: Vec<u32>,
    /// Kernel clock ticks per second for /proc/PID/stat (getconf CLK_TCK).
    #[arg(long, default_value_t = 100)]
    clk_tck: u32,
    /// Timeout of every single network wait (connect, handshake, one echo, close), seconds.
    #[arg(long, default_value_t = 5.0)]
    io_timeout: f64,
    /// Also write the JSON result to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct TpArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 100)]
    sessions: usize,
    /// Message size in bytes (binary messages).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Messages in flight per session (1 = send, await echo, repeat).
    #[arg(long, default_value_t = 1)]
    window: usize,
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

#[derive(Args, Debug)]
struct LatArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 100)]
    sessions: usize,
    /// Total schedule rate over all sessions, messages per second.
    #[arg(long, default_value_t = 20000.0)]
    rate: f64,
    /// Message size in bytes (at least 16: two timestamps are carried in the payload).
    #[arg(long, default_value_t = 64)]
    size: usize,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Messages scheduled in the first WARMUP seconds are sent but not recorded.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// After the last scheduled send, wait at most this long for outstanding echoes.
    #[arg(long, default_value_t = 2.0)]
    drain: f64,
    #[arg(long, default_value_t = 50)]
    connect_concurrency: usize,
}

#[derive(Args, Debug)]
struct IdleArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 5000)]
    sessions: usize,
    /// Concurrent openers.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Sessions opened and closed before the baseline sample (lazy initialisation).
    #[arg(long, default_value_t = 10)]
    warm: usize,
    /// Pause before each RSS sample, seconds.
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
    /// Give up opening after this many seconds.
    #[arg(long, default_value_t = 20.0)]
    open_deadline: f64,
}

#[derive(Args, Debug)]
struct SetupArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Upper bound on sessions started, whatever the duration.
    #[arg(long, default_value_t = 2_000_000)]
    max_sessions: u64,
    #[arg(long, default_value_t = 64)]
    size: usize,
}

#[derive(Args, Debug)]
struct ProbeArgs {
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 1.0)]
    timeout: f64,
}

#[derive(Args, Debug)]
struct ReportArgs {
    /// Directory with one subdirectory per target holding idle.json, setup.json,
    /// tp64.json, tp16k.json, lat.json and notes.txt (any may be missing).
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value = "direct,wspulse,nginx,haproxy")]
    targets: String,
    #[arg(long, default_value = "")]
    machine: String,
    #[arg(long, default_value = "full")]
    mode: String,
    #[arg(long, default_value = "")]
    date: String,
    /// Line printed above the table (repeatable).
    #[arg(long)]
    header: Vec<String>,
    /// Flag a row when other processes used more than this many cores on average over one
    /// of its phases.
    #[arg(long, default_value_t = 0.1)]
    busy_threshold: f64,
    /// Note a row whose 64 B throughput phase kept the load generator's core (load generator
    /// plus echo) at least this busy: the harness, not the target, set that rate.
    #[arg(long, default_value_t = 0.95)]
    saturated_threshold: f64,
    #[arg(long)]
    md_out: Option<PathBuf>,
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Suffix of the compared targets' names: with "-tls", wspulse-tls is compared with
    /// nginx-tls and haproxy-tls.
    #[arg(long, default_value = "")]
    suffix: String,
}

fn main() {
    // Tighter timer slack for this process (inherited by the latency pacer thread), so that
    // sleeps wake close to the schedule. Best effort: harmless if refused.
    let _ = std::fs::write("/proc/self/timerslack_ns", "1000");
    let cli = Cli::parse();
    let tls = match cli.ca.as_deref().map(tls_connector).transpose() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("wsbench: {e}");
            std::process::exit(2);
        }
    };
    let _ = TLS.set(tls);
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
            eprintln!("wsbench: cannot build runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(async move {
        match cli.cmd {
            Cmd::Throughput(a) => {
                let out = a.common.out.clone();
                emit(throughput(a).await, out.as_deref())
            }
            Cmd::Latency(a) => {
                let out = a.common.out.clone();
                emit(latency(a).await, out.as_deref())
            }
            Cmd::Idle(a) => {
                let out = a.common.out.clone();
                emit(idle(a).await, out.as_deref())
            }
            Cmd::Setup(a) => {
                let out = a.common.out.clone();
                emit(setup(a).await, out.as_deref())
            }
            Cmd::Probe(a) => probe(a).await,
            Cmd::FreePorts { n } => free_ports(n),
            Cmd::Report(a) => report(a),
            Cmd::Quiet {
                threshold,
                max_wait,
            } => quiet(threshold, max_wait).await,
            Cmd::Median { key, out, files } => median(&key, &out, &files),
            Cmd::ThroughputDeflate(a) => {
                let out = a.common.out.clone();
                emit(deflate::throughput_deflate(a).await, out.as_deref())
            }
            Cmd::ReportLine(a) => match a.line.as_str() {
                "deflate" => line::report_line(a, &deflate::LINE),
                "steady" => line::report_line(a, &steady::LINE),
                other => {
                    eprintln!("wsbench report-line: no line {other:?} (deflate or steady)");
                    2
                }
            },
        }
    });
    // Session tasks that are still stuck (all bounded anyway) must not delay the exit.
    rt.shutdown_timeout(Duration::from_millis(500));
    std::process::exit(code);
}

/// The median round of one phase: the whole result of that round (so the figures of a
/// phase stay consistent with each other), with every round's headline figures added
/// under "rounds" (round numbers from the `rounds/N/` directory the file sits in). With an
/// even count, the lower middle. Rounds without KEY (a failed phase) are left out.
fn median(key: &str, out: &Path, files: &[PathBuf]) -> i32 {
    let mut rounds: Vec<(u64, f64, Value)> = files
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(f).ok()?).ok()?;
            let x = v.get(key)?.as_f64()?;
            Some((round_of(f).unwrap_or(i as u64 + 1), x, v))
        })
        .filter(|(_, x, _)| x.is_finite())
        .collect();
    if rounds.is_empty() {
        eprintln!("wsbench median: no round holds {key}");
        return 1;
    }
    rounds.sort_by_key(|r| r.0);
    let all: Vec<f64> = rounds.iter().map(|r| r.1).collect();
    let per_round: Vec<Value> = rounds
        .iter()
        .map(|(id, _, v)| {
            let mut m = Map::new();
            m.insert("round".into(), json!(id));
            for k in ROUND_KEYS {
                if let Some(x) = v.get(k).and_then(Value::as_f64).filter(|x| x.is_finite()) {
                    m.insert(k.into(), json!(x));
                }
            }
            Value::Object(m)
        })
        .collect();
    rounds.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut picked = rounds.swap_remove((rounds.len() - 1) / 2).2;
    if let Some(obj) = picked.as_object_mut() {
        obj.insert(
            "rounds".into(),
            json!({ "key": key, "values": all, "per_round": per_round }),
        );
    }
    emit(picked, Some(out))
}

/// Figures of a phase result kept for every round (for the report's spread and
/// round-by-round comparison).
const ROUND_KEYS: [&str; 10] = [
    "msgs_per_s",
    "cpu_us_per_rt",
    "runs_per_rt",
    "p50_us",
    "p99_us",
    "p999_us",
    "kib_per_session",
    "setup_per_s",
    "cpu_s_per_million",
    "cpu_us_per_setup",
];

/// The round a result file belongs to: bench/run writes `rounds/N/TARGET/PHASE.json`.
fn round_of(f: &Path) -> Option<u64> {
    f.parent()?.parent()?.file_name()?.to_str()?.parse().ok()
}

fn emit(v: Value, out: Option<&Path>) -> i32 {
    let text = serde_json::to_string_pretty(&v).unwrap_or_else(|_| "{}".to_string());
    println!("{text}");
    if let Some(p) = out
        && let Err(e) = std::fs::write(p, format!("{text}\n"))
    {
        eprintln!("wsbench: cannot write {}: {e}", p.display());
        return 1;
    }
    0
}

// ---------------------------------------------------------------------------------------
// Error accounting

#[derive(Default)]
struct Errors {
    m: Mutex<BTreeMap<String, u64>>,
}

impl Errors {
    fn add(&self, kind: impl Into<String>) {
        self.add_n(kind, 1);
    }
    fn add_n(&self, kind: impl Into<String>, n: u64) {
        if n == 0 {
            return;
        }
        if let Ok(mut m) = self.m.lock() {
            *m.entry(kind.into()).or_insert(0) += n;
        }
    }
    fn to_json(&self) -> (Value, u64) {
        let m = match self.m.lock() {
            Ok(m) => m.clone(),
            Err(_) => BTreeMap::new(),
        };
        let total = m.values().sum();
        (json!(m), total)
    }
}

fn ws_err_kind(stage: &str, e: &WsError) -> String {
    let k = match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => "closed".to_string(),
        WsError::Io(io) => format!("io_{:?}", io.kind()).to_lowercase(),
        WsError::Protocol(p) => {
            let s = format!("{p:?}");
            let name: String = s.chars().take_while(|c| c.is_alphanumeric()).collect();
            format!("protocol_{}", name.to_lowercase())
        }
        WsError::Capacity(_) => "capacity".to_string(),
        WsError::Http(r) => format!("http_{}", r.status().as_u16()),
        WsError::HttpFormat(_) => "http_format".to_string(),
        WsError::Url(_) => "url".to_string(),
        WsError::Utf8(_) => "utf8".to_string(),
        _ => "other".to_string(),
    };
    format!("{stage}_{k}")
}

// ---------------------------------------------------------------------------------------
// WebSocket helpers

/// The load generator's WebSocket settings for a phase whose messages are `msg_size` bytes.
///
/// The read buffer holds one whole frame of the phase (at least 4 KiB), not tungstenite's
/// default or a fixed 64 KiB: tungstenite zero-fills the free part of its read buffer, up to
/// `read_buffer_size`, before every read (`FrameCodec::read_in`). With 64 KiB that memset was
/// about 4 % of the load generator's core in the 64 B phase (`perf record -C 0`), and the
/// load generator's core is the one that bounds that phase.
fn client_config(msg_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer_for(msg_size))
        .write_buffer_size(0)
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20))
}

/// One frame of `msg_size` payload bytes with the largest header (14 bytes), at least 4 KiB.
fn read_buffer_for(msg_size: usize) -> usize {
    msg_size.saturating_add(14).max(4096)
}

/// `host:port` of a ws:// or wss:// URL, and whether it is wss://.
fn host_port(url: &str) -> Option<(String, bool)> {
    let (rest, tls) = match url.strip_prefix("wss://") {
        Some(rest) => (rest, true),
        None => (url.strip_prefix("ws://")?, false),
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let hp = &rest[..end];
    if hp.is_empty() {
        None
    } else {
        Some((hp.to_string(), tls))
    }
}

/// Connect and upgrade; `msg_size` is the size of the messages the session will exchange.
async fn connect(url: &str, t: Duration, msg_size: usize) -> Result<Ws, String> {
    let (hp, tls) = host_port(url).ok_or_else(|| "bad_url (ws:// or wss:// only)".to_string())?;
    let tcp = match timeout(t, TcpStream::connect(hp.as_str())).await {
        Err(_) => return Err("connect_timeout".into()),
        Ok(Err(e)) => return Err(format!("connect_{:?}", e.kind()).to_lowercase()),
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    let tcp = if tls {
        let Some(Some(connector)) = TLS.get() else {
            return Err("tls_no_ca (wss:// needs --ca)".into());
        };
        let host = hp.rsplit_once(':').map_or(hp.as_str(), |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = rustls_pki_types::ServerName::try_from(host.to_string())
            .map_err(|_| "tls_bad_name".to_string())?;
        match timeout(t, connector.connect(name, tcp)).await {
            Err(_) => return Err("tls_timeout".into()),
            Ok(Err(e)) => return Err(format!("tls_{:?}", e.kind()).to_lowercase()),
            Ok(Ok(s)) => Stream::Tls(Box::new(s)),
        }
    } else {
        Stream::Plain(tcp)
    };
    match timeout(
        t,
        tokio_tungstenite::client_async_with_config(url, tcp, Some(client_config(msg_size))),
    )
    .await
    {
        Err(_) => Err("handshake_timeout".into()),
        Ok(Err(e)) => Err(ws_err_kind("handshake", &e)),
        Ok(Ok((ws, _resp))) => Ok(ws),
    }
}

/// Wait for the next data message; control frames are skipped (tungstenite answers pings).
async fn recv_data(ws: &mut Ws, t: Duration) -> Result<Bytes, String> {
    let deadline = Instant::now() + t;
    loop {
        match timeout_at(deadline, ws.next()).await {
            Err(_) => return Err("echo_timeout".into()),
            Ok(None) => return Err("echo_closed".into()),
            Ok(Some(Err(e))) => return Err(ws_err_kind("echo", &e)),
            Ok(Some(Ok(Message::Binary(b)))) => return Ok(b),
            Ok(Some(Ok(Message::Text(s)))) => {
                return Ok(Bytes::from(s.as_str().as_bytes().to_vec()));
            }
            Ok(Some(Ok(Message::Close(_)))) => return Err("echo_close_frame".into()),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Closing handshake: send Close, read until the peer's Close and the end of the stream.
async fn close_ws(mut ws: Ws, t: Duration) -> Result<(), String> {
    let r = timeout(t, async {
        match ws.close(None).await {
            Ok(()) | Err(WsError::ConnectionClosed) | Err(WsError::AlreadyClosed) => {}
            Err(e) => return Err(ws_err_kind("close", &e)),
        }
        let mut n = 0u32;
        while let Some(m) = ws.next().await {
            match m {
                Ok(_) => {}
                Err(WsError::ConnectionClosed) | Err(WsError::AlreadyClosed) => break,
                Err(e) => return Err(ws_err_kind("close", &e)),
            }
            n += 1;
            if n > 100_000 {
                return Err("close_too_many_messages".to_string());
            }
        }
        Ok(())
    })
    .await;
    match r {
        Err(_) => Err("close_timeout".into()),
        Ok(r) => r,
    }
}

fn payload(size: usize) -> Bytes {
    Bytes::from((0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

/// One complete short session: connect, upgrade, one message echoed, close.
async fn one_session(url: &str, body: &Bytes, t: Duration) -> Result<(), String> {
    let mut ws = connect(url, t, body.len()).await?;
    match timeout(t, ws.send(Message::Binary(body.clone()))).await {
        Err(_) => return Err("send_timeout".into()),
        Ok(Err(e)) => return Err(ws_err_kind("send", &e)),
        Ok(Ok(())) => {}
    }
    let echo = recv_data(&mut ws, t).await?;
    if echo.len() != body.len() {
        return Err("echo_mismatch".into());
    }
    close_ws(ws, t).await
}

/// Open up to `n` sessions, at most `conc` attempts at a time, until `deadline`.
async fn connect_many(
    url: &str,
    n: usize,
    msg_size: usize,
    conc: usize,
    t: Duration,
    deadline: Instant,
    errors: &Errors,
) -> Vec<Ws> {
    let mut s = futures_util::stream::iter(0..n)
        .map(|_| connect(url, t, msg_size))
        .buffer_unordered(conc.max(1));
    let mut out = Vec::with_capacity(n);
    loop {
        match timeout_at(deadline, s.next()).await {
            Err(_) => {
                errors.add("open_deadline");
                break;
            }
            Ok(None) => break,
            Ok(Some(Ok(ws))) => out.push(ws),
            Ok(Some(Err(e))) => errors.add(e),
        }
    }
    out
}

fn secs(f: f64) -> Duration {
    Duration::from_secs_f64(if f.is_finite() && f > 0.0 { f } else { 0.0 })
}

// ---------------------------------------------------------------------------------------
// /proc sampling

fn proc_stat(pid: u32) -> Option<(u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // after "pid (comm)": [0]=state [1]=ppid ... [11]=utime [12]=stime
    let ppid = f.get(1)?.parse().ok()?;
    let ut: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, ut + st))
}

/// The roots and all their live descendants.
fn expand_pids(roots: &[u32]) -> Vec<u32> {
    if roots.is_empty() {
        return Vec::new();
    }
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten().take(1_000_000) {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((ppid, _)) = proc_stat(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out: Vec<u32> = Vec::new();
    let mut stack: Vec<u32> = roots.to_vec();
    while let Some(p) = stack.pop() {
        if out.contains(&p) || out.len() > 10_000 {
            continue;
        }
        if std::path::Path::new(&format!("/proc/{p}")).exists() {
            out.push(p);
        }
        if let Some(c) = children.get(&p) {
            stack.extend(c.iter().copied());
        }
    }
    out.sort_unstable();
    out
}

fn rss_kib_of(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// On-CPU nanoseconds and runs (times the kernel put a thread on a CPU), summed over every
/// thread of `pids`, from /proc/PID/task/TID/schedstat: exact to the nanosecond, where
/// utime+stime counts 10 ms ticks, and the runs count the wake-ups. A thread that ends
/// between two samples takes its share with it; the proxies measured keep their threads.
fn sched_of(pids: &[u32]) -> Option<(u64, u64)> {
    let mut sum: Option<(u64, u64)> = None;
    for p in pids {
        let Ok(rd) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for e in rd.flatten().take(100_000) {
            let Ok(s) = std::fs::read_to_string(e.path().join("schedstat")) else {
                continue;
            };
            let f: Vec<u64> = s
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if let [ns, _wait, runs] = f[..] {
                let (a, b) = sum.unwrap_or((0, 0));
                sum = Some((a + ns, b + runs));
            }
        }
    }
    sum
}

/// The measured processes' [`sched_of`] between `start` and `end`: (on-CPU ns, runs,
/// seconds between the two samples). The process list is read once, before `start`.
async fn sched_window(procs: Procs, start: Instant, end: Instant) -> Option<(u64, u64, f64)> {
    if !procs.active() {
        return None;
    }
    let pids = expand_pids(&procs.roots);
    tokio::time::sleep_until(start).await;
    let (a, t_a) = (sched_of(&pids)?, Instant::now());
    tokio::time::sleep_until(end).await;
    let (b, t_b) = (sched_of(&pids)?, Instant::now());
    Some((
        b.0.saturating_sub(a.0),
        b.1.saturating_sub(a.1),
        (t_b - t_a).as_secs_f64(),
    ))
}

#[derive(Clone)]
struct Procs {
    roots: Vec<u32>,
    others: Vec<u32>,
    clk_tck: f64,
}

impl Procs {
    fn new(c: &Common) -> Self {
        Procs {
            roots: c.pid.clone(),
            others: c.other_pid.clone(),
            clk_tck: f64::from(c.clk_tck.max(1)),
        }
    }
    fn active(&self) -> bool {
        !self.roots.is_empty()
    }
    fn cpu_seconds(&self) -> Option<f64> {
        if !self.active() {
            return None;
        }
        let ticks: u64 = expand_pids(&self.roots)
            .iter()
            .filter_map(|p| proc_stat(*p))
            .map(|x| x.1)
            .sum();
        Some(ticks as f64 / self.clk_tck)
    }
    /// CPU seconds of the load generator itself and of `--other-pid` (the echo upstream): the
    /// processes bench/run pins to the other core than the proxy's.
    fn harness_cpu_seconds(&self) -> f64 {
        let mut pids = self.others.clone();
        pids.push(std::process::id());
        let ticks: u64 = expand_pids(&pids)
            .iter()
            .filter_map(|p| proc_stat(*p))
            .map(|x| x.1)
            .sum();
        ticks as f64 / self.clk_tck
    }
    /// The processes whose CPU is the harness's own: the load generator, the measured
    /// processes, `--other-pid` and their descendants, and the kernel threads. Found by a
    /// scan of all of /proc (about 1.6 ms here), so a phase does it once: done at every
    /// 500 ms load sample, it stalled the load generator's core each time.
    fn own_pids(&self) -> Vec<u32> {
        let mut roots = self.roots.clone();
        roots.extend(self.others.iter().copied());
        roots.push(std::process::id());
        // Kernel threads (kthreadd, PID 2, and its children: ksoftirqd, kworkers) count as
        // ours: under load the loopback traffic of the benchmark is processed there.
        roots.push(2);
        expand_pids(&roots)
    }

    /// (busy CPU seconds of the whole machine, CPU seconds of `own`, from
    /// [`Procs::own_pids`]). Busy includes steal time.
    fn load_sample(&self, own: &[u32]) -> Option<(f64, f64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest is already in user). irq and
        // softirq are left out: loopback packet processing of the benchmark itself lands there
        // and is charged to no process.
        let busy: u64 = [0usize, 1, 2, 7].iter().filter_map(|i| f.get(*i)).sum();
        let ours: u64 = own.iter().filter_map(|p| proc_stat(*p)).map(|x| x.1).sum();
        Some((busy as f64 / self.clk_tck, ours as f64 / self.clk_tck))
    }

    fn rss_kib(&self) -> Option<(u64, Vec<u32>)> {
        if !self.active() {
            return None;
        }
        let pids = expand_pids(&self.roots);
        let sum = pids.iter().filter_map(|p| rss_kib_of(*p)).sum();
        Some((sum, pids))
    }
}

/// CPU cores used by processes outside the harness between two load samples.
fn foreign_cores(a: Option<(f64, f64)>, b: Option<(f64, f64)>, elapsed: f64) -> Option<f64> {
    let ((b0, o0), (b1, o1)) = (a?, b?);
    if elapsed <= 0.0 {
        return None;
    }
    Some(round2((((b1 - b0) - (o1 - o0)) / elapsed).max(0.0)))
}

/// Foreign load (cores used outside the harness) between `start` and `end`, sampled every
/// 500 ms: (average over the whole window, peak over one 500 ms slice). The peak is rough:
/// system-wide ticks and per-process times are not sampled at the same instant, so a slice can
/// be off by a few tenths of a core either way; the average is not affected.
async fn watch_load(procs: Procs, start: Instant, end: Instant) -> (Option<f64>, Option<f64>) {
    let own = procs.own_pids();
    tokio::time::sleep_until(start).await;
    let first = procs.load_sample(&own);
    let (mut prev, mut prev_t) = (first, Instant::now());
    let mut peak: Option<f64> = None;
    let mut n = 0u32;
    while Instant::now() < end && n < 100_000 {
        n += 1;
        let next = (prev_t + Duration::from_millis(500)).min(end);
        tokio::time::sleep_until(next).await;
        let (cur, cur_t) = (procs.load_sample(&own), Instant::now());
        if let Some(f) = foreign_cores(prev, cur, (cur_t - prev_t).as_secs_f64()) {
            peak = Some(peak.map_or(f, |p: f64| p.max(f)));
        }
        (prev, prev_t) = (cur, cur_t);
    }
    let avg = foreign_cores(first, prev, (prev_t - start).as_secs_f64());
    (avg, peak)
}

async fn join_load(
    h: tokio::task::JoinHandle<(Option<f64>, Option<f64>)>,
) -> (Option<f64>, Option<f64>) {
    let abort = h.abort_handle();
    match timeout(Duration::from_secs(5), h).await {
        Ok(Ok(v)) => v,
        Ok(Err(_)) => (None, None),
        Err(_) => {
            abort.abort();
            (None, None)
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

// ---------------------------------------------------------------------------------------
// throughput

async fn throughput(a: TpArgs) -> Value {
    let io_t = secs(a.common.io_timeout);
    let errors = Arc::new(Errors::default());
    let procs = Procs::new(&a.common);
    let size = a.size.max(1);
    let body = payload(size);
    let window = a.window.clamp(1, 1024);
    let open_deadline = Instant::now() + io_t + Duration::from_secs(10);
    let sessions = connect_many(
        &a.common.url,
        a.sessions,
        size,
        a.connect_concurrency,
        io_t,
        open_deadline,
        &errors,
    )
    .await;
    let opened = sessions.len();
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let hard_deadline =
        Instant::now() + secs(a.warmup + a.duration) + io_t * 2 + Duration::from_secs(5);
    let mut handles = Vec::with_capacity(opened);
    for ws in sessions {
        let (body, count, stop, errors) =
            (body.clone(), count.clone(), stop.clone(), errors.clone());
        handles.push(tokio::spawn(async move {
            tp_session(ws, body, window, stop, count, errors, io_t, hard_deadline).await
        }));
    }
    let m_start = Instant::now() + secs(a.warmup);
    let load = tokio::spawn(watch_load(
        procs.clone(),
        m_start,
        m_start + secs(a.duration),
    ));
    tokio::time::sleep_until(m_start).await;
    let (c0, cpu0, h0, t0) = (
        count.load(Ordering::Relaxed),
        procs.cpu_seconds(),
        procs.harness_cpu_seconds(),
        Instant::now(),
    );
    sleep(secs(a.duration)).await;
    let (c1, cpu1, h1, t1) = (
        count.load(Ordering::Relaxed),
        procs.cpu_seconds(),
        procs.harness_cpu_seconds(),
        Instant::now(),
    );
    stop.store(true, Ordering::Relaxed);
    let (foreign, foreign_peak) = join_load(load).await;
    join_all_bounded(handles, hard_deadline, &errors).await;

    let elapsed = (t1 - t0).as_secs_f64();
    let msgs = c1.saturating_sub(c0);
    let rate = if opened > 0 && elapsed > 0.0 {
        Some(msgs as f64 / elapsed)
    } else {
        None
    };
    let cpu = match (cpu0, cpu1) {
        (Some(x), Some(y)) => Some(y - x),
        _ => None,
    };
    let cpu_per_m = match cpu {
        Some(c) if msgs > 0 => Some(c / (msgs as f64 / 1e6)),
        _ => None,
    };
    let (ej, et) = errors.to_json();
    json!({
        "phase": "throughput",
        "url": a.common.url,
        "size_bytes": size,
        "sessions_requested": a.sessions,
        "sessions_open": opened,
        "window": window,
        "warmup_s": a.warmup,
        "measured_s": (elapsed * 1000.0).round() / 1000.0,
        "messages": msgs,
        "msgs_per_s": rate.map(|r| r.round()),
        "cpu_s": cpu.map(|c| (c * 1000.0).round() / 1000.0),
        "cpu_s_per_million": cpu_per_m.map(round2),
        // Cores busy over the window: the target's, and the harness's (load generator + echo,
        // pinned together). A harness near 1.0 means the harness core, not the target, set
        // the rate.
        "target_cpu_cores": cpu.filter(|_| elapsed > 0.0).map(|c| round2(c / elapsed)),
        "harness_cpu_cores": (elapsed > 0.0).then(|| round2((h1 - h0) / elapsed)),
        "foreign_cpu_cores": foreign,
        "foreign_cpu_cores_peak": foreign_peak,
        "pids": expand_pids(&procs.roots),
        "errors": ej,
        "errors_total": et,
    })
}

#[allow(clippy::too_many_arguments)]
async fn tp_session(
    mut ws: Ws,
    body: Bytes,
    window: usize,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    errors: Arc<Errors>,
    io_t: Duration,
    hard_deadline: Instant,
) {
    let mut outstanding = 0usize;
    for _ in 0..window {
        if let Err(e) = ws.feed(Message::Binary(body.clone())).await {
            errors.add(ws_err_kind("send", &e));
            return;
        }
        outstanding += 1;
    }
    if let Err(e) = ws.flush().await {
        errors.add(ws_err_kind("send", &e));
        return;
    }
    while outstanding > 0 {
        if Instant::now() > hard_deadline {
            errors.add("session_deadline");
            return;
        }
        match recv_data(&mut ws, io_t).await {
            Ok(b) => {
                if b.len() != body.len() {
                    errors.add("echo_mismatch");
                }
                count.fetch_add(1, Ordering::Relaxed);
                outstanding -= 1;
                if !stop.load(Ordering::Relaxed) {
                    if let Err(e) = ws.send(Message::Binary(body.clone())).await {
                        errors.add(ws_err_kind("send", &e));
                        return;
                    }
                    outstanding += 1;
                }
            }
            Err(e) => {
                errors.add(e);
                return;
            }
        }
    }
    if let Err(e) = close_ws(ws, io_t).await {
        errors.add(e);
    }
}

async fn join_all_bounded<T>(
    handles: Vec<tokio::task::JoinHandle<T>>,
    deadline: Instant,
    errors: &Errors,
) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        let abort = h.abort_handle();
        match timeout_at(deadline, h).await {
            Ok(Ok(v)) => out.push(v),
            Ok(Err(_)) => errors.add("task_failed"),
            Err(_) => {
                abort.abort();
                errors.add("task_deadline");
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// latency (open loop)

fn new_hist() -> Histogram<u64> {
    // 1 us .. 60 s, 3 significant digits; constant arguments, cannot fail.
    match Histogram::<u64>::new_with_bounds(1, 60_000_000, 3) {
        Ok(h) => h,
        Err(_) => unreachable!("constant histogram bounds are valid"),
    }
}

struct LatOut {
    sched: Histogram<u64>,
    service: Histogram<u64>,
    sent: u64,
    received: u64,
    expected: u64,
}

async fn latency(a: LatArgs) -> Value {
    let io_t = secs(a.common.io_timeout);
    let errors = Arc::new(Errors::default());
    let size = a.size.max(16);
    let rate = if a.rate.is_finite() && a.rate > 0.0 {
        a.rate.min(10_000_000.0)
    } else {
        1000.0
    };
    let open_deadline = Instant::now() + io_t + Duration::from_secs(10);
    let sessions = connect_many(
        &a.common.url,
        a.sessions,
        size,
        a.connect_concurrency,
        io_t,
        open_deadline,
        &errors,
    )
    .await;
    let s = sessions.len();
    let period_ns = 1e9 / rate;
    let total = ((a.warmup + a.duration).max(0.0) * rate) as u64;
    let warm_ns = (a.warmup.max(0.0) * 1e9) as u64;
    let procs = Procs::new(&a.common);
    let t0 = Instant::now() + Duration::from_millis(100);
    let t0_std = t0.into_std();
    let end_deadline = t0 + secs(a.warmup + a.duration) + secs(a.drain);
    let hard_deadline = end_deadline + io_t + Duration::from_secs(3);

    let mut txs = Vec::with_capacity(s);
    let mut handles = Vec::with_capacity(s);
    for (i, ws) in sessions.into_iter().enumerate() {
        let expected = if s == 0 {
            0
        } else {
            total / s as u64 + u64::from((i as u64) < total % s as u64)
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        txs.push(tx);
        let errors = errors.clone();
        handles.push(tokio::spawn(lat_session(
            ws,
            rx,
            expected,
            size,
            period_ns,
            warm_ns,
            t0,
            end_deadline,
            io_t,
            errors,
        )));
    }

    // Pacer: a plain thread (sub-millisecond sleeps, unlike the tokio timer) that releases
    // message k at t0 + k/rate to session k mod S. When it falls behind it releases all due
    // messages at once; their latency still counts from the schedule.
    let pacer_deadline = end_deadline.into_std();
    let pacer = std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || {
            let mut max_late_ns: u64 = 0;
            if txs.is_empty() {
                return max_late_ns;
            }
            let n = txs.len() as u64;
            for k in 0..total {
                let target = t0_std + Duration::from_nanos((k as f64 * period_ns) as u64);
                let now = Instant::now().into_std();
                if target > now {
                    std::thread::sleep(target - now);
                } else {
                    max_late_ns = max_late_ns.max((now - target).as_nanos() as u64);
                }
                let _ = txs[(k % n) as usize].send(k); // a dead session is counted by its task
                if Instant::now().into_std() > pacer_deadline {
                    break;
                }
            }
            max_late_ns
        });
    let pacer = match pacer {
        Ok(p) => Some(p),
        Err(_) => {
            errors.add("pacer_spawn");
            None
        }
    };

    // Foreign load, and the proxy's own CPU, over the measured part of the schedule
    // (warm-up end .. last send).
    let (w0, w1) = (t0 + secs(a.warmup), t0 + secs(a.warmup + a.duration));
    let load = tokio::spawn(watch_load(procs.clone(), w0, w1));
    let cpu = tokio::spawn(sched_window(procs.clone(), w0, w1));
    let outs = join_all_bounded(handles, hard_deadline, &errors).await;
    let (foreign, foreign_peak) = join_load(load).await;
    let cpu = match timeout(Duration::from_secs(5), cpu).await {
        Ok(Ok(c)) => c,
        _ => None,
    };
    let max_late_ns = match pacer {
        Some(p) => tokio::task::spawn_blocking(move || p.join().unwrap_or(0))
            .await
            .unwrap_or(0),
        None => 0,
    };
    let mut sched = new_hist();
    let mut service = new_hist();
    let (mut sent, mut received, mut expected) = (0u64, 0u64, 0u64);
    for o in outs {
        let _ = sched.add(&o.sched);
        let _ = service.add(&o.service);
        sent += o.sent;
        received += o.received;
        expected += o.expected;
    }
    errors.add_n("lost_or_unsent", expected.saturating_sub(received));
    let q = |h: &Histogram<u64>, p: f64| {
        if h.is_empty() {
            None
        } else {
            Some(h.value_at_quantile(p))
        }
    };
    // Per round trip recorded: each of them was scheduled inside the CPU window.
    let per_rt = |x: f64| (!sched.is_empty()).then(|| round2(x / sched.len() as f64));
    let (ej, et) = errors.to_json();
    json!({
        "phase": "latency",
        "url": a.common.url,
        "size_bytes": size,
        "sessions_requested": a.sessions,
        "sessions_open": s,
        "rate_target": rate,
        "warmup_s": a.warmup,
        "measured_s": a.duration,
        "scheduled": total,
        "sent": sent,
        "received": received,
        "recorded": sched.len(),
        "achieved_rate": if a.duration > 0.0 { Some((sched.len() as f64 / a.duration).round()) } else { None },
        "p50_us": q(&sched, 0.5),
        "p90_us": q(&sched, 0.9),
        "p99_us": q(&sched, 0.99),
        "p999_us": q(&sched, 0.999),
        "max_us": if sched.is_empty() { None } else { Some(sched.max()) },
        "mean_us": if sched.is_empty() { None } else { Some(round2(sched.mean())) },
        "service_p50_us": q(&service, 0.5),
        "service_p99_us": q(&service, 0.99),
        "service_p999_us": q(&service, 0.999),
        "pacer_max_late_us": max_late_ns / 1000,
        "target_cpu_s": cpu.map(|c| c.0 as f64 / 1e9),
        "target_cpu_cores": cpu.and_then(|c| (c.2 > 0.0).then(|| round2(c.0 as f64 / 1e9 / c.2))),
        "cpu_us_per_rt": cpu.and_then(|c| per_rt(c.0 as f64 / 1000.0)),
        "runs_per_rt": cpu.and_then(|c| per_rt(c.1 as f64)),
        "foreign_cpu_cores": foreign,
        "foreign_cpu_cores_peak": foreign_peak,
        "errors": ej,
        "errors_total": et,
    })
}

#[allow(clippy::too_many_arguments)]
async fn lat_session(
    ws: Ws,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<u64>,
    expected: u64,
    size: usize,
    period_ns: f64,
    warm_ns: u64,
    t0: Instant,
    end_deadline: Instant,
    io_t: Duration,
    errors: Arc<Errors>,
) -> LatOut {
    let (mut sink, mut stream) = ws.split();
    let since_t0 = move || Instant::now().saturating_duration_since(t0).as_nanos() as u64;
    let send_fut = async {
        let mut sent = 0u64;
        let mut buf = vec![0u8; size];
        while let Some(first) = rx.recv().await {
            let mut k = Some(first);
            let mut batch = 0;
            while let Some(kk) = k {
                let sched_ns = (kk as f64 * period_ns) as u64;
                buf[0..8].copy_from_slice(&sched_ns.to_le_bytes());
                buf[8..16].copy_from_slice(&since_t0().to_le_bytes());
                if let Err(e) = sink
                    .feed(Message::Binary(Bytes::copy_from_slice(&buf)))
                    .await
                {
                    errors.add(ws_err_kind("send", &e));
                    return sent;
                }
                sent += 1;
                batch += 1;
                k = if batch < 1024 {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            if let Err(e) = sink.flush().await {
                errors.add(ws_err_kind("send", &e));
                return sent;
            }
        }
        sent
    };
    let recv_fut = async {
        let mut sched = new_hist();
        let mut service = new_hist();
        let mut received = 0u64;
        while received < expected {
            match timeout_at(end_deadline, stream.next()).await {
                Err(_) => break, // unanswered messages are counted as lost by the caller
                Ok(None) => {
                    errors.add("echo_closed");
                    break;
                }
                Ok(Some(Err(e))) => {
                    errors.add(ws_err_kind("echo", &e));
                    break;
                }
                Ok(Some(Ok(Message::Binary(b)))) => {
                    received += 1;
                    if b.len() < 16 {
                        errors.add("echo_mismatch");
                        continue;
                    }
                    let mut x = [0u8; 8];
                    x.copy_from_slice(&b[0..8]);
                    let sched_ns = u64::from_le_bytes(x);
                    x.copy_from_slice(&b[8..16]);
                    let sent_ns = u64::from_le_bytes(x);
                    let now = since_t0();
                    if sched_ns >= warm_ns {
                        sched.saturating_record((now.saturating_sub(sched_ns) / 1000).max(1));
                        service.saturating_record((now.saturating_sub(sent_ns) / 1000).max(1));
                    }
                }
                Ok(Some(Ok(Message::Close(_)))) => {
                    errors.add("echo_close_frame");
                    break;
                }
                Ok(Some(Ok(_))) => {}
            }
        }
        (sched, service, received)
    };
    let (sent, (sched, service, received)) = tokio::join!(send_fut, recv_fut);
    rx.close();
    if let Ok(ws) = sink.reunite(stream)
        && let Err(e) = close_ws(ws, io_t).await
    {
        errors.add(e);
    }
    LatOut {
        sched,
        service,
        sent,
        received,
        expected,
    }
}

// ---------------------------------------------------------------------------------------
// idle memory

async fn idle(a: IdleArgs) -> Value {
    let io_t = secs(a.common.io_timeout);
    let errors = Arc::new(Errors::default());
    let procs = Procs::new(&a.common);
    let body = payload(64);
    let url = a.common.url.clone();

    for _ in 0..a.warm.min(1000) {
        if let Err(e) = one_session(&url, &body, io_t).await {
            errors.add(format!("warm_{e}"));
            break; // a failing target must not cost warm * timeout
        }
    }
    let base = sample_rss(&procs, secs(a.settle)).await;

    let (close_tx, close_rx) = tokio::sync::watch::channel(false);
    let alive = Arc::new(AtomicU64::new(0));
    let t_open = Instant::now();
    let open_deadline = t_open + secs(a.open_deadline);
    let mut handles = Vec::with_capacity(a.sessions);
    {
        let mut s = futures_util::stream::iter(0..a.sessions)
            .map(|_| {
                let (url, body) = (url.clone(), body.clone());
                async move {
                    let mut ws = connect(&url, io_t, body.len()).await?;
                    match timeout(io_t, ws.send(Message::Binary(body.clone()))).await {
                        Err(_) => return Err("send_timeout".to_string()),
                        Ok(Err(e)) => return Err(ws_err_kind("send", &e)),
                        Ok(Ok(())) => {}
                    }
                    recv_data(&mut ws, io_t).await?;
                    Ok::<Ws, String>(ws)
                }
            })
            .buffer_unordered(a.concurrency.max(1));
        loop {
            match timeout_at(open_deadline, s.next()).await {
                Err(_) => {
                    errors.add("open_deadline");
                    break;
                }
                Ok(None) => break,
                Ok(Some(Ok(ws))) => {
                    alive.fetch_add(1, Ordering::Relaxed);
                    handles.push(tokio::spawn(hold(
                        ws,
                        close_rx.clone(),
                        alive.clone(),
                        errors.clone(),
                        io_t,
                    )));
                }
                Ok(Some(Err(e))) => errors.add(e),
            }
        }
    }
    let open_s = t_open.elapsed().as_secs_f64();
    let loaded = sample_rss(&procs, secs(a.settle)).await;
    let held = alive.load(Ordering::Relaxed);

    let _ = close_tx.send(true);
    let close_deadline = Instant::now() + io_t + Duration::from_secs(5);
    join_all_bounded(handles, close_deadline, &errors).await;
    drop(close_tx);

    let per = match (base.as_ref(), loaded.as_ref()) {
        (Some((b, _)), Some((l, _))) if held > 0 => {
            Some(round2((*l as f64 - *b as f64) / held as f64))
        }
        _ => None,
    };
    let (ej, et) = errors.to_json();
    json!({
        "phase": "idle",
        "url": a.common.url,
        "sessions_requested": a.sessions,
        "sessions_held": held,
        "open_s": round2(open_s),
        "rss_base_kib": base.as_ref().map(|x| x.0),
        "rss_loaded_kib": loaded.as_ref().map(|x| x.0),
        "kib_per_session": per,
        "pids": loaded.map(|x| x.1),
        "errors": ej,
        "errors_total": et,
    })
}

/// Median of three VmRSS sums, taken after `settle`, spaced settle/4.
async fn sample_rss(procs: &Procs, settle: Duration) -> Option<(u64, Vec<u32>)> {
    if !procs.active() {
        return None;
    }
    sleep(settle).await;
    let mut v = Vec::new();
    let mut pids = Vec::new();
    for i in 0..3 {
        if i > 0 {
            sleep(settle / 4).await;
        }
        if let Some((r, p)) = procs.rss_kib() {
            v.push(r);
            pids = p;
        }
    }
    v.sort_unstable();
    v.get(v.len() / 2).map(|r| (*r, pids))
}

async fn hold(
    mut ws: Ws,
    mut close_rx: tokio::sync::watch::Receiver<bool>,
    alive: Arc<AtomicU64>,
    errors: Arc<Errors>,
    io_t: Duration,
) {
    // Keep reading so that pings from the proxy are answered while the session idles.
    let mut dropped = false;
    let mut n = 0u64;
    loop {
        tokio::select! {
            r = close_rx.changed() => {
                if r.is_err() || *close_rx.borrow() { break; }
            }
            m = ws.next() => match m {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => { dropped = true; break; }
                Some(Ok(_)) => {
                    n += 1;
                    if n > 1_000_000 { break; }
                }
            }
        }
    }
    alive.fetch_sub(1, Ordering::Relaxed);
    if dropped {
        errors.add("idle_session_dropped");
        return;
    }
    if let Err(e) = close_ws(ws, io_t).await {
        errors.add(e);
    }
}

// ---------------------------------------------------------------------------------------
// setup rate

async fn setup(a: SetupArgs) -> Value {
    let io_t = secs(a.common.io_timeout);
    let errors = Arc::new(Errors::default());
    let body = payload(a.size.max(1));
    let ok = Arc::new(AtomicU64::new(0));
    let started = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let hard_deadline =
        Instant::now() + secs(a.warmup + a.duration) + io_t * 4 + Duration::from_secs(3);
    let mut handles = Vec::new();
    for _ in 0..a.concurrency.max(1) {
        let (url, body, ok, started, stop, errors) = (
            a.common.url.clone(),
            body.clone(),
            ok.clone(),
            started.clone(),
            stop.clone(),
            errors.clone(),
        );
        let max = a.max_sessions;
        handles.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) && Instant::now() < hard_deadline {
                if started.fetch_add(1, Ordering::Relaxed) >= max {
                    break;
                }
                match one_session(&url, &body, io_t).await {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors.add(e);
                        // Avoid a hot loop against a dead target.
                        sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }
    let procs = Procs::new(&a.common);
    let m_start = Instant::now() + secs(a.warmup);
    let load = tokio::spawn(watch_load(
        procs.clone(),
        m_start,
        m_start + secs(a.duration),
    ));
    tokio::time::sleep_until(m_start).await;
    let (c0, cpu0, h0, t0) = (
        ok.load(Ordering::Relaxed),
        procs.cpu_seconds(),
        procs.harness_cpu_seconds(),
        Instant::now(),
    );
    sleep(secs(a.duration)).await;
    let (c1, cpu1, h1, t1) = (
        ok.load(Ordering::Relaxed),
        procs.cpu_seconds(),
        procs.harness_cpu_seconds(),
        Instant::now(),
    );
    stop.store(true, Ordering::Relaxed);
    let (foreign, foreign_peak) = join_load(load).await;
    join_all_bounded(handles, hard_deadline, &errors).await;
    let elapsed = (t1 - t0).as_secs_f64();
    let n = c1.saturating_sub(c0);
    let cpu = cpu0.zip(cpu1).map(|(x, y)| y - x);
    let (ej, et) = errors.to_json();
    json!({
        "phase": "setup",
        "url": a.common.url,
        "concurrency": a.concurrency,
        "warmup_s": a.warmup,
        "measured_s": (elapsed * 1000.0).round() / 1000.0,
        "sessions_completed": n,
        "sessions_total_ok": ok.load(Ordering::Relaxed),
        "foreign_cpu_cores": foreign,
        "foreign_cpu_cores_peak": foreign_peak,
        "setup_per_s": if elapsed > 0.0 && n > 0 { Some((n as f64 / elapsed).round()) } else { None },
        // The target's CPU per session: what tells the proxies apart when the load
        // generator's core, not the proxy's, sets the rate (harness_cpu_cores near 1).
        "cpu_us_per_setup": cpu.filter(|_| n > 0).map(|c| round2(c / n as f64 * 1e6)),
        "target_cpu_cores": cpu.filter(|_| elapsed > 0.0).map(|c| round2(c / elapsed)),
        "harness_cpu_cores": (elapsed > 0.0).then(|| round2((h1 - h0) / elapsed)),
        "errors": ej,
        "errors_total": et,
    })
}

// ---------------------------------------------------------------------------------------
// probe, free ports

async fn probe(a: ProbeArgs) -> i32 {
    let t = secs(a.timeout);
    match timeout(t * 2, one_session(&a.url, &payload(64), t)).await {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("probe {}: {e}", a.url);
            1
        }
        Err(_) => {
            eprintln!("probe {}: timeout", a.url);
            1
        }
    }
}

async fn quiet(threshold: f64, max_wait: f64) -> i32 {
    let procs = Procs {
        roots: Vec::new(),
        others: Vec::new(),
        clk_tck: 100.0,
    };
    let start = Instant::now();
    let deadline = start + secs(max_wait);
    let last = loop {
        let own = procs.own_pids();
        let a = procs.load_sample(&own);
        sleep(Duration::from_secs(1)).await;
        let b = procs.load_sample(&own);
        // Only this process is "ours" here: everything else counts.
        let f = foreign_cores(a, b, 1.0);
        match f {
            Some(x) if x >= threshold && Instant::now() < deadline => continue,
            _ => break f,
        }
    };
    println!(
        "waited {:.0} s, load {} cores",
        start.elapsed().as_secs_f64(),
        last.map_or("?".to_string(), |f| format!("{f:.2}"))
    );
    0
}

fn free_ports(n: usize) -> i32 {
    let mut ls = Vec::new();
    for _ in 0..n.min(64) {
        match std::net::TcpListener::bind("127.0.0.1:0") {
            Ok(l) => ls.push(l),
            Err(e) => {
                eprintln!("wsbench: cannot bind a loopback port: {e}");
                return 1;
            }
        }
    }
    let ports: Vec<String> = ls
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.port().to_string())
        .collect();
    println!("{}", ports.join(" "));
    0
}

// ---------------------------------------------------------------------------------------
// report

const KEYS: [&str; 9] = [
    "throughput_64b",
    "throughput_16k",
    "p50_us",
    "p99_us",
    "p999_us",
    "idle_kib_per_session",
    "setup_per_s",
    "cpu_s_per_million",
    "cpu_us_per_setup",
];

fn read_json(p: &Path) -> Option<Value> {
    let s = std::fs::read_to_string(p).ok()?;
    serde_json::from_str(&s).ok()
}

fn num(v: Option<&Value>, key: &str) -> Value {
    match v.and_then(|v| v.get(key)).and_then(Value::as_f64) {
        Some(x) if x.is_finite() => json!(x),
        _ => Value::Null,
    }
}

fn fmt_metric(key: &str, v: &Value) -> String {
    let Some(x) = v.as_f64() else {
        return "—".to_string();
    };
    match key {
        "idle_kib_per_session" => {
            if x.abs() < 10.0 {
                format!("{x:.2}")
            } else {
                format!("{x:.1}")
            }
        }
        "cpu_s_per_million" => format!("{x:.2}"),
        "cpu_us_per_setup" => format!("{x:.1}"),
        _ => format!("{}", x.round() as i64),
    }
}

/// Where each line of the table comes from, in the order of `KEYS`: (phase file, field).
const SOURCES: [(&str, &str); 9] = [
    ("tp64", "msgs_per_s"),
    ("tp16k", "msgs_per_s"),
    ("lat", "p50_us"),
    ("lat", "p99_us"),
    ("lat", "p999_us"),
    ("idle", "kib_per_session"),
    ("setup", "setup_per_s"),
    ("tp64", "cpu_s_per_million"),
    ("setup", "cpu_us_per_setup"),
];

fn higher_is_better(key: &str) -> bool {
    matches!(key, "throughput_64b" | "throughput_16k" | "setup_per_s")
}

/// Round number → figure, for one field of one phase (from `median`'s "rounds").
fn by_round(phase: Option<&Value>, field: &str) -> BTreeMap<u64, f64> {
    phase
        .and_then(|v| v.pointer("/rounds/per_round"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r.get("round")?.as_u64()?, r.get(field)?.as_f64()?)))
        .collect()
}

/// `a` against `b` round by round, over the rounds both have a figure for: in how
/// many `a` did strictly better, and the median of the per-round ratios a/b. Rounds
/// are compared pairwise because the targets of one phase run seconds apart within
/// a round, while a shared machine's pace drifts over the whole run; the median
/// same-round ratio is the figure that drift moves least.
fn same_rounds(a: &BTreeMap<u64, f64>, b: &BTreeMap<u64, f64>, higher_better: bool) -> Paired {
    let pairs: Vec<(f64, f64)> = a
        .iter()
        .filter_map(|(r, &x)| Some((x, *b.get(r)?)))
        .collect();
    let won = pairs
        .iter()
        .filter(|&&(x, y)| if higher_better { x > y } else { x < y })
        .count();
    let mut ratios: Vec<f64> = pairs
        .iter()
        .filter(|&&(_, y)| y != 0.0)
        .map(|&(x, y)| x / y)
        .collect();
    ratios.sort_by(f64::total_cmp);
    let median_ratio = match ratios.len() {
        0 => None,
        n if n % 2 == 1 => Some(ratios[n / 2]),
        n => Some((ratios[n / 2 - 1] + ratios[n / 2]) / 2.0),
    };
    let interval = median_interval(ratios.len()).map(|k| (ratios[k - 1], ratios[ratios.len() - k]));
    Paired {
        won,
        of: pairs.len(),
        median_ratio,
        interval,
    }
}

/// For `n` sorted values, the rank `k` (1-based) such that the `k`-th lowest
/// and the `k`-th highest bound a distribution-free interval holding the
/// median with at least 95 % confidence: the largest `k` with
/// P(Binomial(n, ½) ≤ k − 1) ≤ 2.5 %. It assumes nothing about the shape of
/// the ratios' spread, only that rounds are independent draws. `None` below
/// 6 values, too few for any such interval. For 11 rounds `k` = 2 (98.8 %),
/// for 12 `k` = 3 (96.1 %).
fn median_interval(n: usize) -> Option<usize> {
    // P(B <= j) = sum_{i<=j} C(n, i) / 2^n, accumulated in f64 (n is small).
    let total = 2f64.powi(i32::try_from(n).ok()?);
    let (mut c, mut cum, mut k) = (1.0f64, 0.0f64, None);
    for j in 0..n / 2 {
        cum += c; // C(n, j)
        if cum / total > 0.025 {
            break;
        }
        k = Some(j + 1);
        c = c * (n - j) as f64 / (j + 1) as f64;
    }
    k
}

/// Where wspulse stands on a line, from the 95 % interval of its median
/// same-round ratio: "ahead" or "behind" when the whole interval is on one
/// side of 1, else "level" (the rounds cannot tell the two apart).
fn verdict(lo: f64, hi: f64, higher_better: bool) -> &'static str {
    let (better, worse) = match higher_better {
        true => (lo > 1.0, hi < 1.0),
        false => (hi < 1.0, lo > 1.0),
    };
    match (better, worse) {
        (true, _) => "ahead",
        (_, true) => "behind",
        _ => "level",
    }
}

/// What [`same_rounds`] found.
#[derive(Debug, PartialEq)]
struct Paired {
    won: usize,
    of: usize,
    median_ratio: Option<f64>,
    /// The 95 % interval of the median ratio ([`median_interval`]), low, high.
    interval: Option<(f64, f64)>,
}

fn min_max(v: &BTreeMap<u64, f64>) -> Option<(f64, f64)> {
    v.values().fold(None, |m, &x| match m {
        None => Some((x, x)),
        Some((lo, hi)) => Some((f64::min(lo, x), f64::max(hi, x))),
    })
}

/// The targets of a comma list (`--targets`), in order, blanks dropped.
fn target_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn report(a: ReportArgs) -> i32 {
    let targets = target_list(&a.targets);
    let mut tj = Map::new();
    let mut notes_j = Map::new();
    let mut details = Map::new();
    let mut errs: BTreeMap<String, u64> = BTreeMap::new();
    let mut per_round: BTreeMap<String, Vec<BTreeMap<u64, f64>>> = BTreeMap::new();
    for t in &targets {
        let d = a.dir.join(t);
        let ph = |n: &str| read_json(&d.join(format!("{n}.json")));
        let (idle, setup, tp64, tp16k, lat) =
            (ph("idle"), ph("setup"), ph("tp64"), ph("tp16k"), ph("lat"));
        let mut m = Map::new();
        m.insert("throughput_64b".into(), num(tp64.as_ref(), "msgs_per_s"));
        m.insert("throughput_16k".into(), num(tp16k.as_ref(), "msgs_per_s"));
        m.insert("p50_us".into(), num(lat.as_ref(), "p50_us"));
        m.insert("p99_us".into(), num(lat.as_ref(), "p99_us"));
        m.insert("p999_us".into(), num(lat.as_ref(), "p999_us"));
        m.insert(
            "idle_kib_per_session".into(),
            num(idle.as_ref(), "kib_per_session"),
        );
        m.insert("setup_per_s".into(), num(setup.as_ref(), "setup_per_s"));
        m.insert(
            "cpu_s_per_million".into(),
            num(tp64.as_ref(), "cpu_s_per_million"),
        );
        m.insert(
            "cpu_us_per_setup".into(),
            num(setup.as_ref(), "cpu_us_per_setup"),
        );
        tj.insert(t.clone(), Value::Object(m));
        let phase_of = |name: &str| match name {
            "idle" => idle.as_ref(),
            "setup" => setup.as_ref(),
            "tp64" => tp64.as_ref(),
            "tp16k" => tp16k.as_ref(),
            _ => lat.as_ref(),
        };
        per_round.insert(
            t.clone(),
            SOURCES
                .iter()
                .map(|(phase, field)| by_round(phase_of(phase), field))
                .collect::<Vec<_>>(),
        );

        let mut notes: Vec<String> = std::fs::read_to_string(d.join("notes.txt"))
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        let max_of = |key: &str| {
            [&setup, &tp64, &tp16k, &lat]
                .iter()
                .filter_map(|v| v.as_ref()?.get(key)?.as_f64())
                .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
        };
        if let Some(avg) = max_of("foreign_cpu_cores")
            && avg > a.busy_threshold
        {
            notes.push(format!(
                "busy machine: other processes used {avg:.2} cores during a phase; figures unreliable"
            ));
        }
        for (phase, line) in [(&tp64, "64 B throughput"), (&setup, "setups/s")] {
            if let Some(v) = phase
                && let Some(h) = v.get("harness_cpu_cores").and_then(Value::as_f64)
                && h >= a.saturated_threshold
            {
                let own = v
                    .get("target_cpu_cores")
                    .and_then(Value::as_f64)
                    .map_or(String::new(), |c| format!(", the target's {c:.2}"));
                notes.push(format!(
                    "{line} bounded by the load generator's core ({h:.2} cores busy{own})"
                ));
            }
        }
        notes_j.insert(t.clone(), json!(notes));

        let mut det = Map::new();
        let mut total = 0u64;
        for (name, v) in [
            ("idle", &idle),
            ("setup", &setup),
            ("tp64", &tp64),
            ("tp16k", &tp16k),
            ("lat", &lat),
        ] {
            if let Some(v) = v {
                total += v.get("errors_total").and_then(Value::as_u64).unwrap_or(0);
                det.insert(name.to_string(), v.clone());
            }
        }
        errs.insert(t.clone(), total);
        details.insert(t.clone(), Value::Object(det));
    }

    // Per other proxy: the ratio of the medians, and the rounds won (same-round pairs).
    let (mut ratios, mut won) = (Map::new(), Map::new());
    let pairs = ratio_pairs(&a.suffix);
    let ours = format!("wspulse{}", a.suffix);
    for (name, other) in &pairs {
        let (Some(w), Some(o)) = (tj.get(&ours), tj.get(other)) else {
            continue;
        };
        let no_rounds = Vec::new();
        let w_rounds = per_round.get(&ours).unwrap_or(&no_rounds);
        let o_rounds = per_round.get(other).unwrap_or(&no_rounds);
        let (mut r, mut m) = (Map::new(), Map::new());
        for (i, k) in KEYS.iter().enumerate() {
            let v = match (
                w.get(*k).and_then(Value::as_f64),
                o.get(*k).and_then(Value::as_f64),
            ) {
                (Some(x), Some(y)) if y != 0.0 => json!(((x / y) * 1000.0).round() / 1000.0),
                _ => Value::Null,
            };
            r.insert(k.to_string(), v);
            if let (Some(a), Some(b)) = (w_rounds.get(i), o_rounds.get(i)) {
                let p = same_rounds(a, b, higher_is_better(k));
                if p.of > 0 {
                    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
                    let median = p.median_ratio.map(r3);
                    let interval = p.interval.map(|(lo, hi)| [r3(lo), r3(hi)]);
                    let verdict = p
                        .interval
                        .map(|(lo, hi)| verdict(lo, hi, higher_is_better(k)));
                    m.insert(
                        k.to_string(),
                        json!({ "won": p.won, "of": p.of, "median_ratio": median,
                                "median_ratio_95": interval, "verdict": verdict }),
                    );
                }
            }
        }
        ratios.insert(name.clone(), Value::Object(r));
        won.insert(name.clone(), Value::Object(m));
    }

    let mut spread = Map::new();
    for (t, lines) in &per_round {
        let mut m = Map::new();
        for (k, v) in KEYS.iter().zip(lines) {
            if let Some((lo, hi)) = min_max(v) {
                m.insert(
                    k.to_string(),
                    json!({ "min": lo, "max": hi, "rounds": v.len() }),
                );
            }
        }
        spread.insert(t.clone(), Value::Object(m));
    }
    let many_rounds = per_round.values().flatten().any(|v| v.len() > 1);

    let mut md = String::new();
    let title = if a.mode == "smoke" {
        "wspulse benchmark (SMOKE run: tiny, not comparable)"
    } else {
        "wspulse benchmark"
    };
    md.push_str(&format!(
        "## {title}{}\n\n",
        if a.date.is_empty() {
            String::new()
        } else {
            format!(" — {}", a.date)
        }
    ));
    if !a.machine.is_empty() {
        md.push_str(&format!("Machine: {}\n\n", a.machine));
    }
    for h in &a.header {
        md.push_str(&format!("- {h}\n"));
    }
    if !a.header.is_empty() {
        md.push('\n');
    }
    md.push_str("| target | msg/s 64 B | msg/s 16 KiB | p50 µs | p99 µs | p99.9 µs | idle KiB/session | setups/s | CPU s per 1M msgs | CPU µs per setup | errors | notes |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for t in &targets {
        let m = tj.get(t).cloned().unwrap_or(Value::Null);
        let cells: Vec<String> = KEYS
            .iter()
            .map(|k| fmt_metric(k, m.get(*k).unwrap_or(&Value::Null)))
            .collect();
        let notes = notes_j
            .get(t)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
            .replace('|', "\\|");
        md.push_str(&format!(
            "| {t} | {} | {} | {notes} |\n",
            cells.join(" | "),
            errs.get(t).copied().unwrap_or(0)
        ));
    }
    for (name, _) in &pairs {
        let Some(r) = ratios.get(name) else { continue };
        let cells: Vec<String> = KEYS
            .iter()
            .map(|k| match r.get(*k).and_then(Value::as_f64) {
                Some(x) => format!("{x:.2}×"),
                None => "—".to_string(),
            })
            .collect();
        md.push_str(&format!("| *{name}* | {} | | |\n", cells.join(" | ")));
    }
    md.push_str("\nRatios are wspulse's value divided by the other proxy's: above 1 is better for msg/s and setups/s, worse for latency, memory and CPU. — = not measured or not applicable.\n");
    if many_rounds {
        md.push_str(&spread_md(&targets, &spread, &won, &pairs));
    }

    let out = json!({
        "machine": a.machine,
        "targets": Value::Object(tj),
        "mode": a.mode,
        "date": a.date,
        "header": a.header,
        "ratios": Value::Object(ratios),
        "spread": Value::Object(spread),
        "rounds_won": Value::Object(won),
        "notes": Value::Object(notes_j),
        "details": Value::Object(details),
    });
    print!("{md}");
    let mut code = 0;
    if let Some(p) = &a.md_out {
        code |= write_atomic(p, &md);
    }
    if let Some(p) = &a.json_out {
        let text = serde_json::to_string_pretty(&out).unwrap_or_else(|_| "{}".into());
        code |= write_atomic(p, &format!("{text}\n"));
    }
    code
}

/// The "across rounds" table: each line's lowest and highest round per target, and,
/// against each other proxy, in how many rounds wspulse did better and the median
/// same-round ratio.
/// The ratio rows: (row name, the other target), e.g. ("wspulse-tls/nginx-tls", "nginx-tls").
fn ratio_pairs(suffix: &str) -> Vec<(String, String)> {
    ["nginx", "haproxy"]
        .iter()
        .map(|o| {
            (
                format!("wspulse{suffix}/{o}{suffix}"),
                format!("{o}{suffix}"),
            )
        })
        .collect()
}

fn spread_md(
    targets: &[String],
    spread: &Map<String, Value>,
    won: &Map<String, Value>,
    pairs: &[(String, String)],
) -> String {
    let mut md = String::from(
        "\n### Across rounds\n\nThe table above takes each phase's median round. Here: the lowest and highest round of each line, and in how many rounds wspulse did better than the other proxy on that line (same round: a phase runs on every target in turn, seconds apart; ties count as not better), and the median of those same-round ratios, the estimate the machine's slow spells move least, with its 95 % interval (distribution-free, from the ranks of the ratios; given from 6 rounds up): \"ahead\" or \"behind\" when the whole interval is on one side of 1×, \"level\" when the rounds cannot tell wspulse and the other proxy apart.\n\n",
    );
    md.push_str("| target | msg/s 64 B | msg/s 16 KiB | p50 µs | p99 µs | p99.9 µs | idle KiB/session | setups/s | CPU s per 1M msgs | CPU µs per setup |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for t in targets {
        let Some(s) = spread.get(t) else { continue };
        let cells: Vec<String> = KEYS
            .iter()
            .map(|k| match s.get(*k) {
                Some(r) => {
                    let (lo, hi) = (num(Some(r), "min"), num(Some(r), "max"));
                    format!("{}–{}", fmt_metric(k, &lo), fmt_metric(k, &hi))
                }
                None => "—".to_string(),
            })
            .collect();
        md.push_str(&format!("| {t} | {} |\n", cells.join(" | ")));
    }
    // Two rows per other proxy and kind of figure: rounds better, then median ratio.
    for (label, cell) in ratio_rows() {
        for (name, _) in pairs {
            let Some(w) = won.get(name) else { continue };
            let cells: Vec<String> = KEYS
                .iter()
                .map(|k| w.get(*k).and_then(cell).unwrap_or_else(|| "—".into()))
                .collect();
            md.push_str(&format!("| *{name}: {label}* | {} |\n", cells.join(" | ")));
        }
    }
    md
}

fn write_atomic(p: &Path, text: &str) -> i32 {
    let tmp = p.with_extension(format!(
        "{}.tmp",
        p.extension().and_then(|e| e.to_str()).unwrap_or("out")
    ));
    let r = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, p));
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("wsbench: cannot write {}: {e}", p.display());
            1
        }
    }
}

/// How a ratio summary (`won`/`of`, `median_ratio`, `median_ratio_95` and
/// `verdict`) is shown: one table row each, its label and its cell.
pub(crate) type RatioCell = fn(&Value) -> Option<String>;

/// The three rows every comparison table gives per other proxy.
pub(crate) fn ratio_rows() -> [(&'static str, RatioCell); 3] {
    [
        ("rounds better", |r| {
            Some(format!(
                "{}/{}",
                r.get("won")?.as_u64()?,
                r.get("of")?.as_u64()?
            ))
        }),
        ("median same-round ratio", |r| {
            Some(format!("{:.2}×", r.get("median_ratio")?.as_f64()?))
        }),
        ("its 95 % interval", |r| {
            let i = r.get("median_ratio_95")?.as_array()?;
            Some(format!(
                "{:.2}–{:.2}× {}",
                i.first()?.as_f64()?,
                i.get(1)?.as_f64()?,
                r.get("verdict")?.as_str()?
            ))
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rounds(pairs: &[(u64, f64)]) -> BTreeMap<u64, f64> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn rounds_are_compared_pairwise_in_the_right_direction() {
        let w = rounds(&[(1, 80.0), (2, 60.0), (3, 90.0), (4, 70.0)]);
        let o = rounds(&[(1, 70.0), (2, 75.0), (3, 90.0)]);
        // Round 4 has no partner; round 3 is a tie, not a win.
        let won = |higher_better| {
            let p = same_rounds(&w, &o, higher_better);
            (p.won, p.of)
        };
        assert_eq!(won(true), (1, 3));
        assert_eq!(won(false), (1, 3));
        assert_eq!(
            same_rounds(&w, &BTreeMap::new(), true),
            Paired {
                won: 0,
                of: 0,
                median_ratio: None,
                interval: None
            }
        );
    }

    #[test]
    fn median_same_round_ratio() {
        // Ratios 80/70, 60/75, 90/90: median 1.0, whatever the direction.
        let w = rounds(&[(1, 80.0), (2, 60.0), (3, 90.0), (4, 70.0)]);
        let o = rounds(&[(1, 70.0), (2, 75.0), (3, 90.0)]);
        assert_eq!(same_rounds(&w, &o, true).median_ratio, Some(1.0));
        // An even count takes the mean of the middle two: 0.8 and 1.25.
        let w = rounds(&[(1, 80.0), (2, 125.0)]);
        let o = rounds(&[(1, 100.0), (2, 100.0)]);
        assert_eq!(same_rounds(&w, &o, false).median_ratio, Some(1.025));
        // Slow rounds for everyone do not move it: both targets 20 % slower in round 2.
        let w = rounds(&[(1, 100.0), (2, 80.0), (3, 100.0)]);
        let o = rounds(&[(1, 90.0), (2, 72.0), (3, 90.0)]);
        let m = same_rounds(&w, &o, true).median_ratio.unwrap();
        assert!((m - 100.0 / 90.0).abs() < 1e-9, "{m}");
    }

    #[test]
    fn median_interval_ranks_match_the_binomial_table() {
        // Below 6 values even the extremes hold the median less than 95 % of
        // the time (2 × 1/32 > 5 % at 5).
        assert_eq!(median_interval(0), None);
        assert_eq!(median_interval(5), None);
        assert_eq!(median_interval(6), Some(1));
        assert_eq!(median_interval(8), Some(1));
        assert_eq!(median_interval(9), Some(2));
        assert_eq!(median_interval(11), Some(2));
        assert_eq!(median_interval(12), Some(3));
        assert_eq!(median_interval(22), Some(6));
    }

    #[test]
    fn the_interval_decides_ahead_behind_or_level() {
        // Twelve rounds: the interval is the 3rd lowest to the 3rd highest ratio.
        let o = rounds(&(1..=12).map(|r| (r, 100.0)).collect::<Vec<_>>());
        let w = rounds(&(1..=12).map(|r| (r, 100.0 + r as f64)).collect::<Vec<_>>());
        let p = same_rounds(&w, &o, true);
        assert_eq!(p.interval, Some((1.03, 1.10)));
        assert_eq!(verdict(1.03, 1.10, true), "ahead");
        assert_eq!(verdict(1.03, 1.10, false), "behind");
        assert_eq!(verdict(0.97, 1.10, true), "level");
        assert_eq!(verdict(0.90, 0.99, false), "ahead");
        assert_eq!(
            same_rounds(&rounds(&[(1, 1.0)]), &rounds(&[(1, 2.0)]), true).interval,
            None
        );
    }

    #[test]
    fn spread_is_lowest_and_highest_round() {
        assert_eq!(
            min_max(&rounds(&[(1, 3.0), (2, -1.0), (3, 7.5)])),
            Some((-1.0, 7.5))
        );
        assert_eq!(min_max(&BTreeMap::new()), None);
    }

    #[test]
    fn a_round_is_named_by_its_directory() {
        assert_eq!(
            round_of(Path::new("/tmp/x/rounds/12/wspulse/tp64.json")),
            Some(12)
        );
        assert_eq!(round_of(Path::new("tp64.json")), None);
    }

    #[test]
    fn per_round_figures_come_from_the_median_file() {
        let v = json!({"rounds": {"key": "p99_us", "values": [2.0, 1.0],
            "per_round": [{"round": 1, "p99_us": 2.0, "p50_us": 0.5}, {"round": 2, "p99_us": 1.0}]}});
        assert_eq!(by_round(Some(&v), "p99_us"), rounds(&[(1, 2.0), (2, 1.0)]));
        assert_eq!(by_round(Some(&v), "p50_us"), rounds(&[(1, 0.5)]));
        assert!(by_round(None, "p99_us").is_empty());
    }
}
