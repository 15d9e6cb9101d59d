//! The `socksmith serve --config FILE` format (TOML) and its one-time conversion into the
//! library's [`ServerConfig`].
//!
//! [`FileConfig`] mirrors the file exactly (unknown keys are errors, so a typo never goes
//! unnoticed); [`ServeSettings::try_from`] turns it into typed values, with errors that name
//! the key. The command line overrides the file afterwards (see `commands::serve`).
//!
//! ```toml
//! # Top-level keys first: in TOML, a key after a [table] header belongs to that table.
//! listen = ["127.0.0.1:1080", "[::1]:1080"]   # also "1080", ":1080", "localhost:1080"
//! allow_socks4 = false         # serve SOCKS4/4a even with users (default: only without)
//! no_http = false              # serve SOCKS only, no HTTP proxy requests on the same port
//! allow_open_proxy = false     # non-loopback listeners without users
//! allow_link_local = false     # cloud metadata targets: 169.254.0.0/16, fe80::/10, fd00:ec2::254, 100.100.100.200
//! allow_loopback_targets = false  # this host's loopback as a target for everyone (default:
//!                              # only when every listener is on loopback, and then only for
//!                              # local clients); the old name `allow_loopback` still works
//! deny = ["10.0.0.0/8"]        # refuse targets in these prefixes (reply 0x02)
//! max_sessions = 10000
//! threads = 4                  # threads serving connections (default: one per core; 1: one
//!                              # thread for everything); fixed at start
//! # every tunnel through these parent proxies, first hop first (curl's URL forms)
//! upstream = ["socks5h://user:pass@127.0.0.1:1081"]
//!
//! admin = "127.0.0.1:9090"    # metrics, live tunnels and a status page (see `serve --help`)
//! admin_token = "..."          # needed when `admin` is not a loopback address
//!
//! quiet = false                # no per-session log lines (warnings and errors stay)
//! proxy_protocol = false       # behind HAProxy send-proxy/send-proxy-v2: real client addresses
//!
//! users_file = "/etc/socksmith/users"  # NAME:ARGON2ID-HASH lines (`socksmith passwd`)
//!
//! # domain blocklists: files or http(s) URLs (hosts, one domain a line, ||x^, *.x)
//! blocklist = ["/etc/socksmith/ads.txt", "https://lists.example/hosts"]
//! blocklist_refresh = "24h"    # reload files and fetch URLs this often
//! blocklist_cache_dir = "/var/cache/socksmith"  # last good copy of each URL list
//! sniff_timeout = "300ms"      # wait for a name in the first bytes of IP-only CONNECTs
//! no_sniff = false             # do not read names from the first bytes
//! require_hostname = false     # refuse requests that name the target by IP only
//! allow_from = ["192.0.2.0/24"]  # clients elsewhere are closed before a byte is read
//! max_tunnels_per_user = 100
//! rate_per_user = "10MiB/s"    # each way, all of a user's tunnels together
//! max_udp_per_client = 4
//! max_bind_per_client = 4
//! outbound_address = ["192.0.2.1", "2001:db8::1"]  # one per family
//! udp_advertise = "203.0.113.7"  # the address UDP ASSOCIATE and BIND replies give
//!
//! default = "allow"            # what a request no [[rules]] table matches gets ("deny" to
//!                              # close by default)
//!
//! [timeouts]                   # "500ms", "10s", "5m", "1h", or a number of seconds
//! handshake = "10s"            # also written as a top-level key: handshake_timeout = "10s"
//! resolve = "10s"
//! connect = "10s"
//! idle = "1h"                  # "never" (or 0) disables it
//! udp_idle = "2m"
//! bind = "60s"
//! shutdown_grace = "10s"
//!
//! [[users]]                    # beside (or instead of) users_file
//! name = "alice"
//! password = "correct horse"
//!
//! [[rules]]                    # first match wins; after the safety defaults
//! name = "no-intranet-for-guests"
//! action = "deny"
//! from = ["192.0.2.0/24"]      # keys: name, action, from, users, commands, to, domains, ports
//! to = ["10.0.0.0/8"]
//! ```
//!
//! Every `serve` flag has a key of the same name with `_` for `-` (`--max-sessions` is
//! `max_sessions`, `--idle-timeout` is `idle_timeout`); `--user` is the `[[users]]` table.
//! Not in the file: `--config` and `--check`, and `-v` and `--log-format`, which set up the
//! log before the file is read (flag, `RUST_LOG`, `SOCKSMITH_LOG_FORMAT`).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;
use socksmith::client::{Client, Proxy, Timeouts};
use socksmith::policy::blocklist::ListSource;
use socksmith::policy::{
    Action, ClientFilter, IpNet, Limits, LimitsConfig, LoopbackTargets, Rate, RateLimits,
    RuleConfig, RulePolicy, RuleSet, Rules,
};
use socksmith::server::{
    Accounting, AccountingList, AuthFuture, Authenticator, HashedUsers, ServerConfig, Users,
};
use socksmith::Credentials;

use crate::admin::{self, AdminToken};
use crate::duration;

