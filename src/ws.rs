//! The WebSocket protocol on one leg (RFC 6455 §5 and §7): frames in and
//! out, message reassembly, ping replies and the closing handshake.
//!
//! wspulse's own rather than tungstenite's `WebSocketStream`, for what the
//! benchmark (bench/README.md) measured:
//! - an idle leg holds no buffer: both buffers come from a small per-thread
//!   pool when bytes move and go back when they drain, where tungstenite
//!   keeps a read buffer (4 KiB here) and a write buffer per leg for the
//!   life of the connection;
//! - a relayed message costs fewer instructions: no zero-filled read chunk
//!   per read, and a data message in one frame is never copied: it is
//!   unmasked and checked where it was read ([`Incoming::Data`]), rewritten
//!   there for the other leg ([`WsStream::frame_for`]) and written from
//!   there ([`WsStream::send_frame`]); only what the socket does not take
//!   at once is copied into the write buffer.
//!
//! It speaks tungstenite's types at its edges (`Message`, `Error`,
//! `Role`), with tungstenite's semantics, so the session, the closure
//! classification and the tests see the same things:
//!
//! | situation                                  | what the leg does                                    |
//! |--------------------------------------------|------------------------------------------------------|
//! | Ping while open                            | returns it; queues a Pong (the latest ping's) for the next flush |
//! | peer's Close while open                    | returns it; queues the same Close back (echo)        |
//! | peer's Close after ours                    | returns it (the reply)                               |
//! | server, Close exchanged and echo written   | the stream ends (`None`): the server closes TCP first |
//! | client, Close exchanged                    | reads on to the server's EOF, then ends              |
//! | EOF before any Close                       | `Protocol(ResetWithoutClosingHandshake)`             |
//! | frame over `max_frame_size` (header alone) | `Capacity(MessageTooLong)`                           |
//! | message over `max_message_size`            | `Capacity(MessageTooLong)`                           |
//! | invalid UTF-8 (text, close reason)         | `Utf8`, as soon as a fragment proves it              |
//! | close code that may not be sent (§7.4)     | `Protocol(InvalidCloseSequence)`                     |
//! | RSV bits, bad masking, bad opcode, fragmented or long control frame, bad continuation | `Protocol(...)`, the variant tungstenite uses |
//! | frame after the Close exchange             | `Protocol(ReceivedAfterClosing)`                     |
//! | send after our Close                       | `Protocol(SendAfterClosing)`                         |
//!
//! After an error or the end, the stream is fused (`None`). Unlike
//! tungstenite, close code 1014 (bad gateway, IANA registered) is accepted.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data as OpData};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{
    Error, Message, Utf8Bytes,
    error::{CapacityError, ProtocolError},
};
use tokio_util::io::poll_read_buf;

use crate::protocol::code_allowed_on_wire;
use crate::protocol::opcode::{BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT};

/// Size of a buffer taken from the pool. A read asks for at least this
/// much room (more when a frame header announces a bigger payload), so a
/// 16 KiB message takes one or two reads.
const CHUNK: usize = 16 * 1024;

/// A send makes the leg not ready (`poll_ready` then flushes first) once
/// this much waits in its write buffer: the bound behind backpressure.
const WRITE_HIGH: usize = 8 * 1024;

/// Buffers kept per thread for reuse, and the largest one worth keeping.
const POOL_MAX: usize = 64;
const POOL_BUF_MAX: usize = 256 * 1024;

/// The largest frame header: 2 + 8 (length) + 4 (mask) bytes.
const MAX_HEADER: usize = 14;

thread_local! {
    /// Drained buffers, reused by the next leg on this thread that has
    /// bytes to move. A session's buffers are in use only while it relays.
    static POOL: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// Masking keys drawn ahead, per thread: 64 bytes, 16 keys.
const KEYS: usize = 16;

thread_local! {
    /// Keys from the thread's CSPRNG not yet used, and how many are used.
    static MASK_KEYS: RefCell<([[u8; 4]; KEYS], usize)> = const { RefCell::new(([[0; 4]; KEYS], KEYS)) };
}

/// A fresh, unpredictable masking key (RFC 6455 §5.3), from the thread's
/// CSPRNG as tungstenite draws them, but 16 at a time: a draw per frame
/// cost about 100 instructions, this about 50 (`bench/callgrind`). Each
/// key is handed out once.
fn mask_key() -> [u8; 4] {
    MASK_KEYS.with(|k| {
        let (keys, used) = &mut *k.borrow_mut();
        if *used == KEYS {
            rand::fill(keys.as_flattened_mut());
            *used = 0;
        }
        let key = keys[*used];
        *used += 1;
        key
    })
}

fn take_buf() -> BytesMut {
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(CHUNK))
}

/// Drop the first `n` bytes of `buf`. Dropping all of them (the usual case:
/// one message per read, one whole write) clears it instead, so the buffer
/// keeps its start and its whole capacity: `advance` would move the start,
/// and giving the buffer back to the pool would then take `try_reclaim`'s
/// slow path to move it back.
fn discard(buf: &mut BytesMut, n: usize) {
    if n == buf.len() {
        buf.clear();
    } else {
        buf.advance(n);
    }
}

/// A write that took nothing: the peer is gone.
fn reset_while_sending() -> Error {
    Error::Io(io::Error::new(
        io::ErrorKind::ConnectionReset,
        "connection reset while sending",
    ))
}

/// Give back an empty buffer. It is kept only if no message still shares
/// its memory (`try_reclaim` fails then) and the pool has room.
fn give_buf(mut buf: BytesMut) {
    buf.clear();
    if buf.capacity() == 0 || buf.capacity() > POOL_BUF_MAX || !buf.try_reclaim(CHUNK) {
        return;
    }
    POOL.with(|p| {
        let mut pool = p.borrow_mut();
        if pool.len() < POOL_MAX {
            pool.push(buf);
        }
    });
}

