//! microsocks (Debian's 1.0.3) as a real SOCKS5 server on loopback:
//! `microsocks -i IP -p PORT [-u USER -P PASS] [-1] [-b BINDIP]`.
//!
//! What it does, as the testkit's own tests verify (`tests/peers.rs`): SOCKS5 CONNECT only, to
//! IPv4, IPv6 and name targets; method none, or username/password when started with `-u/-P`
//! (then "none" is refused); listens on IPv6 too (`-i ::1`). It does not speak SOCKS4 (it closes
//! the connection) and answers BIND and UDP ASSOCIATE with REP 0x07 (command not supported).
//! It does not relay a half-close: the first EOF from either side closes both directions, so
//! tests through it must not half-close and wait for more (use [`crate::raw::echo_exact`]). It
//! also does not handle a greeting and request that arrive in one segment (it answers the
//! greeting and then waits forever), so a client that pipelines stalls against it.
//! It cannot listen on port 0 and report the port, so the testkit picks a free one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use tempfile::TempDir;

use crate::dante::{Dante, DanteOptions};
use crate::process::{free_port, peer_command, PeerProcess, STARTUP_DEADLINE};
use crate::proxy::{Proxy, ProxyKind};
use crate::raw::Credentials;
use crate::tools::require_tool;

/// How to start microsocks.
#[derive(Clone, Debug)]
pub struct MicrosocksOptions {
    /// Require these credentials (`-u`, `-P`).
    pub auth: Option<Credentials>,
    /// Where to listen (`-i`); default 127.0.0.1. Use `::1` for IPv6.
    pub listen: IpAddr,
    /// `-1`: an IP that authenticated once may later connect without credentials.
    pub auth_once: bool,
}

impl Default for MicrosocksOptions {
    fn default() -> Self {
        Self {
            auth: None,
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            auth_once: false,
        }
    }
}

impl MicrosocksOptions {
    /// Options requiring the fixed test credentials [`MICROSOCKS_USER`] / [`MICROSOCKS_PASSWORD`].
    pub fn with_auth() -> Self {
        Self {
            auth: Some(Credentials::new(MICROSOCKS_USER, MICROSOCKS_PASSWORD)),
            ..Self::default()
        }
    }
}

/// The username [`MicrosocksOptions::with_auth`] sets.
pub const MICROSOCKS_USER: &str = "ms-user";
/// The password [`MicrosocksOptions::with_auth`] sets.
pub const MICROSOCKS_PASSWORD: &str = "ms-pass";

/// A running microsocks, killed on drop.
#[derive(Debug)]
pub struct Microsocks {
    process: PeerProcess,
    addr: SocketAddr,
    auth: Option<Credentials>,
    dir: TempDir,
}

impl Microsocks {
    /// Starts microsocks on a free port of `opts.listen` and waits until it accepts.
    ///
    /// `None` when `microsocks` is missing (by the [`crate::tools::peer_missing`] policy).
    /// Panics, with its output, if it does not start.
    pub async fn start(opts: MicrosocksOptions) -> Option<Self> {
        let bin = require_tool("microsocks")?;
        let dir = tempfile::Builder::new()
            .prefix("socksmith-microsocks-")
            .tempdir()
            .expect("create a temporary directory for microsocks");
        let mut last_error = String::new();
        for _attempt in 0..4 {
            let port = free_port(&[opts.listen]);
            let mut cmd = peer_command(&bin);
            cmd.arg("-i")
                .arg(opts.listen.to_string())
                .arg("-p")
                .arg(port.to_string());
            if let Some(c) = &opts.auth {
                cmd.args(["-u", &c.user, "-P", &c.pass]);
            }
            if opts.auth_once {
                cmd.arg("-1");
            }
            let mut process =
                PeerProcess::spawn("microsocks", cmd, &dir.path().join("microsocks.log"))
                    .unwrap_or_else(|e| panic!("{e}"));
            let addr = SocketAddr::new(opts.listen, port);
            match process.wait_for_port(addr, STARTUP_DEADLINE).await {
                Ok(()) => {
                    return Some(Self {
                        process,
                        addr,
                        auth: opts.auth.clone(),
                        dir,
                    })
                }
                Err(e) if process.exited().is_some() => last_error = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("microsocks failed to start 4 times; last attempt:\n{last_error}");
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `socks5h://[user:pass@]ADDR`.
    pub fn url(&self) -> String {
        self.proxy(ProxyKind::Socks5h).url()
    }

    /// This server as a [`Proxy`] of `kind`, with its credentials if it requires them.
    pub fn proxy(&self, kind: ProxyKind) -> Proxy {
        Proxy::new(kind, self.addr).with_auth(self.auth.clone())
    }

    /// The credentials it requires, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.auth.as_ref()
    }

    /// Its output (one line per client), for failure messages.
    pub fn log(&self) -> String {
        self.process.logs()
    }

    /// Its temporary directory (holds the log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Dante and microsocks, for a chain of the two: both started (Dante first), or `None` when
/// either peer is missing (skipped or failed by the [`crate::tools`] policy).
pub async fn dante_and_microsocks(
    dante: DanteOptions,
    microsocks: MicrosocksOptions,
) -> Option<(Dante, Microsocks)> {
    let dante = Dante::start(dante).await;
    let microsocks = Microsocks::start(microsocks).await;
    Some((dante?, microsocks?))
}
