//! A scriptable in-process echo upstream, for the tests and `wspulse demo`.
//!
//! It binds `127.0.0.1:0` and echoes every text and binary message. The
//! text of a message scripts it (so a test needs no side channel):
//!
//! | message            | the upstream…                                         |
//! |--------------------|-------------------------------------------------------|
//! | `close:CODE:REASON`| sends Close(CODE, REASON) and completes the handshake |
//! | `drop`             | closes its TCP stream without a Close frame (FIN)     |
//! | `rst`              | resets its TCP connection (RST, `SO_LINGER` 0)        |
//! | `silent`           | stops reading: answers no more pings, echoes nothing  |
//! | `mute`             | like `silent`, but drains and discards its input, so  |
//! |                    | it notices (and ends) when the proxy drops the TCP    |
//! | `big:N`            | sends a binary message of N bytes                     |
//! | `badutf8`          | sends a text frame that is not valid UTF-8            |
//! | anything else      | echoed unchanged                                      |
//!
//! The builder sets what happens before that: reject every handshake with
//! a status, or accept TCP and never answer (a hung upstream). The request
//! path can also reject one handshake: `/reject/NNN[/…]` (NNN a 4xx or 5xx
//! status) is answered NNN instead of 101, so one upstream serves both
//! sessions and rejections (`wspulse demo` relies on it). The handle
//! records the Close frames and request heads it received, and lets a test
//! wait for them without sleeping.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::{
    self, Message,
    handshake::server::{ErrorResponse, Request, Response},
    protocol::{
        CloseFrame, frame::Frame, frame::coding::CloseCode, frame::coding::Data as OpData,
        frame::coding::OpCode,
    },
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the upstream does with a handshake.
#[derive(Debug, Clone, Default)]
enum Mode {
    #[default]
    Accept,
    Reject(u16, String),
    Hang,
}

/// Builds an [`EchoServer`].
#[derive(Debug, Clone, Default)]
pub struct EchoBuilder {
    mode: Mode,
    protocols: Vec<String>,
}

/// What the upstream saw of one handshake.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// Path and query.
    pub uri: String,
    /// Header name (lowercase) and value pairs, in order.
    pub headers: Vec<(String, String)>,
}

impl SeenRequest {
    /// The first value of a header, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    /// Close frames received: `None` for an empty Close, or `(code, reason)`.
    closes: Mutex<Vec<Option<(u16, String)>>>,
    requests: Mutex<Vec<SeenRequest>>,
    /// Sessions that ended without a Close frame from the proxy.
    abrupt_ends: Mutex<usize>,
    /// Pong frames received (the proxy must never forward its own).
    pongs: std::sync::atomic::AtomicUsize,
    changed: Notify,
}

/// A running echo upstream. Dropping it stops it.
pub struct EchoServer {
    addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl EchoBuilder {
    /// Answer every handshake with `status` and `body` instead of 101.
    pub fn reject(mut self, status: u16, body: &str) -> Self {
        self.mode = Mode::Reject(status, body.to_string());
        self
    }

    /// Accept TCP connections and never answer the handshake.
    pub fn hang(mut self) -> Self {
        self.mode = Mode::Hang;
        self
    }

    /// Subprotocols this upstream supports; it picks the client's first
    /// offer that it knows.
    pub fn protocols(mut self, protocols: &[&str]) -> Self {
        self.protocols = protocols.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Bind 127.0.0.1:0 and start serving.
    pub async fn start(self) -> std::io::Result<EchoServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (s, st, tr) = (state.clone(), stop.clone(), tracker.clone());
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = st.cancelled() => break,
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        let (s, st2, b) = (s.clone(), st.clone(), self.clone());
                        tr.spawn(async move {
                            tokio::select! {
                                _ = st2.cancelled() => {}
                                _ = b.serve(tcp, s) => {}
                            }
                        });
                    }
                }
            }
        });
        Ok(EchoServer {
            addr,
            state,
            stop,
            tracker,
        })
    }

    async fn serve(self, tcp: TcpStream, state: Arc<State>) {
        let _ = tcp.set_nodelay(true);
        if let Mode::Hang = self.mode {
            // Hold the socket open, say nothing.
            std::future::pending::<()>().await;
        }
        let (mode, protocols, st) = (self.mode.clone(), self.protocols.clone(), state.clone());
        // tungstenite's callback signature fixes the error type.
        #[allow(clippy::result_large_err)]
        let callback =
            move |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
                let seen = SeenRequest {
                    uri: req.uri().to_string(),
                    headers: req
                        .headers()
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.as_str().to_string(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect(),
                };
                if let Ok(mut r) = st.requests.lock() {
                    r.push(seen);
                }
                st.changed.notify_waiters();
                if let Some(status) = path_reject_status(req.uri().path()) {
                    let body = format!("rejected by the echo upstream ({})\n", req.uri().path());
                    let mut e = ErrorResponse::new(Some(body));
                    *e.status_mut() = status;
                    return Err(e);
                }
                if let Mode::Reject(status, body) = &mode {
                    let mut e = ErrorResponse::new(Some(body.clone()));
                    *e.status_mut() = tungstenite::http::StatusCode::from_u16(*status)
                        .unwrap_or(tungstenite::http::StatusCode::FORBIDDEN);
                    return Err(e);
                }
                let offered = req
                    .headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let picked = offered
                    .split(',')
                    .map(str::trim)
                    .find(|p| protocols.iter().any(|k| k == p));
                if let Some(Ok(v)) = picked.map(str::parse) {
                    resp.headers_mut().insert("sec-websocket-protocol", v);
                }
                Ok(resp)
            };
        let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
            return;
        };
        let mut got_close = false;
        while let Some(msg) = ws.next().await {
            let msg = match msg {
                Ok(m) => m,
                Err(_) => break,
            };
            let reply = match msg {
                Message::Close(frame) => {
                    got_close = true;
                    if let Ok(mut c) = state.closes.lock() {
                        c.push(frame.map(|f| (u16::from(f.code), f.reason.to_string())));
                    }
                    state.changed.notify_waiters();
                    continue; // tungstenite replies; keep reading to the end
                }
                Message::Text(t) => match script(t.as_str()) {
                    Script::Echo => Message::Text(t),
                    Script::Close(code, reason) => Message::Close(Some(CloseFrame {
                        code: CloseCode::from(code),
                        reason: reason.into(),
                    })),
                    Script::Drop => return,
                    Script::Reset => {
                        let _ = ws.get_ref().set_zero_linger();
                        return;
                    }
                    Script::Silent => {
                        std::future::pending::<()>().await;
                        return;
                    }
                    Script::Mute => {
                        // Read raw bytes past tungstenite: no pong, no echo,
                        // but EOF (the proxy giving up on us) ends the task.
                        let tcp = ws.get_mut();
                        let mut sink = [0u8; 4096];
                        while let Ok(n) = tcp.read(&mut sink).await {
                            if n == 0 {
                                break;
                            }
                        }
                        return;
                    }
                    Script::Big(n) => Message::Binary(vec![b'x'; n].into()),
                    Script::BadUtf8 => Message::Frame(Frame::message(
                        vec![0xc3u8, 0x28],
                        OpCode::Data(OpData::Text),
                        true,
                    )),
                },
                Message::Binary(b) => Message::Binary(b),
                Message::Pong(_) => {
                    state
                        .pongs
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    continue;
                }
                _ => continue,
            };
            if ws.send(reply).await.is_err() {
                break;
            }
        }
        if !got_close {
            if let Ok(mut n) = state.abrupt_ends.lock() {
                *n += 1;
            }
            state.changed.notify_waiters();
        }
    }
}

