//! Hostile and broken input: limits, protocol errors, floods, slowloris,
//! header tricks. Every case must close just the offending session with the
//! right code, count it, and leave the proxy and every other session alone.
//!
//! Each test runs a real proxy on 127.0.0.1:0 and drives it with the
//! kit's raw-frame peers, which write hand-built frames: tokio-tungstenite
//! refuses to send most of what is tested here. A "bystander" session,
//! opened before the abuse, proves after it that other sessions still relay.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use futures_util::SinkExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wspulse::explain::prom;

use wspulse::protocol::opcode::{BINARY as BIN, CLOSE, CONTINUATION as CONT, PING, TEXT};

/// Limits small enough to hit with a few bytes.
const MAX_MESSAGE: usize = 1024;
const MAX_FRAME: usize = 512;

fn limited(upstream_url: &str) -> wspulse::config::Settings {
    let mut s = settings(upstream_url);
    s.limits.max_message_size = MAX_MESSAGE;
    s.limits.max_frame_size = MAX_FRAME;
    s
}

/// A well-behaved session that must come through everything done to the
/// others: it echoes before and after, then closes with 1000.
struct Bystander {
    ws: Client,
    sent: usize,
}

impl Bystander {
    async fn open(proxy: &Proxy) -> Bystander {
        let mut b = Bystander {
            ws: proxy.connect("/bystander").await,
            sent: 0,
        };
        b.check().await;
        b
    }

    /// One round trip, text and binary.
    async fn check(&mut self) {
        self.sent += 1;
        let t = Message::text(format!("bystander #{} ✓", self.sent));
        let b = Message::binary(vec![self.sent as u8; 300]);
        self.ws.send(t.clone()).await.unwrap();
        self.ws.send(b.clone()).await.unwrap();
        assert_eq!(next(&mut self.ws).await, Some(t), "bystander text lost");
        assert_eq!(next(&mut self.ws).await, Some(b), "bystander binary lost");
    }

    /// Check once more, then close cleanly (counted 1000/client/close_frame).
    async fn close(mut self) {
        self.check().await;
        self.ws
            .close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await
            .unwrap();
        assert_eq!(expect_close(&mut self.ws).await.0, 1000);
    }
}

/// Connect a raw client through the proxy, write `bytes`, and return the
/// Close frame the proxy answers with; the proxy must then close the TCP.
async fn provoke(proxy: &Proxy, bytes: &[u8]) -> RawFrame {
    let mut c = proxy.raw("/hostile").await;
    // The proxy may give up before it has read everything: that is the point.
    let _ = c.write(bytes).await;
    let close = c
        .expect_close()
        .await
        .expect("no Close frame from the proxy");
    c.expect_end()
        .await
        .expect("the proxy kept the TCP connection open");
    close
}

/// A frame as a client (`mask`) or a server would send it.
fn frame(fin: bool, opcode: u8, payload: &[u8], mask: bool) -> Vec<u8> {
    encode_frame(fin, opcode, payload, mask.then_some(CLIENT_MASK))
}

/// Masked (client) frame.
fn cf(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(fin, opcode, payload, true)
}

/// A raw client through the proxy and the raw upstream leg it dialed.
async fn raw_pair(proxy: &Proxy, up: &RawUpstream) -> (RawPeer, RawPeer) {
    let (c, u) = tokio::join!(RawPeer::connect(proxy.addr, "/"), up.accept());
    (c.unwrap(), u.unwrap().0)
}

/// Set the reserved bits `rsv` (0..=7) on the first byte of a frame.
fn with_rsv(mut f: Vec<u8>, rsv: u8) -> Vec<u8> {
    f[0] |= (rsv & 7) << 4;
    f
}

/// A frame header declaring `len` payload bytes, and no payload.
fn header_only(opcode: u8, len: u64, mask: bool) -> Vec<u8> {
    let mut out = vec![0x80 | opcode, if mask { 0x80 | 127 } else { 127 }];
    out.extend_from_slice(&len.to_be_bytes());
    if mask {
        out.extend_from_slice(&[1, 2, 3, 4]);
    }
    out
}

/// `wspulse_connections_closed_total` series: (code, side, cause) → count.
fn closed_series(text: &str) -> BTreeMap<(String, String, String), f64> {
    let mut out = BTreeMap::new();
    for s in prom::parse(text) {
        if s.name == "wspulse_connections_closed_total" && s.value > 0.0 {
            let key = (
                s.label("code").to_string(),
                s.label("side").to_string(),
                s.label("cause").to_string(),
            );
            *out.entry(key).or_insert(0.0) += s.value;
        }
    }
    out
}

fn rejections(text: &str, status: &str) -> f64 {
    metric(
        text,
        "wspulse_handshake_rejections_total",
        &[("status", status)],
    )
}

fn key(code: &str, side: &str, cause: &str) -> (String, String, String) {
    (code.into(), side.into(), cause.into())
}

// ---------------------------------------------------------------------------
// Size limits
// ---------------------------------------------------------------------------

