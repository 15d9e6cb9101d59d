//! The `socksmith serve --config FILE` format (TOML) and its one-time conversion into the
//! library's [`ServerConfig`].
//!
//! [`FileConfig`] mirrors the file exactly (unknown keys are errors, so a typo never goes
//! unnoticed); [`ServeSettings::try_from`] turns it into typed values, with errors that name
//! the key. The command line overrides the file afterwards (see `commands::serve`).
//!
//! ```toml
//! listen = ["127.0.0.1:1080", "[::1]:1080"]
//! allow_socks4 = false         # serve SOCKS4/4a even with users (default: only without)
//! allow_open_proxy = false     # non-loopback listeners without users
//! allow_link_local = false     # cloud metadata targets: 169.254.0.0/16, fe80::/10, fd00:ec2::254, 100.100.100.200
//! allow_loopback = false       # this host's loopback as a target for everyone (default: only
//!                              # when every listener is on loopback, and then only for local clients)
//! deny = ["10.0.0.0/8"]        # refuse targets in these prefixes (reply 0x02)
//! max_sessions = 10000
//! # every tunnel through these parent proxies, first hop first (curl's URL forms)
//! upstream = ["socks5h://user:pass@127.0.0.1:1081"]
//!
//! admin = "127.0.0.1:9090"    # metrics, live tunnels and a status page (see `serve --help`)
//! admin_token = "..."          # needed when `admin` is not a loopback address
//!
//! [[users]]
//! name = "alice"
//! password = "correct horse"
//!
//! [timeouts]                   # "500ms", "10s", "5m", "1h", or a number of seconds
//! handshake = "10s"
//! resolve = "10s"
//! connect = "10s"
//! idle = "1h"                  # "never" (or 0) disables it
//! udp_idle = "2m"
//! bind = "60s"
//! shutdown_grace = "10s"
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use socksmith::client::{Client, Proxy, Timeouts};
use socksmith::policy::{IpNet, LoopbackTargets, Rules};
use socksmith::server::{ServerConfig, Users};

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
    /// Allow non-loopback listeners without users.
    pub allow_open_proxy: Option<bool>,
    /// Allow link-local and cloud metadata targets.
    pub allow_link_local: Option<bool>,
    /// Allow every client to reach this host's loopback addresses.
    pub allow_loopback: Option<bool>,
    /// Target prefixes to refuse.
    pub deny: Option<Vec<String>>,
    /// Most sessions at once.
    pub max_sessions: Option<usize>,
    /// Parent proxy URLs, first hop first. They may hold passwords: a type error never
    /// shows the value.
    #[serde(default, deserialize_with = "secret_strings")]
    pub upstream: Option<Vec<String>>,
    /// Deadlines.
    pub timeouts: Option<FileTimeouts>,
    /// The admin HTTP server's address.
    pub admin: Option<String>,
    /// The admin server's bearer token. A type error never shows the value.
    #[serde(default, deserialize_with = "secret_option")]
    pub admin_token: Option<String>,
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
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FileDuration {
    /// Whole seconds.
    Seconds(u64),
    /// Text with a unit.
    Text(String),
}

/// A bad configuration: one line naming the key.
#[derive(Debug)]
pub struct ConfigError {
    key: String,
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
    pub listen: Vec<SocketAddr>,
    /// Users, kept apart so the command line can replace them.
    pub users: Users,
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
    /// Everything else.
    pub server: ServerConfig,
}

impl ServeSettings {
    /// Puts users, rules and the upstream chain into the server configuration. The chain's
    /// client resolves with the server's resolver and gets the server's deadlines: the
    /// resolve timeout, the connect timeout (for the first hop and each handshake step), the
    /// BIND timeout.
    ///
    /// Loopback targets: allowed to everyone with `allow_loopback`; else refused to everyone
    /// when any listener is on another address (the users of a public proxy must not reach
    /// services on this host's 127.0.0.1), and left to local clients when all listeners are
    /// on loopback (all clients are local then).
    pub fn finish(self) -> (Vec<SocketAddr>, ServerConfig) {
        let ServeSettings {
            listen,
            users,
            deny,
            allow_link_local,
            allow_loopback,
            upstream,
            admin: _,
            admin_token: _,
            mut server,
        } = self;
        let loopback = if allow_loopback {
            LoopbackTargets::Allow
        } else if listen.iter().all(|a| a.ip().to_canonical().is_loopback()) {
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
                .expect("a chain with at least one hop builds");
            server.set_upstream(client);
        }
        if !users.is_empty() {
            server.auth = Some(Arc::new(users));
        }
        let rules = deny.into_iter().fold(
            Rules::default()
                .allow_link_local(allow_link_local)
                .loopback(loopback),
            Rules::deny,
        );
        server.policy = Arc::new(rules);
        (listen, server)
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
            None => vec![DEFAULT_LISTEN.parse().expect("the default address parses")],
        };
        let mut users = Users::new();
        for (i, user) in file.users.unwrap_or_default().into_iter().enumerate() {
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
        server.allow_socks4 = file.allow_socks4;
        server.allow_open_proxy = file.allow_open_proxy.unwrap_or(false);
        if let Some(0) = file.max_sessions {
            return Err(ConfigError::new("max_sessions", "must be at least 1"));
        }
        server.max_sessions = file.max_sessions;
        let upstream = file
            .upstream
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, url)| {
                url.parse::<Proxy>()
                    .map_err(|e| ConfigError::new(format!("upstream[{i}]"), e))
            })
            .collect::<Result<_, _>>()?;
        let t = file.timeouts.unwrap_or_default();
        let set = |slot: &mut Duration, value: Option<FileDuration>, key: &str| {
            if let Some(v) = value {
                *slot = v.to_duration(key)?;
            }
            Ok::<_, ConfigError>(())
        };
        set(
            &mut server.handshake_timeout,
            t.handshake,
            "timeouts.handshake",
        )?;
        set(&mut server.resolve_timeout, t.resolve, "timeouts.resolve")?;
        set(&mut server.connect_timeout, t.connect, "timeouts.connect")?;
        set(
            &mut server.udp_idle_timeout,
            t.udp_idle,
            "timeouts.udp_idle",
        )?;
        set(&mut server.bind_timeout, t.bind, "timeouts.bind")?;
        set(
            &mut server.shutdown_grace,
            t.shutdown_grace,
            "timeouts.shutdown_grace",
        )?;
        if let Some(idle) = t.idle {
            server.idle_timeout = idle.to_optional_duration("timeouts.idle")?;
        }
        let admin = file
            .admin
            .map(|a| admin::parse_addr(&a).map_err(|p| ConfigError::new("admin", p)))
            .transpose()?;
        let admin_token = file
            .admin_token
            .map(|t| AdminToken::parse(&t).map_err(|p| ConfigError::new("admin_token", p)))
            .transpose()?;
        Ok(ServeSettings {
            listen,
            users,
            admin,
            admin_token,
            deny,
            allow_link_local: file.allow_link_local.unwrap_or(false),
            allow_loopback: file.allow_loopback.unwrap_or(false),
            upstream,
            server,
        })
    }
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

