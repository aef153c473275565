//! A raw-frame WebSocket peer: the handshake over a plain TCP stream, then
//! frames built byte by byte with [`encode_frame`] and read back as they
//! came.
//!
//! It is for what a well-behaved library will not do: send an unmasked
//! client frame, reserved bits or a forbidden close code, read a code some
//! libraries refuse (1014), reset a socket at a precise moment, or tell a
//! FIN from a reset. The demo's misbehaving clients and the integration
//! tests both speak through it, as a client ([`RawPeer::connect`],
//! [`RawPeer::open`]) or as an upstream ([`RawUpstream`]).
//!
//! Every wait is bounded by [`LIMIT`]; a frame is taken off the buffer only
//! once it is whole, so [`RawPeer::read`] can be raced against a timer and
//! lose nothing.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::head;
use crate::protocol::{Role, encode_frame, opcode};

/// The bound on every wait of a peer: a handshake, a frame, an end.
pub const LIMIT: Duration = Duration::from_secs(10);

/// The `Sec-WebSocket-Key` of every upgrade request [`RawPeer::connect`]
/// sends: the sample nonce of RFC 6455 §1.3. The key proves nothing
/// against a proxy; a fixed one keeps captures reproducible.
pub const CLIENT_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The masking key of every frame a client peer sends (fixed, as above).
pub const CLIENT_MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

/// The largest frame read from the other end: wspulse's default
/// `limits.max_frame_size`, so anything the proxy may relay fits.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// The largest HTTP head read, as the proxy's own limit.
const MAX_HEAD: usize = 16 * 1024;

/// How a TCP stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// A FIN: the other end closed its socket.
    Eof,
    /// A reset (or any other read error).
    Reset,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            End::Eof => "EOF",
            End::Reset => "reset",
        })
    }
}

/// What went wrong, in words a test failure or the demo's problem list
/// can show as is.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    /// A socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Nothing in time.
    #[error("no {what} within {limit:?}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// The bound.
        limit: Duration,
    },
    /// The stream ended while something else was expected.
    #[error("the stream ended ({end}) before {what}")]
    Ended {
        /// How.
        end: End,
        /// What was awaited.
        what: &'static str,
    },
    /// The upgrade was answered with another status than 101.
    #[error("HTTP {status} instead of 101")]
    Refused {
        /// The status.
        status: u16,
        /// The whole response head.
        head: String,
    },
    /// The handshake broke the protocol.
    #[error("handshake: {0}")]
    Handshake(String),
    /// A frame broke the protocol (masking, size).
    #[error("frame: {0}")]
    Frame(String),
}

/// One frame as it came off the wire, unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// The FIN bit.
    pub fin: bool,
    /// RSV1..RSV3, as the low three bits (RSV1 = 4: permessage-deflate's
    /// "compressed").
    pub rsv: u8,
    /// The opcode ([`opcode`]).
    pub opcode: u8,
    /// The payload.
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// Whether it is a Close frame.
    pub fn is_close(&self) -> bool {
        self.opcode == opcode::CLOSE
    }

    /// The code of a Close frame, if it has one.
    pub fn close_code(&self) -> Option<u16> {
        match self.payload.as_slice() {
            [a, b, ..] if self.is_close() => Some(u16::from_be_bytes([*a, *b])),
            _ => None,
        }
    }
}

/// What [`RawPeer::read`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole frame.
    Frame(RawFrame),
    /// The end of the stream.
    End(End),
}

/// The upgrade request [`RawPeer::connect`] sends for `path`, with `extra`
/// header lines (each ending in `\r\n`) before the blank line: for a
/// handshake a test varies, sent with [`RawPeer::open`] or [`exchange`].
pub fn upgrade_request(addr: SocketAddr, path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {CLIENT_KEY}\r\n{extra}\r\n"
    )
}

/// One end of a WebSocket connection that speaks raw frames.
///
/// As a client ([`Role::Client`]) it masks what it sends with
/// [`CLIENT_MASK`] and refuses masked frames; as an upstream
/// ([`Role::Server`]) the other way round (RFC 6455 §5.1).
#[derive(Debug)]
pub struct RawPeer {
    tcp: TcpStream,
    /// Bytes read and not yet taken as a head or a frame.
    buf: Vec<u8>,
    role: Role,
    answer_pings: bool,
}

impl RawPeer {
    fn new(tcp: TcpStream, role: Role) -> RawPeer {
        // Small hand-built frames must leave at once, not after Nagle's wait.
        let _ = tcp.set_nodelay(true);
        RawPeer {
            tcp,
            buf: Vec::new(),
            role,
            answer_pings: false,
        }
    }

