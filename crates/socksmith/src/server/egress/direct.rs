//! [`Direct`]: the egress that does everything from this host.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use socksmith_proto::{DomainName, TargetAddr};
use tokio::io::ReadBuf;
use tokio::net::{TcpListener, UdpSocket};

use crate::dial::{dial_with, DialError, DialOptions, TcpConnector};
use crate::relay::TunnelStream;
use crate::resolve::{Resolve, ResolveError};
use crate::server::egress::{
    lookup_within, Connected, Egress, EgressError, EgressFuture, EgressRequest, PendingBind,
    UdpEgress,
};
use crate::server::per_client::PerClient;

/// Does everything from this host: a name is resolved (IP literals, also when sent as a name,
/// skip the resolver), each address is checked with [`crate::policy::Policy::check_address`],
/// and the allowed ones are raced with Happy Eyeballs (RFC 8305; the stream has `TCP_NODELAY`
/// set). BIND listens on the address the client reached the server at, UDP leaves from one
/// socket per address family, bound on first use.
#[derive(Debug, Clone)]
pub struct Direct {
    resolver: Arc<dyn Resolve>,
    resolve_timeout: Duration,
    dial: DialOptions,
    /// Lookups in flight per client: the resolver's own limit is shared by everyone, and one
    /// client with slow names must not take all of it.
    lookups: Arc<PerClient>,
    /// Where TCP connections and UDP datagrams leave from, per family.
    source: TcpConnector,
    /// The address BIND replies name instead of the listener's own (behind NAT).
    advertise: Option<IpAddr>,
}

/// Name lookups one client may have in flight at once (the system resolver allows 64 in all).
pub const LOOKUPS_PER_CLIENT: usize = 8;

impl Direct {
    /// Resolves with `resolver` (each lookup bounded by `resolve_timeout`) and connects within
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
            lookups: PerClient::new(LOOKUPS_PER_CLIENT),
            source: TcpConnector::default(),
            advertise: None,
        }
    }

    /// Connections and datagrams leave from these addresses (at most one per family; the
    /// kernel chooses for a family without one).
    pub fn with_source_addresses(mut self, addrs: &[IpAddr]) -> Self {
        for ip in addrs {
            match ip {
                IpAddr::V4(v4) => self.source.source_v4 = Some(*v4),
                IpAddr::V6(v6) => self.source.source_v6 = Some(*v6),
            }
        }
        self
    }

    /// BIND replies name `ip` (with the listener's port) instead of the listener's address:
    /// for a server behind NAT, the address peers can reach.
    pub fn with_advertised_address(mut self, ip: Option<IpAddr>) -> Self {
        self.advertise = ip;
        self
    }

    async fn dial(&self, addrs: &[SocketAddr]) -> Result<tokio::net::TcpStream, DialError> {
        dial_with(&self.source, addrs, &self.dial)
            .await
            .map(|(stream, _)| stream)
    }

    async fn open(&self, request: EgressRequest<'_>) -> Result<Connected, EgressError> {
        let target = &request.session.target;
        let stream = match target {
            // The policy saw this address with the request.
            TargetAddr::Ip(addr) => self.dial(&[*addr]).await?,
            TargetAddr::Domain(name, port) => {
                let ips = self.lookup(request.session.client.ip(), name).await?;
                self.dial(&request.allowed(ips, *port)?).await?
            }
        };
        let bound = stream.local_addr()?;
        Ok(Connected {
            stream: TunnelStream::Tcp(stream),
            bound: TargetAddr::Ip(bound),
        })
    }

    /// A name's addresses, within the resolve timeout. A name that is an IP literal is
    /// answered without asking; a non-UTF-8 name cannot be asked of a resolver; a client
    /// with [`LOOKUPS_PER_CLIENT`] lookups in flight gets [`ResolveError::Busy`] at once.
    async fn lookup(&self, client: IpAddr, name: &DomainName) -> Result<Vec<IpAddr>, ResolveError> {
        lookup_within(&*self.resolver, name, self.resolve_timeout, |text| {
            self.lookups.take(client).ok_or_else(|| ResolveError::Busy {
                query: text.to_owned(),
                limit: LOOKUPS_PER_CLIENT,
                after: Duration::ZERO,
            })
        })
        .await
    }

    async fn listen(
        &self,
        request: EgressRequest<'_>,
    ) -> Result<Box<dyn PendingBind>, EgressError> {
        let session = request.session;
        // Which peer may connect: `None` means any.
        let expected = match &session.target {
            TargetAddr::Ip(addr) if addr.ip().is_unspecified() => None,
            TargetAddr::Ip(addr) => Some(vec![addr.ip().to_canonical()]),
            TargetAddr::Domain(name, _) => Some(
                self.lookup(session.client.ip(), name)
                    .await?
                    .into_iter()
                    .map(|ip| ip.to_canonical())
                    .collect(),
            ),
        };
        let listen_ip = session.local.ip().to_canonical();
        let listener = TcpListener::bind(SocketAddr::new(listen_ip, 0))
            .await
            .map_err(|source| EgressError::Socket {
                what: "BIND listener",
                source,
            })?;
        let listening = listener
            .local_addr()
            .map_err(|source| EgressError::Socket {
                what: "BIND listener address",
                source,
            })?;
        let listening = match self.advertise {
            Some(ip) => SocketAddr::new(ip, listening.port()),
            None => listening,
        };
        Ok(Box::new(DirectBind {
            listener,
            listening,
            expected,
        }))
    }
}

