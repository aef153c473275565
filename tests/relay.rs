//! The proxy core: relay fidelity, close forwarding, closure accounting,
//! handshake failures. Each test runs a real proxy on 127.0.0.1:0 in front
//! of the in-process echo upstream and asserts on the scraped `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::{self, Message};
use wspulse::protocol::opcode::{CLOSE, TEXT};

/// 1,000 messages each way (text with multi-byte UTF-8, binary of varying
/// size, and fragmented messages), pipelined: all arrive whole, byte-exact,
/// in order, and are counted per direction.
#[tokio::test]
async fn relays_text_binary_and_fragmented_in_order() {
    let (echo, proxy) = echo_and_proxy().await;
    let ws = proxy.connect("/relay").await;
    let expected: Vec<Message> = (0..1000)
        .map(|i| match i % 3 {
            0 => Message::text(format!("text #{i} — ünïcødé ✓")),
            1 => Message::binary(
                (0..(i % 700 + 1))
                    .map(|b| (b * 7 + i) as u8)
                    .collect::<Vec<u8>>(),
            ),
            _ => Message::text(format!("fragmented #{i} ").repeat(3)),
        })
        .collect();
    let (mut tx, mut rx) = ws.split();
    let to_send = expected.clone();
    let writer = tokio::spawn(async move {
        for m in to_send {
            match m {
                // Send these as three frames: start + continuation + final.
                Message::Text(t) if t.starts_with("fragmented") => {
                    let b = t.as_bytes();
                    let (a, rest) = b.split_at(b.len() / 3);
                    let (c, d) = rest.split_at(rest.len() / 2);
                    tx.feed(Message::Frame(Frame::message(
                        a.to_vec(),
                        OpCode::Data(Data::Text),
                        false,
                    )))
                    .await
                    .unwrap();
                    tx.feed(Message::Frame(Frame::message(
                        c.to_vec(),
                        OpCode::Data(Data::Continue),
                        false,
                    )))
                    .await
                    .unwrap();
                    tx.feed(Message::Frame(Frame::message(
                        d.to_vec(),
                        OpCode::Data(Data::Continue),
                        true,
                    )))
                    .await
                    .unwrap();
                }
                m => tx.feed(m).await.unwrap(),
            }
        }
        tx.flush().await.unwrap();
        tx
    });
    for (i, want) in expected.iter().enumerate() {
        let got = tokio::time::timeout(LIMIT, rx.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(&got, want, "message {i} differs");
    }
    let tx = writer.await.unwrap();
    let mut ws = tx.reunite(rx).unwrap();
    ws.close(None).await.unwrap();
    proxy.wait_ended(1).await;
    let text = proxy.scrape().await;
    let total_bytes: usize = expected.iter().map(|m| m.len()).sum();
    for dir in ["client_to_upstream", "upstream_to_client"] {
        assert_eq!(
            metric(&text, "wspulse_messages_total", &[("direction", dir)]),
            1000.0,
            "{dir}"
        );
        assert_eq!(
            metric(&text, "wspulse_message_bytes_total", &[("direction", dir)]),
            total_bytes as f64,
            "{dir}"
        );
    }
    assert_eq!(closed(&text, "1005", "client", "close_frame"), 1.0);
    // An empty Close is forwarded as an empty Close, not as 1000.
    assert!(echo.wait_until(LIMIT, |e| !e.closes().is_empty()).await);
    assert_eq!(echo.closes(), vec![None]);
    proxy.finish().await;
}

/// A Close frame from either side reaches the other peer with the same code
/// and reason, both closing handshakes complete, and it is counted with the
/// code, the side that sent it, and cause close_frame.
#[tokio::test]
async fn close_frames_are_forwarded_and_counted_both_ways() {
    let (echo, proxy) = echo_and_proxy().await;
    for (n, code, reason) in [(1u64, 1000u16, "bye"), (2, 4001, "app says no")] {
        // Client-initiated.
        let mut ws = proxy.connect("/").await;
        ws.close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        }))
        .await
        .unwrap();
        // Our Close is answered with the same code (closing handshake).
        assert_eq!(expect_close(&mut ws).await, (code, reason.to_string()));
        assert!(
            next(&mut ws).await.is_none(),
            "stream should end after the handshake"
        );
        assert!(
            echo.wait_until(LIMIT, |e| e.closes().len() as u64 >= 2 * n - 1)
                .await
        );
        assert_eq!(
            echo.closes().last().cloned().flatten(),
            Some((code, reason.to_string()))
        );
        proxy.wait_ended(2 * n - 1).await;

        // Upstream-initiated (scripted by the message text).
        let mut ws = proxy.connect("/").await;
        send_text(&mut ws, &format!("close:{code}:{reason}")).await;
        assert_eq!(expect_close(&mut ws).await, (code, reason.to_string()));
        // The client's stack replies; the stream then ends.
        assert!(next(&mut ws).await.is_none());
        proxy.wait_ended(2 * n).await;
        let text = proxy.scrape().await;
        let c = code.to_string();
        assert_eq!(
            closed(&text, &c, "client", "close_frame"),
            1.0,
            "{code} client"
        );
        assert_eq!(
            closed(&text, &c, "upstream", "close_frame"),
            1.0,
            "{code} upstream"
        );
    }
    let text = proxy.scrape().await;
    assert_eq!(
        metric(
            &text,
            "wspulse_session_duration_seconds_count",
            &[("class", "clean")]
        ),
        4.0
    );
    proxy.finish().await;
}

