//! The egress: everything a session asks of the outside world, behind one trait.
//!
//! A session decodes a request, asks the policy, and then needs exactly one of five things
//! from the network: a connection to the target (CONNECT), a listener for one inbound peer
//! (BIND), a datagram path (UDP ASSOCIATE), a name's addresses (RESOLVE) or an address's
//! name (RESOLVE_PTR). [`Egress`] is that list. The session has one code path per command
//! and never knows how the egress does it:
//!
//! - [`Direct`] does it from this host: resolves, checks every address with the policy,
//!   connects with Happy Eyeballs, listens and sends datagrams from local sockets;
//! - [`Upstream`] does it through a chain of parent proxies with the client library;
//! - a program can plug in its own (one that dials through a VPN interface, say) with
//!   [`crate::server::ServerConfig::egress`]; every command then goes through it.
//!
//! Every failure is an [`EgressError`], which knows the reply code the client gets and keeps
//! its source error. This module does not speak SOCKS to the client and does not relay.

pub(crate) mod direct;
mod upstream;

pub use direct::Direct;
pub use upstream::Upstream;

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use socksmith_proto::{Command, DomainName, ReplyCode, TargetAddr};

use crate::client::ClientError;
use crate::dial::{DialError, DialErrorKind};
use crate::policy::{Decision, DenyReason, Policy};
use crate::relay::TunnelStream;
use crate::resolve::{resolve, Resolve, ResolveError};
use crate::session::Session;

/// The future every [`Egress`] method returns.
pub type EgressFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, EgressError>> + Send + 'a>>;

/// What a session asks of an [`Egress`]: who asks, and the policy that judges every address
/// the egress learns on the way (a name's addresses, say).
#[derive(Debug, Clone, Copy)]
pub struct EgressRequest<'a> {
    /// The session asking (client, user, command, target).
    pub session: &'a Session,
    /// The server's policy.
    pub policy: &'a dyn Policy,
}

impl EgressRequest<'_> {
    /// The addresses of `ips` the policy allows for this session, as socket addresses on
    /// `port`; when it allows none, the first denial.
    pub fn allowed(&self, ips: Vec<IpAddr>, port: u16) -> Result<Vec<SocketAddr>, EgressError> {
        let mut denied = None;
        let allowed: Vec<SocketAddr> = ips
            .into_iter()
            .filter(|ip| match self.policy.check_address(self.session, *ip) {
                Decision::Allow => true,
                Decision::Deny(reason) => {
                    denied.get_or_insert(reason);
                    false
                }
            })
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        match (allowed.is_empty(), denied) {
            (true, Some(reason)) => Err(EgressError::Denied(reason)),
            _ => Ok(allowed),
        }
    }
}

/// A tunnel to the target, ready to relay.
#[derive(Debug)]
pub struct Connected {
    /// The target end: [`TunnelStream::Tcp`] for a bare TCP connection (relayed with
    /// `splice(2)` when the client is TCP too), anything else boxed.
    pub stream: TunnelStream,
    /// The address the connection leaves from, sent to the client as BND.ADDR/BND.PORT.
    pub bound: TargetAddr,
}

/// A BIND in progress: listening for the one peer the client named.
pub trait PendingBind: Send {
    /// Where the peer should connect: sent to the client in the first reply.
    fn listen_addr(&self) -> TargetAddr;

    /// Waits for the expected peer (others are turned away) and returns the tunnel to it and
    /// its address, for the second reply. The server bounds the wait.
    fn accept(self: Box<Self>) -> EgressFuture<'static, (TunnelStream, TargetAddr)>;
}

