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

use std::time::Duration;

pub use connrate::{connection_rate, ConnRate, ConnRatePlan};
pub use idle::{idle, Idle, IdlePlan};
pub use rr::{request_response, RoundTrips, RR_MESSAGE};
pub use throughput::{throughput, Direction, Throughput};
pub use udp::{udp, UdpPlan, UdpRate, UDP_PAYLOAD};

/// How long one round trip inside a phase may take before the tunnel counts as failed.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