    /// Connect to `addr` and upgrade `path` (`Sec-WebSocket-Key`
    /// [`CLIENT_KEY`]). A 101 with the right `Sec-WebSocket-Accept` gives a
    /// client peer; another status is [`RawError::Refused`].
    pub async fn connect(addr: SocketAddr, path: &str) -> Result<RawPeer, RawError> {
        RawPeer::connect_with(addr, path, "").await
    }

    /// [`Self::connect`] with `extra` header lines in the request (each
    /// ending in `\r\n`), such as an identity header.
    pub async fn connect_with(
        addr: SocketAddr,
        path: &str,
        extra: &str,
    ) -> Result<RawPeer, RawError> {
        let request = upgrade_request(addr, path, extra);
        let (peer, head) = RawPeer::open(addr, request.as_bytes()).await?;
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut fields);
        let parsed = response.parse(head.as_bytes());
        let status = match (parsed, response.code) {
            (Ok(httparse::Status::Complete(_)), Some(status)) => status,
            _ => return Err(RawError::Handshake(format!("not an HTTP answer: {head:?}"))),
        };
        if status != 101 {
            return Err(RawError::Refused { status, head });
        }
        let accept = head::accept_key(CLIENT_KEY.as_bytes());
        let accepted = response
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept") && h.value == accept);
        if !accepted {
            return Err(RawError::Handshake(
                "101 without the right Sec-WebSocket-Accept".into(),
            ));
        }
        Ok(peer)
    }

    /// Connect to `addr`, send `request` (a whole request head, built by
    /// hand), and read the answer's head, whatever its status. The peer is
    /// a client; what follows the head is read as frames.
    pub async fn open(addr: SocketAddr, request: &[u8]) -> Result<(RawPeer, String), RawError> {
        let work = async {
            let tcp = TcpStream::connect(addr).await.map_err(io("connect"))?;
            let mut peer = RawPeer::new(tcp, Role::Client);
            peer.write(request).await?;
            let head = peer.read_head("response head").await?;
            Ok((peer, head))
        };
        bounded("handshake answer", work).await
    }

    /// Which end it plays.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Answer every Ping with a Pong (and not report it), as a live peer
    /// does; off by default, so a test sees every frame.
    pub fn answer_pings(&mut self, on: bool) {
        self.answer_pings = on;
    }

    /// The socket (for its addresses, or socket options).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Write `bytes` as they are: a broken frame, half a frame, anything.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), RawError> {
        bounded("write", async {
            self.tcp.write_all(bytes).await.map_err(io("write"))
        })
        .await
    }

    /// Send one frame, masked if this peer is a client.
    pub async fn send(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> Result<(), RawError> {
        let mask = (self.role == Role::Client).then_some(CLIENT_MASK);
        self.write(&encode_frame(fin, opcode, payload, mask)).await
    }

    /// The next frame, or the end of the stream.
    pub async fn read(&mut self) -> Result<Event, RawError> {
        bounded("frame", self.next_event()).await
    }

    /// The next frame; the end of the stream is [`RawError::Ended`].
    pub async fn read_frame(&mut self) -> Result<RawFrame, RawError> {
        match self.read().await? {
            Event::Frame(f) => Ok(f),
            Event::End(end) => Err(RawError::Ended {
                end,
                what: "a frame",
            }),
        }
    }

    /// Read until a Close frame, skipping every other frame, and return it.
    pub async fn expect_close(&mut self) -> Result<RawFrame, RawError> {
        const WHAT: &str = "a Close frame";
        bounded(WHAT, async {
            loop {
                match self.next_event().await? {
                    Event::Frame(f) if f.is_close() => return Ok(f),
                    Event::Frame(_) => {}
                    Event::End(end) => return Err(RawError::Ended { end, what: WHAT }),
                }
            }
        })
        .await
    }

    /// Read, discarding every frame, until the other end closes the TCP
    /// stream; returns how it did.
    pub async fn expect_end(&mut self) -> Result<End, RawError> {
        bounded("end of the stream", async {
            loop {
                if let Event::End(end) = self.next_event().await? {
                    return Ok(end);
                }
            }
        })
        .await
    }

    /// Drop the connection with a reset (RST, `SO_LINGER` 0) instead of a FIN.
    pub fn reset(self) -> Result<(), RawError> {
        self.tcp.set_zero_linger().map_err(io("SO_LINGER"))
    }

    /// [`RawPeer::read`] without its bound.
    async fn next_event(&mut self) -> Result<Event, RawError> {
        loop {
            let frame = match self.take_frame()? {
                Some(frame) => frame,
                None => match self.fill().await {
                    Ok(()) => continue,
                    Err(end) => return Ok(Event::End(end)),
                },
            };
            if self.answer_pings && frame.opcode == opcode::PING {
                self.send(true, opcode::PONG, &frame.payload).await?;
                continue;
            }
            return Ok(Event::Frame(frame));
        }
    }

    /// Read more bytes into the buffer; how the stream ended if it did.
    async fn fill(&mut self) -> Result<(), End> {
        let mut chunk = [0u8; 8192];
        match self.tcp.read(&mut chunk).await {
            Ok(0) => Err(End::Eof),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(_) => Err(End::Reset),
        }
    }

    /// A whole frame off the front of the buffer, if one is there.
    fn take_frame(&mut self) -> Result<Option<RawFrame>, RawError> {
        let b = &self.buf;
        let [b0, b1, ..] = b[..] else {
            return Ok(None);
        };
        let (len, mut at) = match b1 & 0x7f {
            126 => match b.get(2..4) {
                Some(n) => (u64::from(u16::from_be_bytes([n[0], n[1]])), 4),
                None => return Ok(None),
            },
            127 => match b.get(2..10) {
                Some(n) => {
                    let mut be = [0u8; 8];
                    be.copy_from_slice(n);
                    (u64::from_be_bytes(be), 10)
                }
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        let masked = b1 & 0x80 != 0;
        if masked != (self.role == Role::Server) {
            return Err(RawError::Frame(match self.role {
                Role::Client => "a masked frame from the server".into(),
                Role::Server => "an unmasked frame from the client".into(),
            }));
        }
        let len = usize::try_from(len)
            .ok()
            .filter(|&n| n <= MAX_FRAME)
            .ok_or_else(|| RawError::Frame(format!("a {len}-byte frame")))?;
        let mut key = None;
        if masked {
            let Some(k) = b.get(at..at + 4) else {
                return Ok(None);
            };
            key = Some([k[0], k[1], k[2], k[3]]);
            at += 4;
        }
        let Some(payload) = b.get(at..at + len) else {
            return Ok(None);
        };
        let mut payload = payload.to_vec();
        if let Some(key) = key {
            payload
                .iter_mut()
                .enumerate()
                .for_each(|(i, byte)| *byte ^= key[i % 4]);
        }
        self.buf.drain(..at + len);
        Ok(Some(RawFrame {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x07,
            opcode: b0 & 0x0f,
            payload,
        }))
    }

    /// Read up to the blank line that ends an HTTP head; what follows stays
    /// in the buffer (frames may come in the same segment).
    async fn read_head(&mut self, what: &'static str) -> Result<String, RawError> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end + 4]).into_owned();
                self.buf.drain(..end + 4);
                return Ok(head);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(RawError::Handshake(format!("{what} over {MAX_HEAD} bytes")));
            }
            if let Err(end) = self.fill().await {
                return Err(RawError::Ended { end, what });
            }
        }
    }
}

