//! `wspulse demo`: an upstream, the proxy and synthetic clients in one
//! process, and a live table of what the proxy records.
//!
//! What runs, all on 127.0.0.1 with ports picked by the OS:
//!
//! - the echo upstream of [`crate::echo`];
//! - the real proxy ([`Server`]) in front of it, configured through the
//!   normal config loader with `keepalive.interval = keepalive.timeout =
//!   "1s"` and a 64 KiB message limit, so every kind of ending shows up
//!   within seconds;
//! - a second proxy instance, configured the same except that its upstream
//!   is a port that is bound but not listening. It serves only the
//!   "unreachable upstream" scenario: with one upstream URL per proxy, that
//!   is the only honest way to get a real `connection refused` (HTTP 502,
//!   `wspulse_upstream_connect_failures_total{reason="refused"}`) while the
//!   first instance's upstream stays up. A registry takes each metric name
//!   once, so each instance has its own; the table sums both, and both
//!   `/metrics` addresses are printed;
//! - synthetic clients that, round after round, end sessions in every way
//!   the proxy tells apart ([`Scenario`]).
//!
//! Every number in the table is parsed from [`Metrics::encode`], the same
//! text `/metrics` serves, never from the demo's own bookkeeping. The demo
//! also knows what it injected: at the end it compares, row by row, what
//! each scenario must produce with the registries' deltas since the start,
//! and prints `demo check: N scenarios, all classified as injected` or
//! every mismatch (exit 1). What the clients themselves saw (the Close
//! code the proxy sent them, the HTTP status) is checked too, and every
//! surprise is reported, never a panic.
//!
//! | scenario                | what happens                                          | row (code side cause)               |
//! |-------------------------|-------------------------------------------------------|-------------------------------------|
//! | `client-close`          | chats ~1.5 s (answers pings), sends Close 1000        | 1000 client close_frame             |
//! | `upstream-close`        | upstream sends Close 1000 (`close:1000:done`)         | 1000 upstream close_frame           |
//! | `client-going-away`     | client sends Close 1001                               | 1001 client close_frame             |
//! | `app-code`              | upstream sends Close 4001 (`close:4001:…`)            | 4001 upstream close_frame           |
//! | `client-fin`            | client drops its socket (FIN), no Close               | 1006 client eof                     |
//! | `client-rst`            | client resets its socket (RST, `SO_LINGER` 0)         | 1006 client reset                   |
//! | `client-silent`         | client never answers a ping                           | 1006 client ping_timeout            |
//! | `client-protocol-error` | client sends an unmasked frame                        | 1002 client protocol_error          |
//! | `too-big`               | client sends an 80 KiB message (two frames)           | 1009 client message_too_big         |
//! | `upstream-crash`        | upstream drops its socket (`drop`)                    | 1006 upstream eof                   |
//! | `upstream-rst`          | upstream resets its socket (`rst`)                    | 1006 upstream reset                 |
//! | `upstream-silent`       | upstream stops answering pings (`mute`)               | 1006 upstream ping_timeout          |
//! | `upstream-bad-utf8`     | upstream sends text that is not UTF-8 (`badutf8`)     | 1007 upstream protocol_error        |
//! | `rejected-403`          | path `/reject/403`: the upstream answers 403          | HTTP 403 (handshake rejection)      |
//! | `unreachable-502`       | via the second instance: nothing listens upstream     | HTTP 502 (connect failure, refused) |
//!
//! The clients speak WebSocket over raw TCP (a few dozen lines below,
//! frames from [`crate::wire`]): they must send what well-behaved
//! libraries refuse to (an unmasked frame), read codes some refuse to
//! read (1014), and reset or abandon a socket at a precise moment.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::config::{self, Settings};
use crate::echo::EchoServer;
use crate::explain;
use crate::metrics::{Metrics, names};
use crate::protocol::encode_frame;
use crate::server::Server;
use crate::shutdown::DrainReport;

/// Largest message the demo proxy accepts (`limits.max_message_size`).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// A new round of scenarios starts this often.
const TICK: Duration = Duration::from_millis(300);
/// Scenarios started per round.
const PER_TICK: usize = 4;
/// Bound on every single wait of a client (a frame, a handshake, an end).
const STEP: Duration = Duration::from_secs(10);
/// After the run: how long to wait for scenarios in flight, then for the
/// proxy to count their sessions.
const WIND_DOWN: Duration = Duration::from_secs(15);

/// The order scenarios are started in: every kind at least once per cycle
/// (20 starts, 1.5 s), normal closes more often, as in real traffic.
const CYCLE: &[Scenario] = {
    use Scenario as S;
    &[
        S::ClientClose,
        S::UpstreamClose,
        S::ClientFin,
        S::AppCode,
        S::ClientClose,
        S::ClientRst,
        S::UpstreamCrash,
        S::ClientSilent,
        S::ClientClose,
        S::UpstreamClose,
        S::TooBig,
        S::UpstreamSilent,
        S::ClientGoingAway,
        S::ClientFin,
        S::ClientProtocolError,
        S::Rejected403,
        S::ClientClose,
        S::UpstreamRst,
        S::UpstreamBadUtf8,
        S::Unreachable502,
    ]
};

// === Entry point ===

