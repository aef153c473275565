//! One WebSocket session: the relay between a client leg and an upstream leg.
//!
//! One task per session, one loop owning both legs' state. Each turn of the
//! loop polls, in order: the drain signals, the keepalive timer, then the
//! two legs' reads (alternating which goes first, for fairness), then any
//! pending flushes, and returns the first `Event`; a source that returned
//! `Pending` is skipped until its own waker fires. The handler acts on the
//! event and loops. Because a read is only polled when the *other* leg can
//! take a message, a slow reader slows its writer down (backpressure)
//! instead of growing a buffer; because flushes are polled after reads, a
//! burst of messages already in the socket goes out in one write.
//!
//! The first terminal event (a Close frame, EOF, reset, error, dead ping,
//! drain) ends the relay: it is classified once ([`crate::closure`]), one
//! closing phase sends each leg what that ending means for it and waits
//! (bounded) for the closing handshakes, and then the session hands its
//! [`SessionEnd`] to the [`SessionGuard`].
//!
//! A data message that arrives whole in one frame (nearly all of them)
//! stays in the read leg's buffer ([`Incoming::Data`]) and goes to the
//! other leg from there ([`WsStream::forward_to`], which owns the
//! zero-copy contract). Everything else (control frames, reassembled
//! fragments) arrives as an owned [`Incoming`] item.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::closure::{Cause, Closure, LegId, TerminalEvent, classify};
use crate::keepalive::{Action, Keepalive, Pong};
use crate::metrics::{Metrics, SessionGuard};
use crate::protocol::close;
use crate::record::{Direction, SessionEnd, SessionStats};
use crate::shutdown::Drain;
use crate::ws::{self, Incoming, WsStream};

/// How long the closing phase waits for the peers' Close replies (outside a
/// drain, whose deadline is `shutdown.drain_timeout`).
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Session settings, from the config.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// `keepalive.interval`; zero disables keepalive.
    pub keepalive_interval: Duration,
    /// `keepalive.timeout`.
    pub keepalive_timeout: Duration,
    /// `shutdown.close_code`: sent to clients on drain.
    pub shutdown_close_code: u16,
    /// Bound on the closing handshake outside a drain.
    pub close_timeout: Duration,
}

/// Where a leg is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegState {
    /// Relaying.
    Open,
    /// A Close went one way or the other: read (discarding data) until the
    /// peer's reply or the end of the stream. The leg ([`WsStream`])
    /// writes the echo of a peer-initiated Close by itself while we read.
    Closing,
    /// The leg failed on input (protocol error, too big): its stream is
    /// fused, so only flush the Close we queued for it, then drop it.
    Flushing,
    /// Finished; the socket has been dropped.
    Done,
}

/// One leg of the session and the session's view of it.
struct Leg {
    id: LegId,
    /// On the heap: moving the session futures moves a pointer.
    ws: Option<Box<WsStream>>,
    state: LegState,
    /// Something was written and not yet flushed.
    dirty: bool,
    /// Why its read is not polled until a wake-up says otherwise.
    quiet: Quiet,
}

/// A leg's read was polled `Pending` and its waker is registered: polling
/// it again before that waker fires would only return `Pending` again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quiet {
    /// Poll it.
    No,
    /// Its socket had nothing to read: wait for its own wake-up.
    Read,
    /// The other leg could not take a message (backpressure): wait for the
    /// other leg's wake-up.
    Backpressure,
}

// === impl Leg ===

impl Leg {
    fn new(id: LegId, ws: Box<WsStream>) -> Leg {
        Leg {
            id,
            ws: Some(ws),
            state: LegState::Open,
            dirty: false,
            quiet: Quiet::No,
        }
    }

    /// Queue something on the leg (if it is still there); the flush happens
    /// when the loop runs out of reads.
    fn queue(&mut self, f: impl FnOnce(&mut WsStream)) {
        if let Some(ws) = self.ws.as_mut() {
            f(ws);
            self.dirty = true;
        }
    }

    /// Queue a Close (`None`: one without a code) and move to `next`. A
    /// leg already gone sees nothing; the closing phase then finds its end.
    fn close(&mut self, code: Option<u16>, reason: &str, next: LegState) {
        self.queue(|ws| ws.close(code.map(|c| (c, reason))));
        self.state = next;
    }

