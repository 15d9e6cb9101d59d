//! UDP ASSOCIATE: a relay port for one client, alive as long as its TCP control connection.
//!
//! The reply names a UDP socket on the IP the client reached the server at (never 0.0.0.0).
//! Datagrams on it are taken only from the client, as proto's [`UdpClientFilter`] decides:
//! the control connection's IP, whatever the request names (a client behind NAT does not
//! know its outside address, and a request naming a third party's IP must not aim the relay
//! at it), and, once known, its port (the request's when it names that IP or 0.0.0.0, else
//! the first datagram's). Each one is unwrapped (RFC 1928 section 7), its destination checked
//! with the policy (a name resolved through the egress first, each address checked, unless
//! the egress sends names on as they are) and handed to the egress's [`UdpEgress`]; answers
//! from a source the policy allows are wrapped with the sender's address and sent to the
//! client, and others dropped (a denied host cannot talk into the association either).
//! Fragments (FRAG != 0) are dropped and counted: RFC 1928 says "An implementation that does
//! not support fragmentation MUST drop any datagram whose FRAG field is other than X'00'."
//!
//! The association ends when the control connection closes or errors, when the egress side
//! ends on its own, or after [`crate::server::ServerConfig::udp_idle_timeout`] without a
//! datagram from the client. One buffer of 64 KiB, allocated when the first datagram arrives
//! (an idle association costs none), serves both directions; nothing is allocated per
//! datagram.

use std::future::{poll_fn, Future};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use socksmith_proto::sniff::{DnsQuery, DnsRcode};
use socksmith_proto::{ReplyCode, TargetAddr, UdpClientFilter, UdpHeader};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::UdpSocket;
use tokio::time::{Instant, Sleep};

use crate::client::MAX_UDP_HEADER_LEN;
use crate::policy::Decision;
use crate::relay::TunnelStream;
use crate::server::accounting::{Event, Traffic};
use crate::server::connection::Request;
use crate::server::egress::{EgressError, EgressRequest, UdpEgress};
use crate::server::error::SessionError;
use crate::server::stats::inc;
use crate::server::{admission, Shared};
use crate::session::Session;

/// Room kept in front of a target's answer for the SOCKS header: 3 + 1 + 16 + 2 bytes for
/// an IP address, up to a 255-byte name for a source an upstream relay reports.
const HEADER_ROOM: usize = MAX_UDP_HEADER_LEN;

/// The largest UDP payload plus the header room.
const BUFFER: usize = 65536 + HEADER_ROOM;

pub(crate) async fn associate(
    request: Request<'_>,
    traffic: &mut Traffic,
) -> Result<(), SessionError> {
    let shared = request.shared;
    let config = &shared.config;
    let setup = config
        .resolve_timeout
        .saturating_add(config.connect_timeout);
    let egress =
        match tokio::time::timeout(setup, shared.egress.udp_associate(request.egress_request()))
            .await
        {
            Ok(result) => result,
            Err(_) => Err(EgressError::Timeout(setup)),
        };
    let Request {
        session,
        mut client,
        mut replier,
        ..
    } = request;
    let egress = match egress {
        Ok(egress) => egress,
        Err(e) => return Err(replier.refuse(&mut client, e.into()).await),
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
    // Behind NAT, the address the client can reach is not the socket's own.
    let relay_addr = match shared.config.udp_advertise {
        Some(ip) => SocketAddr::new(ip, relay_addr.port()),
        None => relay_addr,
    };
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
        header: Vec::with_capacity(HEADER_ROOM),
        last_name: None,
        traffic: Traffic::default(),
    };
    let result = relay.run(&mut client, &*egress).await;
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

struct Association<'a> {
    shared: &'a Shared,
    session: &'a Session,
    /// Which source is the client: its IP, and its port once known (from the request or
    /// the first datagram).
    client: UdpClientFilter,
    /// The client side: the address in the reply.
    socket: UdpSocket,
    /// Reused to encode the header of answers.
    header: Vec<u8>,
    /// The last name a datagram was sent to and its address: a client talking to one
    /// server by name costs one lookup, not one per datagram.
    last_name: Option<(TargetAddr, IpAddr)>,
    /// Payload bytes relayed each way (headers not counted), for the log line.
    traffic: Traffic,
}

enum Wake {
    FromClient(usize, SocketAddr),
    FromTarget(usize, TargetAddr),
    ControlClosed(Option<io::Error>),
    EgressClosed(io::Error),
    Idle,
}

