//! What the status page and `/api/sessions` show that a counter cannot: the tunnels open now,
//! the last refusals with their reasons, the last finished tunnels, and the throughput of the
//! last minutes.
//!
//! The table is a `Mutex<HashMap>` touched twice per tunnel (open, end), never per byte. The
//! server tells a tunnel's bytes only when it ends, so a live entry's `bytes_up`/`bytes_down`
//! stay 0 until then ("final-only"); the finished entries (with their outcome) and the
//! throughput carry the real counts. This module keeps the data; `admin::http` turns it into JSON.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use socksmith::server::Traffic;

/// Refusals and finished tunnels kept for the page.
const RECENT: usize = 50;

/// Throughput samples kept: ten minutes at one every [`SAMPLE_EVERY`].
const SAMPLES: usize = 120;

/// How often the throughput is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// One tunnel, as `/api/sessions` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct LiveSession {
    /// A number unique in this process's life.
    pub id: u64,
    /// The client's address.
    pub client: SocketAddr,
    /// The authenticated user (or SOCKS4 user id); `null` when anonymous.
    pub user: Option<String>,
    /// `connect`, `bind` or `udp_associate`.
    pub command: &'static str,
    /// The target as the client sent it (`host:port`).
    pub target: String,
    /// When it opened, RFC 3339 in UTC.
    pub started: String,
    /// Client to target; final-only (0 while the tunnel relays).
    pub bytes_up: u64,
    /// Target to client; final-only (0 while the tunnel relays).
    pub bytes_down: u64,
    #[serde(skip)]
    opened: SystemTime,
}

/// A tunnel that ended, as the page's "recently finished" list shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FinishedTunnel {
    /// The client's address.
    pub client: SocketAddr,
    /// The user, if any.
    pub user: Option<String>,
    /// `connect`, `bind` or `udp_associate`.
    pub command: &'static str,
    /// The target as the client sent it.
    pub target: String,
    /// When the session started, RFC 3339 in UTC.
    pub started: String,
    /// How long the session lasted, in milliseconds.
    pub duration_ms: u64,
    /// Client to target.
    pub bytes_up: u64,
    /// Target to client.
    pub bytes_down: u64,
    /// The metric's outcome word (`ok`, `target_failed`...).
    pub outcome: &'static str,
    /// Why it ended early, in the log line's words; `null` when it did not.
    pub error: Option<String>,
}

/// A refused request.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    /// When, RFC 3339 in UTC.
    pub time: String,
    /// The client's address.
    pub client: SocketAddr,
    /// The user, if any.
    pub user: Option<String>,
    /// The command.
    pub command: &'static str,
    /// The target asked for.
    pub target: String,
    /// The metric label (`denied_network`, `loopback`...).
    pub reason: &'static str,
    /// The log line's words ("target 10.1.2.3 is in denied network 10.0.0.0/8").
    pub detail: String,
    /// The blocklist that refused it, if one did.
    pub list: Option<String>,
}

/// One throughput sample: bytes per second over the [`SAMPLE_EVERY`] before `time`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Seconds since the Unix epoch.
    pub time: u64,
    /// Client-to-target bytes per second.
    pub up: f64,
    /// Target-to-client bytes per second.
    pub down: f64,
}

/// The live table and the recent lists.
#[derive(Debug, Default)]
pub struct Live {
    next_id: AtomicU64,
    sessions: Mutex<HashMap<u64, LiveSession>>,
    finished: Mutex<VecDeque<FinishedTunnel>>,
    refusals: Mutex<VecDeque<Refusal>>,
    samples: Mutex<Samples>,
}

#[derive(Debug, Default)]
struct Samples {
    last: Option<Traffic>,
    history: VecDeque<Sample>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data stays consistent under a panic elsewhere (plain inserts and pushes).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// RFC 3339 in UTC, to the second.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn push_bounded<T>(list: &mut VecDeque<T>, item: T) {
    if list.len() == RECENT {
        list.pop_front();
    }
    list.push_back(item);
}

