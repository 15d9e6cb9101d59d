//! Child processes for tests: free ports, readiness by poll-connect, a guard that stops a
//! server's whole process group on drop, and a bounded runner for client commands.
//!
//! Owns process lifetimes only; what a peer is configured to do lives in its own module
//! (the `dante`, `microsocks`, `ssh` and `socksmith` modules).
//!
//! A server is spawned in its own process group, under `setpriv --pdeathsig KILL` when util-linux
//! is there, so that a test binary killed outright (no unwinding, no `Drop`) still takes its
//! servers down. Caveat of `PR_SET_PDEATHSIG`: the signal fires when the *thread* that spawned the
//! child exits, so start peers from the test's own task, not from a `spawn_blocking` thread or a
//! `static` shared across tests.

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher as _, Hasher as _};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::tools::find_tool;

/// How long a peer gets to start accepting connections.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(20);

/// How long a stopping peer gets after SIGTERM before its process group gets SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// A generous bound for one whole test: [`within`] with this catches a hang instead of blocking
/// the run forever.
pub const TEST_DEADLINE: Duration = Duration::from_secs(90);

/// How long a client command ([`run_command`]) may run before it is killed.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(20);

/// Runs `fut`, panicking with `what` if it takes longer than `limit`.
#[track_caller]
pub fn within<F: Future>(limit: Duration, what: &str, fut: F) -> impl Future<Output = F::Output> {
    let caller = std::panic::Location::caller();
    let what = what.to_owned();
    async move {
        match tokio::time::timeout(limit, fut).await {
            Ok(out) => out,
            Err(_) => panic!("timed out after {limit:?} ({caller}): {what}"),
        }
    }
}

/// A pseudo-random `u64`, different on every call (std's randomly keyed SipHash over a counter).
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.finish()
}

