//! WebSocket extension negotiation as a passthrough (RFC 6455 §9.1,
//! RFC 7692): which of the client's offers go upstream, and whether the
//! upstream's answer answers one of them.
//!
//! wspulse relays permessage-deflate without taking part in it: the offers
//! go upstream as the client sent them, the answer comes back as the
//! upstream sent it, and compressed frames cross the proxy untouched. That
//! is exact because every frame the proxy writes itself is a control frame
//! (ping, pong, close), which permessage-deflate never compresses, so both
//! peers' compression contexts stay in step. Any other extension is
//! dropped from the offer: the proxy could not relay frames it does not
//! understand.
//!
//! A leaf: pure functions over header bytes.

/// The one extension wspulse passes through.
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// The elements of an extension list, split on commas outside quoted
/// strings, trimmed, empty ones skipped.
fn elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut quoted = false;
    let mut escaped = false;
    value
        .split(move |&b| {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b',' if !quoted => return true,
                _ => {}
            }
            false
        })
        .map(<[u8]>::trim_ascii)
        .filter(|e| !e.is_empty())
}

/// One extension parameter: its name, and its value if it has one.
type Param<'a> = (&'a [u8], Option<&'a [u8]>);

/// An element's name and its parameters (`name` or `name=value`, the value
/// unquoted), all trimmed.
fn parts(element: &[u8]) -> (&[u8], impl Iterator<Item = Param<'_>>) {
    let mut it = element.split(|&b| b == b';').map(<[u8]>::trim_ascii);
    let name = it.next().unwrap_or_default();
    let params = it
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|&b| b == b'=') {
            None => (p, None),
            Some(i) => {
                let v = p[i + 1..].trim_ascii();
                let v = v
                    .strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(v);
                (p[..i].trim_ascii(), Some(v))
            }
        });
    (name, params)
}

fn is_deflate(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE.as_bytes())
}

/// Append the client's permessage-deflate offers, as sent, from all of its
/// `Sec-WebSocket-Extensions` field values, comma-separated, to `out`;
/// every other extension is left out. Returns whether there was any.
pub fn write_deflate_offers<'a>(values: impl Iterator<Item = &'a [u8]>, out: &mut Vec<u8>) -> bool {
    let mut any = false;
    for element in values.flat_map(elements) {
        if is_deflate(parts(element).0) {
            if any {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(element);
            any = true;
        }
    }
    any
}

/// Why an upstream's `Sec-WebSocket-Extensions` answer is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadAnswer {
    /// The client offered no permessage-deflate.
    NotOffered,
    /// Not exactly one element, or one that is not permessage-deflate.
    OtherExtension,
    /// A parameter RFC 7692 does not define, a duplicate, or a bad value.
    BadParameter,
    /// `client_max_window_bits` with a value the client did not invite.
    ClientWindowNotOffered,
}

impl BadAnswer {
    /// The reason, for the log and the 502's cause.
    pub fn as_str(self) -> &'static str {
        match self {
            BadAnswer::NotOffered => "upstream chose an extension that was not offered",
            BadAnswer::OtherExtension => {
                "upstream answered with an extension other than one permessage-deflate"
            }
            BadAnswer::BadParameter => "upstream's permessage-deflate answer has a bad parameter",
            BadAnswer::ClientWindowNotOffered => {
                "upstream set client_max_window_bits, which the client did not offer"
            }
        }
    }
}

/// Check the upstream's answer against the client's offers (RFC 7692 §7.1):
/// one permessage-deflate element with known parameters, each at most
/// once, window sizes 8–15, and `client_max_window_bits` only when an
/// offer invited it. The client checks the rest against what it offered.
pub fn check_answer<'a>(
    answer: &[u8],
    offers: impl Iterator<Item = &'a [u8]>,
) -> Result<(), BadAnswer> {
    let mut offered = false;
    let mut client_window_offered = false;
    for element in offers.flat_map(elements) {
        let (name, mut params) = parts(element);
        if is_deflate(name) {
            offered = true;
            client_window_offered |= params.any(|(k, _)| k == b"client_max_window_bits");
        }
    }
    if !offered {
        return Err(BadAnswer::NotOffered);
    }
    let mut chosen = elements(answer);
    let (Some(element), None) = (chosen.next(), chosen.next()) else {
        return Err(BadAnswer::OtherExtension);
    };
    let (name, params) = parts(element);
    if !is_deflate(name) {
        return Err(BadAnswer::OtherExtension);
    }
    let mut seen = [false; 4];
    for (key, value) in params {
        let (i, window) = match key {
            b"server_no_context_takeover" => (0, false),
            b"client_no_context_takeover" => (1, false),
            b"server_max_window_bits" => (2, true),
            b"client_max_window_bits" => (3, true),
            _ => return Err(BadAnswer::BadParameter),
        };
        if std::mem::replace(&mut seen[i], true) {
            return Err(BadAnswer::BadParameter);
        }
        let valid = match value {
            None => !window,
            Some(v) => {
                window
                    && std::str::from_utf8(v)
                        .ok()
                        .filter(|s| s.len() <= 2 && !s.starts_with('0'))
                        .and_then(|s| s.parse::<u8>().ok())
                        .is_some_and(|bits| (8..=15).contains(&bits))
            }
        };
        if !valid {
            return Err(BadAnswer::BadParameter);
        }
        if i == 3 && !client_window_offered {
            return Err(BadAnswer::ClientWindowNotOffered);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