/// `wspulse demo [--duration SECS]`: run until Ctrl-C or `duration`, print
/// the final table and the check. Exit 0 when every scenario was
/// classified as injected, 1 otherwise (or when the demo cannot start).
pub fn run(duration: Option<Duration>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wspulse demo: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run_async(duration)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("wspulse demo: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The demo's proxy settings, through the normal loader (and its
/// validation); the process environment is deliberately not consulted.
pub fn demo_settings(upstream_url: &str) -> anyhow::Result<Settings> {
    let toml = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n\
         [upstream]\nurl = \"{upstream_url}\"\nconnect_timeout = \"2s\"\n\
         [keepalive]\ninterval = \"1s\"\ntimeout = \"1s\"\n\
         [limits]\nmax_message_size = {MAX_MESSAGE}\nmax_frame_size = {MAX_MESSAGE}\n\
         [admin]\naddr = \"127.0.0.1:0\"\n\
         [shutdown]\ndrain_timeout = \"2s\"\n"
    );
    config::load_str(&toml, &Default::default())
        .map_err(|e| anyhow::anyhow!("demo settings refused:\n{e}"))
}

/// A proxy instance running in this process.
struct Instance {
    addr: SocketAddr,
    admin: SocketAddr,
    metrics: Metrics,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<DrainReport>,
}

impl Instance {
    async fn start(upstream_url: &str) -> anyhow::Result<Instance> {
        let settings = demo_settings(upstream_url)?;
        let metrics = Metrics::standalone(&[], settings.admin.recent_closures)?;
        let server = Server::bind(settings, metrics.clone()).await?;
        let (addr, admin) = (server.local_addr(), server.admin_addr());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Ok(Instance {
            addr,
            admin,
            metrics,
            stop: Some(tx),
            task,
        })
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// Addresses shown in the table header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// `ws://` address of the main proxy.
    pub proxy: String,
    /// `ws://` address of the echo upstream.
    pub upstream: String,
    /// `/metrics` URL of the main proxy.
    pub metrics: String,
    /// `/metrics` URL of the instance whose upstream is unreachable.
    pub metrics_unreachable: String,
}

async fn run_async(duration: Option<Duration>) -> anyhow::Result<bool> {
    let echo = EchoServer::start().await?;
    // Bound but not listening: connecting to it is refused, and the port
    // cannot be taken by anything else while the demo runs.
    let hole = tokio::net::TcpSocket::new_v4()?;
    hole.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let hole_addr = hole.local_addr()?;
    let main = Instance::start(&echo.url()).await?;
    let unreachable = Instance::start(&format!("ws://{hole_addr}")).await?;
    let endpoints = Endpoints {
        proxy: format!("ws://{}", main.addr),
        upstream: echo.url(),
        metrics: format!("http://{}/metrics", main.admin),
        metrics_unreachable: format!("http://{}/metrics", unreachable.admin),
    };
    let tty = std::io::stdout().is_terminal();
    if tty {
        // A clean screen: the live table is redrawn from its top-left.
        out("\x1b[2J\x1b[H");
    }
    out(&format!(
        "wspulse demo: clients -> proxy {} -> echo upstream {}\n\
         \x20 keepalive 1s/1s, max message 64 KiB; a round of {PER_TICK} scenarios every {} ms\n\
         \x20 while it runs: curl -s {}   (also /closures, /healthz)\n\
         \x20 the 502 scenario uses a second proxy instance (upstream {hole_addr}, nothing listens): {}\n\
         \x20 Ctrl-C{} to stop\n",
        endpoints.proxy,
        endpoints.upstream,
        TICK.as_millis(),
        endpoints.metrics,
        endpoints.metrics_unreachable,
        if duration.is_some() {
            " or --duration"
        } else {
            ""
        },
    ));

    let instances = [&main, &unreachable];
    let scrape = || {
        let mut s = Snapshot::default();
        for i in instances {
            s.add(&Snapshot::from_text(&i.metrics.encode()));
        }
        s
    };
    let baseline = scrape();
    let started = Instant::now();
    let targets = Targets {
        main: main.addr,
        unreachable: unreachable.addr,
    };
    let mut book = Book::default();
    let mut tasks: JoinSet<(Scenario, u64, Report)> = JoinSet::new();
    let mut launch = tokio::time::interval(TICK);
    launch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let refresh_every = if tty {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    // On a terminal, the first table comes as soon as something happened.
    let first = if tty { TICK * 2 } else { refresh_every };
    let mut refresh = tokio::time::interval_at(Instant::now() + first, refresh_every);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(end);
    let interrupted = ctrl_c();
    tokio::pin!(interrupted);
    let mut prev = (Instant::now(), baseline.clone());
    let mut next_in_cycle = 0usize;
    loop {
        tokio::select! {
            _ = &mut end => break,
            _ = &mut interrupted => break,
            _ = launch.tick() => {
                for _ in 0..PER_TICK {
                    let s = CYCLE[next_in_cycle % CYCLE.len()];
                    next_in_cycle += 1;
                    let seq = book.launch(s);
                    tasks.spawn(async move { (s, seq, s.run(targets).await) });
                }
            }
            _ = refresh.tick() => {
                let now = Instant::now();
                let snap = scrape();
                let dt = now.duration_since(prev.0).as_secs_f64();
                let rates = rates(&prev.1, &snap, dt);
                let view = View {
                    title: format!("{:.1} s, running", started.elapsed().as_secs_f64()),
                    endpoints: &endpoints,
                    started: book.launched,
                    done: book.done,
                    problems: book.problems.len(),
                    snap: &snap.since(&baseline),
                    rate_label: format!("last {} s", refresh_every.as_secs()),
                    rates,
                };
                let table = render(&view);
                if tty {
                    out(&redraw(&table));
                } else {
                    out(&format!("\n{table}"));
                }
                prev = (now, snap);
            }
            Some(joined) = tasks.join_next() => book.record(joined),
        }
    }

    // Wind down: no new scenarios; let those in flight finish (each wait
    // of theirs is bounded), then let the proxy count their sessions.
    let ran_for = started.elapsed();
    out(&format!(
        "\nstopping after {:.1} s: waiting for {} scenarios in flight (Ctrl-C again to cut)\n",
        ran_for.as_secs_f64(),
        tasks.len()
    ));
    let cut = {
        let wind_down = async {
            let deadline = Instant::now() + WIND_DOWN;
            while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, tasks.join_next()).await
            {
                book.record(joined);
            }
            let limit = deadline.saturating_duration_since(Instant::now());
            main.metrics
                .wait_ended(book.established, limit.max(Duration::from_secs(1)))
                .await;
        };
        tokio::select! {
            _ = wind_down => false,
            _ = ctrl_c() => true,
        }
    };
    let in_flight = tasks.len();
    tasks.abort_all();

    let snap = scrape().since(&baseline);
    let elapsed = ran_for.as_secs_f64().max(0.001);
    let view = View {
        title: format!("final, after {elapsed:.1} s"),
        endpoints: &endpoints,
        started: book.launched,
        done: book.done,
        problems: book.problems.len(),
        snap: &snap,
        rate_label: "average".into(),
        rates: [
            snap.messages[0] as f64 / elapsed,
            snap.messages[1] as f64 / elapsed,
        ],
    };
    let mut report = render(&view);
    let ok = if cut || in_flight > 0 {
        let _ = writeln!(
            report,
            "\ndemo check: not checked: {in_flight} scenarios were still in flight when the wait was cut"
        );
        book.problems.is_empty()
    } else {
        let mismatches = check(&book.expected, &snap.rows);
        report.push_str(&check_report(
            book.done,
            &mismatches,
            &book.problems,
            &book.expected,
        ));
        mismatches.is_empty() && book.problems.is_empty()
    };
    if tty {
        out(&redraw(&report));
    } else {
        out(&format!("\n{report}"));
    }

    main.stop().await;
    unreachable.stop().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), echo.shutdown()).await;
    drop(hole);
    Ok(ok)
}

