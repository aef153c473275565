//! `wspulse demo`: an upstream, the proxy and synthetic clients in one
//! process, and a live table of what the proxy records.
//!
//! What runs, all on 127.0.0.1 with ports picked by the OS:
//!
//! - the echo upstream of [`crate::kit::echo`];
//! - the real proxy ([`Running`]) in front of it, configured through the
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
//!   the proxy tells apart ([`Scenario`]);
//! - two groups of reconnecting clients ([`reconnect`]), each on a proxy
//!   instance of its own (same settings plus `clients.identity =
//!   "header:X-Demo-Client"`): their sessions end by an upstream crash
//!   after 200 ms, and they come back at once (`no-backoff`: within
//!   0–50 ms) or with exponential backoff and full jitter (`backoff`:
//!   0–250 ms·2ⁿ, capped at 4 s). With the histogram's labels only
//!   `class`/`side`, an instance per group is what keeps the two
//!   distributions apart honestly; their sessions are not in the rows
//!   above, they have their own section and check.
//!
//! Every number in the table is parsed from
//! [`crate::metrics::Metrics::encode`], the same
//! text `/metrics` serves, never from the demo's own bookkeeping (the
//! growth of the backoff group's delays comes from its instance's
//! `/closures` records, read in-process). The demo
//! also knows what it injected: at the end it compares, row by row, what
//! each scenario must produce with the registries' deltas since the start,
//! and prints `demo check: N scenarios, all classified as injected` or
//! every mismatch (exit 1). What the clients themselves saw (the Close
//! code the proxy sent them, the HTTP status) is checked too, and every
//! surprise is reported, never a panic. The reconnecting groups are
//! checked by [`check::check_reconnects`] (`demo check: reconnects as
//! injected: …`, exit 1 on a mismatch): every session counted as the
//! crash it was and every reconnect observed (one per client may be
//! measured against the ending before, should it race the record of its
//! previous ending), the no-backoff group at
//! least 90 % within 1 s, the backoff group's p50 at least twice the
//! no-backoff group's, and its delays growing (3rd–6th reconnects at
//! least twice the first, on average). A run too short to judge them
//! (under about 4 s) says what it did not check instead of failing.
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
//! | reconnecting group | clients | each session                         | then waits, before reconnect `n`     | section of the table (own instance)               |
//! |--------------------|---------|--------------------------------------|--------------------------------------|---------------------------------------------------|
//! | `no-backoff`       | 3       | 200 ms, then the upstream crashes (`drop`) | 0–50 ms                        | sessions, reconnects, p50, p90, share < 1 s       |
//! | `backoff`          | 6       | the same                             | 0–min(4 s, 250 ms·2ⁿ), full jitter   | the same                                          |
//!
//! The clients speak through the kit's raw-frame peer
//! ([`crate::kit::raw`]): they must send what well-behaved libraries refuse
//! to (an unmasked frame), read codes some refuse to read (1014), and
//! reset or abandon a socket at a precise moment.
//!
//! The parts: [`scenarios`] (what each client does and the row it must
//! produce), [`reconnect`] (the reconnecting groups and what their
//! instances recorded), [`snapshot`] (the registries' text read back),
//! [`table`] (the rendering), [`mod@check`] (injected against recorded);
//! this file runs them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{self, ConfigErrors, Settings};
use crate::kit::EchoServer;
use crate::server::{Running, StartError};

pub mod check;
pub mod reconnect;
pub mod scenarios;
pub mod snapshot;
pub mod table;

use check::{Made, check, check_reconnects, check_report};
use reconnect::{ClientReport, FirstReconnects, Group, GroupRow};
use scenarios::{CYCLE, Report, Scenario, Targets};
use snapshot::{RowKey, Snapshot, rates};
use table::{Endpoints, View, render};
/// Largest message the demo proxy accepts (`limits.max_message_size`).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// A new round of scenarios starts this often.
const TICK: Duration = Duration::from_millis(300);
/// Scenarios started per round.
const PER_TICK: usize = 4;
/// After the run: how long to wait for scenarios in flight, then for the
/// proxy to count their sessions.
const WIND_DOWN: Duration = Duration::from_secs(15);

// === Entry point ===

/// `wspulse demo [--duration SECS]`: run until Ctrl-C or `duration`, print
/// the final table and the check. Exit 0 when every scenario was
/// classified as injected, 1 otherwise (or when the demo cannot start).
pub fn run(duration: Option<Duration>) -> ExitCode {
    let ran = tokio::runtime::Runtime::new()
        .map_err(DemoError::Runtime)
        .and_then(|runtime| runtime.block_on(run_async(duration)));
    match ran {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("wspulse demo: {e}");
            ExitCode::from(1)
        }
    }
}

