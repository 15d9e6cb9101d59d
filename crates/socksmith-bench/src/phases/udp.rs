//! UDP: pattern datagrams through UDP ASSOCIATE (or straight) to the UDP echo target and
//! back, on several associations with a window of datagrams in flight on each, moved in
//! batches (sent with UDP GSO, else `sendmmsg`; received with `recvmmsg`), every datagram that
//! comes back checked whole. The proxy receives ordinary datagrams either way: the kernel
//! splits a GSO send before it reaches a socket that did not ask for them whole.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::Serialize;
use socksmith_proto::{Denied, ProtocolError, TargetAddr, UdpHeader};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinSet;

use crate::batch::{self, RecvBatch, BATCH, SLOT};
use crate::payload;
use crate::route::{Route, TunnelError};
use crate::stats::percentile;

/// Payload size of one UDP datagram.
pub const UDP_PAYLOAD: usize = 512;

/// How long an association may hear nothing before its outstanding datagrams count as lost.
const UDP_LOSS_TIMEOUT: Duration = Duration::from_millis(50);

/// One repeat of the UDP phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UdpRate {
    /// Datagrams that came back right from the echo target, per second.
    pub per_sec: f64,
    /// Datagrams given up on (not back within the loss timeout).
    pub lost: u64,
    /// Datagrams that came back different from the one sent (or with a wrong header).
    pub corrupted: u64,
    /// Median round trip of the datagrams measured, in microseconds.
    pub p50_us: f64,
    /// 99th percentile of the same.
    pub p99_us: f64,
}

/// What the UDP phase does.
#[derive(Debug, Clone, Copy)]
pub struct UdpPlan {
    /// Where the bench's UDP sockets bind (the targets' loopback address).
    pub bind_ip: IpAddr,
    /// The UDP echo target.
    pub echo: SocketAddr,
    /// Associations (one socket and control connection each).
    pub associations: usize,
    /// Datagrams in flight per association.
    pub in_flight: usize,
    /// Not counted: lets queues and caches settle.
    pub warmup: Duration,
    /// The measured window.
    pub window: Duration,
}

/// Runs the UDP phase. `Ok(Err(why))` when the proxy refuses UDP ASSOCIATE (it does not offer
/// it) or is an HTTP proxy: the report shows that as "unsupported", not as a failure.
pub async fn udp(route: &Route, plan: UdpPlan) -> Result<Result<UdpRate, String>, TunnelError> {
    if route.is_http() {
        return Ok(Err(
            "an HTTP proxy carries CONNECT only (no UDP ASSOCIATE)".into()
        ));
    }
    let mut legs = Vec::with_capacity(plan.associations);
    for _ in 0..plan.associations.max(1) {
        let socket = UdpSocket::bind(SocketAddr::new(plan.bind_ip, 0)).await?;
        let leg = match route {
            Route::Direct => {
                socket.connect(plan.echo).await?;
                Leg {
                    socket,
                    header: Vec::new(),
                    _control: None,
                }
            }
            Route::Proxy(proxy) => match proxy.udp_associate(socket.local_addr()?).await {
                Ok((control, relay)) => {
                    socket.connect(relay).await?;
                    let header = UdpHeader {
                        frag: 0,
                        target: TargetAddr::Ip(plan.echo),
                    };
                    let mut encoded = Vec::with_capacity(32);
                    header.encode(&mut encoded);
                    Leg {
                        socket,
                        header: encoded,
                        _control: Some(control),
                    }
                }
                Err(TunnelError::Protocol(ProtocolError::Denied(Denied::Rejected {
                    code,
                    ..
                }))) => return Ok(Err(format!("UDP ASSOCIATE refused: {code}"))),
                Err(TunnelError::Closed) => {
                    return Ok(Err("UDP ASSOCIATE refused: connection closed".into()))
                }
                Err(e) => return Err(e),
            },
        };
        legs.push(leg);
    }
    let measure_from = Instant::now() + plan.warmup;
    let end = measure_from + plan.window;
    let mut runs = JoinSet::new();
    for leg in legs {
        runs.spawn(leg.run(plan, measure_from, end));
    }
    let mut total = LegResult::default();
    while let Some(joined) = runs.join_next().await {
        let leg = joined.map_err(|e| TunnelError::Io(std::io::Error::other(e)))??;
        total.back += leg.back;
        total.lost += leg.lost;
        total.corrupted += leg.corrupted;
        total.latencies_ns.extend(leg.latencies_ns);
    }
    total.latencies_ns.sort_unstable();
    Ok(Ok(UdpRate {
        per_sec: total.back as f64 / plan.window.as_secs_f64(),
        lost: total.lost,
        corrupted: total.corrupted,
        p50_us: percentile(&total.latencies_ns, 50.0).unwrap_or(0) as f64 / 1e3,
        p99_us: percentile(&total.latencies_ns, 99.0).unwrap_or(0) as f64 / 1e3,
    }))
}

