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
//! drain) ends the relay: it is classified once ([`crate::closure`]),
//! recorded in the [`SessionGuard`], and then one closing phase sends the
//! other leg its Close and waits (bounded) for the closing handshakes.
//!
//! A data message that arrives whole in one frame (nearly all of them) is
//! relayed without becoming a [`Message`]: the read leg leaves it in its
//! read buffer ([`Incoming::Data`]), rewrites it there for the other leg,
//! and the other leg writes it from there at once when nothing waits
//! before it, or copies it into its write buffer for the next flush
//! (`relay_data`). Everything else (control frames, reassembled
//! fragments) goes through the [`Message`] path.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use futures_util::{Sink, Stream};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::{
    self, Message,
    error::ProtocolError,
    protocol::{CloseFrame, frame::coding::CloseCode},
};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::closure::{Cause, Closure, Side, TerminalEvent, classify, event_of_error};
use crate::keepalive::{Action, Keepalive, Pong};
use crate::metrics::{Direction, Metrics, SessionGuard};
use crate::protocol::close;
use crate::shutdown::Drain;
use crate::ws::{Incoming, Transport, WsStream};

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
    /// peer's reply or the end of the stream. The leg (`ws::WsStream`) writes the echo of
    /// a peer-initiated Close by itself while we read.
    Closing,
    /// The leg failed on input (protocol error, too big): its stream is
    /// fused, so only flush the Close we queued for it, then drop it.
    Flushing,
    /// Finished; the socket has been dropped.
    Done,
}

struct Leg<S> {
    side: Side,
    /// On the heap: moving the session futures moves a pointer.
    ws: Option<Box<WsStream<S>>>,
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

impl<S: Transport> Leg<S> {
    fn new(side: Side, ws: Box<WsStream<S>>) -> Leg<S> {
        Leg {
            side,
            ws: Some(ws),
            state: LegState::Open,
            dirty: false,
            quiet: Quiet::No,
        }
    }

    /// Queue `msg`; the flush happens when the loop runs out of reads.
    fn send(&mut self, msg: Message) -> Result<(), tungstenite::Error> {
        match self.ws.as_mut() {
            Some(ws) => {
                self.dirty = true;
                Pin::new(ws).start_send(msg)
            }
            None => Err(tungstenite::Error::AlreadyClosed),
        }
    }

    /// Queue a Close (`None`: one without a code) and move to `next`.
    fn close(&mut self, code: Option<u16>, reason: &str, next: LegState) {
        let frame = code.map(|code| CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        });
        // A failure here means the socket is already gone; the closing phase
        // will see that as the end of the stream.
        let _ = self.send(Message::Close(frame));
        self.state = next;
    }

    fn finish(&mut self) {
        self.state = LegState::Done;
        self.ws = None;
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tungstenite::Error>> {
        match self.ws.as_mut() {
            Some(ws) => Pin::new(ws).poll_ready(cx),
            None => Poll::Ready(Err(tungstenite::Error::AlreadyClosed)),
        }
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, tungstenite::Error>>> {
        match self.ws.as_mut() {
            Some(ws) => Pin::new(ws).poll_next(cx),
            None => Poll::Ready(None),
        }
    }

    /// Flush if dirty. `Ready(Ok)` once nothing is pending.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tungstenite::Error>> {
        if !self.dirty {
            return Poll::Ready(Ok(()));
        }
        let Some(ws) = self.ws.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let r = std::task::ready!(Pin::new(ws).poll_flush(cx));
        self.dirty = false;
        Poll::Ready(r)
    }
}

/// What one turn of the relay loop saw.
enum Event {
    /// A data message, left in the leg's read buffer: text?, length.
    Data(Side, bool, usize),
    Read(Side, Message),
    ReadError(Side, tungstenite::Error),
    Ended(Side),
    WriteError(Side, tungstenite::Error),
    KeepaliveDue,
    DrainNow,
}

/// One session: both legs, keepalive, drain signals, accounting.
pub struct Session<C, U> {
    client: Leg<C>,
    upstream: Leg<U>,
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
    /// Alternates which leg is read first.
    client_first: bool,
    /// Which sources woke the task, so a turn polls only those.
    wakes: Wakes,
    /// The drain and keepalive futures need polling: they woke, or the
    /// keepalive deadline moved.
    timers_due: bool,
}

impl<C: Transport, U: Transport> Session<C, U> {
    /// A session over two established WebSocket legs.
    pub fn new(
        client: Box<WsStream<C>>,
        upstream: Box<WsStream<U>>,
        config: SessionConfig,
        drain: Drain,
        metrics: Metrics,
        guard: SessionGuard,
    ) -> Session<C, U> {
        let now = Instant::now();
        let keepalive = Keepalive::new(config.keepalive_interval, config.keepalive_timeout, now);
        // With keepalive off the timer is parked far away and never fires.
        let first = keepalive
            .as_ref()
            .map_or(far_future(now), Keepalive::deadline);
        Session {
            client: Leg::new(Side::Client, client),
            upstream: Leg::new(Side::Upstream, upstream),
            keepalive,
            keepalive_timer: Box::pin(tokio::time::sleep_until(first)),
            drain_started: Box::pin(drain.started_token().cancelled_owned()),
            drain_cut: Box::pin(drain.cut_token().cancelled_owned()),
            drain,
            drain_at: None,
            config,
            metrics,
            guard,
            client_first: true,
            wakes: Wakes::new(),
            timers_due: true,
        }
    }

