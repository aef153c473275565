//! The byte stream under a WebSocket leg, and the socket options wspulse
//! sets on it.
//!
//! One enum, [`Conn`], over every stream a leg can run on: plain TCP (the
//! client leg, `ws://` upstreams), TLS over TCP (`wss://` upstreams, and
//! the client leg of a TLS listener), and
//! an in-memory pipe (the session's unit tests and the fuzz target). The
//! relay has one leg type over it rather than a leg type per stream: the
//! branch per read or write costs nothing next to the syscall behind it.
//!
//! Beyond `AsyncRead`/`AsyncWrite`, the relay asks three things of its
//! stream, each answered per variant:
//! - [`Conn::poll_write_last`] and [`Conn::end_write`]: the last bytes
//!   before the socket is dropped go out with the FIN in one segment;
//! - [`Conn::poll_read_ready`]: is a read worth a buffer;
//! - [`Conn::write_now`]: the relay's direct send, with no waker.
//!
//! A leaf: nothing here knows about WebSocket frames.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A TLS session the proxy opened (toward a `wss://` upstream). Boxed: it
/// is about a kilobyte, which every plain leg would otherwise carry too.
pub type TlsClientStream = Box<tokio_rustls::client::TlsStream<TcpStream>>;

/// A TLS session a client opened to the listener. Boxed for the same reason.
pub type TlsServerStream = Box<tokio_rustls::server::TlsStream<TcpStream>>;

/// The stream under one leg.
pub enum Conn {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS the proxy opened as a client.
    TlsClient(TlsClientStream),
    /// TLS a client opened to the proxy's listener.
    TlsServer(TlsServerStream),
    /// An in-memory pipe, for tests and fuzzing.
    Memory(DuplexStream),
}

impl From<TcpStream> for Conn {
    fn from(tcp: TcpStream) -> Conn {
        Conn::Tcp(tcp)
    }
}

impl From<TlsClientStream> for Conn {
    fn from(tls: TlsClientStream) -> Conn {
        Conn::TlsClient(tls)
    }
}

impl From<TlsServerStream> for Conn {
    fn from(tls: TlsServerStream) -> Conn {
        Conn::TlsServer(tls)
    }
}

impl From<DuplexStream> for Conn {
    fn from(pipe: DuplexStream) -> Conn {
        Conn::Memory(pipe)
    }
}

impl Conn {
    /// Write the last bytes before the connection is dropped: the
    /// server-role leg's echo of the peer's Close, after which the session
    /// drops the socket at once (RFC 6455 §7.1.1); [`Self::end_write`]
    /// follows it. On TCP the bytes go with `MSG_MORE`, so the kernel holds
    /// them, and the shutdown sends them with the FIN in one segment, as
    /// HAProxy does, rather than the Close frame and then a bare FIN: one
    /// segment fewer for every session the client closes.
    ///
    /// The shutdown is what makes the held bytes safe. Dropping the socket
    /// alone would send them too, unless the peer sent anything after its
    /// Close that we did not read (Autobahn case 7.1.3 pings right after
    /// it): then the kernel answers the close with a reset and throws away
    /// what it still holds, and the peer never gets our Close. The
    /// end-to-end suite caught that once in the node run. After the
    /// shutdown the bytes and the FIN are out; a reset after them no longer
    /// takes the Close along.
    ///
    /// Other streams write plainly and the drop closes them.
    pub fn poll_write_last(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Conn::Tcp(tcp) = self {
            loop {
                ready!(tcp.poll_write_ready(cx))?;
                let sent = tcp.try_io(tokio::io::Interest::WRITABLE, || {
                    socket2::SockRef::from(&*tcp)
                        .send_with_flags(buf, libc::MSG_MORE | libc::MSG_NOSIGNAL)
                });
                match sent {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return Poll::Ready(r),
                }
            }
        }
        Pin::new(self).poll_write(cx, buf)
    }

