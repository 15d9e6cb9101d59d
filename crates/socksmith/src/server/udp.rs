//! UDP ASSOCIATE: a relay port for one client, alive as long as its TCP control connection.
//!
//! The reply names a UDP socket on the IP the client reached the server at (never 0.0.0.0).
//! Datagrams on it are taken only from the client, as proto's [`UdpClientFilter`] decides:
//! the control connection's IP, whatever the request names (a client behind NAT does not
//! know its outside address, and a request naming a third party's IP must not aim the relay
//! at it), and, once known, its port (the request's when it names that IP or 0.0.0.0, else
//! the first datagram's). Each one is unwrapped (RFC 1928 section 7), checked
//! with the policy and sent from a separate outbound socket; answers arriving there are
//! wrapped with the sender's address and sent to the client. Fragments (FRAG != 0) are dropped
//! and counted: RFC 1928 says "An implementation that does not support fragmentation MUST drop
//! any datagram whose FRAG field is other than X'00'."
//!
//! The association ends when the control connection closes or errors, or after
//! [`crate::server::ServerConfig::udp_idle_timeout`] without a datagram from the client. One
//! buffer of 64 KiB, allocated when the first datagram arrives (an idle association costs
//! none), serves both directions; nothing is allocated per datagram.
//!
//! With an upstream, the outbound sockets are replaced by one association with the chain's
//! last hop ([`crate::client::Client::udp_associate`], opened before the reply, so the
//! client gets the chain's reply code when it fails): datagrams go to its relay, a name as is
//! when the last hop resolves names (`socks5h`), else resolved and checked here; answers come
//! back with the source the relay reports. Its receive is a future rather than a poll, so that
//! loop waits with `select!` and has a second buffer. The association also ends when the
//! upstream ends its own.

use std::future::{poll_fn, Future};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use socksmith_proto::{ReplyCode, TargetAddr, UdpClientFilter, UdpHeader};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, Sleep};

use crate::client::{UdpAssociation, MAX_UDP_HEADER_LEN};
use crate::policy::Decision;
use crate::server::error::SessionError;
use crate::server::outbound::lookup;
use crate::server::session::{Replier, Session, Traffic};
use crate::server::stats::inc;
use crate::server::Shared;

/// Room kept in front of a target's answer for the SOCKS header: 3 + 1 + 16 + 2 bytes for
/// an IP address from this host's sockets, up to a 255-byte name for a source an upstream
/// relay reports (which also needs that room for its own header in the same place).
const HEADER_ROOM: usize = MAX_UDP_HEADER_LEN;

/// The largest UDP payload plus the header room.
const BUFFER: usize = 65536 + HEADER_ROOM;

pub(crate) async fn associate(
    shared: &Shared,
    session: &Session,
    mut client: TcpStream,
    mut replier: Replier,
    traffic: &mut Traffic,
) -> Result<(), SessionError> {
    let upstream = match shared.outbound.upstream() {
        Some(upstream) => {
            let chain = upstream.client();
            match chain.udp_associate().await {
                Ok(association) => Some(ThroughUpstream {
                    association,
                    remote_names: chain.last_hop().protocol().remote_dns(),
                }),
                Err(e) => {
                    let e = SessionError::upstream(chain, e);
                    return Err(replier.refuse(&mut client, e).await);
                }
            }
        }
        None => None,
    };
    let relay_ip = session.local.ip().to_canonical();
    let socket = match UdpSocket::bind(SocketAddr::new(relay_ip, 0)).await {
        Ok(s) => s,
        Err(source) => {
            let e = SessionError::Socket {
                what: "UDP relay socket",
                source,
            };
            return Err(replier.refuse(&mut client, e).await);
        }
    };
    let relay_addr = socket.local_addr().map_err(|source| SessionError::Socket {
        what: "UDP relay address",
        source,
    })?;
    replier
        .send(
            &mut client,
            ReplyCode::Succeeded,
            TargetAddr::Ip(relay_addr),
        )
        .await?;
    drop(replier);
    inc(&shared.stats.udp_associations);

    let mut relay = Association {
        shared,
        session,
        client: UdpClientFilter::new(session.client.ip(), &session.target),
        socket,
        out_v4: None,
        out_v6: None,
        upstream,
        header: Vec::with_capacity(HEADER_ROOM),
        last_name: None,
        traffic: Traffic::default(),
    };
    let result = if relay.upstream.is_some() {
        relay.run_upstream(&mut client).await
    } else {
        relay.run(&mut client).await
    };
    *traffic = relay.traffic;
    result
}