    /// Relay until the session ends, then close both legs. Returns how it ended.
    pub async fn run(mut self) -> Closure {
        let (event, reason) = self.relay().await;
        let closure = classify(event);
        self.guard.set_closure(closure, &reason);
        self.begin_closing(event, &reason);
        let cut = self.closing_phase(event).await;
        if closure.cause == Cause::Shutdown {
            self.metrics.drained(cut);
        }
        closure
        // Dropping self drops both sockets and the guard, which records the closure.
    }

    /// The relay loop: returns the terminal event and the close reason text.
    async fn relay(&mut self) -> (TerminalEvent, String) {
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
            return Poll::Ready(Event::WriteError(Side::Client, e));
        }
        if let Poll::Ready(Err(e)) = self.upstream.poll_flush(ucx) {
            return Poll::Ready(Event::WriteError(Side::Upstream, e));
        }
        Poll::Pending
    }

    /// Act on one event; `Some` ends the relay.
    fn handle(&mut self, event: Event) -> Option<(TerminalEvent, String)> {
        match event {
            Event::Data(side, text, len) => {
                // The cached time: one clock read per relayed message was
                // the relay's costliest user-space call at small messages.
                self.guard.stats.last_activity = crate::clock::recent();
                self.on_data(side, text, len)
            }
            Event::Read(side, msg) => {
                self.guard.stats.last_activity = crate::clock::recent();
                self.on_message(side, msg)
            }
            Event::ReadError(side, e) => Some((event_of_error(side, &e), error_reason(&e))),
            Event::Ended(side) => Some((TerminalEvent::Eof(side), String::new())),
            Event::WriteError(side, e) => Some((event_of_error(side, &e), String::new())),
            Event::DrainNow => {
                let code = self.config.shutdown_close_code;
                Some((
                    TerminalEvent::Shutdown { code },
                    "wspulse: shutting down".into(),
                ))
            }
            Event::KeepaliveDue => self.on_keepalive(Instant::now()),
        }
    }

    fn on_message(&mut self, from: Side, msg: Message) -> Option<(TerminalEvent, String)> {
        let dir = match from {
            Side::Upstream => Direction::UpstreamToClient,
            _ => Direction::ClientToUpstream,
        };
        let forward = match msg {
            Message::Text(ref t) => {
                self.count(dir, t.len());
                true
            }
            Message::Binary(ref b) => {
                self.count(dir, b.len());
                true
            }
            // Pings are answered hop by hop: the leg queued the Pong on
            // this leg; mark it dirty so the Pong is flushed even if we
            // do not read this leg again soon. Not relayed: the far peer's
            // stack would answer too, and the pinger would get two Pongs.
            Message::Ping(_) => {
                self.leg_mut(from).mark_dirty();
                false
            }
            Message::Pong(ref data) => {
                // Round-trip times need the clock itself, not the cached copy.
                let now = Instant::now();
                match self.keepalive.as_mut().map(|k| k.on_pong(from, data, now)) {
                    Some(Pong::Answered(rtt)) => {
                        let secs = rtt.as_secs_f64();
                        self.metrics.ping_rtt(from, secs);
                        match from {
                            Side::Upstream => self.guard.stats.rtt_upstream = Some(secs),
                            _ => self.guard.stats.rtt_client = Some(secs),
                        }
                        self.rearm_keepalive();
                        false
                    }
                    Some(Pong::Stale) => false,
                    // A peer's own (unsolicited) Pong: relay it.
                    Some(Pong::NotOurs) | None => true,
                }
            }
            Message::Close(frame) => return Some(close_event(from, frame)),
            Message::Frame(_) => false,
        };
        if forward {
            let to = self.leg_mut(other(from));
            if let Err(e) = to.send(msg) {
                return Some((event_of_error(to.side(), &e), String::new()));
            }
        }
        None
    }