/// Ctrl-C, or never if the handler cannot be installed.
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// `text` drawn over the previous screen: cursor home, each line
/// followed by clear-to-end-of-line, then clear below (no flicker).
fn redraw(text: &str) -> String {
    format!("\x1b[H{}\x1b[J", text.replace('\n', "\x1b[K\n"))
}

/// Write to stdout; a closed pipe (`wspulse demo | head`) is not an error.
fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes());
    let _ = o.flush();
}

/// What the demo injected, and what its clients reported.
#[derive(Default)]
struct Book {
    launched: u64,
    done: u64,
    /// Sessions the proxy opened (the client got its 101).
    established: u64,
    expected: BTreeMap<RowKey, u64>,
    problems: Vec<String>,
}

impl Book {
    fn launch(&mut self, s: Scenario) -> u64 {
        self.launched += 1;
        *self.expected.entry(s.expected()).or_default() += 1;
        self.launched
    }

    fn record(&mut self, joined: Result<(Scenario, u64, Report), tokio::task::JoinError>) {
        self.done += 1;
        match joined {
            Ok((s, seq, report)) => {
                self.established += u64::from(report.established);
                if let Some(p) = report.problem {
                    self.problems.push(format!("{} #{seq}: {p}", s.name()));
                }
            }
            Err(e) => self.problems.push(format!("a scenario task failed: {e}")),
        }
    }
}

// === Scenarios ===

/// One way to end a session (or a handshake). See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// The client chats, then sends Close 1000.
    ClientClose,
    /// The upstream sends Close 1000.
    UpstreamClose,
    /// The client sends Close 1001 (a tab closing).
    ClientGoingAway,
    /// The upstream sends an application code, 4001.
    AppCode,
    /// The client's socket goes away with a FIN, no Close frame.
    ClientFin,
    /// The client's socket is reset.
    ClientRst,
    /// The client stops answering pings.
    ClientSilent,
    /// The client sends an unmasked frame.
    ClientProtocolError,
    /// The client sends a message over `limits.max_message_size`.
    TooBig,
    /// The upstream's socket goes away with a FIN.
    UpstreamCrash,
    /// The upstream's socket is reset.
    UpstreamRst,
    /// The upstream stops answering pings.
    UpstreamSilent,
    /// The upstream sends invalid UTF-8 in a text message.
    UpstreamBadUtf8,
    /// The upstream refuses the handshake with 403.
    Rejected403,
    /// The upstream cannot be reached (second instance).
    Unreachable502,
}

/// Where the clients connect.
#[derive(Debug, Clone, Copy)]
struct Targets {
    main: SocketAddr,
    unreachable: SocketAddr,
}

