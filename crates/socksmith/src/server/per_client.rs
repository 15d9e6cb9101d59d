//! Counting what each client holds at once (sessions, name lookups), with a slot per thing
//! held that gives itself back when dropped, so no path (an error, a panic, a task cut at
//! shutdown) can leak a count.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Sessions per client address, with a slot held by each session.
#[derive(Debug)]
pub(crate) struct PerClient {
    /// Changed by a reload ([`PerClient::set_limit`]); the counts carry on.
    limit: AtomicUsize,
    counts: Mutex<HashMap<Ipv6Addr, usize>>,
    /// When a refusal was last logged as a warning.
    warned: Mutex<Option<Instant>>,
    /// Callers waiting in [`PerClient::take_within`]: only then does a slot given back wake
    /// anyone (sessions, which never wait, pay nothing for it).
    waiting: AtomicUsize,
    /// Woken when a slot is given back while someone waits.
    freed: Notify,
}

/// Refusals are logged as a warning at most this often (a flood must not flood the log).
const WARN_EVERY: Duration = Duration::from_secs(60);

/// One session's place in its client's count; given back when dropped (also when the task
/// panics or is cut at shutdown).
///
/// Every session task holds one, so its key is an `Ipv6Addr` (IPv4 clients as IPv4-mapped
/// addresses): 16 bytes where an `IpAddr` takes 17 and pads the slot to 32.
pub(crate) struct ClientSlot {
    owner: Arc<PerClient>,
    key: Ipv6Addr,
}

impl PerClient {
    /// At most `limit` at once per client.
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(PerClient {
            limit: AtomicUsize::new(limit),
            counts: Mutex::new(HashMap::new()),
            warned: Mutex::new(None),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
        })
    }

    /// Whether a refusal now should be logged as a warning: the first, then one a minute.
    pub(crate) fn should_warn(&self) -> bool {
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match *warned {
            Some(last) if now.duration_since(last) < WARN_EVERY => false,
            _ => {
                *warned = Some(now);
                true
            }
        }
    }

    /// The limit per client.
    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// A new limit for the slots taken from now on (a reload); slots held above it stay
    /// held until given back.
    pub(crate) fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// The key a client is counted under: its /64 for IPv6, else its IPv4 address, mapped
    /// (a /64 prefix never looks like a mapped address, whose low 64 bits are not zero).
    fn key(ip: IpAddr) -> Ipv6Addr {
        match ip.to_canonical() {
            IpAddr::V6(v6) => (u128::from(v6) & !((1u128 << 64) - 1)).into(),
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        }
    }

    /// A slot for `ip`, as [`PerClient::take`], waiting up to `patience` for one of its
    /// client's slots to come back when it holds `limit` already.
    pub(crate) async fn take_within(
        self: &Arc<Self>,
        ip: IpAddr,
        patience: Duration,
    ) -> Option<ClientSlot> {
        if let Some(slot) = self.take(ip) {
            return Some(slot);
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        let wait = async {
            loop {
                // Listening before trying: a slot given back between the try and the wait
                // still wakes this one.
                let freed = self.freed.notified();
                tokio::pin!(freed);
                freed.as_mut().enable();
                if let Some(slot) = self.take(ip) {
                    return slot;
                }
                freed.await;
            }
        };
        tokio::time::timeout(patience, wait).await.ok()
    }

    /// A slot for `ip`, unless its client holds `limit` already.
    pub(crate) fn take(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let key = PerClient::key(ip);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(key).or_insert(0);
        if *count >= self.limit() {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            owner: Arc::clone(self),
            key,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        {
            let mut counts = self
                .owner
                .counts
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = counts.get_mut(&self.key) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&self.key);
                }
            }
        }
        // A waiter counts itself before it tries under the lock, so one that failed before
        // this slot came back is seen here.
        if self.owner.waiting.load(Ordering::SeqCst) > 0 {
            self.owner.freed.notify_waiters();
        }
    }
}

/// A caller's place among the waiters of [`PerClient::take_within`], left on drop.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_limit_and_slots_come_back() {
        let per = PerClient::new(2);
        let a: IpAddr = "192.0.2.1".parse().expect("literal");
        let b: IpAddr = "192.0.2.2".parse().expect("literal");
        let first = per.take(a).expect("1 of 2");
        let _second = per.take(a).expect("2 of 2");
        assert!(per.take(a).is_none(), "3 of 2");
        assert!(per.take(b).is_some(), "another client is not affected");
        drop(first);
        assert!(per.take(a).is_some(), "a slot came back");
    }

    #[tokio::test]
    async fn a_waiting_caller_gets_the_next_slot_given_back() {
        let per = PerClient::new(1);
        let ip: IpAddr = "192.0.2.1".parse().expect("literal");
        let held = per.take(ip).expect("1 of 1");
        let waiter = tokio::spawn({
            let per = Arc::clone(&per);
            async move { per.take_within(ip, Duration::from_secs(10)).await.is_some() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "it waits while the slot is held");
        drop(held);
        assert!(waiter.await.expect("task"), "the slot given back is taken");
        assert_eq!(per.waiting.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_waiting_caller_gives_up_after_its_patience() {
        let per = PerClient::new(1);
        let ip: IpAddr = "192.0.2.1".parse().expect("literal");
        let _held = per.take(ip).expect("1 of 1");
        let other: IpAddr = "192.0.2.2".parse().expect("literal");
        assert!(per.take_within(other, Duration::ZERO).await.is_some());
        assert!(per
            .take_within(ip, Duration::from_millis(30))
            .await
            .is_none());
        assert_eq!(per.waiting.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64() {
        let per = PerClient::new(1);
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("literal");
        let same_64: IpAddr = "2001:db8:1:2::ffff".parse().expect("literal");
        let other_64: IpAddr = "2001:db8:1:3::1".parse().expect("literal");
        let _held = per.take(one).expect("first");
        assert!(per.take(same_64).is_none());
        assert!(per.take(other_64).is_some());
        let mapped: IpAddr = "::ffff:192.0.2.9".parse().expect("literal");
        let _v4 = per
            .take(mapped)
            .expect("an IPv4-mapped client counts as IPv4");
        assert!(per.take("192.0.2.9".parse().expect("literal")).is_none());
        assert!(
            per.take("::".parse().expect("literal")).is_some(),
            "the /64 of :: is not 0.0.0.0"
        );
        assert!(per.take("0.0.0.0".parse().expect("literal")).is_some());
    }

    #[test]
    fn a_slot_is_small() {
        // Every session task carries one.
        assert_eq!(std::mem::size_of::<ClientSlot>(), 24);
    }
}
