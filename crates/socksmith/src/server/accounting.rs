//! The accounting seam: what limits and metrics need to know about sessions and tunnels.
//!
//! An [`Accounting`] hears every session's events ([`Event`]) and is asked before each tunnel
//! (CONNECT, BIND, UDP ASSOCIATE) opens: it may refuse it (a per-user or per-client limit) or
//! hand back a [`TunnelGuard`], which the server keeps for the tunnel's life and tells the
//! bytes moved when it ends. Without an accounting (the default) the server does none of this:
//! an idle tunnel pays one empty `Option`.
//!
//! Calls happen on the session's task, outside the relay's hot path: once per event, never
//! per byte. Implementations must be cheap and must not block.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use socksmith_proto::{Command, TargetAddr, Version};

use crate::policy::DenyReason;
use crate::server::SessionError;
use crate::session::Session;

/// Bytes a session moved: TCP payload both ways, or UDP payload (headers not counted).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    /// From the client to the target.
    pub up: u64,
    /// From the target to the client.
    pub down: u64,
}

/// Hears what sessions do and may refuse tunnels. See the [module docs](self).
pub trait Accounting: Send + Sync + fmt::Debug {
    /// A tunnel for `session` is about to open (after the policy allowed it, before the
    /// egress is asked). `Err` refuses it with reply 0x02 (SOCKS4: 0x5B) and the reason in
    /// the log line; `Ok(Some(guard))` is kept until the tunnel ends.
    fn open(&self, session: &Session) -> Result<Option<Box<dyn TunnelGuard>>, DenyReason> {
        let _ = session;
        Ok(None)
    }

    /// Something happened.
    fn record(&self, event: &Event<'_>) {
        let _ = event;
    }
}

/// Held by the server for one tunnel's life (drop it to free a limit's slot).
pub trait TunnelGuard: Send + Sync {
    /// The tunnel ended having moved `traffic`. Called once, before the guard is dropped; a
    /// tunnel cut at shutdown is finished too.
    fn finish(&mut self, traffic: Traffic) {
        let _ = traffic;
    }
}

/// What an [`Accounting`] hears.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A client connected (before anything is read).
    Accepted {
        /// Its address.
        client: SocketAddr,
    },
    /// RFC 1929 credentials were wrong.
    AuthFailed {
        /// The client's address.
        client: SocketAddr,
    },
    /// The policy (or a limit) refused a request.
    Denied {
        /// The request.
        session: &'a Session,
        /// Why.
        reason: &'a DenyReason,
    },
    /// The egress answered a CONNECT (or not), after `elapsed`.
    Connected {
        /// The request.
        session: &'a Session,
        /// How long the egress took, lookup included.
        elapsed: Duration,
        /// Whether a tunnel was opened.
        ok: bool,
    },
    /// A name lookup the session asked for (RESOLVE, RESOLVE_PTR, a BIND peer or UDP
    /// destination name) finished after `elapsed`.
    Resolved {
        /// How long it took.
        elapsed: Duration,
        /// Whether it gave an answer.
        ok: bool,
    },
    /// A session ended: the facts of its log line.
    Finished(&'a Finished<'a>),
}

/// A finished session, as its log line reports it.
#[derive(Debug)]
pub struct Finished<'a> {
    /// The client's address.
    pub client: SocketAddr,
    /// The protocol version, once the first byte was read.
    pub version: Option<Version>,
    /// The request, once decoded.
    pub session: Option<&'a Session>,
    /// The bytes it moved.
    pub traffic: Traffic,
    /// How long it lasted.
    pub duration: Duration,
    /// Why it ended early, if it did.
    pub error: Option<&'a SessionError>,
}

/// How a refusal is counted: a few stable words for metric labels, apart from the log line's
/// [`Display`](fmt::Display) (which names addresses and prefixes, far too many values for a
/// label).
///
/// Both matches are exhaustive on purpose: a new reason (a blocklist hit, a rule) must choose
/// its label here, or the crate does not build.
impl DenyReason {
    /// The `reason` label: `link_local`, `metadata`, `loopback`, `denied_network`,
    /// `unusable_target`, `hostname_required` or `other` (a custom policy's or a limit's own
    /// reason).
    pub fn label(&self) -> &'static str {
        match self {
            DenyReason::LinkLocalTarget(_) => "link_local",
            DenyReason::MetadataTarget(_) => "metadata",
            DenyReason::LoopbackTarget(_) => "loopback",
            DenyReason::DeniedNetwork { .. } => "denied_network",
            DenyReason::UnusableTarget(_) => "unusable_target",
            DenyReason::HostnameRequired(_) => "hostname_required",
            DenyReason::Other(_) => "other",
        }
    }

    /// The name of the blocklist that refused the request, when one did (counted apart, by
    /// list); `None` for every other refusal. No reason names a list yet.
    pub fn blocklist(&self) -> Option<&str> {
        match self {
            DenyReason::LinkLocalTarget(_)
            | DenyReason::MetadataTarget(_)
            | DenyReason::LoopbackTarget(_)
            | DenyReason::DeniedNetwork { .. }
            | DenyReason::UnusableTarget(_)
            | DenyReason::HostnameRequired(_)
            | DenyReason::Other(_) => None,
        }
    }
}

impl Finished<'_> {
    /// The command, once the request was decoded.
    pub fn command(&self) -> Option<Command> {
        self.session.map(|s| s.command)
    }

    /// The target, once the request was decoded.
    pub fn target(&self) -> Option<&TargetAddr> {
        self.session.map(|s| &s.target)
    }

    /// The outcome as one of a few stable words, for a metric label: `ok`, `denied`,
    /// `auth_failed`, `handshake_failed`, `target_failed` or `error`.
    pub fn outcome(&self) -> &'static str {
        match self.error {
            None => "ok",
            Some(e) => e.outcome(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    #[test]
    fn deny_labels_are_few_stable_words_without_addresses() {
        let ip = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
        let net = "10.0.0.0/8".parse().expect("valid prefix");
        let cases = [
            (DenyReason::LinkLocalTarget(ip), "link_local"),
            (DenyReason::MetadataTarget(ip), "metadata"),
            (DenyReason::LoopbackTarget(ip), "loopback"),
            (DenyReason::DeniedNetwork { ip, net }, "denied_network"),
            (DenyReason::UnusableTarget(ip), "unusable_target"),
            (DenyReason::HostnameRequired(ip), "hostname_required"),
            (DenyReason::Other("over the limit".into()), "other"),
        ];
        for (reason, label) in cases {
            assert_eq!(reason.label(), label, "{reason}");
            assert_eq!(reason.blocklist(), None, "{reason}");
        }
    }
}
