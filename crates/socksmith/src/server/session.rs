//! One client connection from accept to close: drives the [`ServerHandshake`] over the
//! socket with a deadline, checks credentials, asks the policy, hands the request to the
//! command's module (connect, bind, udp) and writes the one log line of the session.
//!
//! The session owns the handshake buffer: 512 bytes, grown only if a message needs more, and
//! dropped before the relay starts; bytes the client pipelined after its request are handed
//! to the relay, never dropped. No wire parsing and no reply decision happen here: the machine
//! decides, the session moves bytes.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socksmith_proto::{
    CloseReason, Command, ProtocolError, ReplyCode, ServerEvent, ServerHandshake, ServerState,
    TargetAddr, Version,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::policy::Decision;
use crate::server::error::SessionError;
use crate::server::stats::{inc, Gauge};
use crate::server::{bind, connect, udp, Shared};

/// Bytes a handshake buffer starts with: enough for any greeting, authentication or request
/// but the longest SOCKS4a one (520 bytes).
const INITIAL_BUFFER: usize = 512;

/// The buffer never grows past this: no single handshake message is longer than 520 bytes, so
/// a client that fills it without completing one is broken.
const MAX_BUFFER: usize = 2048;

/// What the server knows about a session once its request is decoded: what the policy
/// decides on and what the log line reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The client's address.
    pub client: SocketAddr,
    /// The server address the client connected to.
    pub local: SocketAddr,
    /// The RFC 1929 user that authenticated, or the SOCKS4 user id (an unverified claim, see
    /// `version`); `None` for anonymous SOCKS5 and an empty SOCKS4 user id.
    pub user: Option<String>,
    /// The protocol version the client speaks (SOCKS4 includes SOCKS4a).
    pub version: Version,
    /// What the client asks for.
    pub command: Command,
    /// The target as the client sent it (a name is not resolved yet).
    pub target: TargetAddr,
}

/// Bytes moved by a session, for the log line.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Traffic {
    pub(crate) up: u64,
    pub(crate) down: u64,
}

/// The machine, kept until the last reply is sent, with its output buffer.
pub(crate) struct Replier {
    hs: ServerHandshake,
    out: Vec<u8>,
}

impl Replier {
    /// Queues a reply with the machine and writes it to the client.
    pub(crate) async fn send(
        &mut self,
        client: &mut TcpStream,
        code: ReplyCode,
        bound: TargetAddr,
    ) -> Result<(), SessionError> {
        self.hs
            .reply(code, bound)
            .expect("the session replies only while the machine awaits a reply");
        flush(&mut self.hs, &mut self.out, client).await
    }
}

/// Serves one accepted connection to its end, then logs it.
pub(crate) async fn run(shared: Arc<Shared>, client: TcpStream, peer: SocketAddr) {
    let _active = Gauge::up(&shared.stats.sessions_active);
    let started = Instant::now();
    let mut end = End::default();
    let result = serve(&shared, client, peer, &mut end).await;
    end.log(peer, started.elapsed(), result.as_ref().err());
}

/// What the log line needs, filled in as the session goes.
#[derive(Default)]
struct End {
    version: Option<Version>,
    user: Option<String>,
    session: Option<Session>,
    traffic: Traffic,
}

