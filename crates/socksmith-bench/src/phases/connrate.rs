//! Connection rate: many short tunnels, each a connect, a handshake, a CONNECT, a one-byte
//! round trip and a close, with a fixed number of cycles always in flight.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use super::{loopback_source, IO_TIMEOUT};
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

/// Runs the connection-rate phase against the echo targets: cycle `i` goes to
/// `echoes[i % len]`, so that the proxy's own connections to the targets are spread over
/// several destination ports too (see [`crate::route::connect_from`] for why one is not
/// enough at these rates). `echoes` must not be empty.
pub async fn connection_rate(route: &Route, echoes: &[SocketAddr], plan: ConnRatePlan) -> ConnRate {
    if echoes.is_empty() {
        return ConnRate {
            first_error: Some("no echo target to connect to".into()),
            ..ConnRate::default()
        };
    }
    let echoes: Arc<[SocketAddr]> = echoes.into();
    // Where the load's own connections go: the proxy, or the targets themselves.
    let first_hop = route
        .proxy_addr()
        .or_else(|| echoes.first().copied())
        .map(|a| a.ip());
    let measured = Arc::new(AtomicU64::new(0));
    let measure_from = Instant::now() + plan.warmup;
    let deadline = measure_from + plan.window;
    let per_worker = (plan.max as usize / plan.concurrency.max(1)).clamp(16, 1 << 16);
    let mut workers = JoinSet::new();
    for worker in 0..plan.concurrency {
        let (route, measured, echoes) = (route.clone(), Arc::clone(&measured), Arc::clone(&echoes));
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
                let echo = echoes[(cycle % echoes.len() as u64) as usize]; // not empty: checked
                let source = first_hop.and_then(|ip| loopback_source(ip, cycle));
                match one_cycle(&route, echo, source, t, cycle).await {
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
    source: Option<IpAddr>,
    t: Instant,
    cycle: u64,
) -> Result<Duration, TunnelError> {
    let limit = HANDSHAKE_TIMEOUT + IO_TIMEOUT;
    let work = async {
        let (mut tunnel, _) = route.open_from(echo, source).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::{Targets, ECHO_POOL};

    #[tokio::test]
    async fn direct_cycles_complete_over_every_echo_of_the_pool() {
        let targets = Targets::start("127.0.0.1".parse().expect("an address"))
            .await
            .expect("targets");
        assert_eq!(targets.echo_pool.len(), ECHO_POOL);
        let plan = ConnRatePlan {
            concurrency: 8,
            max: 400,
            warmup: Duration::ZERO,
            window: Duration::from_secs(5),
        };
        let r = connection_rate(&Route::Direct, &targets.echo_pool, plan).await;
        assert_eq!((r.errors, r.first_error), (0, None));
        assert!(r.completed >= 400, "{} cycles completed", r.completed);
        assert!(r.per_sec > 0.0);
    }

    #[tokio::test]
    async fn no_echo_target_is_an_error_not_a_panic() {
        let plan = ConnRatePlan {
            concurrency: 1,
            max: 1,
            warmup: Duration::ZERO,
            window: Duration::from_millis(10),
        };
        let r = connection_rate(&Route::Direct, &[], plan).await;
        assert_eq!(r.completed, 0);
        assert!(r.first_error.is_some());
    }
}
