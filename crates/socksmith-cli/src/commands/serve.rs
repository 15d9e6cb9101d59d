//! `socksmith serve`: binds the listeners (or takes the ones systemd passes), announces them,
//! runs the library's [`Server`] until SIGINT or SIGTERM, re-reads its configuration on
//! SIGHUP, and exits 0 after the grace period.
//!
//! Settings come from the defaults, then the `--config` file, then the environment
//! (`SOCKSMITH_<KEY>`), then the flags (each replaces what came before). [`settings`] builds
//! them and is run again on every reload. No protocol code lives here.

use std::fmt;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use socksmith::client::Proxy;
use socksmith::policy::blocklist::ListSource;
use socksmith::policy::{ClientFilter, IpNet, Rate};
use socksmith::server::{
    bind_listener, proxy_protocol, Accounting, AccountingList, Server, ServerConfig, Users,
};
use tokio::net::TcpListener;

use crate::admin::{self, Admin, AdminReload, AdminToken};
use crate::config_file::{
    self, one_per_family, parse_listen, FileConfig, ListenAddr, LiveLimits, ServeSettings,
};
use crate::duration::{parse_duration, parse_duration_or_never};
use crate::logging;

/// Arguments of `socksmith serve`.
///
/// Every option can also be set by an environment variable `SOCKSMITH_<KEY>` (named in each
/// option's help) and by a key of the config file (the option's name with `_` for `-`).
/// On/off options take an optional value (`--quiet`, `--quiet=false`), so that the command
/// line can switch off what the environment or the file switched on.
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Run a SOCKS server that SOCKS4, SOCKS4a and SOCKS5 clients (curl, browsers, ssh, \
                  ncat, PySocks, tor-resolve...) can use on the same port: CONNECT, BIND, UDP \
                  ASSOCIATE, and Tor's RESOLVE/RESOLVE_PTR.\n\n\
                  By default it listens on 127.0.0.1:1080 without authentication, so only \
                  programs on this machine can use it. With --user, SOCKS5 clients must log in \
                  (RFC 1929 username/password) and SOCKS4 clients, which cannot send a password, \
                  are refused unless --allow-socks4 is given. Listening on an address other \
                  machines can reach without --user is refused unless --allow-open-proxy is \
                  given.\n\n\
                  Settings: flag, then environment variable (SOCKSMITH_LISTEN, \
                  SOCKSMITH_MAX_SESSIONS...), then the --config file, then the default. \
                  `--config FILE --check` only validates the file and exits 0, or 1 with the \
                  file, line and key at fault.\n\n\
                  When every listener is ready, one line per listener is printed on stdout: \
                  `listening on ADDR` with the real address (useful with port 0). SIGINT or \
                  SIGTERM stop accepting, let running tunnels finish for --shutdown-grace, then \
                  exit 0. SIGHUP re-reads the config file and applies it to new sessions; \
                  running tunnels are not touched, and a file that does not validate is logged \
                  and ignored. One log line per finished session goes to stderr (--quiet: none; \
                  --log-format json for JSON; RUST_LOG or -v for more).\n\n\
                  Under systemd: with socket activation (LISTEN_FDS) and no --listen, it serves \
                  on the sockets it is given; with NOTIFY_SOCKET it reports READY=1, \
                  RELOADING=1 and STOPPING=1 (Type=notify). See dist/systemd/.\n\n\
                  Behind HAProxy or another L4 balancer, --proxy-protocol reads the PROXY \
                  protocol header (v1 send-proxy, v2 send-proxy-v2) that starts each \
                  connection and uses the real client's address for decisions and logs.\n\n\
                  With --upstream, every tunnel goes through that parent proxy (or chain of \
                  them) instead of straight to the target: CONNECT, BIND (the last hop \
                  listens), UDP ASSOCIATE (through the last hop's relay) and RESOLVE. Nothing \
                  is sent from this host directly; what the chain refuses, the client is \
                  refused with the chain's reply code.\n\n\
                  Durations are written like 500ms, 10s, 5m, 1h (at most a year)."
)]
pub struct Args {
    /// Address to listen on (repeatable; comma-separated in the environment): PORT or :PORT
    /// (on 127.0.0.1), IP:PORT, [IPv6]:PORT, or HOST:PORT (every address the name has, e.g.
    /// localhost:1080). Port 0 picks a free port. Default 127.0.0.1:1080, or the sockets
    /// systemd passes (socket activation).
    #[arg(
        short,
        long = "listen",
        value_name = "ADDR",
        value_parser = parse_listen,
        env = "SOCKSMITH_LISTEN",
        value_delimiter = ','
    )]
    pub listen: Vec<ListenAddr>,

    /// Require SOCKS5 username/password authentication and accept this user (repeatable).
    /// The password is everything after the first colon. Command lines are visible to other
    /// local users (ps): prefer the config file for real passwords.
    #[arg(
        short,
        long = "user",
        value_name = "NAME:PASSWORD",
        value_parser = UserSpec::parse,
        env = "SOCKSMITH_USER",
        hide_env_values = true
    )]
    pub user: Vec<UserSpec>,

    /// Read settings from this TOML file; the environment and flags override it. Keys: each
    /// option's name with `_` for `-` (listen, allow_socks4, max_sessions, idle_timeout...),
    /// [[users]] tables (name, password), and [[rules]] tables with a top-level `default`
    /// (who may go where, first match wins).
    #[arg(short, long, value_name = "FILE", env = "SOCKSMITH_CONFIG")]
    pub config: Option<PathBuf>,

    /// Validate the settings (the --config file, the environment, the flags) and exit: 0 when
    /// they are valid, 1 with the file, line and key at fault.
    #[arg(long)]
    pub check: bool,

    /// Serve SOCKS4/4a clients even though --user requires authentication. SOCKS4 carries no
    /// password: its user id is an unverified claim, so this lets anyone in over SOCKS4 (on a
    /// non-loopback address that is an open proxy: --allow-open-proxy is needed too).
    #[arg(long, conflicts_with = "no_socks4", env = "SOCKSMITH_ALLOW_SOCKS4", value_name = "BOOL",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_socks4: Option<bool>,

    /// Refuse SOCKS4/4a clients (reply 0x5B) even without authentication.
    #[arg(long, env = "SOCKSMITH_NO_SOCKS4", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub no_socks4: Option<bool>,

    /// Serve SOCKS only: close HTTP proxy requests (CONNECT, GET http://...) at once without
    /// an answer. By default every listener serves both, told apart by the first byte.
    #[arg(long, env = "SOCKSMITH_NO_HTTP", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub no_http: Option<bool>,

    /// Allow listening on non-loopback addresses without --user (or with --allow-socks4).
    /// Anyone who can reach the port can then use the proxy; open proxies are found and
    /// abused within hours.
    #[arg(long, env = "SOCKSMITH_ALLOW_OPEN_PROXY", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_open_proxy: Option<bool>,

    /// Allow cloud metadata targets, refused by default: the link-local ranges
    /// 169.254.0.0/16 and fe80::/10 (169.254.169.254), fd00:ec2::254 and 100.100.100.200.
    #[arg(long, env = "SOCKSMITH_ALLOW_LINK_LOCAL", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_link_local: Option<bool>,

    /// Let every client reach this host's loopback addresses (127.0.0.0/8, ::1). By default
    /// they are refused when any listener is on a non-loopback address: the users of a
    /// public proxy must not reach services meant for this host only.
    #[arg(long, env = "SOCKSMITH_ALLOW_LOOPBACK_TARGETS", value_name = "BOOL",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_loopback_targets: Option<bool>,

    /// Refuse targets in this network, e.g. 10.0.0.0/8 or 2001:db8::/32 (repeatable;
    /// comma-separated in the environment). Clients get reply 0x02 "not allowed by ruleset"
    /// (SOCKS4: 0x5B).
    #[arg(
        long = "deny",
        value_name = "NET",
        env = "SOCKSMITH_DENY",
        value_delimiter = ','
    )]
    pub deny: Vec<IpNet>,

    /// Time a client has to send its greeting, credentials and request. Default 10s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          env = "SOCKSMITH_HANDSHAKE_TIMEOUT")]
    pub handshake_timeout: Option<Duration>,

    /// Time allowed for one DNS lookup. Default 10s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          env = "SOCKSMITH_RESOLVE_TIMEOUT")]
    pub resolve_timeout: Option<Duration>,

    /// Time allowed to connect to a target (all its addresses together). Default 10s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          env = "SOCKSMITH_CONNECT_TIMEOUT")]
    pub connect_timeout: Option<Duration>,

    /// Close a tunnel after this long without traffic either way; 0 or never: never.
    /// Default 1h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_or_never,
          env = "SOCKSMITH_IDLE_TIMEOUT")]
    pub idle_timeout: Option<Duration>,

    /// Close a UDP association after this long without a datagram. Default 2m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          env = "SOCKSMITH_UDP_IDLE_TIMEOUT")]
    pub udp_idle_timeout: Option<Duration>,

    /// Time a BIND request waits for the peer to connect. Default 60s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          env = "SOCKSMITH_BIND_TIMEOUT")]
    pub bind_timeout: Option<Duration>,

    /// On SIGINT/SIGTERM, time running tunnels get to finish before they are closed.
    /// Default 10s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          env = "SOCKSMITH_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<Duration>,

    /// Serve at most this many clients at once; more wait to be accepted. Default: what the
    /// open-file limit allows (three descriptors a session, a reserve kept free).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..),
          env = "SOCKSMITH_MAX_SESSIONS")]
    pub max_sessions: Option<u64>,

    /// Serve at most this many sessions at once from one client address (IPv6: one /64);
    /// its further connections are closed at once, so one client cannot hold the sessions
    /// others wait for. Default: half of --max-sessions.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..),
          env = "SOCKSMITH_MAX_SESSIONS_PER_CLIENT")]
    pub max_sessions_per_client: Option<u64>,

    /// Threads serving connections. Default: one per core this process may use (taskset and
    /// cgroup limits count). 1 runs everything on one thread (a current-thread runtime): the
    /// lightest for a small proxy. Fixed at start (a reload does not change it).
    #[arg(long, value_name = "N", value_parser = parse_threads, env = "SOCKSMITH_THREADS")]
    pub threads: Option<usize>,

    /// Send every tunnel through this parent proxy instead of connecting directly. Repeat for
    /// a chain, first hop first. curl's URL forms: socks4://, socks4a://, socks5:// or
    /// socks5h://[USER[:PASSWORD]@]HOST[:PORT], or an HTTP proxy,
    /// http://[USER[:PASSWORD]@]HOST[:PORT] (CONNECT only: no UDP or BIND through it); port
    /// 1080 by default, as curl. With socks5h, socks4a and http the last hop resolves target
    /// names; with socks5 and socks4 they are resolved here. A password in the URL is visible
    /// to other local users (ps): prefer the config file's `upstream` key. The flags replace
    /// the file's list.
    #[arg(long = "upstream", value_name = "URL", value_parser = UpstreamUrl::parse,
          env = "SOCKSMITH_UPSTREAM", hide_env_values = true)]
    pub upstream: Vec<UpstreamUrl>,

    /// Leave out the per-session log lines (finished sessions, refused and failed
    /// handshakes); warnings and errors stay.
    #[arg(short, long, env = "SOCKSMITH_QUIET", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub quiet: Option<bool>,

    /// Every connection starts with a PROXY protocol header (v1 or v2), as HAProxy's
    /// send-proxy and send-proxy-v2 write it: the client address in it is the one the rules
    /// and the log lines use. A connection without a valid header is closed without a reply.
    /// Only for listeners that nothing but the load balancer can reach.
    #[arg(long, env = "SOCKSMITH_PROXY_PROTOCOL", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub proxy_protocol: Option<bool>,

    /// Require SOCKS5 login and check passwords against this file of `NAME:HASH` lines
    /// (argon2id; write it with `socksmith passwd FILE USER`). Works beside --user. Re-read
    /// on SIGHUP. File key: `users_file`.
    #[arg(long = "users", value_name = "FILE", env = "SOCKSMITH_USERS")]
    pub users_file: Option<PathBuf>,

    /// Refuse targets whose name (or a parent domain of it) is on this list (repeatable;
    /// comma-separated in the environment): a file or an http(s) URL, in hosts format
    /// (`0.0.0.0 ads.example`), one domain a line, or adblock's `||ads.example^` and
    /// `*.ads.example`. Clients get 0x02 (SOCKS4: 0x5B) and the log line names the list.
    /// URLs are fetched at start and cached (--blocklist-cache-dir); files are re-read on
    /// SIGHUP and with the URLs every --blocklist-refresh.
    #[arg(
        long = "blocklist",
        value_name = "FILE|URL",
        env = "SOCKSMITH_BLOCKLIST",
        value_delimiter = ','
    )]
    pub blocklist: Vec<String>,

    /// How often the blocklists are reloaded (URLs fetched again; a failed fetch keeps the
    /// copy in use). Default 24h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          env = "SOCKSMITH_BLOCKLIST_REFRESH")]
    pub blocklist_refresh: Option<Duration>,

    /// Where the last good copy of each URL blocklist is kept, so that a restart without
    /// network still blocks. Default $CACHE_DIRECTORY/blocklists under systemd's
    /// CacheDirectory= (the shipped unit sets it), else $XDG_CACHE_HOME/socksmith/blocklists
    /// (or ~/.cache/socksmith/blocklists); a service without either should set one such as
    /// /var/cache/socksmith.
    #[arg(long, value_name = "DIR", env = "SOCKSMITH_BLOCKLIST_CACHE_DIR")]
    pub blocklist_cache_dir: Option<PathBuf>,

    /// With a blocklist, how long to wait for the first bytes of a CONNECT that named only an
    /// IP address, to read the name from a TLS ClientHello (SNI) or an HTTP Host header.
    /// Protocols where the server speaks first (SSH, SMTP) start this much later. Default
    /// 300ms.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          env = "SOCKSMITH_SNIFF_TIMEOUT")]
    pub sniff_timeout: Option<Duration>,

    /// Do not read names from the first bytes of IP-only CONNECTs: a client that resolves
    /// names itself (socks5://, socks4://) then gets around the blocklists.
    #[arg(long, env = "SOCKSMITH_NO_SNIFF", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub no_sniff: Option<bool>,

    /// Refuse requests that name their target by IP address only (0x02; SOCKS4: 0x5B), and
    /// drop UDP datagrams sent to a bare address (DNS queries excepted), so that every name
    /// meets the blocklists and rules: clients must use socks5h:// or socks4a:// (remote DNS).
    #[arg(long, env = "SOCKSMITH_REQUIRE_HOSTNAME", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub require_hostname: Option<bool>,

    /// Serve only clients from this network, e.g. 192.0.2.0/24 (repeatable; comma-separated
    /// in the environment). Others are closed right after accept, nothing read or sent.
    #[arg(
        long = "allow-from",
        value_name = "NET",
        env = "SOCKSMITH_ALLOW_FROM",
        value_delimiter = ','
    )]
    pub allow_from: Vec<IpNet>,

    /// At most N tunnels (CONNECT, BIND, UDP ASSOCIATE) at once per logged-in user; the next
    /// is refused with 0x02.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..),
          env = "SOCKSMITH_MAX_TUNNELS_PER_USER")]
    pub max_tunnels_per_user: Option<u64>,

    /// Each logged-in user's bandwidth, each way, all their tunnels together: 10MiB/s,
    /// 500KiB/s, 1MB/s.
    #[arg(long, value_name = "RATE", value_parser = str::parse::<Rate>,
          env = "SOCKSMITH_RATE_PER_USER")]
    pub rate_per_user: Option<Rate>,

    /// At most N UDP associations at once per client address; the next is refused (0x02).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..),
          env = "SOCKSMITH_MAX_UDP_PER_CLIENT")]
    pub max_udp_per_client: Option<u64>,

    /// At most N BIND listeners at once per client address; the next is refused (0x02).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..),
          env = "SOCKSMITH_MAX_BIND_PER_CLIENT")]
    pub max_bind_per_client: Option<u64>,

    /// The source address of outbound connections and datagrams (repeatable: one IPv4 and
    /// one IPv6; comma-separated in the environment). Default: the kernel chooses.
    #[arg(
        long = "outbound-address",
        value_name = "IP",
        env = "SOCKSMITH_OUTBOUND_ADDRESS",
        value_delimiter = ','
    )]
    pub outbound_address: Vec<IpAddr>,

    /// The address written in UDP ASSOCIATE and BIND replies instead of the one the client
    /// reached (for a server behind NAT: its public address).
    #[arg(long, value_name = "IP", env = "SOCKSMITH_UDP_ADVERTISE")]
    pub udp_advertise: Option<IpAddr>,

    /// Serve HTTP for operators on this address (IP:PORT; port 0 picks a free port, printed
    /// as `admin on http://ADDR/`): Prometheus metrics at /metrics, the live tunnels at
    /// /api/sessions, a status page at /. An address other machines can reach needs
    /// --admin-token. Fixed at start (a reload does not move it; it does change the token).
    #[arg(long, value_name = "ADDR", value_parser = admin::parse_addr, env = "SOCKSMITH_ADMIN")]
    pub admin: Option<SocketAddr>,

    /// Every request to --admin must then carry `Authorization: Bearer TOKEN` (the status
    /// page asks for it once). Visible to other local users (ps): prefer the environment
    /// variable or the config file's `admin_token`.
    #[arg(long, value_name = "TOKEN", value_parser = AdminToken::parse,
          env = "SOCKSMITH_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<AdminToken>,
}

