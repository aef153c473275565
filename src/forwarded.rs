//! Who a request came from: the client address computed once in the
//! handshake ([`Origin`]) from the connection's peer, the trusted proxies
//! (`listen.trusted_proxies`) and the forwarding headers they wrote, and
//! the `X-Forwarded-For` / `X-Forwarded-Proto` lines written toward the
//! upstream from it.
//!
//! The rules, so that a client can never choose its own address:
//! - The peer is the TCP peer, or the PROXY protocol header's source.
//! - A peer that is not a trusted proxy is the client. Its forwarding
//!   headers are its own claims: `X-Forwarded-For` is passed on with the
//!   peer appended (as before this module), `X-Forwarded-Proto` is set by
//!   wspulse, `Forwarded` is dropped.
//! - Behind a trusted peer the client is the rightmost `X-Forwarded-For`
//!   entry (or `Forwarded: for=`, when there is no `X-Forwarded-For`) that
//!   is not itself a trusted proxy; entries are read right to left, and an
//!   entry that is not an address (`unknown`, an obfuscated name, garbage)
//!   stops the walk at the last address known. `X-Forwarded-Proto` and
//!   `Forwarded` are kept as sent.
//! - Toward the upstream the last `X-Forwarded-For` entry is always that
//!   client: the entries received left of it follow as they came, the
//!   trusted hops right of it (our own balancers) are dropped. An upstream
//!   can take the rightmost entry whatever sits in front of wspulse.
//!
//! A leaf below `config` (which parses [`Cidr`]s) and `upstream` (which
//! writes the lines); it reads header fields through [`crate::head`].

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::head::Fields;

// === Cidr ===

/// An IP network: `10.0.0.0/8`, `2001:db8::/32`, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address (a
    /// listener bound to `[::]` sees IPv4 peers so) counts as its IPv4 one.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

/// `net/prefix`, as it parses.
impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// `"10.0.0.0/8"`, `"::1/128"`, or a bare address (a /32 or /128). Host
/// bits set after the prefix are refused: `10.0.0.1/8` is almost surely a
/// typo for one host or for the network, and guessing either is wrong.
impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP network (e.g. \"10.0.0.0/8\")"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
        };
        let cidr = Cidr { net, prefix };
        let masked = Cidr {
            net: mask(net, prefix),
            prefix,
        };
        if masked != cidr {
            return Err(format!(
                "{s:?} has host bits set; did you mean \"{masked}\" or \"{net}\"?"
            ));
        }
        Ok(cidr)
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & m).into())
        }
        IpAddr::V6(v6) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & m).into())
        }
    }
}

// === Origin ===

/// Where a request came from, computed once in the handshake: the address
/// of the session log line, of `/closures` and of the `X-Forwarded-For`
/// entry appended toward the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The client. Its port is 0 when the address came from a forwarding
    /// header entry without one.
    pub client: SocketAddr,
    /// The peer is a trusted proxy: its `X-Forwarded-Proto` and
    /// `Forwarded` are passed on as sent.
    pub via_trusted: bool,
    /// TLS ended at wspulse: `X-Forwarded-Proto: https` unless kept.
    pub tls: bool,
    /// How many received `X-Forwarded-For` entries go upstream before
    /// `client`: all of them (`None`) when the peer is the client.
    kept: Option<usize>,
}

