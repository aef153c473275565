//! Configuration: built-in defaults, then a TOML file, then `WSPULSE_*`
//! environment overrides, validated into [`Settings`].
//!
//! The `config` crate only parses and merges the sources into a generic
//! map. Validation is ours, key by key against the table of known keys, so
//! that a bad file yields *every* problem at once ([`ConfigErrors`]), each
//! naming its dotted key (`keepalive.timeout`, `routes[1].path_prefix`).
//! The environment is injected as a map so tests never touch the process
//! environment; only `main` calls [`process_env`].
//!
//! Environment variables: `WSPULSE_<SECTION>__<KEY>`, e.g.
//! `WSPULSE_UPSTREAM__URL=ws://10.0.0.5:9000`. An empty variable counts as
//! unset. `[[routes]]` can only be set in the file.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use config::{Config, File, FileFormat, Value, ValueKind};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const GIB: usize = 1024 * MIB;
const ENV_PREFIX: &str = "WSPULSE_";

/// Every scalar key, in the order of the example file. Routes are separate.
const KNOWN_KEYS: &[&str] = &[
    "listen.addr",
    "upstream.url",
    "upstream.connect_timeout",
    "upstream.ca_file",
    "upstream.dns_refresh",
    "keepalive.interval",
    "keepalive.timeout",
    "limits.max_message_size",
    "limits.max_frame_size",
    "limits.handshake_timeout",
    "limits.max_connections",
    "admin.addr",
    "admin.recent_closures",
    "shutdown.drain_timeout",
    "shutdown.spread",
    "shutdown.close_code",
    "log.level",
    "log.format",
];
const SECTIONS: &[&str] = &[
    "listen",
    "upstream",
    "keepalive",
    "limits",
    "admin",
    "shutdown",
    "log",
];

// === Settings ===

/// The validated, effective configuration of the proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Where clients connect.
    pub listen: ListenSettings,
    /// The WebSocket server behind the proxy.
    pub upstream: UpstreamSettings,
    /// Proxy-initiated pings on both legs.
    pub keepalive: KeepaliveSettings,
    /// Size, time and count limits.
    pub limits: LimitSettings,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`, `/closures`).
    pub admin: AdminSettings,
    /// Graceful drain on SIGTERM/SIGINT.
    pub shutdown: ShutdownSettings,
    /// Logging.
    pub log: LogSettings,
    /// Route labels by path prefix (longest prefix wins); empty: label `default`.
    pub routes: Vec<Route>,
}

/// `[listen]`
#[derive(Debug, Clone, PartialEq)]
pub struct ListenSettings {
    /// Client listener address (default `127.0.0.1:8080`).
    pub addr: SocketAddr,
}

/// `[upstream]`
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    /// Upstream base URL; the client's path and query are appended to it.
    pub url: UpstreamUrl,
    /// TCP (+TLS) + upgrade deadline for dialing the upstream (default 5s).
    pub connect_timeout: Duration,
    /// Extra trusted CA certificates (PEM) for a `wss://` upstream, on top
    /// of the Mozilla roots; `""` (default) for none.
    pub ca_file: Option<std::path::PathBuf>,
    /// Re-resolve the upstream's host name this often, in the background;
    /// zero resolves it for every session (default 5s). See [`crate::resolver`].
    pub dns_refresh: Duration,
}

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

/// `[keepalive]`
#[derive(Debug, Clone, PartialEq)]
pub struct KeepaliveSettings {
    /// Ping each leg this often; zero disables keepalive (default 15s).
    pub interval: Duration,
    /// No pong within this after a ping: that leg is dead (default 10s).
    pub timeout: Duration,
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq)]
pub struct LimitSettings {
    /// Largest message in bytes; larger: close 1009 to the sender (16 MiB).
    pub max_message_size: usize,
    /// Largest frame in bytes (16 MiB).
    pub max_frame_size: usize,
    /// The client must finish its HTTP upgrade within this (10s).
    pub handshake_timeout: Duration,
    /// Concurrent sessions; beyond it new clients get HTTP 503 (10000).
    pub max_connections: usize,
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    /// Admin listener address (default `127.0.0.1:9090`).
    pub addr: SocketAddr,
    /// Ring size of `/closures`; 0 disables it (default 1000).
    pub recent_closures: usize,
}

/// `[shutdown]`
#[derive(Debug, Clone, PartialEq)]
pub struct ShutdownSettings {
    /// Longest wait for sessions to close after a signal (default 10s).
    pub drain_timeout: Duration,
    /// Spread the drain Close frames over this window; zero: all at once.
    pub spread: Duration,
    /// Close code sent to clients on drain: 1001 (default) or 1012.
    pub close_code: u16,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    /// A `tracing_subscriber::EnvFilter` directive string (default `info`).
    pub level: String,
    /// Output format (default text).
    pub format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// One `[[routes]]` entry: sessions whose path starts with `path_prefix`
/// carry `route="<name>"` on their metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Label value, `[A-Za-z0-9_-]+`, not `default` or `other`.
    pub name: String,
    /// Starts with `/`.
    pub path_prefix: String,
}

