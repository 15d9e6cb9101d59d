//! One client connection from its first byte to its close: hands an HTTP client (a first
//! byte other than 0x04 or 0x05) to `http`, else drives the [`ServerHandshake`]
//! over the stream with a deadline, checks credentials, asks the policy and the accounting,
//! then hands the request to its command's one path (connect, bind, udp, lookup).
//!
//! The connection owns the handshake buffer: it starts with the bytes the caller already read
//! (a shared port's first byte, what followed a PROXY protocol header), holds 512 bytes,
//! grows only if a message needs more, and is dropped before the relay starts; bytes the
//! client pipelined after its request are handed to the relay, never dropped. No wire parsing
//! and no reply decision happen here: the machine decides, the connection moves bytes.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use socksmith_proto::{
    CloseReason, Command, ProtocolError, ReplyCode, ServerEvent, ServerHandshake, ServerState,
    TargetAddr,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tracing::field::{self, Empty};
use tracing::Instrument as _;

use crate::policy::DenyReason;
use crate::relay::TunnelStream;
use crate::server::accounting::Event;
use crate::server::egress::EgressRequest;
use crate::server::error::SessionError;
use crate::server::log::End;
use crate::server::stats::{down, inc, Gauge};
use crate::server::{admission, bind, connect, http, lookup, udp, Shared};
use crate::session::Session;

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

/// A connection as the caller hands it over.
pub(crate) struct Accepted {
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// The server's address the client reached; `None`: the stream's own (TCP), else
    /// loopback.
    pub(crate) local: Option<SocketAddr>,
    /// `TCP_NODELAY` is already set (inherited from the listener).
    pub(crate) nodelay_set: bool,
    /// Bytes already read from the stream, handled as if read first.
    pub(crate) already_read: Vec<u8>,
    /// The connection is a load balancer's own (a PROXY protocol `LOCAL` or `UNKNOWN`
    /// header): one that ends in its handshake is the balancer's health check, not a client
    /// that gave up (see [`End::balancers_own`]).
    pub(crate) balancers_own: bool,
    /// When the handshake must be done: the handshake timeout from the accept. One deadline
    /// for every stage (a PROXY header, the first byte, the SOCKS handshake or the HTTP
    /// head), so that a client trickling bytes cannot restart it stage by stage.
    pub(crate) deadline: Instant,
}

/// The handshake deadline of a connection accepted at `accepted`: the configured timeout
/// later, or, for a timeout too long for the clock, a time that never comes.
pub(crate) fn handshake_deadline(shared: &Shared, accepted: Instant) -> Instant {
    deadline_after(accepted, shared.config.handshake_timeout)
}

/// `timeout` after `start`, or, for a timeout too long for the clock, a time that never
/// comes (as with `tokio::time::timeout`), not a panic.
pub(crate) fn deadline_after(start: Instant, timeout: Duration) -> Instant {
    start
        .checked_add(timeout)
        .unwrap_or_else(|| start + Duration::from_secs(86_400 * 365 * 30))
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
        client: &mut TunnelStream,
        code: ReplyCode,
        bound: TargetAddr,
    ) -> Result<(), SessionError> {
        let unsendable =
            (code.is_success() && self.hs.check_bound(&bound).is_err()).then(|| bound.clone());
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
        client: &mut TunnelStream,
        error: SessionError,
    ) -> SessionError {
        let _ = self
            .send(client, error.reply_code(), TargetAddr::UNSPECIFIED)
            .await;
        error
    }
}

/// What a command's path gets: the shared state, the request, the client and the reply
/// machine.
pub(crate) struct Request<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) session: &'a Session,
    pub(crate) client: TunnelStream,
    pub(crate) replier: Replier,
    /// What the client sent after its request.
    pub(crate) pending: Vec<u8>,
}

impl Request<'_> {
    /// What the egress is asked with.
    pub(crate) fn egress_request(&self) -> EgressRequest<'_> {
        EgressRequest {
            session: self.session,
            policy: &*self.shared.config.policy,
        }
    }
}

