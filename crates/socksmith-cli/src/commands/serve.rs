//! `socksmith serve`: binds the listeners, announces them, runs the library's
//! [`Server`] until SIGINT or SIGTERM, and exits 0 after the grace period.
//!
//! Settings come from the defaults, then the `--config` file, then the flags given on the
//! command line (each flag replaces the file's value). No protocol code lives here.

use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use socksmith::client::Proxy;
use socksmith::policy::IpNet;
use socksmith::server::{bind_listener, AccountingList, Server, Users};

use crate::admin::{self, Admin, AdminToken};
use crate::config_file::{self, parse_listen, FileConfig, ServeSettings};
use crate::duration::{parse_duration, parse_duration_or_never};

/// Arguments of `socksmith serve`.
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
                  When every listener is ready, one line per listener is printed on stdout: \
                  `listening on ADDR` with the real address (useful with port 0). SIGINT or \
                  SIGTERM stop accepting, let running tunnels finish for --shutdown-grace, then \
                  exit 0. One log line per finished session goes to stderr (--log-format json \
                  for JSON; RUST_LOG or -v for more).\n\n\
                  With --upstream, every tunnel goes through that parent proxy (or chain of \
                  them) instead of straight to the target: CONNECT, BIND (the last hop \
                  listens), UDP ASSOCIATE (through the last hop's relay) and RESOLVE. Nothing \
                  is sent from this host directly; what the chain refuses, the client is \
                  refused with the chain's reply code.\n\n\
                  Durations are written like 500ms, 10s, 5m, 1h (at most a year)."
)]
pub struct Args {
    /// Address to listen on, IP and port (repeatable): 127.0.0.1:1080, [::1]:1080, or port 0
    /// for a free port. Default 127.0.0.1:1080.
    #[arg(short, long = "listen", value_name = "ADDR", value_parser = parse_listen)]
    pub listen: Vec<SocketAddr>,

    /// Require SOCKS5 username/password authentication and accept this user (repeatable).
    /// The password is everything after the first colon. Command lines are visible to other
    /// local users (ps): prefer the config file for real passwords.
    #[arg(short, long = "user", value_name = "NAME:PASSWORD", value_parser = UserSpec::parse)]
    pub user: Vec<UserSpec>,

    /// Read settings from this TOML file; flags given on the command line override it.
    /// Keys: listen, users ([[users]] name/password), allow_socks4, allow_open_proxy,
    /// allow_link_local, allow_loopback, deny, max_sessions, upstream (a list of URLs), admin,
    /// admin_token,
    /// [timeouts] handshake/resolve/connect/idle/udp_idle/bind/shutdown_grace.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Serve SOCKS4/4a clients even though --user requires authentication. SOCKS4 carries no
    /// password: its user id is an unverified claim, so this lets anyone in over SOCKS4 (on a
    /// non-loopback address that is an open proxy: --allow-open-proxy is needed too).
    #[arg(long, conflicts_with = "no_socks4")]
    pub allow_socks4: bool,

    /// Refuse SOCKS4/4a clients (reply 0x5B) even without authentication.
    #[arg(long)]
    pub no_socks4: bool,

    /// Allow listening on non-loopback addresses without --user (or with --allow-socks4).
    /// Anyone who can reach the port can then use the proxy; open proxies are found and
    /// abused within hours.
    #[arg(long)]
    pub allow_open_proxy: bool,

    /// Allow cloud metadata targets, refused by default: the link-local ranges
    /// 169.254.0.0/16 and fe80::/10 (169.254.169.254), fd00:ec2::254 and 100.100.100.200.
    #[arg(long)]
    pub allow_link_local: bool,

    /// Let every client reach this host's loopback addresses (127.0.0.0/8, ::1). By default
    /// they are refused when any listener is on a non-loopback address: the users of a
    /// public proxy must not reach services meant for this host only.
    #[arg(long)]
    pub allow_loopback_targets: bool,

    /// Refuse targets in this network, e.g. 10.0.0.0/8 or 2001:db8::/32 (repeatable). Clients
    /// get reply 0x02 "not allowed by ruleset" (SOCKS4: 0x5B).
    #[arg(long = "deny", value_name = "NET")]
    pub deny: Vec<IpNet>,

    /// Time a client has to send its greeting, credentials and request. Default 10s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub handshake_timeout: Option<Duration>,

    /// Time allowed for one DNS lookup. Default 10s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub resolve_timeout: Option<Duration>,

    /// Time allowed to connect to a target (all its addresses together). Default 10s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub connect_timeout: Option<Duration>,

    /// Close a tunnel after this long without traffic either way; 0 or never: never.
    /// Default 1h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_or_never)]
    pub idle_timeout: Option<Duration>,

    /// Close a UDP association after this long without a datagram. Default 2m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub udp_idle_timeout: Option<Duration>,

    /// Time a BIND request waits for the peer to connect. Default 60s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub bind_timeout: Option<Duration>,

    /// On SIGINT/SIGTERM, time running tunnels get to finish before they are closed.
    /// Default 10s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub shutdown_grace: Option<Duration>,