/// Reads and converts a config file. Errors are one line: the file, the key, the problem.
pub fn load(path: &Path) -> anyhow::Result<ServeSettings> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
    let file: FileConfig = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("config file {}: {}", path.display(), describe(&e, &text)))?;
    ServeSettings::try_from(file)
        .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
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

/// `"127.0.0.1:1080"`, `"[::1]:1080"`.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!("{s:?} is not an IP address with a port (e.g. 127.0.0.1:1080 or [::1]:1080)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServeSettings, String> {
        let file: FileConfig = toml::from_str(text).map_err(|e| describe(&e, text))?;
        ServeSettings::try_from(file).map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_file_converts() {
        let s = parse(
            r#"
            listen = ["127.0.0.1:0", "[::1]:0"]
            allow_socks4 = true
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
        assert_eq!(s.server.max_sessions, Some(5));
        assert_eq!(s.server.handshake_timeout, Duration::from_secs(2));
        assert_eq!(s.server.connect_timeout, Duration::from_secs(3));
        assert_eq!(s.server.idle_timeout, None);
        assert_eq!(s.server.udp_idle_timeout, Duration::from_millis(500));
        assert_eq!(s.server.shutdown_grace, Duration::from_secs(60));
        assert_eq!(s.upstream.len(), 2);
        let (listen, server) = s.finish();
        assert_eq!(listen.len(), 2);
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
        assert_eq!(
            s.listen,
            vec!["127.0.0.1:1080".parse::<SocketAddr>().expect("literal")]
        );
        assert!(s.users.is_empty());
        assert!(s.upstream.is_empty());
        assert_eq!(s.server.handshake_timeout, Duration::from_secs(10));
        assert!(s.finish().1.egress.is_none());
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
                "listen = [\"localhost:1080\"]",
                "listen[0]: \"localhost:1080\" is not an IP address",
            ),
            ("listen = []", "listen: must name at least one address"),
            (
                "[timeouts]\nhandshake = \"10x\"",
                "timeouts.handshake: \"10x\" is not a duration",
            ),
            (
                "[timeouts]\nconnect = \"0s\"",
                "timeouts.connect: must be longer than 0",
            ),
            (
                "[timeouts]\nconect = \"1s\"",
                "line 2: key `conect`: unknown field `conect`",
            ),
            ("deny = [\"10.0.0.0/40\"]", "deny[0]: prefix length"),
            (
                "[[users]]\nname = \"a\"\npassword = \"\"",
                "users[0]: password of 0 bytes",
            ),
            ("[[users]]\nname = \"a\"", "missing field `password`"),
            ("max_sessions = 0", "max_sessions: must be at least 1"),
            (
                "upstream = [\"socks5h://127.0.0.1:1080\", \"https://u:pw@proxy:3128\"]",
                "upstream[1]: invalid proxy URL \"https://u:***@proxy:3128\": unsupported scheme",
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
            let (_, server) = parse(text).expect("valid file").finish();
            let verdict = server
                .policy
                .check_ip("127.0.0.1".parse().expect("literal"));
            matches!(verdict, Decision::Deny(_))
        };
        assert!(!loopback_refused(r#"listen = ["127.0.0.1:0", "[::1]:0"]"#));
        assert!(loopback_refused(r#"listen = ["127.0.0.1:0", "0.0.0.0:0"]"#));
        assert!(loopback_refused(r#"listen = ["192.0.2.10:1080"]"#));
        assert!(!loopback_refused(
            "listen = [\"0.0.0.0:0\"]\nallow_loopback = true"
        ));
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
            assert!(err.starts_with(key), "{text}: {err}");
            assert!(err.contains("longer than a year"), "{text}: {err}");
        }
    }
}
