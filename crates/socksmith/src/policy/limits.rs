//! Per-user and per-client limits: how many tunnels a user may hold open
//! (`--max-tunnels-per-user`), how many UDP associations and BIND listeners one client
//! address may hold (`--max-udp-per-client`, `--max-bind-per-client`), and how fast a user's
//! bytes may flow (`--rate-per-user`, a token bucket each way).
//!
//! Counting is done with RAII permits: [`KeyedSlots::try_acquire`] hands out a [`Slot`] while
//! the key is under its limit, and the slot is free again as soon as the [`Slot`] drops (the
//! tunnel, association or listener ended, however it ended). Memory is bounded by what is in
//! use: a key's entry disappears with its last slot, so the tables hold one entry per key
//! that currently holds something, and the server's session cap bounds those.
//!
//! Rates are token buckets from `governor` ([`RateLimits`], one pair of buckets per user,
//! shared by all of that user's tunnels); `crate::relay::rate` wraps a stream with them.
//! Users without a limit get no wrapper, so their tunnels keep the zero-copy relay.
//!
//! Pure bookkeeping: no I/O, no clock of its own beyond the buckets'. A refusal is a
//! [`LimitExceeded`], which the server answers with 0x02 (SOCKS4: 0x5B). [`Limits`] plugs into
//! the server as an [`Accounting`]: every tunnel (CONNECT, BIND, UDP ASSOCIATE) of an
//! authenticated user takes one of the user's tunnel slots, a BIND or UDP ASSOCIATE also takes
//! one of its client address's slots, and the guard the server keeps for the tunnel's life
//! holds them.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use socksmith_proto::{Command, Version};

use crate::policy::DenyReason;
use crate::server::{Accounting, TunnelGuard};
use crate::session::Session;

/// Which limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitKind {
    /// `--max-tunnels-per-user`.
    TunnelsPerUser,
    /// `--max-udp-per-client`.
    UdpPerClient,
    /// `--max-bind-per-client`.
    BindPerClient,
}

impl LimitKind {
    /// The command-line flag that sets it.
    pub fn flag(self) -> &'static str {
        match self {
            LimitKind::TunnelsPerUser => "--max-tunnels-per-user",
            LimitKind::UdpPerClient => "--max-udp-per-client",
            LimitKind::BindPerClient => "--max-bind-per-client",
        }
    }

    fn what(self) -> &'static str {
        match self {
            LimitKind::TunnelsPerUser => "tunnels",
            LimitKind::UdpPerClient => "UDP associations",
            LimitKind::BindPerClient => "BIND listeners",
        }
    }
}

/// A request refused by a limit: one line for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{who} already holds {limit} {} ({} {limit})", kind.what(), kind.flag())]
pub struct LimitExceeded {
    /// Which limit.
    pub kind: LimitKind,
    /// The user (`user "alice"`) or client address (`client 192.0.2.7`).
    pub who: String,
    /// The limit in force.
    pub limit: usize,
}

/// Concurrent holders counted per key, each key capped at `limit`.
///
/// ```
/// use socksmith::policy::KeyedSlots;
///
/// let slots = KeyedSlots::new(2);
/// let a = slots.try_acquire("alice").unwrap();
/// let b = slots.try_acquire("alice").unwrap();
/// assert!(slots.try_acquire("alice").is_none());
/// assert!(slots.try_acquire("bob").is_some());
/// drop(a);
/// assert!(slots.try_acquire("alice").is_some());
/// # drop(b);
/// ```
pub struct KeyedSlots<K: Eq + Hash> {
    limit: usize,
    inner: Arc<SlotTable<K>>,
}

struct SlotTable<K> {
    counts: Mutex<HashMap<K, usize>>,
}

