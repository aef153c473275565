use std::task::Context;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;

use super::frame::{Header, apply_mask, mask_key};
use super::*;
use crate::protocol::encode_frame;

/// Masking is byte `i` XOR key byte `i % 4` (RFC 6455 §5.3), at every
/// length around the word size, and the RFC's own example (§5.7).
#[test]
fn mask_matches_the_rfc_definition() {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut hello = *b"Hello";
    apply_mask(&mut hello, key);
    assert_eq!(hello, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    for len in 0..40 {
        let plain: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(41)).collect();
        let mut masked = plain.clone();
        apply_mask(&mut masked, key);
        for (i, (m, p)) in masked.iter().zip(&plain).enumerate() {
            assert_eq!(*m, p ^ key[i % 4], "length {len}, byte {i}");
        }
    }
}

/// Keys drawn ahead are each handed out once, across refills: 40 keys
/// (two and a half batches) are all different. Two equal keys among
/// 40 random ones: about 2 in 10 million.
#[test]
fn mask_keys_are_fresh_across_batches() {
    let keys: Vec<[u8; 4]> = (0..40).map(|_| mask_key()).collect();
    let distinct: std::collections::HashSet<_> = keys.iter().collect();
    assert_eq!(distinct.len(), keys.len(), "{keys:?}");
}

/// The last bytes (our Close echo) reach the peer even when the peer
/// sent something after its Close that we never read: without the
/// shutdown, the close turns into a reset that discards the bytes
/// `MSG_MORE` held back (Autobahn 7.1.3 through wspulse, once).
#[cfg(any(target_os = "linux", target_os = "android"))]
#[tokio::test]
async fn last_bytes_survive_unread_input_at_close() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    client.write_all(b"ping after close").await.unwrap();
    // Arrived, and left unread.
    server.readable().await.unwrap();
    let mut server = Conn::from(server);
    let n = std::future::poll_fn(|cx| server.poll_write_last(cx, b"CLOSE"))
        .await
        .unwrap();
    assert_eq!(n, 5);
    server.end_write();
    drop(server);
    let mut got = [0u8; 5];
    client.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"CLOSE");
}

const LIMITS: Limits = Limits {
    max_message_size: 1 << 20,
    max_frame_size: 1 << 16,
};
const KEY: Option<[u8; 4]> = Some([1, 2, 3, 4]);

/// A server-role leg (the proxy's client leg) and the raw peer end.
fn server() -> (WsStream, DuplexStream) {
    let (a, b) = tokio::io::duplex(1 << 20);
    (WsStream::new(a, Role::Server, LIMITS, &[]), b)
}

fn client() -> (WsStream, DuplexStream) {
    let (a, b) = tokio::io::duplex(1 << 20);
    (WsStream::new(a, Role::Client, LIMITS, &[]), b)
}