    /// Send what [`Self::poll_write_last`] wrote, with the FIN. The client
    /// leg of a TLS listener gets its `close_notify` queued instead, which
    /// the flush that follows writes: the client then sees the TLS stream
    /// end cleanly, not truncated.
    pub fn end_write(&mut self) {
        if let Conn::TlsServer(tls) = self {
            tls.get_mut().1.send_close_notify();
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Conn::Tcp(tcp) = self {
            // An error here (the peer reset first) leaves nothing to send.
            let _ = socket2::SockRef::from(&*tcp).shutdown(std::net::Shutdown::Write);
        }
    }

    /// Wait until a read may find bytes (the waker is registered when not),
    /// so an idle leg does not borrow a buffer for a read that finds
    /// nothing. TLS may hold decrypted bytes the socket no longer shows, and
    /// a pipe has no readiness of its own: both say "try the read".
    pub fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Conn::Tcp(tcp) => tcp.poll_read_ready(cx),
            Conn::TlsClient(_) | Conn::TlsServer(_) | Conn::Memory(_) => Poll::Ready(Ok(())),
        }
    }

    /// Write what the socket takes now, without a waker: the relay's direct
    /// send. Only plain TCP takes it; TLS has to encrypt first and a pipe
    /// needs a waker, so their frames are queued for the flush.
    pub fn write_now(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(tcp) => tcp.try_write(buf),
            Conn::TlsClient(_) | Conn::TlsServer(_) | Conn::Memory(_) => {
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::TlsClient(s) => Pin::new(s).poll_read(cx, buf),
            Conn::TlsServer(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Memory(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::TlsClient(s) => Pin::new(s).poll_write(cx, buf),
            Conn::TlsServer(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Memory(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::TlsClient(s) => Pin::new(s).poll_flush(cx),
            Conn::TlsServer(s) => Pin::new(s).poll_flush(cx),
            Conn::Memory(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::TlsClient(s) => Pin::new(s).poll_shutdown(cx),
            Conn::TlsServer(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Memory(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

// === socket options ===

/// Turn off TCP quick-ACK on a socket (Linux; a no-op elsewhere).
///
/// Both legs start with the peer speaking and wspulse answering soon after:
/// the client's upgrade request is answered by the 101, the upstream's
/// SYN-ACK by our upgrade request, its 101 by the first relayed frame. In
/// quick-ACK mode the kernel acknowledges each of those at once in a
/// segment of its own; with it off the ACK rides on the answer. That is
/// three segments fewer per session (each a softirq on both ends), ~6%
/// more sessions set up per second in `bench/run`. HAProxy does the same
/// on its HTTP listeners. The kernel still ACKs on its delayed-ACK timer
/// when no answer comes, and leaves this mode by itself for bulk transfer.
pub fn piggyback_acks<S: std::os::fd::AsFd>(socket: &S) {
    #[cfg(target_os = "linux")]
    {
        let _ = socket2::SockRef::from(socket).set_tcp_quickack(false);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// Set up the listening socket with what every accepted client socket
/// needs: no Nagle (frames are written whole and flushed once per burst)
/// and delayed ACKs ([`piggyback_acks`]). Linux copies both to each
/// accepted socket, which saves a `setsockopt` per client; elsewhere
/// [`tune_accepted`] turns Nagle off on each socket itself.
pub fn tune_listener(listener: &TcpListener) {
    #[cfg(target_os = "linux")]
    {
        let _ = socket2::SockRef::from(listener).set_tcp_nodelay(true);
    }
    piggyback_acks(listener);
}

/// What an accepted socket needs that the listener did not pass on: on
/// Linux nothing ([`tune_listener`]), elsewhere no Nagle.
pub fn tune_accepted(tcp: &TcpStream) {
    #[cfg(not(target_os = "linux"))]
    let _ = tcp.set_nodelay(true);
    #[cfg(target_os = "linux")]
    let _ = tcp;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_inherit_delayed_acks_and_no_nagle() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        tune_listener(&listener);
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        tune_accepted(&accepted);
        #[cfg(target_os = "linux")]
        {
            assert!(!socket2::SockRef::from(&accepted).tcp_quickack().unwrap());
            assert!(socket2::SockRef::from(&client).tcp_quickack().unwrap());
        }
        assert!(socket2::SockRef::from(&accepted).tcp_nodelay().unwrap());
        assert!(!socket2::SockRef::from(&client).tcp_nodelay().unwrap());
    }
}