    /// Serve at most this many clients at once; more wait to be accepted. Default: no limit.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_sessions: Option<u64>,

    /// Send every tunnel through this parent proxy instead of connecting directly. Repeat for
    /// a chain, first hop first. curl's URL forms: socks4://, socks4a://, socks5:// or
    /// socks5h://[USER[:PASSWORD]@]HOST[:PORT] (port 1080 by default). With socks5h and
    /// socks4a the last hop resolves target names; with socks5 and socks4 they are resolved
    /// here. A password in the URL is visible to other local users (ps): prefer the config
    /// file's `upstream` key. The flags replace the file's list.
    #[arg(long = "upstream", value_name = "URL", value_parser = UpstreamUrl::parse)]
    pub upstream: Vec<UpstreamUrl>,

    /// Serve HTTP for operators on this address (IP:PORT; port 0 picks a free port, printed
    /// as `admin on http://ADDR/`): Prometheus metrics at /metrics, the live tunnels at
    /// /api/sessions, a status page at /. An address other machines can reach needs
    /// --admin-token.
    #[arg(long, value_name = "ADDR", value_parser = admin::parse_addr, env = "SOCKSMITH_ADMIN")]
    pub admin: Option<SocketAddr>,

    /// Every request to --admin must then carry `Authorization: Bearer TOKEN` (the status
    /// page asks for it once). Visible to other local users (ps): prefer the environment
    /// variable or the config file's `admin_token`.
    #[arg(long, value_name = "TOKEN", value_parser = AdminToken::parse,
          env = "SOCKSMITH_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<AdminToken>,
}

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
    let mut settings = settings(args)?;
    // Checked before anything binds: a refused --admin never listens.
    let admin = Admin::from_settings(settings.admin.take(), settings.admin_token.take())?;
    let (listen, mut config) = settings.finish();
    if let Some(admin) = &admin {
        // Beside any accounting the configuration already has (limits), not instead of it.
        config.accounting = Some(AccountingList::join(
            config.accounting.take(),
            admin.accounting(),
        ));
    }
    let runtime = super::runtime()?;
    runtime.block_on(async move {
        let server = Server::new(config);
        // Before binding: a refused configuration never listens, not even for a moment.
        server.check_addresses(&listen)?;
        let listeners = listen
            .iter()
            .map(|addr| bind_listener(*addr).with_context(|| format!("cannot listen on {addr}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        server.check_listeners(&listeners)?;
        if let Some(egress) = &server.config().egress {
            tracing::info!(upstream = %egress.describe(), "tunnels go through the upstream chain");
        }
        // Handlers first: a signal sent as soon as the addresses are announced must find them.
        let shutdown = shutdown_signal()?;
        if let Some(admin) = admin {
            admin.start(&server).await?;
        }
        let mut stdout = std::io::stdout().lock();
        for listener in &listeners {
            writeln!(stdout, "listening on {}", listener.local_addr()?)?;
        }
        stdout.flush()?;
        drop(stdout);
        server.serve(listeners, shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Defaults, then the file, then the flags.
fn settings(args: Args) -> anyhow::Result<ServeSettings> {
    let mut s = match &args.config {
        Some(path) => config_file::load(path)?,
        None => ServeSettings::try_from(FileConfig::default())
            .expect("the empty file converts to the defaults"),
    };
    if !args.listen.is_empty() {
        s.listen = args.listen;
    }
    if !args.user.is_empty() {
        let mut users = Users::new();
        for (i, UserSpec(spec)) in args.user.iter().enumerate() {
            let (name, password) = spec
                .split_once(':')
                .with_context(|| format!("--user #{}: expected NAME:PASSWORD", i + 1))?;
            users
                .insert(name, password)
                .with_context(|| format!("--user #{} ({name})", i + 1))?;
        }
        s.users = users;
    }
    if args.allow_socks4 {
        s.server.allow_socks4 = Some(true);
    }
    if args.no_socks4 {
        s.server.allow_socks4 = Some(false);
    }
    s.server.allow_open_proxy |= args.allow_open_proxy;
    s.allow_link_local |= args.allow_link_local;
    s.allow_loopback |= args.allow_loopback_targets;
    if !args.deny.is_empty() {
        s.deny = args.deny;
    }
    if args.admin.is_some() {
        s.admin = args.admin;
    }
    if args.admin_token.is_some() {
        s.admin_token = args.admin_token;
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
    if let Some(n) = args.max_sessions {
        s.server.max_sessions = Some(usize::try_from(n).unwrap_or(usize::MAX));
    }
    for (name, d) in [
        ("--handshake-timeout", s.server.handshake_timeout),
        ("--resolve-timeout", s.server.resolve_timeout),
        ("--connect-timeout", s.server.connect_timeout),
        ("--udp-idle-timeout", s.server.udp_idle_timeout),
        ("--bind-timeout", s.server.bind_timeout),
    ] {
        anyhow::ensure!(!d.is_zero(), "{name} must be longer than 0");
    }
    Ok(s)
}

/// Completes on SIGINT or SIGTERM.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
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
            let settings = super::settings(*args).expect("valid settings");
            assert_eq!(settings.server.idle_timeout, None, "{never}");
        }
    }
}