/// A raw upstream: it answers the proxy's upgrade with a correct 101 and
/// then speaks raw frames, so a test can send the proxy what a real server
/// library will not (masked frames, reserved bits, forbidden codes, a
/// declared length of 2^40).
#[derive(Debug)]
pub struct RawUpstream {
    listener: TcpListener,
    addr: SocketAddr,
}

impl RawUpstream {
    /// Listen on 127.0.0.1, on a port the OS picks.
    pub async fn bind() -> std::io::Result<RawUpstream> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        Ok(RawUpstream { listener, addr })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://addr`, for `upstream.url`.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Accept one connection and answer its upgrade with 101. Returns the
    /// leg (an upstream peer) and the request head the proxy sent.
    pub async fn accept(&self) -> Result<(RawPeer, String), RawError> {
        self.accept_with("").await
    }

    /// [`Self::accept`], with `extra` header lines (each ending in `\r\n`)
    /// in the 101: an extension answer, say.
    pub async fn accept_with(&self, extra: &str) -> Result<(RawPeer, String), RawError> {
        bounded("upgrade request from the proxy", async {
            let (tcp, _) = self.listener.accept().await.map_err(io("accept"))?;
            let mut peer = RawPeer::new(tcp, Role::Server);
            let head = peer.read_head("request head").await?;
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut request = httparse::Request::new(&mut fields);
            let _ = request.parse(head.as_bytes());
            let key = request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))
                .map(|h| h.value)
                .ok_or_else(|| RawError::Handshake(format!("no Sec-WebSocket-Key in {head:?}")))?;
            let accept = head::accept_key(key);
            let mut response = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                Connection: Upgrade\r\nSec-WebSocket-Accept: "
                .to_vec();
            response.extend_from_slice(&accept);
            response.extend_from_slice(b"\r\n");
            response.extend_from_slice(extra.as_bytes());
            response.extend_from_slice(b"\r\n");
            peer.write(&response).await?;
            Ok((peer, head))
        })
        .await
    }
}

