//! The one policy for a missing peer: fail when peers are required, skip loudly otherwise.
//!
//! Every helper that needs a third-party program (`danted`, `microsocks`, `sshd`, `curl`, ...) or
//! a privilege (root, for the throwaway system user and sshd) asks [`require_tool`] or calls
//! [`peer_missing`]. When `CI=true` or `SOCKSMITH_REQUIRE_PEERS=1` (set by `scripts/test`) a missing
//! peer is a panic that names the fix; otherwise a line goes straight to the terminal's stderr
//! (past libtest's output capture) and the helper returns `None`, so the test returns early:
//!
//! ```no_run
//! let Some(danted) = socksmith_testkit::require_tool("danted") else { return };
//! # let _ = danted;
//! ```
//!
//! The peers' `start` functions apply it themselves and return `Option<Self>`:
//! `let Some(dante) = Dante::start(DanteOptions::default()).await else { return };`.
//!
//! This module does not start anything.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Directories searched after `PATH`: `danted` and `sshd` live in `sbin`, which a non-root `PATH`
/// often lacks.
const EXTRA_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// Whether a missing peer must fail the test: `CI=true` or `SOCKSMITH_REQUIRE_PEERS=1`.
pub fn peers_required() -> bool {
    peers_required_by(
        std::env::var("CI").ok().as_deref(),
        std::env::var("SOCKSMITH_REQUIRE_PEERS").ok().as_deref(),
    )
}

/// The decision behind [`peers_required`], from the two variables' values (pure, for testing).
pub fn peers_required_by(ci: Option<&str>, require_peers: Option<&str>) -> bool {
    let truthy = |v: Option<&str>| {
        matches!(
            v.map(|s| s.trim().to_ascii_lowercase()).as_deref(),
            Some("1" | "true" | "yes")
        )
    };
    truthy(ci) || truthy(require_peers)
}

/// Reports a missing peer (a program, or a privilege such as root) by the one policy.
///
/// `what` says what is missing, e.g. `"danted not installed: run scripts/test, which installs it"`.
/// Panics with that message when [`peers_required`]; otherwise writes a `SKIPPED` line to stderr
/// and returns `None`, so a helper can `return peer_missing(...)`.
#[track_caller]
pub fn peer_missing<T>(what: &str) -> Option<T> {
    if peers_required() {
        panic!(
            "{what} (a missing test peer is an error because CI=true or SOCKSMITH_REQUIRE_PEERS=1)"
        );
    }
    let caller = std::panic::Location::caller();
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed thread>")
        .to_owned();
    // `io::stderr()` directly, not `eprintln!`: libtest captures the macros' output of passing
    // tests, and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED {test} ({caller}): {what}\n*** set SOCKSMITH_REQUIRE_PEERS=1 to make this a failure\n"
    );
    None
}

/// The Debian package that ships `tool`, for the "run scripts/test" hint.
fn package_of(tool: &str) -> &str {
    match tool {
        "danted" => "dante-server",
        "sshd" => "openssh-server",
        "ssh" | "ssh-keygen" => "openssh-client",
        "nc" => "netcat-openbsd",
        "python3" => "python3-socks",
        "useradd" | "chpasswd" => "passwd",
        "ip" => "iproute2",
        "kill" => "procps",
        "setpriv" => "util-linux",
        other => other,
    }
}

/// Finds `name` on `PATH` or in the `sbin`/`bin` directories; applies [`peer_missing`] if absent.
///
/// An absolute `name` is checked as it is.
#[track_caller]
pub fn require_tool(name: &str) -> Option<PathBuf> {
    match find_tool(name) {
        Some(path) => Some(path),
        None => peer_missing(&format!(
            "{name} not installed: run scripts/test, which installs it (Debian package {})",
            package_of(
                Path::new(name)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or(name)
            )
        )),
    }
}

/// Finds `name` on `PATH` or in the `sbin`/`bin` directories, without any policy.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let candidate = Path::new(name);
    if candidate.is_absolute() {
        return is_executable(candidate).then(|| candidate.to_path_buf());
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Whether this process runs as root (uid 0), read from `/proc/self/status`.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|uids| uids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// [`is_root`], or [`peer_missing`] naming `why` root is needed.
#[track_caller]
pub fn require_root(why: &str) -> Option<()> {
    if is_root() {
        Some(())
    } else {
        peer_missing(&format!(
            "not running as root, which {why} needs: run scripts/test as root"
        ))
    }
}

/// `/usr/bin/python3` when it can `import socks` (Debian's python3-socks); [`peer_missing`] if not.
///
/// The `python3` first on `PATH` may be another interpreter (pyenv) without PySocks, so this
/// checks the Debian interpreter by absolute path.
#[track_caller]
pub fn require_pysocks() -> Option<PathBuf> {
    let python = Path::new("/usr/bin/python3");
    let ok = std::process::Command::new(python)
        .args(["-c", "import socks"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        Some(python.to_path_buf())
    } else {
        peer_missing(
            "PySocks not installed for /usr/bin/python3: run scripts/test, which installs it (Debian package python3-socks)",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_when_ci_is_true_or_the_variable_is_one() {
        assert!(peers_required_by(Some("true"), None));
        assert!(peers_required_by(None, Some("1")));
        assert!(peers_required_by(Some("TRUE"), Some("0")));
        assert!(!peers_required_by(None, None));
        assert!(!peers_required_by(Some("false"), Some("0")));
        assert!(!peers_required_by(Some(""), Some("")));
    }

    #[test]
    fn finds_sh_and_not_a_made_up_tool() {
        assert!(find_tool("sh").is_some());
        assert!(find_tool("/bin/sh").is_some());
        assert!(find_tool("socksmith-testkit-no-such-tool").is_none());
    }
}
