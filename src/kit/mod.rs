//! The test and demo kit: the peers that `wspulse demo`, the integration
//! tests and the fuzz target put around a proxy they run in-process
//! ([`Running`]).
//!
//! - [`echo`]: a scriptable echo upstream (tungstenite), whose message
//!   text scripts how it ends a session;
//! - [`raw`]: a raw-frame WebSocket peer, as a client or an upstream, for
//!   what a well-behaved library will not send or read.
//!
//! Everything binds 127.0.0.1 with ports the OS picks, and every wait is
//! bounded, so runs never collide and never hang.

pub mod echo;
pub mod raw;

pub use crate::server::Running;
pub use echo::{EchoBuilder, EchoServer, SeenRequest};
pub use raw::{End, Event, RawError, RawFrame, RawPeer, RawUpstream};
