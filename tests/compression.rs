//! permessage-deflate passthrough over real sockets, with raw peers that
//! can send what libraries will not: RSV1 where it may and may not be.
//! (The third-party peers that really compress are in e2e/test_compression.py.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use support::*;
use wspulse::config::CompressionMode;
use wspulse::protocol::opcode::{BINARY, CONTINUATION, PING, TEXT};

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
const ANSWER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=12\r\n";

/// A client that offered permessage-deflate, the raw upstream that
/// accepted it, and the 101 head the client got.
async fn compressed_pair(proxy: &Proxy, up: &RawUpstream) -> (RawPeer, RawPeer, String, String) {
    let request = upgrade_request(proxy.addr, "/z", OFFER);
    let ((client, head), upstream) = tokio::join!(
        async { RawPeer::open(proxy.addr, request.as_bytes()).await.unwrap() },
        async { up.accept_with(ANSWER).await.unwrap() }
    );
    let (upstream, upstream_saw) = upstream;
    (client, upstream, head, upstream_saw)
}

/// A frame with RSV1 set, masked as a client sends it.
fn rsv1_client(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = encode_frame(fin, opcode, payload, Some(CLIENT_MASK));
    f[0] |= 0x40;
    f
}

#[tokio::test]
async fn the_offer_and_the_answer_pass_through_and_rsv1_frames_cross_untouched() {
    let up = RawUpstream::bind().await.unwrap();
    let proxy = start_proxy(settings(&up.url())).await;
    let (mut c, mut u, head, upstream_saw) = compressed_pair(&proxy, &up).await;
    assert!(
        upstream_saw
            .contains("sec-websocket-extensions: permessage-deflate; client_max_window_bits\r\n"),
        "{upstream_saw}"
    );
    assert!(
        head.contains(
            "sec-websocket-extensions: permessage-deflate; client_max_window_bits=12\r\n"
        ),
        "{head}"
    );
    // Deflated bytes (not UTF-8) in a compressed text message, and a
    // compressed message in two fragments: RSV1 only on the first.
    let deflated = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    c.write(&rsv1_client(true, TEXT, &deflated)).await.unwrap();
    let f = u.read_frame().await.unwrap();
    assert_eq!(
        (f.rsv, f.opcode, f.payload.as_slice()),
        (4, TEXT, &deflated[..])
    );
    let mut two = rsv1_client(false, BINARY, &deflated[..3]);
    two.extend(encode_frame(
        true,
        CONTINUATION,
        &deflated[3..],
        Some(CLIENT_MASK),
    ));
    c.write(&two).await.unwrap();
    let f = u.read_frame().await.unwrap();
    assert_eq!(
        (f.rsv, f.fin, f.opcode, f.payload.as_slice()),
        (4, true, BINARY, &deflated[..])
    );
    // And the other way.
    let mut back = encode_frame(true, BINARY, &deflated, None);
    back[0] |= 0x40;
    u.write(&back).await.unwrap();
    let f = c.read_frame().await.unwrap();
    assert_eq!(
        (f.rsv, f.opcode, f.payload.as_slice()),
        (4, BINARY, &deflated[..])
    );

    c.send(
        true,
        wspulse::protocol::opcode::CLOSE,
        &close_payload(1000, ""),
    )
    .await
    .unwrap();
    assert_eq!(u.expect_close().await.unwrap().close_code(), Some(1000));
    proxy.wait_ended(1).await;
    let text = proxy.scrape().await;
    assert_eq!(metric(&text, "wspulse_compressed_sessions_total", &[]), 1.0);
    assert_eq!(
        metric(
            &text,
            "wspulse_compressed_messages_total",
            &[("direction", "client_to_upstream")]
        ),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            "wspulse_compressed_messages_total",
            &[("direction", "upstream_to_client")]
        ),
        1.0
    );
    // Wire bytes: 7 + 7 one way, 7 back.
    assert_eq!(
        metric(
            &text,
            "wspulse_message_bytes_total",
            &[("direction", "client_to_upstream")]
        ),
        14.0
    );
    let (_, closures) = proxy.admin_get("/closures").await;
    assert!(
        closures.contains("\"compression\": \"permessage-deflate\""),
        "{closures}"
    );
}

/// RSV1 on a ping, on a continuation, or on a leg without the extension:
/// 1002 to the sender, counted, and a session beside it is unaffected.
#[tokio::test]
async fn rsv1_where_deflate_does_not_put_it_is_a_protocol_error() {
    let up = RawUpstream::bind().await.unwrap();
    let proxy = start_proxy(settings(&up.url())).await;
    // A bystander: negotiated, relaying throughout.
    let (mut bc, mut bu, _, _) = compressed_pair(&proxy, &up).await;
    let mut continuation = rsv1_client(false, TEXT, b"a");
    continuation.extend(rsv1_client(true, CONTINUATION, b"b"));
    let cases = [
        (true, rsv1_client(true, PING, b"p")),
        (true, continuation),
        (false, rsv1_client(true, TEXT, b"x")),
    ];
    for (i, (negotiated, bytes)) in cases.into_iter().enumerate() {
        let (mut c, mut u) = if negotiated {
            let (c, u, _, _) = compressed_pair(&proxy, &up).await;
            (c, u)
        } else {
            let (c, u) = tokio::join!(RawPeer::connect(proxy.addr, "/"), up.accept());
            (c.unwrap(), u.unwrap().0)
        };
        let _ = c.write(&bytes).await;
        let close = c.expect_close().await.unwrap();
        assert_eq!(close.close_code(), Some(1002), "case {i}");
        assert_eq!(
            u.expect_close().await.unwrap().close_code(),
            Some(1001),
            "case {i}"
        );
        // The bystander still relays a compressed message both ways.
        bc.write(&rsv1_client(true, BINARY, b"zz")).await.unwrap();
        let f = bu.read_frame().await.unwrap();
        assert_eq!((f.rsv, f.payload.as_slice()), (4, &b"zz"[..]), "case {i}");
    }
    proxy.wait_ended(3).await;
    let text = proxy.scrape().await;
    assert_eq!(closed(&text, "1002", "client", "protocol_error"), 3.0);
    assert_invariant(&text);
}

/// An upstream that answers with an extension the client never offered
/// (or in mode "off", where nothing is offered) gets the client a 502,
/// counted as a protocol failure of the upstream connect.
#[tokio::test]
async fn an_answer_nobody_offered_is_a_502() {
    for (mode, offer) in [
        (CompressionMode::Passthrough, ""),
        (CompressionMode::Off, OFFER),
    ] {
        let up = RawUpstream::bind().await.unwrap();
        let mut s = settings(&up.url());
        s.compression.mode = mode;
        let proxy = start_proxy(s).await;
        let request = upgrade_request(proxy.addr, "/", offer);
        let (answer, accepted) = tokio::join!(
            exchange(proxy.addr, request.as_bytes()),
            up.accept_with(ANSWER)
        );
        let (_, upstream_saw) = accepted.unwrap();
        assert!(
            !upstream_saw
                .to_ascii_lowercase()
                .contains("sec-websocket-extensions")
        );
        let (status, _) = answer.unwrap();
        assert_eq!(status, Some(502), "{mode:?}");
        let text = proxy.scrape().await;
        assert_eq!(
            metric(
                &text,
                "wspulse_upstream_connect_failures_total",
                &[("reason", "protocol")]
            ),
            1.0
        );
    }
}