/// One association: its socket (connected to the relay, or to the echo when direct), the
/// SOCKS header every datagram carries (empty when direct) and the control connection the
/// association lives by.
struct Leg {
    socket: UdpSocket,
    header: Vec<u8>,
    _control: Option<TcpStream>,
}

#[derive(Default)]
struct LegResult {
    back: u64,
    lost: u64,
    corrupted: u64,
    latencies_ns: Vec<u64>,
}

/// Send times are kept per sequence number in a ring this many times the window deep, so a
/// late datagram does not read a newer one's time.
const RING_FACTOR: usize = 8;

impl Leg {
    async fn run(
        self,
        plan: UdpPlan,
        measure_from: Instant,
        end: Instant,
    ) -> Result<LegResult, TunnelError> {
        let in_flight = plan.in_flight.max(1);
        let header_len = self.header.len();
        let datagram_len = header_len + UDP_PAYLOAD;
        if datagram_len > SLOT {
            return Err(TunnelError::Io(std::io::Error::other(
                "the SOCKS header leaves no room for the payload",
            )));
        }
        let mut out = Box::new([[0u8; SLOT]; BATCH]);
        for slot in out.iter_mut() {
            if let Some(head) = slot.get_mut(..header_len) {
                head.copy_from_slice(&self.header);
            }
        }
        let mut sent_at = vec![measure_from; in_flight * RING_FACTOR];
        let mut result = LegResult {
            latencies_ns: Vec::with_capacity(1 << 16),
            ..LegResult::default()
        };
        let mut batch = RecvBatch::default();
        let (mut next_seq, mut outstanding) = (0u64, 0usize);
        // GSO until the kernel refuses it; then sendmmsg.
        let mut gso = true;
        let mut contiguous = vec![0u8; BATCH * datagram_len];
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            while outstanding < in_flight {
                let n = (in_flight - outstanding).min(BATCH);
                let mut datagrams: [(&[u8], Option<SocketAddr>); BATCH] = [(&[], None); BATCH];
                for slot in out.iter_mut().take(n) {
                    let seq = next_seq;
                    next_seq += 1;
                    if let Some(body) = slot.get_mut(header_len..datagram_len) {
                        payload::write_datagram(seq, body);
                    }
                    if let Some(at) = sent_at.get_mut(seq as usize % (in_flight * RING_FACTOR)) {
                        *at = now;
                    }
                }
                if gso {
                    for (i, slot) in out.iter().take(n).enumerate() {
                        if let (Some(dst), Some(src)) = (
                            contiguous.get_mut(i * datagram_len..(i + 1) * datagram_len),
                            slot.get(..datagram_len),
                        ) {
                            dst.copy_from_slice(src);
                        }
                    }
                    let whole = contiguous.get(..n * datagram_len).unwrap_or_default();
                    if batch::send_segments(&self.socket, whole, datagram_len, None).await? {
                        outstanding += n;
                        continue;
                    }
                    gso = false;
                }
                for (slot, entry) in out.iter().zip(datagrams.iter_mut()).take(n) {
                    *entry = (slot.get(..datagram_len).unwrap_or_default(), None);
                }
                let sent =
                    batch::send_all(&self.socket, datagrams.get(..n).unwrap_or_default()).await?;
                outstanding += sent;
            }
            match tokio::time::timeout(UDP_LOSS_TIMEOUT, batch.recv(&self.socket)).await {
                Ok(Ok(_)) => {
                    let now = Instant::now();
                    for (data, _from) in batch.iter() {
                        outstanding = outstanding.saturating_sub(1);
                        match self.check(data, plan.echo) {
                            Some(seq) if now >= measure_from => {
                                result.back += 1;
                                let slot = seq as usize % (in_flight * RING_FACTOR);
                                if let Some(at) = sent_at.get(slot) {
                                    result.latencies_ns.push((now - *at).as_nanos() as u64);
                                }
                            }
                            Some(_) => {}
                            None => result.corrupted += 1,
                        }
                    }
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {
                    result.lost += outstanding as u64;
                    outstanding = 0;
                }
            }
        }
        Ok(result)
    }

    /// The sequence number of a datagram that came back right: through a proxy, a header
    /// naming the echo target, then exactly the payload that was sent.
    fn check(&self, data: &[u8], echo: SocketAddr) -> Option<u64> {
        let body = if self.header.is_empty() {
            data
        } else {
            let (header, used) = UdpHeader::decode(data).ok()?;
            if header.frag != 0 || header.target != TargetAddr::Ip(echo) {
                return None;
            }
            data.get(used..)?
        };
        payload::check_datagram(body, UDP_PAYLOAD)
    }
}
