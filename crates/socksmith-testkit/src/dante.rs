//! Dante (`danted` 1.4, Debian's dante-server) as a real SOCKS4/SOCKS5 server on loopback.
//!
//! The configuration comes from `peers/danted.conf.in`, written into a temporary directory with
//! the log file beside it. What this Dante does, as the testkit's own tests verify
//! (`tests/peers.rs`):
//! - SOCKS5 CONNECT to IPv4, IPv6 and name targets, BIND, UDP ASSOCIATE; method none or
//!   username/password (RFC 1929, checked against the system user from [`crate::users`]).
//! - SOCKS4 CONNECT and BIND (only with `DanteAuth::None`: SOCKS4 cannot authenticate).
//! - No SOCKS4a: Dante 1.4 takes DSTIP 0.0.0.x literally and rejects the request (CD 0x5B).
//! - A name target is resolved and only its first address is tried (`localhost` -> 127.0.0.1).
//! - Half-close is relayed. Failures get proper codes (refused target: REP 0x05).
//! - Listens on 127.0.0.1 and, where the host has it, ::1, on the same port.
//!
//! Does not manage the system user (see [`crate::users`]) or any client.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::process::{can_bind, free_port, peer_command, PeerProcess, STARTUP_DEADLINE};
use crate::proxy::{Proxy, ProxyKind};
use crate::raw::Credentials;
use crate::tools::{is_root, require_tool};

/// The configuration template, with `{{PLACEHOLDERS}}`.
pub const CONFIG_TEMPLATE: &str = include_str!("../peers/danted.conf.in");

/// Which SOCKS5 method Dante requires.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DanteAuth {
    /// `socksmethod: none`: anyone on loopback, SOCKS4 and SOCKS5.
    #[default]
    None,
    /// `socksmethod: username`: RFC 1929 against the system user [`crate::users::TEST_USER`];
    /// SOCKS4 requests are refused.
    Username,
}

/// How to start Dante.
#[derive(Clone, Debug, Default)]
pub struct DanteOptions {
    /// The method required of clients.
    pub auth: DanteAuth,
    /// `debug: 2` in the config: a very detailed log, for investigating a failure.
    pub debug: bool,
}

impl DanteOptions {
    /// [`DanteAuth::Username`], the rest default.
    pub fn with_username() -> Self {
        Self {
            auth: DanteAuth::Username,
            ..Self::default()
        }
    }
}

/// A running `danted`, stopped (with its forked children) on drop.
#[derive(Debug)]
pub struct Dante {
    // Declared first so that it is dropped (stopped) before the directory is removed.
    process: PeerProcess,
    addr: SocketAddr,
    addr_v6: Option<SocketAddr>,
    auth: Option<Credentials>,
    config: String,
    log_path: PathBuf,
    dir: TempDir,
}

impl Dante {
    /// Starts Dante on a free loopback port and waits until it accepts connections.
    ///
    /// `None` when `danted` is missing, or for [`DanteAuth::Username`] when not root (by the
    /// [`crate::tools::peer_missing`] policy). Panics, with Dante's log, if it does not start.
    pub async fn start(opts: DanteOptions) -> Option<Self> {
        let danted = require_tool("danted")?;
        let auth = match opts.auth {
            DanteAuth::None => None,
            DanteAuth::Username => Some(crate::users::test_user()?),
        };
        let dir = tempfile::Builder::new()
            .prefix("socksmith-dante-")
            .tempdir()
            .expect("create a temporary directory for danted");
        let v6 = can_bind(IpAddr::V6(Ipv6Addr::LOCALHOST));
        let mut ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        if v6 {
            ips.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
        }
        let log_path = dir.path().join("danted.log");
        let mut last_error = String::new();
        for _attempt in 0..4 {
            let port = free_port(&ips);
            let config = render_config(&ips, port, &log_path, opts.auth, opts.debug);
            let config_path = dir.path().join("danted.conf");
            std::fs::write(&config_path, &config).expect("write danted.conf");
            let _ = std::fs::remove_file(&log_path);
            let mut cmd = peer_command(&danted);
            cmd.arg("-f")
                .arg(&config_path)
                .arg("-p")
                .arg(dir.path().join("danted.pid"));
            let mut process = PeerProcess::spawn("danted", cmd, &dir.path().join("danted.out"))
                .unwrap_or_else(|e| panic!("{e}"));
            process.add_log(log_path.clone());
            let addr = SocketAddr::new(ips[0], port);
            match process.wait_for_port(addr, STARTUP_DEADLINE).await {
                Ok(()) => {
                    return Some(Self {
                        process,
                        addr,
                        addr_v6: v6.then(|| SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port)),
                        auth,
                        config,
                        log_path,
                        dir,
                    })
                }
                // Exited early: most likely another process took the port since free_port
                // checked it. Try another port.
                Err(e) if process.exited().is_some() => last_error = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("danted failed to start 4 times; last attempt:\n{last_error}");
    }

    /// Where it listens on IPv4 loopback.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where it listens on IPv6 loopback (same port), if the host has `::1`.
    pub fn addr_v6(&self) -> Option<SocketAddr> {
        self.addr_v6
    }

    /// `socks5h://[user:pass@]127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.proxy(ProxyKind::Socks5h).url()
    }

    /// This server as a [`Proxy`] of `kind` on IPv4, with its credentials if it requires them.
    pub fn proxy(&self, kind: ProxyKind) -> Proxy {
        Proxy::new(kind, self.addr).with_auth(self.auth.clone())
    }

    /// The credentials it accepts ([`DanteAuth::Username`]), `None` for [`DanteAuth::None`].
    pub fn credentials(&self) -> Option<&Credentials> {
        self.auth.as_ref()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &str {
        &self.config
    }

    /// Its log file (`logoutput`).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Its log and output, for failure messages.
    pub fn log(&self) -> String {
        self.process.logs()
    }

    /// Its temporary directory (config, pid file, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Fills [`CONFIG_TEMPLATE`].
fn render_config(ips: &[IpAddr], port: u16, log: &Path, auth: DanteAuth, debug: bool) -> String {
    let internal: Vec<String> = ips
        .iter()
        .map(|ip| format!("internal: {ip} port = {port}"))
        .collect();
    let external: Vec<String> = ips.iter().map(|ip| format!("external: {ip}")).collect();
    // As root, danted switches to these users per task; reading /etc/shadow for the username
    // method needs the privileged one to be root. Not root: no switching is possible, leave the
    // lines out and run as whoever we are.
    let users = if is_root() {
        "user.privileged: root\nuser.unprivileged: nobody"
    } else {
        ""
    };
    let method = match auth {
        DanteAuth::None => "none",
        DanteAuth::Username => "username",
    };
    CONFIG_TEMPLATE
        .replace("{{LOG}}", &log.display().to_string())
        .replace("{{DEBUG}}", if debug { "2" } else { "0" })
        .replace("{{INTERNAL}}", &internal.join("\n"))
        .replace("{{EXTERNAL}}", &external.join("\n"))
        .replace("{{SOCKSMETHOD}}", method)
        .replace("{{USERS}}", users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_fills_every_placeholder() {
        let ips = [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ];
        let c = render_config(
            &ips,
            4242,
            Path::new("/tmp/x.log"),
            DanteAuth::Username,
            false,
        );
        assert!(!c.contains("{{"), "{c}");
        assert!(c.contains("internal: 127.0.0.1 port = 4242"));
        assert!(c.contains("internal: ::1 port = 4242"));
        assert!(c.contains("external: ::1"));
        assert!(c.contains("socksmethod: username"));
        assert!(c.contains("logoutput: /tmp/x.log"));
    }
}