/// A client that vanishes (FIN, then RST) is counted 1006/client/eof and
/// 1006/client/reset; the upstream receives Close 1001 each time.
#[tokio::test]
async fn client_vanishing_is_counted_and_upstream_gets_1001() {
    let (echo, proxy) = echo_and_proxy().await;
    for (i, rst) in [false, true].into_iter().enumerate() {
        let mut ws = proxy.connect("/").await;
        send_text(&mut ws, "hello").await;
        assert_eq!(next(&mut ws).await, Some(Message::text("hello")));
        if rst {
            match ws.get_ref() {
                tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp.set_zero_linger().unwrap(),
                _ => unreachable!(),
            }
        }
        drop(ws);
        assert!(
            echo.wait_until(LIMIT, |e| e.closes().len() > i).await,
            "upstream got no Close"
        );
        assert_eq!(echo.closes()[i].as_ref().map(|c| c.0), Some(1001));
        proxy.wait_ended(i as u64 + 1).await;
    }
    let text = proxy.scrape().await;
    assert_eq!(closed(&text, "1006", "client", "eof"), 1.0);
    assert_eq!(closed(&text, "1006", "client", "reset"), 1.0);
    assert_eq!(
        metric(
            &text,
            "wspulse_session_duration_seconds_count",
            &[("class", "abnormal")]
        ),
        2.0
    );
    proxy.finish().await;
}

/// An upstream that vanishes (FIN or RST) gives the client Close 1014
/// instead of a bare 1006, counted 1006/upstream/eof and /reset.
#[tokio::test]
async fn upstream_vanishing_gives_client_1014() {
    let (_echo, proxy) = echo_and_proxy().await;
    for (i, (script, cause)) in [("drop", "eof"), ("rst", "reset")].into_iter().enumerate() {
        // A raw client: tokio-tungstenite itself refuses 1014 (it predates
        // the IANA registration) and would report 1002.
        let mut c = proxy.raw("/").await;
        c.send(true, TEXT, script.as_bytes()).await.unwrap();
        let close = c.expect_close().await.expect("no Close frame");
        assert_eq!(close.close_code(), Some(1014), "{script}");
        // The client answers; the proxy then closes the TCP connection.
        c.send(true, CLOSE, &close.payload).await.unwrap();
        c.expect_end().await.unwrap();
        proxy.wait_ended(i as u64 + 1).await;
        let text = proxy.scrape().await;
        assert_eq!(closed(&text, "1006", "upstream", cause), 1.0, "{script}");
    }
    proxy.finish().await;
}

/// Upstream says 403: the client gets 403 with its body, the rejection is
/// counted by status, and no session is counted.
#[tokio::test]
async fn upstream_rejection_status_reaches_client() {
    let echo = EchoServer::builder()
        .reject(403, "forbidden by upstream")
        .start()
        .await
        .unwrap();
    let proxy = start_proxy(settings(&echo.url())).await;
    let err = tokio_tungstenite::connect_async(proxy.url("/secret"))
        .await
        .unwrap_err();
    match err {
        tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), 403);
            assert_eq!(resp.body().as_deref(), Some(&b"forbidden by upstream"[..]));
        }
        other => panic!("expected HTTP 403, got {other}"),
    }
    let text = proxy.scrape().await;
    assert_eq!(
        metric(
            &text,
            "wspulse_handshake_rejections_total",
            &[("status", "403")]
        ),
        1.0
    );
    assert_eq!(metric(&text, "wspulse_connections_opened_total", &[]), 0.0);
    proxy.finish().await;
}