/// The demo's proxy settings, through the normal loader (and its
/// validation); the process environment is deliberately not consulted.
pub fn demo_settings(upstream_url: &str) -> Result<Settings, ConfigErrors> {
    settings_with(upstream_url, "")
}

/// The settings of a reconnecting group's instance: the demo's, with each
/// client identified by the header [`reconnect::HEADER`].
pub fn group_settings(upstream_url: &str) -> Result<Settings, ConfigErrors> {
    let clients = format!("[clients]\nidentity = \"header:{}\"\n", reconnect::HEADER);
    settings_with(upstream_url, &clients)
}

fn settings_with(upstream_url: &str, more: &str) -> Result<Settings, ConfigErrors> {
    let toml = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n\
         [upstream]\nurl = \"{upstream_url}\"\nconnect_timeout = \"2s\"\n\
         [keepalive]\ninterval = \"1s\"\ntimeout = \"1s\"\n\
         [limits]\nmax_message_size = {MAX_MESSAGE}\nmax_frame_size = {MAX_MESSAGE}\n\
         [admin]\naddr = \"127.0.0.1:0\"\n\
         [shutdown]\ndrain_timeout = \"2s\"\n{more}"
    );
    config::load_str(&toml, &Default::default())
}

/// Why the demo could not run (its check failing is not an error: that is
/// its report).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The runtime could not be built.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// The demo's own settings were refused (a bug).
    #[error("demo settings refused:\n{0}")]
    Settings(#[from] ConfigErrors),
    /// The echo upstream could not listen.
    #[error("cannot start the echo upstream: {0}")]
    Echo(std::io::Error),
    /// The port for the unreachable upstream could not be reserved.
    #[error("cannot reserve a port for the unreachable upstream: {0}")]
    Hole(std::io::Error),
    /// A proxy instance could not start.
    #[error(transparent)]
    Start(#[from] StartError),
}

async fn run_async(duration: Option<Duration>) -> Result<bool, DemoError> {
    let stage = Stage::start().await?;
    let tty = std::io::stdout().is_terminal();
    if tty {
        // A clean screen: the live table is redrawn from its top-left.
        out("\x1b[2J\x1b[H");
    }
    out(&stage.banner(duration.is_some()));
    let baseline = stage.scrape();
    let started = Instant::now();
    let mut book = Book::default();
    let mut tasks = JoinSet::new();
    let stop = CancellationToken::new();
    let mut groups = stage.start_groups(&stop);
    live(
        &stage, &baseline, started, tty, duration, &mut book, &mut tasks,
    )
    .await;
    // The reconnecting clients finish the session they are in and stop.
    stop.cancel();

    // Wind down: no new scenarios; let those in flight finish (each wait
    // of theirs is bounded), then let the proxy count their sessions.
    let ran_for = started.elapsed();
    out(&format!(
        "\nstopping after {:.1} s: waiting for {} scenarios in flight (Ctrl-C again to cut)\n",
        ran_for.as_secs_f64(),
        tasks.len()
    ));
    let cut = tokio::select! {
        _ = wind_down(&stage, &mut book, &mut tasks, &mut groups) => false,
        _ = ctrl_c() => true,
    };
    let in_flight = tasks.len() + groups.len();
    tasks.abort_all();
    groups.abort_all();

    let snap = stage.scrape().since(&baseline);
    stage.poll_first_reconnects();
    let (report, ok) = final_report(&stage, &book, &snap, ran_for, cut, in_flight);
    show(tty, &report);
    stage.stop().await;
    Ok(ok)
}

/// The scenarios' tasks: each says which scenario, its number, and how it went.
type Tasks = JoinSet<(Scenario, u64, Report)>;

/// The reconnecting clients' tasks: each says its group and what it did.
type GroupTasks = JoinSet<(Group, usize, ClientReport)>;

/// Everything the demo runs besides its clients.
struct Stage {
    echo: EchoServer,
    /// Bound but not listening: connecting to it is refused, and the port
    /// cannot be taken by anything else while the demo runs.
    hole: tokio::net::TcpSocket,
    hole_addr: SocketAddr,
    main: Running,
    /// The instance whose upstream is `hole`.
    unreachable: Running,
    /// One instance per reconnecting group ([`Group::ALL`] order), so that
    /// each group's `wspulse_reconnect_delay_seconds` is its own.
    groups: [Running; 2],
    endpoints: Endpoints,
    /// `/metrics` URLs of the groups' instances.
    group_metrics: Vec<String>,
    /// The backoff clients' first reconnects, from its instance's ring.
    first_reconnects: std::sync::Mutex<FirstReconnects>,
}

impl Stage {
    async fn start() -> Result<Stage, DemoError> {
        let echo = EchoServer::start().await.map_err(DemoError::Echo)?;
        let hole = tokio::net::TcpSocket::new_v4()
            .and_then(|hole| {
                hole.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
                Ok(hole)
            })
            .map_err(DemoError::Hole)?;
        let hole_addr = hole.local_addr().map_err(DemoError::Hole)?;
        let main = Running::start(demo_settings(&echo.url())?).await?;
        let unreachable = Running::start(demo_settings(&format!("ws://{hole_addr}"))?).await?;
        let groups = [
            Running::start(group_settings(&echo.url())?).await?,
            Running::start(group_settings(&echo.url())?).await?,
        ];
        let group_metrics = groups
            .iter()
            .map(|g| format!("http://{}/metrics", g.admin_addr()))
            .collect();
        let endpoints = Endpoints {
            proxy: format!("ws://{}", main.addr()),
            upstream: echo.url(),
            metrics: format!("http://{}/metrics", main.admin_addr()),
            metrics_unreachable: format!("http://{}/metrics", unreachable.admin_addr()),
        };
        Ok(Stage {
            echo,
            hole,
            hole_addr,
            main,
            unreachable,
            groups,
            endpoints,
            group_metrics,
            first_reconnects: Default::default(),
        })
    }

    /// Start every reconnecting client; they run until `stop`.
    fn start_groups(&self, stop: &CancellationToken) -> GroupTasks {
        let mut tasks = JoinSet::new();
        for (group, instance) in Group::ALL.into_iter().zip(&self.groups) {
            let addr = instance.addr();
            for index in 1..=group.clients() {
                let stop = stop.clone();
                tasks.spawn(async move {
                    let report = reconnect::run_client(group, index, addr, stop).await;
                    (group, index, report)
                });
            }
        }
        tasks
    }

    /// Each group's line, from its instance's registry.
    fn group_rows(&self) -> Vec<GroupRow> {
        Group::ALL
            .into_iter()
            .zip(&self.groups)
            .map(|(group, instance)| {
                let s = Snapshot::from_text(&instance.metrics().encode());
                GroupRow {
                    group,
                    sessions: s.opened,
                    delays: s.reconnect,
                }
            })
            .collect()
    }

    /// Keep the backoff clients' first reconnects from its ring (often
    /// enough that the ring never drops one first: see [`FirstReconnects`]).
    fn poll_first_reconnects(&self) {
        let mut f = self
            .first_reconnects
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        f.poll(self.groups[1].metrics());
    }

    /// The lines printed before the first table.
    fn banner(&self, bounded: bool) -> String {
        let e = &self.endpoints;
        format!(
            "wspulse demo: clients -> proxy {} -> echo upstream {}\n\
             \x20 keepalive 1s/1s, max message 64 KiB; a round of {PER_TICK} scenarios every {} ms\n\
             \x20 while it runs: curl -s {}   (also /closures, /healthz)\n\
             \x20 the 502 scenario uses a second proxy instance (upstream {}, nothing listens): {}\n\
             \x20 reconnecting clients, one instance per group: {} ({}), {} ({})\n\
             \x20 Ctrl-C{} to stop\n",
            e.proxy,
            e.upstream,
            TICK.as_millis(),
            e.metrics,
            self.hole_addr,
            e.metrics_unreachable,
            Group::NoBackoff.name(),
            self.group_metrics[0],
            Group::Backoff.name(),
            self.group_metrics[1],
            if bounded { " or --duration" } else { "" },
        )
    }

    /// What both instances' registries say, summed.
    fn scrape(&self) -> Snapshot {
        let mut s = Snapshot::default();
        for i in [&self.main, &self.unreachable] {
            s.add(&Snapshot::from_text(&i.metrics().encode()));
        }
        s
    }

    async fn stop(self) {
        // Each drain is bounded by the demo's drain_timeout (2 s); a proxy
        // panic surfaces here rather than vanishing with the runtime.
        let [no_backoff, backoff] = self.groups;
        for instance in [self.main, self.unreachable, no_backoff, backoff] {
            let _ = tokio::time::timeout(Duration::from_secs(5), instance.shutdown()).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.echo.shutdown()).await;
        drop(self.hole);
    }
}

/// Launch a round of scenarios every [`TICK`] and redraw the table, until
/// `duration` has passed or Ctrl-C.
async fn live(
    stage: &Stage,
    baseline: &Snapshot,
    started: Instant,
    tty: bool,
    duration: Option<Duration>,
    book: &mut Book,
    tasks: &mut Tasks,
) {
    let targets = Targets {
        main: stage.main.addr(),
        unreachable: stage.unreachable.addr(),
    };
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
                let snap = stage.scrape();
                stage.poll_first_reconnects();
                let groups = stage.group_rows();
                let dt = now.duration_since(prev.0).as_secs_f64();
                let view = View {
                    title: format!("{:.1} s, running", started.elapsed().as_secs_f64()),
                    endpoints: &stage.endpoints,
                    started: book.launched,
                    done: book.done,
                    problems: book.problems.len(),
                    snap: &snap.since(baseline),
                    rate_label: format!("last {} s", refresh_every.as_secs()),
                    rates: rates(&prev.1, &snap, dt),
                    groups: &groups,
                    group_metrics: &stage.group_metrics,
                };
                show(tty, &render(&view));
                prev = (now, snap);
            }
            Some(joined) = tasks.join_next() => book.record(joined),
        }
    }
}

