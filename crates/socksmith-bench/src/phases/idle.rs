//! Idle tunnels: many open tunnels that carry nothing, and what they cost the proxy.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::IO_TIMEOUT;
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
    /// Seconds spent opening them.
    pub open_secs: f64,
    /// Tunnels probed with a one-byte round trip after the measurement.
    pub probed: usize,
    /// Probed tunnels that answered with the byte sent.
    pub alive: usize,
    /// The proxy before (with `--proxy-pid`).
    pub before: Option<Usage>,
    /// The proxy with all tunnels open.
    pub after: Option<Usage>,
    /// Proportional set size (PSS) per open tunnel, KiB.
    pub kib_per_tunnel: Option<f64>,
    /// Resident set size (RSS, shared pages counted once per process) per open tunnel, KiB:
    /// shown beside PSS for comparison with earlier runs.
    pub rss_kib_per_tunnel: Option<f64>,
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

/// Opens `plan.count` tunnels to the echo target, `plan.concurrency` opens always in flight,
/// and keeps them open while the proxy is measured; then probes a sample and closes them all.
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
            Ok(Ok((tunnel, _))) => {
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
            let per = |a: u64, b: u64| (a as f64 - b as f64) / n;
            result.kib_per_tunnel = Some(per(after.pss_kib, before.pss_kib));
            result.rss_kib_per_tunnel = Some(per(after.rss_kib, before.rss_kib));
            result.fds_per_tunnel = Some(per(after.fds, before.fds));
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