impl<K: Eq + Hash> SlotTable<K> {
    fn lock(&self) -> MutexGuard<'_, HashMap<K, usize>> {
        // Every update leaves the map consistent, so a poisoned lock still holds good counts.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One held slot of a [`KeyedSlots`]; dropping it frees the slot.
#[must_use = "the slot is released as soon as it is dropped"]
pub struct Slot<K: Eq + Hash> {
    table: Arc<SlotTable<K>>,
    key: Option<K>,
}

impl<K: Eq + Hash + Clone> KeyedSlots<K> {
    /// At most `limit` slots per key at once (a limit of 0 refuses everything).
    pub fn new(limit: usize) -> Self {
        KeyedSlots {
            limit,
            inner: Arc::new(SlotTable {
                counts: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Slots with a new `limit` that share this one's counts: what is held here counts
    /// there (a reload changes a limit without forgetting who holds what). This one keeps
    /// its own limit.
    pub fn with_limit(&self, limit: usize) -> Self {
        KeyedSlots {
            limit,
            inner: Arc::clone(&self.inner),
        }
    }

    /// The per-key limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A slot for `key`, or `None` when `key` already holds `limit` of them.
    pub fn try_acquire(&self, key: K) -> Option<Slot<K>> {
        let mut counts = self.inner.lock();
        let count = counts.entry(key.clone()).or_insert(0);
        if *count >= self.limit {
            if *count == 0 {
                counts.remove(&key);
            }
            return None;
        }
        *count += 1;
        Some(Slot {
            table: Arc::clone(&self.inner),
            key: Some(key),
        })
    }

    /// How many slots `key` holds.
    pub fn held(&self, key: &K) -> usize {
        self.inner.lock().get(key).copied().unwrap_or(0)
    }

    /// How many keys hold at least one slot (the table's size).
    pub fn keys(&self) -> usize {
        self.inner.lock().len()
    }
}

impl<K: Eq + Hash> Drop for Slot<K> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut counts = self.table.lock();
        if let Some(count) = counts.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&key);
            }
        }
    }
}

impl<K: Eq + Hash + fmt::Debug> fmt::Debug for Slot<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Slot").field(&self.key).finish()
    }
}

impl<K: Eq + Hash> fmt::Debug for KeyedSlots<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedSlots")
            .field("limit", &self.limit)
            .field("keys", &self.inner.lock().len())
            .finish()
    }
}

/// A byte rate, as given to `--rate-per-user`: `10MiB/s`, `500KiB/s`, `1.5MB/s`, `64kB`,
/// `2048B/s`. Units are decimal (`kB`, `MB`, `GB`) or binary (`KiB`, `MiB`, `GiB`), case
/// aside; `/s` may be left out. From 1 B/s to 4 GiB/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    bytes_per_second: NonZeroU32,
}

/// Why a rate did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a rate like 10MiB/s, 500KiB/s or 1MB/s (from 1 B/s to 4 GiB/s)")]
pub struct RateParseError(String);

impl Rate {
    /// `bytes_per_second` bytes a second.
    pub fn bytes_per_second(bytes_per_second: NonZeroU32) -> Rate {
        Rate { bytes_per_second }
    }

    /// Bytes a second.
    pub fn get(self) -> u32 {
        self.bytes_per_second.get()
    }
}

impl FromStr for Rate {
    type Err = RateParseError;

    fn from_str(text: &str) -> Result<Rate, RateParseError> {
        let error = || RateParseError(text.to_owned());
        let trimmed = text.trim();
        let body = trimmed.strip_suffix("/s").unwrap_or(trimmed).trim_end();
        let split = body
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(body.len());
        let (number, unit) = body.split_at(split);
        let number: f64 = number.parse().map_err(|_| error())?;
        let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "b" => 1.0,
            "kb" => 1e3,
            "kib" => 1024.0,
            "mb" => 1e6,
            "mib" => 1024.0 * 1024.0,
            "gb" => 1e9,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            _ => return Err(error()),
        };
        let bytes = (number * scale).round();
        if !(1.0..=f64::from(u32::MAX)).contains(&bytes) {
            return Err(error());
        }
        // In range, checked just above.
        let bytes = bytes as u32;
        NonZeroU32::new(bytes)
            .map(Rate::bytes_per_second)
            .ok_or_else(error)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.get();
        for (unit, size) in [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if bytes >= size && bytes % size == 0 {
                return write!(f, "{}{unit}/s", bytes / size);
            }
        }
        write!(f, "{bytes}B/s")
    }
}

/// The largest grant a bucket hands out at once: a relay read or write of at most this many
/// bytes, so that a slow rate still moves in small, even steps.
const MAX_GRANT: u32 = 16 * 1024;

/// One token bucket of bytes (one direction of one user): refills at the rate, holds at most
/// one second of it.
pub struct Bucket {
    limiter: DefaultDirectRateLimiter,
    clock: DefaultClock,
    max_grant: NonZeroU32,
}