/// Let the scenarios in flight finish, then the proxy count their
/// sessions, within [`WIND_DOWN`].
async fn wind_down(stage: &Stage, book: &mut Book, tasks: &mut Tasks, groups: &mut GroupTasks) {
    let deadline = Instant::now() + WIND_DOWN;
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
        book.record(joined);
    }
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, groups.join_next()).await {
        book.record_group(joined);
    }
    let limit = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    stage
        .main
        .metrics()
        .wait_ended(book.established, limit)
        .await;
    for (instance, made) in stage.groups.iter().zip(book.made) {
        instance.metrics().wait_ended(made.sessions, limit).await;
    }
}

/// The final table and the check; whether the demo passed.
fn final_report(
    stage: &Stage,
    book: &Book,
    snap: &Snapshot,
    ran_for: Duration,
    cut: bool,
    in_flight: usize,
) -> (String, bool) {
    let elapsed = ran_for.as_secs_f64().max(0.001);
    let groups = stage.group_rows();
    let view = View {
        title: format!("final, after {elapsed:.1} s"),
        endpoints: &stage.endpoints,
        started: book.launched,
        done: book.done,
        problems: book.problems.len(),
        snap,
        rate_label: "average".into(),
        rates: [
            snap.messages[0] as f64 / elapsed,
            snap.messages[1] as f64 / elapsed,
        ],
        groups: &groups,
        group_metrics: &stage.group_metrics,
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
        let reconnects = check_groups(stage, book, &groups);
        report.push_str(&reconnects.report());
        mismatches.is_empty() && book.problems.is_empty() && reconnects.ok()
    };
    (report, ok)
}

