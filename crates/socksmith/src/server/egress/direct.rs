//! [`Direct`]: the egress that does everything from this host.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use socksmith_proto::{DomainName, TargetAddr};
use tokio::net::TcpListener;

use crate::dial::{dial_with, DialError, DialOptions, TcpConnector};
use crate::relay::TunnelStream;
use crate::resolve::{Resolve, ResolveError};
use crate::server::egress::{
    lookup_within, Connected, Egress, EgressError, EgressFuture, EgressRequest, PendingBind,
    UdpEgress,
};
use crate::server::per_client::PerClient;
use crate::sys::udp::{gso_run, BatchSocket, RecvMeta, BATCH};

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
    /// with [`LOOKUPS_PER_CLIENT`] lookups in flight waits for one of them to finish (a
    /// browser opening a page asks for many names at once), and gets
    /// [`ResolveError::Busy`] if none does within the timeout.
    async fn lookup(&self, client: IpAddr, name: &DomainName) -> Result<Vec<IpAddr>, ResolveError> {
        let patience = self.resolve_timeout;
        lookup_within(&*self.resolver, name, patience, |_| async move {
            self.lookups
                .take_within(client, patience)
                .await
                .ok_or_else(|| ResolveError::Busy {
                    query: name.to_string(),
                    limit: LOOKUPS_PER_CLIENT,
                    after: patience,
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
/// on first use (to the source address for its family, if one is set). Datagrams go and come
/// in batches ([`BatchSocket`]): a run of same-size datagrams to one target leaves with one
/// system call (GSO), and one call takes every answer waiting (`recvmmsg`), a target's GSO
/// burst in one buffer (GRO). A caller of [`UdpEgress::poll_recv_from`] wants one answer
/// per call, so GRO goes off for good once it is called.
#[derive(Default)]
struct DirectUdp {
    v4: OnceLock<BatchSocket>,
    v6: OnceLock<BatchSocket>,
    source: TcpConnector,
    /// Set by the first [`UdpEgress::poll_recv_from`]: no GRO from then on.
    one_per_buffer: AtomicBool,
}

impl DirectUdp {
    fn socket(&self, ip: IpAddr) -> io::Result<&BatchSocket> {
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
        let gro = !self.one_per_buffer.load(Ordering::Relaxed);
        let _ = slot.set(BatchSocket::new(socket, gro)?);
        Ok(slot.get().expect("just set"))
    }
}

/// The address a datagram for `dest` goes to: the direct egress sends to addresses only (the
/// association resolves names first).
fn direct_addr(dest: &TargetAddr) -> io::Result<SocketAddr> {
    match dest {
        TargetAddr::Ip(addr) => Ok(*addr),
        TargetAddr::Domain(..) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the direct egress sends to addresses only",
        )),
    }
}

impl UdpEgress for DirectUdp {
    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        payload: &[u8],
        dest: &TargetAddr,
    ) -> Poll<io::Result<()>> {
        let addr = direct_addr(dest)?;
        self.socket(addr.ip())?.poll_send(cx, payload, None, addr)
    }

    fn poll_send_batch(
        &self,
        cx: &mut Context<'_>,
        payloads: &[u8],
        datagrams: &[(usize, TargetAddr)],
    ) -> Poll<io::Result<usize>> {
        let mut sent = 0;
        let mut offset = 0;
        while let Some((_, dest)) = datagrams.get(sent) {
            let step = (|| {
                let addr = direct_addr(dest)?;
                let socket = self.socket(addr.ip())?;
                let same_dest = datagrams[sent..]
                    .iter()
                    .take_while(|(_, d)| d == dest)
                    .map(|(len, _)| *len);
                let run = gso_run(same_dest, socket.max_segments());
                let bytes: usize = datagrams[sent..sent + run].iter().map(|(len, _)| len).sum();
                let contents = payloads.get(offset..offset + bytes).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a datagram's length runs past the payloads",
                    )
                })?;
                let segment = (run > 1).then_some(datagrams[sent].0);
                Ok::<_, io::Error>((socket.poll_send(cx, contents, segment, addr), run, bytes))
            })();
            match step {
                Ok((Poll::Ready(Ok(())), run, bytes)) => {
                    sent += run;
                    offset += bytes;
                }
                // The kernel refused the GSO send (a device without it, a path MTU below the
                // segments): this datagram alone, and `quinn-udp` has stopped offering GSO
                // where the device cannot do it.
                Ok((Poll::Ready(Err(_)), run, _)) if run > 1 => {
                    let (len, _) = &datagrams[sent];
                    match self.poll_send_to(cx, &payloads[offset..offset + len], dest) {
                        Poll::Ready(Ok(())) => {
                            sent += 1;
                            offset += len;
                        }
                        Poll::Ready(Err(e)) if sent == 0 => return Poll::Ready(Err(e)),
                        Poll::Pending if sent == 0 => return Poll::Pending,
                        Poll::Ready(Err(_)) | Poll::Pending => break,
                    }
                }
                Ok((Poll::Ready(Err(e)), ..)) | Err(e) if sent == 0 => {
                    return Poll::Ready(Err(e));
                }
                Ok((Poll::Pending, ..)) if sent == 0 => return Poll::Pending,
                // What stopped this run comes back with the next call, which starts here.
                Ok(_) | Err(_) => break,
            }
        }
        Poll::Ready(Ok(sent))
    }

    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, TargetAddr)>> {
        if !self.one_per_buffer.swap(true, Ordering::Relaxed) {
            // Sockets are made by the first send, and answers come only after it: a caller
            // that receives one at a time from the start never sees a coalesced buffer.
            for socket in [self.v4.get(), self.v6.get()].into_iter().flatten() {
                socket.disable_gro()?;
            }
        }
        let mut bufs = [IoSliceMut::new(buf)];
        let mut received = [(0, 0, TargetAddr::Ip(SocketAddr::from(([0, 0, 0, 0], 0))))];
        match self.poll_recv_batch(cx, &mut bufs, &mut received) {
            Poll::Ready(Ok(_)) => {
                let [(len, _, from)] = received;
                Poll::Ready(Ok((len, from)))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_recv_batch(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        received: &mut [(usize, usize, TargetAddr)],
    ) -> Poll<io::Result<usize>> {
        let most = bufs.len().min(received.len()).min(BATCH);
        let mut meta = [RecvMeta::default(); BATCH];
        for socket in [self.v4.get(), self.v6.get()].into_iter().flatten() {
            let Poll::Ready(result) = socket.poll_recv(cx, &mut bufs[..most], &mut meta[..most])
            else {
                continue;
            };
            let n = result?;
            for (slot, meta) in received.iter_mut().zip(&meta[..n]) {
                let from = SocketAddr::new(meta.addr.ip().to_canonical(), meta.addr.port());
                *slot = (meta.len, meta.stride, TargetAddr::Ip(from));
            }
            return Poll::Ready(Ok(n));
        }
        Poll::Pending
    }

    fn kernel_drops(&self) -> u64 {
        [self.v4.get(), self.v6.get()]
            .into_iter()
            .flatten()
            .filter_map(|socket| socket.kernel_drops().ok())
            .sum()
    }
}
