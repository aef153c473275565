//! The WebSocket protocol on one leg (RFC 6455 §5 and §7): frames in and
//! out, message reassembly, ping replies and the closing handshake.
//!
//! - [`frame`]: frame headers, masking, masking keys;
//! - [`pool`]: the per-thread buffer pool;
//! - [`error`]: the leg's own error vocabulary ([`Error`], [`Violation`]);
//! - this file: [`WsStream`], one leg's state.
//!
//! wspulse's own rather than tungstenite's `WebSocketStream`, for what the
//! benchmark (bench/README.md) measured:
//! - an idle leg holds no buffer: both buffers come from a small per-thread
//!   pool when bytes move and go back when they drain, where tungstenite
//!   keeps a read buffer (4 KiB here) and a write buffer per leg for the
//!   life of the connection;
//! - a relayed message costs fewer instructions: no zero-filled read chunk
//!   per read, and a data message in one frame is never copied: it is
//!   unmasked and checked where it was read ([`Incoming::Data`]), then
//!   rewritten there for the other leg and written from there
//!   ([`WsStream::forward_to`]); only what the socket does not take at once
//!   is copied into the other leg's write buffer.
//!
//! | situation                                  | what the leg does                                    |
//! |--------------------------------------------|------------------------------------------------------|
//! | Ping while open                            | returns it; queues a Pong (the latest ping's) for the next flush |
//! | peer's Close while open                    | returns it; queues the same Close back (echo)        |
//! | peer's Close after ours                    | returns it (the reply)                               |
//! | server, Close exchanged and echo written   | the stream ends (`None`): the server closes TCP first |
//! | client, Close exchanged                    | reads on to the server's EOF, then ends (`None`)     |
//! | reset after the Close exchange             | the stream ends (`None`)                             |
//! | EOF before any Close                       | [`Error::Eof`]                                       |
//! | reset, broken pipe                         | [`Error::Reset`]                                     |
//! | frame over `max_frame_size` (header alone) | [`Error::TooBig`]                                    |
//! | message over `max_message_size`            | [`Error::TooBig`]                                    |
//! | invalid UTF-8 (text, close reason)         | [`Violation::InvalidUtf8`], as soon as a fragment proves it |
//! | close code that may not be sent (§7.4)     | [`Violation::ForbiddenCloseCode`]                    |
//! | RSV bits, bad masking, bad opcode, fragmented or long control frame, bad continuation | the matching [`Violation`] |
//! | frame after the Close exchange             | [`Violation::AfterClose`]                            |
//! | send after our Close                       | dropped: nothing may follow a Close (§5.5.1)         |
//!
//! After an error or the end, the stream is fused (`None`). Close code
//! 1014 (bad gateway, IANA registered) is accepted, where tungstenite
//! refuses it.

mod error;
mod frame;
mod pool;
#[cfg(test)]
mod tests;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::AsyncWrite;
use tokio_util::io::poll_read_buf;

pub use self::error::{Error, Violation};
use self::frame::{Header, MAX_HEADER, apply_mask, extended_len_size, mask_key};
use crate::conn::Conn;
use crate::protocol::opcode::{BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT};
use crate::protocol::{MAX_CONTROL_PAYLOAD, Role, code_allowed_on_wire};

/// The first header byte's FIN bit, and RSV1: with permessage-deflate
/// negotiated, the mark of a compressed message (RFC 7692 §6).
const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;

/// A send makes the leg not ready ([`WsStream::poll_ready`] then flushes
/// first) once this much waits in its write buffer: the bound behind
/// backpressure.
const WRITE_HIGH: usize = 8 * 1024;

/// Message and frame size limits for one leg (`limits.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message, reassembled from its fragments.
    pub max_message_size: usize,
    /// Largest single frame payload.
    pub max_frame_size: usize,
}

/// A Close frame's body: its code and UTF-8 reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The close code.
    pub code: u16,
    /// The reason, at most 123 bytes.
    pub reason: String,
}

