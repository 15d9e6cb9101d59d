//! The typed settings of a client: [`Client`] (the chain of proxies, [`Timeouts`] and the
//! resolver used for `socks4`/`socks5` hops) and its [`ClientBuilder`].
//!
//! This module owns configuration only; the operations (`connect`, `bind`, `udp_associate`,
//! `resolve`) are implemented in the modules named after them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::chain;
use super::env::NoProxy;
use super::error::ClientError;
use super::url::Proxy;
use crate::resolve::{Resolve, SystemResolver};

/// The deadlines of the client's steps.
///
/// ```
/// use std::time::Duration;
/// use socksmith::client::Timeouts;
/// let t = Timeouts { handshake: Duration::from_secs(3), ..Timeouts::default() };
/// assert_eq!(t.connect, Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening the TCP connection to the first proxy, all its addresses together.
    pub connect: Duration,
    /// Each handshake step with each hop: method negotiation, authentication, the request
    /// and its reply.
    pub handshake: Duration,
    /// A local name lookup (the first proxy's host, or a target a `socks4`/`socks5` hop
    /// needs as an address). Used by the default resolver.
    pub resolve: Duration,
    /// BIND: how long [`super::BindListener::accept`] waits for the peer to connect.
    pub bind_accept: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            handshake: Duration::from_secs(10),
            resolve: Duration::from_secs(10),
            bind_accept: Duration::from_secs(120),
        }
    }
}

/// A SOCKS client: one proxy, or a chain of them where each hop is reached through the
/// previous one, in any mix of versions. Cheap to clone; share one across tasks.
///
/// ```no_run
/// # async fn demo() -> Result<(), socksmith::client::ClientError> {
/// use socksmith::client::Client;
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// let client = Client::from_url("socks5h://127.0.0.1:1080")?;
/// let mut stream = client.connect(("example.com", 80)).await?;
/// stream.write_all(b"HEAD / HTTP/1.0\r\n\r\n").await.expect("write");
/// let mut answer = Vec::new();
/// stream.read_to_end(&mut answer).await.expect("read");
/// # Ok(()) }
/// ```
///
/// A chain, with typed settings:
///
/// ```
/// use std::time::Duration;
/// use socksmith::client::{Client, Protocol, Proxy, Timeouts};
/// let first = Proxy::new(Protocol::Socks5, "127.0.0.1:1080".parse().unwrap())
///     .with_credentials("alice", "secret");
/// let second: Proxy = "socks4a://10.1.2.3:1080".parse().unwrap();
/// let client = Client::builder()
///     .proxy(first)
///     .proxy(second)
///     .timeouts(Timeouts { handshake: Duration::from_secs(5), ..Timeouts::default() })
///     .build()
///     .unwrap();
/// assert_eq!(client.hops().len(), 2);
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) hops: Arc<[Proxy]>,
    pub(crate) timeouts: Timeouts,
    pub(crate) resolver: Arc<dyn Resolve>,
    pub(crate) no_proxy: Arc<NoProxy>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field(
                "hops",
                &self.hops.iter().map(Proxy::redacted).collect::<Vec<_>>(),
            )
            .field("timeouts", &self.timeouts)
            .field("resolver", &self.resolver)
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

impl Client {
    /// A builder with no proxy, default timeouts and the system resolver.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client for one proxy, with default settings. Unlike [`ClientBuilder::build`], this
    /// does not check the proxy's credentials: what the handshake cannot send fails it.
    pub fn new(proxy: Proxy) -> Self {
        ClientBuilder::default().proxy(proxy).client()
    }

    /// A client for the proxy at `url` (see [`Proxy`] for the URL forms).
    pub fn from_url(url: &str) -> Result<Self, ClientError> {
        Ok(Client::new(url.parse()?))
    }

    /// A client for a chain of proxy URLs, the first one reached directly.
    pub fn from_urls<I, U>(urls: I) -> Result<Self, ClientError>
    where
        I: IntoIterator<Item = U>,
        U: AsRef<str>,
    {
        let mut builder = Client::builder();
        for url in urls {
            builder = builder.proxy(url.as_ref().parse()?);
        }
        builder.build()
    }

    /// The proxies, first hop first.
    pub fn hops(&self) -> &[Proxy] {
        &self.hops
    }

    /// The deadlines.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// The targets [`Client::connect`] reaches directly, without the proxies.
    pub fn no_proxy(&self) -> &NoProxy {
        &self.no_proxy
    }

    /// Whether [`Client::connect`] reaches `target` directly (it matches [`Self::no_proxy`]).
    pub fn bypasses(&self, target: &socksmith_proto::TargetAddr) -> bool {
        self.no_proxy.matches(target)
    }

    /// The last hop: the proxy that talks to the target.
    pub fn last_hop(&self) -> &Proxy {
        self.hops
            .last()
            .expect("a client has at least one hop (checked by the builder)")
    }
}

/// Builds a [`Client`].
#[derive(Default)]
pub struct ClientBuilder {
    hops: Vec<Proxy>,
    timeouts: Timeouts,
    resolver: Option<Arc<dyn Resolve>>,
    no_proxy: NoProxy,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("hops", &self.hops)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Appends a hop to the chain.
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.hops.push(proxy);
        self
    }

    /// Appends several hops.
    pub fn proxies(mut self, proxies: impl IntoIterator<Item = Proxy>) -> Self {
        self.hops.extend(proxies);
        self
    }

    /// Sets every deadline.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The deadline for connecting to the first proxy.
    pub fn connect_timeout(mut self, limit: Duration) -> Self {
        self.timeouts.connect = limit;
        self
    }

    /// The deadline of each handshake step with each hop.
    pub fn handshake_timeout(mut self, limit: Duration) -> Self {
        self.timeouts.handshake = limit;
        self
    }

    /// How long a BIND waits for its peer.
    pub fn bind_accept_timeout(mut self, limit: Duration) -> Self {
        self.timeouts.bind_accept = limit;
        self
    }

    /// The resolver for names this side resolves (default: the system resolver with
    /// [`Timeouts::resolve`]).
    pub fn resolver(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Targets that [`Client::connect`] reaches directly instead of through the chain (curl's
    /// `NO_PROXY`; default: none). Only CONNECT bypasses: BIND, UDP ASSOCIATE and RESOLVE
    /// are proxy features and always go through the chain.
    pub fn no_proxy(mut self, rules: NoProxy) -> Self {
        self.no_proxy = rules;
        self
    }

    /// The client. Fails without any proxy, and with [`ClientError::InvalidProxy`] for a
    /// proxy no handshake could use (credentials its protocol cannot carry, a later hop's
    /// name that cannot go in a request), before any connection is made.
    pub fn build(self) -> Result<Client, ClientError> {
        if self.hops.is_empty() {
            return Err(ClientError::NoProxy);
        }
        for (index, hop) in self.hops.iter().enumerate() {
            if let Err(problem) = hop.credentials() {
                return Err(ClientError::InvalidProxy {
                    hop: index + 1,
                    proxy: hop.redacted(),
                    problem,
                });
            }
            if index > 0 {
                chain::hop_address(index + 1, hop)?;
            }
        }
        Ok(self.client())
    }

    fn client(self) -> Client {
        let resolver = self
            .resolver
            .unwrap_or_else(|| Arc::new(SystemResolver::new(self.timeouts.resolve)));
        Client {
            hops: self.hops.into(),
            timeouts: self.timeouts,
            resolver,
            no_proxy: Arc::new(self.no_proxy),
        }
    }
}