/// Over `max_frame_size` (one frame) or `max_message_size` (fragments that
/// add up) from the client: the client gets Close 1009, the upstream 1001,
/// counted 1009/client/message_too_big. A frame header declaring 2^40 bytes
/// is refused on the header alone (nothing follows it, so the proxy cannot
/// be waiting to buffer it). A message of exactly the limit still passes.
#[tokio::test]
async fn client_over_the_size_limits_gets_1009() {
    let echo = EchoServer::start().await.unwrap();
    let proxy = start_proxy(limited(&echo.url())).await;
    let mut bystander = Bystander::open(&proxy).await;

    // Exactly at the limit, in two fragments: relayed whole. (The echo
    // answers in one frame, so MAX_FRAME is the most that can come back;
    // the message limit's boundary is checked on the upstream side.)
    let mut c = proxy.raw("/").await;
    let half = vec![b'a'; MAX_FRAME / 2];
    c.send(false, BIN, &half).await.unwrap();
    c.send(true, CONT, &half).await.unwrap();
    let got = c.read_frame().await.unwrap();
    assert_eq!((got.opcode, got.payload.len()), (BIN, MAX_FRAME));
    c.send(true, CLOSE, &close_payload(1000, "")).await.unwrap();
    assert_eq!(c.expect_close().await.unwrap().close_code(), Some(1000));
    proxy.wait_ended(1).await;

    let big_frame = |op| cf(true, op, &vec![b'x'; MAX_FRAME + 1]);
    let fragments: Vec<u8> = [
        cf(false, TEXT, &[b'y'; 400]),
        cf(false, CONT, &[b'y'; 400]),
        cf(true, CONT, &[b'y'; 400]),
    ]
    .concat();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("text frame over max_frame_size", big_frame(TEXT)),
        ("binary frame over max_frame_size", big_frame(BIN)),
        ("fragments over max_message_size", fragments),
        (
            "header declaring 2^40 bytes",
            header_only(BIN, 1 << 40, true),
        ),
        (
            "header declaring u64::MAX bytes",
            header_only(TEXT, u64::MAX >> 1, true),
        ),
    ];
    for (i, (name, bytes)) in cases.iter().enumerate() {
        let close = provoke(&proxy, bytes).await;
        assert_eq!(close.close_code(), Some(1009), "{name}");
        proxy.wait_ended(2 + i as u64).await;
        assert!(
            echo.wait_until(LIMIT, |e| e.closes().len() > i + 1).await,
            "{name}: upstream got no Close"
        );
        assert_eq!(
            echo.closes()[i + 1].as_ref().map(|c| c.0),
            Some(1001),
            "{name}"
        );
        bystander.check().await;
    }
    let text = proxy.scrape().await;
    assert_eq!(
        closed(&text, "1009", "client", "message_too_big"),
        cases.len() as f64
    );
    bystander.close().await;
    proxy.wait_ended(cases.len() as u64 + 2).await;
    proxy.finish().await;
}

/// The same limits toward the upstream: a frame over `max_frame_size`
/// (the echo's `big:N`), fragments over `max_message_size` and a huge
/// declared length (raw upstream). The upstream gets 1009, the client 1014,
/// counted 1009/upstream/message_too_big.
#[tokio::test]
async fn upstream_over_the_size_limits_gets_1009() {
    // A frame over the limit from a real tungstenite upstream.
    let echo = EchoServer::start().await.unwrap();
    let proxy = start_proxy(limited(&echo.url())).await;
    let mut bystander = Bystander::open(&proxy).await;
    let mut c = proxy.raw("/").await;
    c.send(true, TEXT, format!("big:{}", MAX_FRAME + 1).as_bytes())
        .await
        .unwrap();
    let close = c.expect_close().await.expect("no Close");
    assert_eq!(close.close_code(), Some(1014));
    c.send(true, CLOSE, &close.payload).await.unwrap();
    c.expect_end().await.unwrap();
    assert!(echo.wait_until(LIMIT, |e| !e.closes().is_empty()).await);
    assert_eq!(echo.closes()[0].as_ref().map(|c| c.0), Some(1009));
    proxy.wait_ended(1).await;
    bystander.check().await;
    bystander.close().await;
    proxy.wait_ended(2).await;
    let text = proxy.scrape().await;
    assert_eq!(closed(&text, "1009", "upstream", "message_too_big"), 1.0);
    proxy.finish().await;

    // Fragments and a huge declared length from a raw upstream.
    let up = RawUpstream::bind().await.unwrap();
    let proxy = start_proxy(limited(&up.url())).await;
    // Exactly max_message_size in max_frame_size fragments: relayed whole.
    let (mut c, mut u) = raw_pair(&proxy, &up).await;
    u.write(&frame(false, TEXT, &[b'a'; MAX_FRAME], false))
        .await
        .unwrap();
    u.write(&frame(true, CONT, &[b'b'; MAX_FRAME], false))
        .await
        .unwrap();
    let got = c.read_frame().await.unwrap();
    assert_eq!((got.opcode, got.payload.len()), (TEXT, MAX_MESSAGE));
    c.send(true, CLOSE, &close_payload(1000, "")).await.unwrap();
    assert_eq!(u.expect_close().await.unwrap().close_code(), Some(1000));
    u.write(&frame(true, CLOSE, &close_payload(1000, ""), false))
        .await
        .unwrap();
    drop(u); // a server closes the TCP connection after the closing handshake
    assert_eq!(c.expect_close().await.unwrap().close_code(), Some(1000));
    proxy.wait_ended(1).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "fragments over max_message_size",
            [
                frame(false, BIN, &[1; 400], false),
                frame(false, CONT, &[2; 400], false),
                frame(true, CONT, &[3; 400], false),
            ]
            .concat(),
        ),
        (
            "header declaring 2^40 bytes",
            header_only(BIN, 1 << 40, false),
        ),
    ];
    for (i, (name, bytes)) in cases.iter().enumerate() {
        let (mut c, mut u) = raw_pair(&proxy, &up).await;
        u.write(bytes).await.unwrap();
        let to_upstream = u.expect_close().await.expect("upstream got no Close");
        assert_eq!(to_upstream.close_code(), Some(1009), "{name}");
        let to_client = c.expect_close().await.expect("client got no Close");
        assert_eq!(to_client.close_code(), Some(1014), "{name}");
        c.send(true, CLOSE, &to_client.payload).await.unwrap();
        assert!(c.expect_end().await.is_ok(), "{name}");
        proxy.wait_ended(i as u64 + 2).await;
    }
    let text = proxy.scrape().await;
    assert_eq!(
        closed(&text, "1009", "upstream", "message_too_big"),
        cases.len() as f64
    );
    proxy.finish().await;
}

// ---------------------------------------------------------------------------
// Protocol violations and invalid UTF-8
// ---------------------------------------------------------------------------

/// Close codes a peer may not send (RFC 6455 §7.4): each is a protocol error.
const FORBIDDEN_CLOSE_CODES: &[u16] = &[0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535];

