//! The load generators, one function per measured phase: bulk throughput, connection rate,
//! request/response, UDP and idle tunnels.
//!
//! Each phase is bounded in time and in count, opens its tunnels through a [`Route`], talks
//! to the bench's own [`Targets`] and returns raw figures for one repeat. Repeats, medians and
//! printing belong to the caller. The client side runs on the caller's tokio runtime (one
//! thread when the bench is pinned to one core), so per-operation work stays small: no
//! allocation per round trip, latencies go into pre-sized vectors.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use socksmith_proto::{TargetAddr, UdpHeader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinSet;

use super::procfs::{self, Usage};
use super::route::{Route, TunnelError};
use super::stats::percentile;
use super::targets::{Targets, BULK_CHUNK, ZEROS};

/// How long one round trip inside a phase may take before the tunnel counts as failed.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Which way bulk data flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to target (the target is the sink).
    Upload,
    /// Target to client (the target is the source).
    Download,
}

/// Bulk throughput through `tunnels` parallel tunnels in Gbit/s, counted at the receiving end
/// over `window` after `warmup`.
pub async fn throughput(
    route: &Route,
    targets: &Targets,
    tunnels: usize,
    direction: Direction,
    warmup: Duration,
    window: Duration,
) -> Result<f64, TunnelError> {
    let target = match direction {
        Direction::Upload => targets.sink,
        Direction::Download => targets.source,
    };
    let mut streams = Vec::with_capacity(tunnels);
    for _ in 0..tunnels {
        streams.push(route.open(target).await?);
    }
    let received = match direction {
        Direction::Upload => Arc::clone(&targets.sunk),
        Direction::Download => Arc::new(AtomicU64::new(0)),
    };
    let mut pumps = JoinSet::new();
    for mut stream in streams {
        match direction {
            Direction::Upload => {
                pumps.spawn(async move { while stream.write_all(&ZEROS).await.is_ok() {} })
            }
            Direction::Download => {
                let counter = Arc::clone(&received);
                pumps.spawn(async move {
                    let mut buf = vec![0u8; BULK_CHUNK];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        counter.fetch_add(n as u64, Ordering::Relaxed);
                    }
                })
            }
        };
    }
    tokio::time::sleep(warmup).await;
    let (bytes0, t0) = (received.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(window).await;
    let (bytes1, t1) = (received.load(Ordering::Relaxed), Instant::now());
    // Dropping the pumps closes the client ends; the targets see EOF or a reset and stop.
    pumps.shutdown().await;
    let bits = (bytes1.saturating_sub(bytes0)) as f64 * 8.0;
    Ok(bits / (t1 - t0).as_secs_f64() / 1e9)
}

/// One repeat of the connection-rate phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnRate {
    /// Completed cycles per second of wall time.
    pub per_sec: f64,
    /// Median of connect + handshake + CONNECT reply, in microseconds.
    pub p50_us: f64,
    /// 99th percentile of the same.
    pub p99_us: f64,
    /// Cycles that failed (any step), not counted in the rate.
    pub errors: u64,
    /// Cycles that completed.
    pub completed: u64,
    /// The first failure, to tell the user why.
    pub first_error: Option<String>,
}

