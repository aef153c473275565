use super::*;

fn fields(lines: &[(&str, &str)]) -> Fields {
    crate::head::fields_of(lines)
}

fn cidrs(list: &[&str]) -> Vec<Cidr> {
    list.iter().map(|c| c.parse().unwrap()).collect()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The lines written toward the upstream, as text.
fn written(origin: &Origin, f: &Fields) -> String {
    let mut out = Vec::new();
    origin.write_headers(f, &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn cidrs_parse_and_match() {
    let net: Cidr = "10.0.0.0/8".parse().unwrap();
    assert!(net.contains("10.200.3.4".parse().unwrap()));
    assert!(!net.contains("11.0.0.1".parse().unwrap()));
    assert!(
        net.contains("::ffff:10.1.2.3".parse().unwrap()),
        "mapped IPv4"
    );
    let v6: Cidr = "2001:db8::/32".parse().unwrap();
    assert!(v6.contains("2001:db8:1::9".parse().unwrap()));
    assert!(!v6.contains("10.0.0.1".parse().unwrap()));
    let host: Cidr = "127.0.0.1".parse().unwrap();
    assert_eq!(host.to_string(), "127.0.0.1/32");
    assert!(!host.contains("127.0.0.7".parse().unwrap()));
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains("203.0.113.9".parse().unwrap()));
    let all6: Cidr = "::/0".parse().unwrap();
    assert!(all6.contains("::1".parse().unwrap()));
    for bad in [
        "10.0.0.1/8",
        "10.0.0.0/33",
        "::/129",
        "example.com",
        "10.0.0.0/",
        "",
    ] {
        assert!(bad.parse::<Cidr>().is_err(), "{bad}");
    }
    assert_eq!(
        "10.0.0.1/8".parse::<Cidr>().unwrap_err(),
        "\"10.0.0.1/8\" has host bits set; did you mean \"10.0.0.0/8\" or \"10.0.0.1\"?"
    );
}

#[test]
fn an_untrusted_peer_is_the_client_whatever_it_writes() {
    let f = fields(&[
        ("X-Forwarded-For", "1.1.1.1"),
        ("X-Forwarded-Proto", "https"),
        ("Forwarded", "for=2.2.2.2"),
    ]);
    for trusted in [cidrs(&[]), cidrs(&["10.0.0.0/8"])] {
        let o = Origin::of(addr("127.0.0.7:5000"), false, &trusted, &f);
        assert_eq!(o.client, addr("127.0.0.7:5000"));
        assert!(!o.via_trusted);
        assert_eq!(
            written(&o, &f),
            "x-forwarded-for: 1.1.1.1, 127.0.0.7\r\nx-forwarded-proto: http\r\n"
        );
    }
    let o = Origin::of(addr("127.0.0.7:5000"), true, &[], &fields(&[]));
    assert_eq!(
        written(&o, &fields(&[])),
        "x-forwarded-for: 127.0.0.7\r\nx-forwarded-proto: https\r\n"
    );
}

#[test]
fn behind_trusted_proxies_the_rightmost_untrusted_entry_is_the_client() {
    let trusted = cidrs(&["10.0.0.0/8", "192.168.0.0/16"]);
    let peer = addr("10.0.0.2:40000");
    // A spoofed entry on the left, the real client, then our own balancers.
    let f = fields(&[
        ("X-Forwarded-For", "6.6.6.6, 203.0.113.5"),
        ("X-Forwarded-For", "192.168.1.1"),
        ("X-Forwarded-Proto", "https"),
    ]);
    let o = Origin::of(peer, false, &trusted, &f);
    assert_eq!(o.client, addr("203.0.113.5:0"));
    assert!(o.via_trusted);
    assert_eq!(
        written(&o, &f),
        "x-forwarded-for: 6.6.6.6, 203.0.113.5\r\nx-forwarded-proto: https\r\n",
        "entries left of the client as sent, the client last, the trusted hop dropped"
    );
    // Every entry trusted: the leftmost is the client.
    let f = fields(&[("X-Forwarded-For", "10.9.9.9, 10.0.0.1")]);
    let o = Origin::of(peer, true, &trusted, &f);
    assert_eq!(o.client, addr("10.9.9.9:0"));
    assert_eq!(
        written(&o, &f),
        "x-forwarded-for: 10.9.9.9\r\nx-forwarded-proto: https\r\n"
    );
    // No header at all: the trusted peer is the client.
    let o = Origin::of(peer, false, &trusted, &fields(&[]));
    assert_eq!(o.client, peer);
}

#[test]
fn garbage_stops_the_walk_at_the_last_known_address() {
    let trusted = cidrs(&["10.0.0.0/8"]);
    let peer = addr("10.0.0.2:1");
    let f = fields(&[("X-Forwarded-For", "1.2.3.4, unknown, 10.1.1.1")]);
    let o = Origin::of(peer, false, &trusted, &f);
    assert_eq!(o.client, addr("10.1.1.1:0"));
    assert_eq!(
        written(&o, &f),
        "x-forwarded-for: 1.2.3.4, unknown, 10.1.1.1\r\nx-forwarded-proto: http\r\n"
    );
    let f = fields(&[("X-Forwarded-For", "1.2.3.4, not-an-ip")]);
    let o = Origin::of(peer, false, &trusted, &f);
    assert_eq!(o.client, peer);
}

#[test]
fn entries_with_ports_and_brackets() {
    let trusted = cidrs(&["10.0.0.0/8"]);
    let peer = addr("10.0.0.2:1");
    for (entry, want) in [
        ("198.51.100.1:8080", "198.51.100.1:8080"),
        ("[2001:db8::5]:443", "[2001:db8::5]:443"),
        ("[2001:db8::5]", "[2001:db8::5]:0"),
        ("2001:db8::5", "[2001:db8::5]:0"),
    ] {
        let f = fields(&[("X-Forwarded-For", entry)]);
        assert_eq!(Origin::of(peer, false, &trusted, &f).client, addr(want));
    }
}

#[test]
fn forwarded_for_when_there_is_no_x_forwarded_for() {
    let trusted = cidrs(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
    let peer = addr("10.0.0.2:1");
    let f = fields(&[(
        "Forwarded",
        "for=198.51.100.17;proto=https, For=\"[2001:db8:cafe::17]:4711\", for=\"[2001:db8:ffff::1]\";by=x",
    )]);
    let o = Origin::of(peer, false, &trusted, &f);
    assert_eq!(o.client, addr("[2001:db8:cafe::17]:4711"));
    assert_eq!(
        written(&o, &f),
        "x-forwarded-for: 2001:db8:cafe::17\r\nx-forwarded-proto: http\r\n"
    );
    // An obfuscated identifier is not an address: the walk stops.
    let f = fields(&[("Forwarded", "for=_hidden, for=10.2.2.2")]);
    assert_eq!(
        Origin::of(peer, false, &trusted, &f).client,
        addr("10.2.2.2:0")
    );
}

#[test]
fn client_addresses_are_written_as_display_writes_them() {
    let mut cases: Vec<IpAddr> = (0..=255u8)
        .flat_map(|o| {
            [
                std::net::Ipv4Addr::new(o, 0, 9, 10).into(),
                std::net::Ipv4Addr::new(99, o, 100, 255).into(),
            ]
        })
        .collect();
    for v6 in [
        "::1",
        "::",
        "2001:db8::7",
        "::ffff:10.1.2.3",
        "fe80::1:2:3:4",
    ] {
        cases.push(v6.parse().unwrap());
    }
    for ip in cases {
        let mut out = b"x, ".to_vec();
        push_ip(&mut out, ip);
        assert_eq!(String::from_utf8(out).unwrap(), format!("x, {ip}"));
    }
}