/// Every framing violation of RFC 6455 §5, built as a client (`mask`) or
/// a server would, with the code the offender must get back.
fn violations(mask: bool) -> Vec<(String, Vec<u8>, u16)> {
    let f = |fin, op, p: &[u8]| frame(fin, op, p, mask);
    let mut v: Vec<(String, Vec<u8>, u16)> = vec![
        ("rsv1 set".into(), with_rsv(f(true, TEXT, b"hi"), 4), 1002),
        ("rsv2 set".into(), with_rsv(f(true, BIN, b"hi"), 2), 1002),
        ("rsv3 set".into(), with_rsv(f(true, PING, b""), 1), 1002),
        ("reserved data opcode 3".into(), f(true, 3, b"x"), 1002),
        (
            "reserved control opcode 0xB".into(),
            f(true, 0xB, b""),
            1002,
        ),
        ("ping over 125 bytes".into(), f(true, PING, &[7; 126]), 1002),
        (
            "close over 125 bytes".into(),
            f(true, CLOSE, &close_payload(1000, &"r".repeat(124))),
            1002,
        ),
        ("fragmented ping".into(), f(false, PING, b"x"), 1002),
        (
            "continuation without start".into(),
            f(true, CONT, b"x"),
            1002,
        ),
        (
            "new message inside a fragmented one".into(),
            [f(false, TEXT, b"a"), f(true, BIN, b"b")].concat(),
            1002,
        ),
        (
            "close with a 1-byte body".into(),
            f(true, CLOSE, &[3]),
            1002,
        ),
        (
            "close reason not UTF-8".into(),
            f(true, CLOSE, &[0x03, 0xe8, 0xff, 0xfe]),
            1007,
        ),
        (
            "text: invalid byte".into(),
            f(true, TEXT, &[0xc3, 0x28]),
            1007,
        ),
        ("text: overlong".into(), f(true, TEXT, &[0xc0, 0xaf]), 1007),
        (
            "text: surrogate".into(),
            f(true, TEXT, &[0xed, 0xa0, 0x80]),
            1007,
        ),
        (
            "text: invalid across fragments".into(),
            [f(false, TEXT, &[0xe2, 0x82]), f(true, CONT, &[0x28])].concat(),
            1007,
        ),
    ];
    for &code in FORBIDDEN_CLOSE_CODES {
        v.push((
            format!("close code {code}"),
            f(true, CLOSE, &close_payload(code, "x")),
            1002,
        ));
    }
    v
}

/// Every violation a client can commit: the client gets Close 1002 (1007
/// for invalid UTF-8), the upstream gets 1001, the session is counted
/// code/client/protocol_error, the proxy closes the TCP connection, and a
/// bystander session relays throughout. An unmasked client frame is the
/// extra client-only case. Forbidden close codes never become a label.
#[tokio::test]
async fn client_protocol_violations_get_1002_or_1007() {
    let echo = EchoServer::start().await.unwrap();
    let proxy = start_proxy(limited(&echo.url())).await;
    let mut bystander = Bystander::open(&proxy).await;
    let mut cases = violations(true);
    cases.push((
        "unmasked frame".into(),
        frame(true, TEXT, b"hi", false),
        1002,
    ));
    cases.push((
        "unmasked close".into(),
        frame(true, CLOSE, &close_payload(1000, ""), false),
        1002,
    ));
    let mut want: BTreeMap<u16, f64> = BTreeMap::new();
    for (i, (name, bytes, code)) in cases.iter().enumerate() {
        let close = provoke(&proxy, bytes).await;
        assert_eq!(close.close_code(), Some(*code), "{name}");
        *want.entry(*code).or_default() += 1.0;
        proxy.wait_ended(i as u64 + 1).await;
        assert!(
            echo.wait_until(LIMIT, |e| e.closes().len() > i).await,
            "{name}: upstream got no Close"
        );
        assert_eq!(
            echo.closes()[i].as_ref().map(|c| c.0),
            Some(1001),
            "{name}: upstream"
        );
        bystander.check().await;
    }
    let text = proxy.scrape().await;
    for (code, n) in &want {
        assert_eq!(
            closed(&text, &code.to_string(), "client", "protocol_error"),
            *n,
            "{code}"
        );
    }
    // Only the codes the proxy itself sent are labels.
    let codes: BTreeSet<String> = closed_series(&text).keys().map(|k| k.0.clone()).collect();
    assert_eq!(codes, BTreeSet::from(["1002".into(), "1007".into()]));
    bystander.close().await;
    proxy.wait_ended(cases.len() as u64 + 1).await;
    proxy.finish().await;
}

/// The same violations from the upstream (a raw upstream), plus a masked
/// server frame: the upstream gets 1002 / 1007, the client gets 1014 (bad
/// gateway), counted code/upstream/protocol_error.
#[tokio::test]
async fn upstream_protocol_violations_get_1002_or_1007() {
    let up = RawUpstream::bind().await.unwrap();
    let proxy = start_proxy(limited(&up.url())).await;
    let mut cases = violations(false);
    cases.push((
        "masked server frame".into(),
        frame(true, TEXT, b"hi", true),
        1002,
    ));
    let mut want: BTreeMap<u16, f64> = BTreeMap::new();
    for (i, (name, bytes, code)) in cases.iter().enumerate() {
        let (mut c, mut u) = raw_pair(&proxy, &up).await;
        // The session relays until the upstream misbehaves.
        c.send(true, TEXT, b"before").await.unwrap();
        let relayed = u.read_frame().await.unwrap();
        assert_eq!(relayed.payload, b"before", "{name}");
        u.write(bytes).await.unwrap();
        let to_upstream = u.expect_close().await.expect("upstream got no Close");
        assert_eq!(to_upstream.close_code(), Some(*code), "{name}");
        assert!(
            u.expect_end().await.is_ok(),
            "{name}: upstream leg not closed"
        );
        let to_client = c.expect_close().await.expect("client got no Close");
        assert_eq!(to_client.close_code(), Some(1014), "{name}");
        c.send(true, CLOSE, &to_client.payload).await.unwrap();
        assert!(c.expect_end().await.is_ok(), "{name}");
        *want.entry(*code).or_default() += 1.0;
        proxy.wait_ended(i as u64 + 1).await;
    }
    let text = proxy.scrape().await;
    for (code, n) in &want {
        assert_eq!(
            closed(&text, &code.to_string(), "upstream", "protocol_error"),
            *n,
            "{code}"
        );
    }
    let codes: BTreeSet<String> = closed_series(&text).keys().map(|k| k.0.clone()).collect();
    assert_eq!(codes, BTreeSet::from(["1002".into(), "1007".into()]));
    proxy.finish().await;
}

