//! A Prometheus HTTP API client for instant queries: `GET
//! /api/v1/query?query=…` over hyper's HTTP/1.1 client ([`super::fetch`]),
//! the JSON answer read into [`Series`]. Only what `explain --prometheus`
//! needs: no range queries, no authentication, plain `http://` (reach a
//! TLS-only Prometheus through `kubectl port-forward`).

use std::collections::BTreeMap;
use std::time::Duration;

use hyper::Uri;

use super::fetch::{self, FetchError};

/// How long one query may take, answer included.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a query gave no result.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The URL is not `http://host:port[/prefix]`.
    #[error(
        "{url}: not a Prometheus URL (expected http://HOST:PORT[/PREFIX], e.g. http://127.0.0.1:9090)"
    )]
    BadUrl {
        /// The URL as given.
        url: String,
    },
    /// Prometheus could not be reached, or its answer was cut short.
    #[error("cannot reach Prometheus: {0}")]
    Unreachable(#[source] FetchError),
    /// The answer is not the JSON of the Prometheus HTTP API.
    #[error(
        "{url}: not a Prometheus API answer (HTTP {status}): {excerpt:?}; is this the Prometheus base URL?"
    )]
    NotPrometheus {
        /// The URL asked.
        url: String,
        /// Its HTTP status.
        status: u16,
        /// The start of the body.
        excerpt: String,
    },
    /// Prometheus refused the query (a bad selector, say).
    #[error("Prometheus refused the query {query}: {kind}: {message}")]
    Refused {
        /// The PromQL sent.
        query: String,
        /// Prometheus' `errorType` (`bad_data`, `timeout`, …).
        kind: String,
        /// Prometheus' `error`.
        message: String,
    },
}

/// One series of an instant vector: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its labels (`__name__` included when Prometheus kept it).
    pub labels: BTreeMap<String, String>,
    /// Its value (`NaN` and infinities as Prometheus writes them).
    pub value: f64,
}

impl Series {
    /// The value of label `key`, or `""`.
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }
}

/// A Prometheus server's query endpoint.
#[derive(Debug, Clone)]
pub struct Api {
    /// `host:port`.
    authority: String,
    /// The path prefix, without a trailing `/` (`""` or `/prometheus`).
    prefix: String,
}

impl Api {
    /// The API under a base URL such as `http://127.0.0.1:9090` or
    /// `http://monitoring/prometheus/`.
    pub fn new(url: &str) -> Result<Api, QueryError> {
        let bad = || QueryError::BadUrl {
            url: url.to_string(),
        };
        let uri: Uri = url.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("http") || uri.query().is_some() {
            return Err(bad());
        }
        let authority = uri.authority().ok_or_else(bad)?.to_string();
        let prefix = uri.path().trim_end_matches('/').to_string();
        Ok(Api { authority, prefix })
    }

    /// The base URL, as queries go to it.
    pub fn base(&self) -> String {
        format!("http://{}{}", self.authority, self.prefix)
    }

    /// Run the instant query `expr` (at the server's now); its series.
    pub async fn query(&self, expr: &str) -> Result<Vec<Series>, QueryError> {
        let path = format!("{}/api/v1/query?query={}", self.prefix, encode(expr));
        let answer = fetch::get(&self.authority, &path, TIMEOUT)
            .await
            .map_err(QueryError::Unreachable)?;
        parse_answer(expr, &self.base(), answer.status.as_u16(), &answer.body)
    }
}

/// The series of an API answer, or why there are none. Prometheus answers
/// an error with a JSON body and a 4xx/5xx status, so the body decides.
pub fn parse_answer(
    expr: &str,
    base: &str,
    status: u16,
    body: &str,
) -> Result<Vec<Series>, QueryError> {
    let not_prometheus = || QueryError::NotPrometheus {
        url: format!("{base}/api/v1/query"),
        status,
        excerpt: body.chars().take(120).collect(),
    };
    let json: serde_json::Value = serde_json::from_str(body).map_err(|_| not_prometheus())?;
    match json.get("status").and_then(|s| s.as_str()) {
        Some("success") => {}
        Some("error") => {
            let field = |k: &str| {
                json.get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or("?")
                    .to_string()
            };
            return Err(QueryError::Refused {
                query: expr.to_string(),
                kind: field("errorType"),
                message: field("error"),
            });
        }
        _ => return Err(not_prometheus()),
    }
    let data = json.get("data").ok_or_else(not_prometheus)?;
    let result = data.get("result").and_then(|r| r.as_array());
    match data.get("resultType").and_then(|t| t.as_str()) {
        Some("vector") => Ok(result
            .ok_or_else(not_prometheus)?
            .iter()
            .filter_map(series)
            .collect()),
        // A bare number (`vector(1)` is a vector; `1` is a scalar).
        Some("scalar") => Ok(data
            .get("result")
            .and_then(sample_value)
            .map(|value| Series {
                labels: BTreeMap::new(),
                value,
            })
            .into_iter()
            .collect()),
        _ => Err(not_prometheus()),
    }
}

/// `{"metric": {…}, "value": [ts, "1.5"]}` → a series.
fn series(item: &serde_json::Value) -> Option<Series> {
    let labels = item
        .get("metric")?
        .as_object()?
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect();
    let value = sample_value(item.get("value")?)?;
    Some(Series { labels, value })
}

/// `[ts, "1.5"]` → 1.5 (`"NaN"`, `"+Inf"` included).
fn sample_value(pair: &serde_json::Value) -> Option<f64> {
    let text = pair.as_array()?.get(1)?.as_str()?;
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

/// Percent-encode a query-string value: every byte but the unreserved
/// characters of RFC 3986.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_authority_and_prefix() {
        let api = Api::new("http://127.0.0.1:9090").unwrap();
        assert_eq!(api.base(), "http://127.0.0.1:9090");
        let api = Api::new("http://mon:80/prometheus/").unwrap();
        assert_eq!(api.base(), "http://mon:80/prometheus");
        for bad in [
            "127.0.0.1:9090",
            "https://p:9090",
            "http://",
            "http://p:1/?x=1",
        ] {
            assert!(
                matches!(Api::new(bad), Err(QueryError::BadUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            encode(r#"sum(up{job="ws"})"#),
            "sum%28up%7Bjob%3D%22ws%22%7D%29"
        );
        assert_eq!(encode("a b+é"), "a%20b%2B%C3%A9");
    }

    #[test]
    fn answers_become_series_or_errors() {
        let ok = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"instance":"a:1"},"value":[1.0,"2.5"]},
            {"metric":{},"value":[1.0,"NaN"]}]}}"#;
        let got = parse_answer("q", "http://p", 200, ok).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].label("instance"), "a:1");
        assert_eq!(got[0].value, 2.5);
        assert!(got[1].value.is_nan());

        let refused = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        let err = parse_answer("up{", "http://p", 400, refused).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Prometheus refused the query up{: bad_data: parse error"
        );

        let html = "<html>404 page not found</html>";
        let err = parse_answer("up", "http://p", 404, html).unwrap_err();
        assert!(matches!(err, QueryError::NotPrometheus { status: 404, .. }));
        assert!(err.to_string().contains("http://p/api/v1/query"), "{err}");
    }
}
