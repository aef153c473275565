//! The demo's scenarios: one way each to end a session (or a handshake),
//! played by a synthetic client over the kit's raw-frame peer, which can
//! send what well-behaved libraries refuse to (an unmasked frame), read
//! codes some refuse to read (1014), and reset or abandon a socket at a
//! precise moment.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::MAX_MESSAGE;
use super::snapshot::RowKey;
use crate::kit::raw::{Event, RawError, RawPeer};
use crate::protocol::opcode::{BINARY, CLOSE, CONTINUATION, PONG, TEXT};
use crate::protocol::{close_payload, encode_frame};

/// The order scenarios are started in: every kind at least once per cycle
/// (20 starts, 1.5 s), normal closes more often, as in real traffic.
pub(super) const CYCLE: &[Scenario] = {
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
pub(super) struct Targets {
    /// The main proxy.
    pub(super) main: SocketAddr,
    /// The instance whose upstream is unreachable.
    pub(super) unreachable: SocketAddr,
}

/// How a scenario went, from the client's side.
#[derive(Debug, Default)]
pub(super) struct Report {
    /// The client got its 101 (so the proxy counts a session).
    pub(super) established: bool,
    /// What the client saw that it should not have.
    pub(super) problem: Option<String>,
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

    /// Play it against `t`; what the client saw.
    pub(super) async fn run(self, t: Targets) -> Report {
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
        let refused = |status: u16| match want_status {
            Some(want) => {
                (status != want).then(|| format!("expected HTTP {want}, got HTTP {status}"))
            }
            None => Some(format!("expected 101, got HTTP {status}")),
        };
        match RawPeer::connect(addr, &path).await {
            Err(RawError::Refused { status, .. }) => Report {
                established: false,
                problem: refused(status),
            },
            Err(e) => Report {
                established: false,
                problem: Some(e.to_string()),
            },
            Ok(_) if want_status.is_some() => Report {
                established: true,
                problem: want_status.map(|want| format!("expected HTTP {want}, got 101")),
            },
            Ok(peer) => Report {
                established: true,
                problem: self.script(Client::new(peer)).await.err(),
            },
        }
    }

    /// The client's part once the session is open.
    async fn script(self, mut ws: Client) -> Result<(), String> {
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
                ws.send(TEXT, b"close:1000:done").await?;
                ws.expect_close_and_reply(1000).await
            }
            Scenario::AppCode => {
                ws.send(TEXT, b"close:4001:session expired").await?;
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
                ws.0.reset().map_err(|e| e.to_string())
            }
            Scenario::ClientSilent => {
                // Read, never answer: the proxy's ping goes unanswered and
                // it drops this leg without a Close frame.
                ws.0.answer_pings(false);
                ws.expect_dropped().await
            }
            Scenario::ClientProtocolError => {
                ws.write(&encode_frame(true, TEXT, b"unmasked", None))
                    .await?;
                ws.expect_close(1002).await
            }
            Scenario::TooBig => {
                // 80 KiB in two frames: each frame is within
                // limits.max_frame_size, the message is not within
                // limits.max_message_size.
                let half = vec![b'x'; MAX_MESSAGE * 5 / 8];
                ws.send_frame(false, BINARY, &half).await?;
                ws.send_frame(true, CONTINUATION, &half).await?;
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

// === The client's moves ===

/// A synthetic client: the kit's raw peer, answering the proxy's pings
/// like a live client, with every surprise turned into a problem line.
pub(super) struct Client(RawPeer);

impl Client {
    pub(super) fn new(mut peer: RawPeer) -> Client {
        peer.answer_pings(true);
        Client(peer)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.0.write(bytes).await.map_err(|e| e.to_string())
    }

    async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> Result<(), String> {
        self.0
            .send(fin, opcode, payload)
            .await
            .map_err(|e| e.to_string())
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) -> Result<(), String> {
        self.send_frame(true, opcode, payload).await
    }

    /// The next frame or end; pongs (answers to nothing this client sent)
    /// are skipped.
    async fn next(&mut self) -> Result<Event, String> {
        loop {
            match self.0.read().await.map_err(|e| e.to_string())? {
                Event::Frame(f) if f.opcode == PONG => continue,
                event => return Ok(event),
            }
        }
    }

    /// Send a text message and expect it back.
    pub(super) async fn echo(&mut self, text: &str) -> Result<(), String> {
        self.send(TEXT, text.as_bytes()).await?;
        match self.next().await? {
            Event::Frame(f) if f.opcode == TEXT && f.payload == text.as_bytes() => Ok(()),
            other => Err(format!("expected the echo of {text:?}, got {other:?}")),
        }
    }

    /// Stay connected for `d`, answering pings; anything else is a surprise.
    pub(super) async fn idle(&mut self, d: Duration) -> Result<(), String> {
        match tokio::time::timeout_at(Instant::now() + d, self.next()).await {
            Err(_) => Ok(()),
            Ok(got) => Err(format!("while idle: {:?}", got?)),
        }
    }

    /// Expect a Close with `code` (no data in between).
    async fn expect_close(&mut self, code: u16) -> Result<(), String> {
        match self.next().await? {
            Event::Frame(f) if f.close_code() == Some(code) => Ok(()),
            other => Err(format!("expected Close {code}, got {other:?}")),
        }
    }

    /// Expect a Close with `code`, answer it, expect the end of the stream.
    async fn expect_close_and_reply(&mut self, code: u16) -> Result<(), String> {
        self.expect_close(code).await?;
        self.send(CLOSE, &code.to_be_bytes()).await?;
        self.expect_end().await
    }

    /// Send Close `code`, expect the same code back and the end of the stream.
    async fn close_and_expect_echo(&mut self, code: u16, reason: &str) -> Result<(), String> {
        self.send(CLOSE, &close_payload(code, reason)).await?;
        self.expect_close(code).await?;
        self.expect_end().await
    }

    /// Script the upstream's end; the proxy must send the client 1014.
    pub(super) async fn send_script_expect_1014(&mut self, script: &[u8]) -> Result<(), String> {
        self.send(TEXT, script).await?;
        self.expect_close_and_reply(1014).await
    }

    /// Read, discarding frames, until the proxy closes the stream.
    async fn expect_end(&mut self) -> Result<(), String> {
        self.0
            .expect_end()
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Read (never answering) until the proxy drops this leg as dead: a
    /// Close frame instead means it did not.
    async fn expect_dropped(&mut self) -> Result<(), String> {
        let dropped = async {
            loop {
                match self.next().await? {
                    Event::Frame(f) if f.is_close() => {
                        return Err(format!(
                            "expected the proxy to drop the dead leg, got Close {:?}",
                            f.close_code()
                        ));
                    }
                    Event::Frame(_) => {}
                    Event::End(_) => return Ok(()),
                }
            }
        };
        tokio::time::timeout(crate::kit::raw::LIMIT, dropped)
            .await
            .unwrap_or_else(|_| Err("the dead leg was not dropped in time".into()))
    }
}

#[cfg(test)]
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
}