/// What a test sees of an incoming item, owned.
#[derive(Debug, PartialEq)]
enum Got {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

impl Got {
    fn text(s: &str) -> Got {
        Got::Text(s.to_owned())
    }
}

/// The next item, as a [`Got`], within 5 s.
async fn next(ws: &mut WsStream) -> Option<Result<Got, Error>> {
    let item = tokio::time::timeout(std::time::Duration::from_secs(5), incoming(ws))
        .await
        .expect("a message or the end in time");
    item.map(|r| {
        r.map(|i| match i {
            Incoming::Data { text: true, .. } => {
                Got::Text(String::from_utf8(ws.data().to_vec()).unwrap())
            }
            Incoming::Data { text: false, .. } => Got::Binary(ws.data().to_vec()),
            Incoming::Message {
                text: true, data, ..
            } => Got::Text(String::from_utf8(data.to_vec()).unwrap()),
            Incoming::Message {
                text: false, data, ..
            } => Got::Binary(data.to_vec()),
            Incoming::Ping(p) => Got::Ping(p.to_vec()),
            Incoming::Pong(p) => Got::Pong(p.to_vec()),
            Incoming::Close(f) => Got::Close(f.map(|f| (f.code, f.reason))),
        })
    })
}

async fn flush(ws: &mut WsStream) -> Result<(), Error> {
    std::future::poll_fn(|cx| ws.poll_flush(cx)).await
}

/// Read one unmasked frame (what a server leg writes): (fin+opcode byte, payload).
async fn read_frame(peer: &mut DuplexStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    peer.read_exact(&mut h).await.unwrap();
    assert_eq!(h[1] & 0x80, 0, "a server's frames are not masked");
    let len = match h[1] & 0x7f {
        126 => peer.read_u16().await.unwrap() as usize,
        127 => peer.read_u64().await.unwrap() as usize,
        n => n as usize,
    };
    let mut p = vec![0; len];
    peer.read_exact(&mut p).await.unwrap();
    (h[0], p)
}

#[test]
fn header_parse_needs_the_whole_header() {
    let f = encode_frame(true, BINARY, &[7; 300], KEY);
    for cut in 0..8 {
        assert_eq!(Header::parse(&f[..cut]), None, "cut at {cut}");
    }
    let (h, size) = Header::parse(&f).unwrap();
    assert_eq!(size, 8);
    assert_eq!((h.fin, h.opcode, h.len, h.mask), (true, BINARY, 300, KEY));
    let big = [0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(Header::parse(&big).unwrap().0.len, 1 << 63);
}

#[test]
fn mask_is_an_involution_at_every_length_and_offset() {
    for len in 0..40 {
        let data: Vec<u8> = (0..len as u8).collect();
        let mut m = data.clone();
        apply_mask(&mut m, [9, 8, 7, 6]);
        let expect: Vec<u8> = data
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ [9, 8, 7, 6][i % 4])
            .collect();
        assert_eq!(m, expect);
        apply_mask(&mut m, [9, 8, 7, 6]);
        assert_eq!(m, data);
    }
}

#[tokio::test]
async fn reads_masked_messages_and_writes_unmasked_as_server() {
    let (mut ws, mut peer) = server();
    let mut input = encode_frame(true, TEXT, "héllo".as_bytes(), KEY);
    input.extend(encode_frame(true, BINARY, &[1, 2, 3], KEY));
    peer.write_all(&input).await.unwrap();
    assert_eq!(next(&mut ws).await.unwrap().unwrap(), Got::text("héllo"));
    assert_eq!(
        next(&mut ws).await.unwrap().unwrap(),
        Got::Binary(vec![1, 2, 3])
    );
    ws.send_message(false, false, &[5; 200]);
    flush(&mut ws).await.unwrap();
    assert_eq!(read_frame(&mut peer).await, (0x82, vec![5; 200]));
}

async fn incoming(ws: &mut WsStream) -> Option<Result<Incoming, Error>> {
    std::future::poll_fn(|cx| ws.poll_incoming(cx)).await
}

/// The relay's path: a one-frame data message stays in the read buffer,
/// unmasked and checked, until consumed (or the next poll), and goes
/// out of the other leg from the slice, masked there with its own key.
/// Fragmented messages and control frames still come as messages.
#[tokio::test]
async fn one_frame_data_is_lent_in_place_then_sent_from_the_slice() {
    let (mut ws, mut peer) = server();
    let mut input = encode_frame(true, TEXT, "héllo".as_bytes(), KEY);
    input.extend(encode_frame(true, BINARY, &[7; 300], KEY));
    input.extend(encode_frame(false, BINARY, b"ab", KEY));
    input.extend(encode_frame(true, CONTINUATION, b"c", KEY));
    input.extend(encode_frame(true, BINARY, b"skipped", KEY));
    input.extend(encode_frame(true, BINARY, b"last", KEY));
    peer.write_all(&input).await.unwrap();
    let (mut up, mut upstream_peer) = client();

    let got = incoming(&mut ws).await.unwrap().unwrap();
    assert!(matches!(
        got,
        Incoming::Data {
            text: true,
            len: 6,
            ..
        }
    ));
    assert_eq!(ws.data(), "héllo".as_bytes());
    // Toward the upstream the frame is masked again: no direct write over
    // a pipe, so it is queued for the flush.
    assert!(ws.forward_to(&mut up).unwrap(), "queued");
    assert_eq!(ws.data(), b"");
    flush(&mut up).await.unwrap();
    let mut f = [0u8; 12];
    upstream_peer.read_exact(&mut f).await.unwrap();
    assert_eq!(f[..2], [0x81, 0x86]);
    let mut p = f[6..].to_vec();
    apply_mask(&mut p, [f[2], f[3], f[4], f[5]]);
    assert_eq!(p, "héllo".as_bytes());

    let got = incoming(&mut ws).await.unwrap().unwrap();
    assert!(matches!(
        got,
        Incoming::Data {
            text: false,
            len: 300,
            ..
        }
    ));
    assert_eq!(ws.data(), &[7; 300][..]);
    ws.consume_data();
    match incoming(&mut ws).await.unwrap().unwrap() {
        Incoming::Message {
            text: false, data, ..
        } => assert_eq!(&data[..], b"abc"),
        other => panic!("a reassembled message comes whole: {other:?}"),
    }
    // Not consumed: the next poll drops it.
    let got = incoming(&mut ws).await.unwrap().unwrap();
    assert!(matches!(got, Incoming::Data { len: 7, .. }));
    assert!(matches!(
        incoming(&mut ws).await.unwrap().unwrap(),
        Incoming::Data { len: 4, .. }
    ));
    assert_eq!(ws.data(), b"last");

    // Invalid UTF-8 in a one-frame text message fails before it is lent.
    peer.write_all(&encode_frame(true, TEXT, &[0xff, 0xfe], KEY))
        .await
        .unwrap();
    assert!(matches!(
        incoming(&mut ws).await,
        Some(Err(Error::Protocol(Violation::InvalidUtf8)))
    ));
    assert!(incoming(&mut ws).await.is_none(), "fused after an error");
    assert_eq!(ws.data(), b"");
}

/// `frame_for` rewrites the frame in place only when the bytes it
/// leaves are exactly what `queue` would encode: a fresh key toward an
/// upstream, the frame as it came toward a client.
#[tokio::test]
async fn frames_are_rewritten_in_place_only_when_they_are_what_we_would_send() {
    // From a client, toward an upstream: masked again, with a new key.
    let (mut ws, mut peer) = server();
    peer.write_all(&encode_frame(true, BINARY, b"payload", KEY))
        .await
        .unwrap();
    assert!(matches!(
        incoming(&mut ws).await.unwrap().unwrap(),
        Incoming::Data { len: 7, .. }
    ));
    // Toward another client: the roles do not pair, nothing changes.
    assert!(ws.frame_for(Role::Server).is_none());
    assert_eq!(ws.data(), b"payload");
    let (frame, last) = ws.frame_for(Role::Client).unwrap();
    assert!(last, "one frame, one read, nothing after it");
    assert_eq!(frame.len(), 2 + 4 + 7);
    assert_eq!(frame[..2], [0x82, 0x87]);
    let key: [u8; 4] = frame[2..6].try_into().unwrap();
    assert_ne!(Some(key), KEY, "never the client's own key");
    let mut p = frame[6..].to_vec();
    apply_mask(&mut p, key);
    assert_eq!(p, b"payload");

    // From an upstream, toward a client: as it came.
    let (mut ws, mut peer) = client();
    let mut input = encode_frame(true, TEXT, b"hi", None);
    // The same message with its length in a longer form than needed.
    input.extend([0x81, 126, 0, 2, b'h', b'i']);
    peer.write_all(&input).await.unwrap();
    incoming(&mut ws).await.unwrap().unwrap();
    let (frame, last) = ws.frame_for(Role::Server).unwrap();
    assert_eq!(frame, [0x81, 2, b'h', b'i']);
    assert!(!last, "another frame follows in the buffer");
    incoming(&mut ws).await.unwrap().unwrap();
    assert!(ws.frame_for(Role::Server).is_none());
    assert_eq!(ws.data(), b"hi");
}

#[tokio::test]
async fn masks_what_it_sends_as_client() {
    let (mut ws, mut peer) = client();
    ws.send_message(true, false, b"abc");
    flush(&mut ws).await.unwrap();
    let mut f = [0u8; 9];
    peer.read_exact(&mut f).await.unwrap();
    assert_eq!(f[..2], [0x81, 0x83]);
    let key = [f[2], f[3], f[4], f[5]];
    let mut p = f[6..].to_vec();
    apply_mask(&mut p, key);
    assert_eq!(p, b"abc");
    // A server must not mask: a masked frame is a protocol error.
    peer.write_all(&encode_frame(true, TEXT, b"x", KEY))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut ws).await,
        Some(Err(Error::Protocol(Violation::MaskedFromServer)))
    ));
    assert!(next(&mut ws).await.is_none(), "fused after an error");
}