/// Connection rate: `concurrency` workers each loop on connect, handshake, CONNECT to the
/// echo target, a one-byte round trip and close, until `max` cycles were started or `window`
/// is over.
pub async fn connection_rate(
    route: &Route,
    echo: SocketAddr,
    concurrency: usize,
    max: u64,
    window: Duration,
) -> ConnRate {
    let started = Arc::new(AtomicU64::new(0));
    let begin = Instant::now();
    let deadline = begin + window;
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let (route, started) = (route.clone(), Arc::clone(&started));
        workers.spawn(async move {
            let mut latencies_us = Vec::with_capacity(4096);
            let (mut errors, mut first_error) = (0u64, None);
            while Instant::now() < deadline && started.fetch_add(1, Ordering::Relaxed) < max {
                let t = Instant::now();
                match one_cycle(&route, echo, t).await {
                    Ok(handshake) => latencies_us.push(handshake.as_micros() as u64),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (latencies_us, errors, first_error)
        });
    }
    let mut all = Vec::new();
    let mut result = ConnRate::default();
    while let Some(joined) = workers.join_next().await {
        let Ok((latencies, errors, first_error)) = joined else {
            continue;
        };
        all.extend(latencies);
        result.errors += errors;
        if result.first_error.is_none() {
            result.first_error = first_error;
        }
    }
    let elapsed = begin.elapsed().as_secs_f64();
    all.sort_unstable();
    result.completed = all.len() as u64;
    result.per_sec = all.len() as f64 / elapsed;
    result.p50_us = percentile(&all, 50.0).unwrap_or(0) as f64;
    result.p99_us = percentile(&all, 99.0).unwrap_or(0) as f64;
    result
}

/// One connection cycle; returns the time from the start of connect to the CONNECT reply.
async fn one_cycle(route: &Route, echo: SocketAddr, t: Instant) -> Result<Duration, TunnelError> {
    let mut tunnel = route.open(echo).await?;
    let handshake = t.elapsed();
    let mut byte = [0x42u8];
    let round_trip = async {
        tunnel.write_all(&byte).await?;
        tunnel.read_exact(&mut byte).await
    };
    tokio::time::timeout(IO_TIMEOUT, round_trip)
        .await
        .map_err(|_| TunnelError::Timeout(IO_TIMEOUT))??;
    Ok(handshake)
}

/// One repeat of the request/response phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoundTrips {
    /// Round trips per second over all tunnels.
    pub per_sec: f64,
    /// Median round-trip time, in microseconds.
    pub p50_us: f64,
    /// 99th percentile round-trip time, in microseconds.
    pub p99_us: f64,
    /// Tunnels that failed during the phase.
    pub errors: u64,
}

/// Size of one request and of one response.
pub const RR_MESSAGE: usize = 64;

/// Request/response: `tunnels` established tunnels to the echo target, each sending 64 bytes
/// and waiting for them to come back, as fast as it can; counts and times the round trips in
/// `window` after `warmup`, at most `max_per_tunnel` per tunnel.
pub async fn request_response(
    route: &Route,
    echo: SocketAddr,
    tunnels: usize,
    warmup: Duration,
    window: Duration,
    max_per_tunnel: usize,
) -> Result<RoundTrips, TunnelError> {
    let mut streams = Vec::with_capacity(tunnels);
    for _ in 0..tunnels {
        streams.push(route.open(echo).await?);
    }
    let measure_from = Instant::now() + warmup;
    let end = measure_from + window;
    let mut pingers = JoinSet::new();
    for mut stream in streams {
        pingers.spawn(async move {
            let mut latencies_ns = Vec::with_capacity(max_per_tunnel.min(1 << 16));
            let mut msg = [0x5au8; RR_MESSAGE];
            loop {
                let t = Instant::now();
                if t >= end || latencies_ns.len() >= max_per_tunnel {
                    return Ok(latencies_ns);
                }
                let round_trip = async {
                    stream.write_all(&msg).await?;
                    stream.read_exact(&mut msg).await
                };
                match tokio::time::timeout(IO_TIMEOUT, round_trip).await {
                    Ok(Ok(_)) => {}
                    _ => return Err(latencies_ns),
                }
                if t >= measure_from {
                    latencies_ns.push(t.elapsed().as_nanos() as u64);
                }
            }
        });
    }
    let mut all = Vec::new();
    let mut errors = 0;
    while let Some(joined) = pingers.join_next().await {
        match joined {
            Ok(Ok(latencies)) => all.extend(latencies),
            Ok(Err(latencies)) => {
                errors += 1;
                all.extend(latencies);
            }
            Err(_) => errors += 1,
        }
    }
    all.sort_unstable();
    Ok(RoundTrips {
        per_sec: all.len() as f64 / window.as_secs_f64(),
        p50_us: percentile(&all, 50.0).unwrap_or(0) as f64 / 1e3,
        p99_us: percentile(&all, 99.0).unwrap_or(0) as f64 / 1e3,
        errors,
    })
}