/// What a leg received.
#[derive(Debug)]
pub enum Incoming {
    /// A Text (UTF-8 checked) or Binary message whole in one frame, `len`
    /// bytes, left where it was read: send it on with
    /// [`WsStream::forward_to`] (or read it with [`WsStream::data`]) before
    /// the next poll, which drops it.
    Data {
        /// Text rather than Binary.
        text: bool,
        /// Compressed (RSV1, permessage-deflate): relayed as it is.
        compressed: bool,
        /// Payload length, on the wire.
        len: usize,
    },
    /// A fragmented Text or Binary message, put back together.
    Message {
        /// Text (UTF-8 checked unless compressed) rather than Binary.
        text: bool,
        /// Compressed (RSV1 on its first frame): relayed as it is.
        compressed: bool,
        /// The whole payload, as on the wire.
        data: Bytes,
    },
    /// A Ping; the leg has queued its Pong.
    Ping(Bytes),
    /// A Pong.
    Pong(Bytes),
    /// A Close, with its body if it had one.
    Close(Option<CloseFrame>),
}

/// Where the leg is in the closing handshake (RFC 6455 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    /// We sent a Close; the peer's reply is awaited. Data may still arrive.
    ClosedByUs,
    /// The peer sent a Close; our echo is queued.
    ClosedByPeer,
    /// Both Closes went; only the end of the TCP stream remains.
    CloseAcknowledged,
    /// Over: reads end, writes fail.
    Terminated,
}

impl State {
    fn can_read(self) -> bool {
        matches!(self, State::Active | State::ClosedByUs)
    }

    /// Both Closes went: a reset now is just the end.
    fn closes_exchanged(self) -> bool {
        matches!(self, State::ClosedByPeer | State::CloseAcknowledged)
    }
}

/// A Close frame's payload: nothing, or a code and a UTF-8 reason.
fn parse_close(payload: &[u8]) -> Result<Option<CloseFrame>, Error> {
    match payload {
        [] => Ok(None),
        [_] => Err(Error::Protocol(Violation::ClosePayload)),
        [hi, lo, reason @ ..] => Ok(Some(CloseFrame {
            code: u16::from_be_bytes([*hi, *lo]),
            reason: std::str::from_utf8(reason)?.to_owned(),
        })),
    }
}

fn too_big(size: u64, max: usize) -> Error {
    Error::TooBig { size, max }
}

/// A fragmented message being put back together.
struct Partial {
    text: bool,
    /// Its first frame had RSV1: the bytes are deflated, and their UTF-8
    /// validity is the endpoint's to check (the proxy never inflates).
    compressed: bool,
    data: BytesMut,
    /// Bytes of `data` known to be valid UTF-8 (text only), so each
    /// fragment is checked once and a bad one fails at once.
    checked: usize,
}