/// The file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Addresses to listen on.
    pub listen: Option<Vec<String>>,
    /// Username/password pairs.
    pub users: Option<Vec<FileUser>>,
    /// Serve SOCKS4/4a even when users are configured.
    pub allow_socks4: Option<bool>,
    /// Serve SOCKS only (no HTTP proxy requests on the listeners).
    pub no_http: Option<bool>,
    /// Allow non-loopback listeners without users.
    pub allow_open_proxy: Option<bool>,
    /// Allow link-local and cloud metadata targets.
    pub allow_link_local: Option<bool>,
    /// Allow every client to reach this host's loopback addresses.
    pub allow_loopback_targets: Option<bool>,
    /// The old name of `allow_loopback_targets`, still read (with a deprecation warning).
    pub allow_loopback: Option<bool>,
    /// Refuse SOCKS4/4a clients even without users (`allow_socks4 = false` says the same).
    pub no_socks4: Option<bool>,
    /// No per-session log lines.
    pub quiet: Option<bool>,
    /// Every connection starts with a PROXY protocol header (behind a load balancer).
    pub proxy_protocol: Option<bool>,
    /// What a request that no `[[rules]]` entry matches gets (allow unless "deny").
    pub default: Option<Action>,
    /// Access rules, first match wins (see `socksmith::policy::RuleSet`).
    pub rules: Option<Vec<RuleConfig>>,
    /// Target prefixes to refuse.
    pub deny: Option<Vec<String>>,
    /// Most sessions at once.
    pub max_sessions: Option<usize>,
    /// Most sessions at once from one client address.
    pub max_sessions_per_client: Option<usize>,
    /// `--threads`: threads serving connections.
    pub threads: Option<usize>,
    /// Parent proxy URLs, first hop first. They may hold passwords: a type error never
    /// shows the value.
    #[serde(default, deserialize_with = "secret_strings")]
    pub upstream: Option<Vec<String>>,
    /// Deadlines, as a table.
    pub timeouts: Option<FileTimeouts>,
    /// The admin HTTP server's address.
    pub admin: Option<String>,
    /// The admin server's bearer token. A type error never shows the value.
    #[serde(default, deserialize_with = "secret_option")]
    pub admin_token: Option<String>,
    /// `--handshake-timeout`, the same as `timeouts.handshake`.
    pub handshake_timeout: Option<FileDuration>,
    /// `--resolve-timeout`, the same as `timeouts.resolve`.
    pub resolve_timeout: Option<FileDuration>,
    /// `--connect-timeout`, the same as `timeouts.connect`.
    pub connect_timeout: Option<FileDuration>,
    /// `--idle-timeout`, the same as `timeouts.idle`.
    pub idle_timeout: Option<FileDuration>,
    /// `--udp-idle-timeout`, the same as `timeouts.udp_idle`.
    pub udp_idle_timeout: Option<FileDuration>,
    /// `--bind-timeout`, the same as `timeouts.bind`.
    pub bind_timeout: Option<FileDuration>,
    /// `--shutdown-grace`, the same as `timeouts.shutdown_grace`.
    pub shutdown_grace: Option<FileDuration>,
    /// `--users FILE`: argon2id-hashed users (`[[users]]` holds inline ones).
    pub users_file: Option<PathBuf>,
    /// `--blocklist`: list files and URLs.
    pub blocklist: Option<Vec<String>>,
    /// `--blocklist-refresh`.
    pub blocklist_refresh: Option<FileDuration>,
    /// `--blocklist-cache-dir`.
    pub blocklist_cache_dir: Option<PathBuf>,
    /// `--sniff-timeout`.
    pub sniff_timeout: Option<FileDuration>,
    /// `--no-sniff`.
    pub no_sniff: Option<bool>,
    /// `--require-hostname`.
    pub require_hostname: Option<bool>,
    /// `--allow-from`: client networks.
    pub allow_from: Option<Vec<String>>,
    /// `--max-tunnels-per-user`.
    pub max_tunnels_per_user: Option<usize>,
    /// `--rate-per-user`.
    pub rate_per_user: Option<String>,
    /// `--max-udp-per-client`.
    pub max_udp_per_client: Option<usize>,
    /// `--max-bind-per-client`.
    pub max_bind_per_client: Option<usize>,
    /// `--outbound-address`: one per family.
    pub outbound_address: Option<Vec<String>>,
    /// `--udp-advertise`.
    pub udp_advertise: Option<String>,
}

impl FileConfig {
    /// Warnings about what the file says in an outdated way (logged by [`load`]).
    pub fn deprecations(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.allow_loopback.is_some() {
            warnings.push(
                "key `allow_loopback` is deprecated: write `allow_loopback_targets` (the name \
                 of the --allow-loopback-targets flag)"
                    .to_owned(),
            );
        }
        warnings
    }
}

/// One `[[users]]` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUser {
    /// The RFC 1929 username.
    pub name: String,
    /// The password. A type error never shows the value.
    #[serde(deserialize_with = "secret_string")]
    pub password: String,
}

/// A string that may be a secret: anything else is an error that names the type found, never
/// the value (serde's own message would quote it: "invalid type: integer `12345678`").
fn secret_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match toml::Value::deserialize(d)? {
        toml::Value::String(s) => Ok(s),
        other => Err(serde::de::Error::custom(format!(
            "expected a string, found {} (value not shown: it may be a secret)",
            other.type_str()
        ))),
    }
}

/// [`secret_string`] for an optional key.
fn secret_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    secret_string(d).map(Some)
}

/// A list of strings that may hold secrets (proxy URLs with passwords): errors name types,
/// never values.
fn secret_strings<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let not_shown = "(value not shown: it may hold a password)";
    match toml::Value::deserialize(d)? {
        toml::Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                toml::Value::String(s) => Ok(s),
                other => Err(serde::de::Error::custom(format!(
                    "item {i}: expected a string, found {} {not_shown}",
                    other.type_str()
                ))),
            })
            .collect::<Result<_, _>>()
            .map(Some),
        other => Err(serde::de::Error::custom(format!(
            "expected a list of strings, found {} {not_shown}",
            other.type_str()
        ))),
    }
}

impl fmt::Debug for FileUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileUser")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The `[timeouts]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTimeouts {
    /// Greeting to request.
    pub handshake: Option<FileDuration>,
    /// One name lookup.
    pub resolve: Option<FileDuration>,
    /// One outbound connection.
    pub connect: Option<FileDuration>,
    /// Idle tunnel.
    pub idle: Option<FileDuration>,
    /// Idle UDP association.
    pub udp_idle: Option<FileDuration>,
    /// BIND wait.
    pub bind: Option<FileDuration>,
    /// Shutdown grace period.
    pub shutdown_grace: Option<FileDuration>,
}

/// A duration as written: `"10s"` or a number of seconds.
#[derive(Debug, Clone)]
pub enum FileDuration {
    /// Whole seconds.
    Seconds(u64),
    /// Text with a unit (or a number of seconds with a fraction).
    Text(String),
}