/// How a scenario went, from the client's side.
#[derive(Debug, Default)]
struct Report {
    /// The client got its 101 (so the proxy counts a session).
    established: bool,
    /// What the client saw that it should not have.
    problem: Option<String>,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 15] = [
        Scenario::ClientClose,
        Scenario::UpstreamClose,
        Scenario::ClientGoingAway,
        Scenario::AppCode,
        Scenario::ClientFin,
        Scenario::ClientRst,
        Scenario::ClientSilent,
        Scenario::ClientProtocolError,
        Scenario::TooBig,
        Scenario::UpstreamCrash,
        Scenario::UpstreamRst,
        Scenario::UpstreamSilent,
        Scenario::UpstreamBadUtf8,
        Scenario::Rejected403,
        Scenario::Unreachable502,
    ];

    /// Its name (also the last segment of the request path).
    pub fn name(self) -> &'static str {
        match self {
            Scenario::ClientClose => "client-close",
            Scenario::UpstreamClose => "upstream-close",
            Scenario::ClientGoingAway => "client-going-away",
            Scenario::AppCode => "app-code",
            Scenario::ClientFin => "client-fin",
            Scenario::ClientRst => "client-rst",
            Scenario::ClientSilent => "client-silent",
            Scenario::ClientProtocolError => "client-protocol-error",
            Scenario::TooBig => "too-big",
            Scenario::UpstreamCrash => "upstream-crash",
            Scenario::UpstreamRst => "upstream-rst",
            Scenario::UpstreamSilent => "upstream-silent",
            Scenario::UpstreamBadUtf8 => "upstream-bad-utf8",
            Scenario::Rejected403 => "rejected-403",
            Scenario::Unreachable502 => "unreachable-502",
        }
    }

    /// The row the proxy must count for it.
    pub fn expected(self) -> RowKey {
        let closed = |code: u16, side: &str, cause: &str| RowKey::Closed {
            code,
            side: side.into(),
            cause: cause.into(),
        };
        match self {
            Scenario::ClientClose => closed(1000, "client", "close_frame"),
            Scenario::UpstreamClose => closed(1000, "upstream", "close_frame"),
            Scenario::ClientGoingAway => closed(1001, "client", "close_frame"),
            Scenario::AppCode => closed(4001, "upstream", "close_frame"),
            Scenario::ClientFin => closed(1006, "client", "eof"),
            Scenario::ClientRst => closed(1006, "client", "reset"),
            Scenario::ClientSilent => closed(1006, "client", "ping_timeout"),
            Scenario::ClientProtocolError => closed(1002, "client", "protocol_error"),
            Scenario::TooBig => closed(1009, "client", "message_too_big"),
            Scenario::UpstreamCrash => closed(1006, "upstream", "eof"),
            Scenario::UpstreamRst => closed(1006, "upstream", "reset"),
            Scenario::UpstreamSilent => closed(1006, "upstream", "ping_timeout"),
            Scenario::UpstreamBadUtf8 => closed(1007, "upstream", "protocol_error"),
            Scenario::Rejected403 => RowKey::Rejected { status: 403 },
            Scenario::Unreachable502 => RowKey::ConnectFailed {
                reason: "refused".into(),
            },
        }
    }

    async fn run(self, t: Targets) -> Report {
        let (addr, path) = match self {
            Scenario::Rejected403 => (t.main, "/reject/403/demo".to_string()),
            Scenario::Unreachable502 => (t.unreachable, format!("/demo/{}", self.name())),
            _ => (t.main, format!("/demo/{}", self.name())),
        };
        let want_status = match self {
            Scenario::Rejected403 => Some(403),
            Scenario::Unreachable502 => Some(502),
            _ => None,
        };
        match (RawWs::open(addr, &path).await, want_status) {
            (Err(e), _) => Report {
                established: false,
                problem: Some(e),
            },
            (Ok(Handshake::Refused(got)), Some(want)) => Report {
                established: false,
                problem: (got != want).then(|| format!("expected HTTP {want}, got HTTP {got}")),
            },
            (Ok(Handshake::Refused(got)), None) => Report {
                established: false,
                problem: Some(format!("expected 101, got HTTP {got}")),
            },
            (Ok(Handshake::Upgraded(ws)), Some(want)) => {
                drop(ws);
                Report {
                    established: true,
                    problem: Some(format!("expected HTTP {want}, got 101")),
                }
            }
            (Ok(Handshake::Upgraded(ws)), None) => Report {
                established: true,
                problem: self.script(ws).await.err(),
            },
        }
    }

    /// The client's part once the session is open.
    async fn script(self, mut ws: RawWs) -> Result<(), String> {
        match self {
            Scenario::ClientClose => {
                // Long enough for the proxy's 1 s pings on both legs: the
                // RTT histogram gets samples, answered at once.
                for i in 0..6 {
                    ws.echo(&format!("hello #{i}")).await?;
                    ws.idle(Duration::from_millis(250)).await?;
                }
                ws.close_and_expect_echo(1000, "bye").await
            }
            Scenario::ClientGoingAway => {
                ws.echo("hello").await?;
                ws.close_and_expect_echo(1001, "tab closed").await
            }
            Scenario::UpstreamClose => {
                ws.send(OP_TEXT, b"close:1000:done").await?;
                ws.expect_close_and_reply(1000).await
            }
            Scenario::AppCode => {
                ws.send(OP_TEXT, b"close:4001:session expired").await?;
                ws.expect_close_and_reply(4001).await
            }
            Scenario::ClientFin => {
                // A round trip first, so the relay is running; then the
                // socket closes with nothing unread (FIN, not RST).
                ws.echo("bye, silently").await?;
                drop(ws);
                Ok(())
            }
            Scenario::ClientRst => {
                ws.echo("about to reset").await?;
                ws.tcp
                    .set_zero_linger()
                    .map_err(|e| format!("SO_LINGER: {e}"))?;
                drop(ws);
                Ok(())
            }
            Scenario::ClientSilent => {
                // Read, never answer: the proxy's ping goes unanswered and
                // it drops this leg without a Close frame.
                match ws.until_end(false).await? {
                    End::Closed(code) => Err(format!(
                        "expected the proxy to drop the dead leg, got Close {code:?}"
                    )),
                    End::Eof | End::Reset => Ok(()),
                }
            }
            Scenario::ClientProtocolError => {
                ws.write(&encode_frame(true, OP_TEXT, b"unmasked", None))
                    .await?;
                ws.expect_close(1002).await
            }
            Scenario::TooBig => {
                // 80 KiB in two frames: each frame is within
                // limits.max_frame_size, the message is not within
                // limits.max_message_size.
                let half = vec![b'x'; MAX_MESSAGE * 5 / 8];
                ws.send_frame(false, OP_BINARY, &half).await?;
                ws.send_frame(true, OP_CONTINUATION, &half).await?;
                ws.expect_close(1009).await
            }
            Scenario::UpstreamCrash => ws.send_script_expect_1014(b"drop").await,
            Scenario::UpstreamRst => ws.send_script_expect_1014(b"rst").await,
            Scenario::UpstreamSilent => ws.send_script_expect_1014(b"mute").await,
            Scenario::UpstreamBadUtf8 => ws.send_script_expect_1014(b"badutf8").await,
            Scenario::Rejected403 | Scenario::Unreachable502 => Ok(()),
        }
    }
}

// === A raw WebSocket client ===

use crate::protocol::opcode::{
    BINARY as OP_BINARY, CLOSE as OP_CLOSE, CONTINUATION as OP_CONTINUATION, PING as OP_PING,
    PONG as OP_PONG, TEXT as OP_TEXT,
};
const KEY: &str = "d3NwdWxzZSBkZW1vIGtleQ==";
const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x3e];
/// Frames from the proxy larger than this mean something is wrong.
const MAX_INBOUND: usize = 1024 * 1024;

/// The answer to an upgrade request.
enum Handshake {
    Upgraded(RawWs),
    Refused(u16),
}

/// What a read produced.
#[derive(Debug)]
enum Got {
    Data(Vec<u8>),
    Close(Option<u16>),
    Ended(End),
}

/// How a stream ended.
#[derive(Debug)]
enum End {
    Closed(Option<u16>),
    Eof,
    Reset,
}