async fn expect_status(proxy: &Proxy, status: u16) {
    match tokio_tungstenite::connect_async(proxy.url("/")).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), status),
        Err(e) => panic!("expected HTTP {status}, got {e}"),
        Ok(_) => panic!("expected HTTP {status}, got a session"),
    }
}

/// Nothing listening upstream: 502 and reason="refused".
#[tokio::test]
async fn unreachable_upstream_is_502() {
    let port = closed_port().await;
    let proxy = start_proxy(settings(&format!("ws://127.0.0.1:{port}"))).await;
    expect_status(&proxy, 502).await;
    let text = proxy.scrape().await;
    assert_eq!(
        metric(
            &text,
            "wspulse_upstream_connect_failures_total",
            &[("reason", "refused")]
        ),
        1.0
    );
    assert_eq!(metric(&text, "wspulse_connections_opened_total", &[]), 0.0);
    proxy.finish().await;
}

/// An upstream named by host name (`localhost`) is resolved and relays like
/// an IP address, session after session (the resolution cache is unit-tested
/// in `resolver`; a name that does not resolve is not tried here, since how
/// fast that fails depends on the machine's DNS).
#[tokio::test]
async fn upstream_by_host_name_relays() {
    let echo = EchoServer::builder().start().await.unwrap();
    let proxy = start_proxy(settings(&format!("ws://localhost:{}", echo.addr().port()))).await;
    for i in 0..3 {
        let mut ws = proxy.connect("/").await;
        send_text(&mut ws, &format!("hello {i}")).await;
        assert_eq!(
            next(&mut ws).await,
            Some(Message::text(format!("hello {i}")))
        );
        ws.close(None).await.unwrap();
    }
    proxy.wait_ended(3).await;
    let text = proxy.scrape().await;
    assert_eq!(metric(&text, "wspulse_connections_opened_total", &[]), 3.0);
    assert_eq!(
        metric(&text, "wspulse_upstream_connect_failures_total", &[]),
        0.0
    );
    proxy.finish().await;
}

/// An upstream that accepts TCP but never answers the upgrade: 504 after
/// `upstream.connect_timeout`, reason="timeout".
#[tokio::test]
async fn hung_upstream_is_504() {
    let echo = EchoServer::builder().hang().start().await.unwrap();
    let mut s = settings(&echo.url());
    s.upstream.connect_timeout = Duration::from_millis(300);
    let proxy = start_proxy(s).await;
    expect_status(&proxy, 504).await;
    let text = proxy.scrape().await;
    assert_eq!(
        metric(
            &text,
            "wspulse_upstream_connect_failures_total",
            &[("reason", "timeout")]
        ),
        1.0
    );
    proxy.finish().await;
}

/// The upstream gets the client's path and query, end-to-end headers and
/// X-Forwarded-*, and picks the subprotocol the client gets.
#[tokio::test]
async fn handshake_forwards_path_headers_and_subprotocol() {
    let echo = EchoServer::builder()
        .protocols(&["v2.chat"])
        .start()
        .await
        .unwrap();
    let proxy = start_proxy(settings(&echo.url())).await;
    let mut req =
        tungstenite::client::IntoClientRequest::into_client_request(proxy.url("/room/7?token=abc"))
            .unwrap();
    let h = req.headers_mut();
    h.insert(
        "sec-websocket-protocol",
        "v1.chat, v2.chat".parse().unwrap(),
    );
    h.insert("cookie", "session=s1".parse().unwrap());
    h.insert("authorization", "Bearer t0k3n".parse().unwrap());
    h.insert("origin", "https://app.example".parse().unwrap());
    h.insert(
        "sec-websocket-extensions",
        "permessage-deflate".parse().unwrap(),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "v2.chat"
    );
    assert!(resp.headers().get("sec-websocket-extensions").is_none());
    let seen = echo.requests().pop().unwrap();
    assert_eq!(seen.uri, "/room/7?token=abc");
    assert_eq!(seen.header("cookie"), Some("session=s1"));
    assert_eq!(seen.header("authorization"), Some("Bearer t0k3n"));
    assert_eq!(seen.header("origin"), Some("https://app.example"));
    assert_eq!(
        seen.header("sec-websocket-protocol"),
        Some("v1.chat, v2.chat")
    );
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(proxy.addr.to_string().as_str())
    );
    // The offer goes on (compression passthrough); this upstream declines it.
    assert_eq!(
        seen.header("sec-websocket-extensions"),
        Some("permessage-deflate")
    );
    ws.close(None).await.unwrap();
    proxy.wait_ended(1).await;
    proxy.finish().await;
}

