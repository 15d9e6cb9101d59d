//! OpenSSH's dynamic forwarding (`ssh -D`) as a real SOCKS server, through a throwaway sshd on
//! loopback.
//!
//! [`SshDynamic::start`] generates a host key and a user key (`ssh-keygen`) in a temporary
//! directory, runs `/usr/sbin/sshd -D -e -f sshd_config` (from `peers/sshd_config.in`) on a free
//! 127.0.0.1 port, then `ssh -N -D 127.0.0.1:PORT2 ... root@127.0.0.1`, and waits until PORT2
//! answers a SOCKS5 greeting. Root is required: sshd's privilege separation needs it, and the
//! login is `root` with the generated key (`PermitRootLogin prohibit-password`).
//!
//! What it does, as the testkit's own tests verify (`tests/peers.rs`): SOCKS4, SOCKS4a and SOCKS5
//! CONNECT (IPv4, IPv6 and name targets), method none only (no username/password); half-close
//! is relayed. No BIND and no UDP ASSOCIATE, and a CONNECT that fails (target refused) gets no
//! failure reply either: in all three cases the connection is just closed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::process::{
    free_port, peer_command, run_command, PeerProcess, CLIENT_DEADLINE, STARTUP_DEADLINE,
};
use crate::proxy::{Proxy, ProxyKind};
use crate::tools::{require_root, require_tool};

/// The sshd configuration template, with `{{PLACEHOLDERS}}`.
pub const SSHD_CONFIG_TEMPLATE: &str = include_str!("../peers/sshd_config.in");

/// A running `ssh -D` and the sshd it is logged in to; both stopped on drop.
#[derive(Debug)]
pub struct SshDynamic {
    // Drop order matters: the client first, so that sshd's per-connection child (which calls
    // setsid and leaves our process group) sees its connection close and exits; then sshd; then
    // the directory.
    client: PeerProcess,
    sshd: PeerProcess,
    addr: SocketAddr,
    sshd_addr: SocketAddr,
    dir: TempDir,
}

impl SshDynamic {
    /// Starts sshd and `ssh -D` on free loopback ports; returns once the SOCKS port answers.
    ///
    /// `None` when not root or `sshd`, `ssh` or `ssh-keygen` is missing (by the
    /// [`crate::tools::peer_missing`] policy). Panics, with both logs, if either does not start.
    pub async fn start() -> Option<Self> {
        require_root("running a throwaway sshd for `ssh -D`")?;
        let sshd_bin = require_tool("sshd")?;
        let ssh_bin = require_tool("ssh")?;
        let keygen = require_tool("ssh-keygen")?;
        // sshd refuses to start without its privilege separation directory, which a machine
        // that never ran the system sshd may lack.
        std::fs::create_dir_all("/run/sshd")
            .expect("create /run/sshd for sshd privilege separation");
        let dir = tempfile::Builder::new()
            .prefix("socksmith-ssh-")
            .tempdir()
            .expect("create a temporary directory for sshd");
        for key in ["host_key", "user_key"] {
            let mut cmd = tokio::process::Command::new(&keygen);
            cmd.args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "socksmith-testkit",
                "-f",
            ])
            .arg(dir.path().join(key));
            run_command(cmd, b"", CLIENT_DEADLINE)
                .await
                .assert_success();
        }
        std::fs::copy(
            dir.path().join("user_key.pub"),
            dir.path().join("authorized_keys"),
        )
        .expect("write authorized_keys");

        let (sshd, sshd_addr) = start_sshd(&sshd_bin, dir.path()).await;
        let (client, addr) = start_client(&ssh_bin, dir.path(), sshd_addr, &sshd).await;
        Some(Self {
            client,
            sshd,
            addr,
            sshd_addr,
            dir,
        })
    }

    /// Where `ssh -D` listens (the SOCKS port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `socks5h://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.proxy(ProxyKind::Socks5h).url()
    }

    /// This forwarder as a [`Proxy`] of `kind` (never with credentials).
    pub fn proxy(&self, kind: ProxyKind) -> Proxy {
        Proxy::new(kind, self.addr)
    }

    /// Where the throwaway sshd listens.
    pub fn sshd_addr(&self) -> SocketAddr {
        self.sshd_addr
    }

    /// The logs of sshd and the ssh client, for failure messages.
    pub fn log(&self) -> String {
        format!("{}{}", self.sshd.logs(), self.client.logs())
    }

    /// The temporary directory (keys, config, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