struct RawWs {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    /// Connect and send the upgrade; `Refused` carries a non-101 status.
    async fn open(addr: SocketAddr, path: &str) -> Result<Handshake, String> {
        let fut = async {
            let mut tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect {addr}: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Key: {KEY}\r\nUser-Agent: wspulse-demo\r\n\r\n"
            );
            tcp.write_all(req.as_bytes())
                .await
                .map_err(|e| format!("sending the upgrade: {e}"))?;
            let mut ws = RawWs {
                tcp,
                buf: Vec::new(),
            };
            let head = loop {
                if let Some(end) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&ws.buf[..end]).into_owned();
                    ws.buf.drain(..end + 4);
                    break head;
                }
                if ws.buf.len() > 16 * 1024 {
                    return Err("response head over 16 KiB".to_string());
                }
                if !ws.fill_some().await.map_err(|e| format!("{e:?}"))? {
                    return Err("connection closed before the handshake answer".to_string());
                }
            };
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("not an HTTP answer: {head:?}"))?;
            if status != 101 {
                return Ok(Handshake::Refused(status));
            }
            let accept = derive_accept_key(KEY.as_bytes());
            let accepted = head.lines().any(|l| {
                l.split_once(':').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == accept
                })
            });
            if !accepted {
                return Err("101 without the right Sec-WebSocket-Accept".to_string());
            }
            Ok(Handshake::Upgraded(ws))
        };
        tokio::time::timeout(STEP, fut)
            .await
            .unwrap_or_else(|_| Err(format!("no handshake answer within {STEP:?}")))
    }

    /// Read more bytes; `Ok(false)` at EOF, `Err(End::Reset)` on a reset.
    async fn fill_some(&mut self) -> Result<bool, End> {
        let mut chunk = [0u8; 8192];
        match self.tcp.read(&mut chunk).await {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(_) => Err(End::Reset),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.tcp
            .write_all(bytes)
            .await
            .map_err(|e| format!("write: {e}"))
    }

    async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> Result<(), String> {
        self.write(&encode_frame(fin, opcode, payload, Some(MASK)))
            .await
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) -> Result<(), String> {
        self.send_frame(true, opcode, payload).await
    }

    /// One frame, whole; cancel-safe (bytes stay buffered until a frame
    /// is complete). Pings are answered when `answer_pings`, pongs skipped.
    async fn next(&mut self, answer_pings: bool) -> Result<Got, String> {
        loop {
            let Some((fin_op, payload)) = self.parse_frame()? else {
                match self.fill_some().await {
                    Ok(true) => continue,
                    Ok(false) => return Ok(Got::Ended(End::Eof)),
                    Err(end) => return Ok(Got::Ended(end)),
                }
            };
            match fin_op & 0x0f {
                OP_PING => {
                    if answer_pings {
                        self.send(OP_PONG, &payload).await?;
                    }
                }
                OP_PONG => {}
                OP_CLOSE => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return Ok(Got::Close(code));
                }
                _ => return Ok(Got::Data(payload)),
            }
        }
    }

    /// A complete frame from the buffer, if there is one.
    fn parse_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, String> {
        let b = &self.buf;
        if b.len() < 2 {
            return Ok(None);
        }
        let (mut len, mut at) = (usize::from(b[1] & 0x7f), 2usize);
        if len == 126 {
            if b.len() < 4 {
                return Ok(None);
            }
            len = usize::from(u16::from_be_bytes([b[2], b[3]]));
            at = 4;
        } else if len == 127 {
            if b.len() < 10 {
                return Ok(None);
            }
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[2..10]);
            len = usize::try_from(u64::from_be_bytes(n)).unwrap_or(usize::MAX);
            at = 10;
        }
        if b[1] & 0x80 != 0 {
            return Err("the proxy sent a masked frame".to_string());
        }
        if len > MAX_INBOUND {
            return Err(format!("the proxy sent a {len}-byte frame"));
        }
        if b.len() < at + len {
            return Ok(None);
        }
        let head = b[0];
        let payload = b[at..at + len].to_vec();
        self.buf.drain(..at + len);
        Ok(Some((head, payload)))
    }

    /// The next frame or end, answering pings, within [`STEP`].
    async fn recv(&mut self, what: &str) -> Result<Got, String> {
        tokio::time::timeout(STEP, self.next(true))
            .await
            .map_err(|_| format!("no {what} within {STEP:?}"))?
    }

    /// Send a text message and expect it back.
    async fn echo(&mut self, text: &str) -> Result<(), String> {
        self.send(OP_TEXT, text.as_bytes()).await?;
        match self.recv("echo").await? {
            Got::Data(d) if d == text.as_bytes() => Ok(()),
            other => Err(format!("expected the echo of {text:?}, got {other:?}")),
        }
    }

    /// Stay connected for `d`, answering pings; anything else is a surprise.
    async fn idle(&mut self, d: Duration) -> Result<(), String> {
        let deadline = Instant::now() + d;
        match tokio::time::timeout_at(deadline, self.next(true)).await {
            Err(_) => Ok(()),
            Ok(got) => Err(format!("while idle: {:?}", got?)),
        }
    }

    /// Expect a Close with `code` (answering pings, no data in between).
    async fn expect_close(&mut self, code: u16) -> Result<(), String> {
        match self.recv(&format!("Close {code}")).await? {
            Got::Close(Some(c)) if c == code => Ok(()),
            other => Err(format!("expected Close {code}, got {other:?}")),
        }
    }

    /// Expect a Close with `code`, answer it, expect the end of the stream.
    async fn expect_close_and_reply(&mut self, code: u16) -> Result<(), String> {
        self.expect_close(code).await?;
        self.send(OP_CLOSE, &code.to_be_bytes()).await?;
        self.until_end(true).await.map(drop)
    }

    /// Send Close `code`, expect the same code back and the end of the stream.
    async fn close_and_expect_echo(&mut self, code: u16, reason: &str) -> Result<(), String> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        self.send(OP_CLOSE, &payload).await?;
        self.expect_close(code).await?;
        self.until_end(true).await.map(drop)
    }

    /// Script the upstream's end; the proxy must send the client 1014.
    async fn send_script_expect_1014(&mut self, script: &[u8]) -> Result<(), String> {
        self.send(OP_TEXT, script).await?;
        self.expect_close_and_reply(1014).await
    }

    /// Read, discarding data, until the stream ends (or a Close arrives).
    async fn until_end(&mut self, answer_pings: bool) -> Result<End, String> {
        let fut = async {
            loop {
                match self.next(answer_pings).await? {
                    Got::Data(_) => continue,
                    Got::Close(code) => {
                        if answer_pings {
                            // Already replied or about to be cut: just drain.
                            continue;
                        }
                        return Ok(End::Closed(code));
                    }
                    Got::Ended(end) => return Ok(end),
                }
            }
        };
        tokio::time::timeout(STEP, fut)
            .await
            .map_err(|_| format!("the stream did not end within {STEP:?}"))?
    }
}

// === What the registries say ===

/// One row of the table: a series of the proxy's outcome counters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RowKey {
    /// `wspulse_connections_closed_total{code, side, cause}`, summed over routes.
    Closed {
        /// Close code.
        code: u16,
        /// `client`, `upstream` or `proxy`.
        side: String,
        /// The cause label.
        cause: String,
    },
    /// `wspulse_handshake_rejections_total{status}`.
    Rejected {
        /// The HTTP status the client got.
        status: u16,
    },
    /// `wspulse_upstream_connect_failures_total{reason}`.
    ConnectFailed {
        /// The reason label.
        reason: String,
    },
}

impl RowKey {
    /// The first three columns: code, side, cause.
    fn columns(&self) -> (String, String, String) {
        match self {
            RowKey::Closed { code, side, cause } => (code.to_string(), side.clone(), cause.clone()),
            RowKey::Rejected { status } => {
                let side = match status {
                    400 | 408 | 426 | 431 => "client",
                    503 => "proxy",
                    _ => "upstream",
                };
                (format!("HTTP {status}"), side.into(), "rejected".into())
            }
            RowKey::ConnectFailed { reason } => {
                let status = if reason == "timeout" { 504 } else { 502 };
                (format!("HTTP {status}"), "upstream".into(), reason.clone())
            }
        }
    }