/// An upstream that declines every offered subprotocol (a 101 without
/// Sec-WebSocket-Protocol, allowed by RFC 6455 §4.2.2) still gives the client
/// a session, with no subprotocol.
#[tokio::test]
async fn upstream_declining_subprotocols_still_connects() {
    let (echo, proxy) = echo_and_proxy().await;
    // tokio-tungstenite's own client would refuse a 101 without the header,
    // so speak raw: the proxy's 101 must come without a subprotocol.
    let request = upgrade_request(proxy.addr, "/", "Sec-WebSocket-Protocol: x.unknown\r\n");
    let (session, head) = RawPeer::open(proxy.addr, request.as_bytes()).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("sec-websocket-protocol"),
        "{head}"
    );
    assert_eq!(
        echo.requests()[0].header("sec-websocket-protocol"),
        Some("x.unknown")
    );
    drop(session); // the client vanishes: the session ends
    proxy.wait_ended(1).await;
    let text = proxy.scrape().await;
    assert_eq!(
        metric(&text, "wspulse_upstream_connect_failures_total", &[]),
        0.0
    );
    proxy.finish().await;
}

/// Send a request that must not become a session; its answer's status
/// and text.
async fn refused(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String) {
    let (status, text) = exchange(addr, request).await.unwrap();
    (status.expect("no HTTP answer"), text)
}

/// Requests that are not upgrades get 426 (no Upgrade header) or 400, and
/// are counted; the proxy carries on.
#[tokio::test]
async fn non_upgrade_requests_are_refused_and_counted() {
    let (_echo, proxy) = echo_and_proxy().await;
    let (status, body) = refused(proxy.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 426, "{body}");
    let (status, _) = refused(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )
    .await;
    assert_eq!(status, 426, "missing version");
    let (status, _) = refused(
        proxy.addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = refused(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);
    let text = proxy.scrape().await;
    assert_eq!(
        metric(
            &text,
            "wspulse_handshake_rejections_total",
            &[("status", "426")]
        ),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            "wspulse_handshake_rejections_total",
            &[("status", "400")]
        ),
        2.0
    );
    // Still serving.
    let mut ws = proxy.connect("/").await;
    send_text(&mut ws, "still here").await;
    assert_eq!(next(&mut ws).await, Some(Message::text("still here")));
    ws.close(None).await.unwrap();
    proxy.wait_ended(1).await;
    proxy.finish().await;
}

/// `/healthz` and `/readyz` answer 200 while serving.
#[tokio::test]
async fn admin_endpoints_answer() {
    let (_echo, proxy) = echo_and_proxy().await;
    assert_eq!(proxy.admin_get("/healthz").await.0, 200);
    assert_eq!(proxy.admin_get("/readyz").await.0, 200);
    assert_eq!(proxy.admin_get("/nope").await.0, 404);
    let text = proxy.scrape().await;
    assert!(text.contains("# TYPE wspulse_connections_closed_total counter"));
    proxy.finish().await;
}

/// Messages for the backpressure tests: 1,024 of 64 KiB (64 MiB), each
/// stamped with its index so loss, duplication and reordering all show.
const FLOOD_COUNT: u64 = 1024;
const FLOOD_SIZE: usize = 64 * 1024;

fn normal_close() -> CloseFrame {
    CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    }
}

fn flood_message(i: u64) -> Message {
    let mut body = vec![i as u8; FLOOD_SIZE];
    body[..8].copy_from_slice(&i.to_le_bytes());
    Message::binary(body)
}

