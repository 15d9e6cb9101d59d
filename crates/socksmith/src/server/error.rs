//! Errors of the server layer: [`ServerError`] (the server cannot run) and [`SessionError`]
//! (why one session ended early, the "outcome" of its log line).
//!
//! Wire-level mistakes stay [`ProtocolError`]s from `socksmith-proto`; outbound failures stay
//! [`ConnectError`]s, which know their reply code. This module adds what only the server knows:
//! deadlines, policy, the client connection's I/O.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socksmith_proto::{ProtocolError, ReplyCode, TargetAddr};

use crate::policy::DenyReason;
use crate::relay::RelayError;
use crate::resolve::ResolveError;
use crate::server::outbound::ConnectError;

/// Why a server could not start or keep running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A listener is reachable from other hosts and no authentication is configured.
    #[error(
        "refusing to run an open proxy: {addr} is not a loopback address and no users are \
         configured (add users, listen on loopback, or allow an open proxy explicitly)"
    )]
    OpenProxy {
        /// The listener's address.
        addr: SocketAddr,
    },
    /// No listener was given.
    #[error("no listener to serve")]
    NoListeners,
    /// A listener's address could not be read.
    #[error("listener: {0}")]
    Io(#[from] io::Error),
}

/// Why a session ended before or instead of a clean tunnel. Each message is one line for the
/// log, precise where the reply code is coarse ("DNS lookup failed: ...: not found" where the
/// client only sees 0x04).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The client did not complete its handshake in time.
    #[error("handshake not finished within {0:?}")]
    HandshakeTimeout(Duration),
    /// The client closed the connection before its request was complete.
    #[error("client closed the connection during the handshake")]
    ClientClosed,
    /// Reading from or writing to the client failed.
    #[error("client connection failed: {0}")]
    ClientIo(#[source] io::Error),
    /// The client broke the protocol (answered with the machine's reply, if any).
    #[error("protocol error: {0}")]
    Protocol(#[source] ProtocolError),
    /// A SOCKS5 client offered no method the server accepts (answered 0xFF).
    #[error("no acceptable authentication method offered")]
    NoAcceptableMethod,
    /// RFC 1929 credentials were wrong.
    #[error("authentication failed for user {0:?}")]
    AuthenticationFailed(String),
    /// A SOCKS4 client was refused because the server requires authentication.
    #[error("SOCKS4 refused: the server requires authentication")]
    Socks4AuthRequired,
    /// A SOCKS4 client was refused because SOCKS4 is disabled.
    #[error("SOCKS4 refused: disabled")]
    Socks4Disabled,
    /// The policy denied the request.
    #[error("denied by policy: {0}")]
    Denied(DenyReason),
    /// The tunnel to the target could not be opened.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A RESOLVE or RESOLVE_PTR got no answer, or a BIND's peer name did not resolve.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The client filled the handshake buffer without completing a message (no valid
    /// handshake message is that long).
    #[error("handshake message longer than {0} bytes")]
    Oversized(usize),
    /// BIND: no expected peer connected in time.
    #[error("BIND: no connection from the expected peer within {0:?}")]
    BindTimeout(Duration),
    /// BIND: the client closed its connection while waiting for the peer.
    #[error("BIND: client closed the connection while waiting for the peer")]
    BindClientClosed,
    /// A local socket (BIND listener, UDP relay) could not be set up.
    #[error("{what}: {source}")]
    Socket {
        /// What was being set up.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
    /// The tunnel ended abnormally (a reset, the idle timeout).
    #[error("tunnel: {0}")]
    Relay(#[source] RelayError),
    /// The UDP association saw no datagram for the idle timeout.
    #[error("UDP association idle for {0:?}")]
    UdpIdle(Duration),
}

/// Why a lookup the server answers itself (RESOLVE, RESOLVE_PTR, a BIND's peer name) failed.
/// [`LookupError::reply_code`] is what the client gets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// The resolver had no answer.
    #[error("DNS lookup failed: {0}")]
    Failed(#[from] ResolveError),
    /// A SOCKS4 reply has room for an IPv4 address only, and the name has none.
    #[error("{0}: no IPv4 address for a SOCKS4 reply")]
    NoIpv4(TargetAddr),
    /// RESOLVE_PTR names an address to look up; a name was sent.
    #[error("RESOLVE_PTR needs an address, got the name {0}")]
    PtrNeedsAddress(TargetAddr),
    /// The reverse lookup's answer is not a name SOCKS can carry (over 255 bytes, say).
    #[error("reverse DNS answer for {ip} cannot be sent: {source}")]
    Unsendable {
        /// The address looked up.
        ip: std::net::IpAddr,
        /// Why the name does not fit.
        source: ProtocolError,
    },
}

impl LookupError {
    /// Host unreachable (0x04) for a failed lookup, as for a CONNECT to that name; address
    /// type not supported (0x08) for RESOLVE_PTR with a name; general failure (0x01) for an
    /// answer that cannot be encoded.
    pub fn reply_code(&self) -> ReplyCode {
        match self {
            LookupError::Failed(_) | LookupError::NoIpv4(_) => ReplyCode::HostUnreachable,
            LookupError::PtrNeedsAddress(_) => ReplyCode::AddressTypeNotSupported,
            LookupError::Unsendable { .. } => ReplyCode::GeneralFailure,
        }
    }
}
