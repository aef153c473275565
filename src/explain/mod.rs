//! `wspulse explain`: a plain-language diagnosis of a running instance.
//!
//! - [`prom`]: the Prometheus text format read back into samples, the one
//!   parser the demo's table and the integration tests reuse;
//! - [`mod@meaning`]: what each closure kind `{code, side, cause}` means, its
//!   usual cause and what to do (the field lore of WebSocket operations);
//! - [`mod@diagnose`]: `/metrics` text in, report out, a pure function tested
//!   on canned texts;
//! - [`mod@fetch`]: the `/metrics` text of a running instance, over hyper's
//!   HTTP/1.1 client.
//! - [`promql`]: instant queries of the Prometheus HTTP API, over the same
//!   client;
//! - [`fleet`]: `explain --prometheus`, the same diagnosis over every
//!   instance a selector matches, the instances that stand out and whether
//!   the trouble is fleet-wide.

pub mod diagnose;
pub mod fetch;
pub mod fleet;
pub mod meaning;
pub mod prom;
pub mod promql;

pub use diagnose::{Diagnosis, analyse, diagnose};
pub use fetch::{FetchError, fetch};
pub use meaning::{Meaning, meaning};
