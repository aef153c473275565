//! # wspulse
//!
//! A WebSocket reverse proxy that relays every frame between clients and an
//! upstream, pings both legs to find dead peers, and records how every
//! session ended: close code, which side, and why.
//!
//! # Layout
//!
//! Bottom to top: every module imports only modules listed above it
//! (`python3 ../shared/tools/modgraph.py src` draws the graph).
//!
//! Leaves: rules and data, no I/O of their own.
//! - [`protocol`]: RFC 6455 opcodes, close codes and which may be sent,
//!   roles, the reference frame encoder.
//! - [`conn`]: the byte stream under a leg (TCP, TLS, an in-memory pipe)
//!   and the socket options wspulse sets.
//! - [`tls`]: TLS client settings for `wss://` upstreams (roots + `ca_file`).
//! - [`config`]: TOML + environment → validated [`config::Settings`]; every
//!   key once, in the table of `config/keys.rs`.
//! - [`extensions`]: permessage-deflate negotiation as a passthrough: the
//!   offers that go upstream, whether an answer answers one.
//! - [`certs`]: the listener's certificate pair from PEM (notAfter, serial),
//!   its rustls server settings and the live slot a reload swaps.
//! - [`proxy_header`]: the PROXY protocol v1/v2 header, a pure parser.
//! - [`head`]: HTTP header fields looked up in the bytes they were read in,
//!   and the WebSocket handshake's keys.
//! - [`forwarded`]: the client address from the peer, the trusted proxies
//!   and their forwarding headers; `X-Forwarded-For`/`-Proto` toward the
//!   upstream; [`forwarded::Cidr`].
//! - [`config`]: TOML + environment → validated [`config::Settings`]; every
//!   key once, in the table of `config/keys.rs`.
//! - [`clock`]: the per-thread cached time the relay stamps messages with.
//!
//! The relay core:
//! - [`ws`]: one leg's WebSocket protocol: frames, masking, the buffer
//!   pool, the closing handshake, its own error vocabulary
//!   ([`ws::Error`]), and [`ws::WsStream::forward_to`], the zero-copy relay
//!   of one message.
//! - [`closure`]: pure classification of how a session ended (the case
//!   table is [`closure::classify`]'s doc comment); [`closure::LegId`].
//! - [`keepalive`]: the proxy's ping/pong schedule and RTT, no I/O.
//! - [`clients`]: client identities (hashed), their last endings and open
//!   sessions in a bounded LRU, the handshake token bucket.
//! - [`record`]: what a session was and did (its info, running stats, the
//!   `/closures` record), handed over when it ends.
//! - [`recent`]: the ring of recent closures behind `/closures`.
//! - [`metrics`]: metric names and handles, the session guard; a sink.
//! - [`shutdown`]: signals, readiness, spread drain, deadline.
//! - [`session`]: one task per session, the relay loop between its two
//!   legs, and the closing phase.
//!
//! Serving:
//! - [`resolver`]: the upstream's addresses, resolved once and refreshed in
//!   the background.
//! - [`edge`]: a client connection before its request: the PROXY header,
//!   TLS with the live certificate, and the certificate's reload.
//! - [`upstream`]: dialing the upstream, header forwarding, failure statuses.
//! - [`admission`]: who may open a session: the client's identity, its
//!   reconnect delay, and the admission limits (503 + `Retry-After`).
//! - [`listener`]: accept loop and HTTP upgrade; one task per session.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`, `/closures`, `/drain`.
//! - [`server`]: binds the listeners, runs the proxy, drains on shutdown;
//!   [`server::Running`], the proxy started in-process on loopback ports
//!   (the tests, the demo).
//! - [`telemetry`]: tracing in text or JSON.
//!
//! On top: the commands and their peers.
//! - [`kit`]: the peers for tests and the demo: the scriptable echo
//!   upstream ([`kit::echo`]) and the raw-frame WebSocket peer ([`kit::raw`]).
//! - [`explain`]: `wspulse explain`, a plain-language diagnosis of `/metrics`:
//!   the Prometheus text parser ([`explain::prom`]) that the demo and the
//!   tests reuse, the meaning table, the diagnosis, the admin client.
//! - [`demo`]: `wspulse demo`, the proxy, an upstream and synthetic clients in
//!   one process, with a live table of what the proxy records: scenarios,
//!   reconnecting clients (no backoff, backoff with jitter), snapshot,
//!   table, check.
//!
//! `main.rs` parses the CLI (`run`, `check`, `explain`, `demo`) and calls
//! into the library.

#![forbid(unsafe_code)]

pub mod admin;
pub mod admission;
pub mod certs;
pub mod clients;
pub mod clock;
pub mod closure;
pub mod config;
pub mod conn;
pub mod demo;
pub mod edge;
pub mod explain;
pub mod extensions;
pub mod forwarded;
pub mod head;
pub mod keepalive;
pub mod kit;
pub mod listener;
pub mod metrics;
pub mod protocol;
pub mod proxy_header;
pub mod recent;
pub mod record;
pub mod resolver;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod ws;
