//! The throwaway system user that Dante's `username` method checks against `/etc/passwd` and
//! `/etc/shadow` (Dante has no password file of its own).
//!
//! Created once per test binary, idempotently, and only as root; the same fixed credentials in
//! every run and every worktree, so concurrent runs agree on the password. The account has no
//! home and no login shell.

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::raw::Credentials;
use crate::tools::{require_root, require_tool};

/// The test user's name.
pub const TEST_USER: &str = "socksmith-test";

/// The test user's password (a test fixture, not a secret).
pub const TEST_PASSWORD: &str = "socksmith-test-pw-1";

/// Ensures the system user [`TEST_USER`] exists with [`TEST_PASSWORD`] and returns its
/// credentials. `None` (by [`crate::tools::peer_missing`]) when not root or `useradd` is missing;
/// panics if creating the user fails.
pub fn test_user() -> Option<Credentials> {
    require_root("creating the system user for Dante's username method")?;
    let useradd = require_tool("useradd")?;
    let chpasswd = require_tool("chpasswd")?;
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = DONE.get_or_init(|| ensure_user(&useradd, &chpasswd)) {
        panic!("cannot set up the system user {TEST_USER}: {e}");
    }
    Some(Credentials::new(TEST_USER, TEST_PASSWORD))
}

fn user_exists() -> bool {
    std::fs::read_to_string("/etc/passwd")
        .map(|p| p.lines().any(|l| l.split(':').next() == Some(TEST_USER)))
        .unwrap_or(false)
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<(), String> {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {cmd:?}: {e}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|e| format!("write to {cmd:?}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait for {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `useradd` if absent, then `chpasswd`, each retried: another test run (another worktree) may be
/// doing the same at this moment and hold the lock on `/etc/passwd` or `/etc/shadow`.
fn ensure_user(useradd: &std::path::Path, chpasswd: &std::path::Path) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..20 {
        if attempt > 0 {
            // Back-off while another process holds the passwd lock; not a readiness wait.
            std::thread::sleep(Duration::from_millis(100));
        }
        if !user_exists() {
            if let Err(e) = run(
                Command::new(useradd).args([
                    "--system",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    TEST_USER,
                ]),
                None,
            ) {
                last = e;
                continue;
            }
        }
        match run(
            &mut Command::new(chpasswd),
            Some(&format!("{TEST_USER}:{TEST_PASSWORD}\n")),
        ) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}