/// One repeat of the UDP phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UdpRate {
    /// Datagrams that came back from the echo target, per second.
    pub per_sec: f64,
    /// Datagrams given up on (not back within the loss timeout).
    pub lost: u64,
}

/// Payload size of one UDP datagram.
pub const UDP_PAYLOAD: usize = 512;

/// How long an outstanding datagram may stay unanswered before it counts as lost.
const UDP_LOSS_TIMEOUT: Duration = Duration::from_millis(50);

/// UDP: datagrams of 512 bytes through UDP ASSOCIATE to the UDP echo target and back, with up
/// to `in_flight` outstanding; counts the ones back in `window` after `warmup`. `Ok(None)`
/// when the proxy refuses UDP ASSOCIATE (it does not offer it), with the reason.
pub async fn udp(
    route: &Route,
    bind_ip: IpAddr,
    echo: SocketAddr,
    in_flight: usize,
    warmup: Duration,
    window: Duration,
) -> Result<Result<UdpRate, String>, TunnelError> {
    let socket = UdpSocket::bind(SocketAddr::new(bind_ip, 0))
        .await
        .map_err(TunnelError::Io)?;
    let payload = [0xa5u8; UDP_PAYLOAD];
    let (datagram, relay, _control) = match route {
        Route::Direct => (payload.to_vec(), echo, None),
        Route::Proxy(proxy) => {
            let local = socket.local_addr().map_err(TunnelError::Io)?;
            match Route::udp_associate(proxy, local).await {
                Ok((control, relay)) => {
                    let header = UdpHeader {
                        frag: 0,
                        target: TargetAddr::Ip(echo),
                    };
                    (header.wrap(&payload), relay, Some(control))
                }
                Err(e) if e.rejection().is_some() => {
                    return Ok(Err(format!("UDP ASSOCIATE refused: {e}")))
                }
                Err(TunnelError::Closed) => {
                    return Ok(Err("UDP ASSOCIATE refused: connection closed".into()))
                }
                Err(e) => return Err(e),
            }
        }
    };
    let mut buf = vec![0u8; 2048];
    let (mut outstanding, mut back, mut lost) = (0usize, 0u64, 0u64);
    let measure_from = Instant::now() + warmup;
    let end = measure_from + window;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        while outstanding < in_flight {
            if socket.send_to(&datagram, relay).await.is_err() {
                break;
            }
            outstanding += 1;
        }
        match tokio::time::timeout(UDP_LOSS_TIMEOUT, socket.recv_from(&mut buf)).await {
            Ok(Ok((n, _from))) => {
                outstanding = outstanding.saturating_sub(1);
                if n == datagram.len() && Instant::now() >= measure_from {
                    back += 1;
                }
            }
            Ok(Err(_)) | Err(_) => {
                lost += outstanding as u64;
                outstanding = 0;
            }
        }
    }
    Ok(Ok(UdpRate {
        per_sec: back as f64 / window.as_secs_f64(),
        lost,
    }))
}

/// The result of the idle phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Idle {
    /// Tunnels asked for.
    pub requested: usize,
    /// Tunnels open when the proxy was measured.
    pub opened: usize,
    /// Tunnels that failed to open.
    pub failed: usize,
    /// The first failure, to tell the user why.
    pub first_error: Option<String>,
    /// Seconds spent opening them.
    pub open_secs: f64,
    /// Tunnels probed with a one-byte round trip after the measurement.
    pub probed: usize,
    /// Probed tunnels that answered.
    pub alive: usize,
    /// The proxy before (with `--proxy-pid`).
    pub before: Option<Usage>,
    /// The proxy with all tunnels open.
    pub after: Option<Usage>,
    /// Resident memory per open tunnel, KiB.
    pub kib_per_tunnel: Option<f64>,
    /// Descriptors per open tunnel.
    pub fds_per_tunnel: Option<f64>,
    /// How the proxy was measured.
    pub method: &'static str,
}

