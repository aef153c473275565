//! The table of every scalar key: its dotted name, one line of doc, how its
//! value is parsed into [`Settings`] and written back, and how it relates
//! to another key. Loading, unknown-key suggestions, the environment
//! variable names, `wspulse check`'s printout and the example file's
//! golden test all read this one table, so a key is added in one place.
//!
//! A default that would break a rule against another key follows that key
//! instead (`follow`): a user who sets only `limits.max_message_size` below
//! 16 MiB must not be refused for `limits.max_frame_size`, which they never
//! wrote.

use super::Settings;
use super::value::{Field, duration_value, fmt_duration, fmt_size, quote, quote_path, size_value};

/// One scalar key of the configuration, `section.name`.
pub(super) struct Key {
    /// The dotted name, as in the file (`[section]` then `name`) and in the
    /// environment (`WSPULSE_SECTION__NAME`).
    pub(super) name: &'static str,
    /// What the key does, in one line: the comment of the example file.
    pub(super) doc: &'static str,
    /// Parse the value into the settings; the rules that need this key only.
    pub(super) parse: fn(&mut Settings, &Field<'_>) -> Result<(), String>,
    /// The effective value as a TOML value.
    pub(super) show: fn(&Settings) -> String,
    /// When set in neither the file nor the environment, the key's value
    /// after every given key is parsed: its default, adjusted to the keys
    /// it depends on (it still holds the default when this runs).
    pub(super) follow: Option<fn(&mut Settings)>,
    /// A rule between this key and another, reported on this key.
    pub(super) rule: Option<Rule>,
}

/// A rule that holds between two keys, checked once both are parsed.
pub(super) struct Rule {
    /// The other key. The rule is skipped when either key was refused, so
    /// one bad value is reported once.
    pub(super) with: &'static str,
    /// `Err(reason)` when the settings break the rule.
    pub(super) check: fn(&Settings) -> Result<(), String>,
}

// === impl Key ===

impl Key {
    /// `listen` of `listen.addr`, `listen.tls` of `listen.tls.cert_file`.
    pub(super) fn section(&self) -> &'static str {
        self.name.rsplit_once('.').map_or(self.name, |(s, _)| s)
    }

    /// `addr` of `listen.addr`: the key inside its section's table.
    pub(super) fn field(&self) -> &'static str {
        self.name.rsplit_once('.').map_or(self.name, |(_, f)| f)
    }
}

/// The sections, in the order of the table (each section's keys are
/// contiguous in it, which a unit test checks).
pub(super) fn sections() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for key in KEYS {
        if out.last() != Some(&key.section()) {
            out.push(key.section());
        }
    }
    out
}

/// The key named `name`, if it is one.
pub(super) fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

// === The table ===

