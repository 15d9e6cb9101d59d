//! Bulk throughput: pattern bytes through parallel tunnels, counted where they are checked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use crate::payload::{self, StreamCheck};
use crate::route::{Route, TunnelError};
use crate::targets::{Targets, BULK_CHUNK};

/// Which way bulk data flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to target (the target is the checking sink).
    Upload,
    /// Target to client (the target is the pattern source).
    Download,
}

/// One repeat of a throughput measurement.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Checked bytes per second over the window, in Gbit/s.
    pub gbps: f64,
}

/// Bulk throughput through `tunnels` parallel tunnels in Gbit/s, counted at the receiving end
/// (only bytes that matched the pattern) over `window` after `warmup`. A tunnel whose bytes
/// differ from the pattern fails the repeat with [`TunnelError::Corrupted`].
pub async fn throughput(
    route: &Route,
    targets: &Targets,
    tunnels: usize,
    direction: Direction,
    warmup: Duration,
    window: Duration,
) -> Result<Throughput, TunnelError> {
    let target = match direction {
        Direction::Upload => targets.sink,
        Direction::Download => targets.source,
    };
    let mut streams = Vec::with_capacity(tunnels);
    for _ in 0..tunnels {
        streams.push(route.open(target).await?);
    }
    let mismatched_before = targets.sunk.mismatched.load(Ordering::Relaxed);
    // Download only: bytes the client side checked, and tunnels whose bytes differed.
    let received = Arc::new(AtomicU64::new(0));
    let mismatched = Arc::new(AtomicU64::new(0));
    let mut pumps = JoinSet::new();
    for (mut stream, early) in streams {
        match direction {
            Direction::Upload => pumps.spawn(async move {
                let mut offset = 0u64;
                while let Ok(n) = stream.write(payload::at(offset, BULK_CHUNK)).await {
                    if n == 0 {
                        break;
                    }
                    offset += n as u64;
                }
            }),
            Direction::Download => {
                let (counter, bad) = (Arc::clone(&received), Arc::clone(&mismatched));
                pumps.spawn(async move {
                    let mut check = StreamCheck::default();
                    let mut ok = check.feed(&early);
                    let mut buf = vec![0u8; BULK_CHUNK];
                    while ok {
                        let Ok(n) = stream.read(&mut buf).await else {
                            break;
                        };
                        let Some(data) = buf.get(..n).filter(|d| !d.is_empty()) else {
                            break;
                        };
                        ok = check.feed(data);
                        if ok {
                            counter.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                    if !ok {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                })
            }
        };
    }
    let counted = || match direction {
        Direction::Upload => targets.sunk.verified.load(Ordering::Relaxed),
        Direction::Download => received.load(Ordering::Relaxed),
    };
    tokio::time::sleep(warmup).await;
    let (bytes0, t0) = (counted(), Instant::now());
    tokio::time::sleep(window).await;
    let (bytes1, t1) = (counted(), Instant::now());
    // Dropping the pumps closes the client ends; the targets see EOF or a reset and stop.
    pumps.shutdown().await;
    let corrupted = mismatched.load(Ordering::Relaxed)
        + targets
            .sunk
            .mismatched
            .load(Ordering::Relaxed)
            .saturating_sub(mismatched_before);
    if corrupted > 0 {
        return Err(TunnelError::Corrupted);
    }
    let bits = bytes1.saturating_sub(bytes0) as f64 * 8.0;
    Ok(Throughput {
        gbps: bits / (t1 - t0).as_secs_f64() / 1e9,
    })
}
