//! Unit tests of loading and validation: each rule, each error's key and
//! reason, the environment, the dependent defaults, and the example file.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use super::keys;
use super::value::{KIB, fmt_size};
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
    for key in KEYS {
        let key = key.name;
        assert!(example.get::<Value>(key).is_ok(), "{key} missing");
    }
}

/// The example file is a comment header, then every key with its default
/// and its doc line as written by the key table, then comments: it cannot
/// drift from the table, whose keys it documents.
#[test]
fn example_file_is_the_key_table() {
    let text = std::fs::read_to_string(example_path()).expect("example file");
    let body = Settings::default().render(true);
    let Some(at) = text.find(&body) else {
        panic!(
            "config/wspulse.example.toml differs from the key table; its keys should read:\n{body}"
        );
    };
    let around = [&text[..at], &text[at + body.len()..]];
    for line in around.iter().flat_map(|t| t.lines()) {
        assert!(
            line.is_empty() || line.starts_with('#'),
            "not generated from the key table: {line:?}"
        );
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

// === Defaults that follow another key ===

#[test]
fn max_frame_size_follows_a_smaller_max_message_size() {
    // The case that was refused for a key the user never wrote.
    let s = ok("[limits]\nmax_message_size = \"16MB\"");
    assert_eq!(s.limits.max_message_size, 16_000_000);
    assert_eq!(s.limits.max_frame_size, 16_000_000);
    let vars = env(&[("WSPULSE_LIMITS__MAX_MESSAGE_SIZE", "64KiB")]);
    let s = load_str("", &vars).expect("loads");
    assert_eq!(s.limits.max_frame_size, 64 * KIB);
    // A larger message size leaves the frame size at its default.
    let s = ok("[limits]\nmax_message_size = \"64MiB\"");
    assert_eq!(s.limits.max_frame_size, 16 * MIB);
    // A frame size that is given is kept...
    let s = ok("[limits]\nmax_message_size = \"1MiB\"\nmax_frame_size = \"64KiB\"");
    assert_eq!(s.limits.max_frame_size, 64 * KIB);
    // ...and refused by its own name when larger, from the file or the environment.
    let r = one_error(
        "[limits]\nmax_message_size = \"16MB\"\nmax_frame_size = \"16MiB\"",
        "limits.max_frame_size",
    );
    assert_eq!(r, "must not exceed limits.max_message_size (15625KiB)");
    let vars = env(&[("WSPULSE_LIMITS__MAX_FRAME_SIZE", "16MiB")]);
    let errs = load_str("[limits]\nmax_message_size = \"1MiB\"", &vars)
        .expect_err("refused")
        .0;
    let keys: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["limits.max_frame_size"]);
    // A refused message size is the only error.
    one_error(
        "[limits]\nmax_message_size = \"lots\"",
        "limits.max_message_size",
    );
}

#[test]
fn keepalive_timeout_follows_a_shorter_interval() {
    let secs = Duration::from_secs;
    let s = ok("[keepalive]\ninterval = \"5s\"");
    assert_eq!(s.keepalive.timeout, secs(5));
    let vars = env(&[("WSPULSE_KEEPALIVE__INTERVAL", "2s")]);
    let s = load_str("", &vars).expect("loads");
    assert_eq!(s.keepalive.timeout, secs(2));
    // A longer interval leaves the timeout at its default.
    assert_eq!(
        ok("[keepalive]\ninterval = \"1m\"").keepalive.timeout,
        secs(10)
    );
    // Disabled: nothing pings, the timeout keeps its default.
    let s = ok("[keepalive]\ninterval = \"0s\"");
    assert!(!s.keepalive.enabled());
    assert_eq!(s.keepalive.timeout, secs(10));
    // A timeout that is given is refused by its own name when too long.
    let r = one_error(
        "[keepalive]\ninterval = \"5s\"\ntimeout = \"10s\"",
        "keepalive.timeout",
    );
    assert!(
        r.starts_with("must not exceed keepalive.interval (5s)"),
        "{r}"
    );
}

#[test]
fn shutdown_spread_needs_no_follow() {
    // The spread's default, 0s, holds for any drain_timeout...
    for drain in ["1ms", "1s", "10m"] {
        let s = ok(&format!("[shutdown]\ndrain_timeout = {drain:?}"));
        assert_eq!(s.shutdown.spread, Duration::ZERO, "{drain}");
    }
    // ...so a refusal always names the spread the user wrote.
    one_error(
        "[shutdown]\ndrain_timeout = \"5s\"\nspread = \"5s\"",
        "shutdown.spread",
    );
}

#[test]
fn followed_defaults_are_printed_and_read_back() {
    let s = ok("[keepalive]\ninterval = \"3s\"\n[limits]\nmax_message_size = 1000");
    let text = s.to_toml();
    assert!(text.contains("timeout = \"3s\"\n"), "{text}");
    assert!(text.contains("max_frame_size = 1000\n"), "{text}");
    assert_eq!(load_str(&text, &no_env()), Ok(s));
}

// === The key table ===

#[test]
fn key_table_is_consistent() {
    let mut names = std::collections::HashSet::new();
    for key in KEYS {
        assert!(names.insert(key.name), "{} twice", key.name);
        assert!(key.name.contains('.'), "{} has no section", key.name);
        assert!(!key.doc.is_empty(), "{} has no doc line", key.name);
        if let Some(rule) = &key.rule {
            assert!(
                keys::find(rule.with).is_some(),
                "{}: {}",
                key.name,
                rule.with
            );
            assert_ne!(rule.with, key.name);
        }
        // A default follows another key only to keep a rule between them.
        if key.follow.is_some() {
            assert!(key.rule.is_some(), "{} follows without a rule", key.name);
        }
    }
    // Each section's keys are contiguous, so it is written once.
    let sections = keys::sections();
    let unique: std::collections::HashSet<_> = sections.iter().collect();
    assert_eq!(unique.len(), sections.len(), "{sections:?}");
}

#[test]
fn readme_documents_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(path).expect("README.md");
    for key in KEYS {
        let row = format!("| `{}` |", key.name);
        assert!(readme.contains(&row), "README's config table lacks {row}");
    }
}

