//! The one step "open a tunnel to the target": the [`Outbound`] seam and its built-in
//! implementation, [`Direct`] (resolve, check each address with the policy, connect with
//! Happy Eyeballs).
//!
//! The other built-in one is [`crate::server::Upstream`] (a chain of parent proxies through
//! the client library, in `upstream.rs`). Both return [`OutboundStream::Tcp`] when the target
//! end is a bare TCP connection (for the upstream, the connection to the first hop once the
//! handshakes are done), relayed with `splice(2)`; a stream with bytes of its own to deliver
//! first (or TLS, or anything else a custom outbound makes) is [`OutboundStream::Stream`],
//! relayed by copying. An outbound that is an upstream says so ([`Outbound::upstream`]), and
//! the server then sends BIND, UDP ASSOCIATE and RESOLVE through it too. This module does not
//! speak SOCKS to the client and does not relay.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use socksmith_proto::{ReplyCode, TargetAddr};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::dial::{dial, DialError, DialErrorKind, DialOptions};
use crate::policy::{Decision, DenyReason, Policy};
use crate::resolve::{resolve, Resolve, ResolveError};
use crate::server::{Session, Upstream};

/// Any byte stream a tunnel can end in (a connection through a parent proxy, TLS, ...).
pub trait AsyncStream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> AsyncStream for T {}

/// The target end of a tunnel.
pub enum OutboundStream {
    /// A plain TCP connection: relayed with `splice(2)`.
    Tcp(TcpStream),
    /// Any other stream: relayed by copying.
    Stream(Box<dyn AsyncStream>),
}

impl fmt::Debug for OutboundStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutboundStream::Tcp(s) => f.debug_tuple("Tcp").field(s).finish(),
            OutboundStream::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

/// A tunnel to the target, ready to relay.
#[derive(Debug)]
pub struct Connected {
    /// The target end.
    pub stream: OutboundStream,
    /// The address the connection leaves from, sent to the client as BND.ADDR/BND.PORT.
    pub bound: TargetAddr,
}

/// What an [`Outbound`] is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct ConnectRequest<'a> {
    /// The session asking (client, user, target).
    pub session: &'a Session,
    /// The policy, for addresses the outbound learns (the direct path checks every address a
    /// name resolves to).
    pub policy: &'a dyn Policy,
}

/// The future an [`Outbound`] returns.
pub type ConnectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Connected, ConnectError>> + Send + 'a>>;

/// Opens tunnels to targets. The server bounds each call by its resolve and connect timeouts
/// together; an implementation that never finishes gets [`ConnectError::Timeout`].
pub trait Outbound: Send + Sync + fmt::Debug {
    /// Opens a tunnel to `request.session.target`.
    fn connect<'a>(&'a self, request: ConnectRequest<'a>) -> ConnectFuture<'a>;

    /// The parent proxy chain this outbound sends through, if it is one: the server then
    /// sends BIND, UDP ASSOCIATE and RESOLVE/RESOLVE_PTR through the same chain. `None` (the
    /// default): the server serves those from this host itself, whatever `connect` does.
    fn upstream(&self) -> Option<&Upstream> {
        None
    }
}