/// Serves one connection to its end, then logs it.
///
/// Everything logged while serving (the debug lines of bind, udp, the egress) carries the
/// session's span: the client, then the user and the target once known. At the default
/// level the span is disabled and costs a check per poll; the log line is written outside
/// it, with its own fields. The relay, which logs nothing, runs outside the span: a span is
/// 40 bytes that every idle tunnel would carry.
///
/// A plain function returning the task's future, so that the future keeps no copy of the
/// client stream it was given: an idle tunnel's task holds the relay's state, the log line's
/// `End` and little else. The shared state comes back out of the boxed part (in `Closing`)
/// rather than being captured, for the same reason (a captured value is kept for the task's
/// whole life).
pub(crate) fn run(
    shared: Arc<Shared>,
    client: TunnelStream,
    accepted: Accepted,
) -> impl Future<Output = ()> + Send {
    let span =
        tracing::debug_span!("session", client = %accepted.peer, user = Empty, target = Empty);
    // Everything before the relay runs boxed and is freed when it returns; it hands `shared`
    // back inside `Closing`, so that the task keeps one handle on it.
    let preparing = Box::pin(prepare(shared, client, accepted).instrument(span));
    async move {
        // In a block, so that nothing but `closing` and `tunnel` outlives it into the relay.
        let (mut closing, tunnel) = {
            let (mut closing, prepared) = preparing.await;
            match prepared {
                Ok(Some(tunnel)) => (closing, tunnel),
                Ok(None) => return closing.finish(None),
                Err(e) => return closing.finish(Some(&e)),
            }
        };
        // Whatever ends the relay, a result or the task being cut at shutdown, the session
        // is logged and its bytes counted (see `Closing`).
        let Closing { shared, end, .. } = &mut closing;
        let result = connect::relay_tunnel(shared, tunnel, &mut end.meter).await;
        closing.finish(result.as_ref().err());
    }
}

/// A session's log line, written once: by [`Closing::finish`] when it ends, or on drop when
/// the task is cut before (the server's shutdown grace ran out), with the bytes the relay had
/// moved by then. It also holds the session's place in the active-sessions gauge.
struct Closing {
    shared: Arc<Shared>,
    started: Instant,
    end: End,
    finished: bool,
}

impl Closing {
    fn finish(&mut self, error: Option<&SessionError>) {
        self.finished = true;
        self.end.finish(&self.shared, self.started.elapsed(), error);
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        if !self.finished {
            let cut = if std::thread::panicking() {
                SessionError::Panicked("while relaying".into())
            } else {
                SessionError::AbortedAtShutdown
            };
            self.finish(Some(&cut));
        }
        // Handed over by `prepare`.
        down(&self.shared.stats.sessions_active);
    }
}

/// Everything up to the relay, handing back the session's `Closing` with the `End` it
/// filled in.
async fn prepare(
    shared: Arc<Shared>,
    client: TunnelStream,
    accepted: Accepted,
) -> (Closing, Result<Option<connect::Tunnel>, SessionError>) {
    let started = Instant::now();
    // Up from the first byte; `Closing` takes it over and brings it down.
    let active = Gauge::up(&shared.stats.sessions_active);
    let mut end = End::new(accepted.peer);
    end.balancers_own = accepted.balancers_own;
    if let Some(accounting) = &shared.config.accounting {
        accounting.record(&Event::Accepted {
            client: accepted.peer,
        });
    }
    let served = serve(&shared, client, accepted, &mut end).await;
    active.hand_over();
    let closing = Closing {
        shared,
        started,
        end,
        finished: false,
    };
    (closing, served)
}

/// The address a stream without one of its own reached: loopback, in the client's family.
fn local_fallback(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0),
    }
}

