//! tinyproxy (Debian's 1.11) as a real HTTP proxy on loopback, for the client's `http://` hops:
//! `tinyproxy -d -c FILE` with a configuration written into a temporary directory.
//!
//! What it does, as the testkit's own tests verify (`tests/tinyproxy_peer.rs`):
//! `CONNECT host:port` is answered `HTTP/1.0 200 Connection established`, then a plain tunnel;
//! when started with [`TinyproxyOptions::with_auth`] (its `BasicAuth user password` line), a
//! CONNECT without credentials gets `407` with `Proxy-Authenticate: Basic` and one with wrong
//! credentials `401 Unauthorized`; a target the filter refuses gets `403 Filtered`, a target
//! that refuses the connection `500 Unable to connect`. CONNECT goes to any port: with no
//! `ConnectPort` line tinyproxy allows all ("If no ConnectPort line is found, then all ports
//! are allowed", tinyproxy.conf(5)); [`TinyproxyOptions::connect_ports`] restricts them (then
//! `403`). Like microsocks it does not pass a half-close on: tests must not half-close and wait.
//!
//! It never reaches outside this machine: `Listen`/`Allow` keep it on 127.0.0.1, and a
//! default-deny filter (`FilterDefaultDeny Yes`) admits only loopback targets (127.0.0.0/8,
//! `::1`, `localhost`); anything else gets `403 Filtered` before tinyproxy resolves or connects.
//! It cannot listen on port 0 and report the port, so the testkit picks a free one.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use tempfile::TempDir;

use crate::process::{free_port, peer_command, PeerProcess, STARTUP_DEADLINE};
use crate::raw::Credentials;
use crate::tools::require_tool;

/// The username [`TinyproxyOptions::with_auth`] sets.
pub const TINYPROXY_USER: &str = "tp-user";
/// The password [`TinyproxyOptions::with_auth`] sets. (tinyproxy's configuration parser takes
/// only letters, digits, `-`, `.` and `_` here, so percent-decoding is shown with
/// [`Tinyproxy::url_encoded`], which encodes every byte.)
pub const TINYPROXY_PASSWORD: &str = "tp.pass_1";

/// The filter tinyproxy applies to every target host (POSIX extended regular expressions,
/// matched against the host without port or brackets): loopback only.
const LOOPBACK_FILTER: &str = "^(127\\.[0-9]+\\.[0-9]+\\.[0-9]+|::1|localhost)$\n";

/// How to start tinyproxy.
#[derive(Clone, Debug, Default)]
pub struct TinyproxyOptions {
    /// Require these credentials (`BasicAuth user password`).
    pub auth: Option<Credentials>,
    /// Allow CONNECT to these ports only (`ConnectPort` lines); empty: every port.
    pub connect_ports: Vec<u16>,
}

impl TinyproxyOptions {
    /// Options requiring [`TINYPROXY_USER`] / [`TINYPROXY_PASSWORD`].
    pub fn with_auth() -> Self {
        Self {
            auth: Some(Credentials::new(TINYPROXY_USER, TINYPROXY_PASSWORD)),
            ..Self::default()
        }
    }
}

/// A running tinyproxy, killed on drop.
#[derive(Debug)]
pub struct Tinyproxy {
    process: PeerProcess,
    addr: SocketAddr,
    auth: Option<Credentials>,
    dir: TempDir,
}

impl Tinyproxy {
    /// Starts tinyproxy on a free port of 127.0.0.1 and waits until it accepts.
    ///
    /// `None` when `tinyproxy` is missing (by the [`crate::tools::peer_missing`] policy).
    /// Panics, with its output, if it does not start.
    pub async fn start(opts: TinyproxyOptions) -> Option<Self> {
        let bin = require_tool("tinyproxy")?;
        let dir = tempfile::Builder::new()
            .prefix("socksmith-tinyproxy-")
            .tempdir()
            .expect("create a temporary directory for tinyproxy");
        let filter = dir.path().join("filter");
        std::fs::write(&filter, LOOPBACK_FILTER).expect("write tinyproxy's filter");
        let log = dir.path().join("tinyproxy.log");
        let listen = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut last_error = String::new();
        for _attempt in 0..4 {
            let port = free_port(&[listen]);
            let conf = dir.path().join("tinyproxy.conf");
            std::fs::write(&conf, config(&opts, port, &filter, &log))
                .expect("write tinyproxy.conf");
            let mut cmd = peer_command(&bin);
            cmd.arg("-d").arg("-c").arg(&conf);
            let mut process =
                PeerProcess::spawn("tinyproxy", cmd, &dir.path().join("tinyproxy.out"))
                    .unwrap_or_else(|e| panic!("{e}"));
            process.add_log(log.clone());
            let addr = SocketAddr::new(listen, port);
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
        panic!("tinyproxy failed to start 4 times; last attempt:\n{last_error}");
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://[user:pass@]ADDR`.
    pub fn url(&self) -> String {
        match &self.auth {
            Some(c) => format!("http://{}:{}@{}", c.user, c.pass, self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    /// [`Self::url`] with every byte of the user and password percent-encoded (`%74%70...`):
    /// a client must decode them to authenticate.
    pub fn url_encoded(&self) -> String {
        match &self.auth {
            Some(c) => format!(
                "http://{}:{}@{}",
                encode_all(&c.user),
                encode_all(&c.pass),
                self.addr
            ),
            None => format!("http://{}", self.addr),
        }
    }

    /// `http://WRONG:WRONG@ADDR`: credentials it refuses.
    pub fn url_with_wrong_password(&self) -> String {
        let user = self
            .auth
            .as_ref()
            .map_or(TINYPROXY_USER, |c| c.user.as_str());
        format!("http://{user}:wrong-password@{}", self.addr)
    }

    /// `http://ADDR`, without credentials even when it requires them.
    pub fn url_without_auth(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The credentials it requires, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.auth.as_ref()
    }

    /// Its output and log (a few lines per request), for failure messages and assertions.
    pub fn log(&self) -> String {
        self.process.logs()
    }

    /// Its temporary directory (configuration, filter, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// tinyproxy.conf for `opts` on `port`.
fn config(opts: &TinyproxyOptions, port: u16, filter: &Path, log: &Path) -> String {
    let mut conf = String::new();
    let _ = writeln!(conf, "Port {port}");
    let _ = writeln!(conf, "Listen 127.0.0.1");
    let _ = writeln!(conf, "Allow 127.0.0.1");
    let _ = writeln!(conf, "Timeout 60");
    let _ = writeln!(conf, "MaxClients 200");
    let _ = writeln!(conf, "LogFile \"{}\"", log.display());
    let _ = writeln!(conf, "LogLevel Info");
    let _ = writeln!(conf, "Filter \"{}\"", filter.display());
    let _ = writeln!(conf, "FilterType ere");
    let _ = writeln!(conf, "FilterDefaultDeny Yes");
    if let Some(c) = &opts.auth {
        let _ = writeln!(conf, "BasicAuth {} {}", c.user, c.pass);
    }
    for port in &opts.connect_ports {
        let _ = writeln!(conf, "ConnectPort {port}");
    }
    conf
}

/// Every byte as `%XX`.
fn encode_all(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}
