//! The one log line of a session, and the accounting that hears the same facts.
//!
//! [`End`] is filled in as the session goes (version, user, request, bytes) and lives through
//! the relay; [`End::finish`] writes "session finished" (or "handshake failed") at the end,
//! tells the tunnel's accounting guard the bytes it moved and hands the facts to the
//! accounting.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use socksmith_proto::Version;

use crate::server::accounting::{Event, Finished, Traffic, TunnelGuard};
use crate::server::error::SessionError;
use crate::server::Shared;
use crate::session::Session;

/// What the log line needs, filled in as the session goes.
///
/// A relaying tunnel's task keeps one for the tunnel's whole life, so nothing in it is kept
/// twice: the client's address is the session's once the request is known.
pub(crate) struct End {
    who: Who,
    pub(crate) version: Option<Version>,
    /// The client speaks HTTP (the log says `version=HTTP`).
    pub(crate) http: bool,
    /// The connection's requests were logged one by one (HTTP forwarding): the connection
    /// itself writes no line and is no `Finished` event.
    pub(crate) silent: bool,
    /// The handshake ended with a reply to the client (0xFF, an authentication failure,
    /// 0x5B, an error reply): linger before closing.
    pub(crate) replied: bool,
    /// The connection is a load balancer's own (PROXY protocol `LOCAL` or `UNKNOWN`): if it
    /// closes in its handshake, it was a health check (HAProxy's `tcp-check` that sends a
    /// greeting and reads the answer), which is neither logged as a failure nor counted.
    pub(crate) balancers_own: bool,
    pub(crate) meter: Meter,
}

/// Whom a session serves.
enum Who {
    /// Before the request: the client, and the name it authenticated with (or the mark of a
    /// name that failed), if it did.
    Client {
        peer: SocketAddr,
        user: Option<String>,
    },
    /// The request, which names the client and its user.
    Session(Session),
}

/// A tunnel's bytes and the accounting's guard that hears them: one place, so that the relay
/// reaches both through one reference.
#[derive(Default)]
pub(crate) struct Meter {
    /// Moved so far (the relay updates it in steps, and with the totals at the end).
    pub(crate) traffic: Traffic,
    /// The accounting's hold on the tunnel, released when the session ends.
    pub(crate) guard: Option<Box<dyn TunnelGuard>>,
}

impl End {
    /// A session of the client at `peer`, nothing known of it yet.
    pub(crate) fn new(peer: SocketAddr) -> End {
        End {
            who: Who::Client { peer, user: None },
            version: None,
            http: false,
            silent: false,
            replied: false,
            balancers_own: false,
            meter: Meter::default(),
        }
    }

    /// An HTTP client's session.
    pub(crate) fn http(peer: SocketAddr) -> End {
        End {
            http: true,
            ..End::new(peer)
        }
    }

    /// The client's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        match &self.who {
            Who::Client { peer, .. } => *peer,
            Who::Session(session) => session.client,
        }
    }

    /// The request, once known.
    pub(crate) fn session(&self) -> Option<&Session> {
        match &self.who {
            Who::Client { .. } => None,
            Who::Session(session) => Some(session),
        }
    }

    /// The user: the session's, or before the request, the name the client authenticated
    /// with (or the mark of one that failed).
    pub(crate) fn user(&self) -> Option<&str> {
        match &self.who {
            Who::Client { user, .. } => user.as_deref(),
            Who::Session(session) => session.user.as_deref(),
        }
    }

    /// Records the name the client authenticated with, before its request.
    pub(crate) fn set_user(&mut self, name: String) {
        match &mut self.who {
            Who::Client { user, .. } => *user = Some(name),
            Who::Session(_) => debug_assert!(false, "the user is set before the request"),
        }
    }

    /// Takes the name recorded with [`End::set_user`], for the session about to begin.
    pub(crate) fn take_user(&mut self) -> Option<String> {
        match &mut self.who {
            Who::Client { user, .. } => user.take(),
            Who::Session(_) => None,
        }
    }

    /// Records the request (it names the client from now on) and lends it back with the
    /// meter, both living here for the log line: no copy is made.
    pub(crate) fn begin(&mut self, session: Session) -> (&Session, &mut Meter) {
        self.who = Who::Session(session);
        let Who::Session(session) = &self.who else {
            unreachable!("just set")
        };
        (session, &mut self.meter)
    }

    /// Writes the log line, settles the tunnel's guard and tells the accounting.
    pub(crate) fn finish(
        &mut self,
        shared: &Shared,
        elapsed: Duration,
        error: Option<&SessionError>,
    ) {
        if self.silent && error.is_none() {
            return;
        }
        if self.is_health_check(error) {
            tracing::debug!(balancer = %self.peer(), "health check: the balancer closed in the handshake");
            return;
        }
        let peer = self.peer();
        self.log(peer, elapsed, error);
        if let Some(mut guard) = self.meter.guard.take() {
            guard.finish(self.meter.traffic);
        }
        if let Some(accounting) = &shared.config.accounting {
            accounting.record(&Event::Finished(&Finished {
                client: peer,
                version: self.version,
                session: self.session(),
                traffic: self.meter.traffic,
                duration: elapsed,
                error,
            }));
        }
    }

    /// Whether the session was the balancer's health check: its own connection, closed
    /// before any request.
    fn is_health_check(&self, error: Option<&SessionError>) -> bool {
        self.balancers_own
            && self.session().is_none()
            && matches!(
                error,
                Some(SessionError::ClientClosed | SessionError::ClientIo(_))
            )
    }

    fn log(&self, peer: SocketAddr, elapsed: Duration, error: Option<&SessionError>) {
        let outcome = match error {
            None => Outcome::Ok,
            Some(e) => Outcome::Failed(e),
        };
        let version = match (self.http, self.version) {
            (true, _) => "HTTP",
            (false, None) => "-",
            (false, Some(Version::V4)) => "SOCKS4",
            (false, Some(Version::V5)) => "SOCKS5",
        };
        let user = self.user().unwrap_or("-");
        match self.session() {
            Some(s) => tracing::info!(
                client = %peer,
                user = %user,
                version = %version,
                command = %s.command,
                destination = %s.target,
                bytes_up = self.meter.traffic.up,
                bytes_down = self.meter.traffic.down,
                duration_ms = elapsed.as_millis() as u64,
                outcome = %outcome,
                "session finished"
            ),
            None => match error {
                // Refusals are worth knowing at the default level; a peer's broken bytes,
                // timeouts and disconnects are its own business.
                Some(
                    SessionError::AuthenticationFailed(_)
                    | SessionError::ClientNotAllowed
                    | SessionError::NoAcceptableMethod
                    | SessionError::Socks4AuthRequired
                    | SessionError::Socks4Disabled
                    | SessionError::ProxyAuthRequired,
                ) => tracing::info!(
                    client = %peer, user = %user, version = %version,
                    duration_ms = elapsed.as_millis() as u64,
                    outcome = %outcome,
                    "handshake failed"
                ),
                _ => tracing::debug!(
                    client = %peer, user = %user, version = %version,
                    duration_ms = elapsed.as_millis() as u64,
                    outcome = %outcome,
                    "handshake failed"
                ),
            },
        }
    }
}

enum Outcome<'a> {
    Ok,
    Failed(&'a SessionError),
}

impl fmt::Display for Outcome<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Failed(e) => write!(f, "{e}"),
        }
    }
}