impl<'de> Deserialize<'de> for FileDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = FileDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration: a number of seconds or text with a unit, such as \"10s\", \
                     \"500ms\", \"5m\"",
                )
            }

            fn visit_u64<E: serde::de::Error>(self, seconds: u64) -> Result<FileDuration, E> {
                Ok(FileDuration::Seconds(seconds))
            }

            fn visit_i64<E: serde::de::Error>(self, seconds: i64) -> Result<FileDuration, E> {
                u64::try_from(seconds)
                    .map(FileDuration::Seconds)
                    .map_err(|_| {
                        E::custom(format!(
                            "{seconds} is negative: a duration is a number of seconds or text \
                         with a unit, such as \"10s\""
                        ))
                    })
            }

            fn visit_f64<E: serde::de::Error>(self, seconds: f64) -> Result<FileDuration, E> {
                // Judged by the duration parser like `"1.5"`: a clear error for the absurd.
                Ok(FileDuration::Text(seconds.to_string()))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<FileDuration, E> {
                Ok(FileDuration::Text(text.to_owned()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A bad configuration: one line naming the key.
#[derive(Debug)]
pub struct ConfigError {
    /// The key's path: `listen[0]`, `timeouts.handshake`, `users[1]`.
    pub key: String,
    problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn new(key: impl Into<String>, problem: impl fmt::Display) -> Self {
        ConfigError {
            key: key.into(),
            problem: problem.to_string(),
        }
    }
}

/// What `serve` runs with: where to listen and the server's configuration.
#[derive(Debug)]
pub struct ServeSettings {
    /// Addresses to bind.
    pub listen: Vec<ListenAddr>,
    /// Users, kept apart so the command line can replace them.
    pub users: Users,
    /// Their names (to refuse a name also in the users file).
    pub user_names: Vec<String>,
    /// Denied prefixes and the link-local switch, kept apart for the same reason.
    pub deny: Vec<IpNet>,
    /// Whether link-local and cloud metadata targets are allowed.
    pub allow_link_local: bool,
    /// Whether every client may reach this host's loopback; if not, see
    /// [`ServeSettings::finish`].
    pub allow_loopback: bool,
    /// The parent proxy chain, first hop first; empty: connect directly.
    pub upstream: Vec<Proxy>,
    /// The admin HTTP server's address, if it is to run.
    pub admin: Option<SocketAddr>,
    /// Its bearer token.
    pub admin_token: Option<AdminToken>,
    /// Threads serving connections; `None`: one per core the process may use.
    pub threads: Option<usize>,
    /// No per-session log lines.
    pub quiet: bool,
    /// Every connection starts with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// The argon2id users file, read by [`ServeSettings::load_files`].
    pub users_file: Option<PathBuf>,
    /// The users read from [`Self::users_file`].
    pub hashed_users: Option<HashedUsers>,
    /// Blocklist sources, opened by [`ServeSettings::load_files`] into `server.blocklist`.
    pub blocklist: Vec<ListSource>,
    /// How often the blocklists are reloaded.
    pub blocklist_refresh: Duration,
    /// Where URL lists are cached; `None`: the user's cache directory, if there is one.
    pub blocklist_cache_dir: Option<PathBuf>,
    /// Per-user and per-client limits (the rate goes to `server.rate_per_user`).
    pub limits: LimitsConfig,
    /// The `[[rules]]` and `default`, checked after the safety defaults; `None`: none given.
    pub rules: Option<RuleSet>,
    /// Everything else.
    pub server: ServerConfig,
}

/// Checks that an upstream chain builds (credentials each hop's protocol can carry, and so
/// on), so that a chain no handshake could use is a configuration error: the index of the
/// failing hop (from 0) and why.
pub fn check_upstream(chain: &[Proxy]) -> Result<(), (usize, String)> {
    if chain.is_empty() {
        return Ok(());
    }
    match Client::builder().proxies(chain.iter().cloned()).build() {
        Ok(_) => Ok(()),
        Err(e) => Err((e.hop().unwrap_or(1).saturating_sub(1), e.to_string())),
    }
}

/// The limits' live state, carried from one configuration to the next by a reload (see
/// [`ServeSettings::finish_carrying`]): a reload must not give every user a fresh
/// allowance of tunnels, nor fresh buckets.
#[derive(Debug, Clone, Default)]
pub struct LiveLimits {
    /// The per-user and per-client counts.
    counts: Option<Arc<Limits>>,
    /// The per-user buckets of `rate_per_user`.
    rates: Option<Arc<RateLimits>>,
}

impl ServeSettings {
    /// Puts users, rules and the upstream chain into the server configuration, for a server
    /// whose listeners are on `listening` (the addresses really bound or inherited). The
    /// chain's client resolves with the server's resolver and gets the server's deadlines:
    /// the resolve timeout, the connect timeout (for the first hop and each handshake step),
    /// the BIND timeout.
    ///
    /// Loopback targets: allowed to everyone with `allow_loopback`; else refused to everyone
    /// when any listener is on another address (the users of a public proxy must not reach
    /// services on this host's 127.0.0.1) or behind a balancer (`proxy_protocol`), and left
    /// to local clients when all listeners are on loopback (all clients are local then).
    pub fn finish(self, listening: &[SocketAddr]) -> ServerConfig {
        self.finish_carrying(listening, &LiveLimits::default()).0
    }

    /// [`ServeSettings::finish`] for a reload: the limits count on from `live`, the state of
    /// the configuration in use (who holds how many tunnels, each user's buckets), and the
    /// state of the new one comes back with it, to be kept if it is put in use.
    pub fn finish_carrying(
        self,
        listening: &[SocketAddr],
        live: &LiveLimits,
    ) -> (ServerConfig, LiveLimits) {
        let ServeSettings {
            listen: _,
            users,
            user_names: _,
            deny,
            allow_link_local,
            allow_loopback,
            upstream,
            admin: _,
            admin_token: _,
            threads: _,
            quiet: _,
            proxy_protocol,
            users_file: _,
            hashed_users,
            blocklist: _,
            blocklist_refresh: _,
            blocklist_cache_dir: _,
            limits,
            rules: access_rules,
            mut server,
        } = self;
        // Behind a balancer every client comes through it, from anywhere: a loopback
        // listener says nothing about who the clients are.
        let loopback = if allow_loopback {
            LoopbackTargets::Allow
        } else if !proxy_protocol
            && listening
                .iter()
                .all(|a| a.ip().to_canonical().is_loopback())
        {
            LoopbackTargets::LocalClients
        } else {
            LoopbackTargets::Deny
        };
        if !upstream.is_empty() {
            let client = Client::builder()
                .proxies(upstream)
                .resolver(Arc::clone(&server.resolver))
                .timeouts(Timeouts {
                    connect: server.connect_timeout,
                    handshake: server.connect_timeout,
                    resolve: server.resolve_timeout,
                    bind_accept: server.bind_timeout,
                })
                .build()
                .expect("the upstream chain was checked when the settings were read");
            server.set_upstream(client);
        }
        server.auth = match (users.is_empty(), hashed_users) {
            (true, None) => None,
            (false, None) => Some(Arc::new(users)),
            (true, Some(hashed)) => Some(Arc::new(hashed)),
            (false, Some(hashed)) => Some(Arc::new(InlineThenHashed {
                inline: users,
                hashed,
            })),
        };
        let safety = deny.into_iter().fold(
            Rules::default()
                .allow_link_local(allow_link_local)
                .loopback(loopback),
            Rules::deny,
        );
        server.policy = match access_rules {
            Some(access_rules) => Arc::new(RulePolicy::new(safety, access_rules)),
            None => Arc::new(safety),
        };
        server.rate_per_user = limits.rate_per_user.map(|rate| match &live.rates {
            // The same rate: the same buckets, with what each user has used.
            Some(rates) if rates.rate() == rate => Arc::clone(rates),
            _ => Arc::new(RateLimits::new(rate)),
        });
        let mut counted = limits;
        counted.rate_per_user = None;
        let mut next = LiveLimits {
            counts: None,
            rates: server.rate_per_user.clone(),
        };
        if counted != LimitsConfig::default() {
            let counts = Arc::new(match &live.counts {
                Some(old) => old.reconfigured(counted),
                None => Limits::new(counted),
            });
            next.counts = Some(Arc::clone(&counts));
            // A Vec, so that other accountings (metrics) join the limits here.
            let accountings: Vec<Arc<dyn Accounting>> = vec![counts];
            server.accounting = Some(Arc::new(AccountingList::new(accountings)));
        }
        (server, next)
    }

    /// Reads the files the settings name: the users file and the blocklists (a million
    /// names take about a second). Run at start and on every reload, off the async threads.
    pub fn load_files(&mut self) -> anyhow::Result<()> {
        self.hashed_users = match &self.users_file {
            Some(path) => {
                // The library's message names the file and its cause: no chain after it.
                let users = HashedUsers::load(path)
                    .map_err(|e| anyhow::anyhow!("--users (users_file): {e}"))?;
                Some(users)
            }
            None => None,
        };
        if let Some(hashed) = &self.hashed_users {
            if let Some(name) = self
                .user_names
                .iter()
                .find(|n| hashed.contains(n.as_bytes()))
            {
                anyhow::bail!(
                    "user {name:?} is defined both inline (--user or [[users]]) and in the \
                     users file: keep one"
                );
            }
        }
        self.server.blocklist = if self.blocklist.is_empty() {
            None
        } else {
            let mut config =
                socksmith::policy::blocklist::BlocklistConfig::new(self.blocklist.clone())
                    .refresh(self.blocklist_refresh);
            if let Some(dir) = self
                .blocklist_cache_dir
                .clone()
                .or_else(socksmith::policy::blocklist::BlocklistConfig::default_cache_dir)
            {
                config = config.cache_dir(dir);
            }
            let set = socksmith::policy::blocklist::BlocklistSet::open(config)
                .map_err(|e| anyhow::anyhow!("--blocklist (blocklist): {e}"))?;
            Some(Arc::new(set))
        };
        Ok(())
    }
}

/// `--user` (or `[[users]]`) and `--users FILE` together: a name is looked up inline first,
/// then in the file (a name may not be in both, see [`ServeSettings::load_files`]).
#[derive(Debug)]
struct InlineThenHashed {
    inline: Users,
    hashed: HashedUsers,
}

impl Authenticator for InlineThenHashed {
    fn authenticate<'a>(&'a self, credentials: &'a Credentials) -> AuthFuture<'a> {
        Box::pin(async move {
            match self.inline.check(credentials) {
                Some(user) => Some(user),
                None => self.hashed.authenticate(credentials).await,
            }
        })
    }
}

/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:1080";

impl TryFrom<FileConfig> for ServeSettings {
    type Error = ConfigError;

    fn try_from(file: FileConfig) -> Result<Self, ConfigError> {
        let mut server = ServerConfig::default();
        let listen = match file.listen {
            Some(list) if list.is_empty() => {
                return Err(ConfigError::new("listen", "must name at least one address"))
            }
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    parse_listen(a).map_err(|p| ConfigError::new(format!("listen[{i}]"), p))
                })
                .collect::<Result<_, _>>()?,
            None => vec![parse_listen(DEFAULT_LISTEN).expect("the default address parses")],
        };
        let mut users = Users::new();
        let mut user_names = Vec::new();
        for (i, user) in file.users.unwrap_or_default().into_iter().enumerate() {
            user_names.push(user.name.clone());
            users
                .insert(user.name, user.password)
                .map_err(|e| ConfigError::new(format!("users[{i}]"), e))?;
        }
        let deny = file
            .deny
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, n)| {
                n.parse::<IpNet>()
                    .map_err(|e| ConfigError::new(format!("deny[{i}]"), e))
            })
            .collect::<Result<_, _>>()?;
        server.allow_socks4 = match (file.allow_socks4, file.no_socks4) {
            (Some(true), Some(true)) => {
                return Err(ConfigError::new(
                    "no_socks4",
                    "contradicts allow_socks4 = true: keep one of the two",
                ))
            }
            (allow, Some(true)) => allow.or(Some(false)),
            (allow, _) => allow,
        };
        server.http = !file.no_http.unwrap_or(false);
        server.allow_open_proxy = file.allow_open_proxy.unwrap_or(false);
        if let Some(0) = file.max_sessions {
            return Err(ConfigError::new("max_sessions", "must be at least 1"));
        }
        server.max_sessions = file.max_sessions;
        if let Some(0) = file.max_sessions_per_client {
            return Err(ConfigError::new(
                "max_sessions_per_client",
                "must be at least 1",
            ));
        }
        server.max_sessions_per_client = file.max_sessions_per_client;
        if let Some(0) = file.threads {
            return Err(ConfigError::new(
                "threads",
                "must be at least 1 (1 serves everything on one thread)",
            ));
        }
        let upstream = file
            .upstream
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, url)| {
                url.parse::<Proxy>()
                    .map_err(|e| ConfigError::new(format!("upstream[{i}]"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        check_upstream(&upstream)
            .map_err(|(i, e)| ConfigError::new(format!("upstream[{i}]"), e))?;
        let t = file.timeouts.unwrap_or_default();
        // Each deadline has two spellings: `[timeouts] handshake` and `handshake_timeout`.
        let either = |table: Option<FileDuration>,
                      table_key: &str,
                      flat: Option<FileDuration>,
                      flat_key: &str| match (table, flat) {
            (Some(_), Some(_)) => Err(ConfigError::new(
                flat_key,
                format!("given twice, also as {table_key}: keep one"),
            )),
            (Some(v), None) => Ok(Some((v, table_key.to_owned()))),
            (None, Some(v)) => Ok(Some((v, flat_key.to_owned()))),
            (None, None) => Ok(None),
        };
        let set = |slot: &mut Duration, value: Option<(FileDuration, String)>| {
            if let Some((v, key)) = value {
                *slot = v.to_duration(&key)?;
            }
            Ok::<_, ConfigError>(())
        };
        set(
            &mut server.handshake_timeout,
            either(
                t.handshake,
                "timeouts.handshake",
                file.handshake_timeout,
                "handshake_timeout",
            )?,
        )?;
        set(
            &mut server.resolve_timeout,
            either(
                t.resolve,
                "timeouts.resolve",
                file.resolve_timeout,
                "resolve_timeout",
            )?,
        )?;
        set(
            &mut server.connect_timeout,
            either(
                t.connect,
                "timeouts.connect",
                file.connect_timeout,
                "connect_timeout",
            )?,
        )?;
        set(
            &mut server.udp_idle_timeout,
            either(
                t.udp_idle,
                "timeouts.udp_idle",
                file.udp_idle_timeout,
                "udp_idle_timeout",
            )?,
        )?;
        set(
            &mut server.bind_timeout,
            either(t.bind, "timeouts.bind", file.bind_timeout, "bind_timeout")?,
        )?;
        set(
            &mut server.shutdown_grace,
            either(
                t.shutdown_grace,
                "timeouts.shutdown_grace",
                file.shutdown_grace,
                "shutdown_grace",
            )?,
        )?;
        if let Some((idle, key)) =
            either(t.idle, "timeouts.idle", file.idle_timeout, "idle_timeout")?
        {
            server.idle_timeout = idle.to_optional_duration(&key)?;
        }
        let admin = file
            .admin
            .map(|a| admin::parse_addr(&a).map_err(|p| ConfigError::new("admin", p)))
            .transpose()?;
        let admin_token = file
            .admin_token
            .map(|t| AdminToken::parse(&t).map_err(|p| ConfigError::new("admin_token", p)))
            .transpose()?;
        let access_rules = match (&file.rules, file.default) {
            (None, None) => None,
            (rules, default) => Some(
                RuleSet::from_config(default, rules.as_deref().unwrap_or_default()).map_err(
                    |e| {
                        ConfigError::new(
                            format!("rules[{}].{}", e.position.saturating_sub(1), e.key),
                            e.problem,
                        )
                    },
                )?,
            ),
        };
        let allow_loopback = match (file.allow_loopback_targets, file.allow_loopback) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "allow_loopback",
                    "given beside allow_loopback_targets, its new name: keep only \
                     allow_loopback_targets",
                ))
            }
            (new, old) => new.or(old).unwrap_or(false),
        };
        let blocklist_refresh = match &file.blocklist_refresh {
            Some(d) => d.to_duration("blocklist_refresh")?,
            None => socksmith::policy::blocklist::DEFAULT_REFRESH,
        };
        if let Some(d) = &file.sniff_timeout {
            server.sniff_timeout = d.to_duration("sniff_timeout")?;
        }
        server.sniff = !file.no_sniff.unwrap_or(false);
        server.require_hostname = file.require_hostname.unwrap_or(false);
        if let Some(nets) = &file.allow_from {
            if nets.is_empty() {
                return Err(ConfigError::new(
                    "allow_from",
                    "must name at least one network (leave the key out to allow every client)",
                ));
            }
            let nets = nets
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    n.parse::<IpNet>()
                        .map_err(|e| ConfigError::new(format!("allow_from[{i}]"), e))
                })
                .collect::<Result<_, _>>()?;
            server.allow_from = ClientFilter::new(nets);
        }
        let mut limits = LimitsConfig::default();
        for (key, value, slot) in [
            (
                "max_tunnels_per_user",
                file.max_tunnels_per_user,
                &mut limits.max_tunnels_per_user,
            ),
            (
                "max_udp_per_client",
                file.max_udp_per_client,
                &mut limits.max_udp_per_client,
            ),
            (
                "max_bind_per_client",
                file.max_bind_per_client,
                &mut limits.max_bind_per_client,
            ),
        ] {
            if value == Some(0) {
                return Err(ConfigError::new(key, "must be at least 1"));
            }
            *slot = value;
        }
        if let Some(rate) = &file.rate_per_user {
            limits.rate_per_user = Some(
                rate.parse::<Rate>()
                    .map_err(|e| ConfigError::new("rate_per_user", e))?,
            );
        }
        if let Some(addrs) = &file.outbound_address {
            let addrs = addrs
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    a.parse::<IpAddr>().map_err(|_| {
                        ConfigError::new(
                            format!("outbound_address[{i}]"),
                            format!("{a:?} is not an IP address"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            server.outbound_addresses =
                one_per_family(addrs).map_err(|p| ConfigError::new("outbound_address", p))?;
        }
        if let Some(a) = &file.udp_advertise {
            server.udp_advertise = Some(a.parse::<IpAddr>().map_err(|_| {
                ConfigError::new("udp_advertise", format!("{a:?} is not an IP address"))
            })?);
        }
        Ok(ServeSettings {
            listen,
            users,
            user_names,
            users_file: file.users_file,
            hashed_users: None,
            blocklist: file
                .blocklist
                .unwrap_or_default()
                .iter()
                .map(|s| ListSource::parse(s))
                .collect(),
            blocklist_refresh,
            blocklist_cache_dir: file.blocklist_cache_dir,
            limits,
            admin,
            admin_token,
            threads: file.threads,
            deny,
            allow_link_local: file.allow_link_local.unwrap_or(false),
            allow_loopback,
            upstream,
            quiet: file.quiet.unwrap_or(false),
            proxy_protocol: file.proxy_protocol.unwrap_or(false),
            rules: access_rules,
            server,
        })
    }
}

/// The outbound addresses, checked to hold at most one per address family (the source of a
/// connection must match its target's family).
pub fn one_per_family(addrs: Vec<IpAddr>) -> Result<Vec<IpAddr>, String> {
    for family in [true, false] {
        let same: Vec<_> = addrs.iter().filter(|a| a.is_ipv4() == family).collect();
        if let [first, second, ..] = same.as_slice() {
            return Err(format!(
                "{first} and {second} are both {}: give at most one address per family",
                if family { "IPv4" } else { "IPv6" }
            ));
        }
    }
    Ok(addrs)
}

impl FileDuration {
    /// Any duration up to [`duration::MAX`], 0 included, in the command line's syntax.
    fn parse(&self, key: &str) -> Result<Duration, ConfigError> {
        let parsed = match self {
            FileDuration::Seconds(s) => duration::parse_duration(&s.to_string()),
            FileDuration::Text(t) => duration::parse_duration(t),
        };
        parsed.map_err(|p| ConfigError::new(key, p))
    }

    fn to_duration(&self, key: &str) -> Result<Duration, ConfigError> {
        let d = self.parse(key)?;
        if d.is_zero() {
            return Err(ConfigError::new(key, "must be longer than 0"));
        }
        Ok(d)
    }

    /// `"never"` or 0 (as `--idle-timeout` takes them): `None`.
    fn to_optional_duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        match self {
            FileDuration::Text(t) => {
                duration::parse_optional_duration(t).map_err(|p| ConfigError::new(key, p))
            }
            other => other.parse(key).map(|d| (!d.is_zero()).then_some(d)),
        }
    }
}

/// Reads and converts a config file, logging what it says in an outdated way. Errors are one
/// line: the file, the line, the key, the problem.
pub fn load(path: &Path) -> anyhow::Result<ServeSettings> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
    let (settings, warnings) =
        parse(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
    for warning in warnings {
        tracing::warn!(file = %path.display(), "{warning}");
    }
    Ok(settings)
}

/// Parses and converts a file's text; errors are one line with the line number and the key.
pub fn parse(text: &str) -> Result<(ServeSettings, Vec<String>), String> {
    let file: FileConfig = toml::from_str(text).map_err(|e| describe(&e, text))?;
    let warnings = file.deprecations();
    let settings = ServeSettings::try_from(file).map_err(|e| match line_of(text, &e.key) {
        Some(line) => format!("line {line}: {e}"),
        None => e.to_string(),
    })?;
    Ok((settings, warnings))
}

/// The line (1-based) where a key path such as `timeouts.handshake`, `listen[0]` or
/// `users[1]` is written in `text`, found through the TOML parser's spans.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let document = toml::de::DeTable::parse(text).ok()?;
    let mut table = document.get_ref();
    let mut span = None;
    let segments: Vec<&str> = key.split('.').collect();
    for (n, segment) in segments.iter().enumerate() {
        let (name, index) = match segment.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (*segment, None),
        };
        let (found_key, value) = table.get_key_value(name)?;
        span = Some(found_key.span());
        let mut value = value;
        if let Some(i) = index {
            if let Some(item) = value.get_ref().get(i) {
                span = Some(item.span());
                value = item;
            }
        }
        if n + 1 < segments.len() {
            table = value.get_ref().as_table()?;
        }
    }
    let start = span?.start;
    Some(text.get(..start)?.matches('\n').count() + 1)
}