/// A table: redrawn in place on a terminal, appended otherwise.
fn show(tty: bool, table: &str) {
    if tty {
        out(&redraw(table));
    } else {
        out(&format!("\n{table}"));
    }
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
    /// What each reconnecting group's clients did ([`Group::ALL`] order).
    made: [Made; 2],
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

    fn record_group(
        &mut self,
        joined: Result<(Group, usize, ClientReport), tokio::task::JoinError>,
    ) {
        match joined {
            Ok((group, index, report)) => {
                let made = &mut self.made[usize::from(group == Group::Backoff)];
                made.sessions += report.sessions;
                made.clients += u64::from(report.sessions > 0);
                let who = format!("{} client {index}", group.name());
                for p in report.problems {
                    self.problems.push(format!("{who}: {p}"));
                }
                if report.more_problems > 0 {
                    self.problems
                        .push(format!("{who}: {} more problems", report.more_problems));
                }
            }
            Err(e) => self
                .problems
                .push(format!("a reconnecting client's task failed: {e}")),
        }
    }
}

/// The reconnecting groups' check: every session of theirs counted as the
/// upstream crash it was (by its own instance), and their delays as the
/// groups behave ([`check_reconnects`]).
fn check_groups(stage: &Stage, book: &Book, groups: &[GroupRow]) -> check::ReconnectCheck {
    let growth = stage
        .first_reconnects
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .growth();
    let (Some(no), Some(back)) = (groups.first(), groups.get(1)) else {
        return check::ReconnectCheck::default();
    };
    let mut c = check_reconnects(no, back, book.made, &growth);
    let crash = Scenario::UpstreamCrash.expected();
    for ((group, instance), made) in Group::ALL.into_iter().zip(&stage.groups).zip(book.made) {
        let recorded = Snapshot::from_text(&instance.metrics().encode()).rows;
        let expected = BTreeMap::from([(crash.clone(), made.sessions)]);
        for (k, want, got) in check(&expected, &recorded) {
            c.failed.push(format!(
                "{}: {}: injected {want}, proxy recorded {got}",
                group.name(),
                k.short()
            ));
        }
    }
    c
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn demo_settings_are_valid() {
        let s = demo_settings("ws://127.0.0.1:9").unwrap();
        assert_eq!(s.keepalive.interval, Duration::from_secs(1));
        assert_eq!(s.limits.max_message_size, MAX_MESSAGE);
        assert_eq!(s.listen.addr.port(), 0);
    }
}
