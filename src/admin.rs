//! The admin endpoint: `/metrics`, `/healthz`, `/readyz`, `/closures`, `/drain`.
//!
//! On its own listener (loopback by default), so scrapes and probes never
//! compete with clients for the proxy's port or connection limit.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::recent::Filter;
use crate::shutdown::Drain;

/// Serve admin requests until `stop` is cancelled.
pub async fn serve(listener: TcpListener, metrics: Metrics, drain: Drain, stop: CancellationToken) {
    let tracker = TaskTracker::new();
    let state = Arc::new((metrics, drain));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let state = state.clone();
                let stop = stop.clone();
                tracker.spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        async move {
                            if req.uri().path() == "/drain" && req.method() == Method::GET {
                                return Ok::<_, Infallible>(drain_now(&state.1).await);
                            }
                            Ok(route(&req, &state.0, &state.1))
                        }
                    });
                    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = &mut conn => {}
                        _ = stop.cancelled() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
        }
    }
    tracker.close();
    tracker.wait().await;
}

/// `GET /drain`: start the drain and answer when it has finished. A GET
/// because Kubernetes `preStop` `httpGet` hooks can only GET.
async fn drain_now(drain: &Drain) -> Response<Full<Bytes>> {
    drain.request();
    drain.finished_token().cancelled().await;
    text(StatusCode::OK, "text/plain; charset=utf-8", "drained\n")
}

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Answer one admin request.
pub fn route(req: &Request<Incoming>, metrics: &Metrics, drain: &Drain) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "GET only\n");
    }
    match req.uri().path() {
        "/metrics" => {
            // Read before encoding: only a text encoded after the last
            // session ended holds the drain's final counts.
            let drained = drain.is_finished();
            let body = metrics.encode();
            if req.method() == Method::GET {
                drain.note_scrape(drained);
            }
            text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                body,
            )
        }
        "/healthz" => text(StatusCode::OK, PLAIN, "ok\n"),
        "/readyz" if drain.is_ready() => text(StatusCode::OK, PLAIN, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "draining\n"),
        "/closures" if !metrics.recent().enabled() => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "recent closures disabled (admin.recent_closures = 0)\n",
        ),
        "/closures" => match Filter::parse(req.uri().query().unwrap_or("")) {
            Ok(filter) => {
                let records = metrics.recent().query(&filter);
                match serde_json::to_vec_pretty(&serde_json::json!({ "closures": records })) {
                    Ok(body) => text(StatusCode::OK, "application/json", body),
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, PLAIN, format!("{e}\n")),
                }
            }
            Err(reason) => text(StatusCode::BAD_REQUEST, PLAIN, format!("{reason}\n")),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found: /metrics /healthz /readyz /closures\n",
        ),
    }
}