    fn finish(&mut self) {
        self.state = LegState::Done;
        self.ws = None;
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ws::Error>> {
        match self.ws.as_mut() {
            Some(ws) => ws.poll_ready(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Flush if dirty. `Ready(Ok)` once nothing is pending.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ws::Error>> {
        if !self.dirty {
            return Poll::Ready(Ok(()));
        }
        let Some(ws) = self.ws.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let r = std::task::ready!(ws.poll_flush(cx));
        self.dirty = false;
        Poll::Ready(r)
    }
}

/// What one turn of the relay loop saw.
enum Event {
    /// Something a leg received.
    Received(LegId, Incoming),
    /// A leg's read or write failed.
    Failed(LegId, ws::Error),
    /// A leg's stream ended with no Close seen by the relay.
    Ended(LegId),
    KeepaliveDue,
    DrainNow,
}

/// How the relay ended: the event and the reason the first Close carries.
struct Ending {
    event: TerminalEvent,
    reason: String,
}

impl Ending {
    fn new(event: TerminalEvent, reason: impl Into<String>) -> Option<Ending> {
        Some(Ending {
            event,
            reason: reason.into(),
        })
    }

    /// `leg` failed: the reason is what the leg is told, if anything.
    fn failed(leg: LegId, error: ws::Error) -> Option<Ending> {
        let reason = error.close_reason();
        Ending::new(TerminalEvent::Failed { leg, error }, reason)
    }
}

/// One session: both legs, keepalive, drain signals, accounting.
pub struct Session {
    client: Leg,
    upstream: Leg,
    keepalive: Option<Keepalive>,
    keepalive_timer: Pin<Box<Sleep>>,
    drain: Drain,
    drain_started: Pin<Box<WaitForCancellationFutureOwned>>,
    drain_cut: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Set once the drain started: when this session sends its Close.
    drain_at: Option<Pin<Box<Sleep>>>,
    config: SessionConfig,
    metrics: Metrics,
    guard: SessionGuard,
    /// The session's counters, handed to the guard at the end.
    stats: SessionStats,
    /// Alternates which leg is read first.
    client_first: bool,
    /// Which sources woke the task, so a turn polls only those.
    wakes: Wakes,
    /// The drain and keepalive futures need polling: they woke, or the
    /// keepalive deadline moved.
    timers_due: bool,
}

impl Session {
    /// A session over two established WebSocket legs.
    pub fn new(
        client: Box<WsStream>,
        upstream: Box<WsStream>,
        config: SessionConfig,
        drain: Drain,
        metrics: Metrics,
        guard: SessionGuard,
    ) -> Session {
        let now = Instant::now();
        let keepalive = Keepalive::new(config.keepalive_interval, config.keepalive_timeout, now);
        // With keepalive off the timer is parked far away and never fires.
        let first = keepalive
            .as_ref()
            .map_or(far_future(now), Keepalive::deadline);
        Session {
            client: Leg::new(LegId::Client, client),
            upstream: Leg::new(LegId::Upstream, upstream),
            keepalive,
            keepalive_timer: Box::pin(tokio::time::sleep_until(first)),
            drain_started: Box::pin(drain.started_token().cancelled_owned()),
            drain_cut: Box::pin(drain.cut_token().cancelled_owned()),
            drain,
            drain_at: None,
            config,
            metrics,
            stats: SessionStats::new(guard.started()),
            guard,
            client_first: true,
            wakes: Wakes::new(),
            timers_due: true,
        }
    }

    /// Relay until the session ends, close both legs, and record how it
    /// ended. Returns that.
    ///
    /// An `async` block that uses `self` where it was captured, not an
    /// `async fn`: the future of an `async fn` keeps its argument and the
    /// local it is moved into side by side, two copies of the session for
    /// its whole life (560 bytes more per idle session).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would hold the session twice"
    )]
    pub fn run(mut self) -> impl Future<Output = Closure> + Send + 'static {
        async move {
            let Ending { event, reason } = self.relay().await;
            let closure = classify(&event);
            self.begin_closing(&event, closure, &reason);
            let cut = self.closing_phase(&event).await;
            if closure.cause == Cause::Shutdown {
                self.metrics.drained(cut);
            }
            self.guard.finish(SessionEnd {
                closure,
                reason,
                stats: self.stats,
            });
            closure
            // Dropping self drops both sockets.
        }
    }

    /// The relay loop: returns how it ended.
    async fn relay(&mut self) -> Ending {
        loop {
            let event = std::future::poll_fn(|cx| self.poll_event(cx)).await;
            if let Some(end) = self.handle(event) {
                return end;
            }
        }
    }

    /// The next event. Only the sources that woke the task are polled: a
    /// source polled `Pending` has its waker registered and stays `Pending`
    /// until that waker fires. Each source gets a waker of its own
    /// ([`Wakes`]), so a wake-up from the upstream's socket does not make
    /// the task poll the client's socket, the drain signals and the
    /// keepalive timer too: at small messages, those idle polls were about
    /// a fifth of the relay's instructions.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        let woken = self.wakes.take(cx);
        if woken & Wakes::TIMERS != 0 {
            self.timers_due = true;
        }
        if woken & Wakes::CLIENT != 0 {
            wake_legs(&mut self.client, &mut self.upstream);
        }
        if woken & Wakes::UPSTREAM != 0 {
            wake_legs(&mut self.upstream, &mut self.client);
        }
        self.poll_sources()
    }