async fn start_sshd(sshd_bin: &Path, dir: &Path) -> (PeerProcess, SocketAddr) {
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut last_error = String::new();
    for _attempt in 0..4 {
        let port = free_port(&[localhost]);
        let config = SSHD_CONFIG_TEMPLATE
            .replace("{{PORT}}", &port.to_string())
            .replace("{{DIR}}", &dir.display().to_string());
        let config_path = dir.join("sshd_config");
        std::fs::write(&config_path, config).expect("write sshd_config");
        // sshd re-executes itself and insists on an absolute path; require_tool gives one.
        let mut cmd = peer_command(sshd_bin);
        cmd.args(["-D", "-e", "-f"]).arg(&config_path);
        let mut process = PeerProcess::spawn("sshd", cmd, &dir.join("sshd.log"))
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = SocketAddr::new(localhost, port);
        match process.wait_for_port(addr, STARTUP_DEADLINE).await {
            Ok(()) => return (process, addr),
            Err(e) if process.exited().is_some() => last_error = e,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("sshd failed to start 4 times; last attempt:\n{last_error}");
}

async fn start_client(
    ssh_bin: &Path,
    dir: &Path,
    sshd_addr: SocketAddr,
    sshd: &PeerProcess,
) -> (PeerProcess, SocketAddr) {
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let key: PathBuf = dir.join("user_key");
    let mut last_error = String::new();
    for _attempt in 0..4 {
        let port = free_port(&[localhost]);
        let addr = SocketAddr::new(localhost, port);
        let mut cmd = peer_command(ssh_bin);
        cmd.args(["-N", "-F", "/dev/null", "-D"])
            .arg(addr.to_string())
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "ExitOnForwardFailure=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "IdentityAgent=none",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "LogLevel=ERROR",
                "-i",
            ])
            .arg(&key)
            .arg("-p")
            .arg(sshd_addr.port().to_string())
            .arg("root@127.0.0.1");
        let mut process = PeerProcess::spawn("ssh -D", cmd, &dir.join("ssh.log"))
            .unwrap_or_else(|e| panic!("{e}"));
        match wait_for_socks5(&mut process, addr, STARTUP_DEADLINE).await {
            Ok(()) => return (process, addr),
            Err(e) if process.exited().is_some() => last_error = format!("{e}\n{}", sshd.logs()),
            Err(e) => panic!("{e}\n{}", sshd.logs()),
        }
    }
    panic!("ssh -D failed to start 4 times; last attempt:\n{last_error}");
}

/// Polls until `addr` accepts and answers a SOCKS5 greeting offering "none" with `05 00`.
async fn wait_for_socks5(
    process: &mut PeerProcess,
    addr: SocketAddr,
    deadline: Duration,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if let Some(status) = process.exited() {
            return Err(format!(
                "ssh -D exited with {status} before answering SOCKS5 on {addr}\ncommand: {}\n{}",
                process.command(),
                process.logs()
            ));
        }
        let probe = async {
            let mut s = TcpStream::connect(addr).await?;
            s.write_all(&[0x05, 0x01, 0x00]).await?;
            let mut choice = [0u8; 2];
            s.read_exact(&mut choice).await?;
            Ok::<_, std::io::Error>(choice)
        };
        if let Ok(Ok([0x05, 0x00])) = tokio::time::timeout(Duration::from_secs(2), probe).await {
            if process.exited().is_none() {
                return Ok(());
            }
        }
        if start.elapsed() > deadline {
            return Err(format!(
                "ssh -D did not answer SOCKS5 on {addr} within {deadline:?}\ncommand: {}\n{}",
                process.command(),
                process.logs()
            ));
        }
        // A poll interval between probes, not a guess at readiness.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