/// Read the whole flood from `rx`: every message whole, in order.
async fn expect_flood<S>(rx: &mut S)
where
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    for i in 0..FLOOD_COUNT {
        let msg = tokio::time::timeout(LIMIT, rx.next())
            .await
            .unwrap_or_else(|_| panic!("message {i} did not arrive in time"))
            .unwrap_or_else(|| panic!("stream ended before message {i}"))
            .unwrap();
        assert!(
            msg == flood_message(i),
            "message {i} arrived altered or out of order"
        );
    }
}

/// The session ended with the whole flood counted in `direction`.
async fn flood_counted_then_finish(proxy: Proxy, direction: &str) {
    proxy.wait_ended(1).await;
    let text = proxy.scrape().await;
    assert_eq!(
        metric(&text, "wspulse_messages_total", &[("direction", direction)]),
        FLOOD_COUNT as f64
    );
    proxy.finish().await;
}

/// A socket whose receive buffer stays small: a peer that reads nothing
/// then holds little in its kernel, and the stall reaches the proxy.
fn small_buffered_socket() -> tokio::net::TcpSocket {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket
}

/// How long a sender is given to (wrongly) push the whole flood past a
/// peer that reads nothing. The kernel buffers on the way hold a few MiB
/// and the proxy holds one message per leg, so 64 MiB cannot get through;
/// were the proxy to buffer without bound, it would within this window.
const STALL_WINDOW: Duration = Duration::from_secs(1);

/// A client that stops reading stops the proxy reading the upstream (the
/// proxy's memory stays bounded), and once it reads again the relay
/// resumes: all 64 MiB arrive whole and in order.
#[tokio::test]
async fn slow_client_backpressures_the_upstream_and_loses_nothing() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_url = format!("ws://{}", listener.local_addr().unwrap());
    let flooder = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        for i in 0..FLOOD_COUNT {
            ws.send(flood_message(i)).await.unwrap();
        }
        ws
    });
    let proxy = start_proxy(settings(&upstream_url)).await;
    let tcp = small_buffered_socket().connect(proxy.addr).await.unwrap();
    let (mut client, _) = tokio_tungstenite::client_async(proxy.url("/flood"), tcp)
        .await
        .unwrap();

    let mut flooder = flooder;
    assert!(
        tokio::time::timeout(STALL_WINDOW, &mut flooder)
            .await
            .is_err(),
        "the upstream sent 64 MiB to a client that reads nothing: the proxy buffered it"
    );
    expect_flood(&mut client).await;
    let mut upstream = tokio::time::timeout(LIMIT, flooder).await.unwrap().unwrap();
    upstream.close(Some(normal_close())).await.unwrap();
    // The client gets the upstream's Close (tungstenite answers it as it reads).
    let msg = tokio::time::timeout(LIMIT, client.next()).await.unwrap();
    assert!(matches!(msg, Some(Ok(Message::Close(Some(_))))), "{msg:?}");
    flood_counted_then_finish(proxy, "upstream_to_client").await;
}

/// The same the other way: an upstream that stops reading stops the proxy
/// reading the client, and nothing is lost when it reads again.
#[tokio::test]
async fn slow_upstream_backpressures_the_client_and_loses_nothing() {
    let socket = small_buffered_socket();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(16).unwrap();
    let upstream_url = format!("ws://{}", listener.local_addr().unwrap());
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        // Read nothing until the test says so.
        go_rx.await.unwrap();
        expect_flood(&mut ws).await;
        ws
    });
    let proxy = start_proxy(settings(&upstream_url)).await;
    let client = proxy.connect("/flood").await;
    let (mut tx, rx) = client.split();
    let mut sender = tokio::spawn(async move {
        for i in 0..FLOOD_COUNT {
            tx.send(flood_message(i)).await.unwrap();
        }
        tx
    });
    assert!(
        tokio::time::timeout(STALL_WINDOW, &mut sender)
            .await
            .is_err(),
        "the client sent 64 MiB to an upstream that reads nothing: the proxy buffered it"
    );
    go_tx.send(()).unwrap();
    let mut upstream = tokio::time::timeout(LIMIT, reader).await.unwrap().unwrap();
    let tx = tokio::time::timeout(LIMIT, sender).await.unwrap().unwrap();
    upstream.close(Some(normal_close())).await.unwrap();
    let mut client = tx.reunite(rx).unwrap();
    assert_eq!(expect_close(&mut client).await.0, 1000);
    flood_counted_then_finish(proxy, "client_to_upstream").await;
}
