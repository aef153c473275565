//! The listener's edge: what a client connection goes through before its
//! HTTP request is read. In order, each bounded by the handshake's one
//! deadline (`limits.handshake_timeout`):
//!
//! 1. the PROXY protocol header (`listen.proxy_protocol`), read to its last
//!    byte and no further, so the client's own first bytes stay in the
//!    socket; its source becomes the peer ([`crate::proxy_header`]);
//! 2. TLS (`[listen.tls]`) with the certificate of the moment
//!    ([`crate::certs::LiveCert`]), ALPN `http/1.1`.
//!
//! Every refusal is counted here: a missing or malformed PROXY header as
//! `wspulse_handshake_rejections_total{status="400"}` (closed without an
//! answer: the balancer, not a person, sent it), one that never completes
//! as `408`, a failed TLS handshake by reason in
//! `wspulse_tls_handshake_failures_total`.
//!
//! [`Edge::watch_certificate`] reloads the pair when either file changes
//! (checked every `listen.tls.reload_interval`), on SIGHUP, and on
//! [`Edge::reload_certificate`]. A pair that does not load leaves the old
//! one serving, logs an error and counts `outcome="error"`.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use crate::certs::{self, LiveCert};
use crate::config::ListenSettings;
use crate::conn::Conn;
use crate::metrics::{Metrics, TlsFailure, TlsMetrics};
use crate::proxy_header::{self, Parsed, Source};