impl Default for Settings {
    fn default() -> Self {
        let secs = Duration::from_secs;
        Settings {
            listen: ListenSettings {
                addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            },
            upstream: UpstreamSettings {
                url: UpstreamUrl {
                    tls: false,
                    host: "127.0.0.1".into(),
                    port: 9000,
                    base_path: String::new(),
                },
                connect_timeout: secs(5),
                ca_file: None,
                dns_refresh: secs(5),
            },
            keepalive: KeepaliveSettings {
                interval: secs(15),
                timeout: secs(10),
            },
            limits: LimitSettings {
                max_message_size: 16 * MIB,
                max_frame_size: 16 * MIB,
                handshake_timeout: secs(10),
                max_connections: 10_000,
            },
            admin: AdminSettings {
                addr: SocketAddr::from(([127, 0, 0, 1], 9090)),
                recent_closures: 1000,
            },
            shutdown: ShutdownSettings {
                drain_timeout: secs(10),
                spread: Duration::ZERO,
                close_code: 1001,
            },
            log: LogSettings {
                level: "info".into(),
                format: LogFormat::Text,
            },
            routes: Vec::new(),
        }
    }
}

impl KeepaliveSettings {
    /// Whether the proxy pings at all (`interval` is not zero).
    pub fn enabled(&self) -> bool {
        !self.interval.is_zero()
    }
}

// === impl LogFormat ===

impl LogFormat {
    /// `"text"` or `"json"`, as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!(r#"must be "text" or "json", found {s:?}"#)),
        }
    }
}

// === impl UpstreamUrl ===

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

// === Errors ===

/// One configuration problem: the dotted key and why it is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    /// Dotted key such as `keepalive.timeout` or `routes[1].name`; `file`
    /// (or the file path) for a TOML syntax or read error.
    pub key: String,
    /// Why the value is refused.
    pub reason: String,
}

/// Every problem found in one load, in a stable order; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// One error per line.
impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

fn err(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        reason: reason.into(),
    }
}

// === Loading ===

/// Load: built-in defaults, then the TOML file (if any), then environment
/// overrides from `env` (`WSPULSE_SECTION__KEY`; other names are ignored).
pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Settings, ConfigErrors> {
    match file {
        None => load_text("", "file", env),
        Some(path) => {
            let key = path.display().to_string();
            match std::fs::read_to_string(path) {
                Ok(text) => load_text(&text, &key, env),
                Err(e) => Err(ConfigErrors(vec![err(key, format!("cannot read: {e}"))])),
            }
        }
    }
}

/// Same as [`load`] with the TOML given as text (for tests).
pub fn load_str(toml: &str, env: &HashMap<String, String>) -> Result<Settings, ConfigErrors> {
    load_text(toml, "file", env)
}

/// The process environment, filtered to `WSPULSE_*` keys.
pub fn process_env() -> HashMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            k.starts_with(ENV_PREFIX)
                .then(|| (k, v.to_string_lossy().into_owned()))
        })
        .collect()
}

