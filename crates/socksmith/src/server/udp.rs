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
//! datagram from the client.
//!
//! Datagrams move in batches, each side's system calls taking many at once: one
//! `recvmmsg(2)` takes up to 32 waiting datagrams from the client (and UDP GRO may hand over
//! several same-size ones from the client in one buffer, split here at their stride), and
//! the egress takes whatever answers are waiting with one call too
//! ([`UdpEgress::poll_recv_batch`]; the direct egress with GRO, so a target's GSO burst
//! comes in one buffer and is split here, each answer getting its own header). Each datagram is still checked on its own as above, and
//! what passes is packed back to back in place and sent on as a batch: to the egress
//! ([`UdpEgress::poll_send_batch`]; the direct egress sends a run of same-size datagrams to
//! one target with one `sendmsg(2)`, cut by the kernel: UDP GSO), and to the client, whose
//! answers all go to one address, in runs of same-size datagrams the same way. Order is kept
//! in each direction.
//!
//! Datagrams the kernel drops because a relay socket's receive buffer is full (a burst
//! faster than the relay reads) are counted too, from each socket's `SO_MEMINFO`: at most
//! once a second while datagrams flow, a second after the last batch, and at the end.
//!
//! One batch area serves both directions: 32 slots, each room for the largest datagram and
//! for the headers in front of the answers one buffer can hold. It is allocated when the first datagram arrives (an
//! idle association costs none) from memory the kernel backs only where datagrams are written
//! (a relay of 512-byte datagrams touches a page or two per slot); nothing is allocated per
//! datagram.

use std::future::{poll_fn, Future};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use socksmith_proto::sniff::{DnsQuery, DnsRcode};
use socksmith_proto::{ReplyCode, TargetAddr, UdpClientFilter, UdpHeader};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::client::MAX_UDP_HEADER_LEN;
use crate::policy::{Decision, DenyReason};
use crate::relay::TunnelStream;
use crate::server::accounting::{Event, Traffic};
use crate::server::connection::Request;
use crate::server::egress::{EgressError, EgressRequest, UdpEgress};
use crate::server::error::SessionError;
use crate::server::stats::{add, inc};
use crate::server::{admission, Shared};
use crate::session::Session;
use crate::sys::udp::{gso_run, BatchSocket, LazyZeroed, RecvMeta, BATCH};

/// Room kept in front of a target's answer for the SOCKS header: 3 + 1 + 16 + 2 bytes for
/// an IP address, up to a 255-byte name for a source an upstream relay reports.
const HEADER_ROOM: usize = MAX_UDP_HEADER_LEN;

/// Room kept in front of the answers a receive buffer holds: with GRO, up to 64 answers from
/// one IP address come in one buffer, and each gets a header of at most 22 bytes; the room
/// lets them all be written in place (see [`Association::target_batch`]).
const ANSWER_ROOM: usize = 64 * 22;

/// One slot of the batch area: the largest UDP payload plus the room in front of answers.
const SLOT: usize = 65536 + ANSWER_ROOM;

/// Client datagrams handed to the egress in one call at most (a GRO buffer may hold 64).
const SEND_BATCH: usize = 64;

/// Where an answer's sender is not known yet: a placeholder, never sent.
const NOBODY: TargetAddr = TargetAddr::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));

/// The memory datagrams move through, allocated with the first datagram (boxed, so that the
/// association's future stays small while it waits).
struct Batch {
    /// [`BATCH`] slots of [`SLOT`] bytes: received datagrams, then (packed in place) the ones
    /// to send on.
    area: LazyZeroed,
    /// What each receive from the client filled in.
    from_client: [RecvMeta; BATCH],
    /// What each receive buffer of the egress holds: its length, the size of each answer in
    /// it (all but the last), and their sender.
    answers: Vec<(usize, usize, TargetAddr)>,
    /// The length and checked destination of each client payload packed for the egress.
    outgoing: Vec<(usize, TargetAddr)>,
    /// The length of each answer packed for the client (header included), and its payload's.
    to_client: Vec<(usize, usize)>,
}

impl Batch {
    fn new() -> io::Result<Box<Batch>> {
        Ok(Box::new(Batch {
            area: LazyZeroed::new(BATCH * SLOT)?,
            from_client: [RecvMeta::default(); BATCH],
            answers: vec![(0, 0, NOBODY); BATCH],
            outgoing: Vec::with_capacity(SEND_BATCH),
            to_client: Vec::with_capacity(SEND_BATCH),
        }))
    }
}