    /// `code/side/cause`, for the check's messages.
    fn short(&self) -> String {
        let (a, b, c) = self.columns();
        format!("{a}/{b}/{c}")
    }

    /// What the row means, in plain language.
    pub fn meaning(&self) -> String {
        match self {
            RowKey::Closed { code, side, cause } => {
                explain::meaning(*code, side, cause).short.into()
            }
            RowKey::Rejected { status } => match status {
                400 => "not a valid WebSocket upgrade".into(),
                408 => "client too slow to send its upgrade".into(),
                426 => "Upgrade header or WebSocket version missing".into(),
                431 => "request head too large".into(),
                503 => "over limits.max_connections, or draining".into(),
                s => format!("upstream refused the upgrade; client got {s} too, no session"),
            },
            RowKey::ConnectFailed { reason } => match reason.as_str() {
                "refused" => "upstream unreachable: connection refused",
                "timeout" => "upstream did not answer within connect_timeout",
                "dns" => "upstream host name did not resolve",
                "tls" => "TLS to the upstream failed",
                "protocol" => "upstream broke the WebSocket handshake",
                _ => "upstream connect failed",
            }
            .into(),
        }
    }
}

/// What the proxy's registries say, summed over instances and routes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Outcome counters, zero-valued series included.
    pub rows: BTreeMap<RowKey, u64>,
    /// `wspulse_connections_opened_total`.
    pub opened: u64,
    /// `wspulse_connections_active`.
    pub active: u64,
    /// `wspulse_messages_total`: client→upstream, upstream→client.
    pub messages: [u64; 2],
    /// `wspulse_ping_rtt_seconds` buckets (upper bound, cumulative count):
    /// client leg, upstream leg.
    pub rtt: [Vec<(f64, u64)>; 2],
    /// `wspulse_idle_before_close_seconds{class="abnormal"}` buckets
    /// (upper bound, cumulative count): the idle-limit fingerprint.
    pub idle: Vec<(f64, u64)>,
}

impl Snapshot {
    /// Parse the Prometheus text of [`Metrics::encode`] (what `/metrics` serves).
    pub fn from_text(text: &str) -> Snapshot {
        // A sample's value as a count (0 for junk).
        let count = |v: f64| {
            if v.is_finite() && v > 0.0 {
                v.round() as u64
            } else {
                0
            }
        };
        let samples = explain::parse(text);
        let mut s = Snapshot::default();
        for sample in &samples {
            let get = |k: &str| sample.labels.get(k).map_or("", String::as_str);
            let n = count(sample.value);
            let mut row = |key: RowKey| *s.rows.entry(key).or_default() += n;
            match sample.name.as_str() {
                names::CLOSED => row(RowKey::Closed {
                    code: get("code").parse().unwrap_or(0),
                    side: get("side").into(),
                    cause: get("cause").into(),
                }),
                names::REJECTIONS => row(RowKey::Rejected {
                    status: get("status").parse().unwrap_or(0),
                }),
                names::CONNECT_FAILURES => row(RowKey::ConnectFailed {
                    reason: get("reason").into(),
                }),
                names::OPENED => s.opened += n,
                names::ACTIVE => s.active += n,
                names::MESSAGES => match get("direction") {
                    "client_to_upstream" => s.messages[0] += n,
                    "upstream_to_client" => s.messages[1] += n,
                    _ => {}
                },
                _ => {}
            }
        }
        let buckets = |name: &str, label: (&str, &str)| -> Vec<(f64, u64)> {
            explain::buckets(&samples, name, label)
                .into_iter()
                .map(|(le, c)| (le, count(c)))
                .collect()
        };
        s.rtt = ["client", "upstream"].map(|side| buckets(names::PING_RTT, ("side", side)));
        s.idle = buckets(names::IDLE_BEFORE_CLOSE, ("class", "abnormal"));
        s
    }

    /// Add another instance's snapshot.
    pub fn add(&mut self, other: &Snapshot) {
        for (k, v) in &other.rows {
            *self.rows.entry(k.clone()).or_default() += v;
        }
        self.opened += other.opened;
        self.active += other.active;
        for i in 0..2 {
            self.messages[i] += other.messages[i];
            self.rtt[i] = merge_buckets(&self.rtt[i], &other.rtt[i], |a, b| a + b);
        }
        self.idle = merge_buckets(&self.idle, &other.idle, |a, b| a + b);
    }

    /// What happened since `base`: counters as deltas, `active` as is.
    pub fn since(&self, base: &Snapshot) -> Snapshot {
        let rows = self
            .rows
            .iter()
            .map(|(k, v)| {
                let b = base.rows.get(k).copied().unwrap_or(0);
                (k.clone(), v.saturating_sub(b))
            })
            .collect();
        Snapshot {
            rows,
            opened: self.opened.saturating_sub(base.opened),
            active: self.active,
            messages: [
                self.messages[0].saturating_sub(base.messages[0]),
                self.messages[1].saturating_sub(base.messages[1]),
            ],
            rtt: [
                merge_buckets(&self.rtt[0], &base.rtt[0], u64::saturating_sub),
                merge_buckets(&self.rtt[1], &base.rtt[1], u64::saturating_sub),
            ],
            idle: merge_buckets(&self.idle, &base.idle, u64::saturating_sub),
        }
    }
}

/// Combine two bucket lists bound by bound (a bound missing in one counts 0).
fn merge_buckets(a: &[(f64, u64)], b: &[(f64, u64)], f: fn(u64, u64) -> u64) -> Vec<(f64, u64)> {
    let mut bounds: Vec<f64> = a.iter().chain(b).map(|x| x.0).collect();
    bounds.sort_by(f64::total_cmp);
    bounds.dedup();
    let at = |l: &[(f64, u64)], le: f64| l.iter().find(|x| x.0 == le).map_or(0, |x| x.1);
    bounds
        .into_iter()
        .map(|le| (le, f(at(a, le), at(b, le))))
        .collect()
}

fn rates(prev: &Snapshot, now: &Snapshot, dt: f64) -> [f64; 2] {
    let dt = dt.max(0.001);
    [0, 1].map(|i| now.messages[i].saturating_sub(prev.messages[i]) as f64 / dt)
}

// === The table ===

