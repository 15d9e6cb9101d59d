//! socksmith: a SOCKS4, SOCKS4a and SOCKS5 client and server on tokio.
//!
//! The wire protocol lives in [`socksmith_proto`]; this crate drives it with sockets, timers
//! and a zero-copy relay.

pub mod client;
pub mod dial;
pub mod policy;
pub mod relay;
pub mod resolve;
pub mod server;
mod sys;

// The protocol types this crate's API speaks in, so that one dependency is enough.
pub use socksmith_proto::{
    AuthMethod, Command, Credentials, DomainName, ReplyCode, TargetAddr, Version,
};