/// The echo upstream's `badutf8` script: a real tungstenite upstream sends
/// a text frame that is not UTF-8. The upstream gets 1007, the client 1014,
/// counted 1007/upstream/protocol_error; the bystander is untouched.
#[tokio::test]
async fn invalid_utf8_from_the_upstream_gets_1007() {
    let echo = EchoServer::start().await.unwrap();
    let proxy = start_proxy(settings(&echo.url())).await;
    let mut bystander = Bystander::open(&proxy).await;
    let mut c = proxy.raw("/").await;
    c.send(true, TEXT, b"badutf8").await.unwrap();
    let close = c.expect_close().await.expect("no Close");
    assert_eq!(close.close_code(), Some(1014));
    c.send(true, CLOSE, &close.payload).await.unwrap();
    c.expect_end().await.unwrap();
    assert!(echo.wait_until(LIMIT, |e| !e.closes().is_empty()).await);
    assert_eq!(echo.closes()[0].as_ref().map(|c| c.0), Some(1007));
    proxy.wait_ended(1).await;
    let text = proxy.scrape().await;
    assert_eq!(closed(&text, "1007", "upstream", "protocol_error"), 1.0);
    bystander.check().await;
    bystander.close().await;
    proxy.wait_ended(2).await;
    proxy.finish().await;
}

/// A client uploading far past the limit (1 MiB payload after a header
/// over `max_frame_size`) is refused on the header and still reads its
/// 1009, although it was still writing when the proxy gave up on it.
#[tokio::test]
async fn oversized_upload_still_reads_its_1009() {
    let echo = EchoServer::start().await.unwrap();
    let proxy = start_proxy(limited(&echo.url())).await;
    let mut c = proxy.raw("/").await;
    // Refused on the header: the proxy may close while this is still
    // being written, and the write then fails.
    let _ = c.write(&cf(true, BIN, &vec![b'z'; 1 << 20])).await;
    let close = c.expect_close().await.expect("no Close frame");
    assert_eq!(close.close_code(), Some(1009));
    proxy.wait_ended(1).await;
    let text = proxy.scrape().await;
    assert_eq!(closed(&text, "1009", "client", "message_too_big"), 1.0);
    proxy.finish().await;
}

// ---------------------------------------------------------------------------
// The HTTP handshake: oversized heads, non-HTTP bytes, slowloris, floods
// ---------------------------------------------------------------------------

/// Write `request`, read the answer to the end (the proxy must close);
/// returns the status (`None` when nothing came back) and the answer.
async fn answer(addr: std::net::SocketAddr, request: &[u8]) -> (Option<u16>, String) {
    exchange(addr, request)
        .await
        .expect("the proxy neither answered nor closed")
}

/// A request head over the 16 KiB limit (one 64 KiB header line, one
/// 1 MiB header line, 200 headers, a 20 KiB URI) gets 431 and
/// is counted status="431"; the proxy carries on.
#[tokio::test]
async fn oversized_request_heads_get_431() {
    let (_echo, proxy) = echo_and_proxy().await;
    let mut bystander = Bystander::open(&proxy).await;
    let header = |n| {
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(n)
        )
    };
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases = [
        ("64 KiB header line", header(64 * 1024)),
        ("1 MiB header line", header(1024 * 1024)),
        (
            "200 headers",
            format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n"),
        ),
        (
            "20 KiB URI",
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(20 * 1024)),
        ),
    ];
    for (name, req) in &cases {
        let (status, text) = answer(proxy.addr, req.as_bytes()).await;
        assert_eq!(status, Some(431), "{name}: {text}");
        bystander.check().await;
    }
    let text = proxy.scrape().await;
    assert_eq!(rejections(&text, "431"), cases.len() as f64);
    bystander.close().await;
    proxy.wait_ended(1).await;
    proxy.finish().await;
}

/// Bytes that are not HTTP (a TLS ClientHello on the plain port, binary
/// garbage, a malformed header name) get 400 and are counted; HTTP/1.0 and
/// a POST with a body get 426 (no Upgrade header). An HTTP/2 preface gets
/// 400 too (the listener speaks HTTP/1.1 only). Nothing here opens a session.
#[tokio::test]
async fn non_http_bytes_are_refused_and_counted() {
    let (_echo, proxy) = echo_and_proxy().await;
    let mut bystander = Bystander::open(&proxy).await;
    let mut hello = vec![0x16, 3, 1, 0, 0x50, 1, 0, 0, 0x4c, 3, 3];
    hello.extend_from_slice(&[0xab; 40]);
    hello.extend_from_slice(b"\r\n\r\n");
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("TLS ClientHello", hello, 400),
        ("binary garbage", b"\x00\x01\x02\xff\r\n\r\n".to_vec(), 400),
        (
            "bad header name",
            b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n".to_vec(),
            400,
        ),
        ("HTTP/1.0", b"GET / HTTP/1.0\r\n\r\n".to_vec(), 426),
        (
            "POST with a body",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc".to_vec(),
            426,
        ),
        (
            "HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            400,
        ),
    ];
    for (name, req, want) in &cases {
        let (status, text) = answer(proxy.addr, req).await;
        assert_eq!(status, Some(*want), "{name}: {text}");
        bystander.check().await;
    }
    let text = proxy.scrape().await;
    assert_eq!(
        rejections(&text, "400"),
        4.0,
        "400s, the HTTP/2 preface included"
    );
    assert_eq!(rejections(&text, "426"), 2.0);
    assert_eq!(metric(&text, "wspulse_connections_opened_total", &[]), 1.0);
    bystander.close().await;
    proxy.wait_ended(1).await;
    proxy.finish().await;
}

