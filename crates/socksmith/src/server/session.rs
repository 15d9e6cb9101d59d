//! One client connection from accept to close: drives the [`ServerHandshake`] over the
//! socket with a deadline, checks credentials, asks the policy, hands the request to the
//! command's module (connect, bind, udp) and writes the one log line of the session.
//!
//! The session owns the handshake buffer: 512 bytes, grown only if a message needs more, and
//! dropped before the relay starts; bytes the client pipelined after its request are handed
//! to the relay, never dropped. No wire parsing and no reply decision happen here: the machine
//! decides, the session moves bytes.

use std::fmt;
use std::future::Future;
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
use tracing::field::{self, Empty};
use tracing::Instrument as _;

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

/// After a failure reply, how long and how much the session keeps reading what the client
/// sent past the request before closing (see [`linger`]). Bounded so that refused clients
/// cannot hold sessions under load.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

/// What the server knows about a session once its request is decoded: what the policy
/// decides on and what the log line reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The client's address.
    pub client: SocketAddr,
    /// The server address the client connected to.
    pub local: SocketAddr,
    /// The RFC 1929 user that authenticated, or the SOCKS4 user id (an unverified claim, see
    /// `version`); `None` for anonymous SOCKS5 and an empty SOCKS4 user id. Invalid UTF-8 is
    /// replaced and control characters are escaped (`\n`, `\u{1b}`), as in a domain name's
    /// `Display`: the name goes into log lines, which it must not be able to forge.
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
    /// Queues a reply with the machine and writes it to the client. A success the client's
    /// protocol cannot carry (a SOCKS4 BIND or RESOLVE answer that is not IPv4) is refused by
    /// the machine instead: its failure reply is written and the error says why.
    pub(crate) async fn send(
        &mut self,
        client: &mut TcpStream,
        code: ReplyCode,
        bound: TargetAddr,
    ) -> Result<(), SessionError> {
        let unsendable = (code.is_success() && !self.can_carry(&bound)).then(|| bound.clone());
        // Any other error is the refusal above, its failure reply queued.
        if let Err(ProtocolError::InvalidState(state)) = self.hs.reply(code, bound) {
            unreachable!("the session replies only while the machine awaits a reply: {state}")
        }
        flush(&mut self.hs, &mut self.out, client).await?;
        if !code.is_success() || unsendable.is_some() {
            // The last reply: the session ends after it.
            linger(client).await;
        }
        match unsendable {
            Some(bound) => Err(SessionError::Socks4Unsendable(bound)),
            None => Ok(()),
        }
    }

    /// Answers a failed request with the reply its error deserves
    /// ([`SessionError::reply_code`]) and hands the error back, for
    /// `return Err(replier.refuse(&mut client, error).await)`. If the reply cannot be
    /// written, the client is gone: the original error still says why the session ended.
    pub(crate) async fn refuse(
        &mut self,
        client: &mut TcpStream,
        error: SessionError,
    ) -> SessionError {
        let _ = self
            .send(client, error.reply_code(), TargetAddr::UNSPECIFIED)
            .await;
        error
    }

    /// Whether a success reply now can carry `bound` (the machine decides: see
    /// [`ServerHandshake::check_bound`]).
    pub(crate) fn can_carry(&self, bound: &TargetAddr) -> bool {
        self.hs.check_bound(bound).is_ok()
    }
}

/// Serves one accepted connection to its end, then logs it.
///
/// Everything logged while serving (the debug lines of bind, udp, the outbound) carries the
/// session's span: the client, then the user and the target once known. At the default
/// level the span is disabled and costs a check per poll; the log line is written outside
/// it, with its own fields.
///
/// A plain function returning the task's future, so that the future keeps no copy of the
/// client stream it was given: an idle tunnel's task holds the relay's state, the log line's
/// `End` and little else.
pub(crate) fn run(
    shared: Arc<Shared>,
    client: TcpStream,
    peer: SocketAddr,
) -> impl Future<Output = ()> + Send {
    let span = tracing::debug_span!("session", client = %peer, user = Empty, target = Empty);
    // Everything before the relay runs boxed and is freed when it returns.
    let preparing = Box::pin(prepare(Arc::clone(&shared), client, peer).instrument(span.clone()));
    async move {
        let _active = Gauge::up(&shared.stats.sessions_active);
        let started = Instant::now();
        // In a block, so that nothing but `end` and `tunnel` outlives it into the relay.
        let (mut end, tunnel) = {
            let (end, prepared) = preparing.await;
            match prepared {
                Ok(Some(tunnel)) => (end, tunnel),
                Ok(None) => {
                    end.log(peer, started.elapsed(), None);
                    return;
                }
                Err(e) => {
                    end.log(peer, started.elapsed(), Some(&e));
                    return;
                }
            }
        };
        let result = connect::relay_tunnel(&shared, tunnel, &mut end.traffic)
            .instrument(span)
            .await;
        end.log(peer, started.elapsed(), result.as_ref().err());
    }
}

/// Everything up to the relay, with the `End` it fills in.
async fn prepare(
    shared: Arc<Shared>,
    client: TcpStream,
    peer: SocketAddr,
) -> (End, Result<Option<connect::Tunnel>, SessionError>) {
    let mut end = End::default();
    let served = serve(&shared, client, peer, &mut end).await;
    (end, served)
}