enum Script {
    Echo,
    Close(u16, String),
    Drop,
    Reset,
    Silent,
    Mute,
    Big(usize),
    BadUtf8,
}

fn script(text: &str) -> Script {
    match text {
        "drop" => Script::Drop,
        "rst" => Script::Reset,
        "silent" => Script::Silent,
        "mute" => Script::Mute,
        "badutf8" => Script::BadUtf8,
        t => {
            if let Some(rest) = t.strip_prefix("close:") {
                let (code, reason) = rest.split_once(':').unwrap_or((rest, ""));
                if let Ok(code) = code.parse() {
                    return Script::Close(code, reason.to_string());
                }
            }
            if let Some(n) = t.strip_prefix("big:").and_then(|n| n.parse().ok()) {
                return Script::Big(n);
            }
            Script::Echo
        }
    }
}

/// The status a `/reject/NNN[/…]` path asks for: a 4xx or 5xx, else `None`.
fn path_reject_status(path: &str) -> Option<tungstenite::http::StatusCode> {
    let rest = path.strip_prefix("/reject/")?;
    let code: u16 = rest.split('/').next()?.parse().ok()?;
    if !(400..=599).contains(&code) {
        return None;
    }
    tungstenite::http::StatusCode::from_u16(code).ok()
}

impl EchoServer {
    /// A builder for a scripted upstream.
    pub fn builder() -> EchoBuilder {
        EchoBuilder::default()
    }

    /// A plain echo upstream.
    pub async fn start() -> std::io::Result<EchoServer> {
        EchoBuilder::default().start().await
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://addr`.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Close frames received so far.
    pub fn closes(&self) -> Vec<Option<(u16, String)>> {
        self.state
            .closes
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// Handshake requests seen so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.state
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Pong frames received from the proxy.
    pub fn pongs(&self) -> usize {
        self.state.pongs.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Sessions that ended without a Close frame reaching the upstream.
    pub fn abrupt_ends(&self) -> usize {
        self.state.abrupt_ends.lock().map(|n| *n).unwrap_or(0)
    }

    /// Wait until `cond` holds, at most `limit`. Returns whether it held.
    pub async fn wait_until(&self, limit: Duration, cond: impl Fn(&EchoServer) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.state.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if cond(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return cond(self);
            }
        }
    }

    /// Stop accepting and end every connection; waits for its tasks.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_paths_name_an_error_status() {
        let status = |p| path_reject_status(p).map(|s| s.as_u16());
        assert_eq!(status("/reject/403"), Some(403));
        assert_eq!(status("/reject/503/anything"), Some(503));
        assert_eq!(status("/reject/200"), None);
        assert_eq!(status("/reject/abc"), None);
        assert_eq!(status("/rejected/403"), None);
        assert_eq!(status("/chat"), None);
    }
}
