//! Per-client-address back-off after failed authentication: how long the server waits before
//! answering a client's next username/password attempt, so that guessing passwords from one
//! address gets exponentially slower while other addresses are not affected.
//!
//! This module only keeps the score and computes the wait; it does no I/O and never sleeps.
//! The session asks [`AuthBackoff::delay_for`] before checking credentials, sleeps that long
//! (inside its handshake deadline), and reports the outcome with [`AuthBackoff::failed`] or
//! [`AuthBackoff::succeeded`].
//!
//! - **The score.** Each address has a failure count. The first [`BackoffPolicy::free_failures`]
//!   failures cost nothing (typos); after that the wait doubles with every failure, from
//!   [`BackoffPolicy::base`] up to [`BackoffPolicy::max`]. The wait counts from the last
//!   failure, so a client that comes back after it has passed is answered at once.
//! - **Decay.** Every [`BackoffPolicy::decay`] without a failure forgives one; an address whose
//!   count has decayed to zero is forgotten.
//! - **Success** lowers the count to the free allowance rather than to zero: a user who mistyped
//!   is not slowed down afterwards, but an attacker holding one valid account cannot wipe the
//!   score between guesses at another one.
//! - **Addresses.** An IPv4 address counts alone (an IPv4-mapped IPv6 address as that IPv4
//!   address); an IPv6 address counts with its whole /64, the block a single site or host gets,
//!   since one host can pick any address in it.
//! - **Memory** is bounded by `max_entries`: when full, forgotten entries are dropped first, then
//!   the one whose last failure is oldest. An attacker cycling through many addresses can push
//!   another address out early; that only shortens that address's back-off, never blocks anyone.
//! - **Cost.** Entries are spread over [`SHARDS`] mutexes by a keyed hash; a lock is held for one
//!   map operation (an eviction scans one shard, only when it is full). Nothing is allocated on
//!   the success path for an address that never failed.
//!
//! Time is `tokio::time::Instant`, so tests drive it with tokio's paused clock.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How many independently locked maps the entries are spread over.
pub(crate) const SHARDS: usize = 16;

/// How the wait grows and decays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BackoffPolicy {
    /// Failures an address may have before any wait (typos).
    pub(crate) free_failures: u32,
    /// The wait after the first failure past the free ones; it doubles with each further one.
    pub(crate) base: Duration,
    /// The longest wait.
    pub(crate) max: Duration,
    /// Each such period without a failure forgives one failure.
    pub(crate) decay: Duration,
}

impl Default for BackoffPolicy {
    /// 3 free failures, then 250 ms doubling up to 10 s; one failure forgiven per minute.
    /// A sequential guesser gets about 6 guesses a minute once at the cap instead of thousands
    /// a second; a user who mistypes three times waits nothing.
    fn default() -> Self {
        BackoffPolicy {
            free_failures: 3,
            base: Duration::from_millis(250),
            max: Duration::from_secs(10),
            decay: Duration::from_secs(60),
        }
    }
}

impl BackoffPolicy {
    /// The wait after `failures` failures, counted from the last of them.
    fn wait_after(&self, failures: u32) -> Duration {
        let Some(past_free) = failures.checked_sub(self.free_failures).filter(|&n| n > 0) else {
            return Duration::ZERO;
        };
        // base * 2^(past_free - 1), saturating long before u32 shifts overflow.
        let doublings = (past_free - 1).min(31);
        self.base
            .checked_mul(1u32 << doublings)
            .map_or(self.max, |wait| wait.min(self.max))
    }
}

/// The key addresses are counted under: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ClientKey {
    V4(u32),
    V6Net(u64),
}

impl From<IpAddr> for ClientKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(u32::from(v4)),
                None => ClientKey::V6Net(v6_network(v6)),
            },
        }
    }
}

/// The upper 64 bits of an IPv6 address: its /64.
fn v6_network(v6: Ipv6Addr) -> u64 {
    (u128::from(v6) >> 64) as u64
}

/// One address's score.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Failures as of `last_failure` (decay is applied when read).
    failures: u32,
    last_failure: Instant,
}

