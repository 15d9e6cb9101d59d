//! Request/response: established tunnels to the echo target, each sending a message and
//! waiting for it to come back, as fast as it can.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use super::IO_TIMEOUT;
use crate::payload;
use crate::route::{Route, TunnelError};
use crate::stats::percentile;

/// One repeat of the request/response phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoundTrips {
    /// Round trips per second over all tunnels.
    pub per_sec: f64,
    /// Median round-trip time, in microseconds.
    pub p50_us: f64,
    /// 99th percentile round-trip time, in microseconds.
    pub p99_us: f64,
    /// Tunnels that failed during the phase (an answer that differed from the request too).
    pub errors: u64,
}

/// Size of one request and of one response.
pub const RR_MESSAGE: usize = 64;

/// Request/response: `tunnels` established tunnels to the echo target, each sending 64
/// pattern bytes and waiting for the same 64 to come back; counts and times the round trips
/// in `window` after `warmup`, at most `max_per_tunnel` per tunnel.
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
        streams.push(route.open(echo).await?.0);
    }
    let measure_from = Instant::now() + warmup;
    let end = measure_from + window;
    let mut pingers = JoinSet::new();
    for mut stream in streams {
        pingers.spawn(async move {
            let mut latencies_ns = Vec::with_capacity(max_per_tunnel.min(1 << 16));
            let mut answer = [0u8; RR_MESSAGE];
            let mut offset = 0u64;
            loop {
                let t = Instant::now();
                if t >= end || latencies_ns.len() >= max_per_tunnel {
                    return Ok(latencies_ns);
                }
                let request = payload::at(offset, RR_MESSAGE);
                let round_trip = async {
                    stream.write_all(request).await?;
                    stream.read_exact(&mut answer).await
                };
                match tokio::time::timeout(IO_TIMEOUT, round_trip).await {
                    Ok(Ok(_)) if answer == request => {}
                    _ => return Err(latencies_ns),
                }
                if t >= measure_from {
                    latencies_ns.push(t.elapsed().as_nanos() as u64);
                }
                offset += RR_MESSAGE as u64;
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