/// What the idle phase needs to know.
pub struct IdlePlan<'a> {
    /// Tunnels to open.
    pub count: usize,
    /// Opens in flight at once.
    pub concurrency: usize,
    /// Bound on the time spent opening.
    pub open_timeout: Duration,
    /// Wait after the last open before measuring (lets the proxy finish its bookkeeping).
    pub settle: Duration,
    /// The proxy's process trees (empty: no memory figures).
    pub pids: &'a [u32],
    /// Called every 1,000 tunnels with the count open so far.
    pub progress: &'a dyn Fn(usize),
}

/// The proxy's usage once it has finished closing the tunnels of earlier phases: read until
/// two readings 100 ms apart show the same descriptors (at most 5 s).
async fn quiet_usage(pids: &[u32]) -> Result<Usage, std::io::Error> {
    let mut last = procfs::tree_usage(pids)?;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = procfs::tree_usage(pids)?;
        if now.fds == last.fds && now.processes == last.processes {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

/// Opens `plan.count` tunnels to the echo target and keeps them open while the proxy is
/// measured, then probes a sample of them and closes them all.
pub async fn idle(
    route: &Route,
    echo: SocketAddr,
    plan: IdlePlan<'_>,
) -> Result<Idle, std::io::Error> {
    let mut result = Idle {
        requested: plan.count,
        method: procfs::METHOD,
        ..Idle::default()
    };
    if !plan.pids.is_empty() {
        result.before = Some(quiet_usage(plan.pids).await?);
    }
    let begin = Instant::now();
    let deadline = begin + plan.open_timeout;
    let mut open: Vec<TcpStream> = Vec::with_capacity(plan.count);
    let mut opening = JoinSet::new();
    let mut launched = 0;
    loop {
        while launched < plan.count && opening.len() < plan.concurrency {
            let route = route.clone();
            opening.spawn(async move { route.open(echo).await });
            launched += 1;
        }
        let Ok(Some(joined)) = tokio::time::timeout_at(deadline.into(), opening.join_next()).await
        else {
            // Done, or out of time: whatever is still opening is abandoned.
            break;
        };
        match joined {
            Ok(Ok(tunnel)) => {
                open.push(tunnel);
                if open.len() % 1000 == 0 {
                    (plan.progress)(open.len());
                }
            }
            Ok(Err(e)) => {
                result.failed += 1;
                result.first_error.get_or_insert_with(|| e.to_string());
            }
            Err(_) => result.failed += 1,
        }
    }
    opening.shutdown().await;
    result.open_secs = begin.elapsed().as_secs_f64();
    result.opened = open.len();
    tokio::time::sleep(plan.settle).await;
    if let Some(before) = result.before {
        let after = procfs::tree_usage(plan.pids)?;
        result.after = Some(after);
        if result.opened > 0 {
            let n = result.opened as f64;
            result.kib_per_tunnel = Some((after.rss_kib as f64 - before.rss_kib as f64) / n);
            result.fds_per_tunnel = Some((after.fds as f64 - before.fds as f64) / n);
        }
    }
    // Probe up to 64 tunnels spread over the whole set: the tunnels must still carry bytes.
    let step = (open.len() / 64).max(1);
    for stream in open.iter_mut().step_by(step).take(64) {
        result.probed += 1;
        let mut byte = [0x17u8];
        let probe = async {
            stream.write_all(&byte).await?;
            stream.read_exact(&mut byte).await
        };
        if let Ok(Ok(_)) = tokio::time::timeout(IO_TIMEOUT, probe).await {
            result.alive += 1;
        }
    }
    drop(open);
    Ok(result)
}
