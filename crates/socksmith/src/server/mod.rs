//! The SOCKS4, SOCKS4a and SOCKS5 server: [`Server`] serves listeners the caller bound until
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
//! Layout: `listener` (accept loop, limits, drain), `session` (one connection: handshake with
//! a deadline, policy, dispatch, log line), `connect` (CONNECT, RESOLVE, RESOLVE_PTR), `bind`,
//! `udp`, `outbound` (the seam where a tunnel to the target is opened, and [`Direct`]),
//! `upstream` ([`Upstream`]: every tunnel through a chain of parent proxies), `auth`,
//! `config`, `error`, `stats`. The wire protocol is decided by `socksmith-proto`'s
//! [`ServerHandshake`](socksmith_proto::ServerHandshake); this module moves bytes.
//! Client-side code (connecting through proxies) lives in `crate::client`, not here; the
//! server uses it only through [`Upstream`].
//!
//! With an upstream ([`ServerConfig::set_upstream`]), nothing leaves this host directly:
//! CONNECT, BIND (the last hop listens), UDP ASSOCIATE (datagrams go through the last hop's
//! relay) and RESOLVE/RESOLVE_PTR all go through the chain, and what the chain refuses is
//! refused to the client with the chain's reply code.

mod auth;
mod bind;
mod config;
mod connect;
mod error;
mod listener;
mod outbound;
pub mod proxy_protocol;
mod session;
mod stats;
mod udp;
mod upstream;

pub use auth::{AuthFuture, Authenticator, UserError, Users};
pub use config::ServerConfig;
pub use error::{LookupError, ServerError, SessionError};
pub use listener::bind_listener;
pub use outbound::{
    AsyncStream, ConnectError, ConnectFuture, ConnectRequest, Connected, Direct, Outbound,
    OutboundStream,
};
pub use session::Session;
pub use stats::{Stats, StatsSnapshot};
pub use upstream::Upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use socksmith_proto::{AuthPolicy, HandshakeConfig};
use tokio::net::TcpListener;

use crate::relay::RelayOptions;

/// A SOCKS server: its configuration and counters. Cheap to clone (an `Arc` inside); clones
/// share the counters.
#[derive(Debug, Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

/// What every session of a server reads.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) stats: Arc<Stats>,
    pub(crate) handshake: HandshakeConfig,
    pub(crate) relay: RelayOptions,
    pub(crate) outbound: OutboundImpl,
}

/// The configured outbound; the built-in ones are called without boxing their futures.
#[derive(Debug)]
pub(crate) enum OutboundImpl {
    Direct(Direct),
    /// BIND, UDP ASSOCIATE and RESOLVE go through it too.
    Upstream(Upstream),
    Custom(Arc<dyn Outbound>),
}

impl OutboundImpl {
    pub(crate) async fn connect(
        &self,
        request: ConnectRequest<'_>,
    ) -> Result<Connected, ConnectError> {
        match self {
            OutboundImpl::Direct(direct) => direct.open(request).await,
            OutboundImpl::Upstream(upstream) => upstream.open(request).await,
            OutboundImpl::Custom(outbound) => outbound.connect(request).await,
        }
    }

    /// The parent proxy chain, if every command goes through one.
    pub(crate) fn upstream(&self) -> Option<&Upstream> {
        match self {
            OutboundImpl::Upstream(upstream) => Some(upstream),
            _ => None,
        }
    }
}

impl Server {
    /// A server with this configuration.
    pub fn new(config: ServerConfig) -> Self {
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
        let outbound = match &config.outbound {
            Some(custom) => match custom.upstream() {
                Some(upstream) => OutboundImpl::Upstream(upstream.clone()),
                None => OutboundImpl::Custom(Arc::clone(custom)),
            },
            None => OutboundImpl::Direct(Direct::new(
                Arc::clone(&config.resolver),
                config.resolve_timeout,
                config.connect_timeout,
            )),
        };
        Server {
            shared: Arc::new(Shared {
                config,
                stats: Arc::new(Stats::default()),
                handshake,
                relay,
                outbound,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    /// The counters, shared with every session (keep the `Arc` to read them while serving).
    pub fn stats(&self) -> &Arc<Stats> {
        &self.shared.stats
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
        let config = &self.shared.config;
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
        listener::run(Arc::clone(&self.shared), listeners, shutdown).await;
        Ok(())
    }
}