    /// Relay the data message left in `from`'s read buffer.
    fn on_data(&mut self, from: Side, text: bool, len: usize) -> Option<(TerminalEvent, String)> {
        let relayed = match from {
            Side::Upstream => {
                self.count(Direction::UpstreamToClient, len);
                relay_data(&mut self.upstream, &mut self.client, text)
            }
            _ => {
                self.count(Direction::ClientToUpstream, len);
                relay_data(&mut self.client, &mut self.upstream, text)
            }
        };
        relayed
            .err()
            .map(|(side, e)| (event_of_error(side, &e), String::new()))
    }

    fn count(&mut self, dir: Direction, len: usize) {
        self.metrics.message(dir, len);
        let s = &mut self.guard.stats;
        match dir {
            Direction::ClientToUpstream => {
                s.messages_c2u += 1;
                s.bytes_c2u += len as u64;
            }
            Direction::UpstreamToClient => {
                s.messages_u2c += 1;
                s.bytes_u2c += len as u64;
            }
        }
    }

    fn on_keepalive(&mut self, now: Instant) -> Option<(TerminalEvent, String)> {
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
                Action::Dead(side) => {
                    let reason = format!("wspulse: {} did not answer ping", side.as_str());
                    return Some((TerminalEvent::PingTimeout(side), reason));
                }
                Action::Ping(side, payload) => {
                    self.guard.stats.last_activity = now;
                    let leg = self.leg_mut(side);
                    if let Err(e) = leg.send(Message::Ping(payload.to_vec().into())) {
                        return Some((event_of_error(side, &e), String::new()));
                    }
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

    fn leg_mut(&mut self, side: Side) -> &mut dyn LegOps {
        match side {
            Side::Upstream => &mut self.upstream,
            _ => &mut self.client,
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
    fn begin_closing(&mut self, event: TerminalEvent, reason: &str) {
        use TerminalEvent as E;
        match event {
            E::CloseFrame { side, .. } => {
                self.leg_mut(side).set_state(LegState::Closing);
                let code = self.close_to_forward();
                self.leg_mut(other(side))
                    .close(code, reason, LegState::Closing);
            }
            E::Eof(side) | E::Reset(side) | E::IoError(side) | E::PingTimeout(side) => {
                self.leg_mut(side).finish();
                let text = format!("wspulse: {} went away", side.as_str());
                self.leg_mut(other(side)).close(
                    Some(going_away_toward(other(side))),
                    &text,
                    LegState::Closing,
                );
            }
            E::Protocol(side, _) | E::TooBig(side) => {
                let code = classify(event).code;
                self.leg_mut(side)
                    .close(Some(code), reason, LegState::Flushing);
                let text = format!("wspulse: {} broke the protocol", side.as_str());
                self.leg_mut(other(side)).close(
                    Some(going_away_toward(other(side))),
                    &text,
                    LegState::Closing,
                );
            }
            E::Shutdown { code } => {
                self.client.close(Some(code), reason, LegState::Closing);
                self.upstream
                    .close(Some(close::GOING_AWAY), reason, LegState::Closing);
            }
        }
    }

    /// The code to forward for a peer's Close frame: the same code, or an
    /// empty Close for an empty one (the far peer then sees 1005 too).
    fn close_to_forward(&self) -> Option<u16> {
        self.guard
            .closure()
            .map(|c| c.code)
            .filter(|&c| c != close::NO_STATUS)
    }

    /// Drive both legs' closing handshakes until both are done, the close
    /// timeout passes, or the drain deadline cuts them. Returns whether a
    /// drain session was cut.
    async fn closing_phase(&mut self, event: TerminalEvent) -> bool {
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

/// Object-safe leg operations, so one helper can pick either leg.
trait LegOps {
    fn send(&mut self, msg: Message) -> Result<(), tungstenite::Error>;
    fn close(&mut self, code: Option<u16>, reason: &str, next: LegState);
    fn finish(&mut self);
    fn set_state(&mut self, s: LegState);
    fn side(&self) -> Side;
    fn mark_dirty(&mut self);
}

impl<S: Transport> LegOps for Leg<S> {
    fn send(&mut self, msg: Message) -> Result<(), tungstenite::Error> {
        Leg::send(self, msg)
    }
    fn close(&mut self, code: Option<u16>, reason: &str, next: LegState) {
        Leg::close(self, code, reason, next)
    }
    fn finish(&mut self) {
        Leg::finish(self)
    }
    fn set_state(&mut self, s: LegState) {
        self.state = s;
    }
    fn side(&self) -> Side {
        self.side
    }
    fn mark_dirty(&mut self) {
        self.dirty = true;
    }
}

/// Poll a read on `from` if `to` can take a message. `None`: nothing happened.
/// Each leg is polled with its own context (`fcx`, `tcx`), so every
/// registration on a socket carries that leg's waker.
fn poll_relay_read<A: Transport, B: Transport>(
    from: &mut Leg<A>,
    fcx: &mut Context<'_>,
    to: &mut Leg<B>,
    tcx: &mut Context<'_>,
) -> Option<Event> {
    if from.quiet != Quiet::No {
        return None;
    }
    match to.poll_ready(tcx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(e)) => return Some(Event::WriteError(to.side, e)),
        // Backpressure: `to` is still writing; leave `from`'s bytes in its socket.
        Poll::Pending => {
            from.quiet = Quiet::Backpressure;
            return None;
        }
    }
    let Some(ws) = from.ws.as_mut() else {
        return Some(Event::Ended(from.side));
    };
    match ws.poll_incoming(fcx) {
        Poll::Ready(Some(Ok(Incoming::Data { text, len }))) => {
            Some(Event::Data(from.side, text, len))
        }
        Poll::Ready(Some(Ok(Incoming::Message(msg)))) => Some(Event::Read(from.side, msg)),
        Poll::Ready(Some(Err(e))) => Some(Event::ReadError(from.side, e)),
        Poll::Ready(None) => Some(Event::Ended(from.side)),
        Poll::Pending => {
            from.quiet = Quiet::Read;
            None
        }
    }
}

/// Send on the data message waiting in `from`'s read buffer, then let it
/// go. Its frame, rewritten in place for `to`, goes out at once when it is
/// the last of what `from`'s socket had and `to` has nothing queued (one
/// message in flight per session, the common case: no copy at all);
/// otherwise it is queued, and flushed when the loop runs out of reads,
/// so a burst still leaves in one write.
fn relay_data<A: Transport, B: Transport>(
    from: &mut Leg<A>,
    to: &mut Leg<B>,
    text: bool,
) -> Result<(), (Side, tungstenite::Error)> {
    let Some(src) = from.ws.as_mut() else {
        return Ok(());
    };
    let sent = match to.ws.as_mut() {
        Some(dst) => match src.frame_for(dst.role()) {
            Some((frame, now)) => dst.send_frame(frame, now).map(|queued| {
                to.dirty |= queued;
            }),
            None => {
                to.dirty = true;
                dst.send_data(text, src.data())
            }
        },
        None => Err(tungstenite::Error::AlreadyClosed),
    };
    src.consume_data();
    sent.map_err(|e| (to.side, e))
}

/// `woke`'s waker fired: its read may make progress, and so may the other
/// leg's if it waited for `woke` to drain its writes.
fn wake_legs<A, B>(woke: &mut Leg<A>, other: &mut Leg<B>) {
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
fn poll_closing<S: Transport>(leg: &mut Leg<S>, cx: &mut Context<'_>) -> bool {
    match leg.state {
        LegState::Closing => {
            if let Poll::Ready(Err(_)) = leg.poll_flush(cx) {
                leg.finish();
                return true;
            }
            match leg.poll_next(cx) {
                // Data after a Close is discarded; the Close reply (or the
                // end of the stream after it) finishes the leg.
                Poll::Ready(Some(Ok(Message::Close(_)))) => {
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

/// The terminal event for a Close frame read from `side`.
fn close_event(side: Side, frame: Option<CloseFrame>) -> (TerminalEvent, String) {
    match frame {
        None => (
            TerminalEvent::CloseFrame { side, code: None },
            String::new(),
        ),
        Some(f) => (
            TerminalEvent::CloseFrame {
                side,
                code: Some(u16::from(f.code)),
            },
            f.reason.to_string(),
        ),
    }
}

/// Close reason for an input error: what the offender is told, ≤ 123 bytes.
fn error_reason(e: &tungstenite::Error) -> String {
    let text = match e {
        tungstenite::Error::Capacity(_) => "message too big".to_string(),
        tungstenite::Error::Utf8(_) => "invalid UTF-8 in text message".to_string(),
        // A close code that may not be sent (RFC 6455 §7.4), or a 1-byte Close.
        tungstenite::Error::Protocol(ProtocolError::InvalidCloseSequence) => {
            "invalid close frame: forbidden code or 1-byte payload".to_string()
        }
        tungstenite::Error::Protocol(p) => p.to_string(),
        _ => String::new(),
    };
    crate::metrics::truncate_utf8(&text, 123).to_string()
}

fn other(side: Side) -> Side {
    match side {
        Side::Upstream => Side::Client,
        _ => Side::Upstream,
    }
}

/// The code the proxy sends toward `to` when the *other* peer went away.
fn going_away_toward(to: Side) -> u16 {
    match to {
        Side::Upstream => close::GOING_AWAY,
        _ => close::BAD_GATEWAY,
    }
}

fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(86_400 * 365)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

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
}
