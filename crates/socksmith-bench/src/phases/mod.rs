//! The load generators, one module per measured phase: bulk throughput, connection rate,
//! request/response, UDP and idle tunnels.
//!
//! Each phase is bounded in time and in count, opens its tunnels through a [`Route`], talks
//! to the bench's own [`Targets`](crate::targets::Targets), checks every byte that comes back
//! against the pattern it sent, and returns raw figures for one repeat. Repeats, medians and
//! printing belong to the caller. The load runs on the caller's tokio runtime (one thread
//! when the bench is pinned to one core), so per-operation work stays small: no allocation
//! per round trip, connection or datagram; latencies go into pre-sized vectors.
//!
//! [`Route`]: crate::route::Route

mod connrate;
mod idle;
mod rr;
mod throughput;
mod udp;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

pub use connrate::{connection_rate, ConnRate, ConnRatePlan};
pub use idle::{idle, Idle, IdlePlan, STALL as IDLE_STALL};
pub use rr::{request_response, RoundTrips, RR_MESSAGE};
pub use throughput::{throughput, Direction, Throughput};
pub use udp::{udp, UdpPlan, UdpRate, UDP_PAYLOAD};

/// Loopback source addresses the connection-rate and idle phases spread
/// their connections over (127.0.0.1 and up).
const SOURCES: u8 = 64;

/// The local address of connection `n` towards `dest`: one of [`SOURCES`] loopback addresses
/// when `dest` is an IPv4 loopback address (all of 127.0.0.0/8 is this machine's), else
/// none (IPv6 has one loopback address: the kernel picks).
pub(crate) fn loopback_source(dest: IpAddr, n: u64) -> Option<IpAddr> {
    match dest {
        IpAddr::V4(v4) if v4.is_loopback() => {
            let host = 1 + (n % u64::from(SOURCES)) as u8;
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)))
        }
        _ => None,
    }
}

/// How long one round trip inside a phase may take before the tunnel counts as failed.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_loopback_connections_spread_over_loopback_sources_and_others_do_not() {
        let lo: IpAddr = "127.0.0.1".parse().expect("an address");
        let sources: std::collections::HashSet<_> =
            (0..1000).filter_map(|c| loopback_source(lo, c)).collect();
        assert_eq!(sources.len(), usize::from(SOURCES));
        assert!(sources.iter().all(IpAddr::is_loopback));
        assert_eq!(loopback_source("::1".parse().expect("an address"), 7), None);
        assert_eq!(
            loopback_source("10.0.0.1".parse().expect("an address"), 7),
            None
        );
    }
}