/// Slowloris: clients that open TCP and never finish their request head
/// (nothing at all; half a head; a head trickled one byte every 50 ms,
/// forever) are cut at `limits.handshake_timeout` (300 ms), not before and
/// not much after, and counted status="408". A client that connects during
/// the attack gets its session at once.
#[tokio::test]
async fn slowloris_is_cut_at_the_handshake_timeout() {
    let echo = EchoServer::start().await.unwrap();
    let mut s = settings(&echo.url());
    let timeout = Duration::from_millis(300);
    s.limits.handshake_timeout = timeout;
    let proxy = start_proxy(s).await;

    /// Returns how long the proxy kept the connection.
    async fn attack(addr: std::net::SocketAddr, first: &'static [u8], trickle: bool) -> Duration {
        let t = Instant::now();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(first).await.unwrap();
        let (mut r, mut w) = s.split();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut buf = [0u8; 1024];
        let cut = async {
            loop {
                tokio::select! {
                    n = r.read(&mut buf) => match n {
                        Ok(0) | Err(_) => return t.elapsed(),
                        Ok(_) => panic!("the proxy answered a request it never got"),
                    },
                    _ = tick.tick(), if trickle => {
                        if w.write_all(b"X").await.is_err() {
                            return t.elapsed();
                        }
                    }
                }
            }
        };
        tokio::time::timeout(LIMIT, cut)
            .await
            .expect("slowloris client was never cut")
    }
    let addr = proxy.addr;
    let attackers = [
        tokio::spawn(attack(addr, b"", false)),
        tokio::spawn(attack(addr, b"GET / HTTP/1.1\r\nHost: x\r\nUpgr", false)),
        tokio::spawn(attack(addr, b"GET / HTTP/1.1\r\nX-Slow: ", true)),
    ];
    // While they hang on, a real client is served without delay.
    let t = Instant::now();
    let mut b = Bystander::open(&proxy).await;
    assert!(
        t.elapsed() < timeout,
        "a real client waited behind the slowloris"
    );
    for a in attackers {
        let held = a.await.unwrap();
        assert!(held >= timeout, "cut early, after {held:?}");
        assert!(
            held < timeout + Duration::from_secs(3),
            "cut late, after {held:?}"
        );
    }
    let text = proxy.scrape().await;
    assert_eq!(rejections(&text, "408"), 3.0);
    b.check().await;
    b.close().await;
    proxy.wait_ended(1).await;
    proxy.finish().await;
}

/// A flood beyond `limits.max_connections` (5): 300 concurrent upgrade
/// attempts while 5 sessions are open. Each gets HTTP 503 (or, past the
/// 256 the proxy answers at once, a closed connection); all 300 are
/// counted status="503"; the 5 sessions keep relaying; and once one of
/// them ends, a new client gets in.
#[tokio::test]
async fn connection_flood_beyond_max_connections_gets_503() {
    let echo = EchoServer::start().await.unwrap();
    let mut s = settings(&echo.url());
    s.limits.max_connections = 5;
    let proxy = start_proxy(s).await;
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(Bystander::open(&proxy).await);
    }
    let request = upgrade_request(proxy.addr, "/flood", "");
    let flood: Vec<_> = (0..300)
        .map(|_| {
            let (addr, req) = (proxy.addr, request.clone());
            tokio::spawn(async move { answer(addr, req.as_bytes()).await })
        })
        .collect();
    let mut answered = 0;
    for f in flood {
        let (status, text) = f.await.unwrap();
        assert!(
            matches!(status, Some(503) | None),
            "flood got {status:?}: {text}"
        );
        answered += usize::from(status == Some(503));
    }
    assert!(answered >= 5, "only {answered} of the flood got a 503");
    let text = proxy.scrape().await;
    assert_eq!(rejections(&text, "503"), 300.0);
    assert_eq!(metric(&text, "wspulse_connections_opened_total", &[]), 5.0);
    for s in &mut sessions {
        s.check().await;
    }
    // One session ends: its slot is free again.
    sessions.pop().unwrap().close().await;
    proxy.wait_ended(1).await;
    sessions.push(Bystander::open(&proxy).await);
    for s in sessions {
        s.close().await;
    }
    proxy.wait_ended(6).await;
    proxy.finish().await;
}

// ---------------------------------------------------------------------------
// Security: the upstream comes from config, headers are filtered, labels
// stay bounded
// ---------------------------------------------------------------------------