/// What the log line needs, filled in as the session goes.
#[derive(Default)]
struct End {
    version: Option<Version>,
    /// The handshake ended with a reply to the client (0xFF, an authentication failure,
    /// 0x5B, an error reply): linger before closing.
    replied: bool,
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
) -> Result<Option<connect::Tunnel>, SessionError> {
    // Interactive protocols run through tunnels: never delay small writes.
    client.set_nodelay(true).map_err(SessionError::ClientIo)?;
    let local = client.local_addr().map_err(SessionError::ClientIo)?;
    // `timeout`, not `Instant + Duration`: a huge configured timeout means "never", not a
    // panic.
    let (mut replier, request, pending) = match Box::pin(tokio::time::timeout(
        shared.config.handshake_timeout,
        handshake(shared, &mut client, end),
    ))
    .await
    {
        Ok(Ok(handshaken)) => handshaken,
        Ok(Err(e)) => {
            // Outside the handshake deadline, which must not cut this short.
            if end.replied {
                linger(&mut client).await;
            }
            return Err(e);
        }
        Err(_) => {
            inc(&shared.stats.handshake_timeouts);
            return Err(SessionError::HandshakeTimeout(
                shared.config.handshake_timeout,
            ));
        }
    };

    let user = match (end.user.take(), request.user_id) {
        (Some(user), _) => Some(user),
        (None, Some(id)) if !id.is_empty() => Some(printable_user(&id)),
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
    let span = tracing::Span::current();
    if let Some(user) = &session.user {
        span.record("user", user.as_str());
    }
    span.record("target", field::display(&session.target));

    if let Decision::Deny(reason) = shared.config.policy.check_request(session) {
        inc(&shared.stats.policy_denied);
        let denied = SessionError::Denied(reason);
        return Err(replier.refuse(&mut client, denied).await);
    }

    match session.command {
        Command::Connect => {
            // The caller relays, outside this (boxed, then freed) future.
            let (client, target) = connect::open(shared, session, client, replier).await?;
            Ok(Some(connect::Tunnel {
                client,
                target,
                pending,
            }))
        }
        Command::Resolve | Command::ResolvePtr => {
            Box::pin(connect::resolve(shared, session, client, replier)).await?;
            Ok(None)
        }
        Command::Bind => {
            Box::pin(bind::bind(
                shared, session, client, replier, pending, traffic,
            ))
            .await?;
            Ok(None)
        }
        Command::UdpAssociate => {
            Box::pin(udp::associate(shared, session, client, replier, traffic)).await?;
            Ok(None)
        }
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
                end.replied = e.reply_code().is_some();
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
                    let verdict = match &shared.config.auth {
                        Some(auth) => auth.authenticate(&credentials).await,
                        None => None,
                    };
                    let ok = verdict.is_some();
                    // Logged, failed or not: escaped before anything sees it.
                    end.user = Some(printable_user(match &verdict {
                        Some(name) => name.as_bytes(),
                        None => credentials.username(),
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
            // Every close of the handshake phase follows a reply (0xFF, a failed status, 0x5B).
            end.replied = true;
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
        CloseReason::RequestFailed(_) | CloseReason::Resolved => {
            unreachable!("these follow a reply, which the handshake phase never sends")
        }
    }
}

/// A user name or SOCKS4 user id fit for a log line: invalid UTF-8 replaced, control
/// characters escaped the way [`socksmith_proto::DomainName`]'s `Display` escapes them, so a
/// client cannot forge log lines with a `\n` in its name.
fn printable_user(name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    if !name.chars().any(char::is_control) {
        return name.into_owned();
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn client_gone(shared: &Shared, e: std::io::Error) -> SessionError {
    inc(&shared.stats.handshake_client_gone);
    SessionError::ClientIo(e)
}

/// Ends a session after its last (failure) reply without a reset. A client may have
/// pipelined more than the session read (payload after a refused request); closing a socket
/// with unread bytes makes the kernel send RST instead of FIN, and some stacks discard the
/// reply they received when the reset comes. So: shut down the write half (FIN after the
/// reply), then read and drop what the client still sends until it closes, at most
/// [`LINGER_BYTES`] within [`LINGER_TIME`].
async fn linger(client: &mut TcpStream) {
    if client.shutdown().await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 4096];
    let mut left = LINGER_BYTES;
    let drain = async {
        while left > 0 {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
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

#[cfg(test)]
mod tests {
    use super::printable_user;
    use std::sync::Arc;

    /// The session task's future is what an idle tunnel costs beyond its sockets: the
    /// handshake, dialing and reply state must be gone (boxed and freed) by the relay. The
    /// bound is just above the size measured (debug build) once no frame kept a copy of the
    /// streams beside the relay's: 808 bytes, down from 1,912; raise it only knowingly.
    #[tokio::test]
    async fn a_session_task_keeps_little_state_besides_the_relay() {
        let server = crate::server::Server::new(crate::server::ServerConfig::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let client = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let peer = client.local_addr().expect("peer");
        let task = super::run(Arc::clone(&server.shared), client, peer);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 850, "session future is {size} bytes");
    }

    #[test]
    fn user_names_cannot_forge_log_lines() {
        assert_eq!(printable_user(b"alice"), "alice");
        assert_eq!(
            printable_user(b"evil\nINFO forged\r\x1b[31m"),
            "evil\\nINFO forged\\r\\u{1b}[31m"
        );
        assert_eq!(printable_user(b"caf\xc3\xa9 \xff"), "caf\u{e9} \u{fffd}");
    }
}