fn load_text(
    toml: &str,
    file_key: &str,
    env: &HashMap<String, String>,
) -> Result<Settings, ConfigErrors> {
    let mut errors = Vec::new();
    let mut builder = Config::builder().add_source(File::from_str(toml, FileFormat::Toml));
    let mut env_keys = HashSet::new();
    let mut vars: Vec<_> = env.iter().collect();
    vars.sort();
    for (var, value) in vars {
        // Only WSPULSE_<SECTION>__<KEY> names a setting. Others, such as the
        // WSPULSE_SERVICE_HOST / WSPULSE_PORT that Kubernetes injects for a
        // Service named wspulse, are not ours and are ignored.
        let Some(rest) = var
            .strip_prefix(ENV_PREFIX)
            .filter(|r| !value.is_empty() && r.contains("__"))
        else {
            continue;
        };
        let key = rest.to_ascii_lowercase().replace("__", ".");
        match KNOWN_KEYS.iter().find(|k| **k == key) {
            Some(known) => match builder.set_override(*known, value.as_str()) {
                Ok(b) => {
                    builder = b;
                    env_keys.insert(*known);
                }
                Err(e) => return Err(ConfigErrors(vec![err(key, e.to_string())])),
            },
            None if key.starts_with("routes") => {
                errors.push(err(
                    key,
                    format!("{var}: [[routes]] can only be set in the file"),
                ));
            }
            None => {
                let hint = suggest(&key, KNOWN_KEYS);
                errors.push(err(
                    &key,
                    format!("unknown key (environment variable {var}){hint}"),
                ));
            }
        }
    }
    let root = match builder.build().and_then(|c| c.cache.into_table()) {
        Ok(root) => root,
        Err(e) => {
            errors.push(err(file_key, one_line(&e.to_string())));
            return Err(ConfigErrors(errors));
        }
    };
    let settings = validate(root, &env_keys, &mut errors);
    if errors.is_empty() {
        Ok(settings)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// TOML errors span several lines (position, source excerpt, caret,
/// message); keep the first and the last so each problem stays on one line.
fn one_line(msg: &str) -> String {
    let mut lines = msg.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default();
    match lines.next_back() {
        Some(last) => format!("{first}: {last}"),
        None => first.to_owned(),
    }
}

// === Validation ===

fn validate(
    mut root: config::Map<String, Value>,
    env_keys: &HashSet<&str>,
    errors: &mut Vec<ConfigError>,
) -> Settings {
    let mut s = Settings::default();
    let mut bad: HashSet<&str> = HashSet::new();
    for section in SECTIONS {
        let Some(value) = root.remove(*section) else {
            continue;
        };
        let mut table = match value.kind {
            ValueKind::Table(t) => t,
            other => {
                errors.push(err(
                    *section,
                    format!("expected a table, found {}", describe(&other)),
                ));
                continue;
            }
        };
        let keys = KNOWN_KEYS
            .iter()
            .filter(|k| k.split_once('.').is_some_and(|(sec, _)| sec == *section));
        for key in keys {
            let Some(value) = table.remove(&key[section.len() + 1..]) else {
                continue;
            };
            let field = Field {
                value: &value,
                from_env: env_keys.contains(key),
            };
            if let Err(reason) = apply(&mut s, key, &field) {
                let origin = match field.from_env {
                    true => format!(" (environment variable {})", env_var(key)),
                    false => String::new(),
                };
                errors.push(err(*key, format!("{reason}{origin}")));
                bad.insert(key);
            }
        }
        let mut unknown: Vec<_> = table.into_keys().collect();
        unknown.sort();
        for name in unknown {
            let key = format!("{section}.{name}");
            let hint = suggest(&key, KNOWN_KEYS);
            errors.push(err(key, format!("unknown key{hint}")));
        }
    }
    if let Some(value) = root.remove("routes") {
        s.routes = routes(value, errors);
    }
    let mut unknown: Vec<_> = root.into_iter().collect();
    unknown.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in unknown {
        let what = match value.kind {
            ValueKind::Table(_) => "unknown section",
            _ => "unknown key",
        };
        let hint = suggest(&name, &[SECTIONS, &["routes"]].concat());
        errors.push(err(name, format!("{what}{hint}")));
    }
    cross_check(&s, &bad, errors);
    s
}

fn env_var(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.to_ascii_uppercase().replace('.', "__")
    )
}

/// Parse one known key into `s`; single-field rules live here.
fn apply(s: &mut Settings, key: &str, f: &Field<'_>) -> Result<(), String> {
    match key {
        "listen.addr" => s.listen.addr = f.socket_addr()?,
        "upstream.url" => {
            let text = f.string()?;
            s.upstream.url = text
                .parse()
                .map_err(|e| format!("invalid URL {text:?}: {e}"))?;
        }
        "upstream.connect_timeout" => s.upstream.connect_timeout = f.positive_duration()?,
        "upstream.ca_file" => {
            let path = f.string()?;
            s.upstream.ca_file = if path.is_empty() {
                None
            } else {
                // Parse it now, so `check` reports a bad file, not the first dial.
                crate::tls::client_config(Some(Path::new(&path))).map_err(|e| e.to_string())?;
                Some(path.into())
            };
        }
        "upstream.dns_refresh" => s.upstream.dns_refresh = f.duration()?,
        "keepalive.interval" => s.keepalive.interval = f.duration()?,
        "keepalive.timeout" => s.keepalive.timeout = f.duration()?,
        "limits.max_message_size" => s.limits.max_message_size = f.size()?,
        "limits.max_frame_size" => s.limits.max_frame_size = f.size()?,
        "limits.handshake_timeout" => s.limits.handshake_timeout = f.positive_duration()?,
        "limits.max_connections" => s.limits.max_connections = f.count(1)?,
        "admin.addr" => s.admin.addr = f.socket_addr()?,
        "admin.recent_closures" => s.admin.recent_closures = f.count(0)?,
        "shutdown.drain_timeout" => s.shutdown.drain_timeout = f.positive_duration()?,
        "shutdown.spread" => s.shutdown.spread = f.duration()?,
        "shutdown.close_code" => {
            s.shutdown.close_code = match f.int()? {
                n @ (1001 | 1012) => n as u16,
                n => {
                    return Err(format!(
                        "must be 1001 (going away) or 1012 (service restart), found {n}"
                    ));
                }
            }
        }
        "log.level" => s.log.level = log_level(&f.string()?)?,
        "log.format" => s.log.format = f.string()?.parse()?,
        _ => return Err("unknown key".into()),
    }
    Ok(())
}

fn cross_check(s: &Settings, bad: &HashSet<&str>, errors: &mut Vec<ConfigError>) {
    let ok = |keys: &[&str]| keys.iter().all(|k| !bad.contains(k));
    let ka = &s.keepalive;
    if ka.enabled() && ok(&["keepalive.interval", "keepalive.timeout"]) {
        if ka.timeout.is_zero() {
            errors.push(err(
                "keepalive.timeout",
                r#"must be greater than 0 while keepalive is enabled (keepalive.interval = "0s" disables it)"#,
            ));
        } else if ka.timeout > ka.interval {
            errors.push(err(
                "keepalive.timeout",
                format!(
                    "must not exceed keepalive.interval ({}): one ping is outstanding at a time",
                    fmt_duration(ka.interval)
                ),
            ));
        }
    }
    let sd = &s.shutdown;
    if !sd.spread.is_zero()
        && sd.spread >= sd.drain_timeout
        && ok(&["shutdown.spread", "shutdown.drain_timeout"])
    {
        errors.push(err(
            "shutdown.spread",
            format!(
                "must be less than shutdown.drain_timeout ({}): every Close must go out before the drain deadline",
                fmt_duration(sd.drain_timeout)
            ),
        ));
    }
    let l = &s.limits;
    if l.max_frame_size > l.max_message_size
        && ok(&["limits.max_frame_size", "limits.max_message_size"])
    {
        errors.push(err(
            "limits.max_frame_size",
            format!(
                "must not exceed limits.max_message_size ({})",
                fmt_size(l.max_message_size)
            ),
        ));
    }
    let (a, b) = (s.listen.addr, s.admin.addr);
    let same_ip = a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified();
    if a.port() != 0 && a.port() == b.port() && same_ip && ok(&["listen.addr", "admin.addr"]) {
        errors.push(err(
            "admin.addr",
            format!(
                "must not clash with listen.addr ({a}): both would bind port {}",
                a.port()
            ),
        ));
    }
}

fn routes(value: Value, errors: &mut Vec<ConfigError>) -> Vec<Route> {
    let items = match value.kind {
        ValueKind::Array(items) => items,
        other => {
            let found = describe(&other);
            errors.push(err(
                "routes",
                format!("expected an array of tables ([[routes]]), found {found}"),
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut prefixes: HashMap<String, usize> = HashMap::new();
    for (i, item) in items.into_iter().enumerate() {
        let mut table = match item.kind {
            ValueKind::Table(t) => t,
            other => {
                errors.push(err(
                    format!("routes[{i}]"),
                    format!("expected a table, found {}", describe(&other)),
                ));
                continue;
            }
        };
        let mut field = |name: &str, check: fn(&str) -> Result<(), String>| {
            let key = format!("routes[{i}].{name}");
            let text = match table.remove(name) {
                None => Err("missing: every route needs a name and a path_prefix".into()),
                Some(v) => Field {
                    value: &v,
                    from_env: false,
                }
                .string(),
            };
            match text.and_then(|t| check(&t).map(|()| t)) {
                Ok(t) => Some(t),
                Err(reason) => {
                    errors.push(err(key, reason));
                    None
                }
            }
        };
        let name = field("name", route_name);
        let prefix = field("path_prefix", path_prefix);
        let mut unknown: Vec<_> = table.into_keys().collect();
        unknown.sort();
        for k in unknown {
            let hint = suggest(&k, &["name", "path_prefix"]);
            errors.push(err(
                format!("routes[{i}].{k}"),
                format!("unknown key{hint}"),
            ));
        }
        let (Some(name), Some(path_prefix)) = (name, prefix) else {
            continue;
        };
        let mut dup = |seen: &mut HashMap<String, usize>, field: &str, v: &str| match seen.get(v) {
            Some(j) => {
                let reason = format!("duplicate {v:?} (also routes[{j}].{field})");
                errors.push(err(format!("routes[{i}].{field}"), reason));
                true
            }
            None => {
                seen.insert(v.to_owned(), i);
                false
            }
        };
        let dup_name = dup(&mut names, "name", &name);
        let dup_prefix = dup(&mut prefixes, "path_prefix", &path_prefix);
        if !dup_name && !dup_prefix {
            out.push(Route { name, path_prefix });
        }
    }
    out
}

fn route_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("must not be empty".into())
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Err(format!(
            "{name:?} must match [A-Za-z0-9_-]+ (it is a metric label value)"
        ))
    } else if name == "default" || name == "other" {
        Err(format!("{name:?} is reserved for the route label"))
    } else {
        Ok(())
    }
}

fn path_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') {
        Err(format!("{prefix:?} must start with '/'"))
    } else if prefix.contains(['?', '#']) || !prefix.chars().all(|c| c.is_ascii_graphic()) {
        Err(format!("{prefix:?} must be a plain URL path"))
    } else {
        Ok(())
    }
}

fn log_level(level: &str) -> Result<String, String> {
    if level.trim().is_empty() {
        return Err("must not be empty".into());
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| format!("invalid log filter {level:?}: {e}"))?;
    // A bare word is a valid *target* filter, so "debg" or "warning" would be
    // accepted and silently log nothing useful: refuse near-misses of levels.
    const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
    for word in level.split(',').map(|d| d.trim().to_ascii_lowercase()) {
        if word.contains(['=', '[']) || LEVELS.contains(&word.as_str()) {
            continue;
        }
        let near = LEVELS
            .iter()
            .find(|l| edit_distance(&word, l) <= 1 || (**l == "warn" && word == "warning"));
        if let Some(l) = near {
            return Err(format!("{word:?} is not a level; did you mean {l:?}?"));
        }
    }
    Ok(level.to_owned())
}

/// `; did you mean "x"?` when a known name is close to `name`.
fn suggest(name: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, k)| *d <= 2 && 3 * d <= k.len())
        .min()
        .map(|(_, k)| format!("; did you mean {k:?}?"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

// === Value parsers ===

/// One merged value; the environment only gives strings, so numbers from it
/// are parsed here, while the file must use the right TOML type.
struct Field<'a> {
    value: &'a Value,
    from_env: bool,
}

impl Field<'_> {
    fn string(&self) -> Result<String, String> {
        match &self.value.kind {
            ValueKind::String(s) => Ok(s.clone()),
            other => Err(format!("expected a string, found {}", describe(other))),
        }
    }

    fn int(&self) -> Result<i64, String> {
        match &self.value.kind {
            ValueKind::I64(n) => Ok(*n),
            ValueKind::String(s) if self.from_env => s
                .trim()
                .parse()
                .map_err(|_| format!("expected an integer, found {s:?}")),
            other => Err(format!("expected an integer, found {}", describe(other))),
        }
    }

    fn count(&self, min: i64) -> Result<usize, String> {
        let n = self.int()?;
        if n < min {
            return Err(format!("must be at least {min}, found {n}"));
        }
        usize::try_from(n).map_err(|_| format!("{n} is too large"))
    }

    fn duration(&self) -> Result<Duration, String> {
        let ValueKind::String(s) = &self.value.kind else {
            let found = describe(&self.value.kind);
            return Err(format!(
                r#"expected a duration string such as "15s", found {found}"#
            ));
        };
        humantime::parse_duration(s.trim()).map_err(|e| format!("invalid duration {s:?}: {e}"))
    }

    fn positive_duration(&self) -> Result<Duration, String> {
        match self.duration()? {
            d if d.is_zero() => Err("must be greater than 0".into()),
            d => Ok(d),
        }
    }

    fn size(&self) -> Result<usize, String> {
        let bytes = match &self.value.kind {
            ValueKind::I64(n) => u64::try_from(*n).map_err(|_| format!("invalid size {n}"))?,
            ValueKind::String(s) => parse_size(s)?,
            other => {
                let found = describe(other);
                return Err(format!(
                    r#"expected bytes or a size such as "16MiB", found {found}"#
                ));
            }
        };
        match usize::try_from(bytes) {
            Ok(0) => Err("must be greater than 0".into()),
            Ok(n) => Ok(n),
            Err(_) => Err(format!("{bytes} bytes is too large")),
        }
    }

    fn socket_addr(&self) -> Result<SocketAddr, String> {
        let s = self.string()?;
        s.trim().parse().map_err(|_| {
            format!("invalid address {s:?}: expected IP:port, e.g. \"127.0.0.1:8080\"")
        })
    }
}

