//! The listener's TLS (`[listen.tls]`): a certificate chain and its key
//! loaded from PEM files into a [`Pair`] (with the leaf's notAfter and
//! serial, for the expiry gauge and the logs), the rustls server settings
//! built once around a [`LiveCert`], and that live slot, which a reload
//! swaps while handshakes go on.
//!
//! The swap is a resolver rather than a new `ServerConfig`: the settings
//! (versions, ALPN, session cache) stay one object for the process, and
//! each handshake asks the slot for the pair of the moment. Sessions that
//! finished their handshake hold their own keys and never notice a swap.
//!
//! A leaf: it imports nothing from the crate. `config` loads the files once
//! to refuse a bad pair at start (so `wspulse check` reports it), and
//! [`crate::edge`] loads them again to serve and on every reload.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate pair cannot be served; each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file cannot be opened or read.
    #[error("cannot read {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error, as text.
        reason: String,
    },
    /// A file is not what it should hold (PEM, a certificate, a key).
    #[error("{}: {reason}", path.display())]
    Content {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key is not the certificate's.
    #[error("{} does not match the certificate of {}", key.display(), cert.display())]
    Mismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
}

/// A certificate chain and its key, ready to serve.
#[derive(Debug, Clone)]
pub struct Pair {
    /// What rustls serves.
    pub key: Arc<CertifiedKey>,
    /// The leaf certificate's notAfter, Unix seconds.
    pub not_after: i64,
    /// The leaf certificate's serial number, lowercase hex.
    pub serial: String,
}

/// The certificates of a PEM file, leaf first; at least one, the first
/// readable as X.509. Returns them with the leaf's notAfter and serial.
pub fn load_chain(path: &Path) -> Result<(Vec<CertificateDer<'static>>, i64, String), Error> {
    let content = |reason: String| Error::Content {
        path: path.into(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| content(format!("bad PEM: {e}")))?;
    let Some(leaf) = certs.first() else {
        return Err(content("no certificate found".into()));
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| content(format!("bad certificate: {e}")))?;
    let not_after = parsed.validity().not_after.timestamp();
    let serial = parsed
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((certs, not_after, serial))
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1), as `provider`
/// signs with it.
pub fn load_key(
    path: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<dyn rustls::sign::SigningKey>, Error> {
    let der = PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls_pki_types::pem::Error::Io(e) => read_error(path, e),
        rustls_pki_types::pem::Error::NoItemsFound => Error::Content {
            path: path.into(),
            reason: "no private key found".into(),
        },
        e => Error::Content {
            path: path.into(),
            reason: format!("bad PEM: {e}"),
        },
    })?;
    provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| Error::Content {
            path: path.into(),
            reason: format!("unusable private key: {e}"),
        })
}

fn read_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Read {
        path: path.into(),
        reason: e.to_string(),
    }
}

/// Load `cert_file` and `key_file` into a pair whose key matches its leaf.
pub fn load(cert_file: &Path, key_file: &Path) -> Result<Pair, Error> {
    let provider = provider();
    let (chain, not_after, serial) = load_chain(cert_file)?;
    let signer = load_key(key_file, &provider)?;
    let key = CertifiedKey::new(chain, signer);
    match key.keys_match() {
        // ring always knows the public key; "unknown" would mean it cannot tell.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(Error::Mismatch {
                key: key_file.into(),
                cert: cert_file.into(),
            });
        }
    }
    Ok(Pair {
        key: Arc::new(key),
        not_after,
        serial,
    })
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

// === LiveCert ===

/// The pair served now; [`LiveCert::swap`] replaces it for the handshakes
/// that follow.
#[derive(Debug)]
pub struct LiveCert {
    /// A std lock: held only to clone or replace an `Arc`, never across
    /// an await, and read once per handshake.
    current: RwLock<Pair>,
}

impl LiveCert {
    /// A slot serving `pair`.
    pub fn new(pair: Pair) -> Arc<LiveCert> {
        Arc::new(LiveCert {
            current: RwLock::new(pair),
        })
    }

    /// The pair served now.
    pub fn current(&self) -> Pair {
        match self.current.read() {
            Ok(p) => p.clone(),
            // A panic while the lock was held cannot leave a half-written
            // pair (the write is one assignment): serve what is there.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Serve `pair` from the next handshake on.
    pub fn swap(&self, pair: Pair) {
        match self.current.write() {
            Ok(mut p) => *p = pair,
            Err(poisoned) => *poisoned.into_inner() = pair,
        }
    }
}

impl ResolvesServerCert for LiveCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // One certificate whatever the SNI: the listener serves one name set.
        Some(match self.current.read() {
            Ok(p) => p.key.clone(),
            Err(poisoned) => poisoned.into_inner().key.clone(),
        })
    }
}

/// The rustls server settings of the listener: TLS 1.2 and 1.3 (rustls's
/// safe defaults, ring), ALPN `http/1.1` only (a WebSocket handshake is
/// HTTP/1.1), no client certificates, the pair of `live`.
pub fn server_config(live: Arc<LiveCert>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(live);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests;