/// A TOML error in one line: where, which key, what is wrong.
fn describe(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else {
        return message;
    };
    let line_no = text
        .get(..span.start)
        .map_or(0, |t| t.matches('\n').count())
        + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    match line.split_once('=') {
        Some((key, _)) if !line.starts_with('[') => {
            format!("line {line_no}: key `{}`: {message}", key.trim())
        }
        _ => format!("line {line_no}: {message}"),
    }
}

/// Where to listen, as given: an IP address with a port, or a host name with a port (looked up
/// when the listeners are bound, every address it has).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `127.0.0.1:1080`, `[::1]:1080`, and `1080` or `:1080` (which mean 127.0.0.1).
    Ip(SocketAddr),
    /// `localhost:1080`.
    Name(String, u16),
}

impl ListenAddr {
    /// The addresses to bind: the IP, or every address the name has (duplicates dropped).
    pub fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        match self {
            ListenAddr::Ip(addr) => Ok(vec![*addr]),
            ListenAddr::Name(host, port) => {
                let mut addrs: Vec<SocketAddr> = Vec::new();
                for addr in (host.as_str(), *port).to_socket_addrs()? {
                    if !addrs.contains(&addr) {
                        addrs.push(addr);
                    }
                }
                if addrs.is_empty() {
                    return Err(std::io::Error::other(format!("{host} has no address")));
                }
                Ok(addrs)
            }
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Ip(addr) => write!(f, "{addr}"),
            ListenAddr::Name(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

/// `"127.0.0.1:1080"`, `"[::1]:1080"`, `"1080"` and `":1080"` (127.0.0.1), `"localhost:1080"`.
pub fn parse_listen(s: &str) -> Result<ListenAddr, String> {
    let bad = || {
        format!(
            "{s:?} is not a listen address: expected PORT or :PORT (on 127.0.0.1), IP:PORT, \
             [IPv6]:PORT or HOST:PORT (e.g. 1080, 127.0.0.1:1080, [::1]:1080, localhost:1080)"
        )
    };
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(ListenAddr::Ip(addr));
    }
    let loopback = |port: &str| {
        port.parse::<u16>()
            .map(|p| ListenAddr::Ip(SocketAddr::from(([127, 0, 0, 1], p))))
    };
    if let Ok(addr) = loopback(s.strip_prefix(':').unwrap_or(s)) {
        return Ok(addr);
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse::<u16>().map_err(|_| bad())?;
    // A host name's labels (RFC 1123): letters, digits, hyphens, dots. An IPv6 address
    // without brackets (`::1:1080`) has colons and is refused here with the hint above.
    let is_name = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !host.starts_with(['-', '.']);
    if !is_name {
        return Err(bad());
    }
    // Digits and dots only is an IPv4 address that does not parse (`999.1.1.1`), not a
    // name to look up (a top-level domain is never all digits).
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!(
            "{s:?} is not a listen address: {host} is not an IPv4 address (four numbers of \
             0 to 255, e.g. 127.0.0.1:1080)"
        ));
    }
    Ok(ListenAddr::Name(host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServeSettings, String> {
        super::parse(text).map(|(settings, _)| settings)
    }

    fn listening(s: &ServeSettings) -> Vec<SocketAddr> {
        s.listen
            .iter()
            .flat_map(|l| l.resolve().expect("resolves"))
            .collect()
    }

    #[test]
    fn the_documented_example_is_a_valid_file() {
        // The example at the top of this module, as a user copies it: every key must be
        // known and in its table (a top-level key after a [table] header is not).
        let source = include_str!("config_file.rs");
        let example: String = source
            .lines()
            .skip_while(|line| *line != "//! ```toml")
            .skip(1)
            .take_while(|line| *line != "//! ```")
            .map(|line| {
                line.strip_prefix("//!")
                    .unwrap_or(line)
                    .trim_start_matches(' ')
            })
            .map(|line| format!("{line}\n"))
            .collect();
        assert!(
            example.contains("[[rules]]"),
            "the example was found: {example}"
        );
        let file: Result<FileConfig, _> = toml::from_str(&example);
        assert!(
            file.is_ok(),
            "{}\n{example}",
            file.err().map(|e| e.to_string()).unwrap_or_default()
        );
    }

    #[test]
    fn a_full_file_converts() {
        let s = parse(
            r#"
            listen = ["127.0.0.1:0", "[::1]:0"]
            allow_socks4 = true
            no_http = true
            deny = ["10.0.0.0/8"]
            max_sessions = 5
            upstream = ["socks5h://u:secret@127.0.0.1:1081", "socks4a://[::1]"]
            [[users]]
            name = "alice"
            password = "pw"
            [timeouts]
            handshake = "2s"
            connect = 3
            idle = "never"
            udp_idle = "500ms"
            shutdown_grace = "1m"
            "#,
        )
        .expect("valid file");
        assert_eq!(s.listen.len(), 2);
        assert_eq!(s.users.len(), 1);
        assert_eq!(s.deny.len(), 1);
        assert_eq!(s.server.allow_socks4, Some(true));
        assert!(!s.server.http);
        assert_eq!(s.server.max_sessions, Some(5));
        assert_eq!(s.server.handshake_timeout, Duration::from_secs(2));
        assert_eq!(s.server.connect_timeout, Duration::from_secs(3));
        assert_eq!(s.server.idle_timeout, None);
        assert_eq!(s.server.udp_idle_timeout, Duration::from_millis(500));
        assert_eq!(s.server.shutdown_grace, Duration::from_secs(60));
        assert_eq!(s.upstream.len(), 2);
        let listen = listening(&s);
        assert_eq!(listen.len(), 2);
        let server = s.finish(&listen);
        assert!(server.auth.is_some());
        let egress = server.egress.expect("an upstream chain");
        assert_eq!(
            egress.describe(),
            "socks5h://u:***@127.0.0.1:1081 -> socks4a://[::1]:1080"
        );
        // The chain's steps get the connect timeout.
        assert!(
            format!("{egress:?}").contains("handshake: 3s"),
            "{egress:?}"
        );
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let s = parse("").expect("valid file");
        let listen = listening(&s);
        assert_eq!(
            listen,
            vec!["127.0.0.1:1080".parse::<SocketAddr>().expect("literal")]
        );
        assert!(s.users.is_empty());
        assert!(s.upstream.is_empty());
        assert!(!s.quiet);
        assert_eq!(s.server.handshake_timeout, Duration::from_secs(10));
        assert!(s.finish(&listen).egress.is_none());
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("lisen = []", "line 1: key `lisen`: unknown field `lisen`"),
            (
                "listen = 5",
                "line 1: key `listen`: invalid type: integer `5`, expected a sequence",
            ),
            (
                "listen = [\"127.0.0.1:1\", \"::1:1080\"]",
                "line 1: listen[1]: \"::1:1080\" is not a listen address",
            ),
            (
                "listen = []",
                "line 1: listen: must name at least one address",
            ),
            (
                "[timeouts]\nhandshake = \"10x\"",
                "line 2: timeouts.handshake: \"10x\" is not a duration",
            ),
            (
                "upstream = [\"socks5h://127.0.0.1:1\", \"socks5://bob@127.0.0.1:2\"]",
                "line 1: upstream[1]: hop 2 (socks5://bob@127.0.0.1:2): password of 0 bytes",
            ),
            (
                "idle_timeout = -5",
                "line 1: key `idle_timeout`: -5 is negative: a duration is a number of seconds",
            ),
            (
                "idle_timeout = 1e30",
                "line 1: idle_timeout: \"1000000000000000000000000000000\" is longer than a year",
            ),
            (
                "idle_timeout = true",
                "expected a duration: a number of seconds or text with a unit",
            ),
            (
                "allow_socks4 = true\n\n[timeouts]\nconnect = \"0s\"",
                "line 4: timeouts.connect: must be longer than 0",
            ),
            (
                "connect_timeout = \"0s\"",
                "line 1: connect_timeout: must be longer than 0",
            ),
            (
                "idle_timeout = \"1h\"\n[timeouts]\nidle = \"1h\"",
                "idle_timeout: given twice, also as timeouts.idle",
            ),
            (
                "allow_loopback = true\nallow_loopback_targets = true",
                "allow_loopback: given beside allow_loopback_targets",
            ),
            (
                "allow_socks4 = true\nno_socks4 = true",
                "line 2: no_socks4: contradicts allow_socks4 = true",
            ),
            (
                "[timeouts]\nconect = \"1s\"",
                "line 2: key `conect`: unknown field `conect`",
            ),
            (
                "deny = [\"10.0.0.0/8\",\n  \"10.0.0.0/40\"]",
                "line 2: deny[1]: prefix length",
            ),
            (
                "[[users]]\nname = \"a\"\npassword = \"b\"\n[[users]]\nname = \"c\"\npassword = \"\"",
                "line 4: users[1]: password of 0 bytes",
            ),
            ("[[users]]\nname = \"a\"", "missing field `password`"),
            (
                "allow_from = [\"10.0.0.0/33\"]",
                "line 1: allow_from[0]: prefix length",
            ),
            ("allow_from = []", "line 1: allow_from: must name at least one"),
            (
                "rate_per_user = \"fast\"",
                "line 1: rate_per_user: \"fast\" is not a rate like 10MiB/s",
            ),
            (
                "max_tunnels_per_user = 0",
                "line 1: max_tunnels_per_user: must be at least 1",
            ),
            (
                "outbound_address = [\"10.0.0.1\", \"10.0.0.2\"]",
                "line 1: outbound_address: 10.0.0.1 and 10.0.0.2 are both IPv4",
            ),
            (
                "outbound_address = [\"nope\"]",
                "line 1: outbound_address[0]: \"nope\" is not an IP address",
            ),
            (
                "udp_advertise = \"1.2.3\"",
                "line 1: udp_advertise: \"1.2.3\" is not an IP address",
            ),
            (
                "sniff_timeout = \"0s\"",
                "line 1: sniff_timeout: must be longer than 0",
            ),
            ("default = \"maybe\"", "line 1: key `default`: unknown variant `maybe`"),
            (
                "[[rules]]\naction = \"allow\"\n[[rules]]\nname = \"x\"\naction = \"deny\"\nports = [\"9-1\"]",
                "line 6: rules[1].ports: ",
            ),
            (
                "[[rules]]\naction = \"deny\"\nform = [\"10.0.0.0/8\"]",
                "line 3: key `form`: unknown field `form`",
            ),
            (
                "max_sessions = 0",
                "line 1: max_sessions: must be at least 1",
            ),
            (
                "upstream = [\"socks5h://127.0.0.1:1080\", \"ftp://u:pw@proxy:3128\"]",
                "line 1: upstream[1]: invalid proxy URL \"ftp://u:***@proxy:3128\": unsupported scheme",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(text).expect_err(text);
            assert!(
                err.starts_with(expected) || err.contains(expected),
                "{text:?}: {err}"
            );
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn loopback_targets_follow_the_listeners_unless_allowed() {
        use socksmith::policy::Decision;
        let loopback_refused = |text: &str| {
            let s = parse(text).expect("valid file");
            let listen = listening(&s);
            let server = s.finish(&listen);
            let verdict = server
                .policy
                .check_ip("127.0.0.1".parse().expect("literal"));
            matches!(verdict, Decision::Deny(_))
        };
        assert!(!loopback_refused(r#"listen = ["127.0.0.1:0", "[::1]:0"]"#));
        // Behind a balancer, clients come from anywhere even to a loopback listener.
        assert!(loopback_refused(
            "listen = [\"127.0.0.1:0\"]\nproxy_protocol = true"
        ));
        assert!(!loopback_refused(
            "listen = [\"127.0.0.1:0\"]\nproxy_protocol = true\nallow_loopback_targets = true"
        ));
        assert!(loopback_refused(r#"listen = ["127.0.0.1:0", "0.0.0.0:0"]"#));
        assert!(loopback_refused(r#"listen = ["192.0.2.10:1080"]"#));
        assert!(!loopback_refused(
            "listen = [\"0.0.0.0:0\"]\nallow_loopback_targets = true"
        ));
        // The old name still works, with a deprecation warning.
        let text = "listen = [\"0.0.0.0:0\"]\nallow_loopback = true";
        assert!(!loopback_refused(text));
        let (_, warnings) = super::parse(text).expect("valid file");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("allow_loopback_targets"),
            "{warnings:?}"
        );
        assert!(super::parse("allow_loopback_targets = true")
            .expect("valid")
            .1
            .is_empty());
    }

    #[test]
    fn every_flag_has_a_top_level_key() {
        let s = parse(
            r#"
            handshake_timeout = "2s"
            resolve_timeout = "3s"
            connect_timeout = 4
            idle_timeout = "never"
            udp_idle_timeout = "5s"
            bind_timeout = "6s"
            shutdown_grace = "7s"
            no_socks4 = true
            quiet = true
            proxy_protocol = true
            "#,
        )
        .expect("valid file");
        assert_eq!(s.server.handshake_timeout, Duration::from_secs(2));
        assert_eq!(s.server.resolve_timeout, Duration::from_secs(3));
        assert_eq!(s.server.connect_timeout, Duration::from_secs(4));
        assert_eq!(s.server.idle_timeout, None);
        assert_eq!(s.server.udp_idle_timeout, Duration::from_secs(5));
        assert_eq!(s.server.bind_timeout, Duration::from_secs(6));
        assert_eq!(s.server.shutdown_grace, Duration::from_secs(7));
        assert_eq!(s.server.allow_socks4, Some(false));
        assert!(s.quiet);
        assert!(s.proxy_protocol);
    }

    #[test]
    fn policy_keys_convert() {
        use socksmith::policy::Decision;
        let s = parse(
            r#"
            listen = ["127.0.0.1:0"]
            blocklist = ["/nonexistent/list", "https://lists.example/hosts"]
            blocklist_refresh = "1h"
            blocklist_cache_dir = "/tmp/cache"
            sniff_timeout = "150ms"
            no_sniff = true
            require_hostname = true
            allow_from = ["127.0.0.0/8", "::1"]
            max_tunnels_per_user = 3
            rate_per_user = "1MiB/s"
            max_udp_per_client = 2
            max_bind_per_client = 1
            outbound_address = ["127.0.0.1", "::1"]
            udp_advertise = "203.0.113.7"
            default = "deny"
            [[rules]]
            action = "allow"
            ports = [80]
            "#,
        )
        .expect("valid file");
        assert_eq!(s.blocklist.len(), 2);
        assert!(matches!(s.blocklist[1], ListSource::Url(_)));
        assert_eq!(s.blocklist_refresh, Duration::from_secs(3600));
        assert_eq!(s.server.sniff_timeout, Duration::from_millis(150));
        assert!(!s.server.sniff);
        assert!(s.server.require_hostname);
        assert!(s
            .server
            .allow_from
            .allows("127.0.0.5".parse().expect("literal")));
        assert!(!s
            .server
            .allow_from
            .allows("10.0.0.1".parse().expect("literal")));
        assert_eq!(s.limits.max_tunnels_per_user, Some(3));
        assert_eq!(s.server.outbound_addresses.len(), 2);
        assert_eq!(
            s.server.udp_advertise,
            Some("203.0.113.7".parse().expect("literal"))
        );
        let listen = listening(&s);
        let server = s.finish(&listen);
        assert!(server.accounting.is_some());
        assert_eq!(
            server.rate_per_user.expect("a rate").rate().get(),
            1024 * 1024
        );
        // default = "deny": port 80 matches the allow rule, port 81 no rule.
        let request = |port: u16| socksmith::server::Session {
            client: "127.0.0.1:5000".parse().expect("literal"),
            local: "127.0.0.1:1080".parse().expect("literal"),
            user: None,
            version: socksmith_proto::Version::V5,
            http: false,
            command: socksmith_proto::Command::Connect,
            target: socksmith_proto::TargetAddr::Ip(SocketAddr::from(([127, 0, 0, 1], port))),
        };
        assert_eq!(server.policy.check_request(&request(80)), Decision::Allow);
        let Decision::Deny(reason) = server.policy.check_request(&request(81)) else {
            panic!("port 81 allowed")
        };
        assert!(reason.to_string().contains("default is deny"), "{reason}");
        let plain = parse("").expect("valid file").finish(&listen);
        assert!(plain.accounting.is_none());
        assert!(plain.rate_per_user.is_none());
        assert!(plain.blocklist.is_none());
    }

    #[test]
    fn rules_become_the_policy_after_the_safety_defaults() {
        use socksmith::policy::Decision;
        let s = parse(
            "default = \"deny\"\n\
             [[rules]]\nname = \"office\"\naction = \"allow\"\nfrom = [\"192.0.2.0/24\"]\n",
        )
        .expect("valid rules");
        assert!(s.rules.is_some());
        let listen = listening(&s);
        let server = s.finish(&listen);
        // The safety defaults still come first: metadata is refused whatever the rules say.
        assert!(matches!(
            server
                .policy
                .check_ip("169.254.169.254".parse().expect("literal")),
            Decision::Deny(_)
        ));
        assert!(parse("").expect("valid").rules.is_none());
        let err = parse(
            "[[rules]]\naction = \"deny\"\n\n[[rules]]\naction = \"deny\"\nfrom = [\"nope\"]\n",
        )
        .expect_err("a bad network");
        assert!(err.starts_with("line 6: rules[1].from: "), "{err}");
        let err = parse("[[rules]]\nactoin = \"deny\"\n").expect_err("a typo");
        assert!(err.contains("unknown field `actoin`"), "{err}");
    }

    #[test]
    fn listen_takes_ports_and_host_names() {
        let ip = |s: &str| ListenAddr::Ip(s.parse().expect("literal"));
        assert_eq!(parse_listen("1080"), Ok(ip("127.0.0.1:1080")));
        assert_eq!(parse_listen(":1080"), Ok(ip("127.0.0.1:1080")));
        assert_eq!(parse_listen(":0"), Ok(ip("127.0.0.1:0")));
        assert_eq!(parse_listen("0.0.0.0:1080"), Ok(ip("0.0.0.0:1080")));
        assert_eq!(parse_listen("[::1]:1080"), Ok(ip("[::1]:1080")));
        assert_eq!(
            parse_listen("LocalHost:1080"),
            Ok(ListenAddr::Name("localhost".into(), 1080))
        );
        for bad in [
            "",
            ":",
            "65536",
            ":65536",
            "::1:1080",
            "host",
            "host:",
            "host:port",
            "-x:1",
            "a b:1",
            "127.0.0.1",
        ] {
            let err = parse_listen(bad).expect_err(bad);
            assert!(err.contains("expected PORT or :PORT"), "{bad}: {err}");
        }
        for bad in ["999.1.1.1:5", "10.0.0:80", "1.2.3.4.5:80"] {
            let err = parse_listen(bad).expect_err(bad);
            assert!(err.contains("is not an IPv4 address"), "{bad}: {err}");
        }
        let localhost = parse_listen("localhost:0")
            .expect("valid")
            .resolve()
            .expect("localhost resolves");
        assert!(!localhost.is_empty());
        assert!(
            localhost
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 0),
            "{localhost:?}"
        );
    }

    #[test]
    fn type_errors_never_show_a_password() {
        let cases = [
            (
                "[[users]]\nname = \"a\"\npassword = 12345678",
                "line 3: key `password`: expected a string, found integer",
                "12345678",
            ),
            (
                "users = [{name = \"a\", password = 999}]",
                "expected a string, found integer",
                "999",
            ),
            (
                "upstream = \"socks5h://u:hunter2@h\"",
                "line 1: key `upstream`: expected a list of strings, found string",
                "hunter2",
            ),
            (
                "upstream = [\"socks5h://u:hunter2@h\", 5]",
                "item 1: expected a string, found integer",
                "hunter2",
            ),
        ];
        for (text, expected, secret) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(!err.contains(secret), "{text:?} leaks the value: {err}");
        }
        // Keys that hold no secret still show the value.
        let err = parse("listen = 5").expect_err("a type error");
        assert!(err.contains("integer `5`"), "{err}");
    }

    #[test]
    fn idle_never_and_zero_mean_no_timeout_and_long_timeouts_are_refused() {
        for idle in ["0", "\"0s\"", "\"0\"", "\"never\""] {
            let s = parse(&format!("[timeouts]\nidle = {idle}")).expect(idle);
            assert_eq!(s.server.idle_timeout, None, "{idle}");
        }
        let s = parse("[timeouts]\nidle = \"5m\"").expect("valid");
        assert_eq!(s.server.idle_timeout, Some(Duration::from_secs(300)));
        for (text, key) in [
            (
                "[timeouts]\nhandshake = 18446744073709551615",
                "timeouts.handshake",
            ),
            ("[timeouts]\nbind = \"9000h\"", "timeouts.bind"),
            ("[timeouts]\nidle = 99999999999", "timeouts.idle"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(&format!("line 2: {key}: ")), "{text}: {err}");
            assert!(err.contains("longer than a year"), "{text}: {err}");
        }
    }
}
