//! The accept loop: takes connections from every listener, spawns one task per session,
//! respects the session limit, survives accept errors (pausing only when the process is out
//! of descriptors or memory), counts and logs a session that panicked, and drains on
//! shutdown.

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::relay::TunnelStream;
use crate::server::connection::{self, handshake_deadline, Accepted};
use crate::server::per_client::{ClientSlot, PerClient};
use crate::server::stats::inc;
use crate::server::{proxy_protocol, Server, ServerConfig};

/// Descriptors the derived session limit leaves free: listeners, stdio and logs, the
/// resolver's sockets, files a reload reads.
pub const RESERVED_DESCRIPTORS: u64 = 32;

/// Descriptors one session may hold: the client, the target, and a pipe end while splicing
/// (pipes are pooled and shared, so this is an upper bound in practice).
const DESCRIPTORS_PER_SESSION: u64 = 3;

/// The session limits a server applies (see [`crate::server::Server::session_limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionLimits {
    /// Sessions at once.
    pub sessions: usize,
    /// Sessions at once from one client address (IPv6: one /64).
    pub per_client: usize,
}

/// The limits for `config`, derived from the open-file limit where not set.
pub(crate) fn limits(config: &ServerConfig) -> SessionLimits {
    let sessions = config.max_sessions.unwrap_or_else(|| {
        let descriptors = open_file_limit();
        let usable = descriptors.saturating_sub(RESERVED_DESCRIPTORS) / DESCRIPTORS_PER_SESSION;
        usize::try_from(usable.max(1)).unwrap_or(usize::MAX)
    });
    let per_client = config
        .max_sessions_per_client
        .unwrap_or_else(|| (sessions / 2).max(4).min(sessions));
    SessionLimits {
        sessions,
        per_client,
    }
}

/// The soft limit on open files (what `accept` runs into).
fn open_file_limit() -> u64 {
    #[cfg(unix)]
    if let Ok((soft, _hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
        return soft;
    }
    // Unknown: a common default.
    1024
}

/// Takes up the limits of the configuration in use when a reload changed them.
fn follow_limits(limits: &mut SessionLimits, current: SessionLimits, per_client: &PerClient) {
    if current != *limits {
        *limits = current;
        per_client.set_limit(current.per_client);
        tracing::info!(
            sessions = current.sessions,
            per_client = current.per_client,
            "session limits changed"
        );
    }
}

/// First pause after an accept error that is not about one connection (EMFILE, ENFILE,
/// ENOBUFS); doubled on each further error up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_secs(1);

pin_project_lite::pin_project! {
    /// A session future with its client's slot, given back when the task ends. A hand-written
    /// wrapper, not an `async` block: a block that awaits a future it captured stores it twice
    /// (the capture and the awaited copy), which doubled an idle tunnel's task.
    struct Holding<F> {
        #[pin]
        session: F,
        _slot: ClientSlot,
    }
}

impl<F: Future> Future for Holding<F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<F::Output> {
        self.project().session.poll(cx)
    }
}

/// What stands in front of the listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Front {
    /// Clients connect straight to the listeners.
    Direct,
    /// A load balancer: every connection starts with a PROXY protocol header naming the
    /// real client (see `proxy_protocol`).
    ProxyProtocol,
}

pub(crate) async fn run(
    server: Server,
    listeners: Vec<TcpListener>,
    shutdown: impl Future<Output = ()>,
    front: Front,
) {
    tokio::pin!(shutdown);
    let stats = Arc::clone(server.stats());
    let mut limits = server.session_limits();
    tracing::debug!(
        sessions = limits.sessions,
        per_client = limits.per_client,
        "session limits"
    );
    let per_client = PerClient::new(limits.per_client);
    let inherited: Vec<Inherited> = listeners.iter().map(Inherited::prepare).collect();
    let mut sessions = JoinSet::new();
    let mut pause = FIRST_PAUSE;
    let mut next = 0;
    let mut reloads = server.reloads();
    loop {
        // A reload may change the limits: they apply from the next accept (held sessions
        // above a lowered limit run to their end).
        follow_limits(&mut limits, server.session_limits(), &per_client);
        let room = sessions.len() < limits.sessions;
        tokio::select! {
            () = &mut shutdown => break,
            // A reload: its limits apply from the top of the loop (a raised one at once,
            // even while every session slot is taken).
            Ok(()) = reloads.changed() => {}
            Some(joined) = sessions.join_next(), if !sessions.is_empty() => {
                if let Err(e) = joined {
                    if e.is_panic() {
                        inc(&stats.session_panics);
                        tracing::error!(error = %panic_message(e), "a session panicked (a bug: please report it); the server keeps serving");
                    }
                }
            }
            accepted = accept_any(&listeners, &mut next), if room => match accepted {
                Ok((stream, balancer, _)) if front == Front::ProxyProtocol => {
                    pause = FIRST_PAUSE;
                    // The client's share is counted once its header names it. Read at each
                    // accept: a reload changes the deadline and the limits for new
                    // connections.
                    let shared = server.current();
                    follow_limits(&mut limits, shared.limits, &per_client);
                    let timeout = shared.config.handshake_timeout;
                    let deadline = handshake_deadline(&shared, Instant::now());
                    let one = proxy_protocol::serve_one(server.clone(), Arc::clone(&per_client), stream, balancer, deadline, timeout);
                    sessions.spawn(one);
                }
                Ok((stream, peer, index)) => {
                    pause = FIRST_PAUSE;
                    // The configuration as of now: a reload during the wait applies.
                    let shared = server.current();
                    follow_limits(&mut limits, shared.limits, &per_client);
                    let Some(slot) = per_client.take(peer.ip()) else {
                        // Closed at once: its descriptor is free again for everyone else.
                        inc(&stats.sessions_refused_per_client);
                        if per_client.should_warn() {
                            tracing::warn!(client = %peer, limit = per_client.limit(), "connections closed at once: this client holds its share of the sessions (--max-sessions-per-client); warned at most once a minute");
                        }
                        drop(stream);
                        continue;
                    };
                    inc(&stats.sessions_accepted);
                    let from = inherited.get(index).copied().unwrap_or_default();
                    let accepted = Accepted {
                        peer,
                        local: from.local,
                        nodelay_set: from.nodelay,
                        already_read: Vec::new(),
                        balancers_own: false,
                        deadline: handshake_deadline(&shared, Instant::now()),
                    };
                    let session = connection::run(shared, TunnelStream::Tcp(stream), accepted);
                    sessions.spawn(Holding { session, _slot: slot });
                }
                Err(e) if !out_of_resources(&e) => {
                    tracing::debug!(error = %e, "accept: connection lost before it was taken");
                }
                Err(e) => {
                    inc(&stats.accept_errors);
                    tracing::warn!(error = %e, pause_ms = pause.as_millis() as u64, "accept failed; pausing");
                    // Retrying at once would spin while the condition lasts (no free file
                    // descriptor until a session ends).
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            },
        }
    }
    drop(listeners);
    let running = sessions.len();
    if running == 0 {
        return;
    }
    let grace = server.current().config.shutdown_grace;
    tracing::info!(
        sessions = running,
        grace_ms = grace.as_millis() as u64,
        "shutting down: waiting for running sessions"
    );
    let drained = tokio::time::timeout(grace, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            sessions = sessions.len(),
            "grace period over: closing remaining sessions"
        );
        sessions.abort_all();
        while sessions.join_next().await.is_some() {}
    }
}