impl Live {
    /// Adds a tunnel; the id to end it with.
    pub fn open(
        &self,
        client: SocketAddr,
        user: Option<String>,
        command: &'static str,
        target: String,
    ) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let opened = SystemTime::now();
        lock(&self.sessions).insert(
            id,
            LiveSession {
                id,
                client,
                user,
                command,
                target,
                started: rfc3339(opened),
                bytes_up: 0,
                bytes_down: 0,
                opened,
            },
        );
        id
    }

    /// Removes tunnel `id` (again: nothing happens).
    pub fn close(&self, id: u64) {
        lock(&self.sessions).remove(&id);
    }

    /// Remembers a tunnel that ended.
    pub fn finished_tunnel(&self, tunnel: FinishedTunnel) {
        push_bounded(&mut lock(&self.finished), tunnel);
    }

    /// Remembers a refusal.
    pub fn refused(&self, refusal: Refusal) {
        push_bounded(&mut lock(&self.refusals), refusal);
    }

    /// The open tunnels, oldest first.
    pub fn sessions(&self) -> Vec<LiveSession> {
        let mut list: Vec<_> = lock(&self.sessions).values().cloned().collect();
        list.sort_by_key(|s| (s.opened, s.id));
        list
    }

    /// The last finished tunnels, newest first.
    pub fn finished(&self) -> Vec<FinishedTunnel> {
        lock(&self.finished).iter().rev().cloned().collect()
    }

    /// The last refusals, newest first.
    pub fn refusals(&self) -> Vec<Refusal> {
        lock(&self.refusals).iter().rev().cloned().collect()
    }

    /// Takes a throughput sample from the byte totals at `now`, `interval` after the last.
    pub fn sample(&self, totals: Traffic, now: SystemTime, interval: Duration) {
        let mut samples = lock(&self.samples);
        let seconds = interval.as_secs_f64().max(0.001);
        let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / seconds;
        if let Some(last) = samples.last {
            let sample = Sample {
                time: now
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                up: rate(totals.up, last.up),
                down: rate(totals.down, last.down),
            };
            if samples.history.len() == SAMPLES {
                samples.history.pop_front();
            }
            samples.history.push_back(sample);
        }
        samples.last = Some(totals);
    }

    /// The throughput samples, oldest first.
    pub fn throughput(&self) -> Vec<Sample> {
        lock(&self.samples).history.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> SocketAddr {
        "127.0.0.1:40000".parse().expect("valid address")
    }

    fn ended(target: String) -> FinishedTunnel {
        FinishedTunnel {
            client: client(),
            user: None,
            command: "connect",
            target,
            started: rfc3339(SystemTime::UNIX_EPOCH),
            duration_ms: 5,
            bytes_up: 1,
            bytes_down: 2,
            outcome: "ok",
            error: None,
        }
    }

    #[test]
    fn a_closed_tunnel_leaves_the_table() {
        let live = Live::default();
        let a = live.open(
            client(),
            Some("alice".into()),
            "connect",
            "a.test:443".into(),
        );
        let b = live.open(client(), None, "bind", "0.0.0.0:0".into());
        let open = live.sessions();
        assert_eq!(open.len(), 2);
        assert_eq!(open[0].user.as_deref(), Some("alice"));
        live.close(a);
        live.close(a);
        let open = live.sessions();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].id, b);
        live.close(b);
        assert!(live.sessions().is_empty());
    }

    #[test]
    fn recent_lists_keep_the_newest_and_stay_bounded() {
        let live = Live::default();
        for i in 0..(RECENT + 5) {
            live.finished_tunnel(ended(format!("t{i}:1")));
        }
        let done = live.finished();
        assert_eq!(done.len(), RECENT);
        assert_eq!(done[0].target, format!("t{}:1", RECENT + 4));
    }

    #[test]
    fn throughput_is_bytes_per_second_between_samples() {
        let live = Live::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        live.sample(Traffic { up: 0, down: 0 }, t0, SAMPLE_EVERY);
        assert!(
            live.throughput().is_empty(),
            "the first sample is the baseline"
        );
        live.sample(
            Traffic {
                up: 5_000,
                down: 50_000,
            },
            t0 + SAMPLE_EVERY,
            SAMPLE_EVERY,
        );
        let samples = live.throughput();
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].time, 1_005);
        assert_eq!((samples[0].up, samples[0].down), (1_000.0, 10_000.0));
    }
}