/// Why no tunnel was opened. [`ConnectError::reply_code`] is the reply the client gets; the
/// message is the precise reason for the log line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// Every address the name resolved to is denied by the policy.
    #[error("denied by policy: {0}")]
    Denied(DenyReason),
    /// The name did not resolve.
    #[error("DNS lookup failed: {0}")]
    Resolve(#[from] ResolveError),
    /// No connection could be made.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The whole attempt (lookup and connect) did not finish in time.
    #[error("no connection within {0:?}")]
    Timeout(Duration),
    /// A local failure (reading the socket's address, say).
    #[error("outbound connection failed: {0}")]
    Io(#[from] io::Error),
    /// A custom outbound's failure, with the reply it deserves.
    #[error("{message}")]
    Other {
        /// The reply the client gets.
        reply: ReplyCode,
        /// One readable line.
        message: String,
    },
}

impl ConnectError {
    /// The closest SOCKS5 reply (SOCKS4 clients get 0x5B for any failure): refused 0x05,
    /// network unreachable 0x03, host unreachable and DNS failure 0x04, timeout 0x06 ("TTL
    /// expired", as Dante answers ETIMEDOUT), denied 0x02, anything else 0x01.
    pub fn reply_code(&self) -> ReplyCode {
        match self {
            ConnectError::Denied(_) => ReplyCode::NotAllowed,
            ConnectError::Resolve(_) => ReplyCode::HostUnreachable,
            ConnectError::Dial(e) => match e.kind() {
                DialErrorKind::Refused => ReplyCode::ConnectionRefused,
                DialErrorKind::NetworkUnreachable => ReplyCode::NetworkUnreachable,
                DialErrorKind::HostUnreachable => ReplyCode::HostUnreachable,
                DialErrorKind::TimedOut => ReplyCode::TtlExpired,
                _ => ReplyCode::GeneralFailure,
            },
            ConnectError::Timeout(_) => ReplyCode::TtlExpired,
            ConnectError::Io(_) => ReplyCode::GeneralFailure,
            ConnectError::Other { reply, .. } => *reply,
        }
    }
}

/// Connects straight to the target: a name is resolved (IP literals, also when sent as a
/// name, skip the resolver), each address is checked with [`Policy::check_address`], and the
/// allowed ones are raced with Happy Eyeballs (RFC 8305). The stream has `TCP_NODELAY` set.
#[derive(Debug, Clone)]
pub struct Direct {
    resolver: Arc<dyn Resolve>,
    resolve_timeout: Duration,
    dial: DialOptions,
}

impl Direct {
    /// Resolves with `resolver` (bounded by `resolve_timeout`) and connects within
    /// `connect_timeout`.
    pub fn new(
        resolver: Arc<dyn Resolve>,
        resolve_timeout: Duration,
        connect_timeout: Duration,
    ) -> Self {
        Direct {
            resolver,
            resolve_timeout,
            dial: DialOptions::with_timeout(connect_timeout),
        }
    }

    /// Opens the connection (what [`Outbound::connect`] does, without boxing the future).
    pub async fn open(&self, request: ConnectRequest<'_>) -> Result<Connected, ConnectError> {
        let target = &request.session.target;
        let stream = match target.ip_literal() {
            // The policy saw this address with the request.
            Some(addr) => dial(&[addr], &self.dial).await?,
            None => {
                let ips = lookup(&*self.resolver, target, self.resolve_timeout).await?;
                let port = target.port();
                let mut denied = None;
                let addrs: Vec<SocketAddr> = ips
                    .into_iter()
                    .filter(
                        |ip| match request.policy.check_address(request.session, *ip) {
                            Decision::Allow => true,
                            Decision::Deny(reason) => {
                                denied.get_or_insert(reason);
                                false
                            }
                        },
                    )
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect();
                match (addrs.is_empty(), denied) {
                    (true, Some(reason)) => return Err(ConnectError::Denied(reason)),
                    _ => dial(&addrs, &self.dial).await?,
                }
            }
        };
        let bound = stream.local_addr()?;
        Ok(Connected {
            stream: OutboundStream::Tcp(stream),
            bound: TargetAddr::Ip(bound),
        })
    }
}

impl Outbound for Direct {
    fn connect<'a>(&'a self, request: ConnectRequest<'a>) -> ConnectFuture<'a> {
        Box::pin(self.open(request))
    }
}

/// Looks a name target up within `limit`. A non-UTF-8 name cannot be asked of a resolver.
pub(crate) async fn lookup(
    resolver: &dyn Resolve,
    target: &TargetAddr,
    limit: Duration,
) -> Result<Vec<IpAddr>, ResolveError> {
    let TargetAddr::Domain(name, _) = target else {
        return Ok(target.ip_literal().map(|a| a.ip()).into_iter().collect());
    };
    let Some(name) = name.to_str() else {
        return Err(ResolveError::InvalidName {
            query: name.to_string(),
        });
    };
    match tokio::time::timeout(limit, resolve(resolver, name)).await {
        Ok(result) => result,
        Err(_) => Err(ResolveError::Timeout {
            query: name.to_owned(),
            after: limit,
        }),
    }
}