/// The upstream is the configured one whatever the client says: an
/// absolute-form request URI (`GET ws://evil.example/chat?room=1`) and a
/// `Host` naming another listener still reach the configured echo
/// upstream, which sees the path and query only and its own Host; the other
/// listener is never dialed. Hop-by-hop headers (Connection and what it
/// names, Keep-Alive, Proxy-*, TE) are dropped, and of the extensions
/// offered only permessage-deflate goes on (compression passthrough); a client's X-Forwarded-For is appended to, its
/// X-Forwarded-Proto/-Host are replaced. The session then relays.
#[tokio::test]
async fn upstream_is_fixed_by_config_whatever_the_client_sends() {
    let echo = EchoServer::start().await.unwrap();
    let proxy = start_proxy(settings(&echo.url())).await;
    // A listener the client would like the proxy to dial.
    let decoy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    decoy.set_nonblocking(true).unwrap();
    let decoy_addr = decoy.local_addr().unwrap();
    let handshake = |target: &str, host: &str| {
        format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade, X-Secret-Hop\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: {CLIENT_KEY}\r\n\
             X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n\
             X-Forwarded-Host: spoofed.example\r\nX-Secret-Hop: 1\r\n\
             Keep-Alive: timeout=5\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n\
             Proxy-Connection: keep-alive\r\nTE: trailers\r\n\
             Sec-WebSocket-Extensions: x-webkit-deflate-frame, permessage-deflate\r\n\
             Cookie: a=1\r\n\r\n"
        )
    };
    let cases = [
        (
            "absolute-form URI",
            handshake("ws://evil.example/chat?room=1", "evil.example"),
            "/chat?room=1",
            "evil.example".to_string(),
        ),
        (
            "Host naming another listener",
            handshake("/chat", &decoy_addr.to_string()),
            "/chat",
            decoy_addr.to_string(),
        ),
        (
            "authority-looking path",
            handshake(&format!("//{decoy_addr}/x"), &decoy_addr.to_string()),
            &*format!("//{decoy_addr}/x").leak(),
            decoy_addr.to_string(),
        ),
    ];
    for (i, (name, req, path, host)) in cases.iter().enumerate() {
        let (mut c, head) = RawPeer::open(proxy.addr, req.as_bytes()).await.unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{name}: {head}");
        let lower = head.to_ascii_lowercase();
        assert!(
            !lower.contains("sec-websocket-extensions"),
            "{name}: the echo upstream declines permessage-deflate, so none is accepted"
        );
        let seen = echo.requests().pop().unwrap();
        assert_eq!(seen.uri, *path, "{name}");
        assert_eq!(
            seen.header("host"),
            Some(echo.addr().to_string().as_str()),
            "{name}"
        );
        assert_eq!(
            seen.header("x-forwarded-for"),
            Some("203.0.113.9, 127.0.0.1"),
            "{name}"
        );
        assert_eq!(seen.header("x-forwarded-proto"), Some("http"), "{name}");
        assert_eq!(
            seen.header("x-forwarded-host"),
            Some(host.as_str()),
            "{name}"
        );
        assert_eq!(seen.header("cookie"), Some("a=1"), "{name}");
        assert_eq!(seen.header("connection"), Some("Upgrade"), "{name}");
        assert_eq!(
            seen.header("sec-websocket-extensions"),
            Some("permessage-deflate"),
            "{name}: only the permessage-deflate offer goes on"
        );
        for gone in [
            "x-secret-hop",
            "keep-alive",
            "proxy-authorization",
            "proxy-connection",
            "te",
        ] {
            assert!(seen.header(gone).is_none(), "{name}: {gone} forwarded");
        }
        assert_eq!(
            seen.headers
                .iter()
                .filter(|(k, _)| k == "x-forwarded-for")
                .count(),
            1,
            "{name}"
        );
        // The session is with the echo upstream.
        c.send(true, TEXT, name.as_bytes()).await.unwrap();
        let echoed = c.read_frame().await.unwrap();
        assert_eq!(echoed.payload, name.as_bytes());
        c.send(true, CLOSE, &close_payload(1000, "")).await.unwrap();
        assert_eq!(c.expect_close().await.unwrap().close_code(), Some(1000));
        proxy.wait_ended(i as u64 + 1).await;
    }
    assert_eq!(
        decoy.accept().map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock),
        "the proxy dialed the address the client named"
    );
    assert_eq!(echo.requests().len(), cases.len());
    proxy.finish().await;
}

/// Label values every wspulse metric may have, whatever clients send.
fn assert_labels_bounded(text: &str, poison: &[&str]) {
    const CAUSES: &[&str] = &[
        "close_frame",
        "eof",
        "reset",
        "ping_timeout",
        "protocol_error",
        "message_too_big",
        "shutdown",
        "io_error",
        "internal",
    ];
    for sample in prom::parse(text) {
        let name = &sample.name;
        assert!(name.starts_with("wspulse_"), "foreign metric {name}");
        for (k, v) in &sample.labels {
            for p in poison {
                assert!(!v.contains(p), "{name}{{{k}={v:?}}} carries client text");
            }
            let ok = match k.as_str() {
                "code" => {
                    v.len() == 4 && v.parse::<u16>().is_ok_and(|c| (1000..=4999).contains(&c))
                }
                "side" => ["client", "upstream", "proxy"].contains(&v.as_str()),
                "cause" => CAUSES.contains(&v.as_str()),
                "route" => v == "default",
                "class" => ["clean", "abnormal", "rejected"].contains(&v.as_str()),
                "direction" => ["client_to_upstream", "upstream_to_client"].contains(&v.as_str()),
                "reason" => [
                    "refused",
                    "timeout",
                    "dns",
                    "tls",
                    "protocol",
                    "other",
                    "rate",
                    "per_client",
                    "max_connections",
                ]
                .contains(&v.as_str()),
                "status" => v.len() == 3 && v.parse::<u16>().is_ok(),
                "outcome" => ["closed", "cut"].contains(&v.as_str()),
                "le" => v == "+Inf" || v.parse::<f64>().is_ok(),
                _ => false,
            };
            assert!(ok, "{name}: unexpected label {k}={v:?}");
        }
    }
}

/// No client-controlled string becomes a label. Sessions on weird paths
/// (percent-encoded bytes, quotes, a 4 KiB path, `/metrics`) end with
/// weird close reasons (quotes, newlines, a fake exposition line, 123
/// bytes of emoji) and codes from both sides, forbidden ones included.
/// Every label in /metrics stays in its known set, the closed-total series
/// are exactly the expected (code, side, cause) triples, and the
/// `/closures` JSON still parses.
#[tokio::test]
async fn no_client_string_becomes_a_metric_label() {
    let echo = EchoServer::start().await.unwrap();
    let proxy = start_proxy(settings(&echo.url())).await;
    let long_path = format!("/{}", "p".repeat(4000));
    let paths = [
        "/%F0%9F%92%A3?q=%00%22",
        "/a%22b%7D%0A",
        "/metrics",
        "/../../etc/passwd",
        long_path.as_str(),
    ];
    let reasons = [
        "\"} 1\n# HELP evil",
        "route=\"x\",code=\"9\"",
        "\u{1F4A3}".repeat(30).leak() as &str, // 120 bytes
        "plain",
    ];
    let poison = ["\u{1F4A3}", "evil", "passwd", "pppp", "%22", "\"", "9\""];
    let mut n = 0u64;
    // Client-initiated closes with allowed and forbidden codes.
    for (i, path) in paths.iter().enumerate() {
        for (j, code) in [1000u16, 4321, 3000, 1011, 5000, 1005, 0, 65535]
            .into_iter()
            .enumerate()
        {
            let reason = reasons[(i + j) % reasons.len()];
            let mut c = proxy.raw(path).await;
            c.send(true, CLOSE, &close_payload(code, reason))
                .await
                .unwrap();
            let back = c.expect_close().await.unwrap();
            let want = if wspulse::protocol::code_allowed_on_wire(code) {
                code
            } else {
                1002
            };
            assert_eq!(back.close_code(), Some(want), "{path} {code}");
            n += 1;
            proxy.wait_ended(n).await;
        }
    }
    // Upstream-initiated closes with allowed and forbidden codes.
    for (i, code) in [4999u16, 1000, 5000, 999].into_iter().enumerate() {
        let mut c = proxy.raw(paths[i]).await;
        c.send(
            true,
            TEXT,
            format!("close:{code}:{}", reasons[i]).as_bytes(),
        )
        .await
        .unwrap();
        let back = c.expect_close().await.unwrap();
        let want = if wspulse::protocol::code_allowed_on_wire(code) {
            code
        } else {
            1014
        };
        assert_eq!(back.close_code(), Some(want), "upstream {code}");
        c.send(true, CLOSE, &back.payload).await.unwrap();
        n += 1;
        proxy.wait_ended(n).await;
    }
    let text = proxy.scrape().await;
    assert_labels_bounded(&text, &poison);
    let series: BTreeSet<_> = closed_series(&text).into_keys().collect();
    let want: BTreeSet<_> = [
        key("1000", "client", "close_frame"),
        key("4321", "client", "close_frame"),
        key("3000", "client", "close_frame"),
        key("1011", "client", "close_frame"),
        key("1002", "client", "protocol_error"),
        key("4999", "upstream", "close_frame"),
        key("1000", "upstream", "close_frame"),
        key("1002", "upstream", "protocol_error"),
    ]
    .into();
    assert_eq!(series, want);
    assert_eq!(closed(&text, "1002", "client", "protocol_error"), 20.0);
    let (status, body) = proxy.admin_get("/closures?limit=1000").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("/closures is not JSON");
    assert!(
        json.to_string().contains("etc/passwd"),
        "paths are kept in /closures"
    );
    proxy.finish().await;
}

