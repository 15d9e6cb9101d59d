//! The accounting seam: what limits and metrics need to know about sessions and tunnels.
//!
//! An [`Accounting`] hears every session's events ([`Event`]) and is asked before each tunnel
//! (CONNECT, BIND, UDP ASSOCIATE) opens: it may refuse it (a per-user or per-client limit) or
//! hand back a [`TunnelGuard`], which the server keeps for the tunnel's life and tells the
//! bytes moved when it ends. Without an accounting (the default) the server does none of this:
//! an idle tunnel pays one empty `Option`. [`AccountingList`] puts several behind the one
//! slot (limits and metrics).
//!
//! Calls happen on the session's task, outside the relay's hot path: once per event, never
//! per byte. Implementations must be cheap and must not block.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
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
    /// A relaying CONNECT or BIND tunnel has moved `traffic` so far (totals, not
    /// increments). Called in steps of about [`PROGRESS_STEP`] bytes, never per packet, so that
    /// live views can show a long transfer as it goes; not called for UDP associations.
    fn progress(&self, traffic: Traffic) {
        let _ = traffic;
    }

    /// The tunnel ended having moved `traffic`. Called once, before the guard is dropped; a
    /// tunnel cut at shutdown is finished too.
    fn finish(&mut self, traffic: Traffic) {
        let _ = traffic;
    }
}

/// How many bytes (both directions together) a relaying tunnel moves between two
/// [`TunnelGuard::progress`] calls and two updates of the server's byte counters.
pub const PROGRESS_STEP: u64 = 256 * 1024;

/// Several accountings as one (limits and metrics, say, which the configuration's single
/// [`ServerConfig::accounting`](crate::server::ServerConfig::accounting) could not hold side by
/// side): each hears every event, in order, and a tunnel opens only when each lets it.
///
/// The first refusal wins; the guards the earlier ones handed out are dropped at once, which
/// frees their slots, and the refusal is then heard by all as [`Event::Denied`].
#[derive(Debug, Default, Clone)]
pub struct AccountingList(Vec<Arc<dyn Accounting>>);

impl AccountingList {
    /// These accountings, asked in this order.
    pub fn new(accountings: impl IntoIterator<Item = Arc<dyn Accounting>>) -> Self {
        AccountingList(accountings.into_iter().collect())
    }

    /// `added` after `existing`, if there is one: how a program adds its accounting to a
    /// configuration that may already have another.
    pub fn join(
        existing: Option<Arc<dyn Accounting>>,
        added: Arc<dyn Accounting>,
    ) -> Arc<dyn Accounting> {
        match existing {
            None => added,
            Some(existing) => Arc::new(AccountingList::new([existing, added])),
        }
    }
}

impl Accounting for AccountingList {
    fn open(&self, session: &Session) -> Result<Option<Box<dyn TunnelGuard>>, DenyReason> {
        let mut guards = Vec::new();
        for accounting in &self.0 {
            // On a refusal `guards` is dropped here, releasing what the others granted.
            if let Some(guard) = accounting.open(session)? {
                guards.push(guard);
            }
        }
        // One guard is handed on as it is: a wrapper would cost every tunnel two allocations.
        Ok(match guards.len() {
            0 => None,
            1 => guards.pop(),
            _ => Some(Box::new(Guards(guards))),
        })
    }

    fn record(&self, event: &Event<'_>) {
        for accounting in &self.0 {
            accounting.record(event);
        }
    }
}

/// The guards of an [`AccountingList`]'s members for one tunnel.
struct Guards(Vec<Box<dyn TunnelGuard>>);

impl TunnelGuard for Guards {
    fn progress(&self, traffic: Traffic) {
        for guard in &self.0 {
            guard.progress(traffic);
        }
    }

