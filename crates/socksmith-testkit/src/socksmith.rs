//! Runs the `socksmith` binary for integration tests of `crates/socksmith-cli`.
//!
//! The binary's path is a parameter because only that crate's tests have
//! `env!("CARGO_BIN_EXE_socksmith")`:
//!
//! ```no_run
//! # async fn demo() {
//! use socksmith_testkit::socksmith::SocksmithServer;
//! let bin = std::path::Path::new("target/debug/socksmith"); // env!("CARGO_BIN_EXE_socksmith")
//! let server = SocksmithServer::start(bin, &["--auth", "none"]).await;
//! let proxy_addr = server.addr();
//! # let _ = proxy_addr;
//! # }
//! ```
//!
//! The contract with `socksmith serve`: for each listener it binds, it prints a line
//! `listening on ADDR` to stdout (ADDR as `SocketAddr` displays it, so a port-0 listen reports the
//! real port). Anything else on stdout is kept and shown on failure; stderr goes to a file.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::mpsc;

use crate::process::{
    peer_command, run_command, tail, CmdOutput, PeerProcess, CLIENT_DEADLINE, STARTUP_DEADLINE,
};
use crate::proxy::{Proxy, ProxyKind};

/// Why `socksmith serve` did not come up.
#[derive(Clone)]
pub struct StartFailure {
    /// The command line.
    pub command: String,
    /// What went wrong (exited, timed out).
    pub reason: String,
    /// Its exit status, if it exited.
    pub status: Option<ExitStatus>,
    /// Everything it wrote to stdout so far.
    pub stdout: String,
    /// Everything it wrote to stderr so far.
    pub stderr: String,
}

impl fmt::Display for StartFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "socksmith serve did not start: {}", self.reason)?;
        writeln!(f, "$ {}", self.command)?;
        if let Some(s) = self.status {
            writeln!(f, "status: {s}")?;
        }
        writeln!(f, "--- stdout ---\n{}", tail(&self.stdout, 40))?;
        write!(f, "--- stderr ---\n{}", tail(&self.stderr, 80))
    }
}