async fn serve(
    shared: &Arc<Shared>,
    mut client: TunnelStream,
    accepted: Accepted,
    end: &mut End,
) -> Result<Option<connect::Tunnel>, SessionError> {
    let Accepted {
        peer,
        local,
        nodelay_set,
        already_read,
        balancers_own: _,
        deadline,
    } = accepted;
    if !shared.config.allow_from.allows(peer.ip()) {
        // Closed before anything is read or sent: a stranger learns nothing, not even that
        // this is a proxy.
        inc(&shared.stats.clients_not_allowed);
        return Err(SessionError::ClientNotAllowed);
    }
    if let (TunnelStream::Tcp(tcp), false) = (&client, nodelay_set) {
        // Interactive protocols run through tunnels: never delay small writes.
        tcp.set_nodelay(true).map_err(SessionError::ClientIo)?;
    }
    let local = match (&client, local) {
        (_, Some(local)) => local,
        (TunnelStream::Tcp(tcp), None) => tcp.local_addr().map_err(SessionError::ClientIo)?,
        (TunnelStream::Other(_), None) => local_fallback(peer),
    };
    // One port for both: the first byte tells SOCKS (0x04, 0x05) from HTTP.
    let already_read = match http::sniff(shared, &mut client, already_read, deadline, end).await? {
        http::Sniffed::Socks(already_read) => already_read,
        http::Sniffed::Http(head) => {
            let connection = http::Connection {
                peer,
                local,
                already_read: head,
                deadline,
            };
            return Box::pin(http::serve(shared, client, connection, end)).await;
        }
    };
    let (replier, request, pending) = match Box::pin(tokio::time::timeout_at(
        deadline,
        handshake(shared, &mut client, already_read, peer, end),
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

    let user = match (end.take_user(), request.user_id) {
        (Some(user), _) => Some(user),
        (None, Some(id)) if !id.is_empty() => Some(printable_user(&id)),
        (None, _) => None,
    };
    // The session lives in `end`, where the log line finds it; no copy is made.
    let (session, meter) = end.begin(Session {
        client: peer,
        local,
        user,
        version: request.version,
        http: false,
        command: request.command,
        target: request.target,
    });
    let span = tracing::Span::current();
    if let Some(user) = &session.user {
        span.record("user", user.as_str());
    }
    span.record("target", field::display(&session.target));

    let mut request = Request {
        shared,
        session,
        client,
        replier,
        pending,
    };
    match admission::admit(shared, session) {
        Ok(opened) => meter.guard = opened,
        Err(reason) => {
            let refused = SessionError::Denied(reason);
            return Err(request.replier.refuse(&mut request.client, refused).await);
        }
    }

    match session.command {
        // The caller relays, outside this (boxed, then freed) future.
        Command::Connect => connect::open(request).await.map(Some),
        Command::Resolve | Command::ResolvePtr => {
            Box::pin(lookup::answer(request)).await?;
            Ok(None)
        }
        Command::Bind => {
            Box::pin(bind::bind(request, meter)).await?;
            Ok(None)
        }
        Command::UdpAssociate => {
            Box::pin(udp::associate(request, &mut meter.traffic)).await?;
            Ok(None)
        }
        Command::Unknown(_) => {
            unreachable!("the handshake machine answers unknown commands itself")
        }
    }
}

/// Refuses a request the policy or a limit denied: counted, heard by the accounting,
/// answered 0x02 (SOCKS4: 0x5B).
pub(crate) async fn deny(request: &mut Request<'_>, reason: DenyReason) -> SessionError {
    let shared = request.shared;
    inc(&shared.stats.policy_denied);
    if let Some(accounting) = &shared.config.accounting {
        accounting.record(&Event::Denied {
            session: request.session,
            reason: &reason,
        });
    }
    request
        .replier
        .refuse(&mut request.client, SessionError::Denied(reason))
        .await
}

/// Reads and answers until the machine hands out a request. Returns the machine (to send the
/// reply with), the request and the bytes the client sent after it.
async fn handshake(
    shared: &Shared,
    client: &mut TunnelStream,
    already_read: Vec<u8>,
    peer: SocketAddr,
    end: &mut End,
) -> Result<(Replier, socksmith_proto::IncomingRequest, Vec<u8>), SessionError> {
    let mut hs = ServerHandshake::new(shared.handshake);
    let mut buf = already_read;
    buf.reserve(INITIAL_BUFFER.saturating_sub(buf.len()));
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
                    // A client that keeps failing waits longer for each answer (inside the
                    // handshake deadline); other clients are not affected.
                    let wait = shared.backoff.delay_for(peer.ip());
                    if !wait.is_zero() {
                        inc(&shared.stats.auth_backoff_delays);
                        tokio::time::sleep(wait).await;
                    }
                    let verdict = match &shared.config.auth {
                        Some(auth) => auth.authenticate(&credentials).await,
                        None => None,
                    };
                    let ok = verdict.is_some();
                    if ok {
                        shared.backoff.succeeded(peer.ip());
                    } else {
                        shared.backoff.failed(peer.ip());
                    }
                    end.set_user(match verdict {
                        Some(name) => printable_user(name.as_bytes()),
                        // What a client typed as its name may be a password typed in the
                        // wrong field: the log gets a keyed hash, never the bytes.
                        None => claimed_user_hash(credentials.username()),
                    });
                    if !ok {
                        if let Some(accounting) = &shared.config.accounting {
                            accounting.record(&Event::AuthFailed { client: peer });
                        }
                    }
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
            buf.reserve(buf.capacity().max(INITIAL_BUFFER));
        }
        let n = client
            .read_buf(&mut buf)
            .await
            .map_err(|e| client_gone(shared, end, SessionError::ClientIo(e)))?;
        if n == 0 {
            return Err(client_gone(shared, end, SessionError::ClientClosed));
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
            SessionError::AuthenticationFailed(end.user().unwrap_or_default().to_owned())
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
pub(crate) fn printable_user(name: &[u8]) -> String {
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

/// A name that failed to authenticate, as the log shows it: `?` and 8 hex digits of a hash
/// keyed per process. The same claimed name gives the same mark within one run (repeated
/// guessing is visible), and nothing about the bytes can be read back from it.
pub(crate) fn claimed_user_hash(name: &[u8]) -> String {
    static KEY: OnceLock<RandomState> = OnceLock::new();
    let hash = KEY.get_or_init(RandomState::new).hash_one(name);
    format!("?{:08x}", hash >> 32)
}

/// Counts a client that closed or failed in its handshake (`error`), unless it was the load
/// balancer's health check.
fn client_gone(shared: &Shared, end: &End, error: SessionError) -> SessionError {
    if !end.balancers_own {
        inc(&shared.stats.handshake_client_gone);
    }
    error
}

/// Ends a session after its last (failure) reply without a reset. A client may have
/// pipelined more than the session read (payload after a refused request); closing a socket
/// with unread bytes makes the kernel send RST instead of FIN, and some stacks discard the
/// reply they received when the reset comes. So: shut down the write half (FIN after the
/// reply), then read and drop what the client still sends until it closes, at most
/// [`LINGER_BYTES`] within [`LINGER_TIME`].
pub(crate) async fn linger(client: &mut TunnelStream) {
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
    client: &mut TunnelStream,
) -> Result<(), SessionError> {
    out.clear();
    if hs.poll_transmit(out) > 0 {
        client
            .write_all(out)
            .await
            .map_err(SessionError::ClientIo)?;
        client.flush().await.map_err(SessionError::ClientIo)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{claimed_user_hash, printable_user};

    /// The session task's future is what an idle tunnel costs beyond its sockets: the
    /// handshake, dialing and reply state must be gone (boxed and freed) by the relay. A
    /// release-build check (debug builds lay futures out differently): `scripts/bench` runs
    /// it with `cargo test --release -p socksmith --lib session_task`. The bound is just
    /// above the size measured; raise it only knowingly.
    #[cfg(not(debug_assertions))]
    #[tokio::test]
    async fn a_session_task_keeps_little_state_besides_the_relay() {
        use std::sync::Arc;

        use crate::relay::TunnelStream;
        use crate::server::connection::{run, Accepted};

        let server = crate::server::Server::new(crate::server::ServerConfig::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let client = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let peer = client.local_addr().expect("peer");
        let accepted = Accepted {
            peer,
            local: None,
            nodelay_set: false,
            already_read: Vec::new(),
            balancers_own: false,
            deadline: tokio::time::Instant::now() + std::time::Duration::from_secs(10),
        };
        let task = run(
            Arc::clone(&server.current()),
            TunnelStream::Tcp(client),
            accepted,
        );
        let size = std::mem::size_of_val(&task);
        println!("session task future: {size} bytes");
        assert!(size <= SESSION_TASK_BOUND, "session future is {size} bytes");
    }

    /// tokio keeps a task in a 128-byte-aligned cell with 96 bytes of its own; the listener
    /// adds the client's 24-byte slot. 640 + 24 + 96 = 760 keeps an idle tunnel's task cell at
    /// 768 bytes; at 648 it would take 896.
    #[cfg(not(debug_assertions))]
    const SESSION_TASK_BOUND: usize = 640;

    #[test]
    fn user_names_cannot_forge_log_lines() {
        assert_eq!(printable_user(b"alice"), "alice");
        assert_eq!(
            printable_user(b"evil\nINFO forged\r\x1b[31m"),
            "evil\\nINFO forged\\r\\u{1b}[31m"
        );
        assert_eq!(printable_user(b"caf\xc3\xa9 \xff"), "caf\u{e9} \u{fffd}");
    }

    #[test]
    fn a_failed_name_is_logged_as_a_keyed_hash() {
        let mark = claimed_user_hash(b"hunter2-typed-as-name");
        assert_eq!(mark.len(), 9, "{mark}");
        assert!(mark.starts_with('?') && !mark.contains("hunter2"), "{mark}");
        assert_eq!(mark, claimed_user_hash(b"hunter2-typed-as-name"));
        assert_ne!(mark, claimed_user_hash(b"another"));
    }
}