impl End {
    fn log(&self, peer: SocketAddr, elapsed: Duration, error: Option<&SessionError>) {
        let outcome = match error {
            None => Outcome::Ok,
            Some(e) => Outcome::Failed(e),
        };
        let version = self.version.map_or("-", |v| match v {
            Version::V4 => "SOCKS4",
            Version::V5 => "SOCKS5",
        });
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
                bytes_up = self.traffic.up,
                bytes_down = self.traffic.down,
                duration_ms = elapsed.as_millis() as u64,
                outcome = %outcome,
                "session finished"
            ),
            None => match error {
                // Refusals are worth knowing at the default level; a peer's broken bytes,
                // timeouts and disconnects are its own business.
                Some(
                    SessionError::AuthenticationFailed(_)
                    | SessionError::NoAcceptableMethod
                    | SessionError::Socks4AuthRequired
                    | SessionError::Socks4Disabled,
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

async fn serve(
    shared: &Shared,
    mut client: TcpStream,
    peer: SocketAddr,
    end: &mut End,
) -> Result<(), SessionError> {
    // Interactive protocols run through tunnels: never delay small writes.
    client.set_nodelay(true).map_err(SessionError::ClientIo)?;
    let local = client.local_addr().map_err(SessionError::ClientIo)?;
    let deadline = Instant::now() + shared.config.handshake_timeout;
    let (mut replier, request, pending) = match Box::pin(tokio::time::timeout_at(
        deadline,
        handshake(shared, &mut client, end),
    ))
    .await
    {
        Ok(result) => result?,
        Err(_) => {
            inc(&shared.stats.handshake_timeouts);
            return Err(SessionError::HandshakeTimeout(
                shared.config.handshake_timeout,
            ));
        }
    };

    let user = match (end.user.take(), request.user_id) {
        (Some(user), _) => Some(user),
        (None, Some(id)) if !id.is_empty() => Some(String::from_utf8_lossy(&id).into_owned()),
        (None, _) => None,
    };
    // The session lives in `end`, where the log line finds it; no copy is made.
    let End {
        session, traffic, ..
    } = end;
    let session = &*session.insert(Session {
        client: peer,
        local,
        user,
        version: request.version,
        command: request.command,
        target: request.target,
    });

    if let Decision::Deny(reason) = shared.config.policy.check_request(session) {
        inc(&shared.stats.policy_denied);
        replier
            .send(&mut client, ReplyCode::NotAllowed, TargetAddr::UNSPECIFIED)
            .await?;
        return Err(SessionError::Denied(reason));
    }

    match session.command {
        Command::Connect => {
            // Dialing and replying run boxed, freed before the relay: an idle tunnel's task
            // keeps only what the relay needs (resident memory per idle tunnel).
            let (client, target) =
                Box::pin(connect::open(shared, session, client, replier)).await?;
            connect::tunnel(shared, client, target, &pending, traffic).await
        }
        Command::Resolve | Command::ResolvePtr => {
            Box::pin(connect::resolve(shared, session, client, replier)).await
        }
        Command::Bind => {
            Box::pin(bind::bind(
                shared, session, client, replier, pending, traffic,
            ))
            .await
        }
        Command::UdpAssociate => Box::pin(udp::associate(shared, session, client, replier)).await,
        Command::Unknown(_) => {
            unreachable!("the handshake machine answers unknown commands itself")
        }
    }
}

/// Reads and answers until the machine hands out a request. Returns the machine (to send the
/// reply with), the request and the bytes the client sent after it.
async fn handshake(
    shared: &Shared,
    client: &mut TcpStream,
    end: &mut End,
) -> Result<(Replier, socksmith_proto::IncomingRequest, Vec<u8>), SessionError> {
    let mut hs = ServerHandshake::new(shared.handshake);
    let mut buf = Vec::with_capacity(INITIAL_BUFFER);
    let mut out = Vec::new();
    loop {
        let received = hs.receive(&buf);
        end.version = end.version.or(hs.version());
        let used = match received {
            Ok(n) => n,
            Err(e) => {
                // The machine has queued the reply this error deserves, if any.
                flush(&mut hs, &mut out, client).await?;
                inc(&shared.stats.handshake_protocol_errors);
                return Err(SessionError::Protocol(e));
            }
        };
        buf.drain(..used);
        flush(&mut hs, &mut out, client).await?;

        let mut decided = false;
        while let Some(event) = hs.poll_event() {
            match event {
                ServerEvent::Authenticate(credentials) => {
                    let verdict = shared
                        .config
                        .auth
                        .as_ref()
                        .and_then(|auth| auth.authenticate(&credentials));
                    let ok = verdict.is_some();
                    end.user = Some(verdict.unwrap_or_else(|| {
                        String::from_utf8_lossy(credentials.username()).into_owned()
                    }));
                    hs.accept_credentials(ok)
                        .expect("an Authenticate event means the machine awaits a verdict");
                    flush(&mut hs, &mut out, client).await?;
                    decided = true;
                }
                ServerEvent::Request(request) => {
                    let pending = if buf.is_empty() { Vec::new() } else { buf };
                    return Ok((Replier { hs, out }, request, pending));
                }
            }
        }
        if let ServerState::Closing(reason) = hs.state() {
            return Err(closed(shared, reason, end));
        }
        if decided {
            // The verdict may unblock a request already in the buffer.
            continue;
        }
        if buf.len() >= MAX_BUFFER {
            inc(&shared.stats.handshake_protocol_errors);
            return Err(SessionError::Oversized(MAX_BUFFER));
        }
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity());
        }
        let n = client
            .read_buf(&mut buf)
            .await
            .map_err(|e| client_gone(shared, e))?;
        if n == 0 {
            inc(&shared.stats.handshake_client_gone);
            return Err(SessionError::ClientClosed);
        }
    }
}

/// The error for a handshake the machine closed (its last bytes are already flushed).
fn closed(shared: &Shared, reason: CloseReason, end: &End) -> SessionError {
    let stats = &shared.stats;
    match reason {
        CloseReason::NoAcceptableMethod => {
            inc(&stats.no_acceptable_method);
            SessionError::NoAcceptableMethod
        }
        CloseReason::AuthenticationFailed => {
            inc(&stats.auth_failures);
            SessionError::AuthenticationFailed(end.user.clone().unwrap_or_default())
        }
        CloseReason::Socks4AuthRequired => {
            inc(&stats.socks4_refused);
            SessionError::Socks4AuthRequired
        }
        CloseReason::Socks4Disabled => {
            inc(&stats.socks4_refused);
            SessionError::Socks4Disabled
        }
        CloseReason::Error(e) => {
            inc(&stats.handshake_protocol_errors);
            SessionError::Protocol(e)
        }
        // These follow a reply, which the handshake phase never sends.
        CloseReason::RequestFailed(_) | CloseReason::Resolved => SessionError::Protocol(
            ProtocolError::InvalidState("handshake closed after a reply before any request"),
        ),
    }
}

fn client_gone(shared: &Shared, e: std::io::Error) -> SessionError {
    inc(&shared.stats.handshake_client_gone);
    SessionError::ClientIo(e)
}

/// Writes whatever the machine has queued.
async fn flush(
    hs: &mut ServerHandshake,
    out: &mut Vec<u8>,
    client: &mut TcpStream,
) -> Result<(), SessionError> {
    out.clear();
    if hs.poll_transmit(out) > 0 {
        client
            .write_all(out)
            .await
            .map_err(SessionError::ClientIo)?;
    }
    Ok(())
}
