//! [`ServerConfig`]: everything a [`crate::server::Server`] is told, typed, with named
//! durations and safe defaults.
//!
//! This module owns the runtime configuration only. A file format (the CLI's TOML) is a
//! separate shape converted into it once.

use std::sync::Arc;
use std::time::Duration;

use crate::client::Client;
use crate::policy::blocklist::BlocklistSet;
use crate::policy::{ClientFilter, Policy, RateLimits, Rules};
use crate::resolve::{Resolve, SystemResolver};
use crate::server::accounting::Accounting;
use crate::server::auth::Authenticator;
use crate::server::egress::{Egress, Upstream};

/// How a [`crate::server::Server`] behaves. Start from `ServerConfig::default()` and set the
/// fields that matter:
///
/// ```
/// use socksmith::server::{ServerConfig, Users};
/// use std::{sync::Arc, time::Duration};
///
/// let mut users = Users::new();
/// users.insert("alice", "s3cret").unwrap();
/// let mut config = ServerConfig::default();
/// config.auth = Some(Arc::new(users));
/// config.handshake_timeout = Duration::from_secs(5);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// `None`: no authentication (SOCKS5 method 0x00). `Some`: SOCKS5 clients must pass RFC
    /// 1929 username/password checked by this authenticator.
    pub auth: Option<Arc<dyn Authenticator>>,
    /// Whether SOCKS4/4a clients are served. `None` (the default) serves them only when no
    /// authentication is required: SOCKS4 cannot carry a password, so serving it next to
    /// `auth` would let anyone around the password check. `Some(true)` serves them anyway
    /// (their user id is an unverified claim), `Some(false)` never.
    pub allow_socks4: Option<bool>,
    /// Whether listeners on non-loopback addresses may let clients in without credentials
    /// (no `auth`, or SOCKS4 allowed beside it). `false` (the default) makes
    /// [`crate::server::Server::serve`] refuse to start that way: an open proxy reachable by
    /// strangers is abused within hours.
    pub allow_open_proxy: bool,
    /// Time a client has from connecting to a complete request (greeting, authentication and
    /// request). Default 10 s.
    pub handshake_timeout: Duration,
    /// Time allowed for one name lookup (CONNECT to a name, RESOLVE, UDP destinations).
    /// Default 10 s.
    pub resolve_timeout: Duration,
    /// Time allowed for an outbound connection, all addresses together. Default 10 s.
    pub connect_timeout: Duration,
    /// A tunnel that moves no byte either way for this long is closed. `None`: never.
    /// Default 1 h.
    pub idle_timeout: Option<Duration>,
    /// A UDP association that relays no datagram for this long is closed. Default 2 min.
    pub udp_idle_timeout: Duration,
    /// Time a BIND listener waits for the expected peer. Default 60 s.
    pub bind_timeout: Duration,
    /// After shutdown is requested, running sessions get this long to finish before they are
    /// cut. Default 10 s.
    pub shutdown_grace: Duration,
    /// At most this many sessions at once; further connections wait in the kernel's accept
    /// queue. `None` (the default): derived from the open-file limit when serving starts, so
    /// that sessions can never use up every descriptor (see
    /// [`crate::server::Server::session_limits`]).
    pub max_sessions: Option<usize>,
    /// At most this many sessions at once from one client address (an IPv6 client: from one
    /// /64, which one host usually has to itself); its further connections are closed at
    /// once, so that one client cannot hold the sessions others wait for. `None` (the
    /// default): half the session limit, at least 4.
    pub max_sessions_per_client: Option<usize>,
    /// Looks up names for CONNECT, RESOLVE, RESOLVE_PTR and UDP destinations.
    pub resolver: Arc<dyn Resolve>,
    /// Decides whether each request may proceed.
    pub policy: Arc<dyn Policy>,
    /// How every command reaches the outside world (CONNECT, BIND, UDP ASSOCIATE, RESOLVE,
    /// RESOLVE_PTR). `None`: [`crate::server::Direct`], from this host, with
    /// [`Self::resolver`] and the timeouts above. An [`Upstream`] (see
    /// [`Self::set_upstream`]) sends everything through parent proxies.
    pub egress: Option<Arc<dyn Egress>>,
    /// Hears every session's events and may refuse tunnels (limits, metrics). `None`: no
    /// accounting beyond [`crate::server::Stats`].
    pub accounting: Option<Arc<dyn Accounting>>,
    /// Relay with `splice(2)` on Linux when both legs are TCP (default `true`).
    pub zero_copy: bool,
    /// Refuse requests that name their target by IP address only (CONNECT), and drop UDP
    /// ASSOCIATE datagrams sent to a bare address (DNS queries excepted: the name they ask for
    /// is what the lists judge): the proxy can then check every name against its rules and
    /// blocklists, which clients that resolve names themselves (`socks5://`, `socks4://`)
    /// would get around. Default `false`.
    pub require_hostname: bool,
    /// Where the direct egress's connections and datagrams leave from (at most one address
    /// per family). Empty (the default): the kernel chooses.
    pub outbound_addresses: Vec<std::net::IpAddr>,
    /// The address UDP ASSOCIATE and BIND replies name instead of the server's own (for a
    /// server behind NAT). `None` (the default): the address the client reached.
    pub udp_advertise: Option<std::net::IpAddr>,
    /// Domain blocklists: a request for a listed name (or a subdomain of one) is refused with
    /// 0x02 (SOCKS4: 0x5B; HTTP: 403) before anything is resolved or contacted, and the log
    /// line names the list. `None` (the default): no lists.
    pub blocklist: Option<Arc<BlocklistSet>>,
    /// With a blocklist, read the first bytes of a CONNECT that named only an IP address (the
    /// client resolved the name itself) and take the name from a TLS ClientHello's SNI or an
    /// HTTP `Host` header: a listed name closes the tunnel before a byte reaches the target.
    /// Default `true`; nothing is sniffed without a blocklist.
    pub sniff: bool,
    /// How long sniffing waits for the client's first bytes; a protocol where the server
    /// speaks first (SSH, SMTP) waits this long before its bytes flow. Default 300 ms.
    pub sniff_timeout: Duration,
    /// Which client addresses may connect at all; others are closed right after accept,
    /// nothing read and nothing sent. Default: every address.
    pub allow_from: ClientFilter,
    /// Per-user rates (each way, all of a user's tunnels together); tunnels of users without
    /// a rate (and all anonymous ones) keep the zero-copy relay. `None` (the default): none.
    pub rate_per_user: Option<Arc<RateLimits>>,
    /// Whether HTTP proxy requests (CONNECT and absolute-form `GET http://...`) are served
    /// on the same listeners as SOCKS; the first byte tells them apart (0x04 and 0x05 are
    /// SOCKS). `false`: an HTTP request is closed at once, nothing sent. Default `true`.
    pub http: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            auth: None,
            allow_socks4: None,
            allow_open_proxy: false,
            handshake_timeout: Duration::from_secs(10),
            resolve_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(3600)),
            udp_idle_timeout: Duration::from_secs(120),
            bind_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            max_sessions: None,
            max_sessions_per_client: None,
            resolver: Arc::new(SystemResolver::default()),
            policy: Arc::new(Rules::default()),
            egress: None,
            accounting: None,
            zero_copy: true,
            require_hostname: false,
            outbound_addresses: Vec::new(),
            udp_advertise: None,
            http: true,
            blocklist: None,
            sniff: true,
            sniff_timeout: Duration::from_millis(300),
            allow_from: ClientFilter::default(),
            rate_per_user: None,
        }
    }
}

impl ServerConfig {
    /// Whether SOCKS4/4a clients are served, resolving the `None` default.
    pub fn socks4_allowed(&self) -> bool {
        self.allow_socks4.unwrap_or(self.auth.is_none())
    }

    /// Sends every command (CONNECT, BIND, UDP ASSOCIATE, RESOLVE) through `client`'s chain
    /// of parent proxies: sets [`Self::egress`] to an [`Upstream`]. The policy checks each
    /// request's target first, and each address a name resolves to on this host (for
    /// `socks5`/`socks4` last hops); what a `socks5h` hop resolves is its own business.
    ///
    /// ```
    /// use socksmith::client::Client;
    /// use socksmith::server::ServerConfig;
    ///
    /// let mut config = ServerConfig::default();
    /// config.set_upstream(Client::from_url("socks5h://127.0.0.1:9050").unwrap());
    /// assert_eq!(config.egress.unwrap().describe(), "socks5h://127.0.0.1:9050");
    /// ```
    pub fn set_upstream(&mut self, client: Client) {
        self.egress = Some(Arc::new(Upstream::new(client)));
    }
}