    fn poll_sources(&mut self) -> Poll<Event> {
        if self.timers_due {
            let cx = &mut Context::from_waker(&self.wakes.timers);
            if self.drain_at.is_none() && self.drain_started.as_mut().poll(cx).is_ready() {
                let delay = self.drain.next_delay();
                self.drain_at = Some(Box::pin(tokio::time::sleep(delay)));
            }
            if let Some(at) = self.drain_at.as_mut()
                && (at.as_mut().poll(cx).is_ready() || self.drain_cut.as_mut().poll(cx).is_ready())
            {
                return Poll::Ready(Event::DrainNow);
            }
            if self.keepalive.is_some() && self.keepalive_timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::KeepaliveDue);
            }
            self.timers_due = false;
        }
        let ccx = &mut Context::from_waker(&self.wakes.client);
        let ucx = &mut Context::from_waker(&self.wakes.upstream);
        self.client_first = !self.client_first;
        let read = if self.client_first {
            poll_relay_read(&mut self.client, ccx, &mut self.upstream, ucx)
                .or_else(|| poll_relay_read(&mut self.upstream, ucx, &mut self.client, ccx))
        } else {
            poll_relay_read(&mut self.upstream, ucx, &mut self.client, ccx)
                .or_else(|| poll_relay_read(&mut self.client, ccx, &mut self.upstream, ucx))
        };
        if let Some(event) = read {
            return Poll::Ready(event);
        }
        if let Poll::Ready(Err(e)) = self.client.poll_flush(ccx) {
            return Poll::Ready(Event::Failed(LegId::Client, e));
        }
        if let Poll::Ready(Err(e)) = self.upstream.poll_flush(ucx) {
            return Poll::Ready(Event::Failed(LegId::Upstream, e));
        }
        Poll::Pending
    }

    /// Act on one event; `Some` ends the relay.
    fn handle(&mut self, event: Event) -> Option<Ending> {
        match event {
            Event::Received(from, incoming) => {
                // The cached time: one clock read per relayed message was
                // the relay's costliest user-space call at small messages.
                self.stats.last_activity = crate::clock::recent();
                self.on_incoming(from, incoming)
            }
            Event::Failed(leg, e) => Ending::failed(leg, e),
            Event::Ended(leg) => Ending::failed(leg, ws::Error::Eof),
            Event::DrainNow => {
                let code = self.config.shutdown_close_code;
                Ending::new(TerminalEvent::Shutdown { code }, "wspulse: shutting down")
            }
            Event::KeepaliveDue => self.on_keepalive(Instant::now()),
        }
    }

    fn on_incoming(&mut self, from: LegId, incoming: Incoming) -> Option<Ending> {
        let dir = Direction::from_leg(from);
        // Field by field, so the legs and the accounting borrow apart.
        let (src, dst) = match from {
            LegId::Client => (&mut self.client, &mut self.upstream),
            LegId::Upstream => (&mut self.upstream, &mut self.client),
        };
        match incoming {
            Incoming::Data {
                len, compressed, ..
            } => {
                self.metrics.message(dir, len, compressed);
                self.stats.count(dir, len);
                let (Some(src_ws), Some(dst_ws)) = (src.ws.as_mut(), dst.ws.as_mut()) else {
                    return None;
                };
                match src_ws.forward_to(dst_ws) {
                    Ok(queued) => dst.dirty |= queued,
                    Err(e) => return Ending::failed(dst.id, e),
                }
            }
            Incoming::Message {
                text,
                compressed,
                data,
            } => {
                self.metrics.message(dir, data.len(), compressed);
                self.stats.count(dir, data.len());
                dst.queue(|ws| ws.send_message(text, compressed, &data));
            }
            // Pings are answered hop by hop: the leg queued the Pong; mark
            // it dirty so the Pong is flushed even if we do not read this
            // leg again soon. Not relayed: the far peer's stack would
            // answer too, and the pinger would get two Pongs.
            Incoming::Ping(_) => src.dirty = true,
            Incoming::Pong(data) => {
                // Round-trip times need the clock itself, not the cached copy.
                let now = Instant::now();
                match self.keepalive.as_mut().map(|k| k.on_pong(from, &data, now)) {
                    Some(Pong::Answered(rtt)) => {
                        let secs = rtt.as_secs_f64();
                        self.metrics.ping_rtt(from, secs);
                        self.stats.rtt(from, secs);
                        if let Some(k) = &self.keepalive {
                            self.keepalive_timer.as_mut().reset(k.deadline());
                            self.timers_due = true;
                        }
                    }
                    Some(Pong::Stale) => {}
                    // A peer's own (unsolicited) Pong: relay it.
                    Some(Pong::NotOurs) | None => dst.queue(|ws| ws.send_pong(&data)),
                }
            }
            Incoming::Close(frame) => {
                let code = frame.as_ref().map(|f| f.code);
                let reason = frame.map(|f| f.reason).unwrap_or_default();
                return Ending::new(TerminalEvent::CloseFrame { leg: from, code }, reason);
            }
        }
        None
    }

    fn on_keepalive(&mut self, now: Instant) -> Option<Ending> {
        // Pings written below may change what the legs' writes report.
        self.client.quiet = Quiet::No;
        self.upstream.quiet = Quiet::No;
        let actions = self
            .keepalive
            .as_mut()
            .map(|k| k.on_tick(now))
            .unwrap_or_default();
        for action in actions {
            match action {
                Action::Dead(leg) => {
                    let reason = match leg {
                        LegId::Client => "wspulse: client did not answer ping",
                        LegId::Upstream => "wspulse: upstream did not answer ping",
                    };
                    return Ending::new(TerminalEvent::PingTimeout(leg), reason);
                }
                Action::Ping(leg, payload) => {
                    self.stats.last_activity = now;
                    self.leg_mut(leg).queue(|ws| ws.send_ping(&payload));
                }
            }
        }
        self.rearm_keepalive();
        None
    }

    fn rearm_keepalive(&mut self) {
        if let Some(k) = &self.keepalive {
            self.keepalive_timer.as_mut().reset(k.deadline());
            self.timers_due = true;
        }
    }

    fn leg_mut(&mut self, id: LegId) -> &mut Leg {
        match id {
            LegId::Client => &mut self.client,
            LegId::Upstream => &mut self.upstream,
        }
    }

    /// The leg `from` and the other one.
    fn legs_mut(&mut self, from: LegId) -> (&mut Leg, &mut Leg) {
        match from {
            LegId::Client => (&mut self.client, &mut self.upstream),
            LegId::Upstream => (&mut self.upstream, &mut self.client),
        }
    }

    /// Send each leg what the terminal event means for it.
    ///
    /// | event                         | ender leg                  | other leg                 |
    /// |-------------------------------|----------------------------|---------------------------|
    /// | Close frame                   | reads until done (echoed)  | gets the same code+reason |
    /// | EOF, reset, I/O error         | dropped                    | 1001 / 1014               |
    /// | ping timeout                  | dropped at once            | 1001 / 1014               |
    /// | protocol error, too big       | gets 1002 / 1007 / 1009    | 1001 / 1014               |
    /// | drain                         | client: `close_code`, upstream: 1001          ||
    ///
    /// 1001 goes toward the upstream (the client went away), 1014 toward the
    /// client (the upstream went away: bad gateway).
    fn begin_closing(&mut self, event: &TerminalEvent, closure: Closure, reason: &str) {
        use TerminalEvent as E;
        match event {
            E::CloseFrame { leg, code } => {
                // The leg refused forbidden codes, so the code goes on as
                // it came: the same code, or an empty Close for an empty
                // one (the far peer then sees 1005 too).
                let (ender, other) = self.legs_mut(*leg);
                ender.state = LegState::Closing;
                other.close(*code, reason, LegState::Closing);
            }
            E::Failed { leg, error } if error.close_code().is_some() => {
                // The offender is told the code it earned (the closure's).
                let (offender, other) = self.legs_mut(*leg);
                offender.close(Some(closure.code), reason, LegState::Flushing);
                let text = match leg {
                    LegId::Client => "wspulse: client broke the protocol",
                    LegId::Upstream => "wspulse: upstream broke the protocol",
                };
                other.close(Some(going_away_toward(other.id)), text, LegState::Closing);
            }
            E::Failed { leg, .. } | E::PingTimeout(leg) => {
                let (gone, other) = self.legs_mut(*leg);
                gone.finish();
                let text = match leg {
                    LegId::Client => "wspulse: client went away",
                    LegId::Upstream => "wspulse: upstream went away",
                };
                other.close(Some(going_away_toward(other.id)), text, LegState::Closing);
            }
            E::Shutdown { code } => {
                self.client.close(Some(*code), reason, LegState::Closing);
                self.upstream
                    .close(Some(close::GOING_AWAY), reason, LegState::Closing);
            }
        }
    }

    /// Drive both legs' closing handshakes until both are done, the close
    /// timeout passes, or the drain deadline cuts them. Returns whether a
    /// drain session was cut.
    async fn closing_phase(&mut self, event: &TerminalEvent) -> bool {
        // A drain session is bounded by the drain deadline (the cut), any
        // other by the close timeout (and by the cut, should one come).
        let draining = matches!(event, TerminalEvent::Shutdown { .. });
        let now = Instant::now();
        let limit = if draining {
            far_future(now)
        } else {
            now + self.config.close_timeout
        };
        let mut timer = Box::pin(tokio::time::sleep_until(limit));
        let mut cut = false;
        while self.client.state != LegState::Done || self.upstream.state != LegState::Done {
            let step = std::future::poll_fn(|cx| {
                if self.drain_cut.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Closing::Cut);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Closing::TimedOut);
                }
                let a = poll_closing(&mut self.client, cx);
                let b = poll_closing(&mut self.upstream, cx);
                if a || b {
                    Poll::Ready(Closing::Progress)
                } else {
                    Poll::Pending
                }
            })
            .await;
            match step {
                Closing::Progress => {}
                Closing::TimedOut => break,
                Closing::Cut => {
                    cut = draining;
                    break;
                }
            }
        }
        self.client.finish();
        self.upstream.finish();
        cut
    }
}

