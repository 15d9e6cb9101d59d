//! HAProxy (Debian package `haproxy`) as a TCP load balancer in front of SOCKS servers, started
//! on loopback with a configuration written here, killed on drop.
//!
//! Each backend server gets the PROXY protocol version the test asks for (`send-proxy`: v1,
//! `send-proxy-v2`: v2) and a health check that carries the header too (`check-send-proxy`;
//! with v2 that is a `LOCAL` header) and then speaks SOCKS5: it sends a greeting offering "no
//! authentication" and expects `05 00` back (or `05 FF` with `expect_auth`), so a check passes
//! only if the server really answered SOCKS after the header. [`Haproxy::check_status`] reads
//! each server's last check result from HAProxy's stats socket.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio::process::Command;

use crate::process::{free_port, PeerProcess, STARTUP_DEADLINE};
use crate::tools::require_tool;

/// How HAProxy sends the PROXY protocol to one backend server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// `send-proxy`: the v1 text header.
    V1,
    /// `send-proxy-v2`: the v2 binary header.
    V2,
}

/// A running HAProxy, stopped on drop.
#[derive(Debug)]
pub struct Haproxy {
    process: PeerProcess,
    addr: SocketAddr,
    stats_socket: PathBuf,
    _dir: TempDir,
}

impl Haproxy {
    /// Starts HAProxy listening on a free 127.0.0.1 port, round-robin over `backends` (named
    /// `s1`, `s2`, ... in order). `expect_auth`: the backends require a password, so the
    /// health check expects method 0xFF to its "no authentication" greeting. `None` when
    /// haproxy is missing and peers are not required.
    pub async fn start(
        backends: &[(SocketAddr, ProxyProtocol)],
        expect_auth: bool,
    ) -> Option<Self> {
        let haproxy = require_tool("haproxy")?;
        let dir = tempfile::Builder::new()
            .prefix("socksmith-haproxy-")
            .tempdir()
            .expect("create a temporary directory for haproxy");
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let addr = SocketAddr::new(ip, free_port(&[ip]));
        let stats_socket = dir.path().join("stats.sock");
        let expect = if expect_auth { "05ff" } else { "0500" };
        let mut config = format!(
            "global\n\
             \x20   stats socket {stats} mode 600 level admin\n\
             defaults\n\
             \x20   mode tcp\n\
             \x20   timeout connect 5s\n\
             \x20   timeout client 60s\n\
             \x20   timeout server 60s\n\
             frontend socks\n\
             \x20   bind {addr}\n\
             \x20   default_backend socksmith\n\
             backend socksmith\n\
             \x20   balance roundrobin\n\
             \x20   option tcp-check\n\
             \x20   tcp-check connect default\n\
             \x20   tcp-check send-binary 050100\n\
             \x20   tcp-check expect binary {expect}\n",
            stats = stats_socket.display(),
        );
        for (i, (backend, protocol)) in backends.iter().enumerate() {
            let send = match protocol {
                ProxyProtocol::V1 => "send-proxy",
                ProxyProtocol::V2 => "send-proxy-v2",
            };
            config.push_str(&format!(
                "    server s{n} {backend} {send} check check-send-proxy inter 200ms rise 1 fall 2\n",
                n = i + 1
            ));
        }
        let config_path = dir.path().join("haproxy.cfg");
        std::fs::write(&config_path, &config).expect("write haproxy.cfg");
        let log = dir.path().join("haproxy.log");
        let mut cmd = Command::new(haproxy);
        // -db: stay in the foreground, no daemon.
        cmd.arg("-db")
            .arg("-f")
            .arg(&config_path)
            .stdin(Stdio::null());
        let mut process = PeerProcess::spawn("haproxy", cmd, &log)
            .unwrap_or_else(|e| panic!("start haproxy: {e}"));
        process
            .wait_for_port(addr, STARTUP_DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("{e}\nconfig:\n{config}"));
        Some(Haproxy {
            process,
            addr,
            stats_socket,
            _dir: dir,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Each backend server's name and last health check result (`L7OK` when it answered
    /// SOCKS after the header; `L4CON`, `L7RSP`, ... otherwise), from `show stat`; empty
    /// while the stats socket is not there yet.
    pub async fn check_status(&self) -> Vec<(String, String)> {
        // HAProxy creates the socket around the time it starts accepting: until then, no
        // status yet.
        let Ok(mut stream) = UnixStream::connect(&self.stats_socket).await else {
            return Vec::new();
        };
        stream
            .write_all(b"show stat\n")
            .await
            .expect("ask for the stats");
        let mut csv = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut csv))
            .await
            .expect("stats in time")
            .expect("read the stats");
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or("")
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let column = |name: &str| header.iter().position(|h| *h == name);
        let (Some(sv), Some(check)) = (column("svname"), column("check_status")) else {
            panic!("unexpected stats header: {csv}");
        };
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.first() == Some(&"socksmith"))
            .filter(|f| f.get(sv).is_some_and(|n| n.starts_with('s')))
            .map(|f| (f[sv].to_owned(), (*f.get(check).unwrap_or(&"")).to_owned()))
            .collect()
    }

    /// Waits until every backend's last check is `L7OK`, or panics with what HAProxy reports.
    pub async fn wait_all_checks_ok(&self, limit: Duration) {
        let start = Instant::now();
        loop {
            let status = self.check_status().await;
            if !status.is_empty() && status.iter().all(|(_, s)| s == "L7OK") {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "health checks not all L7OK within {limit:?}: {status:?}\n{}",
                self.process.logs()
            );
            // HAProxy checks every 200 ms: poll at that pace.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
