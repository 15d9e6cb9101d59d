//! The admin server's ear on the SOCKS server: an [`Accounting`] that turns the library's
//! events into the [`Metrics`] and the [`Live`] table.
//!
//! It refuses nothing (limits are another accounting's business). Every call is a few atomic
//! adds, plus a short lock on the live table when a tunnel opens or ends; nothing per byte.

use std::sync::Arc;
use std::time::SystemTime;

use socksmith::policy::DenyReason;
use socksmith::server::accounting::{Event, Finished};
use socksmith::server::{Accounting, EgressError, SessionError, Traffic, TunnelGuard};
use socksmith::session::Session;
use socksmith::Command;

use super::live::{rfc3339, FinishedTunnel, Live, OpenTunnel, Refusal};
use super::metrics::{command_label, Metrics};

/// Feeds the metrics and the live table. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AdminAccounting {
    pub(super) metrics: Arc<Metrics>,
    pub(super) live: Arc<Live>,
}

impl AdminAccounting {
    /// Fresh metrics (every family at zero) and an empty table.
    pub fn new() -> Self {
        AdminAccounting {
            metrics: Arc::new(Metrics::new()),
            live: Arc::new(Live::default()),
        }
    }

    fn refused(&self, session: &Session, reason: &DenyReason) {
        self.metrics.denied(reason.label(), reason.blocklist());
        self.live.refused(Refusal {
            time: rfc3339(SystemTime::now()),
            client: session.client,
            user: session.user.clone(),
            command: command_label(session.command),
            target: session.target.to_string(),
            reason: reason.label(),
            detail: reason.to_string(),
            list: reason.blocklist().map(str::to_owned),
        });
    }

    fn finished(&self, finished: &Finished<'_>) {
        self.metrics.finished(finished);
        if let Some(session) = finished.session {
            if is_tunnel(session.command) {
                let started = SystemTime::now()
                    .checked_sub(finished.duration)
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                self.live.finished_tunnel(FinishedTunnel {
                    client: session.client,
                    user: session.user.clone(),
                    command: command_label(session.command),
                    target: session.target.clone(),
                    started,
                    duration_ms: u64::try_from(finished.duration.as_millis()).unwrap_or(u64::MAX),
                    bytes_up: finished.traffic.up,
                    bytes_down: finished.traffic.down,
                    outcome: finished.outcome(),
                    error: finished.error.map(ToString::to_string),
                });
            }
        }
        // A name whose every address the policy refuses is refused by the egress, after the
        // lookup, without an `Event::Denied` (which is for refusals before it).
        if let (Some(session), Some(SessionError::Egress(EgressError::Denied(reason)))) =
            (finished.session, finished.error)
        {
            self.refused(session, reason);
        }
    }
}

impl Default for AdminAccounting {
    fn default() -> Self {
        Self::new()
    }
}

/// The commands that hold a tunnel (and a row in the live table) while they run.
fn is_tunnel(command: Command) -> bool {
    matches!(
        command,
        Command::Connect | Command::Bind | Command::UdpAssociate
    )
}

impl Accounting for AdminAccounting {
    /// Called for tunnels only ([`is_tunnel`]).
    fn open(&self, session: &Session) -> Result<Option<Box<dyn TunnelGuard>>, DenyReason> {
        let tunnel = self.live.open(
            session.client,
            session.user.clone(),
            command_label(session.command),
            session.target.clone(),
        );
        Ok(Some(Box::new(LiveGuard {
            accounting: self.clone(),
            tunnel,
        })))
    }

    fn record(&self, event: &Event<'_>) {
        match event {
            // Counted by the server itself (`admin::stats`).
            Event::Accepted { .. } => {}
            Event::AuthFailed { .. } => self.metrics.auth_failed(),
            Event::Denied { session, reason } => self.refused(session, reason),
            Event::Connected { elapsed, .. } => self.metrics.connected(elapsed.as_secs_f64()),
            Event::Resolved { elapsed, .. } => self.metrics.resolved(elapsed.as_secs_f64()),
            Event::Finished(finished) => self.finished(finished),
            // A new kind of event is not counted until it gets a metric.
            _ => {}
        }
    }
}

/// One row of the live table: it takes the bytes as the relay reports them (and adds what is
/// new to `socksmith_bytes_total`), and is removed when the server drops the guard at the
/// tunnel's end.
struct LiveGuard {
    accounting: AdminAccounting,
    tunnel: Arc<OpenTunnel>,
}

impl TunnelGuard for LiveGuard {
    fn progress(&self, traffic: Traffic) {
        let new = self.tunnel.report(traffic);
        self.accounting.metrics.add_traffic(new);
    }

    fn finish(&mut self, traffic: Traffic) {
        self.progress(traffic);
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.accounting.live.close(self.tunnel.id());
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use socksmith::server::accounting::{Event, Finished};
    use socksmith::server::Traffic;
    use socksmith::{TargetAddr, Version};

    use super::*;

    fn session(target: &str) -> Session {
        let client: SocketAddr = "127.0.0.1:40000".parse().expect("valid");
        Session {
            http: false,
            client,
            local: "127.0.0.1:1080".parse().expect("valid"),
            user: Some("alice".into()),
            version: Version::V5,
            command: Command::Connect,
            target: TargetAddr::Ip(target.parse().expect("valid")),
        }
    }

    #[test]
    fn refusals_before_and_after_the_lookup_are_both_counted_and_listed() {
        let accounting = AdminAccounting::new();
        let asked = session("10.1.2.3:80");
        let guard = accounting.open(&asked).expect("never refuses");
        assert_eq!(accounting.live.sessions().len(), 1);

        // Refused by the policy before anything was looked up: an `Event::Denied`.
        let net = "10.0.0.0/8".parse().expect("valid prefix");
        let reason = DenyReason::DeniedNetwork {
            ip: "10.1.2.3".parse().expect("valid"),
            net,
        };
        accounting.record(&Event::Denied {
            session: &asked,
            reason: &reason,
        });
        // Refused by the egress after the lookup: only the session's end says so.
        let error = SessionError::Egress(EgressError::Denied(reason.clone()));
        accounting.record(&Event::Finished(&Finished {
            client: asked.client,
            version: Some(Version::V5),
            session: Some(&asked),
            traffic: Traffic::default(),
            duration: Duration::from_millis(3),
            error: Some(&error),
        }));
        drop(guard);

        assert_eq!(accounting.metrics.denied_total(), 2);
        let refusals = accounting.live.refusals();
        assert_eq!(refusals.len(), 2);
        assert_eq!(refusals[0].reason, "denied_network");
        assert_eq!(refusals[0].user.as_deref(), Some("alice"));
        assert!(
            refusals[0].detail.contains("10.0.0.0/8"),
            "{:?}",
            refusals[0]
        );
        assert!(accounting.live.sessions().is_empty());
        let finished = accounting.live.finished();
        assert_eq!(finished.len(), 1);
        assert_eq!(finished[0].outcome, "denied");
        assert_eq!(finished[0].duration_ms, 3);
        let text = accounting.metrics.encode();
        assert!(
            text.contains(
                "socksmith_sessions_total{version=\"socks5\",command=\"connect\",outcome=\"denied\"} 1\n"
            ),
            "{text}"
        );
    }
}
