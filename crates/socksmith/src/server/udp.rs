//! UDP ASSOCIATE: a relay port for one client, alive as long as its TCP control connection.
//!
//! The reply names a UDP socket on the IP the client reached the server at (never 0.0.0.0).
//! Datagrams on it are taken only from the client: its IP (the one in the request, or the
//! control connection's when the request says 0.0.0.0) and, once known, its port (the
//! request's, or the first datagram's). Each one is unwrapped (RFC 1928 section 7), checked
//! with the policy and sent from a separate outbound socket; answers arriving there are
//! wrapped with the sender's address and sent to the client. Fragments (FRAG != 0) are dropped
//! and counted: RFC 1928 says "An implementation that does not support fragmentation MUST drop
//! any datagram whose FRAG field is other than X'00'."
//!
//! The association ends when the control connection closes or errors, or after
//! [`crate::server::ServerConfig::udp_idle_timeout`] without a datagram. One buffer of 64 KiB
//! serves both directions; nothing is allocated per datagram.

use std::future::{poll_fn, Future};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use socksmith_proto::{ReplyCode, TargetAddr, UdpHeader};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, Sleep};

use crate::policy::Decision;
use crate::server::error::SessionError;
use crate::server::outbound::lookup;
use crate::server::session::{Replier, Session};
use crate::server::stats::inc;
use crate::server::Shared;

/// Room kept in front of a target's answer for the SOCKS header (at most 3 + 1 + 16 + 2
/// bytes for an IP address).
const HEADER_ROOM: usize = 22;

/// The largest UDP payload plus the header room.
const BUFFER: usize = 65536 + HEADER_ROOM;

pub(crate) async fn associate(
    shared: &Shared,
    session: &Session,
    mut client: TcpStream,
    mut replier: Replier,
) -> Result<(), SessionError> {
    let relay_ip = session.local.ip().to_canonical();
    let socket = match UdpSocket::bind(SocketAddr::new(relay_ip, 0)).await {
        Ok(s) => s,
        Err(source) => {
            replier
                .send(
                    &mut client,
                    ReplyCode::GeneralFailure,
                    TargetAddr::UNSPECIFIED,
                )
                .await?;
            return Err(SessionError::Socket {
                what: "UDP relay socket",
                source,
            });
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

    let (client_ip, client_port) = match session.target.ip_literal() {
        Some(a) if !a.ip().is_unspecified() => (a.ip().to_canonical(), a.port()),
        Some(a) => (session.client.ip().to_canonical(), a.port()),
        None => (session.client.ip().to_canonical(), session.target.port()),
    };
    let mut relay = Association {
        shared,
        session,
        client_ip,
        client_port: (client_port != 0).then_some(client_port),
        socket,
        out_v4: None,
        out_v6: None,
        header: Vec::with_capacity(HEADER_ROOM),
        last_name: None,
    };
    relay.run(&mut client).await
}

struct Association<'a> {
    shared: &'a Shared,
    session: &'a Session,
    client_ip: IpAddr,
    /// Known from the request or learned from the first datagram.
    client_port: Option<u16>,
    /// The client side: the address in the reply.
    socket: UdpSocket,
    /// The target side, one socket per family, bound on first use.
    out_v4: Option<UdpSocket>,
    out_v6: Option<UdpSocket>,
    /// Reused to encode the header of answers.
    header: Vec<u8>,
    /// The last name a datagram was sent to and its address: a client talking to one
    /// server by name costs one lookup, not one per datagram.
    last_name: Option<(TargetAddr, IpAddr)>,
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
        let mut buf = vec![0u8; BUFFER];
        let sleep = tokio::time::sleep(idle);
        tokio::pin!(sleep);
        loop {
            let event = poll_fn(|cx| self.poll_event(cx, control, &mut buf, sleep.as_mut())).await;
            match event {
                Event::FromClient(n, from) => {
                    sleep.as_mut().reset(Instant::now() + idle);
                    let datagram = buf.get(..n).expect("recv_from reports at most the buffer");
                    self.client_datagram(datagram, from).await;
                }
                Event::FromTarget(n, from) => {
                    sleep.as_mut().reset(Instant::now() + idle);
                    self.target_datagram(&mut buf, n, from).await;
                }
                Event::ControlClosed(None) => return Ok(()),
                Event::ControlClosed(Some(e)) => return Err(SessionError::ClientIo(e)),
                Event::Idle => return Err(SessionError::UdpIdle(idle)),
            }
        }
    }

    fn poll_event(
        &self,
        cx: &mut Context<'_>,
        control: &mut TcpStream,
        buf: &mut [u8],
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

    /// A datagram on the client side: check its source, unwrap, check, send on.
    async fn client_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        let stats = &self.shared.stats;
        let from_ip = from.ip().to_canonical();
        let from_client =
            from_ip == self.client_ip && self.client_port.is_none_or(|port| port == from.port());
        if !from_client {
            inc(&stats.udp_foreign_dropped);
            tracing::debug!(%from, client = %self.session.client, "UDP: datagram from another source dropped");
            return;
        }
        self.client_port = Some(from.port());
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
        let Some(out) = self.out_socket(dest.ip()).await else {
            inc(&stats.udp_invalid_dropped);
            return;
        };
        match out.send_to(payload, dest).await {
            Ok(_) => inc(&stats.udp_datagrams_client_to_target),
            Err(e) => {
                inc(&stats.udp_invalid_dropped);
                tracing::debug!(%dest, error = %e, "UDP: send to target failed");
            }
        }
    }

    /// An answer from a target: wrap it with the sender's address and pass it to the client.
    async fn target_datagram(&mut self, buf: &mut [u8], n: usize, from: SocketAddr) {
        let Some(port) = self.client_port else {
            // Nothing was sent yet, so nothing can be an answer.
            inc(&self.shared.stats.udp_foreign_dropped);
            return;
        };
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        self.header.clear();
        UdpHeader {
            frag: 0,
            target: TargetAddr::Ip(from),
        }
        .encode(&mut self.header);
        let start = HEADER_ROOM - self.header.len();
        buf.get_mut(start..HEADER_ROOM)
            .expect("an IP header fits the header room")
            .copy_from_slice(&self.header);
        let datagram = buf
            .get(start..HEADER_ROOM + n)
            .expect("recv_from reports at most the room");
        let to = SocketAddr::new(self.client_ip, port);
        match self.socket.send_to(datagram, to).await {
            Ok(_) => inc(&self.shared.stats.udp_datagrams_target_to_client),
            Err(e) => tracing::debug!(%to, error = %e, "UDP: send to client failed"),
        }
    }

    /// Where a datagram goes: an IP, or a name resolved (and remembered), checked with the
    /// policy.
    async fn destination(&mut self, target: &TargetAddr) -> Option<SocketAddr> {
        let policy = &*self.shared.config.policy;
        if let Decision::Deny(reason) = policy.check_udp_destination(self.session, target) {
            tracing::debug!(%target, %reason, "UDP: destination denied");
            return None;
        }
        if let Some(addr) = target.ip_literal() {
            return Some(SocketAddr::new(addr.ip().to_canonical(), addr.port()));
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
                    .find(|ip| policy.check_ip(*ip) == Decision::Allow)?;
                self.last_name = Some((target.clone(), ip));
                ip
            }
        };
        Some(SocketAddr::new(ip, target.port()))
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