    fn finish(&mut self, traffic: Traffic) {
        for guard in &mut self.0 {
            guard.finish(traffic);
        }
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
    /// `unusable_target`, `hostname_required`, `blocklist` or `other` (a rule's, a custom
    /// policy's or a limit's own reason).
    pub fn label(&self) -> &'static str {
        match self {
            DenyReason::LinkLocalTarget(_) => "link_local",
            DenyReason::MetadataTarget(_) => "metadata",
            DenyReason::LoopbackTarget(_) => "loopback",
            DenyReason::DeniedNetwork { .. } => "denied_network",
            DenyReason::UnusableTarget(_) => "unusable_target",
            DenyReason::HostnameRequired(_) => "hostname_required",
            DenyReason::Blocked { .. } => "blocklist",
            DenyReason::Other(_) => "other",
        }
    }

    /// The name of the blocklist that refused the request, when one did (counted apart, by
    /// list); `None` for every other refusal.
    pub fn blocklist(&self) -> Option<&str> {
        match self {
            DenyReason::Blocked { list, .. } => Some(list),
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
    /// `auth_failed`, `handshake_failed`, `not_allowed`, `target_failed` or `error`.
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
    use std::sync::atomic::{AtomicU64, Ordering};

    use socksmith_proto::{Command, TargetAddr, Version};

    use super::*;

    /// Counts what it hears; refuses tunnels when `refuse`.
    #[derive(Debug, Default)]
    struct Ledger {
        refuse: bool,
        events: AtomicU64,
        open: Arc<AtomicU64>,
        finished: Arc<AtomicU64>,
    }

    struct Slot {
        open: Arc<AtomicU64>,
        finished: Arc<AtomicU64>,
    }

    impl TunnelGuard for Slot {
        fn finish(&mut self, traffic: Traffic) {
            self.finished.fetch_add(traffic.up, Ordering::Relaxed);
        }
    }

    impl Drop for Slot {
        fn drop(&mut self) {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    impl Accounting for Ledger {
        fn open(&self, _: &Session) -> Result<Option<Box<dyn TunnelGuard>>, DenyReason> {
            if self.refuse {
                return Err(DenyReason::Other("full".into()));
            }
            self.open.fetch_add(1, Ordering::Relaxed);
            Ok(Some(Box::new(Slot {
                open: Arc::clone(&self.open),
                finished: Arc::clone(&self.finished),
            })))
        }

        fn record(&self, _: &Event<'_>) {
            self.events.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn session() -> Session {
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("valid");
        Session {
            http: false,
            client: addr,
            local: addr,
            user: None,
            version: Version::V5,
            command: Command::Connect,
            target: TargetAddr::Ip(addr),
        }
    }

    #[test]
    fn a_list_tells_every_member_and_opens_only_when_all_agree() {
        let first = Arc::new(Ledger::default());
        let second = Arc::new(Ledger::default());
        let list = AccountingList::join(Some(first.clone()), second.clone());
        let client = session().client;
        list.record(&Event::Accepted { client });
        assert_eq!(first.events.load(Ordering::Relaxed), 1);
        assert_eq!(second.events.load(Ordering::Relaxed), 1);
        let mut guard = list.open(&session()).expect("both allow").expect("guards");
        assert_eq!(first.open.load(Ordering::Relaxed), 1);
        assert_eq!(second.open.load(Ordering::Relaxed), 1);
        guard.finish(Traffic { up: 7, down: 0 });
        drop(guard);
        assert_eq!(first.finished.load(Ordering::Relaxed), 7);
        assert_eq!(second.finished.load(Ordering::Relaxed), 7);
        assert_eq!(first.open.load(Ordering::Relaxed), 0);

        // A refusal by the second frees the slot the first had granted.
        let refusing = Arc::new(Ledger {
            refuse: true,
            ..Ledger::default()
        });
        let list = AccountingList::new([first.clone() as Arc<dyn Accounting>, refusing]);
        let refused = list.open(&session());
        assert!(matches!(refused, Err(DenyReason::Other(_))));
        assert_eq!(first.open.load(Ordering::Relaxed), 0);
    }

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
