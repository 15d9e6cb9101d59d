//! The SOCKS4, SOCKS4a and SOCKS5 server (with HTTP proxy requests on the same port): [`Server`] serves listeners the caller bound until
//! a shutdown future completes.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use socksmith::server::{Server, ServerConfig};
//! use tokio::net::TcpListener;
//!
//! let listener = TcpListener::bind("127.0.0.1:0").await?;
//! println!("listening on {}", listener.local_addr()?);
//! let server = Server::new(ServerConfig::default());
//! server.serve(vec![listener], async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! Any stream can carry a session, not only an accepted TCP connection: a program with its
//! own accept loop (a Unix socket, TLS, a port shared with another protocol) hands each
//! connection to [`Server::serve_connection`], with the bytes it already read from it.
//!
//! Layout (one file per concern):
//! - `listener`: the accept loop (limits, accept errors, caught panics, drain at shutdown),
//!   for direct listeners and for those behind a balancer (`proxy_protocol` reads the
//!   header); `per_client` counts what each client address holds;
//! - `connection`: one client connection: the first byte (SOCKS or `http/`), the handshake
//!   under its deadline, authentication (`auth`, `users_file`, `backoff` after failures),
//!   then one path per command; `log` writes its one log line;
//! - `admission`: may this request go ahead (hostname requirement, blocklists, policy,
//!   limits), for SOCKS and HTTP alike; `sniff` reads the name behind an address-only CONNECT;
//! - `connect` (CONNECT and the relay), `lookup` (RESOLVE, RESOLVE_PTR), `bind`, `udp` (with
//!   DNS answers for listed names): the commands, each asking the egress and never knowing
//!   which one it is;
//! - `egress/`: the [`Egress`] seam, [`Direct`] (from this host) and [`Upstream`] (through
//!   parent proxies);
//! - `accounting` (the hook limits and metrics plug into), `config`, `error`, `stats`.
//!
//! The wire protocol is decided by `socksmith-proto`'s
//! [`ServerHandshake`](socksmith_proto::ServerHandshake); this module moves bytes.
//! Client-side code lives in `crate::client`; the server uses it only through [`Upstream`].

pub mod accounting;
mod admission;
mod auth;
mod backoff;
mod bind;
mod config;
mod connect;
mod connection;
mod egress;
mod error;
mod http;
mod listener;
mod log;
mod lookup;
mod per_client;
pub mod proxy_protocol;
mod sniff;
mod stats;
mod udp;
mod users_file;

pub use accounting::{Accounting, AccountingList, Traffic, TunnelGuard};
pub use auth::{AuthFuture, Authenticator, UserError, Users};
pub use config::ServerConfig;
pub use egress::direct::LOOKUPS_PER_CLIENT;
pub use egress::{
    Connected, Direct, Egress, EgressError, EgressFuture, EgressRequest, PendingBind, UdpEgress,
    Upstream,
};
pub use error::{LookupError, ServerError, SessionError};
#[doc(hidden)]
pub use http::fuzzing as http_fuzzing;
pub use http::HttpError;
pub use listener::{bind_listener, SessionLimits};
pub use stats::{Stats, StatsSnapshot};
pub use users_file::{
    hash_password, HashPasswordError, HashedUsers, LineProblem, UsersFile, UsersFileError,
};

pub use crate::relay::{AsyncStream, TunnelStream};
pub use crate::session::Session;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};

use socksmith_proto::{AuthPolicy, HandshakeConfig};
use tokio::net::TcpListener;

use crate::relay::RelayOptions;
use crate::server::backoff::AuthBackoff;

/// A SOCKS server: its configuration and counters. Cheap to clone (an `Arc` inside); clones
/// share the counters and the configuration, and a [`Server::reload`] reaches them all.
#[derive(Debug, Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// What new sessions use; replaced whole by a reload.
    current: RwLock<Arc<Shared>>,
    stats: Arc<Stats>,
    /// Failed logins per client address; kept across reloads.
    backoff: Arc<AuthBackoff>,
    /// Bumped by each reload, so that an accept loop waiting at its session limit takes up
    /// a raised one at once.
    reloads: tokio::sync::watch::Sender<u64>,
}

