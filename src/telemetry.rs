//! Logging: tracing-subscriber in text or JSON, filtered by `log.level`.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Install the global subscriber. Logs go to stdout (containers collect it).
/// A second call (tests) is a no-op.
pub fn init(log: &LogSettings) {
    // The config check already validated the filter; fall back to info anyway.
    let filter = EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