impl Entry {
    /// The failure count at `now`, after decay.
    fn failures_at(&self, now: Instant, policy: &BackoffPolicy) -> u32 {
        let quiet = now.saturating_duration_since(self.last_failure);
        let forgiven = if policy.decay.is_zero() {
            u32::MAX
        } else {
            u32::try_from(quiet.as_nanos() / policy.decay.as_nanos()).unwrap_or(u32::MAX)
        };
        self.failures.saturating_sub(forgiven)
    }
}

/// Failure scores of client addresses, bounded in memory; see the module docs.
#[derive(Debug)]
pub(crate) struct AuthBackoff {
    shards: Box<[Mutex<HashMap<ClientKey, Entry>>]>,
    /// Most entries one shard holds.
    per_shard: usize,
    /// Picks the shard; keyed per instance so that a client cannot aim at one shard.
    hasher: RandomState,
    policy: BackoffPolicy,
}

impl AuthBackoff {
    /// Remembers up to about `max_entries` addresses (at least one per shard), with the
    /// default [`BackoffPolicy`].
    pub(crate) fn new(max_entries: usize) -> Self {
        Self::with_policy(max_entries, BackoffPolicy::default())
    }

    /// As [`AuthBackoff::new`], with another policy.
    pub(crate) fn with_policy(max_entries: usize, policy: BackoffPolicy) -> Self {
        AuthBackoff {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: max_entries.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
            policy,
        }
    }

    /// How long to wait before answering `ip`'s next authentication attempt (zero for an
    /// address with no recent failures past the free ones).
    pub(crate) fn delay_for(&self, ip: IpAddr) -> Duration {
        let key = ClientKey::from(ip);
        let now = Instant::now();
        let shard = self.shard(key);
        let Some(entry) = shard.get(&key).copied() else {
            return Duration::ZERO;
        };
        drop(shard);
        let wait = self.policy.wait_after(entry.failures_at(now, &self.policy));
        (entry.last_failure + wait).saturating_duration_since(now)
    }