impl Bucket {
    fn new(rate: Rate) -> Bucket {
        Bucket {
            limiter: DefaultDirectRateLimiter::direct(Quota::per_second(rate.bytes_per_second)),
            clock: DefaultClock::default(),
            max_grant: rate
                .bytes_per_second
                .min(NonZeroU32::new(MAX_GRANT).expect("a non-zero constant")),
        }
    }

    /// Takes up to `want` bytes' worth of tokens: `Ok(n)` with `1 <= n <= want` granted now,
    /// or `Err(wait)`, the time until they are there (nothing taken). `want` of 0 gets 0.
    pub fn reserve(&self, want: usize) -> Result<usize, Duration> {
        let Some(want) = NonZeroU32::new(u32::try_from(want).unwrap_or(u32::MAX)) else {
            return Ok(0);
        };
        let n = want.min(self.max_grant);
        match self.limiter.check_n(n) {
            Ok(Ok(())) => Ok(n.get() as usize),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(self.clock.now())),
            // `n` is at most the burst (one second of the rate), so capacity is never short;
            // should it be, waiting a second is the bucket's full refill.
            Err(_) => Err(Duration::from_secs(1)),
        }
    }
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket")
            .field("max_grant", &self.max_grant)
            .finish_non_exhaustive()
    }
}

/// A user's two buckets: `up` for bytes from the client to the target, `down` for bytes back.
#[derive(Debug)]
pub struct UserBuckets {
    /// Client to target.
    pub up: Bucket,
    /// Target to client.
    pub down: Bucket,
}

/// Per-user rates: every tunnel of a user draws from the same two buckets, so the rate is
/// the user's, not each tunnel's. A user's buckets live while one of their tunnels does.
pub struct RateLimits {
    rate: Rate,
    users: Mutex<RateTable>,
}

struct RateTable {
    users: HashMap<String, Weak<UserBuckets>>,
    /// Dead entries are swept when the table grows past this; it then doubles the live count.
    sweep_at: usize,
}

/// Smallest table size that triggers a sweep of users whose tunnels all ended.
const MIN_SWEEP: usize = 64;