impl Partial {
    fn extend(&mut self, fragment: &[u8], max: usize) -> Result<(), Error> {
        let size = self.data.len() as u64 + fragment.len() as u64;
        if size > max as u64 {
            return Err(too_big(size, max));
        }
        self.data.extend_from_slice(fragment);
        if self.text && !self.compressed {
            match std::str::from_utf8(&self.data[self.checked..]) {
                Ok(_) => self.checked = self.data.len(),
                // A sequence cut at the fragment's end may go on in the next.
                Err(e) if e.error_len().is_none() => self.checked += e.valid_up_to(),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn complete(self) -> Result<Incoming, Error> {
        if self.text && !self.compressed && self.checked != self.data.len() {
            // A sequence left unfinished at the end of the message.
            return Err(Error::Protocol(Violation::InvalidUtf8));
        }
        Ok(Incoming::Message {
            text: self.text,
            compressed: self.compressed,
            data: self.data.freeze(),
        })
    }
}

/// One leg's WebSocket connection (see the module docs for its semantics).
pub struct WsStream {
    io: Conn,
    role: Role,
    limits: Limits,
    /// permessage-deflate was negotiated on this leg: RSV1 on a message's
    /// first frame marks it compressed, and is allowed.
    deflate: bool,
    state: State,
    /// Bytes read and not yet parsed; empty and unallocated when idle.
    rbuf: BytesMut,
    /// The header (and its size) of the frame whose payload is still
    /// arriving; the header's bytes stay at the front of `rbuf`.
    header: Option<(Header, usize)>,
    /// Bytes at the front of `rbuf` that are the last [`Incoming::Data`]
    /// (its header, then its payload), not yet consumed.
    pending: usize,
    /// Size of that frame's header.
    pending_header: usize,
    /// The last read filled less than the room it was given: the socket
    /// had nothing more at that moment.
    drained: bool,
    partial: Option<Partial>,
    /// Encoded frames not yet written; unallocated when idle.
    wbuf: BytesMut,
    /// The Pong owed for the latest Ping, queued at the next flush.
    pong: Option<Bytes>,
    /// A Pong or Close echo is queued or owed and not yet written.
    reply_unflushed: bool,
    /// The stream returned its end or an error.
    ended: bool,
    /// `wbuf` is under `WRITE_HIGH`: a message may be sent without a flush.
    ready: bool,
}

/// A leg that ends holding a buffer (its last read, a Close echo it
/// wrote) gives it back to the pool: dropped, the next session's first
/// read or write would allocate a new one, two 16 KiB allocations per
/// session setup.
impl Drop for WsStream {
    fn drop(&mut self) {
        pool::give(std::mem::take(&mut self.rbuf));
        pool::give(std::mem::take(&mut self.wbuf));
    }
}

// === impl WsStream: setup and sending ===

impl WsStream {
    /// A leg over an established connection, after the HTTP upgrade.
    /// `read_ahead` holds bytes already read past the handshake (a peer may
    /// send its first frame right behind it).
    pub fn new(io: impl Into<Conn>, role: Role, limits: Limits, read_ahead: &[u8]) -> WsStream {
        WsStream {
            io: io.into(),
            role,
            limits,
            deflate: false,
            state: State::Active,
            rbuf: BytesMut::from(read_ahead),
            header: None,
            pending: 0,
            pending_header: 0,
            drained: false,
            partial: None,
            wbuf: BytesMut::new(),
            pong: None,
            reply_unflushed: false,
            ended: false,
            ready: true,
        }
    }

    /// The connection underneath.
    pub fn get_ref(&self) -> &Conn {
        &self.io
    }

    /// This leg's role: a client masks what it sends.
    pub fn role(&self) -> Role {
        self.role
    }

    /// permessage-deflate was negotiated on this leg (both legs of a
    /// session share it): compressed messages (RSV1) are relayed as they
    /// are instead of refused.
    pub fn set_deflate(&mut self, on: bool) {
        self.deflate = on;
    }

    /// Queue a data message in one frame, `compressed` (RSV1) when it came
    /// so (the caller vouches that an uncompressed text payload is UTF-8).
    /// Dropped once a Close went either way: nothing may follow it.
    pub fn send_message(&mut self, text: bool, compressed: bool, payload: &[u8]) {
        if self.state == State::Active {
            let rsv = if compressed { RSV1 } else { 0 };
            self.queue(FIN | rsv | if text { TEXT } else { BINARY }, payload);
        }
    }

    /// Queue a Ping (at most 125 bytes of payload).
    pub fn send_ping(&mut self, payload: &[u8]) {
        if self.state == State::Active {
            self.queue(FIN | PING, payload);
        }
    }

    /// Queue a Pong: a peer's own, relayed.
    pub fn send_pong(&mut self, payload: &[u8]) {
        if self.state == State::Active {
            self.queue(FIN | PONG, payload);
        }
    }

    /// Queue our Close (`None`: one without a code) and await the peer's
    /// reply from now on. No Pong is owed any more. The reason is cut to
    /// what a Close frame holds.
    pub fn close(&mut self, frame: Option<(u16, &str)>) {
        if self.state != State::Active {
            return;
        }
        self.state = State::ClosedByUs;
        self.pong = None;
        self.queue_close(frame);
    }

    /// Encode a frame into the write buffer (masked when we are the
    /// client): `head` is its first byte, FIN, RSV bits and opcode.
    fn queue(&mut self, head: u8, payload: &[u8]) {
        let client = self.role == Role::Client;
        let w = self.write_buf();
        w.reserve(payload.len() + MAX_HEADER);
        w.put_u8(head);
        let masked = if client { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => w.put_u8(masked | n as u8),
            n if n <= 0xffff => {
                w.put_u8(masked | 126);
                w.put_u16(n as u16);
            }
            n => {
                w.put_u8(masked | 127);
                w.put_u64(n as u64);
            }
        }
        if client {
            // A client masks every frame with a fresh, unpredictable key
            // (RFC 6455 §5.3).
            let key = mask_key();
            w.put_slice(&key);
            let start = w.len();
            w.put_slice(payload);
            apply_mask(&mut w[start..], key);
        } else {
            w.put_slice(payload);
        }
        self.queued();
    }

    fn queue_close(&mut self, frame: Option<(u16, &str)>) {
        match frame {
            None => self.queue(FIN | CLOSE, &[]),
            Some((code, reason)) => {
                let reason = crate::protocol::close_reason(reason);
                let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
                payload[..2].copy_from_slice(&code.to_be_bytes());
                payload[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
                self.queue(FIN | CLOSE, &payload[..2 + reason.len()]);
            }
        }
    }

    /// The write buffer, borrowed from the pool if the leg holds none.
    fn write_buf(&mut self) -> &mut BytesMut {
        if self.wbuf.capacity() == 0 {
            self.wbuf = pool::take();
        }
        &mut self.wbuf
    }

    /// Bytes were queued: at `WRITE_HIGH` the leg takes no more until a
    /// flush.
    fn queued(&mut self) {
        if self.wbuf.len() >= WRITE_HIGH {
            self.ready = false;
        }
    }

    /// Drop the read buffer if it holds nothing.
    fn release_read(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            pool::give(std::mem::take(&mut self.rbuf));
        }
    }
}

// === impl WsStream: the zero-copy relay ===

impl WsStream {
    /// The payload of the last [`Incoming::Data`] (empty once consumed).
    pub fn data(&self) -> &[u8] {
        match self.pending {
            0 => &[],
            end => &self.rbuf[self.pending_header..end],
        }
    }

    /// Send the last [`Incoming::Data`] on through `to`, then let it go.
    ///
    /// The whole relay contract is here. The frame is rewritten in place
    /// for `to`'s role ([`Self::frame_for`]): masked with a fresh key for a
    /// client leg, as it came for a server leg, so its bytes are exactly
    /// what `to` would have encoded. When it is the last of what this
    /// leg's socket had and nothing waits in `to`, `to` writes it at once
    /// straight from this read buffer (one message in flight per session,
    /// the common case: no copy at all); otherwise it is queued in `to`,
    /// and flushed when the session runs out of reads, so a burst still
    /// leaves in one write. A frame that cannot be rewritten (a header not
    /// in the form wspulse writes) is re-encoded from [`Self::data`].
    ///
    /// Returns whether `to` queued anything (and needs a flush); an error
    /// is `to`'s write failing.
    pub fn forward_to(&mut self, to: &mut WsStream) -> Result<bool, Error> {
        if self.pending == 0 {
            return Ok(false);
        }
        let sent = match self.frame_for(to.role) {
            Some((frame, now)) => to.send_frame(frame, now),
            None => {
                let head = self.rbuf[0];
                to.send_message(head & 0x0f == TEXT, head & RSV1 != 0, self.data());
                Ok(true)
            }
        };
        self.consume_data();
        sent
    }

    /// Done with [`Self::data`]: its bytes leave the read buffer. The next
    /// poll does this too.
    fn consume_data(&mut self) {
        if self.pending > 0 {
            pool::discard(&mut self.rbuf, self.pending);
            self.pending = 0;
        }
    }

    /// The last [`Incoming::Data`] as the frame a leg of role `to` sends,
    /// rewritten in place: for a client, its payload masked with a fresh
    /// key in the key's place; for a server, as it came. `None` (and
    /// nothing changed) when the header is not the one wspulse writes: a
    /// length not in its shortest form, or the roles do not pair up. With
    /// the frame comes whether it is the last of what the socket had:
    /// nothing after it in the buffer, and the read that brought it
    /// drained the socket.
    fn frame_for(&mut self, to: Role) -> Option<(&[u8], bool)> {
        let (size, end) = (self.pending_header, self.pending);
        let masked = to == Role::Client;
        let extended = extended_len_size(end - size);
        let mask_bit = self.rbuf[1] & 0x80 != 0;
        if size != 2 + extended + if masked { 4 } else { 0 } || mask_bit != masked {
            return None;
        }
        if masked {
            // A fresh key, as `queue` draws one (RFC 6455 §5.3): never the
            // client's own, which it chose along with the bytes.
            let key = mask_key();
            self.rbuf[size - 4..size].copy_from_slice(&key);
            apply_mask(&mut self.rbuf[size..end], key);
        }
        let last = self.drained && self.rbuf.len() == end;
        Some((&self.rbuf[..end], last))
    }

    /// Send a whole frame that another leg's [`Self::frame_for`] encoded.
    /// When nothing waits before it and `now` (no more input is at hand
    /// to gather into one write with it), it is written at once; whatever
    /// the socket does not take is queued, as is the whole frame
    /// otherwise. Returns whether anything was queued.
    fn send_frame(&mut self, frame: &[u8], now: bool) -> Result<bool, Error> {
        if self.state != State::Active {
            return Ok(false);
        }
        let mut rest = frame;
        if now && self.wbuf.is_empty() && self.pong.is_none() {
            match self.io.write_now(frame) {
                Ok(0) => return Err(Error::Reset),
                Ok(n) => rest = &frame[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(Error::from_io(e)),
            }
        }
        if rest.is_empty() {
            return Ok(false);
        }
        self.write_buf().extend_from_slice(rest);
        self.queued();
        Ok(true)
    }
}

// === impl WsStream: reading ===

impl WsStream {
    /// The next thing received; `None` once the stream ended cleanly (the
    /// closing handshake done) and after an error (fused). A data message
    /// whole in one frame stays in the read buffer ([`Incoming::Data`]).
    pub fn poll_incoming(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Incoming, Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match ready!(self.poll_message(cx)) {
            Ok(Some(incoming)) => Poll::Ready(Some(Ok(incoming))),
            end => {
                self.ended = true;
                self.partial = None;
                self.pending = 0;
                pool::give(std::mem::take(&mut self.rbuf));
                Poll::Ready(end.err().map(Err))
            }
        }
    }

    /// `Ok(None)`: the stream ended cleanly.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Incoming>, Error>> {
        self.consume_data();
        if self.state == State::Terminated {
            return Poll::Ready(Ok(None));
        }
        loop {
            // Replies go out even while only reading (tungstenite does the same).
            let mut write_blocked = false;
            if self.reply_unflushed {
                match self.poll_write_out(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => write_blocked = true,
                }
            }
            if self.state == State::Terminated
                || (!write_blocked && self.role == Role::Server && !self.state.can_read())
            {
                self.state = State::Terminated;
                return Poll::Ready(Ok(None));
            }
            match ready!(self.poll_frame(cx)) {
                Ok(Some((h, size))) => {
                    if let Some(incoming) = self.on_frame(h, size)? {
                        return Poll::Ready(Ok(Some(incoming)));
                    }
                }
                Ok(None) => {
                    let was = std::mem::replace(&mut self.state, State::Terminated);
                    return Poll::Ready(if was.closes_exchanged() {
                        Ok(None)
                    } else {
                        Err(Error::Eof)
                    });
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// An I/O error: a reset once the Closes have been exchanged is just
    /// the end (`Ok`); anything else is the leg's error.
    fn io_failure(&mut self, e: io::Error) -> Result<(), Error> {
        let reset = matches!(e.kind(), io::ErrorKind::ConnectionReset);
        if reset && self.state.closes_exchanged() {
            self.state = State::Terminated;
            Ok(())
        } else {
            Err(Error::from_io(e))
        }
    }

    /// Read until a complete frame is at the front of `rbuf`: its header
    /// and the header's size; `None` at the end of the stream.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<(Header, usize)>, Error>> {
        loop {
            if self.header.is_none()
                && let Some((h, size)) = Header::parse(&self.rbuf)
            {
                // Refuse an oversized frame on its header, before its payload.
                if h.len > self.limits.max_frame_size as u64 {
                    return Poll::Ready(Err(too_big(h.len, self.limits.max_frame_size)));
                }
                self.header = Some((h, size));
            }
            let need = match self.header {
                Some((h, size)) => {
                    // Checked against max_frame_size (a usize) above.
                    let end = size + h.len as usize;
                    if self.rbuf.len() >= end {
                        self.header = None;
                        return Poll::Ready(Ok(Some((h, size))));
                    }
                    end - self.rbuf.len()
                }
                None => MAX_HEADER,
            };
            // The last read drained the socket and all it brought is used:
            // ask the socket before borrowing a buffer for a read that would
            // find nothing (the usual poll after a relayed message). Only
            // then: asked every time, the socket would be polled twice
            // whenever it does have bytes.
            if self.drained && self.rbuf.is_empty() {
                self.drained = false;
                match self.io.poll_read_ready(cx) {
                    Poll::Pending => {
                        self.release_read();
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(self.io_failure(e).map(|()| None)),
                    Poll::Ready(Ok(())) => {}
                }
            }
            if self.rbuf.capacity() == 0 {
                self.rbuf = pool::take();
            }
            self.rbuf.reserve(need);
            let room = self.rbuf.capacity() - self.rbuf.len();
            match poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf) {
                Poll::Pending => {
                    self.release_read();
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(None)),
                Poll::Ready(Ok(n)) => self.drained = n < room,
                Poll::Ready(Err(e)) => return Poll::Ready(self.io_failure(e).map(|()| None)),
            }
        }
    }

    /// Act on one received frame, at the front of `rbuf`: its header
    /// (`size` bytes) and then its payload. `Some` is something for the
    /// caller.
    fn on_frame(&mut self, h: Header, size: usize) -> Result<Option<Incoming>, Error> {
        use Violation as V;
        // `poll_frame` returns a header only once its payload is in `rbuf`.
        let len = h.len as usize;
        let end = size + len;
        if self.role == Role::Server {
            match h.mask {
                Some(key) => apply_mask(&mut self.rbuf[size..end], key),
                None => return Err(Error::Protocol(V::UnmaskedFromClient)),
            }
        }
        if !self.state.can_read() {
            return Err(Error::Protocol(V::AfterClose));
        }
        // RSV1 is permessage-deflate's "compressed" mark, on the first
        // frame of a data message only (RFC 7692 §6); every other reserved
        // bit, and RSV1 without the extension, breaks RFC 6455 §5.2.
        let compressed = h.rsv == 0b100;
        if h.rsv != 0 && !(compressed && self.deflate && (h.opcode == TEXT || h.opcode == BINARY)) {
            return Err(Error::Protocol(V::ReservedBits));
        }
        if self.role == Role::Client && h.mask.is_some() {
            return Err(Error::Protocol(V::MaskedFromServer));
        }
        if h.opcode >= 8 {
            // Control frames: whole, and at most 125 bytes (§5.5).
            if !h.fin {
                return Err(Error::Protocol(V::FragmentedControl));
            }
            if len > MAX_CONTROL_PAYLOAD {
                return Err(Error::Protocol(V::ControlTooBig));
            }
            // Copied out rather than split off: a split would make the
            // read buffer shared, and it could not go back to the pool
            // (two 16 KiB allocations per session, for the two Closes).
            let mut copy = [0u8; MAX_CONTROL_PAYLOAD];
            let payload = &mut copy[..len];
            payload.copy_from_slice(&self.rbuf[size..end]);
            pool::discard(&mut self.rbuf, end);
            return match h.opcode {
                CLOSE => self.on_close(payload),
                PING => {
                    let data = Bytes::copy_from_slice(payload);
                    if self.state == State::Active {
                        self.pong = Some(data.clone());
                        self.reply_unflushed = true;
                    }
                    Ok(Some(Incoming::Ping(data)))
                }
                PONG => Ok(Some(Incoming::Pong(Bytes::copy_from_slice(payload)))),
                op => Err(Error::Protocol(V::UnknownOpcode(op))),
            };
        }
        let max = self.limits.max_message_size;
        match (h.opcode, self.partial.as_mut()) {
            (CONTINUATION, None) => Err(Error::Protocol(V::UnexpectedContinuation)),
            (CONTINUATION, Some(p)) => {
                p.extend(&self.rbuf[size..end], max)?;
                pool::discard(&mut self.rbuf, end);
                match (h.fin, self.partial.take()) {
                    (true, Some(p)) => p.complete().map(Some),
                    (_, p) => {
                        self.partial = p;
                        Ok(None)
                    }
                }
            }
            (TEXT | BINARY, Some(_)) => Err(Error::Protocol(V::ExpectedContinuation)),
            (op @ (TEXT | BINARY), None) => {
                let text = op == TEXT;
                if h.fin {
                    if len > max {
                        return Err(too_big(h.len, max));
                    }
                    // A compressed text message's UTF-8 is the endpoint's
                    // to check: the proxy would have to inflate it.
                    if text && !compressed {
                        std::str::from_utf8(&self.rbuf[size..end])?;
                    }
                    // Left in place, header and all: the relay sends it on
                    // from here ([`Self::forward_to`]), with no `Bytes`
                    // split off the read buffer (which made the buffer
                    // shared and its return to the pool a slow path).
                    self.pending = end;
                    self.pending_header = size;
                    return Ok(Some(Incoming::Data {
                        text,
                        compressed,
                        len,
                    }));
                }
                let mut p = Partial {
                    text,
                    compressed,
                    data: BytesMut::new(),
                    checked: 0,
                };
                p.extend(&self.rbuf[size..end], max)?;
                pool::discard(&mut self.rbuf, end);
                self.partial = Some(p);
                Ok(None)
            }
            (op, _) => Err(Error::Protocol(V::UnknownOpcode(op))),
        }
    }

    fn on_close(&mut self, payload: &[u8]) -> Result<Option<Incoming>, Error> {
        let frame = parse_close(payload)?;
        match self.state {
            State::Active => {
                if let Some(f) = &frame
                    && !code_allowed_on_wire(f.code)
                {
                    return Err(Error::Protocol(Violation::ForbiddenCloseCode(f.code)));
                }
                self.state = State::ClosedByPeer;
                self.pong = None;
                // Echo the peer's Close (§5.5.1).
                self.queue_close(frame.as_ref().map(|f| (f.code, f.reason.as_str())));
                self.reply_unflushed = true;
                Ok(Some(Incoming::Close(frame)))
            }
            State::ClosedByUs => {
                self.state = State::CloseAcknowledged;
                Ok(Some(Incoming::Close(frame)))
            }
            // `on_frame` refuses frames in the other states.
            _ => Ok(None),
        }
    }
}

// === impl WsStream: writing ===

impl WsStream {
    /// Ready to take a message: `Pending` while the write buffer is over
    /// its bound and the socket does not take it (backpressure).
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.ready {
            return Poll::Ready(Ok(()));
        }
        let r = ready!(self.poll_write_out(cx));
        self.ready = true;
        Poll::Ready(r)
    }

    /// Write out everything queued (and the Pong owed).
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.poll_write_out(cx)
    }

    /// Write out everything queued (and the Pong owed), then flush `io`.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.state == State::Terminated && self.wbuf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        // Under a ping flood into a full socket, owe one Pong (the latest,
        // as §5.5.3 allows) rather than queue one per Ping.
        if self.state == State::Active
            && self.wbuf.len() < WRITE_HIGH
            && let Some(data) = self.pong.take()
        {
            self.queue(FIN | PONG, &data);
        }
        // A server leg that can read no more writes its last bytes: the
        // stream ends after this flush and the socket is dropped.
        let last = self.role == Role::Server && !self.state.can_read();
        let wrote = !self.wbuf.is_empty();
        while !self.wbuf.is_empty() {
            let written = if last {
                self.io.poll_write_last(cx, &self.wbuf)
            } else {
                Pin::new(&mut self.io).poll_write(cx, &self.wbuf)
            };
            match ready!(written) {
                Ok(0) => return Poll::Ready(Err(Error::Reset)),
                // All of it, the usual case, keeps the buffer's start, so
                // giving it back below needs no reclaim.
                Ok(n) => pool::discard(&mut self.wbuf, n),
                Err(e) => {
                    self.wbuf.clear();
                    return Poll::Ready(self.io_failure(e));
                }
            }
        }
        if last && wrote {
            self.io.end_write();
        }
        if self.wbuf.capacity() > 0 {
            pool::give(std::mem::take(&mut self.wbuf));
        }
        if let Err(e) = ready!(Pin::new(&mut self.io).poll_flush(cx)) {
            return Poll::Ready(self.io_failure(e));
        }
        self.ready = true;
        if self.pong.is_none() {
            self.reply_unflushed = false;
        }
        // The server closes the TCP connection first once the Closes are
        // exchanged and written (§7.1.1): the stream ends.
        if self.role == Role::Server && !self.state.can_read() {
            self.state = State::Terminated;
        }
        Poll::Ready(Ok(()))
    }
}
