//! CONNECT (open a tunnel through the outbound, reply, relay) and Tor's RESOLVE and
//! RESOLVE_PTR (answer from the server's resolver, or from the upstream chain's last hop when
//! there is one; no tunnel).

use std::borrow::Cow;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use socksmith_proto::{Command, DomainName, ReplyCode, TargetAddr, Version};
use tokio::net::TcpStream;

use crate::relay::{relay_to, RelayOutcome, Target};
use crate::resolve::ResolveError;
use crate::server::error::{LookupError, SessionError};
use crate::server::outbound::{lookup, ConnectError, ConnectRequest, OutboundStream};
use crate::server::session::{Replier, Session, Traffic};
use crate::server::stats::{add, inc, Gauge, Stats};
use crate::server::Shared;

/// CONNECT, first half: open the connection to the target and reply with the address it
/// leaves from (or with the failure). The caller then relays with [`tunnel`]; keeping the two
/// apart lets it run this half in a boxed future that is freed before the relay starts, so an
/// idle tunnel's task does not keep the dialing and reply state.
pub(crate) async fn open(
    shared: &Shared,
    session: &Session,
    mut client: TcpStream,
    mut replier: Replier,
) -> Result<(TcpStream, OutboundStream), SessionError> {
    let request = ConnectRequest {
        session,
        policy: &*shared.config.policy,
    };
    // A backstop over whatever the outbound does: lookup and connect, each bounded.
    let limit = shared
        .config
        .resolve_timeout
        .saturating_add(shared.config.connect_timeout);
    let connected = match tokio::time::timeout(limit, shared.outbound.connect(request)).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Timeout(limit)),
    };
    let connected = match connected {
        Ok(c) => c,
        Err(e) => {
            inc(&shared.stats.connect_failures);
            if let ConnectError::Denied(_) = e {
                inc(&shared.stats.policy_denied);
            }
            return Err(replier.refuse(&mut client, e.into()).await);
        }
    };
    replier
        .send(&mut client, ReplyCode::Succeeded, connected.bound)
        .await?;
    Ok((client, connected.stream))
}

/// What a CONNECT hands back to the session once its reply is sent, for [`tunnel`]: the two streams and the bytes
/// the client sent after its request.
pub(crate) struct Tunnel {
    pub(crate) client: TcpStream,
    pub(crate) target: OutboundStream,
    pub(crate) pending: Vec<u8>,
}

/// Relays a tunnel whose replies are sent: splice for TCP, copying for other streams.
///
/// A plain function returning a hand-written future, which holds the streams only inside the
/// relay's own state (an `async fn` would keep its parameters beside it, and an `async` block
/// its captured relay future, for the tunnel's whole life).
pub(crate) fn tunnel<'a>(
    shared: &'a Shared,
    client: TcpStream,
    target: OutboundStream,
    pending: impl Into<Cow<'a, [u8]>>,
    traffic: &'a mut Traffic,
) -> impl Future<Output = Result<(), SessionError>> + Send + 'a {
    let target = match target {
        OutboundStream::Tcp(target) => Target::Tcp(target),
        OutboundStream::Stream(target) => Target::Other(target),
    };
    let stats = &*shared.stats;
    inc(&stats.tunnels_total);
    Booked {
        relaying: relay_to(client, target, pending.into(), &shared.relay),
        stats,
        traffic,
        _active: Gauge::up(&stats.tunnels_active),
    }
}

/// [`tunnel`] for what [`open`]'s caller got back.
pub(crate) fn relay_tunnel<'a>(
    shared: &'a Shared,
    opened: Tunnel,
    traffic: &'a mut Traffic,
) -> impl Future<Output = Result<(), SessionError>> + Send + 'a {
    tunnel(
        shared,
        opened.client,
        opened.target,
        opened.pending,
        traffic,
    )
}

pin_project_lite::pin_project! {
    /// A relay that books its outcome (the server's counters, the session's traffic) when it
    /// ends, and counts as an active tunnel until then.
    struct Booked<'a, F> {
        #[pin]
        relaying: F,
        stats: &'a Stats,
        traffic: &'a mut Traffic,
        _active: Gauge<'a>,
    }
}

impl<F: Future<Output = RelayOutcome>> Future for Booked<'_, F> {
    type Output = Result<(), SessionError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let outcome = ready!(this.relaying.poll(cx));
        this.traffic.up = outcome.client_to_target;
        this.traffic.down = outcome.target_to_client;
        add(&this.stats.bytes_client_to_target, outcome.client_to_target);
        add(&this.stats.bytes_target_to_client, outcome.target_to_client);
        Poll::Ready(outcome.result.map_err(SessionError::Relay))
    }
}

/// RESOLVE (a name to an address) and RESOLVE_PTR (an address to a name): answered from the
/// server's resolver in the reply; no connection is opened and none follows.
pub(crate) async fn resolve(
    shared: &Shared,
    session: &Session,
    mut client: TcpStream,
    mut replier: Replier,
) -> Result<(), SessionError> {
    inc(&shared.stats.resolves);
    let answer = match session.command {
        Command::ResolvePtr => resolve_ptr(shared, &session.target).await,
        _ => resolve_name(shared, session).await,
    };
    match answer {
        Ok(bound) => replier.send(&mut client, ReplyCode::Succeeded, bound).await,
        Err(e) => Err(replier.refuse(&mut client, e.into()).await),
    }
}

async fn resolve_name(shared: &Shared, session: &Session) -> Result<TargetAddr, LookupError> {
    let config = &shared.config;
    let ips = match (shared.outbound.upstream(), &session.target) {
        (Some(upstream), TargetAddr::Domain(name, _)) => {
            let Some(name) = name.to_str() else {
                return Err(ResolveError::InvalidName {
                    query: name.to_string(),
                }
                .into());
            };
            let chain = upstream.client();
            let ip = chain
                .resolve(name)
                .await
                .map_err(|source| LookupError::Upstream {
                    reply: chain.downstream_reply(&source),
                    source,
                })?;
            vec![ip]
        }
        _ => lookup(&*config.resolver, &session.target, config.resolve_timeout).await?,
    };
    // A SOCKS4 reply has room for an IPv4 address only.
    let ip = match session.version {
        Version::V4 => ips.iter().find(|ip| ip.is_ipv4()),
        Version::V5 => ips.first(),
    };
    match ip {
        Some(ip) => Ok(TargetAddr::Ip(SocketAddr::new(*ip, 0))),
        None => Err(LookupError::NoIpv4(session.target.clone())),
    }
}

async fn resolve_ptr(shared: &Shared, target: &TargetAddr) -> Result<TargetAddr, LookupError> {
    let Some(addr) = target.ip_literal() else {
        return Err(LookupError::PtrNeedsAddress(target.clone()));
    };
    let ip: IpAddr = addr.ip();
    let name = match shared.outbound.upstream() {
        Some(upstream) => {
            let chain = upstream.client();
            chain
                .resolve_ptr(ip)
                .await
                .map_err(|source| LookupError::Upstream {
                    reply: chain.downstream_reply(&source),
                    source,
                })?
        }
        None => {
            let limit = shared.config.resolve_timeout;
            match tokio::time::timeout(limit, shared.config.resolver.lookup_addr(ip)).await {
                Ok(answer) => answer?,
                Err(_) => {
                    return Err(ResolveError::Timeout {
                        query: ip.to_string(),
                        after: limit,
                    }
                    .into())
                }
            }
        }
    };
    DomainName::new(name.into_bytes())
        .map(|name| TargetAddr::Domain(name, 0))
        .map_err(|source| LookupError::Unsendable { ip, source })
}