impl Egress for Direct {
    fn describe(&self) -> String {
        "direct".to_owned()
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
        let udp = DirectUdp {
            source: self.source,
            ..DirectUdp::default()
        };
        Box::pin(std::future::ready(Ok(Box::new(udp) as Box<dyn UdpEgress>)))
    }

    fn resolve<'a>(
        &'a self,
        request: EgressRequest<'a>,
        name: &'a DomainName,
    ) -> EgressFuture<'a, Vec<IpAddr>> {
        Box::pin(async move { Ok(self.lookup(request.session.client.ip(), name).await?) })
    }

    fn resolve_ptr<'a>(
        &'a self,
        request: EgressRequest<'a>,
        ip: IpAddr,
    ) -> EgressFuture<'a, String> {
        let _ = request;
        Box::pin(async move {
            let limit = self.resolve_timeout;
            match tokio::time::timeout(limit, self.resolver.lookup_addr(ip)).await {
                Ok(answer) => Ok(answer?),
                Err(_) => Err(ResolveError::Timeout {
                    query: ip.to_string(),
                    after: limit,
                }
                .into()),
            }
        })
    }
}

/// A BIND listener on this host, waiting for the expected peer.
struct DirectBind {
    listener: TcpListener,
    listening: SocketAddr,
    /// The peer's addresses; `None`: any peer.
    expected: Option<Vec<IpAddr>>,
}

impl PendingBind for DirectBind {
    fn listen_addr(&self) -> TargetAddr {
        TargetAddr::Ip(self.listening)
    }

    fn accept(self: Box<Self>) -> EgressFuture<'static, (TunnelStream, TargetAddr)> {
        Box::pin(async move {
            loop {
                let (stream, addr) =
                    self.listener
                        .accept()
                        .await
                        .map_err(|source| EgressError::Socket {
                            what: "BIND accept",
                            source,
                        })?;
                let ip = addr.ip().to_canonical();
                match &self.expected {
                    Some(ips) if !ips.contains(&ip) => {
                        tracing::debug!(%addr, "BIND: connection from an unexpected peer closed");
                    }
                    _ => {
                        // Best effort: a failure only costs latency.
                        let _ = stream.set_nodelay(true);
                        let peer = SocketAddr::new(ip, addr.port());
                        return Ok((TunnelStream::Tcp(stream), TargetAddr::Ip(peer)));
                    }
                }
            }
        })
    }
}

/// The target side of a UDP association on this host: one socket per address family, bound
/// on first use (to the source address for its family, if one is set).
#[derive(Default)]
struct DirectUdp {
    v4: OnceLock<UdpSocket>,
    v6: OnceLock<UdpSocket>,
    source: TcpConnector,
}

impl DirectUdp {
    fn socket(&self, ip: IpAddr) -> io::Result<&UdpSocket> {
        let (slot, any) = match ip {
            IpAddr::V4(_) => (
                &self.v4,
                IpAddr::V4(self.source.source_v4.unwrap_or(Ipv4Addr::UNSPECIFIED)),
            ),
            IpAddr::V6(_) => (
                &self.v6,
                IpAddr::V6(self.source.source_v6.unwrap_or(Ipv6Addr::UNSPECIFIED)),
            ),
        };
        if let Some(socket) = slot.get() {
            return Ok(socket);
        }
        let socket = std::net::UdpSocket::bind(SocketAddr::new(any, 0))?;
        socket.set_nonblocking(true)?;
        let _ = slot.set(UdpSocket::from_std(socket)?);
        Ok(slot.get().expect("just set"))
    }
}

impl UdpEgress for DirectUdp {
    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        payload: &[u8],
        dest: &TargetAddr,
    ) -> Poll<io::Result<()>> {
        let TargetAddr::Ip(addr) = dest else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the direct egress sends to addresses only",
            )));
        };
        let socket = match self.socket(addr.ip()) {
            Ok(socket) => socket,
            Err(e) => return Poll::Ready(Err(e)),
        };
        socket.poll_send_to(cx, payload, *addr).map_ok(|_| ())
    }

    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, TargetAddr)>> {
        for socket in [self.v4.get(), self.v6.get()].into_iter().flatten() {
            let mut rb = ReadBuf::new(buf);
            if let Poll::Ready(result) = socket.poll_recv_from(cx, &mut rb) {
                let from = result?;
                let from = SocketAddr::new(from.ip().to_canonical(), from.port());
                return Poll::Ready(Ok((rb.filled().len(), TargetAddr::Ip(from))));
            }
        }
        Poll::Pending
    }
}