// ---------------------------------------------------------------------------
// Many sessions at once
// ---------------------------------------------------------------------------

/// Send messages `s{i} m{j}` for `j` in `range`, pipelined, then read
/// their echoes: all there, in order.
async fn numbered_round(c: &mut RawPeer, i: usize, range: std::ops::Range<usize>) {
    for j in range.clone() {
        c.send(true, TEXT, format!("s{i} m{j}").as_bytes())
            .await
            .unwrap();
    }
    for j in range {
        let f = c.read_frame().await.expect("echo lost");
        assert_eq!(
            (f.opcode, String::from_utf8(f.payload).unwrap()),
            (TEXT, format!("s{i} m{j}")),
            "session {i}"
        );
    }
}

/// 500 sessions at once. After all are open, half of them break the rules
/// (every violation above, round robin: framing → 1002, invalid UTF-8 →
/// 1007, too big → 1009) while the other half relay 20 numbered messages
/// each, 10 before and 10 after the abuse: every message arrives, in order.
/// Then opened == sum(closed) + active, and the closed counts are exactly
/// what was injected.
#[tokio::test]
async fn five_hundred_sessions_half_hostile() {
    const N: usize = 500;
    const MSGS: usize = 20;
    let started = Instant::now();
    let echo = EchoServer::start().await.unwrap();
    let proxy = start_proxy(limited(&echo.url())).await;
    let mut abuse = violations(true);
    abuse.push((
        "unmasked frame".into(),
        frame(true, TEXT, b"hi", false),
        1002,
    ));
    abuse.push((
        "frame over max_frame_size".into(),
        cf(true, BIN, &[0; MAX_FRAME + 1]),
        1009,
    ));
    abuse.push((
        "message over max_message_size".into(),
        [cf(false, TEXT, &[b'a'; 500]), cf(true, CONT, &[b'b'; 600])].concat(),
        1009,
    ));
    abuse.push((
        "declared 2^40 bytes".into(),
        header_only(BIN, 1 << 40, true),
        1009,
    ));
    let abuse = std::sync::Arc::new(abuse);
    let opened = std::sync::Arc::new(tokio::sync::Barrier::new(N));
    let abused = std::sync::Arc::new(tokio::sync::Barrier::new(N));
    let addr = proxy.addr;
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let (abuse, opened, abused) = (abuse.clone(), opened.clone(), abused.clone());
            tokio::spawn(async move {
                let mut c = RawPeer::connect(addr, &format!("/s{i}")).await.unwrap();
                let wait = |b: std::sync::Arc<tokio::sync::Barrier>| async move {
                    tokio::time::timeout(LIMIT, b.wait())
                        .await
                        .expect("barrier");
                };
                wait(opened).await;
                if i % 2 == 1 {
                    let (name, bytes, code) = &abuse[(i / 2) % abuse.len()];
                    // The proxy may give up before it has read everything.
                    let _ = c.write(bytes).await;
                    let close = c.expect_close().await.expect("no Close");
                    assert_eq!(close.close_code(), Some(*code), "session {i}: {name}");
                    assert!(c.expect_end().await.is_ok(), "session {i}: {name}");
                    wait(abused).await;
                    return Some(*code);
                }
                numbered_round(&mut c, i, 0..MSGS / 2).await;
                wait(abused).await;
                numbered_round(&mut c, i, MSGS / 2..MSGS).await;
                c.send(true, CLOSE, &close_payload(1000, "")).await.unwrap();
                let close = c.expect_close().await.expect("no Close");
                assert_eq!(close.close_code(), Some(1000), "session {i}");
                assert!(c.expect_end().await.is_ok(), "session {i}");
                None
            })
        })
        .collect();
    let mut injected: BTreeMap<u16, f64> = BTreeMap::new();
    for t in tasks {
        if let Some(code) = t.await.unwrap() {
            *injected.entry(code).or_default() += 1.0;
        }
    }
    proxy.wait_ended(N as u64).await;
    let text = proxy.scrape().await;
    assert_eq!(
        metric(&text, "wspulse_connections_opened_total", &[]),
        N as f64
    );
    assert_eq!(metric(&text, "wspulse_connections_active", &[]), 0.0);
    let want_closed: BTreeMap<_, _> = injected
        .iter()
        .map(|(code, n)| {
            let cause = if *code == 1009 {
                "message_too_big"
            } else {
                "protocol_error"
            };
            (key(&code.to_string(), "client", cause), *n)
        })
        .chain([(key("1000", "client", "close_frame"), (N / 2) as f64)])
        .collect();
    assert_eq!(closed_series(&text), want_closed);
    let relayed = (N / 2 * MSGS) as f64;
    for dir in ["client_to_upstream", "upstream_to_client"] {
        assert_eq!(
            metric(&text, "wspulse_messages_total", &[("direction", dir)]),
            relayed,
            "{dir}"
        );
    }
    assert!(
        echo.wait_until(LIMIT, |e| e.closes().len() == N).await,
        "the upstream did not get a Close for every session"
    );
    let to_upstream: BTreeMap<u16, usize> =
        echo.closes().iter().fold(BTreeMap::new(), |mut m, c| {
            *m.entry(c.as_ref().map_or(1005, |c| c.0)).or_default() += 1;
            m
        });
    assert_eq!(to_upstream, BTreeMap::from([(1000, N / 2), (1001, N / 2)]));
    proxy.finish().await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// Logging