#[tokio::test]
async fn reassembles_fragments_even_when_bytes_trickle() {
    let (mut ws, mut peer) = server();
    let mut input = encode_frame(false, TEXT, "é".as_bytes()[..1].as_ref(), KEY);
    input.extend(encode_frame(true, PING, b"p", KEY));
    input.extend(encode_frame(false, CONTINUATION, &"é".as_bytes()[1..], KEY));
    input.extend(encode_frame(true, CONTINUATION, b"!", KEY));
    let writer = tokio::spawn(async move {
        for b in input {
            peer.write_all(&[b]).await.unwrap();
            tokio::task::yield_now().await;
        }
        peer
    });
    assert_eq!(
        next(&mut ws).await.unwrap().unwrap(),
        Got::Ping(b"p".to_vec())
    );
    assert_eq!(next(&mut ws).await.unwrap().unwrap(), Got::text("é!"));
    let mut peer = writer.await.unwrap();
    // The Ping's Pong went out on its own.
    flush(&mut ws).await.unwrap();
    assert_eq!(read_frame(&mut peer).await, (0x8a, b"p".to_vec()));
}

#[tokio::test]
async fn invalid_utf8_fails_on_the_fragment_that_proves_it() {
    let (mut ws, mut peer) = server();
    // 0xC3 starts a 2-byte sequence; 0x28 cannot continue it.
    peer.write_all(&encode_frame(false, TEXT, &[b'a', 0xc3], KEY))
        .await
        .unwrap();
    peer.write_all(&encode_frame(false, CONTINUATION, &[0x28], KEY))
        .await
        .unwrap();
    // No final fragment is ever sent: the error must not wait for it.
    assert!(matches!(
        next(&mut ws).await,
        Some(Err(Error::Protocol(Violation::InvalidUtf8)))
    ));
}