impl Association<'_> {
    async fn run(
        &mut self,
        control: &mut TunnelStream,
        egress: &dyn UdpEgress,
    ) -> Result<(), SessionError> {
        let idle = self.shared.config.udp_idle_timeout;
        // Allocated when the first datagram is there (see `poll_wake`).
        let mut buf = Vec::new();
        let sleep = tokio::time::sleep(idle);
        tokio::pin!(sleep);
        let mut egress_closed = egress.closed();
        loop {
            let wake = poll_fn(|cx| {
                if let Poll::Ready(e) = egress_closed.as_mut().poll(cx) {
                    return Poll::Ready(Wake::EgressClosed(e));
                }
                poll_wake(cx, &self.socket, egress, control, &mut buf, sleep.as_mut())
            })
            .await;
            match wake {
                Wake::FromClient(n, from) => {
                    let datagram = buf.get(..n).expect("recv_from reports at most the buffer");
                    if self.client_datagram(egress, datagram, from).await {
                        sleep.as_mut().reset(deadline_in(idle));
                    }
                }
                Wake::FromTarget(n, from) => {
                    if self.target_datagram(&mut buf, n, from).await {
                        sleep.as_mut().reset(deadline_in(idle));
                    }
                }
                Wake::ControlClosed(None) => return Ok(()),
                Wake::ControlClosed(Some(e)) => return Err(SessionError::ClientIo(e)),
                Wake::EgressClosed(e) => return Err(SessionError::EgressClosed(e)),
                Wake::Idle => return Err(SessionError::UdpIdle(idle)),
            }
        }
    }

    /// A datagram on the client side: check its source, then [`Self::forward`]. Returns
    /// whether it came from the client: only those keep the association alive, so a stranger
    /// spraying the relay port cannot hold it open.
    async fn client_datagram(
        &mut self,
        egress: &dyn UdpEgress,
        datagram: &[u8],
        from: SocketAddr,
    ) -> bool {
        let stats = &self.shared.stats;
        if !self.client.admit(from) {
            inc(&stats.udp_foreign_dropped);
            tracing::debug!(%from, client = %self.session.client, "UDP: datagram from another source dropped");
            return false;
        }
        self.forward(egress, datagram).await;
        true
    }

    /// A client's datagram: unwrap, check, send on.
    async fn forward(&mut self, egress: &dyn UdpEgress, datagram: &[u8]) {
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
        if self.answer_listed_dns_query(&header.target, payload).await {
            return;
        }
        let Some(dest) = self.destination(egress, &header.target).await else {
            inc(&stats.udp_invalid_dropped);
            return;
        };
        match poll_fn(|cx| egress.poll_send_to(cx, payload, &dest)).await {
            Ok(()) => {
                inc(&stats.udp_datagrams_client_to_target);
                self.traffic.up += payload.len() as u64;
            }
            Err(e) => {
                inc(&stats.udp_invalid_dropped);
                tracing::debug!(%dest, error = %e, "UDP: send to target failed");
            }
        }
    }

    /// With a blocklist, a DNS query (to port 53) for a listed name is answered here with
    /// NXDOMAIN, as if from the server it was sent to, and never forwarded; a query with more
    /// than one question (which no real client sends, and whose other questions were not
    /// looked at) gets REFUSED. Returns whether the datagram was answered; anything else,
    /// other DNS queries included, passes untouched.
    async fn answer_listed_dns_query(&mut self, dest: &TargetAddr, payload: &[u8]) -> bool {
        if self.shared.config.blocklist.is_none() || dest.port() != 53 {
            return false;
        }
        let Ok(query) = DnsQuery::decode(payload) else {
            return false;
        };
        let rcode = if query.question_count > 1 {
            DnsRcode::Refused
        } else {
            match admission::blocked(self.shared, &query.name) {
                Some(reason) => {
                    tracing::debug!(%reason, "UDP: DNS query for a listed name answered NXDOMAIN");
                    admission::refused(self.shared, self.session, reason);
                    DnsRcode::NxDomain
                }
                None => return false,
            }
        };
        let Some(to) = self.client.client() else {
            return true;
        };
        let mut datagram = Vec::with_capacity(HEADER_ROOM + payload.len() + 16);
        UdpHeader {
            frag: 0,
            target: dest.clone(),
        }
        .encode(&mut datagram);
        query.encode_response(rcode, &mut datagram);
        if let Err(e) = self.socket.send_to(&datagram, to).await {
            tracing::debug!(%to, error = %e, "UDP: send of a DNS refusal to the client failed");
        }
        true
    }

    /// An answer from a target (its payload at `buf[HEADER_ROOM..][..n]`): wrap it with the
    /// sender's address and pass it to the client. Returns whether it was passed on.
    async fn target_datagram(&mut self, buf: &mut [u8], n: usize, from: TargetAddr) -> bool {
        let stats = &self.shared.stats;
        let Some(to) = self.client.client() else {
            // Nothing was sent yet, so nothing can be an answer.
            inc(&stats.udp_foreign_dropped);
            return false;
        };
        let policy = &*self.shared.config.policy;
        if let Decision::Deny(reason) = policy.check_udp_destination(self.session, &from) {
            inc(&stats.udp_foreign_dropped);
            tracing::debug!(%from, %reason, "UDP: answer from a denied source dropped");
            return false;
        }
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
                inc(&stats.udp_datagrams_target_to_client);
                self.traffic.down += n as u64;
                true
            }
            Err(e) => {
                tracing::debug!(%to, error = %e, "UDP: send to client failed");
                false
            }
        }
    }

    /// Where a datagram goes, checked with the policy: an IP, or a name resolved through
    /// the egress (and remembered) and checked by address; a name stays a name for an egress
    /// that sends names on.
    async fn destination(
        &mut self,
        egress: &dyn UdpEgress,
        target: &TargetAddr,
    ) -> Option<TargetAddr> {
        let policy = &*self.shared.config.policy;
        if let Decision::Deny(reason) = policy.check_udp_destination(self.session, target) {
            tracing::debug!(%target, %reason, "UDP: destination denied");
            return None;
        }
        if let Some(addr) = target.ip_literal() {
            let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
            return Some(TargetAddr::Ip(addr));
        }
        if egress.resolves_names() {
            return Some(target.clone());
        }
        let TargetAddr::Domain(name, port) = target else {
            return None;
        };
        let ip = match &self.last_name {
            Some((last, ip)) if last == target => *ip,
            _ => {
                let config = &self.shared.config;
                let request = EgressRequest {
                    session: self.session,
                    policy,
                };
                let started = Instant::now();
                let lookup = self.shared.egress.resolve(request, name);
                let ips = match tokio::time::timeout(config.resolve_timeout, lookup).await {
                    Ok(Ok(ips)) => Some(ips),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "UDP: destination did not resolve");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(%target, "UDP: destination lookup timed out");
                        None
                    }
                };
                if let Some(accounting) = &config.accounting {
                    accounting.record(&Event::Resolved {
                        elapsed: started.elapsed(),
                        ok: ips.is_some(),
                    });
                }
                let ip = ips?
                    .into_iter()
                    .find(|ip| policy.check_address(self.session, *ip) == Decision::Allow)?;
                self.last_name = Some((target.clone(), ip));
                ip
            }
        };
        Some(TargetAddr::Ip(SocketAddr::new(ip, *port)))
    }
}