/// `--threads N`: at least 1, and a count a machine could run (at most 1024).
fn parse_threads(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1 (1 serves everything on one thread)".into()),
        Ok(n) if n <= MAX_THREADS => Ok(n),
        Ok(_) => Err(format!("at most {MAX_THREADS}")),
        Err(_) => Err("not a number of threads (a whole number, 1 or more)".into()),
    }
}

/// The most `--threads` accepts: far above any core count, low enough to catch a typo.
const MAX_THREADS: usize = 1024;

/// A `--user NAME:PASSWORD` value, split later (so that an error never echoes it); `Debug`
/// shows the name only.
#[derive(Clone)]
pub struct UserSpec(String);

impl UserSpec {
    fn parse(s: &str) -> Result<Self, std::convert::Infallible> {
        Ok(UserSpec(s.to_owned()))
    }
}

impl fmt::Debug for UserSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.split_once(':') {
            Some((name, _)) => write!(f, "{name:?}:***"),
            None => f.write_str("<not NAME:PASSWORD, hidden>"),
        }
    }
}

/// A `--upstream URL` value, parsed later (so that an error never echoes it); `Debug` hides
/// the password as the proxy URL's `Display` does.
#[derive(Clone)]
pub struct UpstreamUrl(String);

impl UpstreamUrl {
    fn parse(s: &str) -> Result<Self, std::convert::Infallible> {
        Ok(UpstreamUrl(s.to_owned()))
    }
}