impl Origin {
    /// The origin of a request with `fields` from `peer` (after the PROXY
    /// protocol), `trusted` the trusted proxies. Without trusted proxies
    /// (the default) the peer is the client and nothing is parsed.
    pub fn of(peer: SocketAddr, tls: bool, trusted: &[Cidr], fields: &Fields) -> Origin {
        let untrusted = Origin {
            client: peer,
            via_trusted: false,
            tls,
            kept: None,
        };
        let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
        if trusted.is_empty() || !is_trusted(peer.ip()) {
            return untrusted;
        }
        let xff: Vec<&[u8]> = xff_lines(fields)
            .flat_map(|v| v.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .collect();
        let from_xff = !xff.is_empty();
        let entries: Vec<&[u8]> = if !from_xff {
            fields
                .get_all("forwarded")
                .flat_map(|v| v.split(|&b| b == b','))
                .map(forwarded_for)
                .collect()
        } else {
            xff
        };
        let (client, kept) = rightmost_untrusted(&entries, peer, is_trusted);
        // Entries taken from `Forwarded` are not `X-Forwarded-For` ones:
        // none of those go upstream before the client.
        let kept = if from_xff { kept } else { 0 };
        Origin {
            client,
            via_trusted: true,
            tls,
            kept: Some(kept),
        }
    }

    /// Write the `x-forwarded-for` and `x-forwarded-proto` lines toward
    /// the upstream for a request with `fields`.
    pub fn write_headers(&self, fields: &Fields, out: &mut Vec<u8>) {
        out.extend_from_slice(b"x-forwarded-for: ");
        let lines = xff_lines(fields);
        match self.kept {
            // Earlier proxies' entries first, as they came, the client last.
            None => {
                for prior in lines {
                    out.extend_from_slice(prior);
                    out.extend_from_slice(b", ");
                }
            }
            Some(kept) => {
                let entries = lines.flat_map(|v| v.split(|&b| b == b','));
                for entry in entries.take(kept) {
                    out.extend_from_slice(entry.trim_ascii());
                    out.extend_from_slice(b", ");
                }
            }
        }
        push_ip(out, self.client.ip());
        out.extend_from_slice(b"\r\n");
        let sent = fields.get_all("x-forwarded-proto");
        let mut kept_proto = false;
        if self.via_trusted {
            for proto in sent {
                push_line(out, b"x-forwarded-proto", proto);
                kept_proto = true;
            }
        }
        if !kept_proto {
            let proto: &[u8] = if self.tls { b"https" } else { b"http" };
            push_line(out, b"x-forwarded-proto", proto);
        }
    }
}

/// The `X-Forwarded-For` lines received. A line that is not visible ASCII
/// is left out, here and toward the upstream, rather than passed on.
fn xff_lines(fields: &Fields) -> impl Iterator<Item = &[u8]> {
    fields
        .get_all("x-forwarded-for")
        .filter(|v| v.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b)))
}

/// Walk `entries` (nearest hop last) from the right past trusted proxies:
/// the client and how many entries lie left of it. An entry that is not an
/// address stops the walk at the last address known (`peer` at first).
fn rightmost_untrusted(
    entries: &[&[u8]],
    peer: SocketAddr,
    is_trusted: impl Fn(IpAddr) -> bool,
) -> (SocketAddr, usize) {
    let mut client = (peer, entries.len());
    for (i, entry) in entries.iter().enumerate().rev() {
        let Some(addr) = parse_entry(entry) else {
            break;
        };
        client = (addr, i);
        if !is_trusted(addr.ip()) {
            break;
        }
    }
    client
}

/// The `for=` value of one `Forwarded` element (RFC 7239 §4), unquoted;
/// empty when there is none.
fn forwarded_for(element: &[u8]) -> &[u8] {
    element
        .split(|&b| b == b';')
        .map(<[u8]>::trim_ascii)
        .find_map(|pair| {
            let (name, value) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
            name.eq_ignore_ascii_case(b"for").then_some(&value[1..])
        })
        .map(|v| {
            v.strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(v)
        })
        .unwrap_or_default()
}

/// An address as forwarding headers write it: `192.0.2.1`, `192.0.2.1:80`,
/// `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:80` (port 0 when none).
fn parse_entry(entry: &[u8]) -> Option<SocketAddr> {
    let text = std::str::from_utf8(entry).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 0));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    let v6 = text.strip_prefix('[')?.strip_suffix(']')?;
    Some(SocketAddr::new(
        v6.parse::<std::net::Ipv6Addr>().ok()?.into(),
        0,
    ))
}

/// Append one header line.
fn push_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Append `ip` in its usual text form. IPv4, nearly every client, is
/// written digit by digit: `IpAddr`'s `Display` went through the formatting
/// machinery at about 1,500 instructions, 2 % of a session's setup.
pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    use std::io::Write as _;
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        // Writing to a Vec cannot fail.
        IpAddr::V6(_) => {
            let _ = write!(out, "{ip}");
        }
    }
}

#[cfg(test)]
mod tests;
