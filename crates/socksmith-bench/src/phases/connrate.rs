//! Connection rate: many short tunnels, each a connect, a handshake, a CONNECT, a one-byte
//! round trip and a close, with a fixed number of cycles always in flight.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use super::IO_TIMEOUT;
use crate::payload;
use crate::route::{Route, TunnelError, HANDSHAKE_TIMEOUT};
use crate::stats::percentile;

/// One repeat of the connection-rate phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnRate {
    /// Completed cycles per second of the measured window.
    pub per_sec: f64,
    /// Median of connect + handshake + CONNECT reply, in microseconds.
    pub p50_us: f64,
    /// 99th percentile of the same.
    pub p99_us: f64,
    /// Cycles that failed (any step, or a byte that came back wrong), not counted in the rate.
    pub errors: u64,
    /// Cycles that completed in the window.
    pub completed: u64,
    /// The first failure, to tell the user why.
    pub first_error: Option<String>,
}

/// What the connection-rate phase does.
#[derive(Debug, Clone, Copy)]
pub struct ConnRatePlan {
    /// Cycles in flight at once (each worker starts the next as soon as one ends).
    pub concurrency: usize,
    /// Most cycles measured.
    pub max: u64,
    /// Cycles before the window are not counted: the proxy's and kernel's caches, the
    /// allocator and the listen queues settle first.
    pub warmup: Duration,
    /// The measured window (the phase ends earlier if `max` cycles were measured).
    pub window: Duration,
}

/// Runs the connection-rate phase against the echo target.
pub async fn connection_rate(route: &Route, echo: SocketAddr, plan: ConnRatePlan) -> ConnRate {
    let measured = Arc::new(AtomicU64::new(0));
    let measure_from = Instant::now() + plan.warmup;
    let deadline = measure_from + plan.window;
    let per_worker = (plan.max as usize / plan.concurrency.max(1)).clamp(16, 1 << 16);
    let mut workers = JoinSet::new();
    for worker in 0..plan.concurrency {
        let (route, measured) = (route.clone(), Arc::clone(&measured));
        workers.spawn(async move {
            let mut latencies_us = Vec::with_capacity(per_worker);
            let (mut errors, mut first_error) = (0u64, None);
            let mut cycle = worker as u64;
            loop {
                let t = Instant::now();
                if t >= deadline {
                    break;
                }
                let counted = t >= measure_from;
                if counted && measured.fetch_add(1, Ordering::Relaxed) >= plan.max {
                    break;
                }
                match one_cycle(&route, echo, t, cycle).await {
                    Ok(handshake) if counted => latencies_us.push(handshake.as_micros() as u64),
                    Ok(_) => {}
                    Err(e) => {
                        errors += u64::from(counted);
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
                cycle += plan.concurrency as u64;
            }
            (latencies_us, errors, first_error)
        });
    }
    let mut all = Vec::with_capacity(per_worker * plan.concurrency);
    let mut result = ConnRate::default();
    while let Some(joined) = workers.join_next().await {
        let Ok((latencies, errors, first_error)) = joined else {
            result.errors += 1;
            continue;
        };
        all.extend(latencies);
        result.errors += errors;
        if result.first_error.is_none() {
            result.first_error = first_error;
        }
    }
    // The window, or less when `max` ended it early: the last cycle's end.
    let elapsed = Instant::now()
        .min(deadline)
        .saturating_duration_since(measure_from)
        .as_secs_f64()
        .max(1e-3);
    all.sort_unstable();
    result.completed = all.len() as u64;
    result.per_sec = all.len() as f64 / elapsed;
    result.p50_us = percentile(&all, 50.0).unwrap_or(0) as f64;
    result.p99_us = percentile(&all, 99.0).unwrap_or(0) as f64;
    result
}

/// One connection cycle under one deadline; returns the time from the start of connect to
/// the CONNECT reply.
async fn one_cycle(
    route: &Route,
    echo: SocketAddr,
    t: Instant,
    cycle: u64,
) -> Result<Duration, TunnelError> {
    let limit = HANDSHAKE_TIMEOUT + IO_TIMEOUT;
    let work = async {
        let (mut tunnel, _) = route.open_unbounded(echo).await?;
        let handshake = t.elapsed();
        let sent = payload::at(cycle, 1);
        let mut byte = [0u8];
        tunnel.write_all(sent).await?;
        tunnel.read_exact(&mut byte).await?;
        if byte != sent {
            return Err(TunnelError::Corrupted);
        }
        Ok(handshake)
    };
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| TunnelError::Timeout(limit))?
}