/// What woke the association: the control connection, a datagram on either side, the idle
/// timer.
fn poll_wake(
    cx: &mut Context<'_>,
    socket: &UdpSocket,
    egress: &dyn UdpEgress,
    control: &mut TunnelStream,
    buf: &mut Vec<u8>,
    sleep: Pin<&mut Sleep>,
) -> Poll<Wake> {
    // The control connection carries nothing after the reply: any byte is read and ignored,
    // end of stream or an error ends the association. A client that keeps writing gets a
    // few reads per wake-up, not the whole task.
    let mut scratch = [0u8; 64];
    for round in 0.. {
        if round == 16 {
            cx.waker().wake_by_ref();
            break;
        }
        let mut rb = ReadBuf::new(&mut scratch);
        match Pin::new(&mut *control).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                return Poll::Ready(Wake::ControlClosed(None))
            }
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Wake::ControlClosed(Some(e))),
            Poll::Pending => break,
        }
    }
    // The buffer is allocated once the first datagram is there: an association that never
    // carries one does not cost 64 KiB. The egress can answer only after a client datagram,
    // so it always finds it allocated.
    if buf.is_empty() && socket.poll_recv_ready(cx).is_ready() {
        buf.resize(BUFFER, 0);
    }
    if !buf.is_empty() {
        let mut rb = ReadBuf::new(buf);
        if let Poll::Ready(result) = socket.poll_recv_from(cx, &mut rb) {
            if let Ok(from) = result {
                return Poll::Ready(Wake::FromClient(rb.filled().len(), from));
            }
            // An ICMP error from an earlier send; nothing to do but go on.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let room = buf
            .get_mut(HEADER_ROOM..)
            .expect("the buffer is longer than the header room");
        if let Poll::Ready(result) = egress.poll_recv_from(cx, room) {
            if let Ok((n, from)) = result {
                return Poll::Ready(Wake::FromTarget(n, from));
            }
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
    }
    match sleep.poll(cx) {
        Poll::Ready(()) => Poll::Ready(Wake::Idle),
        Poll::Pending => Poll::Pending,
    }
}