impl RateLimits {
    /// Each user gets `rate` each way.
    pub fn new(rate: Rate) -> Self {
        RateLimits {
            rate,
            users: Mutex::new(RateTable {
                users: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    /// The rate each user gets each way.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// `user`'s buckets, shared with the user's other tunnels; hold them for the tunnel's
    /// life.
    pub fn for_user(&self, user: &str) -> Arc<UserBuckets> {
        let mut table = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(buckets) = table.users.get(user).and_then(Weak::upgrade) {
            return buckets;
        }
        if table.users.len() >= table.sweep_at {
            table.users.retain(|_, buckets| buckets.strong_count() > 0);
            table.sweep_at = (table.users.len() * 2).max(MIN_SWEEP);
        }
        let buckets = Arc::new(UserBuckets {
            up: Bucket::new(self.rate),
            down: Bucket::new(self.rate),
        });
        table
            .users
            .insert(user.to_owned(), Arc::downgrade(&buckets));
        buckets
    }

    /// How many users the table holds (live or not yet swept).
    pub fn tracked_users(&self) -> usize {
        self.users
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .users
            .len()
    }
}

impl fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimits")
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

/// The limits of the flags, as configured (`None`: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitsConfig {
    /// `--max-tunnels-per-user N`.
    pub max_tunnels_per_user: Option<usize>,
    /// `--max-udp-per-client N`.
    pub max_udp_per_client: Option<usize>,
    /// `--max-bind-per-client N`.
    pub max_bind_per_client: Option<usize>,
    /// `--rate-per-user RATE`.
    pub rate_per_user: Option<Rate>,
}

/// The live limits of a server: one per flag, each absent when not configured.
///
/// ```
/// use socksmith::policy::{Limits, LimitsConfig};
///
/// let mut config = LimitsConfig::default();
/// config.max_tunnels_per_user = Some(1);
/// let limits = Limits::new(config);
/// let first = limits.tunnel(Some("alice")).unwrap();
/// assert!(limits.tunnel(Some("alice")).is_err());
/// assert!(limits.tunnel(Some("bob")).is_ok());
/// drop(first);
/// assert!(limits.tunnel(Some("alice")).is_ok());
/// ```
#[derive(Debug, Default)]
pub struct Limits {
    tunnels_per_user: Option<KeyedSlots<String>>,
    udp_per_client: Option<KeyedSlots<IpAddr>>,
    bind_per_client: Option<KeyedSlots<IpAddr>>,
    rates: Option<Arc<RateLimits>>,
}

/// What a request holds while it runs: release it by dropping it.
pub type Permit<K> = Option<Slot<K>>;

impl Limits {
    /// The limits `config` asks for.
    pub fn new(config: LimitsConfig) -> Self {
        Limits {
            tunnels_per_user: config.max_tunnels_per_user.map(KeyedSlots::new),
            udp_per_client: config.max_udp_per_client.map(KeyedSlots::new),
            bind_per_client: config.max_bind_per_client.map(KeyedSlots::new),
            rates: config
                .rate_per_user
                .map(|rate| Arc::new(RateLimits::new(rate))),
        }
    }

    /// The limits `config` asks for, counting on from `self`: the tunnels each user holds
    /// and the associations and listeners each client holds under `self` count against
    /// the new limits, and an unchanged rate keeps each user's buckets (a reload must not
    /// give everyone a fresh allowance). `self` is not changed.
    pub fn reconfigured(&self, config: LimitsConfig) -> Self {
        fn carry<K: Eq + Hash + Clone>(
            old: &Option<KeyedSlots<K>>,
            limit: Option<usize>,
        ) -> Option<KeyedSlots<K>> {
            limit.map(|limit| match old {
                Some(slots) => slots.with_limit(limit),
                None => KeyedSlots::new(limit),
            })
        }
        Limits {
            tunnels_per_user: carry(&self.tunnels_per_user, config.max_tunnels_per_user),
            udp_per_client: carry(&self.udp_per_client, config.max_udp_per_client),
            bind_per_client: carry(&self.bind_per_client, config.max_bind_per_client),
            rates: config.rate_per_user.map(|rate| match &self.rates {
                // The same rate: the same buckets, with what each user has used.
                Some(rates) if rates.rate() == rate => Arc::clone(rates),
                _ => Arc::new(RateLimits::new(rate)),
            }),
        }
    }

    /// A tunnel slot for `user` (the authenticated name; anonymous sessions are not
    /// counted). `Ok(None)` when there is no limit.
    pub fn tunnel(&self, user: Option<&str>) -> Result<Permit<String>, LimitExceeded> {
        let (Some(slots), Some(user)) = (&self.tunnels_per_user, user) else {
            return Ok(None);
        };
        slots
            .try_acquire(user.to_owned())
            .map(Some)
            .ok_or_else(|| LimitExceeded {
                kind: LimitKind::TunnelsPerUser,
                who: format!("user {user:?}"),
                limit: slots.limit(),
            })
    }

    /// A UDP association slot for the client at `client`.
    pub fn udp_association(&self, client: IpAddr) -> Result<Permit<IpAddr>, LimitExceeded> {
        per_client(&self.udp_per_client, client, LimitKind::UdpPerClient)
    }

    /// A BIND listener slot for the client at `client`.
    pub fn bind_listener(&self, client: IpAddr) -> Result<Permit<IpAddr>, LimitExceeded> {
        per_client(&self.bind_per_client, client, LimitKind::BindPerClient)
    }

    /// `user`'s buckets when a rate is configured and the session has a user; `None` means
    /// relay unthrottled (and zero-copy).
    pub fn rate_for(&self, user: Option<&str>) -> Option<Arc<UserBuckets>> {
        Some(self.rates.as_ref()?.for_user(user?))
    }
}

/// The slots one tunnel holds; dropping it frees them.
struct LimitGuard {
    _user: Permit<String>,
    _client: Permit<IpAddr>,
}

impl TunnelGuard for LimitGuard {}

impl Accounting for Limits {
    fn open(&self, session: &Session) -> Result<Option<Box<dyn TunnelGuard>>, DenyReason> {
        let refuse = |e: LimitExceeded| DenyReason::Other(e.to_string());
        let client = session.client.ip();
        let client_slot = match session.command {
            Command::UdpAssociate => self.udp_association(client).map_err(refuse)?,
            Command::Bind => self.bind_listener(client).map_err(refuse)?,
            _ => None,
        };
        // Only a password-checked SOCKS5 user is an identity; SOCKS4's user id is a claim.
        let user = session
            .user
            .as_deref()
            .filter(|_| session.version == Version::V5);
        let user_slot = self.tunnel(user).map_err(refuse)?;
        if client_slot.is_none() && user_slot.is_none() {
            return Ok(None);
        }
        Ok(Some(Box::new(LimitGuard {
            _user: user_slot,
            _client: client_slot,
        })))
    }
}

fn per_client(
    slots: &Option<KeyedSlots<IpAddr>>,
    client: IpAddr,
    kind: LimitKind,
) -> Result<Permit<IpAddr>, LimitExceeded> {
    let Some(slots) = slots else { return Ok(None) };
    let client = client.to_canonical();
    slots
        .try_acquire(client)
        .map(Some)
        .ok_or_else(|| LimitExceeded {
            kind,
            who: format!("client {client}"),
            limit: slots.limit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("literal")
    }

    fn config() -> LimitsConfig {
        LimitsConfig::default()
    }

    #[test]
    fn the_n_plus_first_tunnel_of_a_user_is_refused_while_others_work() {
        let limits = Limits::new(LimitsConfig {
            max_tunnels_per_user: Some(3),
            ..config()
        });
        let held: Vec<_> = (0..3)
            .map(|_| limits.tunnel(Some("alice")).expect("under the limit"))
            .collect();
        let refused = limits.tunnel(Some("alice")).expect_err("the 4th");
        assert_eq!(
            refused.to_string(),
            "user \"alice\" already holds 3 tunnels (--max-tunnels-per-user 3)"
        );
        assert!(limits.tunnel(Some("bob")).expect("bob is free").is_some());
        assert!(
            limits.tunnel(None).expect("anonymous").is_none(),
            "anonymous sessions are not counted"
        );
        drop(held);
        assert!(limits.tunnel(Some("alice")).is_ok());
    }

    #[test]
    fn a_reconfigured_limit_counts_what_is_held_under_the_old_one() {
        let limits = Limits::new(LimitsConfig {
            max_tunnels_per_user: Some(2),
            max_udp_per_client: Some(1),
            rate_per_user: Some("1MiB/s".parse().expect("a rate")),
            ..config()
        });
        let held = [
            limits.tunnel(Some("alice")).expect("1 of 2"),
            limits.tunnel(Some("alice")).expect("2 of 2"),
        ];
        let udp = limits.udp_association(ip("192.0.2.7")).expect("1 of 1");
        let before = limits.rate_for(Some("alice")).expect("buckets");
        // The same file again: nothing new is allowed.
        let same = limits.reconfigured(LimitsConfig {
            max_tunnels_per_user: Some(2),
            max_udp_per_client: Some(1),
            rate_per_user: Some("1MiB/s".parse().expect("a rate")),
            ..config()
        });
        assert!(same.tunnel(Some("alice")).is_err());
        assert!(same.udp_association(ip("192.0.2.7")).is_err());
        assert!(Arc::ptr_eq(
            &before,
            &same.rate_for(Some("alice")).expect("buckets")
        ));
        // A higher limit leaves room for one more; the old limits stay as they were.
        let raised = limits.reconfigured(LimitsConfig {
            max_tunnels_per_user: Some(3),
            rate_per_user: Some("2MiB/s".parse().expect("a rate")),
            ..config()
        });
        let third = raised.tunnel(Some("alice")).expect("3 of 3");
        assert!(raised.tunnel(Some("alice")).is_err());
        assert!(limits.tunnel(Some("alice")).is_err());
        assert!(raised
            .udp_association(ip("192.0.2.7"))
            .expect("no limit")
            .is_none());
        assert!(!Arc::ptr_eq(
            &before,
            &raised.rate_for(Some("alice")).expect("buckets")
        ));
        // Slots given back under the old limits free room under the new.
        drop(held);
        drop(third);
        assert!(same.tunnel(Some("alice")).is_ok());
        drop(udp);
        assert!(same.udp_association(ip("192.0.2.7")).is_ok());
    }

    #[test]
    fn udp_and_bind_slots_are_per_client_address_and_free_on_drop() {
        let limits = Limits::new(LimitsConfig {
            max_udp_per_client: Some(2),
            max_bind_per_client: Some(1),
            ..config()
        });
        let a = limits.udp_association(ip("192.0.2.7")).expect("1st");
        let b = limits
            .udp_association(ip("::ffff:192.0.2.7"))
            .expect("2nd, mapped spelling of the same client");
        let refused = limits
            .udp_association(ip("192.0.2.7"))
            .expect_err("3rd refused");
        assert_eq!(refused.kind, LimitKind::UdpPerClient);
        assert_eq!(
            refused.to_string(),
            "client 192.0.2.7 already holds 2 UDP associations (--max-udp-per-client 2)"
        );
        assert!(limits.udp_association(ip("192.0.2.8")).is_ok());
        drop(a);
        let c = limits.udp_association(ip("192.0.2.7")).expect("freed");

        let listener = limits.bind_listener(ip("192.0.2.7")).expect("1st");
        assert_eq!(
            limits
                .bind_listener(ip("192.0.2.7"))
                .expect_err("2nd refused")
                .kind,
            LimitKind::BindPerClient
        );
        drop(listener);
        assert!(limits.bind_listener(ip("192.0.2.7")).is_ok());
        drop((b, c));
    }

    #[test]
    fn no_configured_limit_refuses_nothing() {
        let limits = Limits::new(config());
        for _ in 0..100 {
            assert!(limits.tunnel(Some("alice")).expect("no limit").is_none());
            assert!(limits.udp_association(ip("192.0.2.7")).is_ok());
            assert!(limits.bind_listener(ip("192.0.2.7")).is_ok());
        }
        assert!(limits.rate_for(Some("alice")).is_none());
        let zero = KeyedSlots::new(0);
        assert!(zero.try_acquire(1).is_none());
        assert_eq!(zero.keys(), 0);
    }

    #[test]
    fn memory_holds_only_keys_in_use() {
        let slots = KeyedSlots::new(1);
        let held: Vec<_> = (0..1000u32)
            .map(|i| slots.try_acquire(i).expect("free"))
            .collect();
        assert_eq!(slots.keys(), 1000);
        assert_eq!(slots.held(&7), 1);
        drop(held);
        assert_eq!(slots.keys(), 0, "entries leave with their last slot");
        // Refused attempts leave nothing behind either.
        let one = slots.try_acquire(1).expect("free");
        for _ in 0..10 {
            assert!(slots.try_acquire(1).is_none());
        }
        assert_eq!(slots.keys(), 1);
        drop(one);
        assert_eq!(slots.keys(), 0);
    }

    #[test]
    fn slots_survive_concurrent_use() {
        let slots = KeyedSlots::new(4);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        let slot = slots.try_acquire("k").expect("at most 4 threads hold one");
                        assert!(slots.held(&"k") <= 4);
                        drop(slot);
                    }
                });
            }
        });
        assert_eq!(slots.keys(), 0);
    }

    fn session(command: Command, client: &str, user: Option<&str>) -> Session {
        Session {
            client: format!("{client}:5000").parse().expect("literal"),
            local: "192.0.2.1:1080".parse().expect("literal"),
            user: user.map(str::to_owned),
            version: Version::V5,
            command,
            target: socksmith_proto::TargetAddr::Ip("198.51.100.1:80".parse().expect("literal")),
            http: false,
        }
    }

    #[test]
    fn as_the_servers_accounting_limits_refuse_the_n_plus_first_tunnel() {
        let limits = Limits::new(LimitsConfig {
            max_tunnels_per_user: Some(2),
            max_udp_per_client: Some(1),
            max_bind_per_client: Some(1),
            ..config()
        });
        let accounting: &dyn Accounting = &limits;
        let alice = session(Command::Connect, "192.0.2.7", Some("alice"));
        let first = accounting.open(&alice).expect("1st").expect("a guard");
        let second = accounting.open(&alice).expect("2nd").expect("a guard");
        let Err(DenyReason::Other(reason)) = accounting.open(&alice) else {
            panic!("the 3rd tunnel must be refused")
        };
        assert!(reason.contains("--max-tunnels-per-user 2"), "{reason}");
        // Another user works meanwhile; SOCKS4 claims and anonymous sessions are not users.
        let bob = session(Command::Connect, "192.0.2.7", Some("bob"));
        assert!(accounting.open(&bob).expect("bob").is_some());
        let mut claim = alice.clone();
        claim.version = Version::V4;
        assert!(accounting.open(&claim).expect("not counted").is_none());
        drop(first);
        let third = accounting.open(&alice).expect("a slot was freed");

        // UDP and BIND count per client address, whoever the user is.
        let udp = session(Command::UdpAssociate, "192.0.2.9", None);
        let association = accounting.open(&udp).expect("1st").expect("a guard");
        let Err(DenyReason::Other(reason)) = accounting.open(&udp) else {
            panic!("the 2nd association must be refused")
        };
        assert!(reason.contains("--max-udp-per-client 1"), "{reason}");
        let bind = session(Command::Bind, "192.0.2.9", None);
        let listener = accounting.open(&bind).expect("1st").expect("a guard");
        assert!(accounting.open(&bind).is_err());
        drop((association, listener));
        assert!(accounting.open(&udp).is_ok() && accounting.open(&bind).is_ok());
        // A refused user tunnel does not keep the client slot it took first.
        let alice_udp = session(Command::UdpAssociate, "192.0.2.10", Some("alice"));
        assert!(
            accounting.open(&alice_udp).is_err(),
            "alice holds 2 already"
        );
        assert_eq!(limits.udp_per_client.as_ref().map(|s| s.keys()), Some(0));
        drop((second, third));
    }

    #[test]
    fn rates_parse_in_decimal_and_binary_units() {
        let parse = |s: &str| s.parse::<Rate>().map(Rate::get);
        assert_eq!(parse("10MiB/s"), Ok(10 * 1024 * 1024));
        assert_eq!(parse("500KiB/s"), Ok(500 * 1024));
        assert_eq!(parse("1MB/s"), Ok(1_000_000));
        assert_eq!(parse("64kB"), Ok(64_000));
        assert_eq!(parse("1.5mib/s"), Ok(1_572_864));
        assert_eq!(parse("2048B/s"), Ok(2048));
        assert_eq!(parse(" 1 GiB/s "), Ok(1 << 30));
        assert_eq!(parse("4GiB/s").ok(), None, "above u32");
        for bad in [
            "", "10", "MiB/s", "10 MiB/h", "-1MiB/s", "0B/s", "1e3B/s", "10Mbit/s",
        ] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?}");
        }
        let error = "fast".parse::<Rate>().expect_err("no number");
        assert!(error.to_string().contains("10MiB/s"), "{error}");
        assert_eq!(
            "10MiB/s".parse::<Rate>().expect("valid").to_string(),
            "10MiB/s"
        );
        assert_eq!(
            "1000B/s".parse::<Rate>().expect("valid").to_string(),
            "1000B/s"
        );
    }

    #[test]
    fn a_bucket_grants_its_burst_then_makes_the_caller_wait() {
        let rate = "64KiB/s".parse::<Rate>().expect("valid");
        let bucket = Bucket::new(rate);
        assert_eq!(bucket.reserve(0), Ok(0));
        assert_eq!(bucket.reserve(100), Ok(100));
        // Grants are capped so that the relay moves in small steps.
        assert_eq!(bucket.reserve(1 << 20), Ok(MAX_GRANT as usize));
        let mut granted = 100 + MAX_GRANT as usize;
        while let Ok(n) = bucket.reserve(MAX_GRANT as usize) {
            granted += n;
            assert!(granted <= 2 * 64 * 1024, "the burst is about one second");
        }
        // A grant is all or nothing: less than one grant of the burst may stay behind.
        assert!(
            granted > (64 - 16) * 1024,
            "about one second of burst: {granted}"
        );
        let wait = bucket.reserve(MAX_GRANT as usize).expect_err("empty");
        // 16 KiB at 64 KiB/s takes up to a quarter second to refill.
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(260),
            "{wait:?}"
        );
    }

    #[test]
    fn a_users_tunnels_share_buckets_and_ended_users_are_swept() {
        let rates = RateLimits::new("1MiB/s".parse().expect("valid"));
        let a = rates.for_user("alice");
        let b = rates.for_user("alice");
        assert!(Arc::ptr_eq(&a, &b));
        let bob = rates.for_user("bob");
        assert!(!Arc::ptr_eq(&a, &bob));
        drop((a, b, bob));
        for i in 0..1000 {
            drop(rates.for_user(&format!("user{i}")));
            assert!(rates.tracked_users() <= 2 * MIN_SWEEP, "bounded table");
        }
        let limits = Limits::new(LimitsConfig {
            rate_per_user: Some("1MiB/s".parse().expect("valid")),
            ..config()
        });
        assert!(limits.rate_for(Some("alice")).is_some());
        assert!(
            limits.rate_for(None).is_none(),
            "anonymous sessions unlimited"
        );
    }
}
