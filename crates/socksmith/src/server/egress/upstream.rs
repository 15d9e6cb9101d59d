//! [`Upstream`]: the egress that sends every command through a chain of parent proxies, with
//! the client library ([`Client`]) doing the walking.
//!
//! CONNECT goes through [`Client::connect`], BIND through [`Client::bind`] (the last hop
//! listens; its two replies become the server's two replies), UDP ASSOCIATE through
//! [`Client::udp_associate`] (datagrams go through the last hop's relay), RESOLVE and
//! RESOLVE_PTR through [`Client::resolve`] and [`Client::resolve_ptr`]. Nothing leaves this host
//! directly: what the chain cannot do, the client is refused with the chain's reply (a last
//! hop without a command answers 0x07, and that is passed on).
//!
//! A name stays a name for a last hop that resolves names (`socks5h`, `socks4a`): the policy
//! saw it with the request, and what it resolves to at the far end is the upstream's
//! business. For a last hop that takes addresses (`socks5`, `socks4`), the name is resolved
//! here, as curl does, and every address is checked with the policy first, exactly as the
//! direct egress does: a name that resolves to a metadata address is refused either way.
//!
//! Failures keep the client library's error, which names the hop ("hop 2
//! (socks5://10.0.0.2:1080): CONNECT 10.0.0.9:80: connection refused (reply 0x05)"), and
//! answer with [`Client::downstream_reply`].

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use socksmith_proto::{DomainName, TargetAddr};
use tokio::net::TcpStream;

use crate::client::{
    interleave_families, BindListener, Client, ClientError, ProxyStream, UdpAssociation,
};
use crate::relay::TunnelStream;
use crate::resolve::ResolveError;
use crate::server::egress::{
    lookup_within, Connected, Egress, EgressError, EgressFuture, EgressRequest, PendingBind,
    UdpEgress,
};

/// Sends the server's commands through a chain of parent SOCKS proxies. Cheap to clone.
///
/// ```no_run
/// use socksmith::client::Client;
/// use socksmith::server::{ServerConfig, Upstream};
/// use std::sync::Arc;
///
/// let client = Client::from_urls(["socks5h://user:pass@127.0.0.1:1081"]).unwrap();
/// let mut config = ServerConfig::default();
/// config.egress = Some(Arc::new(Upstream::new(client)));
/// ```
#[derive(Clone)]
pub struct Upstream {
    client: Client,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The client's Debug redacts passwords.
        f.debug_struct("Upstream")
            .field("client", &self.client)
            .finish()
    }
}

/// What a CONNECT through the chain asks the last hop for.
enum ChainTarget {
    /// The target as it is (an address, or a name the last hop resolves).
    As(TargetAddr),
    /// The addresses of a name resolved here that the policy allows, tried in turn.
    OneOf(Vec<SocketAddr>),
}

impl Upstream {
    /// Sends through `client`'s chain, first hop first.
    pub fn new(client: Client) -> Self {
        Upstream { client }
    }

    /// The client that walks the chain.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn failed(&self, source: ClientError) -> EgressError {
        EgressError::Upstream {
            reply: self.client.downstream_reply(&source),
            source,
        }
    }

    /// Whether the last hop takes names (else they are resolved here).
    fn remote_names(&self) -> bool {
        self.client.last_hop().protocol().remote_dns()
    }

    /// The target as the last hop gets it: a name for a hop that resolves names, else the
    /// addresses the policy allows (and the hop's protocol can carry), the families taking
    /// turns, for the chain to try in order.
    async fn target_for_chain(
        &self,
        request: EgressRequest<'_>,
    ) -> Result<ChainTarget, EgressError> {
        let target = &request.session.target;
        if let Some(addr) = target.ip_literal() {
            return Ok(ChainTarget::As(TargetAddr::Ip(addr)));
        }
        let TargetAddr::Domain(name, port) = target else {
            return Ok(ChainTarget::As(target.clone()));
        };
        if self.remote_names() {
            return Ok(ChainTarget::As(target.clone()));
        }
        let ips = self.lookup_here(name).await?;
        let v4_only = self.client.last_hop().protocol().is_v4();
        let usable = ips.into_iter().filter(|ip| !v4_only || ip.is_ipv4());
        let allowed = request.allowed(interleave_families(usable), *port)?;
        match allowed.first() {
            Some(_) => Ok(ChainTarget::OneOf(allowed)),
            None => Err(EgressError::Resolve(ResolveError::NotFound {
                query: name.to_string(),
            })),
        }
    }

    /// Resolves `name` on this host, as the client library would for a hop that takes
    /// addresses.
    async fn lookup_here(&self, name: &DomainName) -> Result<Vec<IpAddr>, EgressError> {
        let limit = self.client.timeouts().resolve;
        Ok(lookup_within(&*self.client.resolver, name, limit, |_| async { Ok(()) }).await?)
    }

    async fn open(&self, request: EgressRequest<'_>) -> Result<Connected, EgressError> {
        let stream = match self.target_for_chain(request).await? {
            ChainTarget::As(target) => self.client.connect(&target).await,
            ChainTarget::OneOf(addrs) => self.client.connect_to_one_of(addrs).await,
        }
        .map_err(|e| self.failed(e))?;
        let bound = stream.bound_addr().clone();
        Ok(Connected {
            stream: tunnel_stream(stream),
            bound,
        })
    }

    async fn listen(
        &self,
        request: EgressRequest<'_>,
    ) -> Result<Box<dyn PendingBind>, EgressError> {
        let listener = self
            .client
            .bind(&request.session.target)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(Box::new(UpstreamBind {
            upstream: self.clone(),
            listener,
        }))
    }
}