/// The connection under a leg.
///
/// `poll_write_last` writes the last bytes before the connection is
/// dropped: the server-role leg's echo of the peer's Close, after which
/// the stream ends and the session drops the socket at once (§7.1.1);
/// `end_write` follows it. On TCP the first sends with `MSG_MORE`, so the
/// kernel holds the bytes, and the second shuts the write side down, which
/// sends them with the FIN in one segment, as HAProxy does, rather than
/// the Close frame and then a bare FIN: one segment fewer for every
/// session the client closes.
///
/// The shutdown is what makes the held bytes safe. Dropping the socket
/// alone would send them too, unless the peer sent anything after its
/// Close that we did not read (Autobahn case 7.1.3 pings right after it):
/// then the kernel answers the close with a reset and throws away what
/// it still holds, and the peer never gets our Close. The end-to-end suite
/// caught that once in the node run. After the shutdown the bytes and the
/// FIN are out; a reset after them no longer takes the Close along.
///
/// The defaults are a plain write and no shutdown (the drop closes).
pub trait Transport: AsyncRead + AsyncWrite + Unpin {
    fn poll_write_last(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(self).poll_write(cx, buf)
    }

    /// Send what `poll_write_last` wrote, with the FIN.
    fn end_write(&mut self) {}

    /// Wait until a read may find bytes (the waker is registered when not).
    /// The default: try the read.
    fn poll_read_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Write what the socket takes now, without a waker: the relay's
    /// direct send ([`WsStream::send_frame`]). The default takes nothing.
    fn write_now(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl Transport for TcpStream {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn poll_write_last(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let tcp: &TcpStream = self;
        loop {
            ready!(tcp.poll_write_ready(cx))?;
            let sent = tcp.try_io(tokio::io::Interest::WRITABLE, || {
                socket2::SockRef::from(tcp)
                    .send_with_flags(buf, libc::MSG_MORE | libc::MSG_NOSIGNAL)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }

    fn write_now(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.try_write(buf)
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn end_write(&mut self) {
        // An error here (the peer reset first) leaves nothing to send.
        let _ = socket2::SockRef::from(&*self).shutdown(std::net::Shutdown::Write);
    }
}

/// Message and frame size limits for one leg (`limits.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message, reassembled from its fragments.
    pub max_message_size: usize,
    /// Largest single frame payload.
    pub max_frame_size: usize,
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
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    fin: bool,
    rsv: u8,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
}

impl Header {
    /// The header at the front of `buf` and its size, or `None` if `buf`
    /// does not hold all of it yet.
    fn parse(buf: &[u8]) -> Option<(Header, usize)> {
        let (&b0, &b1) = (buf.first()?, buf.get(1)?);
        let (len, mut at) = match b1 & 0x7f {
            126 => (
                u64::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
                4,
            ),
            127 => {
                let b: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
                (u64::from_be_bytes(b), 10)
            }
            n => (u64::from(n), 2),
        };
        let mask = if b1 & 0x80 != 0 {
            let key: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
            at += 4;
            Some(key)
        } else {
            None
        };
        let header = Header {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x07,
            opcode: b0 & 0x0f,
            mask,
            len,
        };
        Some((header, at))
    }
}

/// XOR `buf` with the masking key (RFC 6455 §5.3), eight bytes at a time.
fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    // The key twice over, in either byte order: [k0 k1 k2 k3 k0 k1 k2 k3].
    let k = u64::from(u32::from_ne_bytes(key)) * 0x1_0000_0001;
    let (words, rest) = buf.as_chunks_mut::<8>();
    for w in words {
        *w = (u64::from_ne_bytes(*w) ^ k).to_ne_bytes();
    }
    // `rest` starts at a multiple of 8, so the key lines up again at 0.
    for (i, b) in rest.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// A Close frame's payload: nothing, or a code and a UTF-8 reason.
fn parse_close(payload: &[u8]) -> Result<Option<CloseFrame>, Error> {
    match payload {
        [] => Ok(None),
        [_] => Err(Error::Protocol(ProtocolError::InvalidCloseSequence)),
        [hi, lo, reason @ ..] => Ok(Some(CloseFrame {
            code: CloseCode::from(u16::from_be_bytes([*hi, *lo])),
            reason: Utf8Bytes::from(std::str::from_utf8(reason)?),
        })),
    }
}

fn too_long(size: u64, max_size: usize) -> Error {
    Error::Capacity(CapacityError::MessageTooLong {
        size: usize::try_from(size).unwrap_or(usize::MAX),
        max_size,
    })
}

/// A fragmented message being put back together.
struct Partial {
    text: bool,
    data: BytesMut,
    /// Bytes of `data` known to be valid UTF-8 (text only), so each
    /// fragment is checked once and a bad one fails at once.
    checked: usize,
}

impl Partial {
    fn extend(&mut self, fragment: &[u8], max: usize) -> Result<(), Error> {
        let size = self.data.len() as u64 + fragment.len() as u64;
        if size > max as u64 {
            return Err(too_long(size, max));
        }
        self.data.extend_from_slice(fragment);
        if self.text {
            match std::str::from_utf8(&self.data[self.checked..]) {
                Ok(_) => self.checked = self.data.len(),
                // A sequence cut at the fragment's end may go on in the next.
                Err(e) if e.error_len().is_none() => self.checked += e.valid_up_to(),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn complete(self) -> Result<Message, Error> {
        data_message(self.text, self.data.freeze())
    }
}

/// A whole Text (UTF-8 checked) or Binary message.
fn data_message(text: bool, data: Bytes) -> Result<Message, Error> {
    Ok(if text {
        Message::Text(Utf8Bytes::try_from(data)?)
    } else {
        Message::Binary(data)
    })
}

/// What a leg received: a data message whole in one frame, left where it
/// was read (the relay copies it straight into the other leg's write
/// buffer, [`WsStream::data`]), or any other message.
#[derive(Debug)]
pub enum Incoming {
    /// A Text (UTF-8 checked) or Binary message in one frame, `len` bytes,
    /// readable with [`WsStream::data`] until [`WsStream::consume_data`] or
    /// the next poll.
    Data { text: bool, len: usize },
    /// Anything else: control frames and reassembled fragmented messages.
    Message(Message),
}

/// One leg's WebSocket connection over `S`: a [`Stream`] of received
/// messages and a [`Sink`] of messages to send (see the module docs for
/// its semantics).
pub struct WsStream<S> {
    io: S,
    role: Role,
    limits: Limits,
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
impl<S> Drop for WsStream<S> {
    fn drop(&mut self) {
        give_buf(std::mem::take(&mut self.rbuf));
        give_buf(std::mem::take(&mut self.wbuf));
    }
}

impl<S> WsStream<S> {
    /// A leg over an established connection, after the HTTP upgrade.
    /// `read_ahead` holds bytes already read past the handshake (a peer may
    /// send its first frame right behind it).
    pub fn new(io: S, role: Role, limits: Limits, read_ahead: &[u8]) -> WsStream<S> {
        WsStream {
            io,
            role,
            limits,
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
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Encode a frame into the write buffer (masked when we are the client).
    fn queue(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let client = self.role == Role::Client;
        let w = self.write_buf();
        w.reserve(payload.len() + MAX_HEADER);
        w.put_u8((u8::from(fin) << 7) | opcode);
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

    /// The write buffer, borrowed from the pool if the leg holds none.
    fn write_buf(&mut self) -> &mut BytesMut {
        if self.wbuf.capacity() == 0 {
            self.wbuf = take_buf();
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

    /// Send our Close: the peer's reply is awaited from now on, and no
    /// Pong is owed any more.
    fn begin_close(&mut self, frame: Option<&CloseFrame>) {
        self.state = State::ClosedByUs;
        self.pong = None;
        self.queue_close(frame);
    }

    fn queue_close(&mut self, frame: Option<&CloseFrame>) {
        match frame {
            None => self.queue(true, CLOSE, &[]),
            Some(f) => {
                let mut payload = Vec::with_capacity(2 + f.reason.len());
                payload.extend_from_slice(&u16::from(f.code).to_be_bytes());
                payload.extend_from_slice(f.reason.as_bytes());
                self.queue(true, CLOSE, &payload);
            }
        }
    }

    /// An I/O error, as tungstenite reports it: a reset once the Closes
    /// have been exchanged is just the end.
    fn io_error(&self, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::ConnectionReset
            && matches!(self.state, State::ClosedByPeer | State::CloseAcknowledged)
        {
            Error::ConnectionClosed
        } else {
            Error::Io(e)
        }
    }

    /// Drop the read buffer if it holds nothing.
    fn release_read(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            give_buf(std::mem::take(&mut self.rbuf));
        }
    }

    /// Act on one received frame, at the front of `rbuf`: its header
    /// (`size` bytes) and then its payload. `Some` is something for the
    /// caller.
    fn on_frame(&mut self, h: Header, size: usize) -> Result<Option<Incoming>, Error> {
        use ProtocolError as P;
        // `poll_frame` returns a header only once its payload is in `rbuf`.
        let len = h.len as usize;
        let end = size + len;
        if self.role == Role::Server {
            match h.mask {
                Some(key) => apply_mask(&mut self.rbuf[size..end], key),
                None => return Err(Error::Protocol(P::UnmaskedFrameFromClient)),
            }
        }
        if !self.state.can_read() {
            return Err(Error::Protocol(P::ReceivedAfterClosing));
        }
        if h.rsv != 0 {
            return Err(Error::Protocol(P::NonZeroReservedBits));
        }
        if self.role == Role::Client && h.mask.is_some() {
            return Err(Error::Protocol(P::MaskedFrameFromServer));
        }
        if h.opcode >= 8 {
            // Control frames: whole, and at most 125 bytes (§5.5).
            if !h.fin {
                return Err(Error::Protocol(P::FragmentedControlFrame));
            }
            if len > 125 {
                return Err(Error::Protocol(P::ControlFrameTooBig));
            }
            // Copied out rather than split off: a split would make the
            // read buffer shared, and it could not go back to the pool
            // (two 16 KiB allocations per session, for the two Closes).
            let mut copy = [0u8; 125];
            let payload = &mut copy[..len];
            payload.copy_from_slice(&self.rbuf[size..end]);
            discard(&mut self.rbuf, end);
            let msg = match h.opcode {
                CLOSE => self.on_close(payload)?,
                PING => {
                    let data = Bytes::copy_from_slice(payload);
                    if self.state == State::Active {
                        self.pong = Some(data.clone());
                        self.reply_unflushed = true;
                    }
                    Some(Message::Ping(data))
                }
                PONG => Some(Message::Pong(Bytes::copy_from_slice(payload))),
                i => return Err(Error::Protocol(P::UnknownControlFrameType(i))),
            };
            return Ok(msg.map(Incoming::Message));
        }
        let max = self.limits.max_message_size;
        match (h.opcode, self.partial.as_mut()) {
            (CONTINUATION, None) => Err(Error::Protocol(P::UnexpectedContinueFrame)),
            (CONTINUATION, Some(p)) => {
                p.extend(&self.rbuf[size..end], max)?;
                discard(&mut self.rbuf, end);
                match (h.fin, self.partial.take()) {
                    (true, Some(p)) => Ok(Some(Incoming::Message(p.complete()?))),
                    (_, p) => {
                        self.partial = p;
                        Ok(None)
                    }
                }
            }
            (op, Some(_)) => {
                let data = match op {
                    TEXT => OpData::Text,
                    BINARY => OpData::Binary,
                    i => OpData::Reserved(i),
                };
                Err(Error::Protocol(P::ExpectedFragment(data)))
            }
            (op @ (TEXT | BINARY), None) => {
                let text = op == TEXT;
                if h.fin {
                    if len > max {
                        return Err(too_long(h.len, max));
                    }
                    if text {
                        std::str::from_utf8(&self.rbuf[size..end])?;
                    }
                    // Left in place, header and all: the relay sends it on
                    // from here ([`Self::frame_for`]), with no `Bytes` split
                    // off the read buffer (which made the buffer shared and
                    // its return to the pool a slow path) and no `Message`
                    // built and dropped.
                    self.pending = end;
                    self.pending_header = size;
                    return Ok(Some(Incoming::Data { text, len }));
                }
                let mut p = Partial {
                    text,
                    data: BytesMut::new(),
                    checked: 0,
                };
                p.extend(&self.rbuf[size..end], max)?;
                discard(&mut self.rbuf, end);
                self.partial = Some(p);
                Ok(None)
            }
            (i, None) => Err(Error::Protocol(P::UnknownDataFrameType(i))),
        }
    }

    fn on_close(&mut self, payload: &[u8]) -> Result<Option<Message>, Error> {
        let frame = parse_close(payload)?;
        match self.state {
            State::Active => {
                if let Some(f) = &frame
                    && !code_allowed_on_wire(u16::from(f.code))
                {
                    return Err(Error::Protocol(ProtocolError::InvalidCloseSequence));
                }
                self.state = State::ClosedByPeer;
                self.pong = None;
                // Echo the peer's Close (§5.5.1).
                self.queue_close(frame.as_ref());
                self.reply_unflushed = true;
                Ok(Some(Message::Close(frame)))
            }
            State::ClosedByUs => {
                self.state = State::CloseAcknowledged;
                Ok(Some(Message::Close(frame)))
            }
            // `on_frame` refuses frames in the other states.
            _ => Ok(None),
        }
    }
}

impl<S: Transport> WsStream<S> {
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
            self.queue(true, PONG, &data);
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
                Ok(0) => return Poll::Ready(Err(reset_while_sending())),
                // All of it, the usual case, keeps the buffer's start, so
                // giving it back below needs no reclaim.
                Ok(n) => discard(&mut self.wbuf, n),
                Err(e) => return Poll::Ready(Err(self.io_error(e))),
            }
        }
        if last && wrote {
            self.io.end_write();
        }
        if self.wbuf.capacity() > 0 {
            give_buf(std::mem::take(&mut self.wbuf));
        }
        if let Err(e) = ready!(Pin::new(&mut self.io).poll_flush(cx)) {
            return Poll::Ready(Err(self.io_error(e)));
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

    /// Read until a complete frame is at the front of `rbuf`: its header
    /// and the header's size; `None` at the end of the stream.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<(Header, usize)>, Error>> {
        loop {
            if self.header.is_none()
                && let Some((h, size)) = Header::parse(&self.rbuf)
            {
                // Refuse an oversized frame on its header, before its payload.
                if h.len > self.limits.max_frame_size as u64 {
                    return Poll::Ready(Err(too_long(h.len, self.limits.max_frame_size)));
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
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(self.io_error(e))),
                    Poll::Ready(Ok(())) => {}
                }
            }
            if self.rbuf.capacity() == 0 {
                self.rbuf = take_buf();
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
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.io_error(e))),
            }
        }
    }

    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Incoming, Error>> {
        self.consume_data();
        if self.state == State::Terminated {
            return Poll::Ready(Err(Error::AlreadyClosed));
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
                return Poll::Ready(Err(Error::ConnectionClosed));
            }
            match ready!(self.poll_frame(cx)) {
                Ok(Some((h, size))) => {
                    if let Some(incoming) = self.on_frame(h, size)? {
                        return Poll::Ready(Ok(incoming));
                    }
                }
                Ok(None) => {
                    let was = std::mem::replace(&mut self.state, State::Terminated);
                    return Poll::Ready(Err(match was {
                        State::ClosedByPeer | State::CloseAcknowledged => Error::ConnectionClosed,
                        _ => Error::Protocol(ProtocolError::ResetWithoutClosingHandshake),
                    }));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<S: Transport> WsStream<S> {
    /// The next thing received, as [`Stream::poll_next`] gives it but with
    /// a data message whole in one frame left in the read buffer
    /// ([`Incoming::Data`]): the relay's path, which copies it once, from
    /// the read buffer into the other leg's write buffer. After an error
    /// or the end, fused (`None`).
    pub fn poll_incoming(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Incoming, Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match ready!(self.poll_message(cx)) {
            Ok(incoming) => Poll::Ready(Some(Ok(incoming))),
            Err(e) => {
                self.ended = true;
                self.partial = None;
                self.pending = 0;
                give_buf(std::mem::take(&mut self.rbuf));
                match e {
                    Error::AlreadyClosed | Error::ConnectionClosed => Poll::Ready(None),
                    e => Poll::Ready(Some(Err(e))),
                }
            }
        }
    }
}

impl<S> WsStream<S> {
    /// The payload of the last [`Incoming::Data`] (empty once consumed).
    pub fn data(&self) -> &[u8] {
        match self.pending {
            0 => &[],
            end => &self.rbuf[self.pending_header..end],
        }
    }

    /// Done with [`Self::data`]: its bytes leave the read buffer. The next
    /// poll does this too.
    pub fn consume_data(&mut self) {
        if self.pending > 0 {
            discard(&mut self.rbuf, self.pending);
            self.pending = 0;
        }
    }

    /// This leg's role: a client masks what it sends.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The last [`Incoming::Data`] as the frame a leg of role `to` sends,
    /// rewritten in place: for a client, its payload masked with a fresh
    /// key in the key's place; for a server, as it came. The bytes are
    /// then exactly what [`Self::send_data`] would have encoded, so the
    /// other leg sends them on with no copy ([`Self::send_frame`]). `None`
    /// (and nothing changed) when the header is not the one wspulse writes,
    /// a length not in its shortest form, or the roles do not pair up: send
    /// [`Self::data`] then. With the frame comes whether it is the last of
    /// what the socket had: nothing after it in the buffer, and the read
    /// that brought it drained the socket.
    pub fn frame_for(&mut self, to: Role) -> Option<(&[u8], bool)> {
        let (size, end) = (self.pending_header, self.pending);
        if end == 0 {
            return None;
        }
        let masked = to == Role::Client;
        let len = end - size;
        let extended = match len {
            n if n < 126 => 0,
            n if n <= 0xffff => 2,
            _ => 8,
        };
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

    /// Queue a data message from a slice, as `start_send` queues a Text or
    /// Binary [`Message`] (the caller vouches that a text payload is UTF-8).
    pub fn send_data(&mut self, text: bool, payload: &[u8]) -> Result<(), Error> {
        self.check_send()?;
        self.queue(true, if text { TEXT } else { BINARY }, payload);
        Ok(())
    }

    /// Whether a message may be sent in this state.
    fn check_send(&self) -> Result<(), Error> {
        match self.state {
            State::Active => Ok(()),
            State::Terminated => Err(Error::AlreadyClosed),
            _ => Err(Error::Protocol(ProtocolError::SendAfterClosing)),
        }
    }
}

impl<S: Transport> WsStream<S> {
    /// Send a whole frame that another leg's [`Self::frame_for`] encoded.
    /// When nothing waits before it and `now` (no more input is at hand
    /// to gather into one write with it), it is written at once, straight
    /// from the other leg's read buffer; whatever the socket does not take
    /// is queued, as is the whole frame otherwise. Returns whether anything
    /// was queued (and needs a flush).
    pub fn send_frame(&mut self, frame: &[u8], now: bool) -> Result<bool, Error> {
        self.check_send()?;
        let mut rest = frame;
        if now && self.wbuf.is_empty() && self.pong.is_none() {
            match self.io.write_now(frame) {
                Ok(0) => return Err(reset_while_sending()),
                Ok(n) => rest = &frame[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(self.io_error(e)),
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

impl<S: Transport> Stream for WsStream<S> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        Poll::Ready(match ready!(this.poll_incoming(cx)) {
            Some(Ok(Incoming::Data { text, len })) => {
                this.rbuf.advance(this.pending_header);
                this.pending = 0;
                Some(data_message(text, this.rbuf.split_to(len).freeze()))
            }
            Some(Ok(Incoming::Message(msg))) => Some(Ok(msg)),
            Some(Err(e)) => Some(Err(e)),
            None => None,
        })
    }
}

impl<S: Transport> Sink<Message> for WsStream<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        if this.ready {
            return Poll::Ready(Ok(()));
        }
        let r = ready!(this.poll_write_out(cx));
        this.ready = true;
        Poll::Ready(r)
    }

    fn start_send(self: Pin<&mut Self>, msg: Message) -> Result<(), Error> {
        let this = self.get_mut();
        this.check_send()?;
        match msg {
            Message::Text(t) => this.queue(true, TEXT, t.as_bytes()),
            Message::Binary(b) => this.queue(true, BINARY, &b),
            Message::Ping(p) => this.queue(true, PING, &p),
            Message::Pong(p) => this.queue(true, PONG, &p),
            Message::Close(frame) => this.begin_close(frame.as_ref()),
            Message::Frame(f) => {
                let h = f.header();
                this.queue(h.is_final, u8::from(h.opcode), f.payload());
            }
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        match ready!(self.get_mut().poll_write_out(cx)) {
            Err(Error::ConnectionClosed) => Poll::Ready(Ok(())),
            r => Poll::Ready(r),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        if this.state == State::Active {
            this.begin_close(None);
        }
        match ready!(this.poll_write_out(cx)) {
            Err(Error::ConnectionClosed) => Poll::Ready(Ok(())),
            r => Poll::Ready(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encode_frame;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    impl Transport for DuplexStream {}

    /// Masking is byte `i` XOR key byte `i % 4` (RFC 6455 §5.3), at every
    /// length around the word size, and the RFC's own example (§5.7).
    #[test]
    fn mask_matches_the_rfc_definition() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut hello = *b"Hello";
        apply_mask(&mut hello, key);
        assert_eq!(hello, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
        for len in 0..40 {
            let plain: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(41)).collect();
            let mut masked = plain.clone();
            apply_mask(&mut masked, key);
            for (i, (m, p)) in masked.iter().zip(&plain).enumerate() {
                assert_eq!(*m, p ^ key[i % 4], "length {len}, byte {i}");
            }
        }
    }

    /// Keys drawn ahead are each handed out once, across refills: 40 keys
    /// (two and a half batches) are all different. Two equal keys among
    /// 40 random ones: about 2 in 10 million.
    #[test]
    fn mask_keys_are_fresh_across_batches() {
        let keys: Vec<[u8; 4]> = (0..40).map(|_| mask_key()).collect();
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:?}");
    }

    /// The last bytes (our Close echo) reach the peer even when the peer
    /// sent something after its Close that we never read: without the
    /// shutdown, the close turns into a reset that discards the bytes
    /// `MSG_MORE` held back (Autobahn 7.1.3 through wspulse, once).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn last_bytes_survive_unread_input_at_close() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(b"ping after close").await.unwrap();
        // Arrived, and left unread.
        server.readable().await.unwrap();
        let n = std::future::poll_fn(|cx| server.poll_write_last(cx, b"CLOSE"))
            .await
            .unwrap();
        assert_eq!(n, 5);
        server.end_write();
        drop(server);
        let mut got = [0u8; 5];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"CLOSE");
    }

    const LIMITS: Limits = Limits {
        max_message_size: 1 << 20,
        max_frame_size: 1 << 16,
    };
    const KEY: Option<[u8; 4]> = Some([1, 2, 3, 4]);

    /// A server-role leg (the proxy's client leg) and the raw peer end.
    fn server() -> (WsStream<DuplexStream>, DuplexStream) {
        let (a, b) = tokio::io::duplex(1 << 20);
        (WsStream::new(a, Role::Server, LIMITS, &[]), b)
    }

    fn client() -> (WsStream<DuplexStream>, DuplexStream) {
        let (a, b) = tokio::io::duplex(1 << 20);
        (WsStream::new(a, Role::Client, LIMITS, &[]), b)
    }

    async fn next(ws: &mut WsStream<DuplexStream>) -> Option<Result<Message, Error>> {
        tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("a message or the end in time")
    }

    /// Read one unmasked frame (what a server leg writes): (fin+opcode byte, payload).
    async fn read_frame(peer: &mut DuplexStream) -> (u8, Vec<u8>) {
        let mut h = [0u8; 2];
        peer.read_exact(&mut h).await.unwrap();
        assert_eq!(h[1] & 0x80, 0, "a server's frames are not masked");
        let len = match h[1] & 0x7f {
            126 => peer.read_u16().await.unwrap() as usize,
            127 => peer.read_u64().await.unwrap() as usize,
            n => n as usize,
        };
        let mut p = vec![0; len];
        peer.read_exact(&mut p).await.unwrap();
        (h[0], p)
    }

    #[test]
    fn header_parse_needs_the_whole_header() {
        let f = encode_frame(true, BINARY, &[7; 300], KEY);
        for cut in 0..8 {
            assert_eq!(Header::parse(&f[..cut]), None, "cut at {cut}");
        }
        let (h, size) = Header::parse(&f).unwrap();
        assert_eq!(size, 8);
        assert_eq!((h.fin, h.opcode, h.len, h.mask), (true, BINARY, 300, KEY));
        let big = [0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(Header::parse(&big).unwrap().0.len, 1 << 63);
    }

    #[test]
    fn mask_is_an_involution_at_every_length_and_offset() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut m = data.clone();
            apply_mask(&mut m, [9, 8, 7, 6]);
            let expect: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ [9, 8, 7, 6][i % 4])
                .collect();
            assert_eq!(m, expect);
            apply_mask(&mut m, [9, 8, 7, 6]);
            assert_eq!(m, data);
        }
    }

    #[tokio::test]
    async fn reads_masked_messages_and_writes_unmasked_as_server() {
        let (mut ws, mut peer) = server();
        let mut input = encode_frame(true, TEXT, "héllo".as_bytes(), KEY);
        input.extend(encode_frame(true, BINARY, &[1, 2, 3], KEY));
        peer.write_all(&input).await.unwrap();
        assert_eq!(
            next(&mut ws).await.unwrap().unwrap(),
            Message::text("héllo")
        );
        assert_eq!(
            next(&mut ws).await.unwrap().unwrap(),
            Message::binary(vec![1, 2, 3])
        );
        ws.send(Message::binary(vec![5; 200])).await.unwrap();
        assert_eq!(read_frame(&mut peer).await, (0x82, vec![5; 200]));
    }

    async fn incoming(ws: &mut WsStream<DuplexStream>) -> Option<Result<Incoming, Error>> {
        std::future::poll_fn(|cx| ws.poll_incoming(cx)).await
    }

    /// The relay's path: a one-frame data message stays in the read buffer,
    /// unmasked and checked, until consumed (or the next poll), and goes
    /// out of the other leg from the slice, masked there with its own key.
    /// Fragmented messages and control frames still come as messages.
    #[tokio::test]
    async fn one_frame_data_is_lent_in_place_then_sent_from_the_slice() {
        let (mut ws, mut peer) = server();
        let mut input = encode_frame(true, TEXT, "héllo".as_bytes(), KEY);
        input.extend(encode_frame(true, BINARY, &[7; 300], KEY));
        input.extend(encode_frame(false, BINARY, b"ab", KEY));
        input.extend(encode_frame(true, CONTINUATION, b"c", KEY));
        input.extend(encode_frame(true, BINARY, b"skipped", KEY));
        input.extend(encode_frame(true, BINARY, b"last", KEY));
        peer.write_all(&input).await.unwrap();
        let (mut up, mut upstream_peer) = client();

        let got = incoming(&mut ws).await.unwrap().unwrap();
        assert!(matches!(got, Incoming::Data { text: true, len: 6 }));
        assert_eq!(ws.data(), "héllo".as_bytes());
        up.send_data(true, ws.data()).unwrap();
        ws.consume_data();
        assert_eq!(ws.data(), b"");
        up.flush().await.unwrap();
        let mut f = [0u8; 12];
        upstream_peer.read_exact(&mut f).await.unwrap();
        assert_eq!(f[..2], [0x81, 0x86]);
        let mut p = f[6..].to_vec();
        apply_mask(&mut p, [f[2], f[3], f[4], f[5]]);
        assert_eq!(p, "héllo".as_bytes());

        let got = incoming(&mut ws).await.unwrap().unwrap();
        assert!(matches!(
            got,
            Incoming::Data {
                text: false,
                len: 300
            }
        ));
        assert_eq!(ws.data(), &[7; 300][..]);
        ws.consume_data();
        match incoming(&mut ws).await.unwrap().unwrap() {
            Incoming::Message(m) => assert_eq!(m, Message::binary(b"abc".to_vec())),
            other => panic!("a reassembled message comes whole: {other:?}"),
        }
        // Not consumed: the next poll drops it.
        let got = incoming(&mut ws).await.unwrap().unwrap();
        assert!(matches!(got, Incoming::Data { len: 7, .. }));
        assert!(matches!(
            incoming(&mut ws).await.unwrap().unwrap(),
            Incoming::Data { len: 4, .. }
        ));
        assert_eq!(ws.data(), b"last");

        // Invalid UTF-8 in a one-frame text message fails before it is lent.
        peer.write_all(&encode_frame(true, TEXT, &[0xff, 0xfe], KEY))
            .await
            .unwrap();
        assert!(matches!(incoming(&mut ws).await, Some(Err(Error::Utf8(_)))));
        assert!(incoming(&mut ws).await.is_none(), "fused after an error");
        assert_eq!(ws.data(), b"");
    }

    /// `frame_for` rewrites the frame in place only when the bytes it
    /// leaves are exactly what `queue` would encode: a fresh key toward an
    /// upstream, the frame as it came toward a client.
    #[tokio::test]
    async fn frames_are_rewritten_in_place_only_when_they_are_what_we_would_send() {
        // From a client, toward an upstream: masked again, with a new key.
        let (mut ws, mut peer) = server();
        peer.write_all(&encode_frame(true, BINARY, b"payload", KEY))
            .await
            .unwrap();
        assert!(matches!(
            incoming(&mut ws).await.unwrap().unwrap(),
            Incoming::Data { len: 7, .. }
        ));
        // Toward another client: the roles do not pair, nothing changes.
        assert!(ws.frame_for(Role::Server).is_none());
        assert_eq!(ws.data(), b"payload");
        let (frame, last) = ws.frame_for(Role::Client).unwrap();
        assert!(last, "one frame, one read, nothing after it");
        assert_eq!(frame.len(), 2 + 4 + 7);
        assert_eq!(frame[..2], [0x82, 0x87]);
        let key: [u8; 4] = frame[2..6].try_into().unwrap();
        assert_ne!(Some(key), KEY, "never the client's own key");
        let mut p = frame[6..].to_vec();
        apply_mask(&mut p, key);
        assert_eq!(p, b"payload");

        // From an upstream, toward a client: as it came.
        let (mut ws, mut peer) = client();
        let mut input = encode_frame(true, TEXT, b"hi", None);
        // The same message with its length in a longer form than needed.
        input.extend([0x81, 126, 0, 2, b'h', b'i']);
        peer.write_all(&input).await.unwrap();
        incoming(&mut ws).await.unwrap().unwrap();
        let (frame, last) = ws.frame_for(Role::Server).unwrap();
        assert_eq!(frame, [0x81, 2, b'h', b'i']);
        assert!(!last, "another frame follows in the buffer");
        incoming(&mut ws).await.unwrap().unwrap();
        assert!(ws.frame_for(Role::Server).is_none());
        assert_eq!(ws.data(), b"hi");
    }

    #[tokio::test]
    async fn masks_what_it_sends_as_client() {
        let (mut ws, mut peer) = client();
        ws.send(Message::text("abc")).await.unwrap();
        let mut f = [0u8; 9];
        peer.read_exact(&mut f).await.unwrap();
        assert_eq!(f[..2], [0x81, 0x83]);
        let key = [f[2], f[3], f[4], f[5]];
        let mut p = f[6..].to_vec();
        apply_mask(&mut p, key);
        assert_eq!(p, b"abc");
        // A server must not mask: a masked frame is a protocol error.
        peer.write_all(&encode_frame(true, TEXT, b"x", KEY))
            .await
            .unwrap();
        assert!(matches!(
            next(&mut ws).await,
            Some(Err(Error::Protocol(ProtocolError::MaskedFrameFromServer)))
        ));
        assert!(next(&mut ws).await.is_none(), "fused after an error");
    }

    #[tokio::test]
    async fn reassembles_fragments_even_when_bytes_trickle() {
        let (mut ws, mut peer) = server();
        let mut input = encode_frame(false, TEXT, "é".as_bytes()[..1].as_ref(), KEY);
        input.extend(encode_frame(true, PING, b"p", KEY));
        input.extend(encode_frame(false, CONTINUATION, &"é".as_bytes()[1..], KEY));
        input.extend(encode_frame(true, CONTINUATION, b"!", KEY));
        let writer = tokio::spawn(async move {
            for b in input {
                peer.write_all(&[b]).await.unwrap();
                tokio::task::yield_now().await;
            }
            peer
        });
        assert_eq!(
            next(&mut ws).await.unwrap().unwrap(),
            Message::Ping(Bytes::from_static(b"p"))
        );
        assert_eq!(next(&mut ws).await.unwrap().unwrap(), Message::text("é!"));
        let mut peer = writer.await.unwrap();
        // The Ping's Pong went out on its own.
        ws.flush().await.unwrap();
        assert_eq!(read_frame(&mut peer).await, (0x8a, b"p".to_vec()));
    }

    #[tokio::test]
    async fn invalid_utf8_fails_on_the_fragment_that_proves_it() {
        let (mut ws, mut peer) = server();
        // 0xC3 starts a 2-byte sequence; 0x28 cannot continue it.
        peer.write_all(&encode_frame(false, TEXT, &[b'a', 0xc3], KEY))
            .await
            .unwrap();
        peer.write_all(&encode_frame(false, CONTINUATION, &[0x28], KEY))
            .await
            .unwrap();
        // No final fragment is ever sent: the error must not wait for it.
        assert!(matches!(next(&mut ws).await, Some(Err(Error::Utf8(_)))));
    }

    #[tokio::test]
    async fn limits_apply_to_frames_on_their_header_and_to_whole_messages() {
        let (mut ws, mut peer) = server();
        // Only the header of a frame over max_frame_size is needed.
        let f = encode_frame(true, BINARY, &vec![0; LIMITS.max_frame_size + 1], KEY);
        peer.write_all(&f[..14]).await.unwrap();
        assert!(matches!(
            next(&mut ws).await,
            Some(Err(Error::Capacity(CapacityError::MessageTooLong { .. })))
        ));
        let (mut ws, mut peer) = server();
        // 16 full frames reach max_message_size; one byte more is too much.
        let frag = vec![0; LIMITS.max_frame_size];
        let mut input = Vec::new();
        for i in 0..16 {
            let op = if i == 0 { BINARY } else { CONTINUATION };
            input.extend(encode_frame(false, op, &frag, KEY));
        }
        input.extend(encode_frame(true, CONTINUATION, &[0], KEY));
        let _writer = tokio::spawn(async move {
            let _ = peer.write_all(&input).await;
            peer
        });
        assert!(matches!(
            next(&mut ws).await,
            Some(Err(Error::Capacity(CapacityError::MessageTooLong { .. })))
        ));
    }

    #[tokio::test]
    async fn protocol_violations() {
        use ProtocolError as P;
        type Expect = fn(&Error) -> bool;
        let cases: Vec<(Vec<u8>, Expect)> = vec![
            (encode_frame(true, TEXT, b"x", None), |e| {
                matches!(e, Error::Protocol(P::UnmaskedFrameFromClient))
            }),
            (
                {
                    let mut f = encode_frame(true, TEXT, b"x", KEY);
                    f[0] |= 0x40;
                    f
                },
                |e| matches!(e, Error::Protocol(P::NonZeroReservedBits)),
            ),
            (encode_frame(false, PING, b"x", KEY), |e| {
                matches!(e, Error::Protocol(P::FragmentedControlFrame))
            }),
            (encode_frame(true, PING, &[0; 126], KEY), |e| {
                matches!(e, Error::Protocol(P::ControlFrameTooBig))
            }),
            (encode_frame(true, 3, b"x", KEY), |e| {
                matches!(e, Error::Protocol(P::UnknownDataFrameType(3)))
            }),
            (encode_frame(true, 11, b"x", KEY), |e| {
                matches!(e, Error::Protocol(P::UnknownControlFrameType(11)))
            }),
            (encode_frame(true, CONTINUATION, b"x", KEY), |e| {
                matches!(e, Error::Protocol(P::UnexpectedContinueFrame))
            }),
            (
                {
                    let mut f = encode_frame(false, TEXT, b"x", KEY);
                    f.extend(encode_frame(true, BINARY, b"y", KEY));
                    f
                },
                |e| matches!(e, Error::Protocol(P::ExpectedFragment(_))),
            ),
            (encode_frame(true, CLOSE, &[3], KEY), |e| {
                matches!(e, Error::Protocol(P::InvalidCloseSequence))
            }),
            (
                encode_frame(true, CLOSE, &1006u16.to_be_bytes(), KEY),
                |e| matches!(e, Error::Protocol(P::InvalidCloseSequence)),
            ),
            (encode_frame(true, CLOSE, &[3, 232, 0xff], KEY), |e| {
                matches!(e, Error::Utf8(_))
            }),
            (encode_frame(true, TEXT, &[0xff], KEY), |e| {
                matches!(e, Error::Utf8(_))
            }),
        ];
        for (i, (input, expected)) in cases.into_iter().enumerate() {
            let (mut ws, mut peer) = server();
            peer.write_all(&input).await.unwrap();
            match next(&mut ws).await {
                Some(Err(e)) if expected(&e) => {}
                other => panic!("case {i}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn peer_close_is_echoed_then_the_server_leg_ends() {
        let (mut ws, mut peer) = server();
        let mut close = 1014u16.to_be_bytes().to_vec();
        close.extend(b"bad gateway");
        peer.write_all(&encode_frame(true, CLOSE, &close, KEY))
            .await
            .unwrap();
        match next(&mut ws).await {
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(
                    (u16::from(f.code), f.reason.as_str()),
                    (1014, "bad gateway")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ws.send(Message::text("late")).await,
            Err(Error::Protocol(ProtocolError::SendAfterClosing))
        ));
        assert!(
            next(&mut ws).await.is_none(),
            "the server ends after its echo"
        );
        assert_eq!(read_frame(&mut peer).await, (0x88, close));
    }

    #[tokio::test]
    async fn our_close_then_the_reply_then_eof_as_client() {
        let (mut ws, mut peer) = client();
        ws.send(Message::Close(Some(CloseFrame {
            code: CloseCode::Away,
            reason: "bye".into(),
        })))
        .await
        .unwrap();
        // Data still arriving before the reply is delivered.
        peer.write_all(&encode_frame(true, TEXT, b"in flight", None))
            .await
            .unwrap();
        peer.write_all(&encode_frame(true, CLOSE, &1001u16.to_be_bytes(), None))
            .await
            .unwrap();
        assert_eq!(
            next(&mut ws).await.unwrap().unwrap(),
            Message::text("in flight")
        );
        assert!(matches!(
            next(&mut ws).await,
            Some(Ok(Message::Close(Some(_))))
        ));
        drop(peer);
        assert!(
            next(&mut ws).await.is_none(),
            "EOF after the exchange is the end"
        );
    }

    #[tokio::test]
    async fn eof_without_close_is_a_reset_without_handshake() {
        let (mut ws, peer) = server();
        drop(peer);
        assert!(matches!(
            next(&mut ws).await,
            Some(Err(Error::Protocol(
                ProtocolError::ResetWithoutClosingHandshake
            )))
        ));
    }

    #[tokio::test]
    async fn an_idle_leg_holds_no_buffer() {
        let (mut ws, mut peer) = server();
        peer.write_all(&encode_frame(true, BINARY, &[1; 100], KEY))
            .await
            .unwrap();
        let msg = next(&mut ws).await.unwrap().unwrap();
        ws.send(msg).await.unwrap();
        let _ = read_frame(&mut peer).await;
        // Nothing more to read: the poll returns Pending and lets go of it.
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut ws).poll_next(&mut cx).is_pending());
        assert_eq!((ws.rbuf.capacity(), ws.wbuf.capacity()), (0, 0));
    }

    #[tokio::test]
    async fn read_ahead_bytes_come_first() {
        let (a, mut peer) = tokio::io::duplex(1024);
        let mut ahead = encode_frame(true, TEXT, b"early", KEY);
        let late = ahead.split_off(4);
        let mut ws = WsStream::new(a, Role::Server, LIMITS, &ahead);
        peer.write_all(&late).await.unwrap();
        assert_eq!(
            next(&mut ws).await.unwrap().unwrap(),
            Message::text("early")
        );
    }
}
