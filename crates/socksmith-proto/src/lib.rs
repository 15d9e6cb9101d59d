//! Sans-IO SOCKS4, SOCKS4a and SOCKS5 protocol: wire codecs and handshake state machines.
//!
//! This crate owns every byte of the SOCKS wire format. It performs no I/O, has no clock and
//! no async runtime: bytes go in, messages, replies and events come out. Deadlines, sockets,
//! name resolution and credential checks belong to the caller (the `socksmith` library).
//!
//! - Codecs: [`V4Request`]/[`V4Reply`] (SOCKS4/4a), [`Greeting`]/[`MethodChoice`],
//!   [`AuthRequest`]/[`AuthStatus`] (RFC 1929), [`Request`]/[`Reply`], [`UdpHeader`].
//!   Stream decoders are `fn decode(&[u8]) -> Result<Option<(Self, usize)>, ProtocolError>`:
//!   `Ok(None)` means "need more bytes", the `usize` is how many bytes the message took, and
//!   whatever follows is left alone. Encoders append to a `Vec<u8>`.
//! - Machines: [`ServerHandshake`] and [`ClientHandshake`], driven with `receive`,
//!   `poll_transmit`, `poll_event` and, on the server, the decisions `accept_credentials` and
//!   `reply`.
//! - Errors: [`ProtocolError`], grouped by who is at fault, each knowing the reply the peer
//!   gets.
//!
//! References: RFC 1928, RFC 1929, the SOCKS4 and SOCKS4a notes, Tor's socks-extensions.txt.

#![forbid(unsafe_code)]

pub mod addr;
pub mod auth;
pub mod client;
pub mod error;
mod reader;
pub mod server;
pub mod sniff;
pub mod v4;
pub mod v5;

pub use addr::{DomainName, TargetAddr};
pub use auth::{AuthRequest, AuthStatus, Credentials};
pub use client::{ClientConfig, ClientEvent, ClientHandshake, ClientState, ClientVersion};
pub use error::{
    Denied, Incompatible, InvalidInput, Malformed, PeerMisbehaved, ProtocolError, Version,
};
pub use server::{
    AuthPolicy, CloseReason, HandshakeConfig, IncomingRequest, ServerEvent, ServerHandshake,
    ServerState, UdpClientFilter,
};
pub use v4::{V4Reply, V4ReplyCode, V4Request};
pub use v5::{AuthMethod, Command, Greeting, MethodChoice, Reply, ReplyCode, Request, UdpHeader};