/// Client addresses the login back-off remembers at most.
const BACKOFF_ENTRIES: usize = 65_536;

/// What every session of a server reads: one configuration, with what is derived from it.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    /// The session limits `config` gives (computed once: unset, they read the open-file
    /// limit).
    pub(crate) limits: SessionLimits,
    pub(crate) stats: Arc<Stats>,
    pub(crate) handshake: HandshakeConfig,
    pub(crate) relay: RelayOptions,
    pub(crate) egress: Arc<dyn Egress>,
    pub(crate) backoff: Arc<AuthBackoff>,
}

impl Shared {
    fn new(config: ServerConfig, stats: Arc<Stats>, backoff: Arc<AuthBackoff>) -> Self {
        let handshake = HandshakeConfig {
            auth: match config.auth {
                Some(_) => AuthPolicy::UsernamePassword,
                None => AuthPolicy::None,
            },
            allow_socks4: config.socks4_allowed(),
        };
        let relay = RelayOptions {
            idle_timeout: config.idle_timeout,
            zero_copy: config.zero_copy,
            ..RelayOptions::default()
        };
        let egress = match &config.egress {
            Some(egress) => Arc::clone(egress),
            None => Arc::new(
                Direct::new(
                    Arc::clone(&config.resolver),
                    config.resolve_timeout,
                    config.connect_timeout,
                )
                .with_source_addresses(&config.outbound_addresses)
                .with_advertised_address(config.udp_advertise),
            ),
        };
        Shared {
            limits: listener::limits(&config),
            config,
            stats,
            handshake,
            relay,
            egress,
            backoff,
        }
    }
}

impl Server {
    /// A server with this configuration.
    pub fn new(config: ServerConfig) -> Self {
        let stats = Arc::new(Stats::default());
        let backoff = Arc::new(AuthBackoff::new(BACKOFF_ENTRIES));
        let shared = Shared::new(config, Arc::clone(&stats), Arc::clone(&backoff));
        Server {
            inner: Arc::new(Inner {
                current: RwLock::new(Arc::new(shared)),
                stats,
                backoff,
                reloads: tokio::sync::watch::Sender::new(0),
            }),
        }
    }

    /// The configuration new sessions get.
    pub fn config(&self) -> ServerConfig {
        self.current().config.clone()
    }

    /// Replaces the configuration for sessions that start from now on; running sessions and
    /// tunnels keep the one they started with, byte for byte. The counters carry on. The
    /// listeners stay as they are (their addresses are not part of the configuration).
    pub fn reload(&self, config: ServerConfig) {
        let shared = Arc::new(Shared::new(
            config,
            Arc::clone(&self.inner.stats),
            Arc::clone(&self.inner.backoff),
        ));
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = shared;
        self.inner.reloads.send_modify(|n| *n += 1);
    }

