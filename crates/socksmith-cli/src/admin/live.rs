//! What the status page and `/api/sessions` show that a counter cannot: the tunnels open now,
//! the last refusals with their reasons, the last finished tunnels, and the throughput of the
//! last minutes.
//!
//! The table is a `Mutex<HashMap>` touched twice per tunnel (open, end), never per byte. Each
//! entry is shared with its tunnel's guard, which stores the bytes the relay reports every
//! `PROGRESS_STEP` (a few atomic stores, no lock), so a long transfer shows as it goes. An
//! entry keeps the raw facts (about 200 bytes); the strings the page shows are made when it
//! asks. This module keeps the data; `admin::http` turns it into JSON.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use socksmith::server::Traffic;
use socksmith::TargetAddr;

/// Refusals and finished tunnels kept for the page.
const RECENT: usize = 50;

/// Throughput samples kept: ten minutes at one every [`SAMPLE_EVERY`].
const SAMPLES: usize = 120;

/// How often the throughput is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// One tunnel, as `/api/sessions` lists it (built when asked, from an [`OpenTunnel`]).
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
    /// Client to target so far (updated every `PROGRESS_STEP` bytes; UDP: at the end).
    pub bytes_up: u64,
    /// Target to client so far.
    pub bytes_down: u64,
    #[serde(skip)]
    opened: SystemTime,
}

/// What the table keeps of an open tunnel, shared with the tunnel's guard, which stores the
/// bytes as the relay reports them. Strings for the page are made only when it asks.
#[derive(Debug)]
pub struct OpenTunnel {
    id: u64,
    client: SocketAddr,
    user: Option<String>,
    command: &'static str,
    target: TargetAddr,
    opened: SystemTime,
    up: AtomicU64,
    down: AtomicU64,
}

impl OpenTunnel {
    /// Its id in the table.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Takes the bytes moved so far (totals); says how many are new since the last report.
    pub fn report(&self, traffic: Traffic) -> Traffic {
        let up = self.up.swap(traffic.up, Ordering::Relaxed);
        let down = self.down.swap(traffic.down, Ordering::Relaxed);
        Traffic {
            up: traffic.up.saturating_sub(up),
            down: traffic.down.saturating_sub(down),
        }
    }

    fn row(&self) -> LiveSession {
        LiveSession {
            id: self.id,
            client: self.client,
            user: self.user.clone(),
            command: self.command,
            target: self.target.to_string(),
            started: rfc3339(self.opened),
            bytes_up: self.up.load(Ordering::Relaxed),
            bytes_down: self.down.load(Ordering::Relaxed),
            opened: self.opened,
        }
    }
}

/// A tunnel that ended, as the page's "recently finished" list shows it. Kept as raw facts
/// (every tunnel's end makes one; strings are made only when the page asks).
#[derive(Debug, Clone, Serialize)]
pub struct FinishedTunnel {
    /// The client's address.
    pub client: SocketAddr,
    /// The user, if any.
    pub user: Option<String>,
    /// `connect`, `bind` or `udp_associate`.
    pub command: &'static str,
    /// The target as the client sent it.
    #[serde(serialize_with = "as_text")]
    pub target: TargetAddr,
    /// When the session started, RFC 3339 in UTC.
    #[serde(serialize_with = "as_rfc3339")]
    pub started: SystemTime,
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
    sessions: Mutex<HashMap<u64, Arc<OpenTunnel>>>,
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

fn as_text<S: serde::Serializer>(value: &TargetAddr, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

fn as_rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_seconds(*t))
}

fn push_bounded<T>(list: &mut VecDeque<T>, item: T) {
    if list.len() == RECENT {
        list.pop_front();
    }
    list.push_back(item);
}

impl Live {
    /// Adds a tunnel; its entry, for its guard to report bytes to and end it with.
    pub fn open(
        &self,
        client: SocketAddr,
        user: Option<String>,
        command: &'static str,
        target: TargetAddr,
    ) -> Arc<OpenTunnel> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let tunnel = Arc::new(OpenTunnel {
            id,
            client,
            user,
            command,
            target,
            opened: SystemTime::now(),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
        });
        lock(&self.sessions).insert(id, Arc::clone(&tunnel));
        tunnel
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
        let open: Vec<_> = lock(&self.sessions).values().cloned().collect();
        let mut list: Vec<_> = open.iter().map(|t| t.row()).collect();
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
            target: TargetAddr::domain(target.as_str(), 1).expect("a valid name"),
            started: SystemTime::UNIX_EPOCH,
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
        let target = TargetAddr::domain("a.test", 443).expect("a valid name");
        let a = live.open(client(), Some("alice".into()), "connect", target);
        let b = live.open(client(), None, "bind", TargetAddr::Ip(client()));
        let open = live.sessions();
        assert_eq!(open.len(), 2);
        assert_eq!(open[0].user.as_deref(), Some("alice"));
        assert_eq!(open[0].target, "a.test:443");
        assert_eq!((open[0].bytes_up, open[0].bytes_down), (0, 0));
        let new = Traffic {
            up: 300_000,
            down: 7,
        };
        assert_eq!(a.report(new), new);
        assert_eq!(a.report(new), Traffic::default(), "nothing new");
        let open = live.sessions();
        assert_eq!((open[0].bytes_up, open[0].bytes_down), (300_000, 7));
        live.close(a.id());
        live.close(a.id());
        let open = live.sessions();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].id, b.id());
        live.close(b.id());
        assert!(live.sessions().is_empty());
    }

    #[test]
    fn recent_lists_keep_the_newest_and_stay_bounded() {
        let live = Live::default();
        for i in 0..(RECENT + 5) {
            live.finished_tunnel(ended(format!("t{i}")));
        }
        let done = live.finished();
        assert_eq!(done.len(), RECENT);
        assert_eq!(done[0].target.to_string(), format!("t{}:1", RECENT + 4));
        let row = serde_json::to_value(&done[0]).expect("serializes");
        assert_eq!(row["target"], format!("t{}:1", RECENT + 4));
        assert_eq!(row["started"], "1970-01-01T00:00:00Z");
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