/// `idle` from now; a duration too long for the clock means "never" (as in `sleep`), not a
/// panic.
fn deadline_in(idle: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(idle)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

/// The target side of an association through the upstream chain.
struct ThroughUpstream {
    association: UdpAssociation,
    /// Whether the last hop resolves names (they are sent as names, not looked up here).
    remote_names: bool,
}

struct Association<'a> {
    shared: &'a Shared,
    session: &'a Session,
    /// Which source is the client: its IP, and its port once known (from the request or
    /// the first datagram).
    client: UdpClientFilter,
    /// The client side: the address in the reply.
    socket: UdpSocket,
    /// The target side, one socket per family, bound on first use.
    out_v4: Option<UdpSocket>,
    out_v6: Option<UdpSocket>,
    /// The target side instead of those sockets when the server has an upstream.
    upstream: Option<ThroughUpstream>,
    /// Reused to encode the header of answers.
    header: Vec<u8>,
    /// The last name a datagram was sent to and its address: a client talking to one
    /// server by name costs one lookup, not one per datagram.
    last_name: Option<(TargetAddr, IpAddr)>,
    /// Payload bytes relayed each way (headers not counted), for the log line.
    traffic: Traffic,
}

enum Event {
    FromClient(usize, SocketAddr),
    FromTarget(usize, SocketAddr),
    ControlClosed(Option<io::Error>),
    Idle,
}

