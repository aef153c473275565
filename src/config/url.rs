//! [`UpstreamUrl`]: the `upstream.url` key, parsed once at load into what
//! the dialer needs (scheme, host, port, base path), and written back in
//! canonical form by `wspulse check`.

use std::fmt;
use std::str::FromStr;

/// A parsed `ws://` or `wss://` upstream URL without query or fragment.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamUrl {
    /// `wss://` when true.
    pub tls: bool,
    /// Host name or IP, lowercase, IPv6 without brackets.
    pub host: String,
    /// Port; 80 / 443 when the URL names none.
    pub port: u16,
    /// Path of the URL without trailing `/`; `""` if none.
    pub base_path: String,
}

impl UpstreamUrl {
    /// `host:port`, IPv6 hosts bracketed: what to dial.
    pub fn authority(&self) -> String {
        let mut out = Vec::with_capacity(self.host.len() + 8);
        self.write_authority(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The URI to dial for a client request: scheme, host, port, base path,
    /// then the client's path and query (`"/"` when empty).
    pub fn request_uri(&self, client_path_and_query: &str) -> String {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(self.scheme().as_bytes());
        out.extend_from_slice(b"://");
        self.write_authority(&mut out);
        self.write_target(client_path_and_query, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Append [`Self::authority`] to `out` (the upgrade request's Host;
    /// written in place because it is built once per session).
    pub fn write_authority(&self, out: &mut Vec<u8>) {
        let v6 = self.host.contains(':');
        if v6 {
            out.push(b'[');
        }
        out.extend_from_slice(self.host.as_bytes());
        if v6 {
            out.push(b']');
        }
        out.push(b':');
        // Digit by digit: `to_string` formatted and allocated, per session.
        let mut digits = [0u8; 5];
        let mut at = digits.len();
        let mut port = self.port;
        loop {
            at -= 1;
            digits[at] = b'0' + (port % 10) as u8;
            port /= 10;
            if port == 0 {
                break;
            }
        }
        out.extend_from_slice(&digits[at..]);
    }

    /// Append the request target: the base path, then the client's path
    /// and query (`"/"` when empty).
    pub fn write_target(&self, client_path_and_query: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(self.base_path.as_bytes());
        if !client_path_and_query.starts_with('/') {
            out.push(b'/');
        }
        out.extend_from_slice(client_path_and_query.as_bytes());
    }

    fn scheme(&self) -> &'static str {
        if self.tls { "wss" } else { "ws" }
    }

    fn default_port(&self) -> u16 {
        if self.tls { 443 } else { 80 }
    }
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// The URL in canonical form (default port omitted); parses back to `self`.
impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme(), bracketed(&self.host))?;
        if self.port != self.default_port() {
            write!(f, ":{}", self.port)?;
        }
        f.write_str(&self.base_path)
    }
}

impl FromStr for UpstreamUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or("expected ws://host[:port][/path] or wss://...")?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "ws" => false,
            "wss" => true,
            _ => return Err(format!("scheme must be ws or wss, not {scheme:?}")),
        };
        if rest.contains('?') {
            return Err("must not have a query: the client's query is appended".into());
        }
        if rest.contains('#') {
            return Err("must not have a fragment".into());
        }
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.contains('@') {
            return Err("must not contain user credentials".into());
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => (h, Some(p)),
            _ => (authority, None),
        };
        let host = match host.strip_prefix('[') {
            Some(v6) => v6
                .strip_suffix(']')
                .filter(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok())
                .ok_or_else(|| format!("invalid IPv6 host {host:?}"))?,
            None if host.is_empty() => return Err("must have a host".into()),
            None if host.contains(|c: char| !c.is_ascii_alphanumeric() && !".-_".contains(c)) => {
                return Err(format!("invalid host {host:?} (IPv6 goes in brackets)"));
            }
            None => host,
        };
        let port = match port.map(str::parse::<u16>) {
            None => None,
            Some(Ok(n)) if n > 0 => Some(n),
            Some(_) => return Err(format!("invalid port in {authority:?}")),
        };
        if let Some(c) = path
            .chars()
            .find(|c| !c.is_ascii_graphic() || "\"<>\\^`{|}".contains(*c))
        {
            return Err(format!("invalid character {c:?} in path"));
        }
        let mut url = UpstreamUrl {
            tls,
            host: host.to_ascii_lowercase(),
            port: 0,
            base_path: path.trim_end_matches('/').to_owned(),
        };
        url.port = port.unwrap_or(url.default_port());
        Ok(url)
    }
}