/// Bytes as an integer, or with a unit: `"64KiB"`, `"16MiB"`, `"1MB"`.
fn parse_size(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("invalid size {s:?}: {e}"))
}

fn describe(kind: &ValueKind) -> String {
    match kind {
        ValueKind::String(s) => format!("string {s:?}"),
        ValueKind::Boolean(b) => format!("boolean {b}"),
        ValueKind::Float(x) => format!("float {x}"),
        ValueKind::Table(_) => "a table".into(),
        ValueKind::Array(_) => "an array".into(),
        ValueKind::Nil => "nothing".into(),
        n => format!("integer {n}"),
    }
}

// === Rendering ===

impl Settings {
    /// Effective settings as TOML, in the shape of the example file;
    /// `load_str` of the output gives back `self`.
    pub fn to_toml(&self) -> String {
        let mut out = format!(
            "[listen]\naddr = {listen}\n\n\
             [upstream]\nurl = {url}\nconnect_timeout = {connect}\nca_file = {ca}\n\
             dns_refresh = {dns}\n\n\
             [keepalive]\ninterval = {interval}\ntimeout = {timeout}\n\n\
             [limits]\nmax_message_size = {msg}\nmax_frame_size = {frame}\n\
             handshake_timeout = {handshake}\nmax_connections = {conns}\n\n\
             [admin]\naddr = {admin}\nrecent_closures = {recent}\n\n\
             [shutdown]\ndrain_timeout = {drain}\nspread = {spread}\nclose_code = {code}\n\n\
             [log]\nlevel = {level}\nformat = {format}\n",
            listen = quote(&self.listen.addr.to_string()),
            url = quote(&self.upstream.url.to_string()),
            connect = quote(&fmt_duration(self.upstream.connect_timeout)),
            ca = quote(
                &self
                    .upstream
                    .ca_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
            dns = quote(&fmt_duration(self.upstream.dns_refresh)),
            interval = quote(&fmt_duration(self.keepalive.interval)),
            timeout = quote(&fmt_duration(self.keepalive.timeout)),
            msg = size_value(self.limits.max_message_size),
            frame = size_value(self.limits.max_frame_size),
            handshake = quote(&fmt_duration(self.limits.handshake_timeout)),
            conns = self.limits.max_connections,
            admin = quote(&self.admin.addr.to_string()),
            recent = self.admin.recent_closures,
            drain = quote(&fmt_duration(self.shutdown.drain_timeout)),
            spread = quote(&fmt_duration(self.shutdown.spread)),
            code = self.shutdown.close_code,
            level = quote(&self.log.level),
            format = quote(self.log.format.as_str()),
        );
        for r in &self.routes {
            out += &format!(
                "\n[[routes]]\nname = {}\npath_prefix = {}\n",
                quote(&r.name),
                quote(&r.path_prefix)
            );
        }
        out
    }
}

fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// `"16MiB"` / `"64KiB"` when exact, else plain bytes.
fn fmt_size(n: usize) -> String {
    match [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")]
        .into_iter()
        .find(|(unit, _)| n > 0 && n.is_multiple_of(*unit))
    {
        Some((unit, name)) => format!("{}{name}", n / unit),
        None => n.to_string(),
    }
}

fn size_value(n: usize) -> String {
    match fmt_size(n) {
        s if s.ends_with('B') => quote(&s),
        s => s,
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out += &format!("\\u{:04X}", u32::from(c)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn no_env() -> HashMap<String, String> {
        HashMap::new()
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn errors(toml: &str) -> Vec<ConfigError> {
        load_str(toml, &no_env())
            .expect_err("config should be refused")
            .0
    }

    /// The single error of `toml`, asserting its key.
    fn one_error(toml: &str, key: &str) -> String {
        let errs = errors(toml);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].key, key, "{errs:?}");
        errs[0].reason.clone()
    }

    fn ok(toml: &str) -> Settings {
        load_str(toml, &no_env()).expect("config should load")
    }

    fn example_path() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/wspulse.example.toml")
    }

    #[test]
    fn nothing_given_is_defaults() {
        assert_eq!(load(None, &no_env()), Ok(Settings::default()));
        assert_eq!(load_str("", &no_env()), Ok(Settings::default()));
        let d = Settings::default();
        assert!(d.keepalive.enabled());
        assert_eq!(d.limits.max_message_size, 16 * 1024 * 1024);
        assert_eq!(d.upstream.url.to_string(), "ws://127.0.0.1:9000");
    }

    #[test]
    fn example_file_equals_defaults() {
        let loaded = load(Some(&example_path()), &no_env());
        assert_eq!(loaded, Ok(Settings::default()));
    }

    #[test]
    fn example_file_names_every_key() {
        let file = File::from(example_path());
        let example = Config::builder().add_source(file).build().expect("parses");
        for key in KNOWN_KEYS {
            assert!(example.get::<Value>(key).is_ok(), "{key} missing");
        }
    }

    #[test]
    fn unknown_key_and_bad_duration_are_both_reported() {
        let errs = errors("[listen]\nadr = \"127.0.0.1:1\"\n[keepalive]\ninterval = \"15x\"\n");
        let keys: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["listen.adr", "keepalive.interval"]);
        assert!(
            errs[0]
                .reason
                .starts_with("unknown key; did you mean \"listen.addr\"")
        );
        assert!(errs[1].reason.starts_with("invalid duration \"15x\": "));
        let shown = ConfigErrors(errs).to_string();
        assert_eq!(shown.lines().count(), 2);
        assert!(shown.starts_with("listen.adr: unknown key"));
    }

    #[test]
    fn syntax_error_is_one_line_naming_the_file() {
        let reason = one_error("[listen\naddr = 1", "file");
        assert!(reason.contains("line 1"), "{reason}");
        assert!(!reason.contains('\n'));
        let missing = Path::new("/nonexistent/wspulse.toml");
        let errs = load(Some(missing), &no_env()).expect_err("missing file").0;
        assert_eq!(errs[0].key, "/nonexistent/wspulse.toml");
    }

    #[test]
    fn wrong_types_and_unknown_sections() {
        let r = one_error(
            "[limits]\nmax_connections = \"many\"",
            "limits.max_connections",
        );
        assert_eq!(r, "expected an integer, found string \"many\"");
        let r = one_error("listen = 5", "listen");
        assert_eq!(r, "expected a table, found integer 5");
        let r = one_error("[keepalive]\ninterval = 15", "keepalive.interval");
        assert!(r.starts_with("expected a duration string"), "{r}");
        let r = one_error("[lisen]\naddr = \"127.0.0.1:1\"", "lisen");
        assert_eq!(r, "unknown section; did you mean \"listen\"?");
        let r = one_error("[listen]\naddr = \"localhost:80\"", "listen.addr");
        assert!(r.starts_with("invalid address"), "{r}");
    }

    #[test]
    fn env_overrides_file() {
        let file = "[limits]\nmax_connections = 10\n[upstream]\nurl = \"ws://a:1\"";
        let vars = env(&[
            ("WSPULSE_LIMITS__MAX_CONNECTIONS", "5"),
            ("WSPULSE_UPSTREAM__URL", "ws://10.0.0.5:9000"),
            ("WSPULSE_KEEPALIVE__INTERVAL", "30s"),
            ("WSPULSE_LOG__LEVEL", ""),
            ("PATH", "/bin"),
        ]);
        let s = load_str(file, &vars).expect("loads");
        assert_eq!(s.limits.max_connections, 5);
        assert_eq!(s.upstream.url.host, "10.0.0.5");
        assert_eq!(s.keepalive.interval, Duration::from_secs(30));
        assert_eq!(s.log.level, "info");
    }

    #[test]
    fn env_problems_name_key_and_variable() {
        let vars = env(&[
            ("WSPULSE_LIMITS__MAX_CONNECTINS", "5"),
            ("WSPULSE_ADMIN__RECENT_CLOSURES", "lots"),
        ]);
        let errs = load_str("", &vars).expect_err("refused").0;
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0].key, "limits.max_connectins");
        assert!(errs[0].reason.contains("WSPULSE_LIMITS__MAX_CONNECTINS"));
        assert!(
            errs[0]
                .reason
                .contains("did you mean \"limits.max_connections\"")
        );
        assert_eq!(errs[1].key, "admin.recent_closures");
        assert!(errs[1].reason.contains("WSPULSE_ADMIN__RECENT_CLOSURES"));
        // Names without `__` are not settings (Kubernetes service links).
        let k8s = env(&[
            ("WSPULSE_SERVICE_HOST", "10.96.0.12"),
            ("WSPULSE_PORT", "tcp://10.96.0.12:8080"),
        ]);
        assert!(load_str("", &k8s).is_ok());
        // the file, not the environment, must use real integers
        let r = one_error("[admin]\nrecent_closures = \"5\"", "admin.recent_closures");
        assert!(!r.contains("WSPULSE"));
    }

    #[test]
    fn keepalive_rules() {
        let r = one_error("[keepalive]\ntimeout = \"20s\"", "keepalive.timeout");
        assert_eq!(
            r,
            "must not exceed keepalive.interval (15s): one ping is outstanding at a time"
        );
        let r = one_error("[keepalive]\ntimeout = \"0s\"", "keepalive.timeout");
        assert!(r.starts_with("must be greater than 0"));
        let s = ok("[keepalive]\ninterval = \"0s\"\ntimeout = \"1m\"");
        assert!(!s.keepalive.enabled());
        // a bad interval does not also blame the timeout
        assert_eq!(
            errors("[keepalive]\ninterval = \"x\"\ntimeout = \"20s\"").len(),
            1
        );
    }

    #[test]
    fn shutdown_rules() {
        let r = one_error("[shutdown]\nclose_code = 1000", "shutdown.close_code");
        assert!(r.contains("1001") && r.contains("1012"));
        assert_eq!(
            ok("[shutdown]\nclose_code = 1012").shutdown.close_code,
            1012
        );
        let r = one_error("[shutdown]\nspread = \"10s\"", "shutdown.spread");
        assert!(r.starts_with("must be less than shutdown.drain_timeout (10s)"));
        assert_eq!(
            ok("[shutdown]\nspread = \"5s\"").shutdown.spread,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn limit_and_timeout_rules() {
        let r = one_error(
            "[limits]\nmax_frame_size = \"32MiB\"",
            "limits.max_frame_size",
        );
        assert_eq!(r, "must not exceed limits.max_message_size (16MiB)");
        let r = one_error("[limits]\nmax_connections = 0", "limits.max_connections");
        assert_eq!(r, "must be at least 1, found 0");
        one_error("[limits]\nmax_message_size = 0", "limits.max_message_size");
        for key in [
            "limits.handshake_timeout",
            "upstream.connect_timeout",
            "shutdown.drain_timeout",
        ] {
            let (section, name) = key.split_once('.').expect("dotted");
            let r = one_error(&format!("[{section}]\n{name} = \"0s\""), key);
            assert_eq!(r, "must be greater than 0");
        }
    }

    #[test]
    fn log_rules() {
        assert_eq!(
            ok("[log]\nlevel = \"info,wspulse=debug\"").log.level,
            "info,wspulse=debug"
        );
        assert_eq!(ok("[log]\nformat = \"json\"").log.format, LogFormat::Json);
        let r = one_error("[log]\nformat = \"xml\"", "log.format");
        assert_eq!(r, "must be \"text\" or \"json\", found \"xml\"");
        for bad in ["wspulse=loud", "warning", "debg", ""] {
            one_error(&format!("[log]\nlevel = {bad:?}"), "log.level");
        }
    }

    #[test]
    fn admin_must_not_clash_with_listen() {
        let r = one_error("[admin]\naddr = \"127.0.0.1:8080\"", "admin.addr");
        assert!(r.starts_with("must not clash with listen.addr (127.0.0.1:8080)"));
        one_error("[admin]\naddr = \"0.0.0.0:8080\"", "admin.addr");
        // port 0 (tests) binds two distinct ephemeral ports
        ok("[listen]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"");
    }

    #[test]
    fn sizes() {
        for (text, bytes) in [
            ("\"16MiB\"", 16_777_216),
            ("65536", 65536),
            ("\"64KiB\"", 65536),
            ("\"1MB\"", 1_000_000),
            ("\"100\"", 100),
        ] {
            let s = ok(&format!("[limits]\nmax_frame_size = {text}"));
            assert_eq!(s.limits.max_frame_size, bytes, "{text}");
        }
        for bad in ["\"16 bananas\"", "-1", "true", "\"0KiB\""] {
            one_error(
                &format!("[limits]\nmax_frame_size = {bad}"),
                "limits.max_frame_size",
            );
        }
        assert_eq!(fmt_size(16 * MIB), "16MiB");
        assert_eq!(fmt_size(1_000_000), "1000000");
    }

    #[test]
    fn upstream_urls() {
        let u: UpstreamUrl = "wss://Example.com/api/".parse().expect("valid");
        assert_eq!((u.tls, u.host.as_str(), u.port), (true, "example.com", 443));
        assert_eq!(u.base_path, "/api");
        assert_eq!(
            u.request_uri("/chat?x=1"),
            "wss://example.com:443/api/chat?x=1"
        );
        assert_eq!(u.to_string(), "wss://example.com/api");
        let u: UpstreamUrl = "ws://[::1]:9000".parse().expect("valid");
        assert_eq!(u.host, "::1");
        assert_eq!(u.request_uri(""), "ws://[::1]:9000/");
        assert_eq!(u.authority(), "[::1]:9000");
        assert_eq!(u.to_string(), "ws://[::1]:9000");
        for port in ["1", "9", "10", "80", "443", "8080", "65535"] {
            let u: UpstreamUrl = format!("ws://h:{port}").parse().expect("valid");
            assert_eq!(u.authority(), format!("h:{port}"));
        }
        for bad in [
            "http://a",
            "ws://",
            "ws://a/?q=1",
            "ws://a/#f",
            "ws://a:0",
            "ws://a:x",
            "ws://u:p@a",
            "a:9000",
            "ws://::1",
            "ws://a/b c",
        ] {
            assert!(bad.parse::<UpstreamUrl>().is_err(), "{bad}");
        }
        let r = one_error("[upstream]\nurl = \"http://a\"", "upstream.url");
        assert!(r.starts_with("invalid URL \"http://a\": scheme must be ws or wss"));
    }

    #[test]
    fn routes_parse() {
        let s = ok("[[routes]]\nname = \"chat\"\npath_prefix = \"/chat\"\n\
                    [[routes]]\nname = \"feed-v2\"\npath_prefix = \"/api/feed\"");
        assert_eq!(s.routes.len(), 2);
        assert_eq!(s.routes[1].name, "feed-v2");
        assert_eq!(s.routes[1].path_prefix, "/api/feed");
    }

    #[test]
    fn route_errors_name_each_entry() {
        let errs = errors(
            "[[routes]]\nname = \"chat\"\npath_prefix = \"/chat\"\n\
             [[routes]]\nname = \"chat\"\npath_prefix = \"/x\"\n\
             [[routes]]\nname = \"other\"\npath_prefix = \"nope\"\n\
             [[routes]]\nname = \"a b\"\npath_prefix = \"/chat\"\n\
             [[routes]]\npath = \"/y\"\n",
        );
        let keys: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "routes[1].name",
                "routes[2].name",
                "routes[2].path_prefix",
                "routes[3].name",
                "routes[4].name",
                "routes[4].path_prefix",
                "routes[4].path",
            ],
            "{errs:?}"
        );
        assert!(errs[0].reason.contains("duplicate"));
        one_error("routes = \"chat\"", "routes");
    }

    #[test]
    fn to_toml_round_trips() {
        let default = Settings::default();
        assert_eq!(load_str(&default.to_toml(), &no_env()), Ok(default));
        let custom = ok(r#"
            [listen]
            addr = "[::]:443"
            [upstream]
            url = "wss://[fe80::1]:8443/base"
            connect_timeout = "1500ms"
            [keepalive]
            interval = "1m 30s"
            timeout = "90s"
            [limits]
            max_message_size = "1GiB"
            max_frame_size = 70000
            max_connections = 1
            [admin]
            addr = "10.0.0.1:9999"
            recent_closures = 0
            [shutdown]
            drain_timeout = "1h"
            spread = "59m"
            close_code = 1012
            [log]
            level = "warn,[req{path=\"/a\"}]=debug"
            format = "json"
            [[routes]]
            name = "x_1"
            path_prefix = "/x"
        "#);
        let text = custom.to_toml();
        assert!(text.contains("max_message_size = \"1GiB\"\nmax_frame_size = 70000\n"));
        assert_eq!(load_str(&text, &no_env()), Ok(custom));
    }
}
