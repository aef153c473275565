//! # wspulse
//!
//! A WebSocket reverse proxy that relays every frame between clients and an
//! upstream, pings both legs to find dead peers, and records how every
//! session ended: close code, which side, and why.
//!
//! # Layout
//!
//! - [`config`]: TOML + environment → validated [`config::Settings`].
//! - [`server`]: binds the listeners, runs the proxy, drains on shutdown;
//!   [`server::Running`], the proxy started in-process on loopback ports.
//! - [`listener`]: accept loop and HTTP upgrade; one task per session.
//! - [`upstream`]: dialing the upstream, header forwarding, failure statuses.
//! - [`head`]: HTTP header fields looked up in the bytes they were read in,
//!   and the WebSocket handshake's keys.
//! - [`resolver`]: the upstream's addresses, resolved once and refreshed in
//!   the background.
//! - [`session`]: the relay loop between the two legs.
//! - [`keepalive`]: the proxy's ping/pong schedule and RTT, no I/O.
//! - [`protocol`]: RFC 6455 opcodes, close codes and their rules, roles.
//! - [`closure`]: pure classification of how a session ended.
//! - [`metrics`]: metric names, handles, the session guard.
//! - [`recent`]: the ring of recent closures behind `/closures`.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`, `/closures`.
//! - [`shutdown`]: signals, readiness, spread drain, deadline.
//! - [`kit`]: the peers for tests and the demo: the scriptable echo
//!   upstream ([`kit::echo`]) and the raw-frame WebSocket peer ([`kit::raw`]).
//! - [`demo`]: `wspulse demo`, the proxy, an upstream and synthetic clients in
//!   one process, with a live table of what the proxy records: scenarios,
//!   snapshot, table, check.
//! - [`explain`]: `wspulse explain`, a plain-language diagnosis of `/metrics`:
//!   the Prometheus text parser ([`explain::prom`]) that the demo and the
//!   tests reuse, the meaning table, the diagnosis, the admin client.
//! - [`clock`]: the per-thread cached time the relay stamps messages with.
//! - [`telemetry`]: tracing in text or JSON.

#![forbid(unsafe_code)]

pub mod admin;
pub mod clock;
pub mod closure;
pub mod config;
pub mod demo;
pub mod explain;
pub mod head;
pub mod keepalive;
pub mod kit;
pub mod listener;
pub mod metrics;
pub mod protocol;
pub mod recent;
pub mod resolver;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod telemetry;
pub mod upstream;
pub mod ws;