impl fmt::Debug for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.parse::<Proxy>() {
            Ok(proxy) => write!(f, "{:?}", proxy.to_string()),
            Err(_) => f.write_str("<invalid proxy URL, hidden>"),
        }
    }
}

/// Runs `socksmith serve`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Before the runtime starts its threads: this reads and clears LISTEN_FDS/LISTEN_PID, so
    // that no child process could mistake the sockets for its own.
    let mut inherited = listenfd::ListenFd::from_env();
    let mut settings = settings(&args)?;
    // Checked before anything binds (and by --check): a refused --admin never listens.
    let admin = Admin::from_settings(settings.admin.take(), settings.admin_token.take())?;
    if args.check {
        // The checks of the start too, short of binding: the open-proxy guard.
        if inherited.len() == 0 {
            let addrs = resolve_listen(&settings.listen)?;
            Server::new(settings.finish(&addrs)).check_addresses(&addrs)?;
        }
        match &args.config {
            Some(path) => println!("config file {}: ok", path.display()),
            None => println!("settings: ok (no --config file given)"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    logging::set_quiet(settings.quiet);
    raise_open_file_limit();
    let runtime = super::runtime_with(settings.threads)?;
    runtime.block_on(serve(args, settings, &mut inherited, admin))
}

async fn serve(
    args: Args,
    settings: ServeSettings,
    inherited: &mut listenfd::ListenFd,
    admin: Option<Admin>,
) -> anyhow::Result<ExitCode> {
    let admin_accounting = admin.as_ref().map(Admin::accounting);
    let listen = settings.listen.clone();
    // Listener-level: fixed at start, as the listeners are.
    let behind_balancer = settings.proxy_protocol;
    let (listeners, server, live) = if inherited.len() > 0 {
        anyhow::ensure!(
            args.listen.is_empty(),
            "systemd passed {} listening socket(s) (LISTEN_FDS) and --listen (or \
             SOCKSMITH_LISTEN) names others: use one or the other",
            inherited.len()
        );
        let listeners = take_inherited(inherited)?;
        let addrs = local_addrs(&listeners)?;
        let (config, live) = settings.finish_carrying(&addrs, &LiveLimits::default());
        let server = Server::new(with_accounting(config, admin_accounting.as_ref()));
        server.check_listeners(&listeners)?;
        (listeners, server, live)
    } else {
        let addrs = resolve_listen(&listen)?;
        let (config, live) = settings.finish_carrying(&addrs, &LiveLimits::default());
        let server = Server::new(with_accounting(config, admin_accounting.as_ref()));
        // Before binding: a refused configuration never listens, not even for a moment.
        server.check_addresses(&addrs)?;
        let listeners = addrs
            .iter()
            .map(|addr| bind_listener(*addr).with_context(|| format!("cannot listen on {addr}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        (listeners, server, live)
    };
    if let Some(egress) = &server.config().egress {
        tracing::info!(upstream = %egress.describe(), "tunnels go through the upstream chain");
    }
    let addrs = local_addrs(&listeners)?;
    // Handlers first: a signal sent as soon as the addresses are announced must find them.
    let signals = Signals::install()?;
    let admin_reload = admin.as_ref().map(Admin::reload_handle);
    if let Some(admin) = admin {
        admin.start(&server).await?;
    }
    let mut stdout = std::io::stdout().lock();
    for addr in &addrs {
        writeln!(stdout, "listening on {addr}")?;
    }
    stdout.flush()?;
    drop(stdout);
    // The sockets are listening: connections queue in the kernel from now on, so the service
    // is ready even before the accept loop's first poll.
    notify(&[sd_notify::NotifyState::Ready]);
    let reloader = std::sync::Arc::new(Reloader {
        args,
        listen,
        proxy_protocol: behind_balancer,
        addrs,
        server: server.clone(),
        admin: admin_accounting,
        admin_reload,
        blocklist_refresh: std::sync::Mutex::new(None),
        live: std::sync::Mutex::new(live),
    });
    reloader.refresh_blocklists(&server.config());
    let shutdown = signals.run(reloader);
    if behind_balancer {
        proxy_protocol::serve(&server, listeners, shutdown).await?;
    } else {
        server.serve(listeners, shutdown).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The listening sockets systemd passed (socket activation), each checked to be a TCP socket.
fn take_inherited(inherited: &mut listenfd::ListenFd) -> anyhow::Result<Vec<TcpListener>> {
    (0..inherited.len())
        .map(|i| {
            let listener = inherited
                .take_tcp_listener(i)
                .with_context(|| format!("socket {} passed by systemd (fd {})", i + 1, i + 3))?
                .with_context(|| format!("socket {} passed by systemd was already taken", i + 1))?;
            listener.set_nonblocking(true)?;
            Ok(TcpListener::from_std(listener)?)
        })
        .collect()
}

fn local_addrs(listeners: &[TcpListener]) -> anyhow::Result<Vec<SocketAddr>> {
    listeners
        .iter()
        .map(|l| l.local_addr().context("reading a listener's address"))
        .collect()
}

/// Every address the `listen` setting names, host names looked up.
fn resolve_listen(listen: &[ListenAddr]) -> anyhow::Result<Vec<SocketAddr>> {
    let mut addrs = Vec::new();
    for spec in listen {
        for addr in spec
            .resolve()
            .with_context(|| format!("cannot listen on {spec}: looking up the name"))?
        {
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
    }
    Ok(addrs)
}

/// Raises the open-file soft limit to the hard limit: every tunnel holds two descriptors, and
/// the usual soft limit of 1,024 would cap the server near 500 tunnels.
fn raise_open_file_limit() {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE).ok();
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(now) => tracing::debug!(
            before = before.map_or(0, |(soft, _)| soft),
            now,
            "open-file soft limit raised to the hard limit"
        ),
        Err(e) => tracing::debug!(error = %e, "could not raise the open-file soft limit"),
    }
}

/// Sends states to systemd when it asked for them (NOTIFY_SOCKET is set); a failure is logged,
/// never fatal.
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not notify the service manager (NOTIFY_SOCKET)");
    }
}

/// The signal handlers, installed before the listeners are announced.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// Completes on SIGINT or SIGTERM; reloads on every SIGHUP before that.
    async fn run(mut self, reloader: std::sync::Arc<Reloader>) {
        loop {
            tokio::select! {
                _ = self.term.recv() => {
                    tracing::info!("SIGTERM: shutting down");
                    break;
                }
                _ = self.int.recv() => {
                    tracing::info!("SIGINT: shutting down");
                    break;
                }
                _ = self.hup.recv() => std::sync::Arc::clone(&reloader).reload().await,
            }
        }
        notify(&[sd_notify::NotifyState::Stopping]);
    }
}

/// What a reload needs: the command line (flags and environment, read once) and what the
/// running server listens on.
struct Reloader {
    args: Args,
    listen: Vec<ListenAddr>,
    proxy_protocol: bool,
    addrs: Vec<SocketAddr>,
    server: Server,
    /// The task that reloads the blocklists in use every --blocklist-refresh.
    blocklist_refresh: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The admin server's accounting, kept across reloads (its counters carry on).
    admin: Option<Arc<dyn Accounting>>,
    /// The limits' state in the configuration in use, which the next one counts on from.
    live: std::sync::Mutex<LiveLimits>,
    /// The running admin server's token, which a reload replaces.
    admin_reload: Option<AdminReload>,
}

/// A configuration checked by [`Reloader::prepare`], put in use by [`Reloader::reload`].
struct Prepared {
    config: ServerConfig,
    quiet: bool,
    live: LiveLimits,
    admin_token: Option<AdminToken>,
}

impl Reloader {
    /// Keeps `config`'s blocklists fresh (URLs fetched at once, then everything reloaded
    /// every --blocklist-refresh), in place of the task that refreshed the previous ones.
    fn refresh_blocklists(&self, config: &ServerConfig) {
        let task = config.blocklist.as_ref().map(|set| {
            let set = std::sync::Arc::clone(set);
            tokio::spawn(set.run_refresh(std::future::pending()))
        });
        let mut slot = self
            .blocklist_refresh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(old) = std::mem::replace(&mut *slot, task) {
            old.abort();
        }
    }

    /// Re-reads the settings and hands them to the server for new sessions; running tunnels
    /// keep theirs. Settings that do not validate are logged and the old ones keep serving.
    async fn reload(self: std::sync::Arc<Self>) {
        let mut reloading = vec![sd_notify::NotifyState::Reloading];
        // systemd 253 and later want the time with RELOADING=1 (Type=notify-reload).
        if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
            reloading.push(now);
        }
        notify(&reloading);
        // Off the async threads: the users file and the blocklists are read again (a large
        // list takes about a second).
        let this = std::sync::Arc::clone(&self);
        let prepared = tokio::task::spawn_blocking(move || this.prepare())
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("reading the configuration: {e}")));
        match prepared {
            Ok(Prepared {
                config,
                quiet,
                live,
                admin_token,
            }) => {
                self.refresh_blocklists(&config);
                self.server.reload(config);
                *self
                    .live
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = live;
                if let Some(admin) = &self.admin_reload {
                    admin.set_token(admin_token);
                }
                logging::set_quiet(quiet);
                tracing::info!("SIGHUP: configuration reloaded; new sessions use it");
            }
            Err(e) => tracing::error!(
                error = %format_args!("{e:#}"),
                "SIGHUP: the new configuration is not valid; the old one keeps serving"
            ),
        }
        notify(&[sd_notify::NotifyState::Ready]);
    }

    /// The new configuration, checked as at start.
    fn prepare(&self) -> anyhow::Result<Prepared> {
        let mut settings = settings(&self.args)?;
        if settings.listen != self.listen {
            tracing::warn!(
                "SIGHUP: the listen addresses changed; they take effect only at a restart"
            );
        }
        if settings.proxy_protocol != self.proxy_protocol {
            tracing::warn!("SIGHUP: proxy_protocol changed; it takes effect only at a restart");
        }
        let admin_addr = settings.admin.take();
        let admin_token = settings.admin_token.take();
        match &self.admin_reload {
            Some(running) => {
                if admin_addr != Some(running.addr()) {
                    tracing::warn!(
                        "SIGHUP: the admin address changed; it takes effect only at a restart"
                    );
                }
                // As at start: the running admin address may need a token.
                running.check(admin_token.as_ref())?;
            }
            None if admin_addr.is_some() => {
                tracing::warn!("SIGHUP: admin was added; it takes effect only at a restart");
            }
            None => {}
        }
        let quiet = settings.quiet;
        let live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let (config, live) = settings.finish_carrying(&self.addrs, &live);
        let config = with_accounting(config, self.admin.as_ref());
        // The open-proxy guard, as at start: removing every user from a public server's file
        // must not turn it into an open proxy.
        Server::new(config.clone()).check_addresses(&self.addrs)?;
        Ok(Prepared {
            config,
            quiet,
            live,
            admin_token,
        })
    }
}