/// Everything one rendering of the table shows.
pub struct View<'a> {
    /// `12.3 s, running` or `final, after 5.0 s`.
    pub title: String,
    /// Addresses for the header.
    pub endpoints: &'a Endpoints,
    /// Scenarios started.
    pub started: u64,
    /// Scenarios finished.
    pub done: u64,
    /// Client-side problems so far.
    pub problems: usize,
    /// What the registries say (deltas since the demo started).
    pub snap: &'a Snapshot,
    /// Over what the message rates are taken.
    pub rate_label: String,
    /// Messages/s client→upstream, upstream→client.
    pub rates: [f64; 2],
}

fn fmt_ms(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".into(),
        Some(s) => {
            let ms = s * 1000.0;
            if ms < 10.0 {
                format!("{ms:.2} ms")
            } else if ms < 100.0 {
                format!("{ms:.1} ms")
            } else {
                format!("{ms:.0} ms")
            }
        }
    }
}

/// The table, as plain text lines.
pub fn render(v: &View<'_>) -> String {
    let s = v.snap;
    let mut o = String::new();
    let e = v.endpoints;
    let _ = writeln!(o, "wspulse demo: {}", v.title);
    let _ = writeln!(
        o,
        "  clients -> proxy {} -> echo upstream {}",
        e.proxy, e.upstream
    );
    let _ = writeln!(
        o,
        "  metrics: {}   (502 scenario: {})",
        e.metrics, e.metrics_unreachable
    );
    let _ = writeln!(
        o,
        "  scenarios: {} started, {} done, {} client-side problems",
        v.started, v.done, v.problems
    );
    let _ = writeln!(
        o,
        "  sessions: {} opened, {} active   messages/s ({}): {:.1} client->upstream, {:.1} upstream->client",
        s.opened, s.active, v.rate_label, v.rates[0], v.rates[1]
    );
    let rtt = s
        .rtt
        .each_ref()
        .map(|b| b.iter().map(|&(le, n)| (le, n as f64)).collect::<Vec<_>>());
    let p = |i: usize, q: f64| fmt_ms(explain::quantile(&rtt[i], q));
    let _ = writeln!(
        o,
        "  ping RTT (from histogram buckets): client p50 {} p99 {}, upstream p50 {} p99 {}",
        p(0, 0.5),
        p(0, 0.99),
        p(1, 0.5),
        p(1, 0.99)
    );
    let idle: Vec<(f64, f64)> = s.idle.iter().map(|&(le, n)| (le, n as f64)).collect();
    let secs = |q: f64| {
        explain::quantile(&idle, q).map_or_else(|| "n/a".to_string(), |v| format!("{v:.1} s"))
    };
    let _ = writeln!(
        o,
        "  idle before an abnormal close (a cluster at 30/60/100/350 s = an idle timeout): p50 {} p99 {}",
        secs(0.5),
        secs(0.99)
    );
    let rows: Vec<(&RowKey, u64)> = s
        .rows
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| (k, *n))
        .collect();
    let total: u64 = rows.iter().map(|(_, n)| n).sum();
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "  {:<8}  {:<8}  {:<15}  {:>7}  {:>6}  meaning",
        "code", "side", "cause", "count", "share"
    );
    let mut in_http = false;
    for (key, n) in &rows {
        let http = !matches!(key, RowKey::Closed { .. });
        if http && !in_http {
            let _ = writeln!(o, "  -- handshakes that never became sessions --");
            in_http = true;
        }
        let (code, side, cause) = key.columns();
        let share = 100.0 * *n as f64 / total.max(1) as f64;
        let _ = writeln!(
            o,
            "  {code:<8}  {side:<8}  {cause:<15}  {n:>7}  {share:>5.1}%  {}",
            key.meaning()
        );
    }
    if rows.is_empty() {
        let _ = writeln!(o, "  (nothing has ended yet)");
    }
    let _ = writeln!(
        o,
        "\n  rows: wspulse_connections_closed_total{{code,side,cause}}; HTTP rows: \
         wspulse_handshake_rejections_total{{status}}, wspulse_upstream_connect_failures_total{{reason}}"
    );
    o
}

/// Every row where what was injected and what the proxy recorded differ.
pub fn check(
    expected: &BTreeMap<RowKey, u64>,
    recorded: &BTreeMap<RowKey, u64>,
) -> Vec<(RowKey, u64, u64)> {
    let mut keys: Vec<&RowKey> = expected.keys().chain(recorded.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let want = expected.get(k).copied().unwrap_or(0);
            let got = recorded.get(k).copied().unwrap_or(0);
            (want != got).then(|| (k.clone(), want, got))
        })
        .collect()
}