/// Every scalar key, in the order of the example file. `[[routes]]` is an
/// array of tables and has its own module.
pub(super) const KEYS: &[Key] = &[
    Key {
        name: "listen.addr",
        doc: "where clients connect (IP:port)",
        parse: |s, f| {
            s.listen.addr = f.socket_addr()?;
            Ok(())
        },
        show: |s| quote(&s.listen.addr.to_string()),
        follow: None,
        rule: None,
    },
    Key {
        name: "listen.proxy_protocol",
        doc: "every connection starts with a PROXY protocol header (v1 or v2); its source is the client",
        parse: |s, f| {
            s.listen.proxy_protocol = f.bool()?;
            Ok(())
        },
        show: |s| s.listen.proxy_protocol.to_string(),
        follow: None,
        rule: None,
    },
    Key {
        name: "listen.trusted_proxies",
        doc: "CIDRs whose X-Forwarded-For / Forwarded name the client; others' are appended to",
        parse: |s, f| {
            s.listen.trusted_proxies = f
                .strings()?
                .iter()
                .map(|c| c.parse())
                .collect::<Result<_, String>>()?;
            Ok(())
        },
        show: |s| {
            let list: Vec<String> = s
                .listen
                .trusted_proxies
                .iter()
                .map(|c| quote(&c.to_string()))
                .collect();
            format!("[{}]", list.join(", "))
        },
        follow: None,
        rule: None,
    },
    Key {
        name: "listen.tls.cert_file",
        doc: r#"certificate chain (PEM); with key_file the listener speaks TLS only; "" = plain"#,
        parse: |s, f| {
            s.listen.tls.cert_file = f.path()?;
            if let Some(path) = &s.listen.tls.cert_file {
                // Read it now, so `check` reports a bad file, not the first client.
                crate::certs::load_chain(path).map_err(|e| e.to_string())?;
            }
            Ok(())
        },
        show: |s| quote_path(s.listen.tls.cert_file.as_deref()),
        follow: None,
        rule: None,
    },
    Key {
        name: "listen.tls.key_file",
        doc: "the certificate's private key (PEM)",
        parse: |s, f| {
            s.listen.tls.key_file = f.path()?;
            if let Some(path) = &s.listen.tls.key_file {
                let provider = rustls::crypto::ring::default_provider();
                crate::certs::load_key(path, &provider).map_err(|e| e.to_string())?;
            }
            Ok(())
        },
        show: |s| quote_path(s.listen.tls.key_file.as_deref()),
        follow: None,
        rule: Some(Rule {
            with: "listen.tls.cert_file",
            check: |s| match (&s.listen.tls.cert_file, &s.listen.tls.key_file) {
                (None, None) => Ok(()),
                (Some(_), None) => Err("must be set too when listen.tls.cert_file is".into()),
                (None, Some(_)) => Err("set listen.tls.cert_file too, or neither".into()),
                (Some(cert), Some(key)) => crate::certs::load(cert, key)
                    .map(drop)
                    .map_err(|e| e.to_string()),
            },
        }),
    },
    Key {
        name: "listen.tls.reload_interval",
        doc: r#"re-read both files when they change, checked this often (and on SIGHUP); "0s" = on SIGHUP only"#,
        parse: |s, f| {
            s.listen.tls.reload_interval = f.duration()?;
            Ok(())
        },
        show: |s| duration_value(s.listen.tls.reload_interval),
        follow: None,
        rule: None,
    },
    Key {
        name: "upstream.url",
        doc: "ws:// or wss://; the client's path and query are appended to it",
        parse: |s, f| {
            let text = f.string()?;
            s.upstream.url = text
                .parse()
                .map_err(|e| format!("invalid URL {text:?}: {e}"))?;
            Ok(())
        },
        show: |s| quote(&s.upstream.url.to_string()),
        follow: None,
        rule: None,
    },
    Key {
        name: "upstream.connect_timeout",
        doc: "dial + upgrade deadline; then 504 to the client",
        parse: |s, f| {
            s.upstream.connect_timeout = f.positive_duration()?;
            Ok(())
        },
        show: |s| duration_value(s.upstream.connect_timeout),
        follow: None,
        rule: None,
    },
    Key {
        name: "upstream.ca_file",
        doc: r#"extra CA certificates (PEM) trusted for a wss:// upstream; "" = Mozilla roots only"#,
        parse: |s, f| {
            s.upstream.ca_file = f.path()?;
            if let Some(path) = &s.upstream.ca_file {
                // Build it now, so `check` reports a bad file, not the first dial.
                crate::tls::client_config(Some(path)).map_err(|e| e.to_string())?;
            }
            Ok(())
        },
        show: |s| quote_path(s.upstream.ca_file.as_deref()),
        follow: None,
        rule: None,
    },
    Key {
        name: "upstream.dns_refresh",
        doc: r#"re-resolve the upstream host name this often, in the background; "0s" = for every session"#,
        parse: |s, f| {
            s.upstream.dns_refresh = f.duration()?;
            Ok(())
        },
        show: |s| duration_value(s.upstream.dns_refresh),
        follow: None,
        rule: None,
    },
    Key {
        name: "keepalive.interval",
        doc: r#"proxy pings each leg this often; "0s" disables keepalive"#,
        parse: |s, f| {
            s.keepalive.interval = f.duration()?;
            Ok(())
        },
        show: |s| duration_value(s.keepalive.interval),
        follow: None,
        rule: None,
    },
    Key {
        name: "keepalive.timeout",
        doc: "no pong within this after a ping: that leg is dead; <= interval (unset: interval if that is shorter)",
        parse: |s, f| {
            s.keepalive.timeout = f.duration()?;
            Ok(())
        },
        show: |s| duration_value(s.keepalive.timeout),
        // A short interval alone must not be refused for the default timeout.
        follow: Some(|s| {
            let ka = &mut s.keepalive;
            if ka.enabled() {
                ka.timeout = ka.timeout.min(ka.interval);
            }
        }),
        rule: Some(Rule {
            with: "keepalive.interval",
            check: |s| {
                let ka = &s.keepalive;
                if !ka.enabled() {
                    Ok(())
                } else if ka.timeout.is_zero() {
                    Err(r#"must be greater than 0 while keepalive is enabled (keepalive.interval = "0s" disables it)"#.into())
                } else if ka.timeout > ka.interval {
                    Err(format!(
                        "must not exceed keepalive.interval ({}): one ping is outstanding at a time",
                        fmt_duration(ka.interval)
                    ))
                } else {
                    Ok(())
                }
            },
        }),
    },
    Key {
        name: "limits.max_message_size",
        doc: "larger message: close 1009 to the sender",
        parse: |s, f| {
            s.limits.max_message_size = f.size()?;
            Ok(())
        },
        show: |s| size_value(s.limits.max_message_size),
        follow: None,
        rule: None,
    },
    Key {
        name: "limits.max_frame_size",
        doc: "larger frame: close 1009 to the sender; <= max_message_size (unset: max_message_size if that is smaller)",
        parse: |s, f| {
            s.limits.max_frame_size = f.size()?;
            Ok(())
        },
        show: |s| size_value(s.limits.max_frame_size),
        // A small message size alone must not be refused for the default frame size.
        follow: Some(|s| {
            let l = &mut s.limits;
            l.max_frame_size = l.max_frame_size.min(l.max_message_size);
        }),
        rule: Some(Rule {
            with: "limits.max_message_size",
            check: |s| {
                let l = &s.limits;
                if l.max_frame_size > l.max_message_size {
                    Err(format!(
                        "must not exceed limits.max_message_size ({})",
                        fmt_size(l.max_message_size)
                    ))
                } else {
                    Ok(())
                }
            },
        }),
    },
    Key {
        name: "limits.handshake_timeout",
        doc: "client must finish its HTTP upgrade within this",
        parse: |s, f| {
            s.limits.handshake_timeout = f.positive_duration()?;
            Ok(())
        },
        show: |s| duration_value(s.limits.handshake_timeout),
        follow: None,
        rule: None,
    },
    Key {
        name: "limits.max_connections",
        doc: "beyond it: HTTP 503 to new clients, counted",
        parse: |s, f| {
            s.limits.max_connections = f.count(1)?;
            Ok(())
        },
        show: |s| s.limits.max_connections.to_string(),
        follow: None,
        rule: None,
    },
    Key {
        name: "limits.max_handshakes_per_second",
        doc: "upgrades admitted per second (burst: one second's worth); beyond: 503 + Retry-After; 0 = unlimited",
        parse: |s, f| {
            s.limits.max_handshakes_per_second =
                u32::try_from(f.count(0)?).map_err(|_| "too large".to_string())?;
            Ok(())
        },
        show: |s| s.limits.max_handshakes_per_second.to_string(),
        follow: None,
        rule: None,
    },
    Key {
        name: "limits.max_connections_per_client",
        doc: "sessions one client (clients.identity) may hold; beyond: 503 + Retry-After; 0 = unlimited",
        parse: |s, f| {
            s.limits.max_connections_per_client =
                u32::try_from(f.count(0)?).map_err(|_| "too large".to_string())?;
            Ok(())
        },
        show: |s| s.limits.max_connections_per_client.to_string(),
        follow: None,
        rule: None,
    },
    Key {
        name: "compression.mode",
        doc: r#""passthrough": permessage-deflate negotiated end to end, relayed compressed | "off": stripped"#,
        parse: |s, f| {
            s.compression.mode = f.string()?.parse()?;
            Ok(())
        },
        show: |s| quote(s.compression.mode.as_str()),
        follow: None,
        rule: None,
    },
    Key {
        name: "clients.identity",
        doc: r#"what identifies a client: "ip" | "header:NAME" | "cookie:NAME" | "query:NAME" (hashed, never stored raw)"#,
        parse: |s, f| {
            s.clients.identity = f.string()?.parse()?;
            Ok(())
        },
        show: |s| quote(&s.clients.identity.to_string()),
        follow: None,
        rule: None,
    },
    Key {
        name: "clients.track",
        doc: "client identities remembered (memory bound); 0 turns reconnect tracking and the per-client cap off",
        parse: |s, f| {
            s.clients.track = f.count(0)?;
            Ok(())
        },
        show: |s| s.clients.track.to_string(),
        follow: None,
        rule: None,
    },
    Key {
        name: "clients.remember",
        doc: "how long a client's last ending is remembered for its reconnect delay",
        parse: |s, f| {
            s.clients.remember = f.duration()?;
            Ok(())
        },
        show: |s| duration_value(s.clients.remember),
        follow: None,
        rule: None,
    },
    Key {
        name: "admin.addr",
        doc: "/metrics, /healthz, /readyz, /closures",
        parse: |s, f| {
            s.admin.addr = f.socket_addr()?;
            Ok(())
        },
        show: |s| quote(&s.admin.addr.to_string()),
        follow: None,
        rule: Some(Rule {
            with: "listen.addr",
            check: |s| {
                let (a, b) = (s.listen.addr, s.admin.addr);
                let same_ip =
                    a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified();
                // Port 0 (tests) binds two distinct ephemeral ports.
                if a.port() != 0 && a.port() == b.port() && same_ip {
                    Err(format!(
                        "must not clash with listen.addr ({a}): both would bind port {}",
                        a.port()
                    ))
                } else {
                    Ok(())
                }
            },
        }),
    },
    Key {
        name: "admin.recent_closures",
        doc: "ring size of /closures; 0 disables it",
        parse: |s, f| {
            s.admin.recent_closures = f.count(0)?;
            Ok(())
        },
        show: |s| s.admin.recent_closures.to_string(),
        follow: None,
        rule: None,
    },
    Key {
        name: "shutdown.drain_timeout",
        doc: "wait at most this for sessions to close on SIGTERM/SIGINT",
        parse: |s, f| {
            s.shutdown.drain_timeout = f.positive_duration()?;
            Ok(())
        },
        show: |s| duration_value(s.shutdown.drain_timeout),
        follow: None,
        rule: None,
    },
    Key {
        name: "shutdown.spread",
        doc: "spread drain Close frames over this window (avoids reconnect storms); < drain_timeout",
        parse: |s, f| {
            s.shutdown.spread = f.duration()?;
            Ok(())
        },
        show: |s| duration_value(s.shutdown.spread),
        // Its default, 0s, holds for every drain_timeout: nothing to follow.
        follow: None,
        rule: Some(Rule {
            with: "shutdown.drain_timeout",
            check: |s| {
                let sd = &s.shutdown;
                if !sd.spread.is_zero() && sd.spread >= sd.drain_timeout {
                    Err(format!(
                        "must be less than shutdown.drain_timeout ({}): every Close must go out before the drain deadline",
                        fmt_duration(sd.drain_timeout)
                    ))
                } else {
                    Ok(())
                }
            },
        }),
    },
    Key {
        name: "shutdown.close_code",
        doc: "code sent to clients on drain: 1001 or 1012 (service restart)",
        parse: |s, f| {
            s.shutdown.close_code = match f.int()? {
                n @ (1001 | 1012) => n as u16,
                n => {
                    return Err(format!(
                        "must be 1001 (going away) or 1012 (service restart), found {n}"
                    ));
                }
            };
            Ok(())
        },
        show: |s| s.shutdown.close_code.to_string(),
        follow: None,
        rule: None,
    },
    Key {
        name: "shutdown.final_scrape",
        doc: r#"after a drain, keep /metrics up until one scrape is served or this long passed; "0s" = exit at once"#,
        parse: |s, f| {
            // Longer than any sane scrape interval: a typo (`"30m"` for
            // `"30s"`) would hold every pod's termination that long.
            const MAX: std::time::Duration = std::time::Duration::from_secs(15 * 60);
            match f.duration()? {
                d if d > MAX => Err(format!(
                    "must be at most {} (a scrape interval or two)",
                    fmt_duration(MAX)
                )),
                d => {
                    s.shutdown.final_scrape = d;
                    Ok(())
                }
            }
        },
        show: |s| duration_value(s.shutdown.final_scrape),
        follow: None,
        rule: None,
    },
    Key {
        name: "log.level",
        doc: r#"tracing EnvFilter syntax accepted, e.g. "info,wspulse=debug""#,
        parse: |s, f| {
            s.log.level = f.log_level()?;
            Ok(())
        },
        show: |s| quote(&s.log.level),
        follow: None,
        rule: None,
    },
    Key {
        name: "log.format",
        doc: r#""text" | "json""#,
        parse: |s, f| {
            s.log.format = f.string()?.parse()?;
            Ok(())
        },
        show: |s| quote(s.log.format.as_str()),
        follow: None,
        rule: None,
    },
];
