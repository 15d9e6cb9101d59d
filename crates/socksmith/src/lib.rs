//! socksmith: a SOCKS4, SOCKS4a and SOCKS5 client and server on tokio.
//!
//! The wire protocol lives in [`socksmith_proto`]; this crate drives it with sockets, timers
//! and a zero-copy relay.

pub mod dial;
pub mod policy;
pub mod relay;
pub mod resolve;
pub mod server;
mod sys;
