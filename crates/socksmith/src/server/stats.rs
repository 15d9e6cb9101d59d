//! Cheap counters of what the server did: one relaxed atomic add per event, read as a
//! [`StatsSnapshot`] (for logs, tests and, later, a Prometheus endpoint).
//!
//! This module owns the counters only; the session and the listener decide when to count.

use std::sync::atomic::{AtomicU64, Ordering};

/// The server's counters. Reach them with [`crate::server::Server::stats`].
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) sessions_accepted: AtomicU64,
    pub(crate) sessions_active: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) session_panics: AtomicU64,
    pub(crate) sessions_refused_per_client: AtomicU64,
    pub(crate) clients_not_allowed: AtomicU64,
    pub(crate) handshake_timeouts: AtomicU64,
    pub(crate) handshake_protocol_errors: AtomicU64,
    pub(crate) handshake_client_gone: AtomicU64,
    pub(crate) no_acceptable_method: AtomicU64,
    pub(crate) auth_failures: AtomicU64,
    pub(crate) auth_backoff_delays: AtomicU64,
    pub(crate) socks4_refused: AtomicU64,
    pub(crate) policy_denied: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) tunnels_total: AtomicU64,
    pub(crate) tunnels_active: AtomicU64,
    pub(crate) bytes_client_to_target: AtomicU64,
    pub(crate) bytes_target_to_client: AtomicU64,
    pub(crate) resolves: AtomicU64,
    pub(crate) udp_associations: AtomicU64,
    pub(crate) udp_datagrams_client_to_target: AtomicU64,
    pub(crate) udp_datagrams_target_to_client: AtomicU64,
    pub(crate) udp_frag_dropped: AtomicU64,
    pub(crate) udp_foreign_dropped: AtomicU64,
    pub(crate) udp_invalid_dropped: AtomicU64,
    pub(crate) udp_receive_buffer_dropped: AtomicU64,
}

/// The counters at one moment. Each field is a total since the server started, except the
/// `*_active` gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Connections accepted.
    pub sessions_accepted: u64,
    /// Connections being served now.
    pub sessions_active: u64,
    /// Failed `accept()` calls (out of file descriptors, say).
    pub accept_errors: u64,
    /// Sessions whose task panicked (a bug), caught by the listener.
    pub session_panics: u64,
    /// Connections closed at once because their client held its share of the sessions.
    pub sessions_refused_per_client: u64,
    /// Connections closed at once because their address is outside `allow_from`.
    pub clients_not_allowed: u64,
    /// Clients that did not finish the handshake in time.
    pub handshake_timeouts: u64,
    /// Clients that sent bytes breaking the protocol.
    pub handshake_protocol_errors: u64,
    /// Clients that closed or reset during the handshake.
    pub handshake_client_gone: u64,
    /// SOCKS5 clients that offered no acceptable method (answered 0xFF).
    pub no_acceptable_method: u64,
    /// RFC 1929 authentications that failed.
    pub auth_failures: u64,
    /// Authentication attempts answered late because their client address had failed
    /// repeatedly (password guessing slowed down).
    pub auth_backoff_delays: u64,
    /// SOCKS4 clients refused (authentication required, or SOCKS4 disabled).
    pub socks4_refused: u64,
    /// Requests the policy denied.
    pub policy_denied: u64,
    /// CONNECT requests whose outbound connection failed (resolution, refusal, timeout...).
    pub connect_failures: u64,
    /// Tunnels (CONNECT and BIND) that started relaying.
    pub tunnels_total: u64,
    /// Tunnels relaying now.
    pub tunnels_active: u64,
    /// Bytes relayed from clients to targets (TCP).
    pub bytes_client_to_target: u64,
    /// Bytes relayed from targets to clients (TCP).
    pub bytes_target_to_client: u64,
    /// RESOLVE and RESOLVE_PTR requests answered.
    pub resolves: u64,
    /// UDP associations set up.
    pub udp_associations: u64,
    /// UDP datagrams relayed from clients to targets.
    pub udp_datagrams_client_to_target: u64,
    /// UDP datagrams relayed from targets to clients.
    pub udp_datagrams_target_to_client: u64,
    /// Client datagrams with FRAG != 0, dropped (RFC 1928: without reassembly they MUST be).
    pub udp_frag_dropped: u64,
    /// Datagrams arriving at a client-side relay port from another address, dropped.
    pub udp_foreign_dropped: u64,
    /// Client datagrams with a broken header, a denied or unresolvable destination, dropped.
    pub udp_invalid_dropped: u64,
    /// Datagrams the kernel dropped on the relay's sockets (either side) because their
    /// receive buffer was full: a burst faster than the relay reads. Counted for each
    /// association at most once a second while it is busy, and when it ends.
    pub udp_receive_buffer_dropped: u64,
}