impl fmt::Debug for StartFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A running `socksmith serve`, stopped on drop (SIGTERM, then SIGKILL after
/// [`crate::process::STOP_GRACE`]).
#[derive(Debug)]
pub struct SocksmithServer {
    process: PeerProcess,
    addrs: Vec<SocketAddr>,
    stdout: Arc<Mutex<String>>,
    stderr_path: std::path::PathBuf,
    drain: tokio::task::JoinHandle<()>,
    dir: TempDir,
}

impl SocksmithServer {
    /// Runs `BIN serve --listen 127.0.0.1:0 ARGS...` and waits for its `listening on` line.
    ///
    /// If `args` has its own `--listen` options, no default is added and one line is awaited
    /// per `--listen`. Panics, with stdout and stderr, if it exits or does not report in time.
    pub async fn start(bin: &Path, args: &[&str]) -> Self {
        let listens = args
            .iter()
            .filter(|a| **a == "--listen" || a.starts_with("--listen="))
            .count();
        let mut full = vec!["serve"];
        if listens == 0 {
            full.extend(["--listen", "127.0.0.1:0"]);
        }
        full.extend_from_slice(args);
        Self::try_start(bin, &full, &[], listens.max(1))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `BIN FULL_ARGS...` (the subcommand included) with extra environment variables and
    /// waits for `expect_listening` lines `listening on ADDR`, up to
    /// [`crate::process::STARTUP_DEADLINE`]. Use this for a config file that declares the
    /// listeners, or to assert that a bad invocation fails.
    pub async fn try_start(
        bin: &Path,
        full_args: &[&str],
        env: &[(&str, &str)],
        expect_listening: usize,
    ) -> Result<Self, StartFailure> {
        let mut cmd = peer_command(bin);
        cmd.args(full_args)
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        Self::try_start_command(cmd, expect_listening).await
    }

    /// [`SocksmithServer::try_start`] for a command the caller built (a wrapper such as
    /// `systemd-socket-activate`, or a socket passed as stdin): its stdout and stderr are
    /// taken over here, everything else is left as set.
    pub async fn try_start_command(
        mut cmd: tokio::process::Command,
        expect_listening: usize,
    ) -> Result<Self, StartFailure> {
        let dir = tempfile::Builder::new()
            .prefix("socksmith-serve-")
            .tempdir()
            .expect("create a temporary directory for socksmith serve");
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("create stderr.log");
        cmd.stdout(Stdio::piped()).stderr(stderr);
        let mut process =
            PeerProcess::spawn_configured("socksmith", cmd, vec![stderr_path.clone()])
                .unwrap_or_else(|e| panic!("{e}"));
        let stdout = Arc::new(Mutex::new(String::new()));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let pipe = process.take_stdout().expect("stdout was piped");
        // Keeps reading stdout for the server's whole life, so a chatty server never blocks on
        // a full pipe.
        let drain = tokio::spawn({
            let stdout = stdout.clone();
            async move {
                let mut lines = tokio::io::BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(addr) = parse_listening(&line) {
                        let _ = tx.send(addr);
                    }
                    let mut out = stdout.lock().expect("stdout lock is never poisoned");
                    out.push_str(&line);
                    out.push('\n');
                }
            }
        });
        let mut addrs = Vec::new();
        let start = Instant::now();
        let failure = |process: &mut PeerProcess, reason: String, status| StartFailure {
            command: process.command().to_owned(),
            reason,
            status,
            stdout: stdout
                .lock()
                .expect("stdout lock is never poisoned")
                .clone(),
            stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
        };
        while addrs.len() < expect_listening {
            let left = STARTUP_DEADLINE.saturating_sub(start.elapsed());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some(addr)) => addrs.push(addr),
                Ok(None) => {
                    // stdout closed: it exited (or closed stdout, which counts as broken).
                    let status = process.wait_exit(Duration::from_secs(5)).await;
                    let reason = format!(
                        "stdout closed after {} of {expect_listening} `listening on` lines",
                        addrs.len()
                    );
                    return Err(failure(&mut process, reason, status));
                }
                Err(_) => {
                    let reason = format!(
                        "only {} of {expect_listening} `listening on` lines within {STARTUP_DEADLINE:?}",
                        addrs.len()
                    );
                    let status = process.exited();
                    return Err(failure(&mut process, reason, status));
                }
            }
        }
        Ok(Self {
            process,
            addrs,
            stdout,
            stderr_path,
            drain,
            dir,
        })
    }

    /// The first listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Every listening address, in the order printed.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// `socks5h://ADDR` (no credentials: the test knows what it configured).
    pub fn url(&self) -> String {
        self.proxy(ProxyKind::Socks5h).url()
    }

    /// The first listener as a [`Proxy`] of `kind`, without credentials.
    pub fn proxy(&self, kind: ProxyKind) -> Proxy {
        Proxy::new(kind, self.addr())
    }

    /// What it has written to stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout
            .lock()
            .expect("stdout lock is never poisoned")
            .clone()
    }

    /// What it has written to stderr so far (its logs).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The process, to signal it (`process_mut().signal("TERM")`) and await its exit.
    pub fn process_mut(&mut self) -> &mut PeerProcess {
        &mut self.process
    }

    /// Its temporary directory (holds stderr.log; a test may put a config file there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SocksmithServer {
    fn drop(&mut self) {
        // The `process` field stops the server when it is dropped, right after this.
        self.drain.abort();
    }
}

/// The address in a `listening on ADDR` line (also `... listening on addr=ADDR ...`).
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let token = rest.split_whitespace().next()?;
    let token = token.rsplit('=').next()?;
    token
        .trim_matches(|c: char| matches!(c, '"' | '\'' | ',' | ';' | '(' | ')'))
        .parse()
        .ok()
}

/// Runs `BIN ARGS...` once (a client subcommand such as `connect`), feeding `stdin`, bounded by
/// [`crate::process::CLIENT_DEADLINE`].
pub async fn run(bin: &Path, args: &[&str], stdin: &[u8]) -> CmdOutput {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(args);
    run_command(cmd, stdin, CLIENT_DEADLINE).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_lines() {
        let v4: SocketAddr = "127.0.0.1:4321".parse().expect("addr");
        let v6: SocketAddr = "[::1]:99".parse().expect("addr");
        assert_eq!(parse_listening("listening on 127.0.0.1:4321"), Some(v4));
        assert_eq!(parse_listening("listening on [::1]:99"), Some(v6));
        assert_eq!(
            parse_listening("2025 INFO socksmith: listening on addr=127.0.0.1:4321 proto=socks"),
            Some(v4)
        );
        assert_eq!(
            parse_listening("listening on \"127.0.0.1:4321\","),
            Some(v4)
        );
        assert_eq!(parse_listening("not yet listening"), None);
        assert_eq!(parse_listening("listening on nowhere"), None);
    }
}
