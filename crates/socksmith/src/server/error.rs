//! Errors of the server layer: [`ServerError`] (the server cannot run) and [`SessionError`]
//! (why one session ended early, the "outcome" of its log line).
//!
//! Wire-level mistakes stay [`ProtocolError`]s from `socksmith-proto`; what the outside world
//! refused stays an [`EgressError`], which knows its reply code. This module adds what only
//! the server knows: deadlines, policy, the client connection's I/O.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socksmith_proto::{ProtocolError, ReplyCode, TargetAddr};

use crate::policy::DenyReason;
use crate::relay::RelayError;
use crate::server::egress::EgressError;
use crate::server::http::HttpError;

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
    /// A listener is reachable from other hosts and SOCKS4, which carries no password, is
    /// served beside the configured authentication.
    #[error(
        "refusing to run an open proxy: {addr} is not a loopback address and SOCKS4 is \
         allowed, which carries no password, so anyone can connect over SOCKS4 without \
         credentials (disable SOCKS4, listen on loopback, or allow an open proxy explicitly)"
    )]
    OpenProxySocks4 {
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
    /// The client's address is outside every `allow_from` network: closed at once.
    #[error("client address not in allow_from: closed without a reply")]
    ClientNotAllowed,
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
    /// RFC 1929 credentials were wrong; the user name as the client sent it, control
    /// characters escaped.
    #[error("authentication failed for user \"{0}\"")]
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
    /// The egress could not do what the request asked (connect, listen, associate, look
    /// up); it knows the reply.
    #[error(transparent)]
    Egress(#[from] EgressError),
    /// A RESOLVE or RESOLVE_PTR answer cannot be sent.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The client filled the handshake buffer without completing a message (no valid
    /// handshake message is that long).
    #[error("handshake message longer than {0} bytes")]
    Oversized(usize),
    /// BIND: no expected peer connected in time.
    #[error("BIND: no connection from the expected peer within {0:?}")]
    BindTimeout(Duration),
    /// A SOCKS4 reply cannot carry the answer (answered 0x5B): a BIND listener on an IPv6
    /// address (the client came in over IPv6, or the upstream's last hop listens there) or
    /// a name.
    #[error("SOCKS4 reply cannot carry {0} (IPv4 only)")]
    Socks4Unsendable(TargetAddr),
    /// BIND: the client closed its connection while waiting for the peer.
    #[error("BIND: client closed the connection while waiting for the peer")]
    BindClientClosed,
    /// A local socket of the session (the UDP relay's client side) could not be set up.
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
    /// The egress side of a UDP association ended on its own (a parent proxy closed it).
    #[error("UDP association ended by the egress: {0}")]
    EgressClosed(#[source] io::Error),
    /// An HTTP proxy request was refused before it reached the target (malformed, framed
    /// ambiguously, head too large, not a proxy request, HTTP turned off); the client got
    /// the status [`HttpError::status`] says, or nothing when HTTP is off.
    #[error("HTTP: {0}")]
    Http(#[source] HttpError),
    /// An HTTP proxy request came without the credentials the server requires (answered
    /// 407).
    #[error("HTTP proxy request without credentials")]
    ProxyAuthRequired,
    /// The session's task panicked (a bug); the listener caught it and kept serving.
    #[error("session task panicked: {0}")]
    Panicked(String),
    /// The server shut down before the session ended.
    #[error("aborted at shutdown")]
    AbortedAtShutdown,
}

impl SessionError {
    /// The reply a client gets when its request fails this way: 0x02 for a denial, the
    /// egress's or the lookup's own code, 0x06 ("TTL expired") for a BIND nobody connected to
    /// in time, and general failure (0x01) for the rest. SOCKS4 clients get 0x5B for any of
    /// them. Errors of the handshake phase are answered by the machine, not with this.
    pub fn reply_code(&self) -> ReplyCode {
        match self {
            SessionError::Denied(_) => ReplyCode::NotAllowed,
            SessionError::Egress(e) => e.reply_code(),
            SessionError::Lookup(e) => e.reply_code(),
            SessionError::BindTimeout(_) => ReplyCode::TtlExpired,
            _ => ReplyCode::GeneralFailure,
        }
    }

    /// The outcome as one of a few stable words (see
    /// [`crate::server::accounting::Finished::outcome`]).
    pub fn outcome(&self) -> &'static str {
        match self {
            SessionError::Denied(_) | SessionError::Egress(EgressError::Denied(_)) => "denied",
            SessionError::AuthenticationFailed(_)
            | SessionError::NoAcceptableMethod
            | SessionError::Socks4AuthRequired
            | SessionError::Socks4Disabled
            | SessionError::ProxyAuthRequired => "auth_failed",
            SessionError::ClientNotAllowed => "not_allowed",
            SessionError::HandshakeTimeout(_)
            | SessionError::ClientClosed
            | SessionError::Protocol(_)
            | SessionError::Oversized(_)
            | SessionError::Http(_) => "handshake_failed",
            SessionError::Egress(_)
            | SessionError::Lookup(_)
            | SessionError::BindTimeout(_)
            | SessionError::Socks4Unsendable(_) => "target_failed",
            _ => "error",
        }
    }
}

/// Why a RESOLVE or RESOLVE_PTR answer cannot be given (a lookup that failed is an
/// [`EgressError`]). [`LookupError::reply_code`] is what the client gets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
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
    /// Host unreachable (0x04) for a name without an IPv4 answer for SOCKS4, as for a
    /// CONNECT to that name; address type not supported (0x08) for RESOLVE_PTR with a name;
    /// general failure (0x01) for an answer that cannot be encoded.
    pub fn reply_code(&self) -> ReplyCode {
        match self {
            LookupError::NoIpv4(_) => ReplyCode::HostUnreachable,
            LookupError::PtrNeedsAddress(_) => ReplyCode::AddressTypeNotSupported,
            LookupError::Unsendable { .. } => ReplyCode::GeneralFailure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_session_failure_maps_to_one_reply() {
        let cases = [
            (
                SessionError::Denied(DenyReason::Other("no".into())),
                ReplyCode::NotAllowed,
            ),
            (
                SessionError::Egress(EgressError::Timeout(Duration::from_secs(1))),
                ReplyCode::TtlExpired,
            ),
            (
                SessionError::Lookup(LookupError::PtrNeedsAddress(TargetAddr::UNSPECIFIED)),
                ReplyCode::AddressTypeNotSupported,
            ),
            (
                SessionError::BindTimeout(Duration::from_secs(1)),
                ReplyCode::TtlExpired,
            ),
            (
                SessionError::Egress(EgressError::Unsupported(socksmith_proto::Command::Bind)),
                ReplyCode::CommandNotSupported,
            ),
            (
                SessionError::Socket {
                    what: "UDP relay socket",
                    source: io::Error::from(io::ErrorKind::AddrInUse),
                },
                ReplyCode::GeneralFailure,
            ),
            (
                SessionError::Socks4Unsendable(TargetAddr::UNSPECIFIED),
                ReplyCode::GeneralFailure,
            ),
        ];
        for (error, reply) in cases {
            assert_eq!(error.reply_code(), reply, "{error}");
        }
    }
}
