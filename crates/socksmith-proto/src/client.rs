//! The client side of the handshake as a sans-IO state machine: [`ClientHandshake`].
//!
//! The machine validates the request up front (what the chosen version can carry), produces
//! the bytes to send and turns the server's answers into events or typed errors. It never
//! reads past the final reply: bytes the server sends right after it stay with the caller.
//!
//! SOCKS5 is not pipelined: the greeting goes first, the request only after the method choice,
//! which every server understands.
//!
//! ```
//! use socksmith_proto::{ClientConfig, ClientEvent, ClientHandshake, ClientState, ClientVersion,
//!     Command, TargetAddr};
//! let mut hs = ClientHandshake::new(ClientConfig {
//!     version: ClientVersion::V5,
//!     credentials: None,
//!     command: Command::Connect,
//!     target: TargetAddr::domain("example.com", 80).unwrap(),
//! })
//! .unwrap();
//! let mut out = Vec::new();
//! hs.poll_transmit(&mut out);
//! assert_eq!(out, [5, 1, 0]); // greeting: no authentication
//! assert_eq!(hs.receive(&[5, 0]).unwrap(), 2); // server chose no authentication
//! out.clear();
//! hs.poll_transmit(&mut out);
//! assert_eq!(&out[..5], &[5, 1, 0, 3, 11]); // CONNECT example.com
//! let reply_and_data = [5, 0, 0, 1, 10, 0, 0, 1, 0x1f, 0x90, b'h', b'i'];
//! assert_eq!(hs.receive(&reply_and_data).unwrap(), 10); // "hi" is tunnel data
//! assert!(matches!(hs.poll_event(), Some(ClientEvent::Succeeded { .. })));
//! assert_eq!(hs.state(), ClientState::Established);
//! ```
//!
//! Every unsuccessful end is an `Err` from `receive`: no acceptable method
//! ([`crate::Incompatible::NoAcceptableMethod`]), failed authentication and failure replies
//! ([`crate::Denied`]), a method that was never offered ([`crate::PeerMisbehaved`]), and
//! malformed answers. The state is then `Failed`.

use crate::addr::TargetAddr;
use crate::auth::Credentials;
use crate::error::ProtocolError;
use crate::v5::Command;

/// The protocol the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientVersion {
    /// SOCKS4: IPv4 targets only.
    V4,
    /// SOCKS4a: IPv4 or domain targets (the server resolves).
    V4a,
    /// SOCKS5.
    V5,
}

/// What the client asks for and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The protocol version.
    pub version: ClientVersion,
    /// SOCKS5: offered with method 0x02 next to 0x00. SOCKS4/4a: the username is sent as the
    /// user id (no NUL allowed); the password is not sent.
    pub credentials: Option<Credentials>,
    /// The command.
    pub command: Command,
    /// The target: for RESOLVE a domain (port conventionally 0), for RESOLVE_PTR an IP.
    pub target: TargetAddr,
}

/// Something the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// BIND only, first reply: the server listens at `bound` (if its IP is unspecified,
    /// substitute the proxy's address). A second reply follows when a peer connects.
    BindListening {
        /// The address the server listens on.
        bound: TargetAddr,
    },
    /// The request succeeded. `bound` is BND.ADDR: for CONNECT the server's outbound address,
    /// for BIND the peer that connected, for UDP ASSOCIATE the relay's address, for RESOLVE
    /// the answer (an IP), for RESOLVE_PTR the answer (a name).
    Succeeded {
        /// BND.ADDR and BND.PORT (SOCKS4: DSTIP and DSTPORT).
        bound: TargetAddr,
    },
}

/// Where the client handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// The greeting is sent or queued; waiting for the method choice.
    AwaitingMethodChoice,
    /// The RFC 1929 request is sent or queued; waiting for the status.
    AwaitingAuthStatus,
    /// The request is sent or queued; waiting for the reply.
    AwaitingReply,
    /// BIND: the first reply arrived; waiting for the second.
    AwaitingBindPeer,
    /// The handshake succeeded: the tunnel begins (for RESOLVE/RESOLVE_PTR there is no
    /// tunnel; close).
    Established,
    /// `receive` returned an error; close.
    Failed,
}

/// The client-side handshake machine. See the [module docs](self).
#[derive(Debug)]
pub struct ClientHandshake {
    config: ClientConfig,
}

impl ClientHandshake {
    /// Validates `config` and queues the first message (the SOCKS5 greeting or the SOCKS4
    /// request).
    ///
    /// Errors ([`crate::InvalidInput`]): SOCKS4/4a with an IPv6 target, plain SOCKS4 with a
    /// domain, UDP ASSOCIATE or RESOLVE_PTR over SOCKS4/4a, RESOLVE without a domain target
    /// (so never over plain SOCKS4), RESOLVE_PTR without an IP target, a SOCKS4 user id
    /// containing NUL.
    pub fn new(config: ClientConfig) -> Result<Self, ProtocolError> {
        let _ = config;
        todo!()
    }

    /// Appends the bytes to send to the server to `out` and returns how many were appended.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        todo!()
    }

    /// Feeds bytes received from the server; returns how many were consumed, never a byte past
    /// the final reply. Returns `Ok(0)` once `Established` or `Failed`.
    pub fn receive(&mut self, input: &[u8]) -> Result<usize, ProtocolError> {
        todo!()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        todo!()
    }

    /// Where the handshake stands.
    pub fn state(&self) -> ClientState {
        todo!()
    }

    /// Whether the handshake is over (`Established` or `Failed`).
    pub fn is_finished(&self) -> bool {
        todo!()
    }
}
