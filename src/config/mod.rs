//! Configuration: built-in defaults, then a TOML file, then `WSPULSE_*`
//! environment overrides, validated into [`Settings`].
//!
//! The `config` crate only parses and merges the sources into a generic
//! map. Validation is ours, key by key against one table of known keys
//! (`keys.rs`), so that a bad file yields *every* problem at once
//! ([`ConfigErrors`]), each naming its dotted key (`keepalive.timeout`,
//! `routes[1].path_prefix`). The same table writes the effective settings
//! back ([`Settings::to_toml`], `wspulse check`) and, with its doc lines,
//! the example file `config/wspulse.example.toml`, which a test holds to it.
//! The environment is injected as a map so tests never touch the process
//! environment; only `main` calls [`process_env`].
//!
//! Environment variables: `WSPULSE_<SECTION>__<KEY>`, e.g.
//! `WSPULSE_UPSTREAM__URL=ws://10.0.0.5:9000`. An empty variable counts as
//! unset. `[[routes]]` can only be set in the file.
//!
//! Files: `keys.rs` the table, `value.rs` parsing and writing one value,
//! `url.rs` the upstream URL, `routes.rs` the `[[routes]]` array.

mod keys;
mod routes;
#[cfg(test)]
mod tests;
mod url;
mod value;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use config::{Config, File, FileFormat, Value, ValueKind};

pub use crate::forwarded::Cidr;
pub use routes::Route;
pub use url::UpstreamUrl;

use keys::KEYS;
use value::{MIB, describe};

const ENV_PREFIX: &str = "WSPULSE_";

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
    /// WebSocket compression across the proxy.
    pub compression: CompressionSettings,
    /// How clients come back: identity and tracking.
    pub clients: ClientSettings,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`, `/closures`).
    pub admin: AdminSettings,
    /// Graceful drain on SIGTERM/SIGINT.
    pub shutdown: ShutdownSettings,
    /// Logging.
    pub log: LogSettings,
    /// Route labels by path prefix (longest prefix wins); empty: label `default`.
    pub routes: Vec<Route>,
}

/// `[compression]`
#[derive(Debug, Clone, PartialEq)]
pub struct CompressionSettings {
    /// What happens to permessage-deflate (default passthrough).
    pub mode: CompressionMode,
}

/// `compression.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompressionMode {
    /// The client's permessage-deflate offers go upstream as sent, the
    /// upstream's answer comes back as sent, and compressed frames are
    /// relayed untouched (never inflated).
    #[default]
    Passthrough,
    /// No extension is negotiated on either leg.
    Off,
}

/// `[listen]`
#[derive(Debug, Clone, PartialEq)]
pub struct ListenSettings {
    /// Client listener address (default `127.0.0.1:8080`).
    pub addr: SocketAddr,
    /// Every connection starts with a PROXY protocol header (v1 or v2)
    /// whose source is the client's address (default false).
    pub proxy_protocol: bool,
    /// Peers whose forwarding headers are believed (default none). See
    /// [`crate::forwarded`].
    pub trusted_proxies: Vec<Cidr>,
    /// TLS on the listener.
    pub tls: ListenTlsSettings,
}

/// `[listen.tls]`
#[derive(Debug, Clone, PartialEq)]
pub struct ListenTlsSettings {
    /// Certificate chain (PEM, leaf first); with `key_file`, the listener
    /// speaks TLS only (default none: plain).
    pub cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub key_file: Option<PathBuf>,
    /// Check both files for a change this often; zero: only on SIGHUP
    /// (default 10s).
    pub reload_interval: Duration,
}

impl ListenTlsSettings {
    /// Whether the listener speaks TLS: both files are set.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }
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

/// `[keepalive]`
#[derive(Debug, Clone, PartialEq)]
pub struct KeepaliveSettings {
    /// Ping each leg this often; zero disables keepalive (default 15s).
    pub interval: Duration,
    /// No pong within this after a ping: that leg is dead (default 10s, or
    /// `interval` when that is shorter and the timeout is not set).
    pub timeout: Duration,
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq)]
pub struct LimitSettings {
    /// Largest message in bytes; larger: close 1009 to the sender (16 MiB).
    pub max_message_size: usize,
    /// Largest frame in bytes; at most `max_message_size` (default 16 MiB,
    /// or `max_message_size` when that is smaller and the frame size is not set).
    pub max_frame_size: usize,
    /// The client must finish its HTTP upgrade within this (10s).
    pub handshake_timeout: Duration,
    /// Concurrent sessions; beyond it new clients get HTTP 503 (10000).
    pub max_connections: usize,
    /// Upgrade requests admitted per second, a token bucket with a burst of
    /// one second's worth; beyond: 503 with `Retry-After` (0: unlimited).
    pub max_handshakes_per_second: u32,
    /// Sessions one client identity may hold; beyond: 503 (0: unlimited).
    pub max_connections_per_client: u32,
}