/// Send `request` (any bytes) to `addr` and read until the other end
/// closes; returns the answer's status (`None` when nothing that starts
/// like an HTTP answer came back) and all it said. For requests that must
/// not become sessions: malformed, oversized, slow, refused.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Result<(Option<u16>, String), RawError> {
    bounded("end of the answer", async {
        let mut tcp = TcpStream::connect(addr).await.map_err(io("connect"))?;
        // The proxy may answer and close before it has read everything:
        // that is what some of these requests provoke.
        let _ = tcp.write_all(request).await;
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut fields);
        let status = response.parse(&answer).ok().and(response.code);
        Ok((status, String::from_utf8_lossy(&answer).into_owned()))
    })
    .await
}

/// The error of a failed socket operation, `what` naming it.
fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> RawError {
    move |source| RawError::Io { what, source }
}

/// `work` within [`LIMIT`], or [`RawError::Timeout`].
async fn bounded<T>(
    what: &'static str,
    work: impl Future<Output = Result<T, RawError>>,
) -> Result<T, RawError> {
    tokio::time::timeout(LIMIT, work)
        .await
        .unwrap_or(Err(RawError::Timeout { what, limit: LIMIT }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A client and an upstream peer wired to each other over loopback.
    async fn pair() -> (RawPeer, RawPeer) {
        let up = RawUpstream::bind().await.unwrap();
        let (client, upstream) = tokio::join!(RawPeer::connect(up.addr(), "/x"), up.accept());
        let (upstream, head) = upstream.unwrap();
        assert!(head.starts_with("GET /x HTTP/1.1\r\n"), "{head}");
        (client.unwrap(), upstream)
    }

    #[tokio::test]
    async fn frames_cross_masked_one_way_and_plain_the_other() {
        let (mut c, mut u) = pair().await;
        c.send(false, opcode::TEXT, b"hel").await.unwrap();
        c.send(true, opcode::CONTINUATION, &[b'o'; 70_000])
            .await
            .unwrap();
        let first = u.read_frame().await.unwrap();
        assert_eq!(
            (first.fin, first.opcode, &first.payload[..]),
            (false, 1, &b"hel"[..])
        );
        assert_eq!(u.read_frame().await.unwrap().payload.len(), 70_000);
        u.send(
            true,
            opcode::CLOSE,
            &crate::protocol::close_payload(1014, "gone"),
        )
        .await
        .unwrap();
        assert_eq!(c.expect_close().await.unwrap().close_code(), Some(1014));
        drop(u);
        assert_eq!(c.expect_end().await.unwrap(), End::Eof);
    }

    #[tokio::test]
    async fn pings_are_answered_when_asked_and_resets_are_told_apart() {
        let (mut c, mut u) = pair().await;
        c.answer_pings(true);
        u.send(true, opcode::PING, b"p").await.unwrap();
        u.send(true, opcode::TEXT, b"after").await.unwrap();
        let reader = tokio::spawn(async move {
            let got = c.read_frame().await.unwrap();
            (got.payload, c.expect_end().await.unwrap())
        });
        let pong = u.read_frame().await.unwrap();
        assert_eq!((pong.opcode, &pong.payload[..]), (opcode::PONG, &b"p"[..]));
        u.reset().unwrap();
        let (data, end) = reader.await.unwrap();
        assert_eq!((data.as_slice(), end), (&b"after"[..], End::Reset));
    }

    #[tokio::test]
    async fn a_masked_frame_from_a_server_is_refused() {
        let (mut c, mut u) = pair().await;
        u.write(&encode_frame(true, opcode::TEXT, b"x", Some([1, 2, 3, 4])))
            .await
            .unwrap();
        assert!(matches!(c.read().await, Err(RawError::Frame(_))));
    }

    #[tokio::test]
    async fn a_refusal_carries_its_status() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut sink = [0u8; 1024];
            let _ = tcp.read(&mut sink).await;
            let _ = tcp
                .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                .await;
        });
        match RawPeer::connect(addr, "/").await {
            Err(RawError::Refused { status, .. }) => assert_eq!(status, 403),
            other => panic!("expected a 403 refusal, got {other:?}"),
        }
    }
}
