use super::*;

fn v2(cmd: u8, fam: u8, addrs: &[u8], tlvs: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(0x20 | cmd);
    h.push(fam);
    let len = (addrs.len() + tlvs.len()) as u16;
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(addrs);
    h.extend_from_slice(tlvs);
    h
}

fn v4_block(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut a = src.to_vec();
    a.extend_from_slice(&[10, 0, 0, 1]);
    a.extend_from_slice(&sport.to_be_bytes());
    a.extend_from_slice(&443u16.to_be_bytes());
    a
}

fn client(addr: &str) -> Source {
    Source::Client(addr.parse().unwrap())
}

#[test]
fn v1_tcp4_and_tcp6() {
    let h = b"PROXY TCP4 127.0.0.7 127.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n";
    assert_eq!(
        parse(h),
        Parsed::Complete {
            source: client("127.0.0.7:56324"),
            len: 42
        }
    );
    let h = b"PROXY TCP6 2001:db8::1 ::1 65535 8443\r\n";
    assert_eq!(
        parse(h),
        Parsed::Complete {
            source: client("[2001:db8::1]:65535"),
            len: h.len()
        }
    );
}

#[test]
fn v1_unknown_is_local() {
    let h = b"PROXY UNKNOWN\r\n";
    assert_eq!(
        parse(h),
        Parsed::Complete {
            source: Source::Local,
            len: 15
        }
    );
    let h = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
    assert!(matches!(
        parse(h),
        Parsed::Complete {
            source: Source::Local,
            ..
        }
    ));
}

#[test]
fn v1_every_prefix_is_incomplete() {
    let h = b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n";
    for n in 0..h.len() {
        assert_eq!(parse(&h[..n]), Parsed::Incomplete, "{n} bytes");
    }
}

#[test]
fn v1_malformed() {
    for bad in [
        &b"PROXY TCP4 192.0.2.1 198.51.100.1 56324\r\n"[..],
        b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443 x\r\n",
        b"PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n",
        b"PROXY TCP6 192.0.2.1 ::1 1 2\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.1 65536 443\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.1 -1 443\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.1 0443 443\r\n",
        b"PROXY TCP4  192.0.2.1 198.51.100.1 1 443\r\n",
        b"PROXY UDP4 192.0.2.1 198.51.100.1 1 443\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.1 1 443\rX",
        b"PROXY TCP4 192.0.2.\xff 198.51.100.1 1 443\r\n",
        b"GET / HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00",
        b"proxy TCP4 192.0.2.1 198.51.100.1 1 443\r\n",
    ] {
        assert!(
            matches!(parse(bad), Parsed::Invalid(_)),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // No CRLF within 107 bytes.
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(V1_MAX, b'x');
    assert!(matches!(parse(&long), Parsed::Invalid(_)));
    long.truncate(V1_MAX - 1);
    assert_eq!(parse(&long), Parsed::Incomplete);
}

#[test]
fn v2_proxy_tcp4_with_tlvs_not_yet_read() {
    let tlvs = [0x04, 0x00, 0x03, b'a', b'b', b'c'];
    let h = v2(1, 0x11, &v4_block([127, 0, 0, 7], 40000), &tlvs);
    let want = Parsed::Complete {
        source: client("127.0.0.7:40000"),
        len: h.len(),
    };
    assert_eq!(parse(&h), want);
    // The addresses suffice: the TLVs may still be on their way.
    assert_eq!(parse(&h[..V2_FIXED + 12]), want);
    for n in 1..V2_FIXED + 12 {
        assert_eq!(parse(&h[..n]), Parsed::Incomplete, "{n} bytes");
    }
}

#[test]
fn v2_proxy_tcp6() {
    let mut a = Vec::new();
    a.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
    a.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    a.extend_from_slice(&1234u16.to_be_bytes());
    a.extend_from_slice(&443u16.to_be_bytes());
    let h = v2(1, 0x21, &a, &[]);
    assert_eq!(
        parse(&h),
        Parsed::Complete {
            source: client("[2001:db8::7]:1234"),
            len: 52
        }
    );
}

#[test]
fn v2_local_and_undescribed_connections_are_local() {
    // LOCAL with no addresses (HAProxy's health checks), and with some.
    for h in [
        v2(0, 0x00, &[], &[]),
        v2(0, 0x11, &v4_block([1, 2, 3, 4], 5), &[]),
        // PROXY over UNSPEC, UDP, UNIX.
        v2(1, 0x00, &[], &[]),
        v2(1, 0x12, &v4_block([1, 2, 3, 4], 5), &[]),
        v2(1, 0x31, &[0u8; 216], &[]),
    ] {
        assert_eq!(
            parse(&h),
            Parsed::Complete {
                source: Source::Local,
                len: h.len()
            }
        );
    }
}

#[test]
fn v2_malformed() {
    let ok = v2(1, 0x11, &v4_block([1, 2, 3, 4], 5), &[]);
    let with = |i: usize, b: u8| {
        let mut h = ok.clone();
        h[i] = b;
        h
    };
    for bad in [
        with(12, 0x11), // version 1 in a v2 header
        with(12, 0x22), // command 2
        with(13, 0x41), // family 4
        with(13, 0x13), // transport 3
        with(15, 4),    // length shorter than the IPv4 addresses
        with(3, b'X'),  // signature
    ] {
        assert!(matches!(parse(&bad), Parsed::Invalid(_)), "{bad:?}");
    }
}

#[test]
fn the_reader_buffer_always_suffices() {
    // UNIX addresses are the longest block parse needs before answering.
    let h = v2(1, 0x31, &[0u8; 216], &[]);
    assert_eq!(parse(&h[..MAX_NEEDED - 1]), Parsed::Incomplete);
    assert!(matches!(parse(&h[..MAX_NEEDED]), Parsed::Complete { .. }));
}