/// One step of the closing phase.
enum Closing {
    Progress,
    TimedOut,
    Cut,
}

/// Poll a read on `from` if `to` can take a message. `None`: nothing happened.
/// Each leg is polled with its own context (`fcx`, `tcx`), so every
/// registration on a socket carries that leg's waker.
fn poll_relay_read(
    from: &mut Leg,
    fcx: &mut Context<'_>,
    to: &mut Leg,
    tcx: &mut Context<'_>,
) -> Option<Event> {
    if from.quiet != Quiet::No {
        return None;
    }
    match to.poll_ready(tcx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(e)) => return Some(Event::Failed(to.id, e)),
        // Backpressure: `to` is still writing; leave `from`'s bytes in its socket.
        Poll::Pending => {
            from.quiet = Quiet::Backpressure;
            return None;
        }
    }
    let Some(ws) = from.ws.as_mut() else {
        return Some(Event::Ended(from.id));
    };
    match ws.poll_incoming(fcx) {
        Poll::Ready(Some(Ok(incoming))) => Some(Event::Received(from.id, incoming)),
        Poll::Ready(Some(Err(e))) => Some(Event::Failed(from.id, e)),
        Poll::Ready(None) => Some(Event::Ended(from.id)),
        Poll::Pending => {
            from.quiet = Quiet::Read;
            None
        }
    }
}

