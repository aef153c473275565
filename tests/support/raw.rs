//! A raw WebSocket client over TCP: hand-built frames in, frames parsed out.
//! For what tokio-tungstenite will not do: send broken frames, and read
//! close codes it refuses (it rejects 1014).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::LIMIT;

pub struct RawClient {
    pub tcp: TcpStream,
    buf: Vec<u8>,
}

/// One frame as read off the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The close code of a Close frame, if it has one.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// Encode a frame. `mask` as a client must.
pub fn frame(fin: bool, opcode: u8, payload: &[u8], mask: bool) -> Vec<u8> {
    wspulse::protocol::encode_frame(
        fin,
        opcode,
        payload,
        mask.then_some([0x12, 0x34, 0x56, 0x78]),
    )
}

/// A Close frame payload.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

impl RawClient {
    /// Connect and complete the upgrade; panics unless the answer is 101.
    pub async fn connect(addr: std::net::SocketAddr, path: &str) -> RawClient {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut c = RawClient {
            tcp,
            buf: Vec::new(),
        };
        let head = tokio::time::timeout(LIMIT, c.read_head())
            .await
            .expect("no 101 in time");
        assert!(head.starts_with("HTTP/1.1 101"), "expected 101, got {head}");
        c
    }

    async fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                return head;
            }
            let mut chunk = [0u8; 4096];
            let n = self.tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed during handshake");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Write raw bytes.
    pub async fn write(&mut self, bytes: &[u8]) {
        // The proxy may have closed already; that is what some tests provoke.
        let _ = self.tcp.write_all(bytes).await;
    }

    /// Send one masked frame.
    pub async fn send(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.write(&frame(fin, opcode, payload, true)).await;
    }

    /// Read one frame; `None` at EOF or reset.
    pub async fn read_frame(&mut self) -> Option<RawFrame> {
        tokio::time::timeout(LIMIT, self.read_frame_inner())
            .await
            .expect("no frame in time")
    }

    async fn fill(&mut self, n: usize) -> bool {
        while self.buf.len() < n {
            let mut chunk = [0u8; 8192];
            match self.tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
            }
        }
        true
    }

    async fn read_frame_inner(&mut self) -> Option<RawFrame> {
        if !self.fill(2).await {
            return None;
        }
        let (b0, b1) = (self.buf[0], self.buf[1]);
        let (mut len, mut at) = (u64::from(b1 & 0x7f), 2usize);
        if len == 126 {
            if !self.fill(4).await {
                return None;
            }
            len = u64::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
            at = 4;
        } else if len == 127 {
            if !self.fill(10).await {
                return None;
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&self.buf[2..10]);
            len = u64::from_be_bytes(b);
            at = 10;
        }
        let masked = b1 & 0x80 != 0;
        let total = at + if masked { 4 } else { 0 } + len as usize;
        if !self.fill(total).await {
            return None;
        }
        let mut payload = self.buf[total - len as usize..total].to_vec();
        if masked {
            let key = [
                self.buf[at],
                self.buf[at + 1],
                self.buf[at + 2],
                self.buf[at + 3],
            ];
            payload
                .iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b ^= key[i % 4]);
        }
        self.buf.drain(..total);
        Some(RawFrame {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0f,
            payload,
        })
    }

    /// Read frames until a Close, answering pings like a live client;
    /// returns the Close (`None` if the stream ended first).
    pub async fn expect_close_answering_pings(&mut self) -> Option<RawFrame> {
        while let Some(f) = self.read_frame().await {
            match f.opcode {
                8 => return Some(f),
                9 => self.send(true, 10, &f.payload).await,
                _ => {}
            }
        }
        None
    }

    /// Read frames until a Close; returns it (`None` if the stream ended first).
    pub async fn expect_close(&mut self) -> Option<RawFrame> {
        while let Some(f) = self.read_frame().await {
            if f.opcode == 8 {
                return Some(f);
            }
        }
        None
    }

    /// Read until the proxy closes the TCP connection. Returns whether it did.
    pub async fn expect_eof(&mut self) -> bool {
        let fut = async {
            loop {
                let mut chunk = [0u8; 4096];
                match self.tcp.read(&mut chunk).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => continue,
                }
            }
        };
        tokio::time::timeout(LIMIT, fut).await.unwrap_or(false)
    }
}

impl RawClient {
    /// Send `request` (a whole HTTP request head) and read the answer's
    /// head, whatever its status. For handshakes the tests build by hand.
    pub async fn open(addr: std::net::SocketAddr, request: &[u8]) -> (RawClient, String) {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request).await.unwrap();
        let mut c = RawClient {
            tcp,
            buf: Vec::new(),
        };
        let head = tokio::time::timeout(LIMIT, c.read_head())
            .await
            .expect("no response head in time");
        (c, head)
    }
}

/// A raw WebSocket *upstream*: it accepts the proxy's handshake with a
/// correct 101 and then speaks hand-built frames, so a test can send the
/// proxy what tokio-tungstenite will not (masked server frames, reserved
/// bits, forbidden close codes, …).
pub struct RawUpstream {
    listener: tokio::net::TcpListener,
}

impl RawUpstream {
    /// Listen on 127.0.0.1:0.
    pub async fn bind() -> RawUpstream {
        RawUpstream {
            listener: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    /// `ws://addr`.
    pub fn url(&self) -> String {
        format!("ws://{}", self.listener.local_addr().unwrap())
    }

    /// Accept one connection from the proxy and answer its upgrade with
    /// 101. Returns the leg (frames are read and written as with a
    /// [`RawClient`]) and the request head the proxy sent.
    pub async fn accept(&self) -> (RawClient, String) {
        let fut = async {
            let (tcp, _) = self.listener.accept().await.unwrap();
            let mut c = RawClient {
                tcp,
                buf: Vec::new(),
            };
            let head = c.read_head().await;
            let key = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("sec-websocket-key")
                        .then(|| v.trim().to_string())
                })
                .expect("no Sec-WebSocket-Key from the proxy");
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            c.tcp.write_all(resp.as_bytes()).await.unwrap();
            (c, head)
        };
        tokio::time::timeout(LIMIT, fut)
            .await
            .expect("the proxy did not dial the upstream in time")
    }
}
