use super::*;

#[test]
fn upgrade_request_line_and_host() {
    let line = |url: &str, pq: &str| {
        let u: UpstreamUrl = url.parse().expect("valid");
        let client = ClientHead {
            path_and_query: pq,
            headers: &Fields::default(),
            origin: &Origin::of(([127, 0, 0, 1], 1).into(), false, &[], &Fields::default()),
            compression: CompressionMode::Passthrough,
        };
        let req = upgrade_request(&u, client, b"k");
        let text = String::from_utf8(req).expect("ASCII");
        text.lines().take(2).collect::<Vec<_>>().join(" | ")
    };
    assert_eq!(
        line("wss://example.com/api/", "/chat?x=1"),
        "GET /api/chat?x=1 HTTP/1.1 | Host: example.com:443"
    );
    assert_eq!(
        line("ws://[::1]:9000", ""),
        "GET / HTTP/1.1 | Host: [::1]:9000"
    );
    assert_eq!(
        line("ws://h:1/base", "q"),
        "GET /base/q HTTP/1.1 | Host: h:1"
    );
}

fn fields(lines: &[(&str, &str)]) -> Fields {
    crate::head::fields_of(lines)
}

/// The header lines `forward_headers` writes, parsed back.
fn forwarded_lines(client: &Fields, ip: &str) -> Vec<(String, String)> {
    let mut out = b"GET / HTTP/1.1\r\n".to_vec();
    let peer = std::net::SocketAddr::new(ip.parse().unwrap(), 1);
    forward_headers(client, &Origin::of(peer, false, &[], client), &mut out);
    out.extend_from_slice(b"\r\n");
    let mut slots = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut slots);
    assert!(req.parse(&out).expect("valid HTTP").is_complete());
    req.headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8(h.value.to_vec()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn forwards_end_to_end_and_drops_hop_by_hop() {
    let client = fields(&[
        ("Host", "proxy.example:8080"),
        ("Connection", "Upgrade, X-Secret-Hop"),
        ("Upgrade", "websocket"),
        ("X-Secret-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Extensions", "permessage-deflate"),
        ("Sec-WebSocket-Protocol", "chat, superchat"),
        ("Cookie", "a=1"),
        ("Authorization", "Bearer t"),
        ("Origin", "https://app.example"),
        ("User-Agent", "test"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Forwarded-Proto", "https"),
        // A client's own claim of where it came from stays behind.
        ("Forwarded", "for=6.6.6.6"),
        ("Cookie", "b=2"),
    ]);
    // End-to-end fields as sent, in order, then the proxy's own.
    let expected = [
        ("Sec-WebSocket-Protocol", "chat, superchat"),
        ("Cookie", "a=1"),
        ("Authorization", "Bearer t"),
        ("Origin", "https://app.example"),
        ("User-Agent", "test"),
        ("Cookie", "b=2"),
        ("x-forwarded-for", "203.0.113.7, 10.1.2.3"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "proxy.example:8080"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    assert_eq!(forwarded_lines(&client, "10.1.2.3"), expected);
    // A field the client names in Connection stays behind whatever its
    // name; without a Host there is no X-Forwarded-Host.
    let client = fields(&[
        ("connection", "upgrade, cookie"),
        ("cookie", "a=1"),
        ("x-forwarded-for", "caf\u{e9}"),
    ]);
    assert_eq!(
        forwarded_lines(&client, "::1"),
        [
            ("x-forwarded-for".to_string(), "::1".to_string()),
            ("x-forwarded-proto".to_string(), "http".to_string()),
        ]
    );
}

#[test]
fn subprotocol_must_be_one_the_client_offered() {
    let key = head::new_key();
    let accept = head::accept_key(&key);
    let accept = std::str::from_utf8(&accept).unwrap();
    let answer = |protocol: Option<&str>| {
        let mut lines = vec![
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept),
        ];
        lines.extend(protocol.map(|p| ("Sec-WebSocket-Protocol", p)));
        fields(&lines)
    };
    let client = fields(&[("Sec-WebSocket-Protocol", "chat, superchat")]);
    let chosen = |p| verify_upgrade(&answer(p), &key, &client).map_err(|e| e.to_string());
    assert_eq!(chosen(None).unwrap(), None);
    assert_eq!(
        chosen(Some("superchat")).unwrap(),
        Some(HeaderValue::from_static("superchat"))
    );
    assert!(
        chosen(Some("Chat")).is_err(),
        "subprotocols are case-sensitive"
    );
    assert!(chosen(Some("other")).is_err());
    let hop = fields(&[
        ("Connection", "sec-websocket-protocol"),
        ("Sec-WebSocket-Protocol", "chat"),
    ]);
    assert!(verify_upgrade(&answer(Some("chat")), &key, &hop).is_err());
    let wrong = head::accept_key(b"another key");
    let wrong = fields(&[
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", std::str::from_utf8(&wrong).unwrap()),
    ]);
    assert!(verify_upgrade(&wrong, &key, &client).is_err());
}

/// The request's `Sec-WebSocket-Extensions` lines, lowercased names.
fn extension_lines(client: &Fields, mode: CompressionMode) -> Vec<String> {
    let origin = Origin::of(([127, 0, 0, 1], 1).into(), false, &[], &Fields::default());
    let head = ClientHead {
        path_and_query: "/",
        headers: client,
        origin: &origin,
        compression: mode,
    };
    let url: UpstreamUrl = "ws://h:1".parse().unwrap();
    String::from_utf8(upgrade_request(&url, head, b"k"))
        .unwrap()
        .lines()
        .filter(|l| {
            l.to_ascii_lowercase()
                .starts_with("sec-websocket-extensions")
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn deflate_offers_go_upstream_as_sent_in_passthrough_only() {
    let client = fields(&[
        (
            "Sec-WebSocket-Extensions",
            "permessage-deflate; client_max_window_bits; server_no_context_takeover",
        ),
        ("Sec-WebSocket-Extensions", "x-webkit-deflate-frame"),
    ]);
    assert_eq!(
        extension_lines(&client, CompressionMode::Passthrough),
        [
            "sec-websocket-extensions: permessage-deflate; client_max_window_bits; server_no_context_takeover"
        ]
    );
    assert!(extension_lines(&client, CompressionMode::Off).is_empty());
    let other = fields(&[("Sec-WebSocket-Extensions", "x-webkit-deflate-frame")]);
    assert!(extension_lines(&other, CompressionMode::Passthrough).is_empty());
}

#[test]
fn the_upstream_answer_must_answer_an_offer() {
    let answer = |ext: &[&str]| {
        let lines: Vec<(&str, &str)> = ext
            .iter()
            .map(|e| ("Sec-WebSocket-Extensions", *e))
            .collect();
        fields(&lines)
    };
    let offer = fields(&[(
        "Sec-WebSocket-Extensions",
        "permessage-deflate; client_max_window_bits",
    )]);
    let origin = Origin::of(([127, 0, 0, 1], 1).into(), false, &[], &Fields::default());
    let head = |headers, compression| ClientHead {
        path_and_query: "/",
        headers,
        origin: &origin,
        compression,
    };
    let passthrough = head(&offer, CompressionMode::Passthrough);
    assert_eq!(verify_extensions(&answer(&[]), passthrough).unwrap(), None);
    assert_eq!(
        verify_extensions(
            &answer(&["permessage-deflate; client_max_window_bits=12"]),
            passthrough
        )
        .unwrap(),
        Some(HeaderValue::from_static(
            "permessage-deflate; client_max_window_bits=12"
        ))
    );
    for bad in [
        &["x-other"][..],
        &["permessage-deflate; bogus"],
        &["permessage-deflate", "permessage-deflate"],
    ] {
        let e = verify_extensions(&answer(bad), passthrough).unwrap_err();
        assert_eq!(e.reason(), Some(ConnectFailure::Protocol), "{bad:?}");
        assert_eq!(e.client_status(), StatusCode::BAD_GATEWAY);
    }
    // Off: nothing was offered, so any answer is refused.
    let off = head(&offer, CompressionMode::Off);
    assert!(verify_extensions(&answer(&["permessage-deflate"]), off).is_err());
    // Offered nothing: the same.
    let none = Fields::default();
    assert!(
        verify_extensions(
            &answer(&["permessage-deflate"]),
            head(&none, CompressionMode::Passthrough)
        )
        .is_err()
    );
}

#[test]
fn statuses_for_failures() {
    let refused = UpstreamError::Unreachable {
        addr: "x".into(),
        source: io::ErrorKind::ConnectionRefused.into(),
    };
    assert_eq!(refused.client_status(), StatusCode::BAD_GATEWAY);
    assert_eq!(refused.reason(), Some(ConnectFailure::Refused));
    assert_eq!(
        UpstreamError::Timeout(Duration::from_secs(1)).client_status(),
        StatusCode::GATEWAY_TIMEOUT
    );
    let rejected = UpstreamError::Rejected {
        status: StatusCode::FORBIDDEN,
        headers: HeaderMap::new(),
        body: vec![],
    };
    assert_eq!(rejected.client_status(), StatusCode::FORBIDDEN);
    assert_eq!(rejected.reason(), None);
}