/// `woke`'s waker fired: its read may make progress, and so may the other
/// leg's if it waited for `woke` to drain its writes.
fn wake_legs(woke: &mut Leg, other: &mut Leg) {
    woke.quiet = Quiet::No;
    if other.quiet == Quiet::Backpressure {
        other.quiet = Quiet::No;
    }
}

/// A waker per source of a session's events (the client leg, the upstream
/// leg, the drain and keepalive timers). Each records which source fired
/// and wakes the task, so the next turn polls only the sources that may
/// have changed. Each socket is always polled with its leg's waker, for
/// reads and writes alike, so no registration replaces another source's.
/// Three allocations per session: the shared flags (which are the timers'
/// waker) and one per leg.
struct Wakes {
    flags: Arc<WakeFlags>,
    client: Waker,
    upstream: Waker,
    timers: Waker,
}

struct WakeFlags {
    fired: AtomicU8,
    task: AtomicWaker,
}

impl WakeFlags {
    fn fire(&self, bit: u8) {
        self.fired.fetch_or(bit, Ordering::AcqRel);
        self.task.wake();
    }
}

/// The timers' waker.
impl Wake for WakeFlags {
    fn wake(self: Arc<Self>) {
        self.fire(Wakes::TIMERS);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.fire(Wakes::TIMERS);
    }
}