impl Egress for Upstream {
    /// The chain, passwords redacted: `socks5h://u:***@10.0.0.1:1080 ->
    /// socks5://10.0.0.2:1080`.
    fn describe(&self) -> String {
        self.client
            .hops()
            .iter()
            .map(|hop| hop.redacted())
            .collect::<Vec<_>>()
            .join(" -> ")
    }

    fn connect<'a>(&'a self, request: EgressRequest<'a>) -> EgressFuture<'a, Connected> {
        Box::pin(self.open(request))
    }

    fn bind<'a>(&'a self, request: EgressRequest<'a>) -> EgressFuture<'a, Box<dyn PendingBind>> {
        Box::pin(self.listen(request))
    }

    fn udp_associate<'a>(
        &'a self,
        request: EgressRequest<'a>,
    ) -> EgressFuture<'a, Box<dyn UdpEgress>> {
        let _ = request;
        Box::pin(async move {
            let association = self
                .client
                .udp_associate()
                .await
                .map_err(|e| self.failed(e))?;
            Ok(Box::new(UpstreamUdp {
                association,
                remote_names: self.remote_names(),
                send_buf: Mutex::new(Vec::new()),
            }) as Box<dyn UdpEgress>)
        })
    }

    fn resolve<'a>(
        &'a self,
        request: EgressRequest<'a>,
        name: &'a DomainName,
    ) -> EgressFuture<'a, Vec<IpAddr>> {
        let _ = request;
        Box::pin(async move {
            let Some(text) = name.to_str() else {
                return Err(ResolveError::InvalidName {
                    query: name.to_string(),
                }
                .into());
            };
            let ip = self
                .client
                .resolve(text)
                .await
                .map_err(|e| self.failed(e))?;
            Ok(vec![ip])
        })
    }

    fn resolve_ptr<'a>(
        &'a self,
        request: EgressRequest<'a>,
        ip: IpAddr,
    ) -> EgressFuture<'a, String> {
        let _ = request;
        Box::pin(async move {
            self.client
                .resolve_ptr(ip)
                .await
                .map_err(|e| self.failed(e))
        })
    }
}

/// A BIND on the chain's last hop.
struct UpstreamBind {
    upstream: Upstream,
    listener: BindListener<TcpStream>,
}

impl PendingBind for UpstreamBind {
    fn listen_addr(&self) -> TargetAddr {
        self.listener.listen_addr().clone()
    }

    fn accept(self: Box<Self>) -> EgressFuture<'static, (TunnelStream, TargetAddr)> {
        let UpstreamBind { upstream, listener } = *self;
        Box::pin(async move {
            let (stream, peer) = listener.accept().await.map_err(|e| upstream.failed(e))?;
            Ok((tunnel_stream(stream), peer))
        })
    }
}

/// A UDP association with the chain's last hop as the target side.
struct UpstreamUdp {
    association: UdpAssociation,
    remote_names: bool,
    /// Where the outgoing datagram (header and payload) is built; reused.
    send_buf: Mutex<Vec<u8>>,
}

impl UdpEgress for UpstreamUdp {
    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        payload: &[u8],
        dest: &TargetAddr,
    ) -> Poll<io::Result<()>> {
        let mut buf = self
            .send_buf
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.association
            .poll_send_to(cx, payload, dest, &mut buf)
            .map_ok(|_| ())
    }

    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, TargetAddr)>> {
        self.association.poll_recv_from(cx, buf)
    }

    fn resolves_names(&self) -> bool {
        self.remote_names
    }

    fn closed(&self) -> Pin<Box<dyn Future<Output = io::Error> + Send + '_>> {
        Box::pin(async move {
            self.association.closed().await;
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the upstream proxy ended the UDP association",
            )
        })
    }
}

/// A tunnel through the chain as the target end of the relay: the bare TCP connection to the
/// first hop when no early target bytes were read with the last reply (the relay can then
/// splice), the stream with its buffer otherwise.
fn tunnel_stream(stream: ProxyStream<TcpStream>) -> TunnelStream {
    if stream.read_buffer().is_empty() {
        TunnelStream::Tcp(stream.into_inner())
    } else {
        TunnelStream::Other(Box::new(stream))
    }
}
