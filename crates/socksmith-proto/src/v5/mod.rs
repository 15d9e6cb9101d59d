//! SOCKS5 messages (RFC 1928): greeting and method choice, request, reply, UDP header.
//!
//! Each submodule owns one wire form with its byte table. The RFC 1929 username/password
//! sub-negotiation lives in [`crate::auth`]; the exchange order lives in the machines
//! ([`crate::server`], [`crate::client`]).

mod greeting;
mod reply;
mod request;
mod udp;

pub use greeting::{AuthMethod, Greeting, MethodChoice};
pub use reply::{Reply, ReplyCode};
pub use request::{Command, Request};
pub use udp::UdpHeader;

/// The SOCKS5 version byte.
pub const VERSION: u8 = 0x05;