/// The closing lines: the check, then the clients' problems, if any.
fn check_report(
    scenarios: u64,
    mismatches: &[(RowKey, u64, u64)],
    problems: &[String],
    expected: &BTreeMap<RowKey, u64>,
) -> String {
    let mut o = String::new();
    let kinds = expected.len();
    if mismatches.is_empty() {
        let _ = writeln!(
            o,
            "\ndemo check: {scenarios} scenarios, all classified as injected ({kinds} kinds of ending)"
        );
    } else {
        let _ = writeln!(
            o,
            "\ndemo check: {scenarios} scenarios, {} mismatches:",
            mismatches.len()
        );
        for (k, want, got) in mismatches {
            let _ = writeln!(
                o,
                "  mismatch: {}: injected {want}, proxy recorded {got}",
                k.short()
            );
        }
    }
    if !problems.is_empty() {
        let _ = writeln!(o, "client-side problems ({}):", problems.len());
        for p in problems.iter().take(50) {
            let _ = writeln!(o, "  {p}");
        }
        if problems.len() > 50 {
            let _ = writeln!(o, "  … and {} more", problems.len() - 50);
        }
    }
    o
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_is_in_the_cycle_and_expects_a_distinct_row() {
        for s in Scenario::ALL {
            assert!(CYCLE.contains(&s), "{} not in the cycle", s.name());
        }
        let mut rows: Vec<RowKey> = Scenario::ALL.iter().map(|s| s.expected()).collect();
        rows.sort();
        rows.dedup();
        assert_eq!(rows.len(), Scenario::ALL.len());
    }

    #[test]
    fn demo_settings_are_valid() {
        let s = demo_settings("ws://127.0.0.1:9").unwrap();
        assert_eq!(s.keepalive.interval, Duration::from_secs(1));
        assert_eq!(s.limits.max_message_size, MAX_MESSAGE);
        assert_eq!(s.listen.addr.port(), 0);
    }

    #[test]
    fn parses_what_metrics_encode_says() {
        let text = "\
# HELP wspulse_connections_closed_total x
# TYPE wspulse_connections_closed_total counter
wspulse_connections_closed_total{cause=\"eof\",code=\"1006\",route=\"default\",side=\"client\"} 3
wspulse_connections_closed_total{cause=\"eof\",code=\"1006\",route=\"chat\",side=\"client\"} 2
wspulse_connections_closed_total{cause=\"close_frame\",code=\"1000\",route=\"default\",side=\"upstream\"} 0
wspulse_handshake_rejections_total{status=\"403\"} 4
wspulse_upstream_connect_failures_total{reason=\"refused\"} 1
wspulse_connections_opened_total{route=\"default\"} 7
wspulse_connections_active 2
wspulse_messages_total{direction=\"client_to_upstream\"} 10
wspulse_ping_rtt_seconds_bucket{side=\"client\",le=\"0.001\"} 1
wspulse_ping_rtt_seconds_bucket{side=\"client\",le=\"+Inf\"} 2
";
        let s = Snapshot::from_text(text);
        let eof = RowKey::Closed {
            code: 1006,
            side: "client".into(),
            cause: "eof".into(),
        };
        assert_eq!(s.rows[&eof], 5);
        assert_eq!(s.rows[&RowKey::Rejected { status: 403 }], 4);
        assert_eq!(s.opened, 7);
        assert_eq!(s.active, 2);
        assert_eq!(s.messages, [10, 0]);
        assert_eq!(s.rtt[0], vec![(0.001, 1), (f64::INFINITY, 2)]);
        let d = s.since(&s);
        assert!(d.rows.values().all(|v| *v == 0));
        assert_eq!(d.active, 2);
    }

    #[test]
    fn check_lists_every_difference() {
        let k = |c: u16| RowKey::Closed {
            code: c,
            side: "client".into(),
            cause: "close_frame".into(),
        };
        let expected = BTreeMap::from([(k(1000), 3), (RowKey::Rejected { status: 403 }, 1)]);
        let recorded = BTreeMap::from([
            (k(1000), 3),
            (k(1001), 0),
            (k(1005), 1),
            (RowKey::Rejected { status: 403 }, 0),
        ]);
        let m = check(&expected, &recorded);
        assert_eq!(
            m,
            vec![(k(1005), 0, 1), (RowKey::Rejected { status: 403 }, 1, 0)]
        );
        let text = check_report(4, &m, &[], &expected);
        assert!(
            text.contains("demo check: 4 scenarios, 2 mismatches:"),
            "{text}"
        );
        assert!(text.contains("1005/client/close_frame: injected 0, proxy recorded 1"));
        let ok = check_report(4, &[], &[], &expected);
        assert!(ok.contains("demo check: 4 scenarios, all classified as injected"));
    }

    /// The table for a fixed set of counts, character for character.
    #[test]
    fn table_snapshot() {
        let closed = |code: u16, side: &str, cause: &str| RowKey::Closed {
            code,
            side: side.into(),
            cause: cause.into(),
        };
        let rows = BTreeMap::from([
            (closed(1000, "client", "close_frame"), 40),
            (closed(1000, "upstream", "close_frame"), 20),
            (closed(1006, "client", "eof"), 10),
            (closed(1006, "client", "ping_timeout"), 5),
            (closed(1006, "upstream", "eof"), 0), // pre-registered, hidden
            (closed(1009, "client", "message_too_big"), 5),
            (closed(4001, "upstream", "close_frame"), 10),
            (RowKey::Rejected { status: 403 }, 5),
            (RowKey::Rejected { status: 503 }, 0),
            (
                RowKey::ConnectFailed {
                    reason: "refused".into(),
                },
                5,
            ),
        ]);
        let snap = Snapshot {
            rows,
            opened: 93,
            active: 3,
            messages: [120, 118],
            rtt: [
                vec![(0.0005, 10), (0.001, 20), (f64::INFINITY, 20)],
                vec![(0.0005, 0), (0.001, 4), (0.0025, 5), (f64::INFINITY, 5)],
            ],
            idle: vec![(0.5, 10), (1.0, 18), (5.0, 20), (f64::INFINITY, 20)],
        };
        let endpoints = Endpoints {
            proxy: "ws://127.0.0.1:40001".into(),
            upstream: "ws://127.0.0.1:40000".into(),
            metrics: "http://127.0.0.1:40002/metrics".into(),
            metrics_unreachable: "http://127.0.0.1:40004/metrics".into(),
        };
        let view = View {
            title: "12.0 s, running".into(),
            endpoints: &endpoints,
            started: 100,
            done: 97,
            problems: 0,
            snap: &snap,
            rate_label: "last 1 s".into(),
            rates: [40.0, 39.5],
        };
        let expected = "\
wspulse demo: 12.0 s, running
  clients -> proxy ws://127.0.0.1:40001 -> echo upstream ws://127.0.0.1:40000
  metrics: http://127.0.0.1:40002/metrics   (502 scenario: http://127.0.0.1:40004/metrics)
  scenarios: 100 started, 97 done, 0 client-side problems
  sessions: 93 opened, 3 active   messages/s (last 1 s): 40.0 client->upstream, 39.5 upstream->client
  ping RTT (from histogram buckets): client p50 0.50 ms p99 0.99 ms, upstream p50 0.81 ms p99 2.43 ms
  idle before an abnormal close (a cluster at 30/60/100/350 s = an idle timeout): p50 0.5 s p99 4.6 s

  code      side      cause              count   share  meaning
  1000      client    close_frame           40   40.0%  normal closure
  1000      upstream  close_frame           20   20.0%  normal closure
  1006      client    eof                   10   10.0%  no Close frame: peer vanished / network / idle kill
  1006      client    ping_timeout           5    5.0%  peer stopped answering pings (dead or black-holed)
  1009      client    message_too_big        5    5.0%  message too big (over limits.max_message_size)
  4001      upstream  close_frame           10   10.0%  application code
  -- handshakes that never became sessions --
  HTTP 403  upstream  rejected               5    5.0%  upstream refused the upgrade; client got 403 too, no session
  HTTP 502  upstream  refused                5    5.0%  upstream unreachable: connection refused

  rows: wspulse_connections_closed_total{code,side,cause}; HTTP rows: wspulse_handshake_rejections_total{status}, wspulse_upstream_connect_failures_total{reason}
";
        let got = render(&view);
        assert_eq!(got, expected, "\n--- got ---\n{got}");
    }
}