/// `[clients]`
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSettings {
    /// What identifies a client (default its address).
    pub identity: ClientIdentity,
    /// Client identities remembered at most (0: the feature is off).
    pub track: usize,
    /// How long a client's last ending is remembered.
    pub remember: Duration,
}

/// `clients.identity`: where a client's identity is read from. A request
/// that lacks the named header, cookie or parameter is identified by its
/// address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIdentity {
    /// The client's address (`"ip"`).
    Ip,
    /// A request header (`"header:NAME"`), compared case-insensitively.
    Header(String),
    /// A cookie (`"cookie:NAME"`).
    Cookie(String),
    /// A query parameter (`"query:NAME"`).
    Query(String),
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
    /// After a drain, keep the admin server up until one `/metrics` scrape
    /// has been served or this long has passed; zero (default): exit at once.
    pub final_scrape: Duration,
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

impl Default for Settings {
    fn default() -> Self {
        let secs = Duration::from_secs;
        Settings {
            listen: ListenSettings {
                addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
                proxy_protocol: false,
                trusted_proxies: Vec::new(),
                tls: ListenTlsSettings {
                    cert_file: None,
                    key_file: None,
                    reload_interval: secs(10),
                },
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
                max_handshakes_per_second: 0,
                max_connections_per_client: 0,
            },
            admin: AdminSettings {
                addr: SocketAddr::from(([127, 0, 0, 1], 9090)),
                recent_closures: 1000,
            },
            shutdown: ShutdownSettings {
                drain_timeout: secs(10),
                spread: Duration::ZERO,
                close_code: 1001,
                final_scrape: Duration::ZERO,
            },
            compression: CompressionSettings {
                mode: CompressionMode::Passthrough,
            },
            clients: ClientSettings {
                identity: ClientIdentity::Ip,
                track: 100_000,
                remember: secs(600),
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

// === impl ClientIdentity ===

impl std::fmt::Display for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientIdentity::Ip => f.write_str("ip"),
            ClientIdentity::Header(n) => write!(f, "header:{n}"),
            ClientIdentity::Cookie(n) => write!(f, "cookie:{n}"),
            ClientIdentity::Query(n) => write!(f, "query:{n}"),
        }
    }
}

impl FromStr for ClientIdentity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let named = |kind: &str, name: &str| {
            let ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if ok {
                Ok(name.to_string())
            } else {
                Err(format!(
                    "{kind}: needs a name of letters, digits, '-', '_' or '.', found {name:?}"
                ))
            }
        };
        match s.split_once(':') {
            None if s == "ip" => Ok(ClientIdentity::Ip),
            Some(("header", n)) => named("header", n).map(ClientIdentity::Header),
            Some(("cookie", n)) => named("cookie", n).map(ClientIdentity::Cookie),
            Some(("query", n)) => named("query", n).map(ClientIdentity::Query),
            _ => Err(format!(
                r#"must be "ip", "header:NAME", "cookie:NAME" or "query:NAME", found {s:?}"#
            )),
        }
    }
}

// === impl CompressionMode ===

impl CompressionMode {
    /// `"passthrough"` or `"off"`, as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            CompressionMode::Passthrough => "passthrough",
            CompressionMode::Off => "off",
        }
    }
}