/// `config` with `extra` heard too (the admin's metrics), beside any accounting it has
/// (limits), not instead of it.
fn with_accounting(mut config: ServerConfig, extra: Option<&Arc<dyn Accounting>>) -> ServerConfig {
    if let Some(extra) = extra {
        config.accounting = Some(AccountingList::join(
            config.accounting.take(),
            Arc::clone(extra),
        ));
    }
    config
}

/// Defaults, then the file, then the environment and the flags (clap has already put each
/// environment variable where its flag was not given). Run again on every reload.
fn settings(args: &Args) -> anyhow::Result<ServeSettings> {
    let mut s = match &args.config {
        Some(path) => config_file::load(path)?,
        None => ServeSettings::try_from(FileConfig::default())
            .expect("the empty file converts to the defaults"),
    };
    if !args.listen.is_empty() {
        s.listen = args.listen.clone();
    }
    if !args.user.is_empty() {
        let mut users = Users::new();
        s.user_names.clear();
        for (i, UserSpec(spec)) in args.user.iter().enumerate() {
            let (name, password) = spec
                .split_once(':')
                .with_context(|| format!("--user #{}: expected NAME:PASSWORD", i + 1))?;
            users
                .insert(name, password)
                .with_context(|| format!("--user #{} ({name})", i + 1))?;
            s.user_names.push(name.to_owned());
        }
        s.users = users;
    }
    if let Some(allow) = args.allow_socks4 {
        s.server.allow_socks4 = Some(allow);
    }
    if args.no_socks4 == Some(true) {
        s.server.allow_socks4 = Some(false);
    }
    if let Some(allow) = args.allow_open_proxy {
        s.server.allow_open_proxy = allow;
    }
    if let Some(allow) = args.allow_link_local {
        s.allow_link_local = allow;
    }
    if let Some(allow) = args.allow_loopback_targets {
        s.allow_loopback = allow;
    }
    if let Some(quiet) = args.quiet {
        s.quiet = quiet;
    }
    if let Some(proxy_protocol) = args.proxy_protocol {
        s.proxy_protocol = proxy_protocol;
    }
    if let Some(no_http) = args.no_http {
        s.server.http = !no_http;
    }
    if !args.deny.is_empty() {
        s.deny = args.deny.clone();
    }
    if args.admin.is_some() {
        s.admin = args.admin;
    }
    if args.threads.is_some() {
        s.threads = args.threads;
    }
    if args.admin_token.is_some() {
        s.admin_token = args.admin_token.clone();
    }
    if !args.upstream.is_empty() {
        s.upstream = args
            .upstream
            .iter()
            .enumerate()
            .map(|(i, UpstreamUrl(url))| {
                url.parse::<Proxy>()
                    .with_context(|| format!("--upstream #{}", i + 1))
            })
            .collect::<anyhow::Result<_>>()?;
        config_file::check_upstream(&s.upstream)
            .map_err(|(i, e)| anyhow::anyhow!("--upstream #{}: {e}", i + 1))?;
    }
    let set = |slot: &mut Duration, flag: Option<Duration>| {
        if let Some(d) = flag {
            *slot = d;
        }
    };
    set(&mut s.server.handshake_timeout, args.handshake_timeout);
    set(&mut s.server.resolve_timeout, args.resolve_timeout);
    set(&mut s.server.connect_timeout, args.connect_timeout);
    set(&mut s.server.udp_idle_timeout, args.udp_idle_timeout);
    set(&mut s.server.bind_timeout, args.bind_timeout);
    set(&mut s.server.shutdown_grace, args.shutdown_grace);
    if let Some(idle) = args.idle_timeout {
        s.server.idle_timeout = (!idle.is_zero()).then_some(idle);
    }
    if let Some(n) = args.max_sessions_per_client {
        s.server.max_sessions_per_client = Some(usize::try_from(n).unwrap_or(usize::MAX));
    }
    if let Some(n) = args.max_sessions {
        s.server.max_sessions = Some(usize::try_from(n).unwrap_or(usize::MAX));
    }
    if let Some(path) = &args.users_file {
        s.users_file = Some(path.clone());
    }
    if !args.blocklist.is_empty() {
        s.blocklist = args
            .blocklist
            .iter()
            .map(|b| ListSource::parse(b))
            .collect();
    }
    if let Some(d) = args.blocklist_refresh {
        s.blocklist_refresh = d;
    }
    if let Some(dir) = &args.blocklist_cache_dir {
        s.blocklist_cache_dir = Some(dir.clone());
    }
    set(&mut s.server.sniff_timeout, args.sniff_timeout);
    if let Some(no_sniff) = args.no_sniff {
        s.server.sniff = !no_sniff;
    }
    if let Some(require) = args.require_hostname {
        s.server.require_hostname = require;
    }
    if !args.allow_from.is_empty() {
        s.server.allow_from = ClientFilter::new(args.allow_from.clone());
    }
    let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    if let Some(n) = args.max_tunnels_per_user {
        s.limits.max_tunnels_per_user = Some(count(n));
    }
    if let Some(n) = args.max_udp_per_client {
        s.limits.max_udp_per_client = Some(count(n));
    }
    if let Some(n) = args.max_bind_per_client {
        s.limits.max_bind_per_client = Some(count(n));
    }
    if let Some(rate) = args.rate_per_user {
        s.limits.rate_per_user = Some(rate);
    }
    if !args.outbound_address.is_empty() {
        s.server.outbound_addresses = one_per_family(args.outbound_address.clone())
            .map_err(|p| anyhow::anyhow!("--outbound-address: {p}"))?;
    }
    if let Some(ip) = args.udp_advertise {
        s.server.udp_advertise = Some(ip);
    }
    for (name, d) in [
        ("--blocklist-refresh", s.blocklist_refresh),
        ("--sniff-timeout", s.server.sniff_timeout),
        ("--handshake-timeout", s.server.handshake_timeout),
        ("--resolve-timeout", s.server.resolve_timeout),
        ("--connect-timeout", s.server.connect_timeout),
        ("--udp-idle-timeout", s.server.udp_idle_timeout),
        ("--bind-timeout", s.server.bind_timeout),
    ] {
        anyhow::ensure!(!d.is_zero(), "{name} must be longer than 0");
    }
    s.load_files()?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    #[test]
    fn debug_output_hides_passwords() {
        let cli = Cli::try_parse_from([
            "socksmith",
            "serve",
            "--user",
            "alice:s3cret-one",
            "--user",
            "no-colon-s3cret",
            "--upstream",
            "socks5h://bob:s3cret-two@127.0.0.1:1081",
            "--upstream",
            "not a URL s3cret",
        ])
        .expect("valid arguments");
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        let shown = format!("{args:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains(r#""alice":***"#), "{shown}");
        assert!(
            shown.contains("socks5h://bob:***@127.0.0.1:1081"),
            "{shown}"
        );
    }

    #[test]
    fn timeouts_past_a_year_are_refused_naming_the_flag() {
        let err = Cli::try_parse_from([
            "socksmith",
            "serve",
            "--handshake-timeout",
            "18446744073709551615",
        ])
        .expect_err("too long");
        let message = err.to_string();
        assert!(message.contains("--handshake-timeout"), "{message}");
        assert!(message.contains("longer than a year"), "{message}");
        // `never` and 0 are the same for the idle timeout, as in the config file.
        for never in ["never", "0"] {
            let cli = Cli::try_parse_from(["socksmith", "serve", "--idle-timeout", never])
                .expect("valid");
            let Command::Serve(args) = cli.command else {
                panic!("serve")
            };
            let settings = super::settings(&args).expect("valid settings");
            assert_eq!(settings.server.idle_timeout, None, "{never}");
        }
    }
}