/// The target side of a UDP association: sends client payloads on and hands back answers.
///
/// Called in the association's loop for every datagram, so sending and receiving are polls
/// (no allocation per datagram); whatever needs waiting (a name lookup) happens before,
/// through [`Egress::resolve`]. Only the single-datagram methods must be written; the batch
/// ones, which the association calls, fall back on them.
pub trait UdpEgress: Send + Sync {
    /// Sends `payload` to `dest`: an address the policy allowed, or a name when
    /// [`UdpEgress::resolves_names`] says names go on as they are.
    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        payload: &[u8],
        dest: &TargetAddr,
    ) -> Poll<io::Result<()>>;

    /// Receives the next answer's payload into `buf` and says who sent it.
    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, TargetAddr)>>;

    /// Sends several datagrams, in order: their payloads lie back to back in `payloads`, and
    /// `datagrams` gives each one's length and destination (as for
    /// [`UdpEgress::poll_send_to`]). `Ready(Ok(n))`: the first `n` (at least one) are sent;
    /// `Ready(Err(_))`: the first could not be sent, and the caller drops it and goes on with
    /// the rest. `Pending` only when none was sent.
    ///
    /// By default one [`UdpEgress::poll_send_to`] per datagram, so an egress that implements
    /// only that works unchanged; [`Direct`] sends a run of same-size datagrams to one
    /// destination with one system call (UDP GSO).
    fn poll_send_batch(
        &self,
        cx: &mut Context<'_>,
        payloads: &[u8],
        datagrams: &[(usize, TargetAddr)],
    ) -> Poll<io::Result<usize>> {
        let mut sent = 0;
        let mut offset = 0;
        for (len, dest) in datagrams {
            let Some(payload) = payloads.get(offset..offset + len) else {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a datagram's length runs past the payloads",
                )));
            };
            match self.poll_send_to(cx, payload, dest) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) if sent == 0 => return Poll::Ready(Err(e)),
                Poll::Pending if sent == 0 => return Poll::Pending,
                // The error (or the wait) comes back with the next call, which starts here.
                Poll::Ready(Err(_)) | Poll::Pending => break,
            }
            sent += 1;
            offset += len;
        }
        Poll::Ready(Ok(sent))
    }

    /// Receives several answers: `Ready(Ok(n))` has filled the first `n` (at least one) of
    /// `bufs`, each with one answer's payload or, when the kernel coalesced them (UDP GRO),
    /// several answers from one sender back to back, and put `(len, size, from)` in the
    /// same place of `received`: the bytes in that buffer, the size of each answer in it (all
    /// but the last, which may be shorter; `len` for a single answer) and their sender. At
    /// most `bufs.len().min(received.len())` buffers.
    ///
    /// By default one [`UdpEgress::poll_recv_from`] into the first buffer; [`Direct`] takes
    /// whatever its socket holds with one system call (`recvmmsg`, with GRO).
    fn poll_recv_batch(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        received: &mut [(usize, usize, TargetAddr)],
    ) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(slot)) = (bufs.first_mut(), received.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        match self.poll_recv_from(cx, buf) {
            Poll::Ready(Ok((len, from))) => {
                *slot = (len, len, from);
                Poll::Ready(Ok(1))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Whether a destination name is sent on as a name (the far end resolves it). `false`
    /// (the default): the session resolves names with [`Egress::resolve`] and checks each
    /// address with the policy first.
    fn resolves_names(&self) -> bool {
        false
    }

    /// How many answers the kernel has dropped so far on this egress's own sockets because
    /// a receive buffer was full (counted in `socksmith_udp_dropped_total`). 0 by default:
    /// an egress that does not count them.
    fn kernel_drops(&self) -> u64 {
        0
    }

    /// Resolves when the egress side of the association has ended on its own (a parent
    /// proxy closed it); the association then ends. Never, by default.
    fn closed(&self) -> Pin<Box<dyn Future<Output = io::Error> + Send + '_>> {
        Box::pin(std::future::pending())
    }
}

/// Everything a session asks of the outside world. Only [`Egress::connect`] must be written;
/// the other commands are refused with "command not supported" (0x07) unless implemented.
///
/// The server bounds every call with its own deadlines (resolve and connect timeouts, the
/// BIND wait); an implementation that never finishes gets a timeout reply.
///
/// ```
/// use socksmith::server::{Connected, Direct, Egress, EgressFuture, EgressRequest};
/// use std::sync::Arc;
///
/// /// Connects like `Direct`, and says so in the log.
/// #[derive(Debug)]
/// struct Logged(Direct);
///
/// impl Egress for Logged {
///     fn connect<'a>(&'a self, request: EgressRequest<'a>) -> EgressFuture<'a, Connected> {
///         tracing::info!(target = %request.session.target, "dialing");
///         self.0.connect(request)
///     }
/// }
/// ```
pub trait Egress: Send + Sync + fmt::Debug {
    /// Where traffic goes, for a log line (passwords redacted). By default the `Debug` form.
    fn describe(&self) -> String {
        format!("{self:?}")
    }

    /// Opens a tunnel to `request.session.target` (CONNECT).
    fn connect<'a>(&'a self, request: EgressRequest<'a>) -> EgressFuture<'a, Connected>;

    /// Listens for the peer `request.session.target` names (BIND; an unspecified address
    /// means any peer).
    fn bind<'a>(&'a self, request: EgressRequest<'a>) -> EgressFuture<'a, Box<dyn PendingBind>> {
        let _ = request;
        Box::pin(std::future::ready(Err(EgressError::Unsupported(
            Command::Bind,
        ))))
    }

    /// Opens the target side of a UDP association.
    fn udp_associate<'a>(
        &'a self,
        request: EgressRequest<'a>,
    ) -> EgressFuture<'a, Box<dyn UdpEgress>> {
        let _ = request;
        Box::pin(std::future::ready(Err(EgressError::Unsupported(
            Command::UdpAssociate,
        ))))
    }

    /// The addresses of `name` (RESOLVE, a BIND peer's name, a UDP destination's name). The
    /// session checks them with the policy.
    fn resolve<'a>(
        &'a self,
        request: EgressRequest<'a>,
        name: &'a DomainName,
    ) -> EgressFuture<'a, Vec<IpAddr>> {
        let _ = (request, name);
        Box::pin(std::future::ready(Err(EgressError::Unsupported(
            Command::Resolve,
        ))))
    }

    /// The name of `ip` (RESOLVE_PTR).
    fn resolve_ptr<'a>(
        &'a self,
        request: EgressRequest<'a>,
        ip: IpAddr,
    ) -> EgressFuture<'a, String> {
        let _ = (request, ip);
        Box::pin(std::future::ready(Err(EgressError::Unsupported(
            Command::ResolvePtr,
        ))))
    }
}

