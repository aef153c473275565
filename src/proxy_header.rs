//! The PROXY protocol header (HAProxy's spec, versions 1 and 2) that a TCP
//! load balancer writes before the client's own bytes: who connected to it.
//!
//! [`parse`] is a pure function over the bytes read so far, so it can be
//! fuzzed and tested without a socket, and it says how many bytes the header
//! takes: the reader ([`crate::edge`]) consumes exactly those and leaves
//! the client's first bytes (a TLS ClientHello, an HTTP request) in the
//! socket for the next layer. Written by hand rather than taken from a
//! crate: the two formats fit in a page, and the reader needs three
//! answers a general parser does not give in one call: "incomplete, every
//! byte so far is header", "done after N bytes, even though the TLVs that
//! follow have not arrived", and "invalid".
//!
//! A leaf: it imports nothing from the crate.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12 bytes that open a version 2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest version 1 header, CRLF included (spec §2.1).
pub const V1_MAX: usize = 107;

/// The bytes of a version 2 header before its addresses.
const V2_FIXED: usize = 16;

/// The most bytes [`parse`] needs to see before it can answer: a version 2
/// header's fixed part and its longest address block (AF_UNIX, 216 bytes).
/// A reader's buffer of this size never overflows while `parse` says
/// [`Parsed::Incomplete`].
pub const MAX_NEEDED: usize = V2_FIXED + 216;

/// What the header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A proxied TCP connection from this client address.
    Client(SocketAddr),
    /// The balancer speaking for itself (a v2 `LOCAL` command, such as a
    /// health check) or a connection it cannot describe (v1 `UNKNOWN`, v2
    /// `UNSPEC`, UDP or a UNIX socket): the TCP peer is the address.
    Local,
}

/// The answer of [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header of `len` bytes. For version 2, `len` may exceed the
    /// bytes given: the TLVs after the addresses are not needed, and the
    /// reader skips them unread.
    Complete {
        /// What the header says.
        source: Source,
        /// The header's length in bytes, from its first byte.
        len: usize,
    },
    /// Every byte given is a valid start of a header; more are needed.
    Incomplete,
    /// Not a PROXY header (or a malformed one): why, for the debug log.
    Invalid(&'static str),
}

/// Parse the header at the start of `buf`, the bytes received so far.
pub fn parse(buf: &[u8]) -> Parsed {
    let sig = buf.len().min(V2_SIGNATURE.len());
    if buf[..sig] == V2_SIGNATURE[..sig] && !buf.is_empty() {
        return parse_v2(buf);
    }
    let v1 = b"PROXY ";
    let n = buf.len().min(v1.len());
    if buf[..n] == v1[..n] {
        return parse_v1(buf);
    }
    Parsed::Invalid("no PROXY protocol signature")
}

/// `PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n`, or `PROXY UNKNOWN…\r\n`.
fn parse_v1(buf: &[u8]) -> Parsed {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return match buf.len() >= V1_MAX {
            true => Parsed::Invalid("v1 header longer than 107 bytes"),
            false => Parsed::Incomplete,
        };
    };
    match window.get(cr + 1) {
        None if buf.len() < V1_MAX => return Parsed::Incomplete,
        Some(b'\n') => {}
        _ => return Parsed::Invalid("v1 header: CR not followed by LF"),
    }
    let len = cr + 2;
    let Ok(line) = std::str::from_utf8(&buf[..cr]) else {
        return Parsed::Invalid("v1 header is not ASCII");
    };
    let mut words = line.split(' ');
    let _proxy = words.next();
    let source = match words.next() {
        // The rest of an UNKNOWN line is to be ignored (spec §2.1).
        Some("UNKNOWN") => Source::Local,
        Some(family @ ("TCP4" | "TCP6")) => {
            let fields: Vec<&str> = words.collect();
            let [src, dst, sport, dport] = fields[..] else {
                return Parsed::Invalid("v1 header: expected 4 fields after the family");
            };
            let (Ok(src), Ok(dst)) = (src.parse::<IpAddr>(), dst.parse::<IpAddr>()) else {
                return Parsed::Invalid("v1 header: bad address");
            };
            let v4 = family == "TCP4";
            if src.is_ipv4() != v4 || dst.is_ipv4() != v4 {
                return Parsed::Invalid("v1 header: address does not match the family");
            }
            let (Some(sport), Some(_)) = (port(sport), port(dport)) else {
                return Parsed::Invalid("v1 header: bad port");
            };
            Source::Client(SocketAddr::new(src, sport))
        }
        _ => return Parsed::Invalid("v1 header: unknown family"),
    };
    Parsed::Complete { source, len }
}

/// A v1 port: decimal, 0..=65535, no sign or leading zero (spec §2.1).
fn port(s: &str) -> Option<u16> {
    let plain = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !plain || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

/// The binary form: signature, version and command, family and transport,
/// length, addresses, TLVs.
fn parse_v2(buf: &[u8]) -> Parsed {
    if buf.len() < V2_FIXED {
        return Parsed::Incomplete;
    }
    let (ver_cmd, fam) = (buf[12], buf[13]);
    let len = V2_FIXED + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if ver_cmd >> 4 != 2 {
        return Parsed::Invalid("v2 header: version is not 2");
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Parsed::Invalid("v2 header: unknown command"),
    };
    // Family (high nibble) and transport (low nibble); the address block's
    // length for each (spec §2.2).
    let (family, transport) = (fam >> 4, fam & 0x0f);
    let need = match family {
        0 => 0,
        1 => 12,
        2 => 36,
        3 => 216,
        _ => return Parsed::Invalid("v2 header: unknown address family"),
    };
    if transport > 2 {
        return Parsed::Invalid("v2 header: unknown transport");
    }
    if len - V2_FIXED < need {
        return Parsed::Invalid("v2 header: shorter than its addresses");
    }
    if buf.len() < V2_FIXED + need {
        return Parsed::Incomplete;
    }
    let a = &buf[V2_FIXED..V2_FIXED + need];
    let source = match (local, family, transport) {
        // LOCAL: the addresses, if any, are to be ignored.
        (true, ..) => Source::Local,
        // TCP (STREAM) over IPv4 or IPv6: the source is the client.
        (false, 1, 1) => {
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Source::Client(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        (false, 2, 1) => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            let ip = Ipv6Addr::from(octets);
            Source::Client(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        // UNSPEC, UDP, UNIX sockets: nothing an IP client address can say.
        _ => Source::Local,
    };
    Parsed::Complete { source, len }
}

#[cfg(test)]
mod tests;