/// The next connection from any listener, starting the scan after the last one served so that
/// a busy listener cannot starve the others.
async fn accept_any(
    listeners: &[TcpListener],
    next: &mut usize,
) -> io::Result<(TcpStream, SocketAddr, usize)> {
    poll_fn(|cx| {
        let n = listeners.len();
        for i in 0..n {
            let index = (*next + i) % n;
            let listener = listeners.get(index).expect("index is modulo the length");
            if let Poll::Ready(result) = listener.poll_accept(cx) {
                *next = index + 1;
                return Poll::Ready(result.map(|(stream, peer)| (stream, peer, index)));
            }
        }
        Poll::Pending
    })
    .await
}

/// What every connection a listener accepts has without asking: two system calls per
/// connection that the accept loop saves (a connection rate bound by system calls feels both).
#[derive(Debug, Clone, Copy, Default)]
struct Inherited {
    /// The listener's address when it is one address, not a wildcard: every connection
    /// reached exactly that (no `getsockname` needed).
    local: Option<SocketAddr>,
    /// `TCP_NODELAY` is set on the listener, and Linux copies it to accepted sockets (no
    /// `setsockopt` needed).
    nodelay: bool,
}

impl Inherited {
    fn prepare(listener: &TcpListener) -> Self {
        let local = listener
            .local_addr()
            .ok()
            .filter(|addr| !addr.ip().is_unspecified());
        let nodelay = cfg!(target_os = "linux")
            && socket2::SockRef::from(listener)
                .set_tcp_nodelay(true)
                .is_ok();
        Inherited { local, nodelay }
    }
}

/// Accept errors that say the process or the system is out of something (descriptors,
/// buffers, memory): retrying at once would spin until a session ends. Every other error is
/// about the one connection that died in the queue (reset, aborted, ENETDOWN, EPROTO,
/// EHOSTUNREACH, ...), and the next accept is fine.
#[cfg(target_os = "linux")]
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    ) || e.kind() == io::ErrorKind::OutOfMemory
}

#[cfg(not(target_os = "linux"))]
fn out_of_resources(e: &io::Error) -> bool {
    !matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// What a panicking session said.
fn panic_message(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Binds a listening socket for [`crate::server::Server::serve`]: `SO_REUSEADDR` (a restart
/// does not wait for old connections in TIME_WAIT), IPv6 sockets IPv6-only (so `0.0.0.0:1080`
/// and `[::]:1080` can both be given), a backlog of 1024. Port 0 picks a free port; read it
/// back with `local_addr`.
pub fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::{out_of_resources, Inherited};
    use std::io;

    /// The two system calls the accept loop saves are only saved where they may be: the
    /// accepted socket really has `TCP_NODELAY` (Linux copies it from the listener), and the
    /// local address is taken from a listener bound to one address, never from a wildcard.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_and_a_fixed_local_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let from = Inherited::prepare(&listener);
        let addr = listener.local_addr().expect("addr");
        assert_eq!(from.local, Some(addr));
        assert!(from.nodelay);
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        assert!(accepted.nodelay().expect("getsockopt"), "inherited");
        assert_eq!(accepted.local_addr().expect("getsockname"), addr);

        let wildcard = tokio::net::TcpListener::bind("0.0.0.0:0")
            .await
            .expect("bind");
        assert_eq!(Inherited::prepare(&wildcard).local, None);
    }

    /// Review finding 9: only a shortage of the process or the system pauses accepting; an
    /// error about the one connection that died in the queue does not.
    #[test]
    fn only_resource_shortages_pause_the_accept_loop() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert!(
                out_of_resources(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        for errno in [
            libc::ECONNABORTED,
            libc::ECONNRESET,
            libc::EINTR,
            libc::EAGAIN,
            libc::ENETDOWN,
            libc::EPROTO,
            libc::EHOSTUNREACH,
            libc::ENETUNREACH,
            libc::ENOPROTOOPT,
            libc::EOPNOTSUPP,
            libc::EPERM,
        ] {
            assert!(
                !out_of_resources(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
    }
}