#[test]
fn suggestions_are_near_misses_only() {
    let r = one_error("[listen]\nport = 80", "listen.port");
    assert_eq!(r, "unknown key");
    let r = one_error("[limits]\nmax_conections = 1", "limits.max_conections");
    assert_eq!(r, "unknown key; did you mean \"limits.max_connections\"?");
    let r = one_error("[log]\nlevel = \"debg\"", "log.level");
    assert_eq!(r, "\"debg\" is not a level; did you mean \"debug\"?");
}

// === The edge listener ===

#[test]
fn proxy_protocol_and_trusted_proxies() {
    let s = ok("[listen]\nproxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]");
    assert!(s.listen.proxy_protocol);
    assert_eq!(
        s.listen.trusted_proxies,
        vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]
    );
    let r = one_error(
        "[listen]\ntrusted_proxies = [\"10.0.0.1/8\"]",
        "listen.trusted_proxies",
    );
    assert!(r.contains("host bits set"), "{r}");
    let r = one_error(
        "[listen]\ntrusted_proxies = \"10.0.0.0/8\"",
        "listen.trusted_proxies",
    );
    assert!(r.starts_with("expected an array of strings"), "{r}");
    let r = one_error(
        "[listen]\nproxy_protocol = \"yes\"",
        "listen.proxy_protocol",
    );
    assert!(r.starts_with("expected true or false"), "{r}");
    // The environment gives strings: a comma list, a boolean word.
    let e = env(&[
        (
            "WSPULSE_LISTEN__TRUSTED_PROXIES",
            "192.168.0.0/16, 2001:db8::/32",
        ),
        ("WSPULSE_LISTEN__PROXY_PROTOCOL", "true"),
    ]);
    let s = load_str("", &e).unwrap();
    assert!(s.listen.proxy_protocol);
    assert_eq!(s.listen.trusted_proxies.len(), 2);
    let e = env(&[("WSPULSE_LISTEN__TRUSTED_PROXIES", "nope")]);
    let errs = load_str("", &e).unwrap_err().0;
    assert_eq!(errs[0].key, "listen.trusted_proxies");
    assert!(
        errs[0].reason.contains("WSPULSE_LISTEN__TRUSTED_PROXIES"),
        "{errs:?}"
    );
}

#[test]
fn tls_files_are_checked_as_a_pair() {
    let dir = std::env::temp_dir().join(format!("wspulse-config-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let wrong = dir.join("wrong.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    std::fs::write(&wrong, other.signing_key.serialize_pem()).unwrap();
    let tls = |c: &Path, k: &Path| {
        format!(
            "[listen.tls]\ncert_file = {:?}\nkey_file = {:?}\nreload_interval = \"1s\"",
            c.display().to_string(),
            k.display().to_string()
        )
    };
    let s = ok(&tls(&cert, &key));
    assert!(s.listen.tls.enabled());
    assert_eq!(s.listen.tls.reload_interval, Duration::from_secs(1));
    assert_eq!(load_str(&s.to_toml(), &no_env()), Ok(s));
    let r = one_error(&tls(&cert, &wrong), "listen.tls.key_file");
    assert!(r.contains("does not match the certificate"), "{r}");
    let r = one_error(&tls(&key, &key), "listen.tls.cert_file");
    assert!(r.ends_with("no certificate found"), "{r}");
    let r = one_error(&tls(&cert, &cert), "listen.tls.key_file");
    assert!(r.ends_with("no private key found"), "{r}");
    let only_cert = format!("[listen.tls]\ncert_file = {:?}", cert.display().to_string());
    let r = one_error(&only_cert, "listen.tls.key_file");
    assert!(r.contains("must be set too"), "{r}");
    let r = one_error("[listen.tls]\ncert_fil = \"x\"", "listen.tls.cert_fil");
    assert_eq!(r, "unknown key; did you mean \"listen.tls.cert_file\"?");
    let e = env(&[("WSPULSE_LISTEN__TLS__RELOAD_INTERVAL", "0s")]);
    assert_eq!(
        load_str("", &e).unwrap().listen.tls.reload_interval,
        Duration::ZERO
    );
    let _ = std::fs::remove_dir_all(&dir);
}
