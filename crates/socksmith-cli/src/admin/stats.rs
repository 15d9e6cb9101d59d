//! The library's own counters ([`Stats`]) on `/metrics`, read once per scrape: the gauges of
//! connections and tunnels open now, and what no accounting event reports (accept errors,
//! caught panics, how handshakes fail, UDP datagrams and drops).
//!
//! This module only reads the counters; the server keeps them (one relaxed atomic add each).

use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use socksmith::server::{Stats, StatsSnapshot};

/// The server's counters, once the server exists (the metrics are made before it, since its
/// configuration takes their accounting); zeros until then.
#[derive(Debug, Default, Clone)]
pub struct ServerStats(Arc<OnceLock<Arc<Stats>>>);

impl ServerStats {
    /// Reads from `stats` from now on (the first call wins).
    pub fn attach(&self, stats: Arc<Stats>) {
        let _ = self.0.set(stats);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.0.get().map(|s| s.snapshot()).unwrap_or_default()
    }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let counter = ConstCounter::new(value);
    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
}

fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for &(value, n) in values {
        let labels = [(label, value)];
        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for ServerStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let s = self.snapshot();
        let e = &mut encoder;
        gauge(
            e,
            "socksmith_sessions_active",
            "Client connections being served now",
            s.sessions_active,
        )?;
        gauge(
            e,
            "socksmith_tunnels_active",
            "CONNECT and BIND tunnels relaying now",
            s.tunnels_active,
        )?;
        counter(
            e,
            "socksmith_connections_accepted",
            "Client connections accepted",
            s.sessions_accepted,
        )?;
        counter(
            e,
            "socksmith_accept_errors",
            "Failed accept() calls (out of file descriptors, say)",
            s.accept_errors,
        )?;
        counter(
            e,
            "socksmith_session_panics",
            "Sessions whose task panicked (a bug), caught by the listener",
            s.session_panics,
        )?;
        counters(
            e,
            "socksmith_handshake_failures",
            "Handshakes that ended without a request, by reason",
            "reason",
            &[
                ("timeout", s.handshake_timeouts),
                ("protocol_error", s.handshake_protocol_errors),
                ("client_gone", s.handshake_client_gone),
                ("no_acceptable_method", s.no_acceptable_method),
                ("socks4_refused", s.socks4_refused),
            ],
        )?;
        counter(
            e,
            "socksmith_connect_failures",
            "CONNECT requests whose outbound connection failed (lookup, refusal, timeout)",
            s.connect_failures,
        )?;
        counter(
            e,
            "socksmith_tunnels",
            "CONNECT and BIND tunnels that started relaying",
            s.tunnels_total,
        )?;
        counter(
            e,
            "socksmith_resolves",
            "RESOLVE and RESOLVE_PTR requests answered",
            s.resolves,
        )?;
        counter(
            e,
            "socksmith_udp_associations",
            "UDP associations set up",
            s.udp_associations,
        )?;
        counters(
            e,
            "socksmith_udp_datagrams",
            "UDP datagrams relayed: up is client to target, down is target to client",
            "direction",
            &[
                ("up", s.udp_datagrams_client_to_target),
                ("down", s.udp_datagrams_target_to_client),
            ],
        )?;
        counters(
            e,
            "socksmith_udp_dropped",
            "UDP datagrams dropped: fragmented, from a foreign address, invalid (broken \
             header, denied or unresolvable destination), or by the kernel on a full receive \
             buffer of a relay socket",
            "reason",
            &[
                ("fragmented", s.udp_frag_dropped),
                ("foreign", s.udp_foreign_dropped),
                ("invalid", s.udp_invalid_dropped),
                ("receive_buffer", s.udp_receive_buffer_dropped),
            ],
        )
    }
}
