//! What a proxy costs the machine, read from `/proc`: resident memory and open descriptors of a
//! process and all its descendants, its open-file limit, and raising our own limit.
//!
//! Method (also printed in the report): for each root PID, the process and every descendant
//! (found through the parent PID in `/proc/*/stat`) are summed: `Pss` and `Rss` from
//! `/proc/PID/smaps_rollup` and the entries of `/proc/PID/fd`. PSS (proportional set size)
//! charges a page shared by N processes 1/N to each, so the sum over a forking server's
//! processes counts its shared code and libraries once; RSS, counted once per process, is kept
//! beside it for comparison. Linux only; elsewhere the figures are unavailable.

use std::collections::HashMap;
use std::fs;
use std::io;

/// One-line description of the method, for the report.
pub const METHOD: &str = "sum over the given PIDs and all their descendants of Pss \
(/proc/PID/smaps_rollup; Rss beside it) and of the entries of /proc/PID/fd, read before opening the idle tunnels \
(once the descriptor count is steady), with half of them open and again with all open, each after a settle delay; \
per tunnel = delta over the second half / its tunnels (\"all tunnels\": delta from before the first / all tunnels open)";

/// Memory and descriptors of a set of process trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Summed proportional set size, in KiB.
    pub pss_kib: u64,
    /// Summed resident set size, in KiB (shared pages once per process).
    pub rss_kib: u64,
    /// Summed open descriptors.
    pub fds: u64,
    /// How many processes were summed.
    pub processes: u64,
}

/// Sums [`Usage`] over `roots` and their descendants. A process that exits while being read is
/// skipped; a root that does not exist is an error.
pub fn tree_usage(roots: &[u32]) -> io::Result<Usage> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = parent_of(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut usage = Usage {
        pss_kib: 0,
        rss_kib: 0,
        fds: 0,
        processes: 0,
    };
    let mut stack = Vec::new();
    for &root in roots {
        // The root must exist: a proxy that died is a failed measurement, not zero cost.
        fs::metadata(format!("/proc/{root}"))?;
        stack.push(root);
    }
    let mut seen = std::collections::HashSet::new();
    while let Some(pid) = stack.pop() {
        if !seen.insert(pid) {
            continue;
        }
        if let (Some((pss, rss)), Some(fds)) = (memory_kib(pid), fd_count(pid)) {
            usage.pss_kib += pss;
            usage.rss_kib += rss;
            usage.fds += fds;
            usage.processes += 1;
        }
        if let Some(kids) = children.get(&pid) {
            stack.extend(kids);
        }
    }
    Ok(usage)
}

/// The parent PID from `/proc/PID/stat` (the field after the state, which follows the last
/// `)`: the command name itself may contain spaces and parentheses).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// `(Pss, Rss)` in KiB from `/proc/PID/smaps_rollup`. Kernel threads have an empty rollup:
/// they hold no user memory.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    Some(parse_rollup(&rollup))
}

fn parse_rollup(rollup: &str) -> (u64, u64) {
    let field = |name: &str| {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    };
    (field("Pss:"), field("Rss:"))
}

fn fd_count(pid: u32) -> Option<u64> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// The soft open-file limit of `pid`, from `/proc/PID/limits` (`None` if unreadable or
/// unlimited).
pub fn open_file_limit(pid: u32) -> Option<u64> {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Raises our own `RLIMIT_NOFILE` to at least `want` if the hard limit allows (or, with the
/// privilege to raise the hard limit, beyond it); returns the soft limit now in force.
pub fn raise_own_nofile(want: u64) -> io::Result<u64> {
    let (soft, hard) = rlimit::Resource::NOFILE.get()?;
    if soft >= want {
        return Ok(soft);
    }
    if hard >= want {
        rlimit::Resource::NOFILE.set(want, hard)?;
        return Ok(want);
    }
    // Raising the hard limit needs CAP_SYS_RESOURCE; without it, take what the hard limit gives.
    if rlimit::Resource::NOFILE.set(want, want).is_ok() {
        return Ok(want);
    }
    rlimit::Resource::NOFILE.set(hard, hard)?;
    Ok(hard)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn own_process_tree_has_memory_and_descriptors() {
        let me = std::process::id();
        let usage = tree_usage(&[me]).expect("our own /proc entry");
        assert!(usage.rss_kib > 0);
        assert!(
            usage.pss_kib > 0 && usage.pss_kib <= usage.rss_kib,
            "{usage:?}"
        );
        assert!(usage.fds >= 3, "stdin, stdout, stderr at least: {usage:?}");
        // Other tests of this binary may have a child running at the same time.
        assert!(usage.processes >= 1);
    }

    #[test]
    fn children_are_summed_with_their_parent() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep is installed");
        let usage = tree_usage(&[std::process::id()]).expect("our own /proc entry");
        child.kill().expect("the child is ours");
        child.wait().expect("reap the child");
        assert!(usage.processes >= 2, "{usage:?}");
    }

    #[test]
    fn pss_and_rss_come_from_the_rollup_not_its_breakdown() {
        let rollup = "00400000-7fff [rollup]\nRss:                2048 kB\nPss:                1000 kB\nPss_Anon:            700 kB\nPss_File:            300 kB\n";
        assert_eq!(parse_rollup(rollup), (1000, 2048));
        assert_eq!(parse_rollup(""), (0, 0));
    }

    #[test]
    fn missing_root_is_an_error() {
        assert!(tree_usage(&[u32::MAX - 1]).is_err());
    }

    #[test]
    fn reads_an_open_file_limit() {
        let limit = open_file_limit(std::process::id()).expect("a finite limit");
        assert!(limit > 0);
    }
}