/// Client payloads packed at the front of the area and not yet sent: a datagram that must
/// wait (for a name lookup) sends them first, so that they do not wait with it.
struct Waiting<'b> {
    /// Their payloads, back to back.
    payloads: &'b [u8],
    /// Each one's length and destination.
    outgoing: &'b mut Vec<(usize, TargetAddr)>,
}

/// `area` cut into its slots, each less the first `skip` bytes, as receive buffers.
fn slots(area: &mut [u8], skip: usize) -> [IoSliceMut<'_>; BATCH] {
    let mut slots = area.chunks_exact_mut(SLOT);
    std::array::from_fn(|_| {
        let slot = slots.next().expect("the area holds BATCH slots");
        IoSliceMut::new(
            slot.get_mut(skip..)
                .expect("a slot is longer than the skip"),
        )
    })
}

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
    let bound = std::net::UdpSocket::bind(SocketAddr::new(relay_ip, 0));
    // GRO on: a client's same-size datagrams may come in one buffer, split by the stride.
    let socket = match bound.and_then(|socket| BatchSocket::new(socket, true)) {
        Ok(s) => s,
        Err(source) => {
            let e = SessionError::Socket {
                what: "UDP relay socket",
                source,
            };
            return Err(replier.refuse(&mut client, e).await);
        }
    };
    let relay_addr = socket
        .socket()
        .local_addr()
        .map_err(|source| SessionError::Socket {
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
        told_hostname_required: false,
        kernel_drops: KernelDrops::default(),
    };
    let result = relay.run(&mut client, &*egress).await;
    relay.count_kernel_drops(&*egress);
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
    socket: BatchSocket,
    /// Reused to encode the header of answers.
    header: Vec<u8>,
    /// The last name a datagram was sent to and its address: a client talking to one
    /// server by name costs one lookup, not one per datagram.
    last_name: Option<(TargetAddr, IpAddr)>,
    /// Payload bytes relayed each way (headers not counted), for the log line.
    traffic: Traffic,
    /// The client was told once that datagrams to bare addresses are dropped here
    /// (`require_hostname`).
    told_hostname_required: bool,
    /// What the kernel dropped on this association's sockets, as counted so far.
    kernel_drops: KernelDrops,
}

/// The kernel's drop counts of an association's sockets are read with a system call, so
/// not with every batch: at most this often while datagrams flow, and once at the end.
const KERNEL_DROPS_EVERY: Duration = Duration::from_secs(1);

/// The part of the kernel's drop count already added to the server's counter, and when it
/// is read next.
#[derive(Default)]
struct KernelDrops {
    counted: u64,
    /// No read before this; `None`: the next batch reads.
    next_read: Option<Instant>,
    /// A batch came before `next_read`: the count is read then, by a timer, so that drops in
    /// a burst's last second are counted even if no datagram follows.
    owed: bool,
}

enum Wake {
    /// This many buffers came from the client side.
    FromClient(usize),
    /// This many answers came from the egress.
    FromTarget(usize),
    ControlClosed(Option<io::Error>),
    EgressClosed(io::Error),
    NoMemory(io::Error),
    Idle,
    /// Time to read the kernel's drop counts (see [`KernelDrops`]).
    Recount,
}

