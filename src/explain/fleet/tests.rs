#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::*;

// === canned answers ===

type Labels<'a> = &'a [(&'a str, &'a str)];

fn series(labels: Labels<'_>, value: f64) -> Series {
    Series {
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        value,
    }
}

/// The JSON of an instant vector.
fn vector(items: &[(Labels<'_>, f64)]) -> String {
    let result: Vec<serde_json::Value> = items
        .iter()
        .map(|(labels, v)| {
            let metric: serde_json::Map<String, serde_json::Value> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
                .collect();
            serde_json::json!({"metric": metric, "value": [1.0, v.to_string()]})
        })
        .collect();
    serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": result}})
        .to_string()
}

const A: Labels<'static> = &[("instance", "10.0.0.1:9090"), ("pod", "ws-a")];
const B: Labels<'static> = &[("instance", "10.0.0.2:9090"), ("pod", "ws-b")];
const C: Labels<'static> = &[("instance", "10.0.0.3:9090"), ("pod", "ws-c")];

fn with<'a>(base: Labels<'a>, more: Labels<'a>) -> Vec<(&'a str, &'a str)> {
    base.iter().chain(more).copied().collect()
}

// === the fake Prometheus ===

/// Undo [`super::super::promql::encode`].
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// A Prometheus on 127.0.0.1:0 answering `/api/v1/query` with
/// `answer(query)` (status, body); its address.
async fn fake_prometheus(
    answer: impl Fn(&str) -> (u16, String) + Send + Sync + 'static,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let answer = answer.clone();
                    async move {
                        let query = req
                            .uri()
                            .query()
                            .and_then(|q| q.strip_prefix("query="))
                            .map(decode)
                            .unwrap_or_default();
                        let (status, body) = if req.uri().path() == "/api/v1/query" {
                            answer(&query)
                        } else {
                            (404, "404 page not found".into())
                        };
                        let mut r = Response::new(Full::new(Bytes::from(body)));
                        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// Three pods; ws-a's upstream drops every session, the others are clean.
fn one_bad_pod(q: &str) -> (u16, String) {
    let body = if q.starts_with("sum by (instance, pod) (wspulse_connections_active") {
        vector(&[(A, 2.0), (B, 3.0), (C, 1.0)])
    } else if q.contains("code!~") {
        vector(&[(
            &with(
                A,
                &[("code", "1006"), ("side", "upstream"), ("cause", "eof")],
            ),
            90.0,
        )])
    } else if q.starts_with("sum by (instance, pod) (increase(wspulse_connections_closed_total") {
        vector(&[(A, 100.0), (B, 100.0), (C, 100.0)])
    } else if q.starts_with("sum by (code, side, cause)") {
        vector(&[
            (
                &[("code", "1006"), ("side", "upstream"), ("cause", "eof")],
                90.0,
            ),
            (
                &[
                    ("code", "1000"),
                    ("side", "client"),
                    ("cause", "close_frame"),
                ],
                210.0,
            ),
        ])
    } else if q.starts_with("sum by () (increase(wspulse_connections_opened_total") {
        vector(&[(&[], 306.0)])
    } else if q.starts_with("sum(wspulse_connections_active") {
        vector(&[(&[], 6.0)])
    } else {
        vector(&[])
    };
    (200, body)
}

// === pure parts ===

#[test]
fn selectors_are_written_into_every_query() {
    for s in [r#"job="ws""#, r#"{job="ws"}"#, r#" {job="ws",} "#] {
        assert_eq!(normalize_selector(s), r#"job="ws""#);
    }
    let q = Queries::new(r#"{job="ws"}"#, Duration::from_secs(3600));
    assert_eq!(
        q.increase(names::CLOSED, r#"code!~"1000""#, "instance"),
        r#"sum by (instance) (increase(wspulse_connections_closed_total{job="ws",code!~"1000"}[3600s]))"#
    );
    let all = Queries::new("", Duration::from_millis(10));
    assert_eq!(all.targets(), "count(up{})");
    assert_eq!(all.select("x", ""), "x{}");
    assert!(all.ended().ends_with("[1s]))"), "{}", all.ended());
}

fn instance(name: &str, ended: f64, ratio: f64, failures: f64) -> Instance {
    Instance {
        instance: format!("{name}:9090"),
        pod: Some(name.into()),
        ended,
        abnormal_ratio: ratio,
        top_cause: Some("1006 upstream/eof".into()),
        top_cause_what: Some("upstream closed TCP without a Close frame"),
        upstream_failures: failures,
        reconnect_delay_p50_seconds: None,
    }
}

#[test]
fn per_instance_answers_join_into_instances() {
    let got = instances(
        &[series(A, 1.0), series(B, 0.0)],
        &[series(A, 100.0), series(B, 50.0)],
        &[
            series(
                &with(
                    A,
                    &[("code", "1006"), ("side", "upstream"), ("cause", "eof")],
                ),
                60.0,
            ),
            series(
                &with(
                    A,
                    &[
                        ("code", "1011"),
                        ("side", "upstream"),
                        ("cause", "close_frame"),
                    ],
                ),
                30.0,
            ),
        ],
        &[series(B, 4.0)],
        &[series(B, 2.5), series(A, f64::NAN)],
    );
    assert_eq!(got.len(), 2);
    let a = &got[0];
    assert_eq!(a.name(), "ws-a");
    assert!((a.abnormal_ratio - 0.9).abs() < 1e-9);
    assert_eq!(a.top_cause.as_deref(), Some("1006 upstream/eof"));
    assert_eq!(a.reconnect_delay_p50_seconds, None);
    let b = &got[1];
    assert_eq!((b.abnormal_ratio, b.upstream_failures), (0.0, 4.0));
    assert_eq!(b.reconnect_delay_p50_seconds, Some(2.5));
    assert!(a.troubled() && b.troubled());
}

#[test]
fn a_minority_in_trouble_is_a_few_pods_a_majority_is_fleet_wide() {
    let few = [
        instance("ws-a", 100.0, 0.9, 0.0),
        instance("ws-b", 100.0, 0.01, 0.0),
        instance("ws-c", 100.0, 0.0, 0.0),
    ];
    let v = verdict(&few);
    assert_eq!(v.scope, Scope::FewInstances);
    assert_eq!(v.troubled, vec!["ws-a"]);
    assert!(
        v.explanation
            .contains("ws-a (90% abnormal, mostly 1006 upstream/eof"),
        "{}",
        v.explanation
    );

    let wide = [
        instance("ws-a", 100.0, 0.3, 0.0),
        instance("ws-b", 100.0, 0.0, 9.0),
        instance("ws-c", 100.0, 0.01, 0.0),
    ];
    assert_eq!(verdict(&wide).scope, Scope::FleetWide);

    // Four ended sessions, all abnormal, say nothing yet.
    let quiet = [
        instance("ws-a", 4.0, 1.0, 0.0),
        instance("ws-b", 100.0, 0.0, 2.0),
    ];
    assert_eq!(verdict(&quiet).scope, Scope::Healthy);
    let o = outliers(&quiet);
    assert!(o.abnormal_ratio.is_empty());
    assert_eq!(o.upstream_failures[0].name, "ws-b");
}

// === against a fake Prometheus ===

#[tokio::test]
async fn the_faulty_pod_and_its_cause_are_named() {
    let addr = fake_prometheus(one_bad_pod).await;
    let report = explain(
        &format!("http://{addr}"),
        r#"job="ws""#,
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    assert_eq!(report.instances.len(), 3);
    assert_eq!(report.verdict.scope, Scope::FewInstances);
    assert_eq!(report.verdict.troubled, vec!["ws-a"]);
    assert_eq!(report.outliers.abnormal_ratio[0].name, "ws-a");
    let text = report.to_string();
    assert!(
        text.starts_with(&format!(
            "wspulse explain: 3 instances matching {{job=\"ws\"}} in http://{addr}, last 1h: 306 sessions opened, 300 ended, 6 active now."
        )),
        "{text}"
    );
    // The diagnosis of --admin, over the fleet.
    assert!(
        text.contains("30% of sessions ended because the upstream dropped TCP"),
        "{text}"
    );
    assert!(text.contains("abnormal endings: ws-a 90.0%"), "{text}");
    assert!(
        text.contains("Verdict: on a few instances: 1 of 3: ws-a (90% abnormal, mostly 1006 upstream/eof: upstream closed TCP without a Close frame)"),
        "{text}"
    );
    assert!(
        text.contains("no wspulse_reconnect_delay_seconds series"),
        "{text}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["verdict"]["scope"], "few-instances");
    assert_eq!(json["instances"][0]["pod"], "ws-a");
    assert_eq!(json["diagnosis"]["closed"], 300.0);
}

#[tokio::test]
async fn a_selector_matching_nothing_says_so() {
    let addr = fake_prometheus(|_| (200, vector(&[]))).await;
    let err = explain(
        &format!("http://{addr}"),
        r#"job="nope""#,
        Duration::from_secs(60),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, FleetError::NoTargets { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(r#"the selector {job="nope"} matches no target in Prometheus"#),
        "{err}"
    );
}

#[tokio::test]
async fn targets_without_wspulse_series_are_named() {
    let addr = fake_prometheus(|q| {
        if q.starts_with("count(up") {
            (200, vector(&[(&[], 2.0)]))
        } else {
            (200, vector(&[]))
        }
    })
    .await;
    let err = explain(
        &format!("http://{addr}"),
        r#"job="node""#,
        Duration::from_secs(60),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, FleetError::MissingSeries { targets: 2, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("none has the series wspulse_connections_active"),
        "{err}"
    );
}

#[tokio::test]
async fn a_refused_query_and_a_non_prometheus_answer_are_told_apart() {
    let addr = fake_prometheus(|_| {
        (
            400,
            r#"{"status":"error","errorType":"bad_data","error":"1:26: parse error: unexpected \"=\""}"#
                .into(),
        )
    })
    .await;
    let err = explain(&format!("http://{addr}"), "job=", Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Prometheus refused the query sum by (instance, pod) (wspulse_connections_active{job=}): bad_data"),
        "{err}"
    );
    // A wrong prefix reaches something that is not the API.
    let err = explain(&format!("http://{addr}/wrong"), "", Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            FleetError::Query(QueryError::NotPrometheus { status: 404, .. })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_unreachable_prometheus_is_named() {
    // Bound, never listening: connecting is refused.
    let hole = tokio::net::TcpSocket::new_v4().unwrap();
    hole.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = hole.local_addr().unwrap();
    let err = explain(&format!("http://{addr}"), "", Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "cannot reach Prometheus: cannot connect to {addr}: "
        )),
        "{err}"
    );
}

/// The fleet's reconnect delays are read by bucket and class/side, so the
/// storm after ws-a's upstream crashes is named as for one instance.
#[tokio::test]
async fn a_reconnect_storm_over_the_fleet_is_named() {
    let addr = fake_prometheus(|q| {
        if q.starts_with(
            "sum by (class, side, le) (increase(wspulse_reconnect_delay_seconds_bucket{job=\"ws\"}",
        ) {
            let le = |b: &'static str| -> Vec<(&'static str, &'static str)> {
                vec![("class", "abnormal"), ("side", "upstream"), ("le", b)]
            };
            let (a, b, c) = (le("0.05"), le("1"), le("+Inf"));
            (200, vector(&[(&a, 60.0), (&b, 80.0), (&c, 85.0)]))
        } else {
            one_bad_pod(q)
        }
    })
    .await;
    let report = explain(
        &format!("http://{addr}"),
        r#"job="ws""#,
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let text = report.to_string();
    assert!(
        text.contains("A reconnect storm after upstream crashes: 80 clients came back within 1 s of their session's end, 89% of the 90 sessions"),
        "{text}"
    );
}
