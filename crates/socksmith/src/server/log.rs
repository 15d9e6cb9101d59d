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
#[derive(Default)]
pub(crate) struct End {
    pub(crate) version: Option<Version>,
    /// The client speaks HTTP (the log says `version=HTTP`).
    pub(crate) http: bool,
    /// The connection's requests were logged one by one (HTTP forwarding): the connection
    /// itself writes no line and is no `Finished` event.
    pub(crate) silent: bool,
    /// The handshake ended with a reply to the client (0xFF, an authentication failure,
    /// 0x5B, an error reply): linger before closing.
    pub(crate) replied: bool,
    pub(crate) user: Option<String>,
    pub(crate) session: Option<Session>,
    pub(crate) meter: Meter,
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
    /// Writes the log line, settles the tunnel's guard and tells the accounting.
    pub(crate) fn finish(
        &mut self,
        shared: &Shared,
        peer: SocketAddr,
        elapsed: Duration,
        error: Option<&SessionError>,
    ) {
        if self.silent && error.is_none() {
            return;
        }
        self.log(peer, elapsed, error);
        if let Some(mut guard) = self.meter.guard.take() {
            guard.finish(self.meter.traffic);
        }
        if let Some(accounting) = &shared.config.accounting {
            accounting.record(&Event::Finished(&Finished {
                client: peer,
                version: self.version,
                session: self.session.as_ref(),
                traffic: self.meter.traffic,
                duration: elapsed,
                error,
            }));
        }
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
        let user = match &self.session {
            Some(s) => s.user.as_deref(),
            None => self.user.as_deref(),
        }
        .unwrap_or("-");
        match &self.session {
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