    /// Changes each time the configuration is replaced ([`Server::reload`]).
    pub(crate) fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.reloads.subscribe()
    }

    /// The session limits [`Server::serve`] applies: [`ServerConfig::max_sessions`] and
    /// [`ServerConfig::max_sessions_per_client`], or, where they are `None`, what they derive
    /// from the process's open-file limit: a session holds up to three descriptors (client,
    /// target, and a pipe end while splicing), and a reserve of descriptors stays free
    /// for listeners, logs, name lookups and the odd file (32).
    pub fn session_limits(&self) -> SessionLimits {
        self.current().limits
    }

    /// How many client addresses the login back-off remembers now (each failed to
    /// authenticate recently; see [`StatsSnapshot::auth_backoff_delays`] for the waits).
    pub fn clients_in_backoff(&self) -> usize {
        self.inner.backoff.tracked()
    }

    /// The counters, shared with every session (keep the `Arc` to read them while serving).
    pub fn stats(&self) -> &Arc<Stats> {
        &self.inner.stats
    }

    pub(crate) fn current(&self) -> Arc<Shared> {
        Arc::clone(
            &self
                .inner
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Serves one connection to its end: a SOCKS4, SOCKS4a or SOCKS5 session (or HTTP proxy
    /// requests, see [`ServerConfig::http`]) over any byte stream (a Unix socket, TLS, an in-memory pipe, a TCP connection accepted elsewhere),
    /// with every command, the policy, the accounting and the log line as for the server's
    /// own listeners. `peer` is the client's address for the policy and the log (for a stream
    /// without one, a loopback address says "local").
    ///
    /// A [`tokio::net::TcpStream`] is recognised and relayed with `splice(2)`.
    ///
    /// ```
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// use socksmith::server::{Server, ServerConfig};
    ///
    /// let server = Server::new(ServerConfig::default());
    /// let (client_end, server_end) = tokio::io::duplex(4096);
    /// let peer = "127.0.0.1:40000".parse()?;
    /// tokio::spawn(async move { server.serve_connection(server_end, peer).await });
    /// // ... speak SOCKS on `client_end` ...
    /// # drop(client_end);
    /// # Ok(()) }
    /// ```
    pub async fn serve_connection<S>(&self, stream: S, peer: SocketAddr)
    where
        S: AsyncStream + 'static,
    {
        self.serve_prefixed(stream, peer, Vec::new()).await
    }

    /// [`Server::serve_connection`] for a stream some of whose bytes were already read (to
    /// tell SOCKS from another protocol on a shared port, or past a PROXY protocol header):
    /// `already_read` is handled as if it came first from the stream.
    pub async fn serve_prefixed<S>(&self, stream: S, peer: SocketAddr, already_read: Vec<u8>)
    where
        S: AsyncStream + 'static,
    {
        self.serve_accepted(
            stream,
            connection::Accepted {
                peer,
                local: None,
                nodelay_set: false,
                already_read,
                balancers_own: false,
                deadline: connection::handshake_deadline(
                    &self.current(),
                    tokio::time::Instant::now(),
                ),
            },
        )
        .await
    }

    /// Serves a connection as its caller describes it.
    pub(crate) async fn serve_accepted<S>(&self, stream: S, accepted: connection::Accepted)
    where
        S: AsyncStream + 'static,
    {
        connection::run(self.current(), TunnelStream::new(stream), accepted).await
    }

    /// The checks [`Server::serve`] makes before accepting anything: at least one listener,
    /// and no open proxy (see [`ServerConfig::allow_open_proxy`]). Call it to fail before
    /// announcing the listeners.
    pub fn check_listeners(&self, listeners: &[TcpListener]) -> Result<(), ServerError> {
        let addrs = listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<Result<Vec<_>, _>>()?;
        self.check_addresses(&addrs)
    }

    /// [`Server::check_listeners`] for the addresses about to be bound: call it before
    /// binding, so that a refused configuration never listens, not even for a moment.
    ///
    /// A listener on a non-loopback address is an open proxy when a client can get in
    /// without credentials: no authentication is configured, or SOCKS4 (which carries no
    /// password) is served beside it ([`ServerConfig::allow_socks4`]).
    pub fn check_addresses(&self, addrs: &[SocketAddr]) -> Result<(), ServerError> {
        if addrs.is_empty() {
            return Err(ServerError::NoListeners);
        }
        let shared = self.current();
        let config = &shared.config;
        let open = config.auth.is_none() || config.socks4_allowed();
        if !open || config.allow_open_proxy {
            return Ok(());
        }
        match addrs
            .iter()
            .find(|addr| !addr.ip().to_canonical().is_loopback())
        {
            None => Ok(()),
            Some(&addr) if config.auth.is_none() => Err(ServerError::OpenProxy { addr }),
            Some(&addr) => Err(ServerError::OpenProxySocks4 { addr }),
        }
    }

    /// Serves `listeners` until `shutdown` completes, then stops accepting, gives running
    /// sessions [`ServerConfig::shutdown_grace`] to finish, cuts the rest and returns.
    ///
    /// Refuses to start ([`ServerError::OpenProxy`], [`ServerError::OpenProxySocks4`]) when
    /// a listener is on a non-loopback address, clients can get in without credentials (no
    /// authentication, or SOCKS4 served) and [`ServerConfig::allow_open_proxy`] is not set. Accept errors (out of file descriptors, say) are logged and retried after a
    /// short pause; they never end the server.
    pub async fn serve(
        &self,
        listeners: Vec<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        self.check_listeners(&listeners)?;
        listener::run(self.clone(), listeners, shutdown, listener::Front::Direct).await;
        Ok(())
    }
}