// ---------------------------------------------------------------------------

/// Log lines of the current thread. One global subscriber (wspulse at
/// debug) writes each event to the buffer of the thread that emitted it, if
/// that thread asked for a capture: tests run on threads of their own, and
/// a `#[tokio::test]` runtime runs the proxy's tasks on the test's thread.
/// (A per-test `set_default` subscriber would be flaky here: tracing caches
/// callsite interest process-wide while other tests hit the same callsites.)
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

thread_local! {
    static CAPTURE: std::cell::RefCell<Option<Captured>> = const { std::cell::RefCell::new(None) };
}

struct ThreadWriter;

impl std::io::Write for ThreadWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|c| {
            if let Some(c) = &*c.borrow() {
                c.0.lock().unwrap().extend_from_slice(b);
            }
        });
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Start capturing this thread's log lines.
    fn start() -> Captured {
        static INIT: std::sync::Once = std::sync::Once::new();
        INIT.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter("wspulse=debug")
                .with_ansi(false)
                .with_writer(|| ThreadWriter)
                .finish();
            tracing::subscriber::set_global_default(subscriber).unwrap();
        });
        let c = Captured::default();
        CAPTURE.with(|t| *t.borrow_mut() = Some(c.clone()));
        c
    }

    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The one line containing every needle (panics with the log otherwise).
    fn expect(&self, needles: &[&str]) -> String {
        let lines = self.lines();
        lines
            .iter()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .cloned()
            .unwrap_or_else(|| panic!("no log line with {needles:?} in:\n{}", lines.join("\n")))
    }
}

/// Every refusal is logged (at debug or info) with what it was: a
/// protocol violation and an oversized message (info "session ended" with
/// code, side and cause), a slowloris (408), a head over 16 KiB (431), a
/// non-upgrade request (426/400) and a client over max_connections (503).
#[tokio::test]
async fn every_refusal_is_logged() {
    let logs = Captured::start();

    let echo = EchoServer::start().await.unwrap();
    let mut s = limited(&echo.url());
    s.limits.handshake_timeout = Duration::from_millis(300);
    s.limits.max_connections = 1;
    let proxy = start_proxy(s).await;

    assert_eq!(
        provoke(&proxy, &cf(true, 3, b"x")).await.close_code(),
        Some(1002)
    );
    proxy.wait_ended(1).await;
    logs.expect(&[
        "session ended",
        "code=1002",
        "side=\"client\"",
        "cause=\"protocol_error\"",
    ]);
    let big = cf(true, BIN, &[0; MAX_FRAME + 1]);
    assert_eq!(provoke(&proxy, &big).await.close_code(), Some(1009));
    proxy.wait_ended(2).await;
    logs.expect(&["session ended", "code=1009", "cause=\"message_too_big\""]);

    let (status, _) = answer(proxy.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, Some(426));
    logs.expect(&["DEBUG", "426"]);
    let (status, _) = answer(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, Some(400));
    logs.expect(&["DEBUG", "400"]);
    let head = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
    assert_eq!(answer(proxy.addr, head.as_bytes()).await.0, Some(431));
    logs.expect(&["DEBUG", "status=431", "too large"]);
    assert_eq!(answer(proxy.addr, b"GET / HTTP/1.1\r\n").await.0, None);
    logs.expect(&["DEBUG", "handshake timeout"]);

    // max_connections = 1: while one session is open, the next gets 503.
    let b = Bystander::open(&proxy).await;
    let req = upgrade_request(proxy.addr, "/", "");
    assert_eq!(answer(proxy.addr, req.as_bytes()).await.0, Some(503));
    logs.expect(&["DEBUG", "503"]);
    b.close().await;
    proxy.wait_ended(3).await;
    proxy.finish().await;
}

/// 1014 (bad gateway) is a registered close code (IANA, RFC 6455 §7.4.2
/// registry) and `closure::code_allowed_on_wire` accepts it: an upstream
/// that is itself a gateway (another wspulse, say) may send it. It should
/// be forwarded to the client and counted 1014/upstream/close_frame.
/// (tungstenite 0.30 refuses 1014; wspulse's own frame layer does not.)
#[tokio::test]
async fn upstream_close_1014_is_a_close_frame() {
    let up = RawUpstream::bind().await.unwrap();
    let proxy = start_proxy(settings(&up.url())).await;
    let (mut c, mut u) = raw_pair(&proxy, &up).await;
    u.write(&frame(
        true,
        CLOSE,
        &close_payload(1014, "backend gone"),
        false,
    ))
    .await
    .unwrap();
    let to_client = c.expect_close().await.expect("client got no Close");
    assert_eq!(to_client.close_code(), Some(1014));
    assert_eq!(
        &to_client.payload[2..],
        b"backend gone",
        "reason not forwarded"
    );
    let echoed = u.expect_close().await.expect("upstream got no Close reply");
    assert_eq!(
        echoed.close_code(),
        Some(1014),
        "closing handshake changed the code"
    );
    c.send(true, CLOSE, &to_client.payload).await.unwrap();
    drop(u);
    proxy.wait_ended(1).await;
    let text = proxy.scrape().await;
    assert_eq!(closed(&text, "1014", "upstream", "close_frame"), 1.0);
    proxy.finish().await;
}