/// The lower bound of the kernel's ephemeral port range (`ip_local_port_range`).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A TCP port that is free on every address in `ips` right now, for a peer that cannot be told
/// to listen on port 0 and report the port (danted, microsocks, sshd, `ssh -D`).
///
/// Drawn at random from 20000 up to the kernel's ephemeral range, so the ports that the kernel
/// hands to other tests' port-0 listeners and outgoing connections never collide with it. (Where
/// the ephemeral range starts too low to leave such a band, the kernel picks one, as for port 0.)
/// There is still a window between this check and the peer's bind: the starters retry with a new
/// port when the peer exits early.
pub fn free_port(ips: &[IpAddr]) -> u16 {
    const LOW: u16 = 20_000;
    let high = ephemeral_low();
    let free_on_all = |port: u16| {
        ips.iter()
            .all(|ip| StdTcpListener::bind((*ip, port)).is_ok())
    };
    if high >= LOW + 1000 {
        for _ in 0..1000 {
            let port = LOW + (random_u64() % u64::from(high - LOW)) as u16;
            if free_on_all(port) {
                return port;
            }
        }
    }
    let first = ips
        .first()
        .copied()
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    for _ in 0..1000 {
        let port = StdTcpListener::bind((first, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("cannot bind {first}:0: {e}"));
        if free_on_all(port) {
            return port;
        }
    }
    panic!("no TCP port free on all of {ips:?} after 1000 tries");
}

/// Whether `ip` can be bound here (false for `::1` on a host with IPv6 disabled).
pub fn can_bind(ip: IpAddr) -> bool {
    StdTcpListener::bind((ip, 0)).is_ok()
}

/// A command for a long-running peer: `program` under `setpriv --pdeathsig KILL` when available.
pub fn peer_command(program: &Path) -> Command {
    match find_tool("setpriv") {
        Some(setpriv) => {
            let mut cmd = Command::new(setpriv);
            cmd.args(["--pdeathsig", "KILL", "--"]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// Renders a command as a shell-like line for messages.
pub fn describe(cmd: &Command) -> String {
    let std = cmd.as_std();
    std::iter::once(std.get_program())
        .chain(std.get_args())
        .map(|a| {
            let s = a.to_string_lossy();
            if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '\'') {
                format!("'{}'", s.replace('\'', r"'\''"))
            } else {
                s.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A running server process (and the processes it forks), stopped when dropped.
///
/// Its stdout and stderr go to a log file, never to a pipe that nobody reads (a full pipe would
/// block the server). On drop: SIGTERM to the process group, up to [`STOP_GRACE`] for the leader
/// to exit, then SIGKILL to the group.
pub struct PeerProcess {
    name: String,
    command: String,
    child: Child,
    pid: u32,
    logs: Vec<PathBuf>,
}

impl PeerProcess {
    /// Spawns `cmd` in a new process group with stdin closed and stdout/stderr appended to
    /// `output_log`. `name` is for messages (`"danted"`).
    pub fn spawn(name: &str, mut cmd: Command, output_log: &Path) -> io::Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(output_log)?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true);
        Self::spawn_configured(name, cmd, vec![output_log.to_path_buf()])
    }

    /// Spawns `cmd` in a new process group, with stdio as the caller set it. `logs` are the files
    /// shown by [`PeerProcess::logs`].
    pub fn spawn_configured(name: &str, mut cmd: Command, logs: Vec<PathBuf>) -> io::Result<Self> {
        cmd.process_group(0).kill_on_drop(true);
        let command = describe(&cmd);
        let child = cmd.spawn().map_err(|e| {
            io::Error::new(e.kind(), format!("cannot spawn {name} ({command}): {e}"))
        })?;
        let pid = child
            .id()
            .expect("a child that was just spawned has not been reaped");
        Ok(Self {
            name: name.to_owned(),
            command,
            child,
            pid,
            logs,
        })
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The command line it was started with.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Adds a file to those shown by [`PeerProcess::logs`] (e.g. a log the peer writes itself).
    pub fn add_log(&mut self, path: PathBuf) {
        self.logs.push(path);
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The contents of its log files, each under a header, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for path in &self.logs {
            let body = std::fs::read(path)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|e| format!("<cannot read: {e}>"));
            text.push_str(&format!(
                "----- {} ({}) -----\n{}\n",
                self.name,
                path.display(),
                tail(&body, 200)
            ));
        }
        text
    }

    /// Polls until `addr` accepts a TCP connection, failing if the process exits first or
    /// `deadline` passes. The error carries the logs.
    pub async fn wait_for_port(
        &mut self,
        addr: SocketAddr,
        deadline: Duration,
    ) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Err(format!(
                    "{} exited with {status} before accepting on {addr}\ncommand: {}\n{}",
                    self.name,
                    self.command,
                    self.logs()
                ));
            }
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await
            {
                // Something accepts; make sure it is not someone else on a port our peer
                // failed to bind.
                if self.exited().is_none() {
                    return Ok(());
                }
                continue;
            }
            if start.elapsed() > deadline {
                return Err(format!(
                    "{} did not accept on {addr} within {deadline:?}\ncommand: {}\n{}",
                    self.name,
                    self.command,
                    self.logs()
                ));
            }
            // A poll interval between connect attempts, not a guess at readiness.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Takes the child's stdout, if it was piped (see [`PeerProcess::spawn_configured`]).
    pub fn take_stdout(&mut self) -> Option<tokio::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// Sends `signal` (a name for `kill(1)`: `"TERM"`, `"INT"`, `"HUP"`) to the process itself,
    /// not its group.
    pub fn signal(&self, signal: &str) {
        signal_target(signal, &self.pid.to_string());
    }

    /// Waits up to `limit` for the process to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Stops the process group now (what drop does).
    pub fn stop(&mut self) {
        let pgid = format!("-{}", self.pid);
        if self.exited().is_none() {
            signal_target("TERM", &pgid);
            let start = Instant::now();
            while self.exited().is_none() && start.elapsed() < STOP_GRACE {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // Forked helpers (Dante's children) may outlive the leader for a moment.
        signal_target("KILL", &pgid);
        let _ = self.child.start_kill();
        let _ = self.child.try_wait();
    }
}

impl fmt::Debug for PeerProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerProcess")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .field("command", &self.command)
            .finish()
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `kill -SIG -- TARGET` (a pid, or `-PGID` for a group), quietly: it may already be gone.
/// `kill(1)` rather than `libc::kill` because the workspace forbids `unsafe`.
fn signal_target(signal: &str, target: &str) {
    if let Some(kill) = find_tool("kill") {
        let _ = std::process::Command::new(kill)
            .args([&format!("-{signal}"), "--", target])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let skip = all.len().saturating_sub(lines);
    let mut out = String::new();
    if skip > 0 {
        out.push_str(&format!("[... {skip} earlier lines ...]\n"));
    }
    out.push_str(&all[skip..].join("\n"));
    out
}

/// What a finished client command produced.
#[derive(Clone)]
pub struct CmdOutput {
    /// The command line, for messages.
    pub command: String,
    /// Its exit status (after the kill, if it timed out).
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
    /// Whether it was killed for running past its deadline.
    pub timed_out: bool,
}

impl CmdOutput {
    /// Exited by itself with status 0.
    pub fn success(&self) -> bool {
        self.status.success() && !self.timed_out
    }

    /// stdout as text (lossy).
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as text (lossy).
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Panics, showing the command, status and output, unless it succeeded.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "command failed:\n{self}");
        self
    }

    /// Panics, showing the command and output, if it succeeded.
    #[track_caller]
    pub fn assert_failure(&self) -> &Self {
        assert!(
            !self.success(),
            "command succeeded but was expected to fail:\n{self}"
        );
        self
    }
}

impl fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.command)?;
        if self.timed_out {
            writeln!(f, "(killed: ran past its deadline)")?;
        }
        writeln!(f, "status: {}", self.status)?;
        writeln!(f, "--- stdout ({} bytes) ---", self.stdout.len())?;
        writeln!(
            f,
            "{}",
            tail(
                &String::from_utf8_lossy(&self.stdout[..self.stdout.len().min(4096)]),
                40
            )
        )?;
        writeln!(f, "--- stderr ({} bytes) ---", self.stderr.len())?;
        write!(f, "{}", tail(&String::from_utf8_lossy(&self.stderr), 60))
    }
}

impl fmt::Debug for CmdOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Runs a client command to completion: feeds it `stdin` then closes stdin, collects stdout and
/// stderr, and kills it after `limit` (then `timed_out` is set). Panics only if it cannot spawn.
pub async fn run_command(mut cmd: Command, stdin: &[u8], limit: Duration) -> CmdOutput {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let command = describe(&cmd);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn `{command}`: {e}"));
    let mut child_stdin = child.stdin.take().expect("stdin was piped");
    let mut child_stdout = child.stdout.take().expect("stdout was piped");
    let mut child_stderr = child.stderr.take().expect("stderr was piped");
    let input = stdin.to_vec();
    let writer = tokio::spawn(async move {
        // The command may exit without reading its input; that is its business.
        let _ = child_stdin.write_all(&input).await;
        let _ = child_stdin.shutdown().await;
    });
    let out_reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = child_stdout.read_to_end(&mut buf).await;
        buf
    });
    let err_reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = child_stderr.read_to_end(&mut buf).await;
        buf
    });
    let (status, timed_out) = match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => (status, false),
        Err(_) => {
            let _ = child.start_kill();
            (child.wait().await, true)
        }
    };
    let status = status.unwrap_or_else(|e| panic!("cannot wait for `{command}`: {e}"));
    writer.abort();
    // A grandchild could keep the pipes open; do not wait for it forever.
    let collect = |h: tokio::task::JoinHandle<Vec<u8>>| async move {
        match tokio::time::timeout(Duration::from_secs(5), h).await {
            Ok(Ok(buf)) => buf,
            _ => b"<output not collected>".to_vec(),
        }
    };
    let stdout = collect(out_reader).await;
    let stderr = collect(err_reader).await;
    CmdOutput {
        command,
        status,
        stdout,
        stderr,
        timed_out,
    }
}
