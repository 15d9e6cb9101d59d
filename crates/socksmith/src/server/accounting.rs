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

/// Several accountings as one (limits and metrics, say): each hears every event, and a
/// tunnel opens only when every one lets it, their guards held together. The first refusal
/// wins; guards already taken for that tunnel are dropped at once.
#[derive(Debug, Default)]
pub struct Accountings(Vec<std::sync::Arc<dyn Accounting>>);

impl Accountings {
    /// The accountings, asked in this order.
    pub fn new(accountings: Vec<std::sync::Arc<dyn Accounting>>) -> Self {
        Accountings(accountings)
    }
}

impl Accounting for Accountings {
    fn open(&self, session: &Session) -> Result<Option<Box<dyn TunnelGuard>>, DenyReason> {
        let mut guards = Vec::new();
        for accounting in &self.0 {
            if let Some(guard) = accounting.open(session)? {
                guards.push(guard);
            }
        }
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

/// The guards of several accountings for one tunnel.
struct Guards(Vec<Box<dyn TunnelGuard>>);

impl TunnelGuard for Guards {
    fn finish(&mut self, traffic: Traffic) {
        for guard in &mut self.0 {
            guard.finish(traffic);
        }
    }
}
