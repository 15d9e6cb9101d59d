//! systemd's side of a service, played without a running systemd: a `NOTIFY_SOCKET` to read
//! what the service reports ([`NotifySocket`]), and the two ways a service gets its listening
//! sockets by socket activation: through systemd's own `systemd-socket-activate` (Debian
//! package `systemd`, [`start_socket_activated`]) and as a socket the test bound itself,
//! passed as fd 3 with `LISTEN_FDS=1` and `LISTEN_PID` set ([`start_with_listener`]).

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::net::{TcpStream, UnixDatagram};

use crate::process::STARTUP_DEADLINE;
use crate::socksmith::{SocksmithServer, StartFailure};
use crate::tools::require_tool;

/// A Unix datagram socket standing in for systemd's notification socket: pass
/// [`NotifySocket::path`] as `NOTIFY_SOCKET` and read the messages the service sends.
#[derive(Debug)]
pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    /// Every message received so far, in order.
    received: Vec<String>,
    _dir: TempDir,
}

impl NotifySocket {
    /// Binds a fresh socket in a temporary directory.
    pub fn bind() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("socksmith-notify-")
            .tempdir()
            .expect("create a temporary directory for NOTIFY_SOCKET");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notification socket");
        NotifySocket {
            socket,
            path,
            received: Vec::new(),
            _dir: dir,
        }
    }

    /// The value for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits up to `limit` for a message that has a line equal to `line` (`READY=1`),
    /// returning that message. Panics, with what was received, if none comes.
    pub async fn wait_for(&mut self, line: &str, limit: Duration) -> String {
        let start = Instant::now();
        let mut buf = vec![0; 4096];
        loop {
            let left = limit.saturating_sub(start.elapsed());
            match tokio::time::timeout(left, self.socket.recv(&mut buf)).await {
                Ok(Ok(n)) => {
                    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                    self.received.push(message.clone());
                    if message.lines().any(|l| l == line) {
                        return message;
                    }
                }
                Ok(Err(e)) => panic!("reading the notification socket: {e}"),
                Err(_) => panic!(
                    "no {line:?} within {limit:?}; received so far: {:?}",
                    self.received
                ),
            }
        }
    }

    /// Every message received so far, in order.
    pub fn received(&self) -> &[String] {
        &self.received
    }
}

/// Runs `systemd-socket-activate -l ADDR... [-E NAME=VALUE...] BIN ARGS...`: it binds each
/// address (a fixed port: it takes no port 0), waits for the first connection, then execs
/// socksmith with the sockets as fd 3 onwards. This connects once to set it off, waits for
/// socksmith's `listening on` lines (one per socket) and returns the server and that first
/// connection (served like any other once socksmith runs). `None` when the tool is missing
/// and peers are not required.
pub async fn start_socket_activated(
    bin: &Path,
    listen: &[SocketAddr],
    args: &[&str],
    env: &[(&str, &str)],
) -> Option<Result<(SocksmithServer, TcpStream), StartFailure>> {
    let activate = require_tool("systemd-socket-activate")?;
    let mut cmd = tokio::process::Command::new(activate);
    for addr in listen {
        cmd.arg("-l").arg(addr.to_string());
    }
    for (name, value) in env {
        cmd.arg("-E").arg(format!("{name}={value}"));
    }
    cmd.arg(bin)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let first = listen[0];
    let trigger = tokio::spawn(async move {
        let start = Instant::now();
        loop {
            // systemd-socket-activate binds before it waits; until then, refused.
            match TcpStream::connect(first).await {
                Ok(stream) => return Some(stream),
                Err(_) if start.elapsed() < STARTUP_DEADLINE => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(_) => return None,
            }
        }
    });
    let started = SocksmithServer::try_start_command(cmd, listen.len()).await;
    let connection = trigger.await.expect("the trigger task does not panic");
    Some(started.map(|server| {
        let connection = connection.expect("connected to the activation socket");
        (server, connection)
    }))
}

/// Runs `BIN ARGS...` with `listener` (bound and listening, by the test) as fd 3,
/// `LISTEN_FDS=1` and `LISTEN_PID` its own pid, as systemd starts a socket-activated service,
/// plus `env`; waits for its one `listening on` line.
pub async fn start_with_listener(
    bin: &Path,
    listener: std::net::TcpListener,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<SocksmithServer, StartFailure> {
    // The socket goes in as the shell's stdin; the shell moves it to fd 3, sets LISTEN_PID to
    // its own pid (which `exec` keeps) and execs socksmith. No `unsafe` pre-exec hook needed.
    let script = "export LISTEN_PID=$$ LISTEN_FDS=1; exec \"$0\" \"$@\" 3<&0 0</dev/null";
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(script)
        .arg(bin)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::from(OwnedFd::from(listener)))
        .kill_on_drop(true);
    SocksmithServer::try_start_command(cmd, 1).await
}