/// The first byte of every TLS record that opens a handshake.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Why the edge could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The certificate pair does not load.
    #[error(transparent)]
    Certificate(#[from] certs::Error),
    /// rustls refused the settings (it would be a bug: they are fixed).
    #[error("TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
    /// The TLS metric families could not be registered.
    #[error("TLS metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The edge of one listener, shared by its connection tasks.
pub struct Edge {
    proxy_protocol: bool,
    tls: Option<Tls>,
}

/// TLS on the listener: the acceptor, the live pair and where it comes from.
struct Tls {
    acceptor: TlsAcceptor,
    live: Arc<LiveCert>,
    metrics: TlsMetrics,
    cert_file: PathBuf,
    key_file: PathBuf,
    reload_interval: Duration,
    /// Wakes the watcher for a reload now, as SIGHUP does.
    reload: Notify,
}

/// How a connection came through the edge.
pub enum Opened {
    /// Ready for its HTTP request, from this peer (the PROXY header's
    /// source, else the TCP peer).
    Stream(Conn, SocketAddr),
    /// Plain HTTP on the TLS port, counted: answer it 400 and close.
    Plaintext(TcpStream),
    /// Refused or gone, counted where that is due: nothing left to do.
    Closed,
}

impl Edge {
    /// The edge `listen` asks for; with TLS, the pair is loaded now (a
    /// failure names the file) and the TLS families are registered.
    pub fn new(listen: &ListenSettings, metrics: &Metrics) -> Result<Edge, Error> {
        let tls = match (&listen.tls.cert_file, &listen.tls.key_file) {
            (Some(cert_file), Some(key_file)) => {
                let pair = certs::load(cert_file, key_file)?;
                let tls_metrics = metrics.register_tls()?;
                tls_metrics.serving(pair.not_after);
                info!(cert_file = %cert_file.display(), serial = %pair.serial, not_after = pair.not_after, "serving TLS");
                let live = LiveCert::new(pair);
                Some(Tls {
                    acceptor: TlsAcceptor::from(certs::server_config(live.clone())?),
                    live,
                    metrics: tls_metrics,
                    cert_file: cert_file.clone(),
                    key_file: key_file.clone(),
                    reload_interval: listen.tls.reload_interval,
                    reload: Notify::new(),
                })
            }
            _ => None,
        };
        Ok(Edge {
            proxy_protocol: listen.proxy_protocol,
            tls,
        })
    }

    /// Whether TLS ends here (`X-Forwarded-Proto: https`).
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Take `tcp` from `peer` through the PROXY header and TLS, as
    /// configured, by `deadline`. Refusals are counted in `metrics`.
    pub async fn open(
        &self,
        mut tcp: TcpStream,
        peer: SocketAddr,
        deadline: Instant,
        metrics: &Metrics,
    ) -> Opened {
        let peer = if self.proxy_protocol {
            match timeout_at(deadline, read_proxy_header(&mut tcp)).await {
                Ok(Ok(Source::Client(client))) => client,
                Ok(Ok(Source::Local)) => peer,
                Ok(Err(HeaderError::Invalid(why))) => {
                    metrics.rejection(400);
                    debug!(%peer, reason = why, status = 400, "no valid PROXY protocol header: closed");
                    return Opened::Closed;
                }
                Ok(Err(HeaderError::Io(e))) => {
                    debug!(%peer, error = %e, "connection gone during the PROXY header");
                    return Opened::Closed;
                }
                Err(_) => {
                    metrics.rejection(408);
                    debug!(%peer, status = 408, "PROXY header not complete within the handshake timeout");
                    return Opened::Closed;
                }
            }
        } else {
            peer
        };
        let Some(tls) = &self.tls else {
            return Opened::Stream(Conn::Tcp(tcp), peer);
        };
        let failed = |reason: TlsFailure, detail: &dyn std::fmt::Display| {
            tls.metrics.handshake_failed(reason);
            debug!(%peer, reason = reason.as_str(), detail = %detail, "TLS handshake failed");
        };
        let mut first = [0u8; 1];
        match timeout_at(deadline, tcp.peek(&mut first)).await {
            // Gone before a byte: a balancer's TCP health check, say. Not a
            // handshake that failed.
            Ok(Ok(0)) | Ok(Err(_)) => return Opened::Closed,
            Ok(Ok(_)) if first[0] == TLS_HANDSHAKE_RECORD => {}
            Ok(Ok(_)) => {
                failed(TlsFailure::Plaintext, &"not a TLS record");
                return match first[0].is_ascii_uppercase() {
                    true => Opened::Plaintext(tcp),
                    false => Opened::Closed,
                };
            }
            Err(_) => {
                failed(TlsFailure::Timeout, &"no byte");
                return Opened::Closed;
            }
        }
        match timeout_at(deadline, tls.acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => Opened::Stream(Conn::TlsServer(Box::new(stream)), peer),
            Ok(Err(e)) => {
                failed(failure_reason(&e), &e);
                Opened::Closed
            }
            Err(_) => {
                failed(TlsFailure::Timeout, &"handshake not complete");
                Opened::Closed
            }
        }
    }

    /// Reload the certificate pair now, as SIGHUP does (no-op without TLS).
    pub fn reload_certificate(&self) {
        if let Some(tls) = &self.tls {
            tls.reload.notify_one();
        }
    }

    /// Until `stop`: reload the pair when a file changes, on SIGHUP and on
    /// [`Self::reload_certificate`]. Returns at once without TLS.
    pub async fn watch_certificate(&self, stop: CancellationToken) {
        let Some(tls) = &self.tls else {
            return;
        };
        let mut seen = tls.fingerprint();
        let mut hangups = Hangups::new();
        loop {
            let poll = async {
                match tls.reload_interval.is_zero() {
                    true => std::future::pending().await,
                    false => tokio::time::sleep(tls.reload_interval).await,
                }
            };
            let why = tokio::select! {
                _ = stop.cancelled() => return,
                _ = poll => "file change",
                _ = tls.reload.notified() => "reload requested",
                _ = hangups.recv() => "SIGHUP",
            };
            let now = tls.fingerprint();
            if why == "file change" && now == seen {
                continue;
            }
            // A pair that fails stays `seen`: it is counted once, and the
            // next write to either file is tried again.
            seen = now;
            tls.reload(why);
        }
    }
}

impl Tls {
    /// Load the files again and serve them if they load. The reads block
    /// the worker for two small files, a few times a day at most: not
    /// worth a hop to the blocking pool.
    fn reload(&self, why: &str) {
        match certs::load(&self.cert_file, &self.key_file) {
            Ok(pair) => {
                info!(why, serial = %pair.serial, not_after = pair.not_after, "TLS certificate reloaded");
                self.metrics.serving(pair.not_after);
                self.live.swap(pair);
                self.metrics.reloaded(true);
            }
            Err(e) => {
                let serving = self.live.current().serial;
                error!(why, error = %e, serving = %serving, "TLS certificate reload failed; the previous certificate is still served");
                self.metrics.reloaded(false);
            }
        }
    }

    fn fingerprint(&self) -> [Option<FileStamp>; 2] {
        [stamp(&self.cert_file), stamp(&self.key_file)]
    }
}

/// What tells a file's new content from its old without reading it: a
/// rename over it (how Kubernetes swaps a Secret's files) changes the inode,
/// a write in place the length or the modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    // Follows symlinks: a Secret's files are links into a swapped directory.
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(FileStamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode,
    })
}

/// SIGHUP as a stream of wake-ups; never fires where it cannot be watched.
struct Hangups(#[cfg(unix)] Option<tokio::signal::unix::Signal>);

impl Hangups {
    fn new() -> Hangups {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let hup = signal(SignalKind::hangup())
                .map_err(|e| tracing::warn!(error = %e, "cannot watch SIGHUP; the TLS files are still polled"))
                .ok();
            Hangups(hup)
        }
        #[cfg(not(unix))]
        Hangups()
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(hup) = &mut self.0
            && hup.recv().await.is_some()
        {
            return;
        }
        std::future::pending::<()>().await
    }
}