impl Association<'_> {
    async fn run(
        &mut self,
        control: &mut TunnelStream,
        egress: &dyn UdpEgress,
    ) -> Result<(), SessionError> {
        let idle = self.shared.config.udp_idle_timeout;
        // Allocated when the first datagram is there (see `poll_wake`).
        let mut batch: Option<Box<Batch>> = None;
        let sleep = tokio::time::sleep(idle);
        tokio::pin!(sleep);
        let mut egress_closed = egress.closed();
        let recount = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(recount);
        loop {
            let wake = poll_fn(|cx| {
                if let Poll::Ready(e) = egress_closed.as_mut().poll(cx) {
                    return Poll::Ready(Wake::EgressClosed(e));
                }
                if self.kernel_drops.owed && recount.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Recount);
                }
                poll_wake(
                    cx,
                    &self.socket,
                    egress,
                    control,
                    &mut batch,
                    sleep.as_mut(),
                )
            })
            .await;
            let alive = match wake {
                Wake::FromClient(n) => {
                    let batch = batch.as_deref_mut().expect("datagrams came into the batch");
                    self.client_batch(egress, batch, n).await
                }
                Wake::FromTarget(n) => {
                    let batch = batch.as_deref_mut().expect("answers came into the batch");
                    self.target_batch(batch, n).await
                }
                Wake::ControlClosed(None) => return Ok(()),
                Wake::ControlClosed(Some(e)) => return Err(SessionError::ClientIo(e)),
                Wake::EgressClosed(e) => return Err(SessionError::EgressClosed(e)),
                Wake::NoMemory(source) => {
                    return Err(SessionError::Socket {
                        what: "UDP batch memory",
                        source,
                    })
                }
                Wake::Idle => return Err(SessionError::UdpIdle(idle)),
                Wake::Recount => {
                    self.kernel_drops.owed = false;
                    self.count_kernel_drops(egress);
                    self.kernel_drops.next_read = Some(Instant::now() + KERNEL_DROPS_EVERY);
                    continue;
                }
            };
            if alive {
                sleep.as_mut().reset(deadline_in(idle));
            }
            let now = Instant::now();
            match self.kernel_drops.next_read {
                Some(at) if at > now => {
                    if !self.kernel_drops.owed {
                        self.kernel_drops.owed = true;
                        recount.as_mut().reset(at);
                    }
                }
                _ => {
                    self.count_kernel_drops(egress);
                    self.kernel_drops.next_read = Some(now + KERNEL_DROPS_EVERY);
                }
            }
        }
    }

    /// Adds to the server's counter what the kernel has dropped on both sides' sockets since
    /// the last count (datagrams that came faster than the relay read them).
    fn count_kernel_drops(&mut self, egress: &dyn UdpEgress) {
        let total = self.socket.kernel_drops().unwrap_or(0) + egress.kernel_drops();
        let new = total.saturating_sub(self.kernel_drops.counted);
        if new > 0 {
            self.kernel_drops.counted = total;
            add(&self.shared.stats.udp_receive_buffer_dropped, new);
            tracing::debug!(client = %self.session.client, dropped = new, "UDP: the kernel dropped datagrams on a full receive buffer");
        }
    }

    /// `n` receive buffers from the client side: each datagram in them (one per buffer, or
    /// several at the stride with GRO) has its source checked, then is unwrapped and checked
    /// ([`Self::forward`]); the payloads that pass are packed at the front of the area and
    /// sent on in order. Returns whether any came from the client: only those keep the
    /// association alive, so a stranger spraying the relay port cannot hold it open.
    async fn client_batch(&mut self, egress: &dyn UdpEgress, batch: &mut Batch, n: usize) -> bool {
        let stats = &self.shared.stats;
        let Batch {
            area,
            from_client,
            outgoing,
            ..
        } = batch;
        let area = area.as_mut_slice();
        outgoing.clear();
        // Where the next payload goes. Each payload is no longer than its datagram, and the
        // datagrams lie in order, so the packed payloads never reach past the start of the
        // datagram being read: packing in place overwrites only what was already read.
        let mut packed = 0;
        let mut alive = false;
        for (i, meta) in from_client.iter().take(n).enumerate() {
            let slot = i * SLOT;
            let len = meta.len.min(SLOT);
            let mut start = 0;
            loop {
                let end = match meta.stride {
                    0 => len,
                    stride => (start + stride).min(len),
                };
                let range = slot + start..slot + end;
                start = end;
                if !self.client.admit(meta.addr) {
                    inc(&stats.udp_foreign_dropped);
                    tracing::debug!(from = %meta.addr, client = %self.session.client, "UDP: datagram from another source dropped");
                } else {
                    alive = true;
                    let datagram = area
                        .get(range.clone())
                        .expect("a datagram lies in its slot");
                    let waiting = Waiting {
                        payloads: area.get(..packed).expect("packed within the area"),
                        outgoing,
                    };
                    let forwarded = self.forward(egress, datagram, waiting).await;
                    if outgoing.is_empty() {
                        // Sent while this datagram's destination was looked up.
                        packed = 0;
                    }
                    if let Some((used, dest)) = forwarded {
                        let payload = range.start + used..range.end;
                        let payload_len = payload.len();
                        area.copy_within(payload, packed);
                        packed += payload_len;
                        outgoing.push((payload_len, dest));
                        if outgoing.len() == SEND_BATCH {
                            let payloads = area.get(..packed).expect("packed within the area");
                            self.send_to_targets(egress, payloads, outgoing).await;
                            outgoing.clear();
                            packed = 0;
                        }
                    }
                }
                if start >= len {
                    break;
                }
            }
        }
        let payloads = area.get(..packed).expect("packed within the area");
        self.send_to_targets(egress, payloads, outgoing).await;
        alive
    }

    /// Hands `outgoing` (payloads back to back in `payloads`) to the egress, in order, and
    /// counts what went and what failed.
    async fn send_to_targets(
        &mut self,
        egress: &dyn UdpEgress,
        payloads: &[u8],
        outgoing: &[(usize, TargetAddr)],
    ) {
        let stats = &self.shared.stats;
        let mut done = 0;
        let mut offset = 0;
        while let Some(rest) = outgoing.get(done..).filter(|rest| !rest.is_empty()) {
            let from = payloads
                .get(offset..)
                .expect("the lengths add up to the payloads");
            match poll_fn(|cx| egress.poll_send_batch(cx, from, rest)).await {
                Ok(sent @ 1..) => {
                    let sent = sent.min(rest.len());
                    let bytes: usize = rest.iter().take(sent).map(|(len, _)| len).sum();
                    add(&stats.udp_datagrams_client_to_target, sent as u64);
                    self.traffic.up += bytes as u64;
                    done += sent;
                    offset += bytes;
                }
                Ok(0) => {
                    // An egress that takes nothing and reports no error would be asked forever.
                    add(&stats.udp_invalid_dropped, rest.len() as u64);
                    tracing::debug!(dropped = rest.len(), "UDP: the egress took none of a batch");
                    return;
                }
                Err(e) => {
                    let (len, dest) = &rest[0];
                    inc(&stats.udp_invalid_dropped);
                    tracing::debug!(%dest, error = %e, "UDP: send to target failed");
                    done += 1;
                    offset += len;
                }
            }
        }
    }

    /// A client's datagram: unwrap and check it. Returns where its payload starts and where it
    /// goes, or `None` when it was dropped or answered here.
    async fn forward(
        &mut self,
        egress: &dyn UdpEgress,
        datagram: &[u8],
        waiting: Waiting<'_>,
    ) -> Option<(usize, TargetAddr)> {
        let stats = &self.shared.stats;
        let (header, used) = match UdpHeader::decode(datagram) {
            Ok(decoded) => decoded,
            Err(e) => {
                inc(&stats.udp_invalid_dropped);
                tracing::debug!(client = %self.session.client, error = %e, "UDP: bad datagram dropped");
                return None;
            }
        };
        if header.frag != 0 {
            inc(&stats.udp_frag_dropped);
            tracing::debug!(client = %self.session.client, frag = header.frag, "UDP: fragment dropped (no reassembly)");
            return None;
        }
        let payload = datagram
            .get(used..)
            .expect("decode reports at most the datagram");
        if self.answer_listed_dns_query(&header.target, payload).await {
            return None;
        }
        if self.lacks_required_hostname(&header.target, payload) {
            inc(&stats.udp_invalid_dropped);
            return None;
        }
        let Some(dest) = self.destination(egress, &header.target, waiting).await else {
            inc(&stats.udp_invalid_dropped);
            return None;
        };
        Some((used, dest))
    }

    /// Whether a datagram must be dropped because the server requires host names
    /// (`require_hostname`) and it goes to a bare address ([`address_without_name`]), as such
    /// a request is refused. The first drop is logged at the default level, once per
    /// association; later ones at debug.
    fn lacks_required_hostname(&mut self, target: &TargetAddr, payload: &[u8]) -> bool {
        if !self.shared.config.require_hostname {
            return false;
        }
        let Some(addr) = address_without_name(target, payload) else {
            return false;
        };
        let reason = DenyReason::HostnameRequired(addr.ip());
        if std::mem::replace(&mut self.told_hostname_required, true) {
            tracing::debug!(client = %self.session.client, %addr, "UDP: datagram to an address dropped: {reason}");
        } else {
            tracing::info!(client = %self.session.client, %addr, "UDP: datagrams to bare addresses are dropped: {reason}");
        }
        true
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
        if let Err(e) = self.socket.socket().send_to(&datagram, to).await {
            tracing::debug!(%to, error = %e, "UDP: send of a DNS refusal to the client failed");
        }
        true
    }

    /// `n` receive buffers from the egress (each in its slot after the answer room, holding
    /// one answer or, with GRO, several from one sender): the answers from a source the
    /// policy allows get the header with their sender written in front, are packed at the
    /// front of the area and sent to the client in order, same-size runs with one system
    /// call. Returns whether any was passed on.
    async fn target_batch(&mut self, batch: &mut Batch, n: usize) -> bool {
        let stats = &self.shared.stats;
        let Some(to) = self.client.client() else {
            // Nothing was sent yet, so nothing can be an answer.
            add(&stats.udp_foreign_dropped, n as u64);
            return false;
        };
        let policy = &*self.shared.config.policy;
        let Batch {
            area,
            answers,
            to_client,
            ..
        } = batch;
        let area = area.as_mut_slice();
        to_client.clear();
        let mut passed = false;
        // Where the next answer goes, its header first. The packed answers must never reach
        // the bytes of an answer not yet moved: before each one, if its header would, what is
        // packed is sent first (which, with the room in front of every buffer, happens only
        // for a buffer of many answers with long headers).
        let mut packed = 0;
        for (i, (len, segment, from)) in answers.iter_mut().take(n).enumerate() {
            let from = std::mem::replace(from, NOBODY);
            // An egress cannot have put more than its buffer held.
            let len = (*len).min(SLOT - ANSWER_ROOM);
            let segment = match *segment {
                0 => len.max(1),
                segment => segment,
            };
            let count = len.div_ceil(segment).max(1);
            if let Decision::Deny(reason) = policy.check_udp_destination(self.session, &from) {
                add(&stats.udp_foreign_dropped, count as u64);
                tracing::debug!(%from, %reason, "UDP: answer from a denied source dropped");
                continue;
            }
            self.header.clear();
            UdpHeader {
                frag: 0,
                target: from,
            }
            .encode(&mut self.header);
            let header = self.header.len();
            let buffer = i * SLOT + ANSWER_ROOM;
            let mut start = 0;
            loop {
                let end = (start + segment).min(len);
                let payload = buffer + start..buffer + end;
                start = end;
                if packed + header > payload.start || to_client.len() == SEND_BATCH {
                    passed |= self.send_to_client(area, to_client, to).await;
                    to_client.clear();
                    packed = 0;
                }
                area.get_mut(packed..packed + header)
                    .expect("the header goes before its payload")
                    .copy_from_slice(&self.header);
                let payload_len = payload.len();
                area.copy_within(payload, packed + header);
                packed += header + payload_len;
                to_client.push((header + payload_len, payload_len));
                if start >= len {
                    break;
                }
            }
        }
        passed |= self.send_to_client(area, to_client, to).await;
        passed
    }

    /// Sends the answers packed at the front of `area` (each one's length with its header,
    /// then its payload's, in `packed`) to the client, in order, same-size runs with one
    /// system call, and counts them. Returns whether any was sent.
    async fn send_to_client(
        &mut self,
        area: &[u8],
        packed: &[(usize, usize)],
        to: SocketAddr,
    ) -> bool {
        let stats = &self.shared.stats;
        let mut passed = false;
        let mut offset = 0;
        let mut done = 0;
        while let Some(rest) = packed.get(done..).filter(|rest| !rest.is_empty()) {
            let run = gso_run(rest.iter().map(|(len, _)| *len), self.socket.max_segments());
            let mut sent = self
                .send_run(area, offset, &rest[..run], to)
                .await
                .map(|()| run);
            if sent.is_err() && run > 1 {
                // The kernel refused the GSO send (a device without it, a path MTU below the
                // segments): one by one, and `quinn-udp` has stopped offering GSO where the
                // device cannot do it.
                sent = self
                    .send_run(area, offset, &rest[..1], to)
                    .await
                    .map(|()| 1);
            }
            match sent {
                Ok(sent) => {
                    let run = &rest[..sent];
                    add(&stats.udp_datagrams_target_to_client, sent as u64);
                    self.traffic.down +=
                        run.iter().map(|(_, payload)| *payload as u64).sum::<u64>();
                    offset += run.iter().map(|(len, _)| len).sum::<usize>();
                    done += sent;
                    passed = true;
                }
                Err(e) => {
                    tracing::debug!(%to, error = %e, "UDP: send to client failed");
                    offset += rest[0].0;
                    done += 1;
                }
            }
        }
        passed
    }

    /// Sends the answers `run` (lengths with headers, then payloads) packed at `area[offset..]`
    /// to the client with one system call.
    async fn send_run(
        &self,
        area: &[u8],
        offset: usize,
        run: &[(usize, usize)],
        to: SocketAddr,
    ) -> io::Result<()> {
        let bytes: usize = run.iter().map(|(len, _)| len).sum();
        let contents = area
            .get(offset..offset + bytes)
            .expect("packed within the area");
        let segment = match run {
            [_] => None,
            [(len, _), ..] => Some(*len),
            [] => return Ok(()),
        };
        poll_fn(|cx| self.socket.poll_send(cx, contents, segment, to)).await
    }

    /// Where a datagram goes, checked with the policy: an IP, or a name resolved through
    /// the egress (and remembered) and checked by address; a name stays a name for an egress
    /// that sends names on.
    async fn destination(
        &mut self,
        egress: &dyn UdpEgress,
        target: &TargetAddr,
        waiting: Waiting<'_>,
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
                // The datagrams before this one do not wait for its lookup.
                if !waiting.outgoing.is_empty() {
                    self.send_to_targets(egress, waiting.payloads, waiting.outgoing)
                        .await;
                    waiting.outgoing.clear();
                }
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

/// The address a datagram goes to when it names no host, so that neither the lists nor the
/// rules can judge where it goes (QUIC to an address); `None` when it names one. A DNS query
/// (to port 53, one question) counts as named: the name it asks for is what the lists judge,
/// and a request to the address it returns is refused where names are required anyway.
fn address_without_name(target: &TargetAddr, payload: &[u8]) -> Option<SocketAddr> {
    let addr = target.ip_literal()?;
    let dns_query =
        addr.port() == 53 && DnsQuery::decode(payload).is_ok_and(|q| q.question_count == 1);
    (!dns_query).then_some(addr)
}

/// What woke the association: the control connection, datagrams on either side, the idle
/// timer.
fn poll_wake(
    cx: &mut Context<'_>,
    socket: &BatchSocket,
    egress: &dyn UdpEgress,
    control: &mut TunnelStream,
    batch: &mut Option<Box<Batch>>,
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
    // The batch area is allocated once the first datagram is there: an association that
    // never carries one costs none of it. The egress can answer only after a client
    // datagram, so it always finds it allocated.
    if batch.is_none() && socket.poll_recv_ready(cx).is_ready() {
        match Batch::new() {
            Ok(new) => *batch = Some(new),
            Err(e) => return Poll::Ready(Wake::NoMemory(e)),
        }
    }
    if let Some(batch) = batch.as_deref_mut() {
        let area = batch.area.as_mut_slice();
        let mut bufs = slots(area, 0);
        if let Poll::Ready(result) = socket.poll_recv(cx, &mut bufs, &mut batch.from_client) {
            match result {
                Ok(n @ 1..) => return Poll::Ready(Wake::FromClient(n)),
                // An ICMP error from an earlier send; nothing to do but go on.
                Ok(0) | Err(_) => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
        let mut bufs = slots(area, ANSWER_ROOM);
        if let Poll::Ready(result) = egress.poll_recv_batch(cx, &mut bufs, &mut batch.answers) {
            match result {
                Ok(n @ 1..) => return Poll::Ready(Wake::FromTarget(n.min(BATCH))),
                Ok(0) | Err(_) => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
    }
    match sleep.poll(cx) {
        Poll::Ready(()) => Poll::Ready(Wake::Idle),
        Poll::Pending => Poll::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socksmith_proto::DomainName;

    /// A DNS query for `example.com` (A, recursion desired) with `questions` in its header.
    fn dns_query(questions: u8) -> Vec<u8> {
        let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, questions, 0, 0, 0, 0, 0, 0];
        query.extend(b"\x07example\x03com\x00\x00\x01\x00\x01");
        query
    }

    #[test]
    fn only_a_datagram_to_a_bare_address_that_is_no_dns_query_names_no_host() {
        let to = |addr: &str| TargetAddr::Ip(addr.parse().expect("an address"));
        let quic = b"\xc3\x00\x00\x00\x01";
        assert_eq!(
            address_without_name(&to("192.0.2.1:443"), quic),
            Some("192.0.2.1:443".parse().expect("an address"))
        );
        // A name, or a name spelling an address (which counts as the address).
        let name = DomainName::try_from("example.com").expect("a name");
        assert_eq!(
            address_without_name(&TargetAddr::Domain(name, 443), quic),
            None
        );
        let literal = DomainName::try_from("192.0.2.1").expect("a name");
        assert!(address_without_name(&TargetAddr::Domain(literal, 443), quic).is_some());
        // A DNS query to port 53 asks for a name; anything else to port 53 does not.
        assert_eq!(
            address_without_name(&to("192.0.2.53:53"), &dns_query(1)),
            None
        );
        assert!(address_without_name(&to("192.0.2.53:53"), quic).is_some());
        assert!(address_without_name(&to("192.0.2.53:53"), &dns_query(2)).is_some());
        assert!(address_without_name(&to("192.0.2.53:5353"), &dns_query(1)).is_some());
    }
}