/// A leg's waker.
struct LegWaker {
    flags: Arc<WakeFlags>,
    bit: u8,
}

impl Wake for LegWaker {
    fn wake(self: Arc<Self>) {
        self.flags.fire(self.bit);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.flags.fire(self.bit);
    }
}

impl Wakes {
    const CLIENT: u8 = 1;
    const UPSTREAM: u8 = 2;
    const TIMERS: u8 = 4;

    fn new() -> Wakes {
        let flags = Arc::new(WakeFlags {
            fired: AtomicU8::new(0),
            task: AtomicWaker::new(),
        });
        let leg = |bit| {
            Waker::from(Arc::new(LegWaker {
                flags: flags.clone(),
                bit,
            }))
        };
        Wakes {
            client: leg(Self::CLIENT),
            upstream: leg(Self::UPSTREAM),
            timers: Waker::from(flags.clone()),
            flags,
        }
    }

    /// The sources that fired since the last call; they wake `cx`'s task
    /// from now on.
    fn take(&self, cx: &Context<'_>) -> u8 {
        self.flags.task.register(cx.waker());
        self.flags.fired.swap(0, Ordering::AcqRel)
    }
}

/// One step of a leg's closing handshake. Returns whether anything changed.
fn poll_closing(leg: &mut Leg, cx: &mut Context<'_>) -> bool {
    match leg.state {
        LegState::Closing => {
            if let Poll::Ready(Err(_)) = leg.poll_flush(cx) {
                leg.finish();
                return true;
            }
            let Some(ws) = leg.ws.as_mut() else {
                leg.finish();
                return true;
            };
            match ws.poll_incoming(cx) {
                // Data after a Close is discarded; the Close reply (or the
                // end of the stream after it) finishes the leg.
                Poll::Ready(Some(Ok(Incoming::Close(_)))) => {
                    // The leg may still have the echo to flush (peer-initiated)
                    // or the server's FIN to wait for; keep reading to the end.
                    leg.dirty = true;
                    true
                }
                Poll::Ready(Some(Ok(_))) => true,
                Poll::Ready(Some(Err(_))) | Poll::Ready(None) => {
                    leg.finish();
                    true
                }
                Poll::Pending => false,
            }
        }
        LegState::Flushing => {
            leg.dirty = true;
            match leg.poll_flush(cx) {
                Poll::Ready(_) => {
                    leg.finish();
                    true
                }
                Poll::Pending => false,
            }
        }
        LegState::Open | LegState::Done => false,
    }
}

/// The code the proxy sends toward `to` when the *other* peer went away.
fn going_away_toward(to: LegId) -> u16 {
    match to {
        LegId::Upstream => close::GOING_AWAY,
        LegId::Client => close::BAD_GATEWAY,
    }
}

fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(86_400 * 365)
}

#[cfg(test)]
mod tests;