impl Stats {
    /// Reads every counter (each one atomically; the set is not one atomic snapshot).
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            sessions_accepted: get(&self.sessions_accepted),
            sessions_active: get(&self.sessions_active),
            accept_errors: get(&self.accept_errors),
            session_panics: get(&self.session_panics),
            sessions_refused_per_client: get(&self.sessions_refused_per_client),
            clients_not_allowed: get(&self.clients_not_allowed),
            handshake_timeouts: get(&self.handshake_timeouts),
            handshake_protocol_errors: get(&self.handshake_protocol_errors),
            handshake_client_gone: get(&self.handshake_client_gone),
            no_acceptable_method: get(&self.no_acceptable_method),
            auth_failures: get(&self.auth_failures),
            auth_backoff_delays: get(&self.auth_backoff_delays),
            socks4_refused: get(&self.socks4_refused),
            policy_denied: get(&self.policy_denied),
            connect_failures: get(&self.connect_failures),
            tunnels_total: get(&self.tunnels_total),
            tunnels_active: get(&self.tunnels_active),
            bytes_client_to_target: get(&self.bytes_client_to_target),
            bytes_target_to_client: get(&self.bytes_target_to_client),
            resolves: get(&self.resolves),
            udp_associations: get(&self.udp_associations),
            udp_datagrams_client_to_target: get(&self.udp_datagrams_client_to_target),
            udp_datagrams_target_to_client: get(&self.udp_datagrams_target_to_client),
            udp_frag_dropped: get(&self.udp_frag_dropped),
            udp_foreign_dropped: get(&self.udp_foreign_dropped),
            udp_invalid_dropped: get(&self.udp_invalid_dropped),
            udp_receive_buffer_dropped: get(&self.udp_receive_buffer_dropped),
        }
    }
}

/// Adds one.
pub(crate) fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n`.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Holds a gauge up by one while alive.
pub(crate) struct Gauge<'a>(&'a AtomicU64);

impl<'a> Gauge<'a> {
    pub(crate) fn up(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Gauge(counter)
    }
}

impl Gauge<'_> {
    /// Leaves the gauge up: whoever takes the count over brings it down with [`down`]. For
    /// state kept by a task for its whole life, where a guard's reference would cost room.
    pub(crate) fn hand_over(self) {
        std::mem::forget(self);
    }
}

/// Brings a gauge down by one, for a count handed over with [`Gauge::hand_over`].
pub(crate) fn down(counter: &AtomicU64) {
    counter.fetch_sub(1, Ordering::Relaxed);
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges() {
        let stats = Stats::default();
        inc(&stats.sessions_accepted);
        add(&stats.bytes_client_to_target, 10);
        {
            let _g = Gauge::up(&stats.sessions_active);
            assert_eq!(stats.snapshot().sessions_active, 1);
        }
        let s = stats.snapshot();
        assert_eq!(
            (
                s.sessions_accepted,
                s.sessions_active,
                s.bytes_client_to_target
            ),
            (1, 0, 10)
        );
    }
}