#[tokio::test]
async fn limits_apply_to_frames_on_their_header_and_to_whole_messages() {
    let (mut ws, mut peer) = server();
    // Only the header of a frame over max_frame_size is needed.
    let f = encode_frame(true, BINARY, &vec![0; LIMITS.max_frame_size + 1], KEY);
    peer.write_all(&f[..14]).await.unwrap();
    assert!(matches!(
        next(&mut ws).await,
        Some(Err(Error::TooBig { .. }))
    ));
    let (mut ws, mut peer) = server();
    // 16 full frames reach max_message_size; one byte more is too much.
    let frag = vec![0; LIMITS.max_frame_size];
    let mut input = Vec::new();
    for i in 0..16 {
        let op = if i == 0 { BINARY } else { CONTINUATION };
        input.extend(encode_frame(false, op, &frag, KEY));
    }
    input.extend(encode_frame(true, CONTINUATION, &[0], KEY));
    let _writer = tokio::spawn(async move {
        let _ = peer.write_all(&input).await;
        peer
    });
    assert!(matches!(
        next(&mut ws).await,
        Some(Err(Error::TooBig { .. }))
    ));
}

#[tokio::test]
async fn protocol_violations() {
    use Violation as V;
    let cases: Vec<(Vec<u8>, Violation)> = vec![
        (encode_frame(true, TEXT, b"x", None), V::UnmaskedFromClient),
        (
            {
                let mut f = encode_frame(true, TEXT, b"x", KEY);
                f[0] |= 0x40;
                f
            },
            V::ReservedBits,
        ),
        (encode_frame(false, PING, b"x", KEY), V::FragmentedControl),
        (encode_frame(true, PING, &[0; 126], KEY), V::ControlTooBig),
        (encode_frame(true, 3, b"x", KEY), V::UnknownOpcode(3)),
        (encode_frame(true, 11, b"x", KEY), V::UnknownOpcode(11)),
        (
            encode_frame(true, CONTINUATION, b"x", KEY),
            V::UnexpectedContinuation,
        ),
        (
            {
                let mut f = encode_frame(false, TEXT, b"x", KEY);
                f.extend(encode_frame(true, BINARY, b"y", KEY));
                f
            },
            V::ExpectedContinuation,
        ),
        (encode_frame(true, CLOSE, &[3], KEY), V::ClosePayload),
        (
            encode_frame(true, CLOSE, &1006u16.to_be_bytes(), KEY),
            V::ForbiddenCloseCode(1006),
        ),
        (
            encode_frame(true, CLOSE, &[3, 232, 0xff], KEY),
            V::InvalidUtf8,
        ),
        (encode_frame(true, TEXT, &[0xff], KEY), V::InvalidUtf8),
    ];
    for (i, (input, expected)) in cases.into_iter().enumerate() {
        let (mut ws, mut peer) = server();
        peer.write_all(&input).await.unwrap();
        match next(&mut ws).await {
            Some(Err(Error::Protocol(v))) if v == expected => {
                let code = if v == V::InvalidUtf8 { 1007 } else { 1002 };
                assert_eq!(v.close_code(), code, "case {i}");
            }
            other => panic!("case {i}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn peer_close_is_echoed_then_the_server_leg_ends() {
    let (mut ws, mut peer) = server();
    let mut close = 1014u16.to_be_bytes().to_vec();
    close.extend(b"bad gateway");
    peer.write_all(&encode_frame(true, CLOSE, &close, KEY))
        .await
        .unwrap();
    match next(&mut ws).await {
        Some(Ok(Got::Close(Some((1014, reason))))) => assert_eq!(reason, "bad gateway"),
        other => panic!("{other:?}"),
    }
    // Nothing may follow a Close: a late send is dropped.
    ws.send_message(true, false, b"late");
    assert!(
        next(&mut ws).await.is_none(),
        "the server ends after its echo"
    );
    assert_eq!(read_frame(&mut peer).await, (0x88, close));
}

#[tokio::test]
async fn our_close_then_the_reply_then_eof_as_client() {
    let (mut ws, mut peer) = client();
    ws.close(Some((1001, "bye")));
    flush(&mut ws).await.unwrap();
    // Data still arriving before the reply is delivered.
    peer.write_all(&encode_frame(true, TEXT, b"in flight", None))
        .await
        .unwrap();
    peer.write_all(&encode_frame(true, CLOSE, &1001u16.to_be_bytes(), None))
        .await
        .unwrap();
    assert_eq!(
        next(&mut ws).await.unwrap().unwrap(),
        Got::text("in flight")
    );
    assert!(matches!(
        next(&mut ws).await,
        Some(Ok(Got::Close(Some((1001, _)))))
    ));
    drop(peer);
    assert!(
        next(&mut ws).await.is_none(),
        "EOF after the exchange is the end"
    );
}

#[tokio::test]
async fn eof_without_close_is_eof() {
    let (mut ws, peer) = server();
    drop(peer);
    assert!(matches!(next(&mut ws).await, Some(Err(Error::Eof))));
    assert!(next(&mut ws).await.is_none(), "fused");
}

#[tokio::test]
async fn an_idle_leg_holds_no_buffer() {
    let (mut ws, mut peer) = server();
    peer.write_all(&encode_frame(true, BINARY, &[1; 100], KEY))
        .await
        .unwrap();
    let Got::Binary(msg) = next(&mut ws).await.unwrap().unwrap() else {
        panic!("binary expected")
    };
    ws.send_message(false, false, &msg);
    flush(&mut ws).await.unwrap();
    let _ = read_frame(&mut peer).await;
    // Nothing more to read: the poll returns Pending and lets go of it.
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(ws.poll_incoming(&mut cx).is_pending());
    assert_eq!((ws.rbuf.capacity(), ws.wbuf.capacity()), (0, 0));
}

#[tokio::test]
async fn read_ahead_bytes_come_first() {
    let (a, mut peer) = tokio::io::duplex(1024);
    let mut ahead = encode_frame(true, TEXT, b"early", KEY);
    let late = ahead.split_off(4);
    let mut ws = WsStream::new(a, Role::Server, LIMITS, &ahead);
    peer.write_all(&late).await.unwrap();
    assert_eq!(next(&mut ws).await.unwrap().unwrap(), Got::text("early"));
}

/// A first header byte with RSV1 set: permessage-deflate's "compressed".
fn rsv1(mut frame: Vec<u8>) -> Vec<u8> {
    frame[0] |= 0x40;
    frame
}

/// With permessage-deflate negotiated, a compressed message (RSV1 on its
/// first frame) is relayed as it is: never inflated, RSV1 kept, its UTF-8
/// left to the endpoint; in one frame straight from the read buffer, or
/// reassembled from fragments into one frame with RSV1.
#[tokio::test]
async fn compressed_messages_keep_rsv1_and_are_never_inflated() {
    let (mut ws, mut peer) = server();
    ws.set_deflate(true);
    let (mut up, mut upstream_peer) = client();
    up.set_deflate(true);
    // Deflated bytes are not UTF-8; a text frame carries them all the same.
    let deflated = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    let mut input = rsv1(encode_frame(true, TEXT, &deflated, KEY));
    input.extend(rsv1(encode_frame(false, BINARY, &deflated[..3], KEY)));
    input.extend(encode_frame(true, CONTINUATION, &deflated[3..], KEY));
    peer.write_all(&input).await.unwrap();

    let got = incoming(&mut ws).await.unwrap().unwrap();
    assert!(matches!(
        got,
        Incoming::Data {
            text: true,
            compressed: true,
            len: 7
        }
    ));
    assert!(ws.forward_to(&mut up).unwrap());
    match incoming(&mut ws).await.unwrap().unwrap() {
        Incoming::Message {
            text: false,
            compressed: true,
            data,
        } => {
            assert_eq!(&data[..], deflated);
            up.send_message(false, true, &data);
        }
        other => panic!("{other:?}"),
    }
    flush(&mut up).await.unwrap();
    // Both reach the upstream masked, RSV1 set, the bytes as they were.
    for first in [0xc1, 0xc2] {
        let mut f = [0u8; 2 + 4 + 7];
        upstream_peer.read_exact(&mut f).await.unwrap();
        assert_eq!(f[..2], [first, 0x80 | 7]);
        let mut p = f[6..].to_vec();
        apply_mask(&mut p, [f[2], f[3], f[4], f[5]]);
        assert_eq!(p, deflated);
    }
}

/// RSV1 is allowed only where permessage-deflate puts it: on the first
/// frame of a data message, on a leg that negotiated it. RSV2 and RSV3
/// are never allowed.
#[tokio::test]
async fn rsv1_anywhere_else_is_a_protocol_error() {
    let cases: Vec<(bool, Vec<u8>)> = vec![
        // No extension on this leg.
        (false, rsv1(encode_frame(true, TEXT, b"x", KEY))),
        // On a control frame.
        (true, rsv1(encode_frame(true, PING, b"x", KEY))),
        // On a continuation.
        (true, {
            let mut f = rsv1(encode_frame(false, TEXT, b"x", KEY));
            f.extend(rsv1(encode_frame(true, CONTINUATION, b"y", KEY)));
            f
        }),
        // RSV2, RSV3.
        (true, {
            let mut f = encode_frame(true, TEXT, b"x", KEY);
            f[0] |= 0x20;
            f
        }),
        (true, {
            let mut f = encode_frame(true, TEXT, b"x", KEY);
            f[0] |= 0x10;
            f
        }),
    ];
    for (i, (deflate, input)) in cases.into_iter().enumerate() {
        let (mut ws, mut peer) = server();
        ws.set_deflate(deflate);
        peer.write_all(&input).await.unwrap();
        match next(&mut ws).await {
            Some(Err(Error::Protocol(Violation::ReservedBits))) => {}
            other => panic!("case {i}: {other:?}"),
        }
    }
}