impl FromStr for CompressionMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "passthrough" => Ok(CompressionMode::Passthrough),
            "off" => Ok(CompressionMode::Off),
            _ => Err(format!(r#"must be "passthrough" or "off", found {s:?}"#)),
        }
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
        match keys::find(&key) {
            Some(known) => match builder.set_override(known.name, value.as_str()) {
                Ok(b) => {
                    builder = b;
                    env_keys.insert(known.name);
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
                let hint = suggest(&key, KEYS.iter().map(|k| k.name));
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

/// The keys one load has seen.
#[derive(Default)]
struct Seen {
    /// Set in the file or the environment.
    given: HashSet<&'static str>,
    /// Refused; the rules that read them are skipped, so each bad value is
    /// reported once.
    bad: HashSet<&'static str>,
}

fn validate(
    mut root: config::Map<String, Value>,
    env_keys: &HashSet<&str>,
    errors: &mut Vec<ConfigError>,
) -> Settings {
    let mut s = Settings::default();
    let mut seen = Seen::default();
    let sections = keys::sections();
    for section in sections.iter().filter(|s| !s.contains('.')) {
        if let Some(value) = root.remove(*section) {
            parse_section(&mut s, section, value, env_keys, &mut seen, errors);
        }
    }
    if let Some(value) = root.remove("routes") {
        s.routes = routes::routes(value, errors);
    }
    let mut unknown: Vec<_> = root.into_iter().collect();
    unknown.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in unknown {
        let what = match value.kind {
            ValueKind::Table(_) => "unknown section",
            _ => "unknown key",
        };
        let hint = suggest(&name, sections.iter().copied().chain(["routes"]));
        errors.push(err(name, format!("{what}{hint}")));
    }
    relate(&mut s, &seen, errors);
    s
}

/// Parse the keys of one `[section]` into `s`; report refused and unknown keys.
fn parse_section(
    s: &mut Settings,
    section: &str,
    value: Value,
    env_keys: &HashSet<&str>,
    seen: &mut Seen,
    errors: &mut Vec<ConfigError>,
) {
    let mut table = match value.kind {
        ValueKind::Table(t) => t,
        other => {
            let found = describe(&other);
            errors.push(err(section, format!("expected a table, found {found}")));
            return;
        }
    };
    for key in KEYS.iter().filter(|k| k.section() == section) {
        let Some(value) = table.remove(key.field()) else {
            continue;
        };
        seen.given.insert(key.name);
        let field = value::Field {
            value: &value,
            from_env: env_keys.contains(key.name),
        };
        if let Err(reason) = (key.parse)(s, &field) {
            let origin = match field.from_env {
                true => format!(" (environment variable {})", env_var(key.name)),
                false => String::new(),
            };
            errors.push(err(key.name, format!("{reason}{origin}")));
            seen.bad.insert(key.name);
        }
    }
    // Subsections (`[listen.tls]`) are tables inside their parent's.
    for sub in keys::sections() {
        if let Some(name) = sub
            .strip_prefix(section)
            .and_then(|rest| rest.strip_prefix('.'))
            && let Some(value) = table.remove(name)
        {
            parse_section(s, sub, value, env_keys, seen, errors);
        }
    }
    let mut unknown: Vec<_> = table.into_keys().collect();
    unknown.sort();
    for name in unknown {
        let key = format!("{section}.{name}");
        let hint = suggest(&key, KEYS.iter().map(|k| k.name));
        errors.push(err(key, format!("unknown key{hint}")));
    }
}

/// Once every given key is parsed: the defaults that depend on another key
/// follow it, then the rules between two keys are checked.
fn relate(s: &mut Settings, seen: &Seen, errors: &mut Vec<ConfigError>) {
    for key in KEYS.iter().filter(|k| !seen.given.contains(k.name)) {
        if let Some(follow) = key.follow {
            follow(s);
        }
    }
    for key in KEYS {
        let Some(rule) = &key.rule else { continue };
        if seen.bad.contains(key.name) || seen.bad.contains(rule.with) {
            continue;
        }
        if let Err(reason) = (rule.check)(s) {
            errors.push(err(key.name, reason));
        }
    }
}

fn env_var(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.to_ascii_uppercase().replace('.', "__")
    )
}

/// `; did you mean "x"?` when a known name is close to `name`.
fn suggest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    known
        .into_iter()
        .map(|k| (strsim::levenshtein(name, k), k))
        .filter(|(d, k)| *d <= 2 && 3 * d <= k.len())
        .min()
        .map(|(_, k)| format!("; did you mean {k:?}?"))
        .unwrap_or_default()
}

// === Rendering ===

impl Settings {
    /// Effective settings as TOML, in the shape of the example file;
    /// `load_str` of the output gives back `self`.
    pub fn to_toml(&self) -> String {
        self.render(false)
    }

    /// [`Self::to_toml`], with each key's doc line as a trailing comment
    /// when `docs` (the body of the example file).
    fn render(&self, docs: bool) -> String {
        let mut out = String::new();
        for (i, section) in keys::sections().into_iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out += &format!("[{section}]\n");
            for key in KEYS.iter().filter(|k| k.section() == section) {
                let line = format!("{} = {}", key.field(), (key.show)(self));
                out += &match docs {
                    true => format!("{line:<32} # {}\n", key.doc),
                    false => format!("{line}\n"),
                };
            }
        }
        for r in &self.routes {
            out += &format!(
                "\n[[routes]]\nname = {}\npath_prefix = {}\n",
                value::quote(&r.name),
                value::quote(&r.path_prefix)
            );
        }
        out
    }
}