/// Why the egress could not do what a session asked. [`EgressError::reply_code`] is the reply
/// the client gets; the message is the precise reason for the log line, and the source chain
/// is kept.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EgressError {
    /// Every address the target resolved to is denied by the policy.
    #[error("denied by policy: {0}")]
    Denied(DenyReason),
    /// The name did not resolve.
    #[error("DNS lookup failed: {0}")]
    Resolve(#[from] ResolveError),
    /// No connection could be made.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The whole attempt did not finish in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// A local socket (a BIND listener, a UDP socket) could not be set up or used.
    #[error("{what}: {source}")]
    Socket {
        /// What was being set up.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
    /// The parent proxy chain failed; the message names the hop, the step and the reply.
    #[error("{source}")]
    Upstream {
        /// The reply the chain's failure deserves ([`crate::client::Client::downstream_reply`]).
        reply: ReplyCode,
        /// What went wrong, naming the hop.
        #[source]
        source: ClientError,
    },
    /// This egress does not do this command.
    #[error("{0} is not supported by this server's egress")]
    Unsupported(Command),
    /// A custom egress's failure, with the reply it deserves and its cause.
    #[error("{source}")]
    Custom {
        /// The reply the client gets.
        reply: ReplyCode,
        /// Why.
        source: Box<dyn StdError + Send + Sync>,
    },
}

impl EgressError {
    /// A custom egress's failure answered with `reply`.
    pub fn custom(reply: ReplyCode, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        EgressError::Custom {
            reply,
            source: source.into(),
        }
    }

    /// The closest SOCKS5 reply (SOCKS4 clients get 0x5B for any failure): denied 0x02 (by
    /// the policy, or by this host's own routes or firewall), network unreachable 0x03, host unreachable and DNS failure 0x04, refused 0x05, timeout
    /// 0x06 ("TTL expired", as Dante answers ETIMEDOUT), unsupported command 0x07, the
    /// chain's own reply for an upstream failure, anything else 0x01.
    pub fn reply_code(&self) -> ReplyCode {
        match self {
            EgressError::Denied(_) => ReplyCode::NotAllowed,
            EgressError::Resolve(_) => ReplyCode::HostUnreachable,
            EgressError::Dial(e) => match e.kind() {
                DialErrorKind::Refused => ReplyCode::ConnectionRefused,
                DialErrorKind::NetworkUnreachable => ReplyCode::NetworkUnreachable,
                DialErrorKind::HostUnreachable => ReplyCode::HostUnreachable,
                DialErrorKind::TimedOut => ReplyCode::TtlExpired,
                DialErrorKind::Prohibited => ReplyCode::NotAllowed,
                _ => ReplyCode::GeneralFailure,
            },
            EgressError::Timeout(_) => ReplyCode::TtlExpired,
            EgressError::Socket { .. } => ReplyCode::GeneralFailure,
            EgressError::Upstream { reply, .. } => *reply,
            EgressError::Unsupported(_) => ReplyCode::CommandNotSupported,
            EgressError::Custom { reply, .. } => *reply,
        }
    }
}

/// A name's addresses from `resolver` within `limit`, for the egresses that resolve on this
/// host: a name that is an IP literal is answered without asking, a non-UTF-8 name cannot be
/// asked, and `admit` may refuse a lookup before it starts (or hold a slot while it runs;
/// the time it takes to admit counts in `limit`).
pub(crate) async fn lookup_within<G, A>(
    resolver: &dyn Resolve,
    name: &DomainName,
    limit: Duration,
    admit: impl FnOnce(&str) -> A,
) -> Result<Vec<IpAddr>, ResolveError>
where
    A: Future<Output = Result<G, ResolveError>>,
{
    let Some(text) = name.to_str() else {
        return Err(ResolveError::InvalidName {
            query: name.to_string(),
        });
    };
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let started = tokio::time::Instant::now();
    let _admitted = admit(text).await?;
    let limit = limit.saturating_sub(started.elapsed());
    match tokio::time::timeout(limit, resolve(resolver, text)).await {
        Ok(result) => result,
        Err(_) => Err(ResolveError::Timeout {
            query: text.to_owned(),
            after: limit,
        }),
    }
}

impl From<io::Error> for EgressError {
    fn from(source: io::Error) -> Self {
        EgressError::Socket {
            what: "outbound socket",
            source,
        }
    }
}