/// Why a PROXY header was not read.
#[derive(Debug)]
enum HeaderError {
    Invalid(&'static str),
    Io(io::Error),
}

/// Read the PROXY header at the start of `tcp`, to its last byte and no
/// further: bytes are peeked, and only those that belong to the header are
/// consumed, so a ClientHello or a request behind it stays for the next
/// layer. A header arriving piece by piece is consumed piece by piece (every
/// byte of an incomplete header is header), so no peek is repeated on the
/// same bytes.
async fn read_proxy_header(tcp: &mut TcpStream) -> Result<Source, HeaderError> {
    let mut buf = [0u8; proxy_header::MAX_NEEDED];
    let mut have = 0;
    loop {
        // Peeked bytes start at `have`: the ones before are consumed.
        let n = tcp.peek(&mut buf[have..]).await.map_err(HeaderError::Io)?;
        if n == 0 {
            return Err(HeaderError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        match proxy_header::parse(&buf[..have + n]) {
            Parsed::Complete { source, len } => {
                // `len > have`: the bytes consumed so far were an incomplete
                // header (the fuzz target holds `parse` to that).
                skip(tcp, len.saturating_sub(have))
                    .await
                    .map_err(HeaderError::Io)?;
                return Ok(source);
            }
            Parsed::Incomplete => {
                tcp.read_exact(&mut buf[have..have + n])
                    .await
                    .map_err(HeaderError::Io)?;
                have += n;
                if have == buf.len() {
                    // `parse` answers within MAX_NEEDED bytes; defensive.
                    return Err(HeaderError::Invalid("PROXY header too long"));
                }
            }
            Parsed::Invalid(why) => return Err(HeaderError::Invalid(why)),
        }
    }
}

/// Consume exactly `n` bytes of `tcp` (a header's rest and its TLVs).
async fn skip(tcp: &mut TcpStream, mut n: usize) -> io::Result<()> {
    let mut sink = [0u8; 512];
    while n > 0 {
        let take = n.min(sink.len());
        tcp.read_exact(&mut sink[..take]).await?;
        n -= take;
    }
    Ok(())
}

/// The `reason` label of a failed handshake, from rustls's error.
fn failure_reason(e: &io::Error) -> TlsFailure {
    use rustls::AlertDescription as A;
    let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
        return TlsFailure::Other;
    };
    match tls {
        rustls::Error::PeerIncompatible(_) => TlsFailure::NoSharedCipher,
        rustls::Error::AlertReceived(
            A::HandshakeFailure | A::ProtocolVersion | A::InsufficientSecurity,
        ) => TlsFailure::NoSharedCipher,
        rustls::Error::AlertReceived(
            A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::BadCertificateStatusResponse
            | A::CertificateRequired,
        ) => TlsFailure::BadCertificate,
        _ => TlsFailure::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_errors_map_to_bounded_reasons() {
        let io = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        let cases = [
            (
                rustls::Error::PeerIncompatible(rustls::PeerIncompatible::NoCipherSuitesInCommon),
                TlsFailure::NoSharedCipher,
            ),
            (
                rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
                TlsFailure::BadCertificate,
            ),
            (
                rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate),
                TlsFailure::BadCertificate,
            ),
            (
                rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion),
                TlsFailure::NoSharedCipher,
            ),
            (rustls::Error::DecryptError, TlsFailure::Other),
        ];
        for (e, want) in cases {
            assert_eq!(failure_reason(&io(e)), want);
        }
        assert_eq!(
            failure_reason(&io::ErrorKind::UnexpectedEof.into()),
            TlsFailure::Other
        );
    }

    /// A header written a byte at a time is read whole, and the bytes
    /// behind it stay in the socket.
    #[tokio::test]
    async fn a_trickled_header_is_read_to_its_end_and_no_further() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let writer = tokio::spawn(async move {
            let header = b"PROXY TCP4 127.0.0.7 127.0.0.1 4000 443\r\n";
            for b in header {
                client.write_all(&[*b]).await.unwrap();
                client.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            client.write_all(b"GET").await.unwrap();
            client
        });
        let source = read_proxy_header(&mut server).await.unwrap();
        assert_eq!(source, Source::Client("127.0.0.7:4000".parse().unwrap()));
        let mut rest = [0u8; 3];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"GET");
        drop(writer.await.unwrap());
    }
}
