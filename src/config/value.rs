//! One key's value: parsed from what the `config` crate merged (durations,
//! sizes, addresses, counts, log filters), and written back as TOML.

use std::net::SocketAddr;
use std::time::Duration;

use config::{Value, ValueKind};

pub(super) const KIB: usize = 1024;
pub(super) const MIB: usize = 1024 * KIB;
pub(super) const GIB: usize = 1024 * MIB;

// === Parsing ===

/// One merged value; the environment only gives strings, so numbers from it
/// are parsed here, while the file must use the right TOML type.
pub(super) struct Field<'a> {
    /// The value as merged from the file or the environment.
    pub(super) value: &'a Value,
    /// Whether an environment variable set it (then a string may hold a number).
    pub(super) from_env: bool,
}

impl Field<'_> {
    pub(super) fn string(&self) -> Result<String, String> {
        match &self.value.kind {
            ValueKind::String(s) => Ok(s.clone()),
            other => Err(format!("expected a string, found {}", describe(other))),
        }
    }

    pub(super) fn bool(&self) -> Result<bool, String> {
        match &self.value.kind {
            ValueKind::Boolean(b) => Ok(*b),
            ValueKind::String(s) if self.from_env => match s.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(format!("expected true or false, found {s:?}")),
            },
            other => Err(format!("expected true or false, found {}", describe(other))),
        }
    }

    /// A file path; `""` is none.
    pub(super) fn path(&self) -> Result<Option<std::path::PathBuf>, String> {
        let path = self.string()?;
        Ok((!path.is_empty()).then(|| path.into()))
    }

    /// An array of strings; from the environment, one comma-separated string.
    pub(super) fn strings(&self) -> Result<Vec<String>, String> {
        match &self.value.kind {
            ValueKind::String(s) if self.from_env => Ok(s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()),
            ValueKind::Array(items) => items
                .iter()
                .map(|v| match &v.kind {
                    ValueKind::String(s) => Ok(s.clone()),
                    other => Err(format!("expected strings, found {}", describe(other))),
                })
                .collect(),
            other => Err(format!(
                "expected an array of strings, found {}",
                describe(other)
            )),
        }
    }

    pub(super) fn int(&self) -> Result<i64, String> {
        match &self.value.kind {
            ValueKind::I64(n) => Ok(*n),
            ValueKind::String(s) if self.from_env => s
                .trim()
                .parse()
                .map_err(|_| format!("expected an integer, found {s:?}")),
            other => Err(format!("expected an integer, found {}", describe(other))),
        }
    }

    pub(super) fn count(&self, min: i64) -> Result<usize, String> {
        let n = self.int()?;
        if n < min {
            return Err(format!("must be at least {min}, found {n}"));
        }
        usize::try_from(n).map_err(|_| format!("{n} is too large"))
    }

    pub(super) fn duration(&self) -> Result<Duration, String> {
        let ValueKind::String(s) = &self.value.kind else {
            let found = describe(&self.value.kind);
            return Err(format!(
                r#"expected a duration string such as "15s", found {found}"#
            ));
        };
        humantime::parse_duration(s.trim()).map_err(|e| format!("invalid duration {s:?}: {e}"))
    }

    pub(super) fn positive_duration(&self) -> Result<Duration, String> {
        match self.duration()? {
            d if d.is_zero() => Err("must be greater than 0".into()),
            d => Ok(d),
        }
    }

    pub(super) fn size(&self) -> Result<usize, String> {
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

    pub(super) fn socket_addr(&self) -> Result<SocketAddr, String> {
        let s = self.string()?;
        s.trim().parse().map_err(|_| {
            format!("invalid address {s:?}: expected IP:port, e.g. \"127.0.0.1:8080\"")
        })
    }

    /// A `tracing_subscriber::EnvFilter` directive string.
    pub(super) fn log_level(&self) -> Result<String, String> {
        let level = self.string()?;
        if level.trim().is_empty() {
            return Err("must not be empty".into());
        }
        tracing_subscriber::EnvFilter::try_new(&level)
            .map_err(|e| format!("invalid log filter {level:?}: {e}"))?;
        // A bare word is a valid *target* filter, so "debg" or "warning" would
        // be accepted and silently log nothing useful: refuse near-misses of
        // levels.
        const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
        for word in level.split(',').map(|d| d.trim().to_ascii_lowercase()) {
            if word.contains(['=', '[']) || LEVELS.contains(&word.as_str()) {
                continue;
            }
            let near = LEVELS.iter().find(|l| {
                strsim::levenshtein(&word, l) <= 1 || (**l == "warn" && word == "warning")
            });
            if let Some(l) = near {
                return Err(format!("{word:?} is not a level; did you mean {l:?}?"));
            }
        }
        Ok(level)
    }
}

/// Bytes as an integer, or with a unit: `"64KiB"`, `"16MiB"`, `"1MB"`.
fn parse_size(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("invalid size {s:?}: {e}"))
}

/// A found value in an error message: its TOML type, and the value itself
/// where it is short.
pub(super) fn describe(kind: &ValueKind) -> String {
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

/// A humantime duration, as it reads in an error message (`15s`, `1m 30s`).
pub(super) fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A duration as a TOML value: a quoted humantime string.
pub(super) fn duration_value(d: Duration) -> String {
    quote(&fmt_duration(d))
}

/// `"16MiB"` / `"64KiB"` when exact, else plain bytes.
pub(super) fn fmt_size(n: usize) -> String {
    match [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")]
        .into_iter()
        .find(|(unit, _)| n > 0 && n.is_multiple_of(*unit))
    {
        Some((unit, name)) => format!("{}{name}", n / unit),
        None => n.to_string(),
    }
}

/// A size as a TOML value: a quoted string with a unit, or an integer.
pub(super) fn size_value(n: usize) -> String {
    match fmt_size(n) {
        s if s.ends_with('B') => quote(&s),
        s => s,
    }
}

/// An optional path as a TOML string, `""` for none.
pub(super) fn quote_path(path: Option<&std::path::Path>) -> String {
    quote(&path.map(|p| p.display().to_string()).unwrap_or_default())
}

/// A TOML basic string.
pub(super) fn quote(s: &str) -> String {
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
