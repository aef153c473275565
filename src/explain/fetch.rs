//! Reading a running instance's admin address: one GET over hyper's
//! HTTP/1.1 client, so chunked bodies, keep-alive and malformed answers
//! are hyper's business, not a hand-written parser's.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long `wspulse explain` waits for the whole answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why the admin address gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The admin URL is not `http://host:port[/path]`.
    #[error("{url}: not an admin URL (expected http://HOST:PORT, e.g. http://127.0.0.1:9090)")]
    BadUrl {
        /// The URL as given.
        url: String,
    },
    /// Nothing answers at the address (refused, unreachable, no such host).
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        /// `host:port`.
        authority: String,
        /// Why.
        source: std::io::Error,
    },
    /// The request could not be built from the URL's path.
    #[error("{url}: {source}")]
    Request {
        /// The URL asked for.
        url: String,
        /// Why.
        source: hyper::http::Error,
    },
    /// The connection broke or the answer was not HTTP/1.1.
    #[error("{url}: {source}")]
    Http {
        /// The URL asked for.
        url: String,
        /// Why.
        source: hyper::Error,
    },
    /// The answer's status was not 200.
    #[error("{url}: HTTP {status}")]
    Status {
        /// The URL asked for.
        url: String,
        /// What it answered.
        status: StatusCode,
    },
    /// No whole answer in time.
    #[error("{url}: no answer within {} s", limit.as_secs_f64())]
    Timeout {
        /// The URL asked for.
        url: String,
        /// The bound.
        limit: Duration,
    },
}

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its body, as text (invalid UTF-8 replaced).
    pub body: String,
}

/// `GET path` from `authority` (`host:port`) over one HTTP/1.1
/// connection, whatever the status; the whole exchange within `limit`.
pub async fn get(authority: &str, path: &str, limit: Duration) -> Result<Answer, FetchError> {
    let url = format!("http://{authority}{path}");
    match tokio::time::timeout(limit, exchange(authority, path, &url)).await {
        Ok(answer) => answer,
        Err(_) => Err(FetchError::Timeout { url, limit }),
    }
}

async fn exchange(authority: &str, path: &str, url: &str) -> Result<Answer, FetchError> {
    let tcp = TcpStream::connect(authority)
        .await
        .map_err(|source| FetchError::Connect {
            authority: authority.to_string(),
            source,
        })?;
    let http = |source| FetchError::Http {
        url: url.to_string(),
        source,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(http)?;
    let request = Request::get(path)
        .header(header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .map_err(|source| FetchError::Request {
            url: url.to_string(),
            source,
        })?;
    // The connection future does the I/O; it ends once the answer is read
    // and `sender`, moved into the exchange, is gone.
    let answer = async move {
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>(Answer {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    let (answer, connection) = tokio::join!(answer, connection);
    let answer = answer.map_err(http)?;
    // A connection error after a whole answer changes nothing.
    drop(connection);
    Ok(answer)
}

/// Where `/metrics` is for an admin URL: the base URL
/// (`http://127.0.0.1:9090`, with or without a path prefix) or the full
/// `/metrics` URL. Returns `host:port` and the path.
fn metrics_location(admin: &str) -> Result<(String, String), FetchError> {
    let bad = || FetchError::BadUrl {
        url: admin.to_string(),
    };
    let uri: Uri = admin.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("http") {
        return Err(bad());
    }
    let authority = uri.authority().ok_or_else(bad)?.to_string();
    let path = uri.path().trim_end_matches('/');
    let path = if path.ends_with("/metrics") {
        path.to_string()
    } else {
        format!("{path}/metrics")
    };
    Ok((authority, path))
}

/// The `/metrics` text of a running instance, from an admin URL such as
/// `http://127.0.0.1:9090`; any status but 200 is an error.
pub async fn fetch(admin: &str) -> Result<String, FetchError> {
    let (authority, path) = metrics_location(admin)?;
    let answer = get(&authority, &path, TIMEOUT).await?;
    if answer.status != StatusCode::OK {
        return Err(FetchError::Status {
            url: format!("http://{authority}{path}"),
            status: answer.status,
        });
    }
    Ok(answer.body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn admin_urls_point_at_metrics() {
        let at = |u: &str| metrics_location(u).unwrap();
        let want = ("127.0.0.1:9090".to_string(), "/metrics".to_string());
        assert_eq!(at("http://127.0.0.1:9090"), want);
        assert_eq!(at("http://127.0.0.1:9090/"), want);
        assert_eq!(at("http://127.0.0.1:9090/metrics"), want);
        assert_eq!(
            at("http://localhost:9090/wspulse/"),
            ("localhost:9090".into(), "/wspulse/metrics".into())
        );
        for bad in [
            "127.0.0.1:9090",
            "https://127.0.0.1:9090",
            "http://",
            "ftp://x",
        ] {
            assert!(
                matches!(metrics_location(bad), Err(FetchError::BadUrl { .. })),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn an_unreachable_address_is_named() {
        // Bound, never listening: connecting is refused.
        let hole = tokio::net::TcpSocket::new_v4().unwrap();
        hole.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = hole.local_addr().unwrap();
        let err = fetch(&format!("http://{addr}")).await.unwrap_err();
        assert!(matches!(err, FetchError::Connect { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot connect to {addr}: ")),
            "{err}"
        );
    }
}