    /// Records a failed attempt from `ip`.
    pub(crate) fn failed(&self, ip: IpAddr) {
        let key = ClientKey::from(ip);
        let now = Instant::now();
        let policy = self.policy;
        let mut shard = self.shard(key);
        if let Some(entry) = shard.get_mut(&key) {
            entry.failures = entry.failures_at(now, &policy).saturating_add(1);
            entry.last_failure = now;
            return;
        }
        if shard.len() >= self.per_shard {
            shard.retain(|_, e| e.failures_at(now, &policy) > 0);
        }
        if shard.len() >= self.per_shard {
            let oldest = shard
                .iter()
                .min_by_key(|(_, e)| e.last_failure)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                shard.remove(&oldest);
            }
        }
        shard.insert(
            key,
            Entry {
                failures: 1,
                last_failure: now,
            },
        );
    }

    /// Records a successful attempt from `ip`: its count drops to the free allowance, so the
    /// next attempt is answered at once (see the module docs for why not to zero).
    pub(crate) fn succeeded(&self, ip: IpAddr) {
        let key = ClientKey::from(ip);
        let now = Instant::now();
        let policy = self.policy;
        let mut shard = self.shard(key);
        let Some(entry) = shard.get_mut(&key) else {
            return;
        };
        let failures = entry.failures_at(now, &policy).min(policy.free_failures);
        if failures == 0 {
            shard.remove(&key);
        } else {
            // Decay keeps counting from the last failure, not from this success.
            entry.failures = failures;
            entry.last_failure = now;
        }
    }

    /// How many addresses are remembered (including ones whose count has decayed but that
    /// were not dropped yet). For metrics and tests.
    pub(crate) fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    fn shard(&self, key: ClientKey) -> std::sync::MutexGuard<'_, HashMap<ClientKey, Entry>> {
        let index = (self.hasher.hash_one(key) as usize) % self.shards.len();
        // A panic while holding the lock leaves a map of plain values, still consistent.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 66));
    const BYSTANDER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

    fn policy() -> BackoffPolicy {
        BackoffPolicy {
            free_failures: 3,
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
            decay: Duration::from_secs(60),
        }
    }

    fn fail_times(backoff: &AuthBackoff, ip: IpAddr, n: u32) {
        for _ in 0..n {
            backoff.failed(ip);
        }
    }

    #[test]
    fn the_wait_doubles_past_the_free_failures_up_to_the_cap() {
        let p = policy();
        let waits: Vec<u64> = (0..=10)
            .map(|n| p.wait_after(n).as_millis() as u64)
            .collect();
        assert_eq!(waits, [0, 0, 0, 0, 100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(p.wait_after(u32::MAX), p.max, "no overflow at the far end");
        let huge = BackoffPolicy {
            base: Duration::MAX,
            max: Duration::MAX,
            ..p
        };
        assert_eq!(
            huge.wait_after(20),
            Duration::MAX,
            "no overflow in the product"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_guesser_waits_exponentially_and_others_not_at_all() {
        let backoff = AuthBackoff::with_policy(1024, policy());
        fail_times(&backoff, ATTACKER, 3);
        assert_eq!(
            backoff.delay_for(ATTACKER),
            Duration::ZERO,
            "typos are free"
        );
        backoff.failed(ATTACKER);
        assert_eq!(backoff.delay_for(ATTACKER), Duration::from_millis(100));
        backoff.failed(ATTACKER);
        assert_eq!(backoff.delay_for(ATTACKER), Duration::from_millis(200));
        fail_times(&backoff, ATTACKER, 20);
        assert_eq!(
            backoff.delay_for(ATTACKER),
            Duration::from_secs(2),
            "capped"
        );
        assert_eq!(backoff.delay_for(BYSTANDER), Duration::ZERO);
        let bystander_v6: IpAddr = "2001:db8:1::7".parse().expect("literal");
        assert_eq!(backoff.delay_for(bystander_v6), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_counts_from_the_last_failure() {
        let backoff = AuthBackoff::with_policy(1024, policy());
        fail_times(&backoff, ATTACKER, 6);
        assert_eq!(backoff.delay_for(ATTACKER), Duration::from_millis(400));
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(backoff.delay_for(ATTACKER), Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(backoff.delay_for(ATTACKER), Duration::ZERO);
        // The next failure starts a longer wait from now.
        backoff.failed(ATTACKER);
        assert_eq!(backoff.delay_for(ATTACKER), Duration::from_millis(800));
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_time_forgives_failures_and_then_forgets_the_address() {
        let backoff = AuthBackoff::with_policy(1024, policy());
        fail_times(&backoff, ATTACKER, 5);
        assert_eq!(backoff.delay_for(ATTACKER), Duration::from_millis(200));
        // One minute forgives one failure: 4 failures, the next costs 200 ms again, not 400.
        tokio::time::advance(Duration::from_secs(60)).await;
        backoff.failed(ATTACKER);
        assert_eq!(backoff.delay_for(ATTACKER), Duration::from_millis(200));
        // Five quiet minutes forgive all five: the next failure is a free one.
        tokio::time::advance(Duration::from_secs(300)).await;
        backoff.failed(ATTACKER);
        assert_eq!(backoff.delay_for(ATTACKER), Duration::ZERO);
        fail_times(&backoff, ATTACKER, 2);
        assert_eq!(
            backoff.delay_for(ATTACKER),
            Duration::ZERO,
            "3 failures: free"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn success_lifts_the_wait_but_does_not_wipe_the_score() {
        let backoff = AuthBackoff::with_policy(1024, policy());
        fail_times(&backoff, ATTACKER, 8);
        assert!(backoff.delay_for(ATTACKER) > Duration::ZERO);
        backoff.succeeded(ATTACKER);
        assert_eq!(backoff.delay_for(ATTACKER), Duration::ZERO);
        // Still at the free allowance: the very next failure costs the base wait.
        backoff.failed(ATTACKER);
        assert_eq!(backoff.delay_for(ATTACKER), Duration::from_millis(100));
        // A client that never failed leaves no trace by succeeding.
        backoff.succeeded(BYSTANDER);
        assert_eq!(backoff.tracked(), 1);
        // Nor does one whose failures have all decayed.
        tokio::time::advance(Duration::from_secs(600)).await;
        backoff.succeeded(ATTACKER);
        assert_eq!(backoff.tracked(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let backoff = AuthBackoff::with_policy(1024, policy());
        // Hopping through one /64 does not escape.
        for host in 1..=6u16 {
            let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, host));
            backoff.failed(ip);
        }
        let same_64: IpAddr = "2001:db8:0:1:ffff::1".parse().expect("literal");
        assert_eq!(backoff.delay_for(same_64), Duration::from_millis(400));
        let next_64: IpAddr = "2001:db8:0:2::1".parse().expect("literal");
        assert_eq!(backoff.delay_for(next_64), Duration::ZERO);
        // ::ffff:192.0.2.66 is the attacker's IPv4 address, seen through a dual-stack socket.
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 66).to_ipv6_mapped());
        fail_times(&backoff, mapped, 4);
        assert_eq!(backoff.delay_for(ATTACKER), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded_and_the_oldest_failure_goes_first() {
        let backoff = AuthBackoff::with_policy(SHARDS * 4, policy());
        fail_times(&backoff, ATTACKER, 6);
        // Ten thousand other addresses fail once each, later.
        for n in 0..10_000u32 {
            tokio::time::advance(Duration::from_millis(1)).await;
            backoff.failed(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)));
            assert!(backoff.tracked() <= SHARDS * 4);
        }
        // The attacker's entry was the oldest in its shard: evicted, so its wait is gone (the
        // documented cost of a bound), and the most recent addresses are all still there.
        assert_eq!(backoff.delay_for(ATTACKER), Duration::ZERO);
        let last = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + 9_999));
        fail_times(&backoff, last, 3);
        assert_eq!(backoff.delay_for(last), Duration::from_millis(100));
    }

    /// `n` distinct addresses that land in the same shard of `backoff`.
    fn same_shard(backoff: &AuthBackoff, n: usize) -> Vec<IpAddr> {
        let shard_of = |ip: IpAddr| backoff.hasher.hash_one(ClientKey::from(ip)) as usize % SHARDS;
        let first = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0));
        (0..=u32::from(u16::MAX))
            .map(|i| IpAddr::V4(Ipv4Addr::from(0xc633_6400 + i)))
            .filter(|ip| shard_of(*ip) == shard_of(first))
            .take(n)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn decayed_entries_make_room_before_live_ones_are_evicted() {
        // Two entries per shard; three addresses of one shard.
        let backoff = AuthBackoff::with_policy(2 * SHARDS, policy());
        let ips = same_shard(&backoff, 3);
        let (persistent, passing, newcomer) = (ips[0], ips[1], ips[2]);
        fail_times(&backoff, persistent, 5);
        tokio::time::advance(Duration::from_secs(10)).await;
        backoff.failed(passing);
        // Two minutes on: `passing` has decayed to nothing, `persistent` (older, but with more
        // failures) still has 3. The newcomer must push out the decayed one, not the oldest.
        tokio::time::advance(Duration::from_secs(120)).await;
        backoff.failed(newcomer);
        assert_eq!(backoff.tracked(), 2);
        backoff.failed(persistent);
        assert_eq!(
            backoff.delay_for(persistent),
            Duration::from_millis(100),
            "the live score survived"
        );
    }

    #[test]
    fn a_zero_bound_still_keeps_one_entry_per_shard() {
        let backoff = AuthBackoff::new(0);
        assert_eq!(backoff.per_shard, 1);
    }

    /// Real time (the std threads have no paused tokio clock): the few microseconds the
    /// threads take come off the wait.
    #[test]
    fn parallel_failures_from_many_threads_are_all_counted() {
        let backoff = std::sync::Arc::new(AuthBackoff::with_policy(1024, policy()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let backoff = backoff.clone();
                std::thread::spawn(move || fail_times(&backoff, ATTACKER, 2))
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        // 8 failures: 3 free, then 100 ms doubling four times.
        let wait = backoff.delay_for(ATTACKER);
        assert!(
            wait <= Duration::from_millis(1600) && wait > Duration::from_millis(1500),
            "{wait:?}"
        );
    }
}