impl Association<'_> {
    async fn run(&mut self, control: &mut TcpStream) -> Result<(), SessionError> {
        let idle = self.shared.config.udp_idle_timeout;
        // Allocated when the first datagram is there (see `poll_event`).
        let mut buf = Vec::new();
        let sleep = tokio::time::sleep(idle);
        tokio::pin!(sleep);
        loop {
            let event = poll_fn(|cx| self.poll_event(cx, control, &mut buf, sleep.as_mut())).await;
            match event {
                Event::FromClient(n, from) => {
                    let datagram = buf.get(..n).expect("recv_from reports at most the buffer");
                    if self.client_datagram(datagram, from).await {
                        sleep.as_mut().reset(deadline_in(idle));
                    }
                }
                Event::FromTarget(n, from) => {
                    if self
                        .target_datagram(&mut buf, n, TargetAddr::Ip(from))
                        .await
                    {
                        sleep.as_mut().reset(deadline_in(idle));
                    }
                }
                Event::ControlClosed(None) => return Ok(()),
                Event::ControlClosed(Some(e)) => return Err(SessionError::ClientIo(e)),
                Event::Idle => return Err(SessionError::UdpIdle(idle)),
            }
        }
    }

    /// [`Self::run`] with the upstream's association as the target side.
    async fn run_upstream(&mut self, control: &mut TcpStream) -> Result<(), SessionError> {
        let idle = self.shared.config.udp_idle_timeout;
        // Both allocated on first use: the client's when its first datagram is there, the
        // target side's when something was sent (nothing can answer before).
        let mut from_client = Vec::new();
        let mut from_target = Vec::new();
        let mut scratch = [0u8; 64];
        let sleep = tokio::time::sleep(idle);
        tokio::pin!(sleep);
        loop {
            let upstream = &self
                .upstream
                .as_ref()
                .expect("run_upstream runs only with an upstream")
                .association;
            let sent_something = !from_target.is_empty();
            let room = from_target.get_mut(HEADER_ROOM..).unwrap_or_default();
            tokio::select! {
                // The control connection carries nothing after the reply: bytes are ignored,
                // end of stream or an error ends the association.
                read = control.read(&mut scratch) => match read {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(SessionError::ClientIo(e)),
                },
                ready = self.socket.readable() => {
                    if ready.is_ok() && from_client.is_empty() {
                        from_client.resize(BUFFER, 0);
                    }
                    // An error is an ICMP report of an earlier send (or a spurious wake-up);
                    // nothing to do.
                    if let Ok((n, from)) = self.socket.try_recv_from(&mut from_client) {
                        let datagram = from_client
                            .get(..n)
                            .expect("recv_from reports at most the buffer");
                        if self.client_datagram(datagram, from).await {
                            sleep.as_mut().reset(deadline_in(idle));
                            if from_target.is_empty() {
                                from_target.resize(BUFFER, 0);
                            }
                        }
                    }
                }
                received = upstream.recv_from(room), if sent_something => match received {
                    Ok((n, from)) => {
                        if self.target_datagram(&mut from_target, n, from).await {
                            sleep.as_mut().reset(deadline_in(idle));
                        }
                    }
                    Err(e) if upstream.is_closed() => return Err(SessionError::UpstreamIo(e)),
                    Err(e) => tracing::debug!(error = %e, "UDP: receive from the upstream relay failed"),
                },
                // Also noticed before anything was sent (when the branch above is off).
                () = upstream.closed() => {
                    return Err(SessionError::UpstreamIo(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the upstream proxy ended the UDP association",
                    )))
                }
                () = &mut sleep => return Err(SessionError::UdpIdle(idle)),
            }
        }
    }

    fn poll_event(
        &self,
        cx: &mut Context<'_>,
        control: &mut TcpStream,
        buf: &mut Vec<u8>,
        sleep: Pin<&mut Sleep>,
    ) -> Poll<Event> {
        // The control connection carries nothing after the reply: any byte is read and
        // ignored, end of stream or an error ends the association.
        // A client that keeps writing gets a few reads per wake-up, not the whole task.
        let mut scratch = [0u8; 64];
        for round in 0.. {
            if round == 16 {
                cx.waker().wake_by_ref();
                break;
            }
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *control).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    return Poll::Ready(Event::ControlClosed(None))
                }
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Event::ControlClosed(Some(e))),
                Poll::Pending => break,
            }
        }
        // The buffer is allocated once the first datagram is there: an association that
        // never carries one does not cost 64 KiB. Target sockets exist only after a client
        // datagram, so they always find it allocated.
        if buf.is_empty() && self.socket.poll_recv_ready(cx).is_ready() {
            buf.resize(BUFFER, 0);
        }
        if buf.is_empty() {
            return match sleep.poll(cx) {
                Poll::Ready(()) => Poll::Ready(Event::Idle),
                Poll::Pending => Poll::Pending,
            };
        }
        let mut rb = ReadBuf::new(buf);
        if let Poll::Ready(result) = self.socket.poll_recv_from(cx, &mut rb) {
            if let Ok(from) = result {
                return Poll::Ready(Event::FromClient(rb.filled().len(), from));
            }
            // An ICMP error from an earlier send; nothing to do but go on.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        for out in [&self.out_v4, &self.out_v6].into_iter().flatten() {
            let room = buf
                .get_mut(HEADER_ROOM..)
                .expect("the buffer is longer than the header room");
            let mut rb = ReadBuf::new(room);
            if let Poll::Ready(result) = out.poll_recv_from(cx, &mut rb) {
                if let Ok(from) = result {
                    let from = SocketAddr::new(from.ip().to_canonical(), from.port());
                    return Poll::Ready(Event::FromTarget(rb.filled().len(), from));
                }
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        match sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Event::Idle),
            Poll::Pending => Poll::Pending,
        }
    }

    /// A datagram on the client side: check its source, then [`Self::forward`]. Returns
    /// whether it came from the client: only those keep the association alive, so a stranger
    /// spraying the relay port cannot hold it open.
    async fn client_datagram(&mut self, datagram: &[u8], from: SocketAddr) -> bool {
        let stats = &self.shared.stats;
        if !self.client.admit(from) {
            inc(&stats.udp_foreign_dropped);
            tracing::debug!(%from, client = %self.session.client, "UDP: datagram from another source dropped");
            return false;
        }
        self.forward(datagram).await;
        true
    }

    /// A client's datagram: unwrap, check, send on.
    async fn forward(&mut self, datagram: &[u8]) {
        let stats = &self.shared.stats;
        let (header, used) = match UdpHeader::decode(datagram) {
            Ok(decoded) => decoded,
            Err(e) => {
                inc(&stats.udp_invalid_dropped);
                tracing::debug!(client = %self.session.client, error = %e, "UDP: bad datagram dropped");
                return;
            }
        };
        if header.frag != 0 {
            inc(&stats.udp_frag_dropped);
            tracing::debug!(client = %self.session.client, frag = header.frag, "UDP: fragment dropped (no reassembly)");
            return;
        }
        let payload = datagram
            .get(used..)
            .expect("decode reports at most the datagram");
        let Some(dest) = self.destination(&header.target).await else {
            inc(&stats.udp_invalid_dropped);
            return;
        };
        let sent = match &self.upstream {
            Some(upstream) => upstream.association.send_to(payload, &dest).await,
            None => {
                let addr = dest
                    .ip_literal()
                    .expect("without an upstream, destinations are resolved to addresses");
                let Some(out) = self.out_socket(addr.ip()).await else {
                    inc(&stats.udp_invalid_dropped);
                    return;
                };
                out.send_to(payload, addr).await
            }
        };
        match sent {
            Ok(_) => {
                inc(&stats.udp_datagrams_client_to_target);
                self.traffic.up += payload.len() as u64;
            }
            Err(e) => {
                inc(&stats.udp_invalid_dropped);
                tracing::debug!(%dest, error = %e, "UDP: send to target failed");
            }
        }
    }

    /// An answer from a target (its payload at `buf[HEADER_ROOM..][..n]`): wrap it with the
    /// sender's address and pass it to the client. Returns whether it was passed on.
    async fn target_datagram(&mut self, buf: &mut [u8], n: usize, from: TargetAddr) -> bool {
        let Some(to) = self.client.client() else {
            // Nothing was sent yet, so nothing can be an answer.
            inc(&self.shared.stats.udp_foreign_dropped);
            return false;
        };
        self.header.clear();
        UdpHeader {
            frag: 0,
            target: from,
        }
        .encode(&mut self.header);
        let start = HEADER_ROOM - self.header.len();
        buf.get_mut(start..HEADER_ROOM)
            .expect("any header fits the header room")
            .copy_from_slice(&self.header);
        let datagram = buf
            .get(start..HEADER_ROOM + n)
            .expect("recv_from reports at most the room");
        match self.socket.send_to(datagram, to).await {
            Ok(_) => {
                inc(&self.shared.stats.udp_datagrams_target_to_client);
                self.traffic.down += n as u64;
                true
            }
            Err(e) => {
                tracing::debug!(%to, error = %e, "UDP: send to client failed");
                false
            }
        }
    }

    /// Where a datagram goes, checked with the policy: an IP, or a name resolved (and
    /// remembered); a name stays a name for an upstream whose last hop resolves names.
    async fn destination(&mut self, target: &TargetAddr) -> Option<TargetAddr> {
        let policy = &*self.shared.config.policy;
        if let Decision::Deny(reason) = policy.check_udp_destination(self.session, target) {
            tracing::debug!(%target, %reason, "UDP: destination denied");
            return None;
        }
        if let Some(addr) = target.ip_literal() {
            let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
            return Some(TargetAddr::Ip(addr));
        }
        if self.upstream.as_ref().is_some_and(|u| u.remote_names) {
            return Some(target.clone());
        }
        let ip = match &self.last_name {
            Some((name, ip)) if name == target => *ip,
            _ => {
                let config = &self.shared.config;
                let ips = match lookup(&*config.resolver, target, config.resolve_timeout).await {
                    Ok(ips) => ips,
                    Err(e) => {
                        tracing::debug!(error = %e, "UDP: destination did not resolve");
                        return None;
                    }
                };
                let ip = ips
                    .into_iter()
                    .find(|ip| policy.check_address(self.session, *ip) == Decision::Allow)?;
                self.last_name = Some((target.clone(), ip));
                ip
            }
        };
        Some(TargetAddr::Ip(SocketAddr::new(ip, target.port())))
    }

    /// The outbound socket for `ip`'s family, bound on first use.
    async fn out_socket(&mut self, ip: IpAddr) -> Option<&UdpSocket> {
        let (slot, any) = match ip {
            IpAddr::V4(_) => (&mut self.out_v4, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            IpAddr::V6(_) => (&mut self.out_v6, IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        };
        if slot.is_none() {
            match UdpSocket::bind(SocketAddr::new(any, 0)).await {
                Ok(s) => *slot = Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "UDP: cannot bind an outbound socket");
                    return None;
                }
            }
        }
        slot.as_ref()
    }
}
