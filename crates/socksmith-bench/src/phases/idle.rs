//! Idle tunnels: many open tunnels that carry nothing, and what they cost the proxy.
//!
//! The tunnels open in two halves, with the proxy measured before, between and after. The
//! headline figure is the second half's: what each more idle tunnel costs a proxy that is
//! already serving. The figure over all tunnels also carries what a proxy spends once for a
//! burst of openings (runtime threads started, allocator pages kept from the handshakes in
//! flight): divided by the tunnels open it makes a proxy that opens fewer tunnels (its own
//! session limit) look dearer per tunnel than it is, so it is reported beside the other, not
//! instead of it.
//!
//! The tunnels come from the same 64 loopback addresses as the connection-rate phase's:
//! many clients, as in front of a network, so that a proxy's limit per client address does
//! not decide how many tunnels it holds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::{loopback_source, IO_TIMEOUT};
use crate::procfs::{self, Usage};
use crate::route::Route;

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
    /// Opening stopped before all were launched: none had opened for [`STALL`] while opens
    /// were in flight, so the proxy had stopped taking tunnels (its session limit, or the
    /// descriptors it has). The figures are per tunnel, over the ones that opened.
    pub stalled: bool,
    /// Seconds spent opening them.
    pub open_secs: f64,
    /// Tunnels probed with a one-byte round trip after the measurement.
    pub probed: usize,
    /// Probed tunnels that answered with the byte sent.
    pub alive: usize,
    /// Tunnels open when the proxy was measured between the two halves.
    pub opened_first_half: usize,
    /// The proxy before (with `--proxy-pid`).
    pub before: Option<Usage>,
    /// The proxy with the first half of the tunnels open.
    pub midway: Option<Usage>,
    /// The proxy with all tunnels open.
    pub after: Option<Usage>,
    /// Proportional set size (PSS) each tunnel of the second half added, KiB.
    pub kib_per_tunnel: Option<f64>,
    /// PSS per open tunnel over all of them, from before the first, KiB (see the module
    /// documentation).
    pub kib_per_tunnel_all: Option<f64>,
    /// Resident set size (RSS, shared pages counted once per process) each tunnel of the
    /// second half added, KiB: shown beside PSS for comparison with earlier runs.
    pub rss_kib_per_tunnel: Option<f64>,
    /// Descriptors each tunnel of the second half added.
    pub fds_per_tunnel: Option<f64>,
    /// How the proxy was measured.
    pub method: &'static str,
}

/// How long opens may be in flight with none succeeding before the phase stops opening: a
/// proxy at its session limit stops accepting, and every further open would wait out its
/// whole handshake timeout, phase after phase, until `open_timeout`.
pub const STALL: Duration = Duration::from_secs(5);

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

/// Opens `plan.count` tunnels to the echo target, `plan.concurrency` opens always in flight,
/// in two halves with the proxy measured before, between and after; keeps them open while
/// the proxy is measured, then probes a sample and closes them all.
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
    let mut opener = Opener {
        route,
        echo,
        plan: &plan,
        deadline: begin + plan.open_timeout,
        open: Vec::with_capacity(plan.count),
        launched: 0,
    };
    opener.open_until(plan.count / 2, &mut result).await;
    tokio::time::sleep(plan.settle).await;
    result.opened_first_half = opener.open.len();
    if !plan.pids.is_empty() {
        result.midway = Some(procfs::tree_usage(plan.pids)?);
    }
    opener.open_until(plan.count, &mut result).await;
    result.open_secs = begin.elapsed().as_secs_f64();
    let mut open = opener.open;
    result.opened = open.len();
    tokio::time::sleep(plan.settle).await;
    if let (Some(before), Some(midway)) = (result.before, result.midway) {
        let after = procfs::tree_usage(plan.pids)?;
        result.after = Some(after);
        let per = |a: u64, b: u64, n: usize| (a as f64 - b as f64) / n as f64;
        let second_half = result.opened - result.opened_first_half;
        if second_half > 0 {
            result.kib_per_tunnel = Some(per(after.pss_kib, midway.pss_kib, second_half));
            result.rss_kib_per_tunnel = Some(per(after.rss_kib, midway.rss_kib, second_half));
            result.fds_per_tunnel = Some(per(after.fds, midway.fds, second_half));
        }
        if result.opened > 0 {
            result.kib_per_tunnel_all = Some(per(after.pss_kib, before.pss_kib, result.opened));
        }
    }
    // Probe up to 64 tunnels spread over the whole set: the tunnels must still carry bytes.
    let step = (open.len() / 64).max(1);
    for (i, stream) in open.iter_mut().step_by(step).take(64).enumerate() {
        result.probed += 1;
        let sent = [0x17u8.wrapping_add(i as u8)];
        let mut byte = [0u8];
        let probe = async {
            stream.write_all(&sent).await?;
            stream.read_exact(&mut byte).await
        };
        if let Ok(Ok(_)) = tokio::time::timeout(IO_TIMEOUT, probe).await {
            result.alive += usize::from(byte == sent);
        }
    }
    drop(open);
    Ok(result)
}

/// Opens tunnels for [`idle`], keeping the ones that opened.
struct Opener<'a> {
    route: &'a Route,
    echo: SocketAddr,
    plan: &'a IdlePlan<'a>,
    deadline: Instant,
    open: Vec<TcpStream>,
    launched: usize,
}

impl Opener<'_> {
    /// Launches opens until `goal` have been launched, `plan.concurrency` in flight, and
    /// waits for them; counts failures in `result`. Past the deadline, or once none has
    /// opened for [`STALL`], whatever is still opening is abandoned.
    async fn open_until(&mut self, goal: usize, result: &mut Idle) {
        let mut opening = JoinSet::new();
        let echo = self.echo;
        let first_hop = self.route.proxy_addr().unwrap_or(echo).ip();
        let mut last_opened = Instant::now();
        while !result.stalled {
            while self.launched < goal && opening.len() < self.plan.concurrency {
                let route = self.route.clone();
                let source = loopback_source(first_hop, self.launched as u64);
                opening.spawn(async move { route.open_from_bounded(echo, source).await });
                self.launched += 1;
            }
            let stall_at = last_opened + STALL;
            let joined = match tokio::time::timeout_at(
                self.deadline.min(stall_at).into(),
                opening.join_next(),
            )
            .await
            {
                Ok(Some(joined)) => joined,
                Ok(None) => break,
                Err(_) => {
                    result.stalled = stall_at < self.deadline;
                    break;
                }
            };
            match joined {
                Ok(Ok((tunnel, _))) => {
                    last_opened = Instant::now();
                    self.open.push(tunnel);
                    if self.open.len() % 1000 == 0 {
                        (self.plan.progress)(self.open.len());
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
    }
}
