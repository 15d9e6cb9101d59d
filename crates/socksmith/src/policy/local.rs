//! The proxy host's own addresses: loopback and every address of its network interfaces, so
//! that "the host's own services" cannot be reached through the proxy by naming the host's
//! LAN or public address instead of 127.0.0.1.
//!
//! [`LocalAddresses`] keeps a snapshot of the interfaces' addresses (read with `if-addrs`,
//! which asks the kernel through `getifaddrs`) and takes a new one when the snapshot is older
//! than its refresh interval (one second by default) at the next lookup, or on demand with
//! [`LocalAddresses::refresh`]. A lookup costs a read lock and a hash lookup; only one caller
//! at a time takes a new snapshot, the others use the previous one meanwhile. Addresses added
//! or removed while the server runs (DHCP, VPNs, containers) are seen within the interval.
//!
//! This module decides nothing: [`crate::policy::Rules`] asks it whether a target is the host.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// How old a snapshot may be before a lookup takes a new one.
const DEFAULT_REFRESH: Duration = Duration::from_secs(1);

/// The set of addresses that belong to the proxy host (see the module documentation).
/// Cheap to clone; clones share the snapshot.
///
/// ```
/// use socksmith::policy::LocalAddresses;
///
/// let host = LocalAddresses::fixed(["192.0.2.10".parse().unwrap()]);
/// assert!(host.contains("192.0.2.10".parse().unwrap()));
/// assert!(host.contains("::ffff:192.0.2.10".parse().unwrap()));
/// assert!(!host.contains("192.0.2.11".parse().unwrap()));
/// ```
#[derive(Clone)]
pub struct LocalAddresses {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None`: a fixed set that is never refreshed.
    refresh: Option<Duration>,
    snapshot: RwLock<Snapshot>,
    refreshing: AtomicBool,
    /// When the last warning that the interfaces could not be read was logged.
    warned: std::sync::Mutex<Option<Instant>>,
}

/// At most one warning this often while the interfaces cannot be read.
const WARN_EVERY: Duration = Duration::from_secs(60);

struct Snapshot {
    /// `None` until the first snapshot is taken.
    taken: Option<Instant>,
    addrs: Arc<HashSet<IpAddr>>,
}

impl LocalAddresses {
    /// The host's interfaces, refreshed at most every second. All `system()` values share one
    /// snapshot.
    pub fn system() -> LocalAddresses {
        static SYSTEM: OnceLock<LocalAddresses> = OnceLock::new();
        SYSTEM
            .get_or_init(|| LocalAddresses::system_every(DEFAULT_REFRESH))
            .clone()
    }

    /// The host's interfaces, with a snapshot of its own refreshed when older than `refresh`.
    pub fn system_every(refresh: Duration) -> LocalAddresses {
        LocalAddresses::with(Some(refresh), HashSet::new())
    }

    /// A fixed set of addresses, never refreshed (for tests, or a host whose addresses are
    /// known).
    pub fn fixed(addrs: impl IntoIterator<Item = IpAddr>) -> LocalAddresses {
        let addrs = addrs.into_iter().map(|ip| ip.to_canonical()).collect();
        LocalAddresses::with(None, addrs)
    }

    fn with(refresh: Option<Duration>, addrs: HashSet<IpAddr>) -> LocalAddresses {
        LocalAddresses {
            inner: Arc::new(Inner {
                refresh,
                snapshot: RwLock::new(Snapshot {
                    taken: refresh.is_none().then(Instant::now),
                    addrs: Arc::new(addrs),
                }),
                refreshing: AtomicBool::new(false),
                warned: std::sync::Mutex::new(None),
            }),
        }
    }

    /// Whether `ip` (IPv4-mapped IPv6 counts as IPv4) is one of the host's addresses.
    /// Loopback addresses count whether or not an interface lists them.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_loopback() || self.current().contains(&ip)
    }

    /// The addresses of the current snapshot (taking one if it is stale).
    pub fn addresses(&self) -> Vec<IpAddr> {
        let mut addrs: Vec<IpAddr> = self.current().iter().copied().collect();
        addrs.sort();
        addrs
    }

    /// Takes a new snapshot now (for a system set; a fixed set stays as it is). Returns
    /// whether the interfaces could be read; when not, the previous snapshot stays.
    pub fn refresh(&self) -> bool {
        if self.inner.refresh.is_none() {
            return true;
        }
        match read_interfaces() {
            Ok(addrs) => {
                let mut snapshot = self.write();
                snapshot.addrs = Arc::new(addrs);
                snapshot.taken = Some(Instant::now());
                true
            }
            Err(e) => {
                self.warn_unreadable(&e);
                false
            }
        }
    }

    /// Says, at most every [`WARN_EVERY`], that the host's own addresses are unknown: targets
    /// on them (other than loopback) are not refused as the host's until they can be read.
    fn warn_unreadable(&self, error: &std::io::Error) {
        let mut warned = self
            .inner
            .warned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if warned.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            return;
        }
        *warned = Some(Instant::now());
        tracing::error!(
            %error,
            "cannot read this host's network interfaces, so targets on its own non-loopback \
             addresses are not refused as the host's; under systemd, allow AF_NETLINK in \
             RestrictAddressFamilies (said at most once a minute)"
        );
    }

    fn current(&self) -> Arc<HashSet<IpAddr>> {
        let stale = {
            let snapshot = self.read();
            match (self.inner.refresh, snapshot.taken) {
                (None, _) => return Arc::clone(&snapshot.addrs),
                (Some(_), None) => true,
                (Some(refresh), Some(taken)) => taken.elapsed() >= refresh,
            }
        };
        // One caller refreshes; the others use the previous snapshot meanwhile, except on the
        // very first lookup, where there is none and they wait for it.
        if stale {
            if !self.inner.refreshing.swap(true, Ordering::AcqRel) {
                if !self.refresh() {
                    // Unreadable interfaces: retry at the next interval, keep what we had.
                    self.write().taken = Some(Instant::now());
                }
                self.inner.refreshing.store(false, Ordering::Release);
            } else if self.read().taken.is_none() {
                while self.inner.refreshing.load(Ordering::Acquire) {
                    std::thread::yield_now();
                }
            }
        }
        Arc::clone(&self.read().addrs)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Snapshot> {
        // The snapshot is replaced whole, so a panic elsewhere cannot leave it half-written.
        self.inner
            .snapshot
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Snapshot> {
        self.inner
            .snapshot
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Every address of every interface, or why the kernel would not tell.
fn read_interfaces() -> std::io::Result<HashSet<IpAddr>> {
    let interfaces = if_addrs::get_if_addrs()?;
    Ok(interfaces
        .into_iter()
        .map(|interface| interface.ip().to_canonical())
        .collect())
}

impl Default for LocalAddresses {
    /// [`LocalAddresses::system`].
    fn default() -> Self {
        LocalAddresses::system()
    }
}

/// Two system sets describe the same host; fixed sets are equal when their addresses are.
impl PartialEq for LocalAddresses {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
            || match (self.inner.refresh, other.inner.refresh) {
                (Some(_), Some(_)) => true,
                (None, None) => self.current() == other.current(),
                _ => false,
            }
    }
}

impl Eq for LocalAddresses {}

impl fmt::Debug for LocalAddresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner.refresh {
            Some(refresh) => f
                .debug_struct("LocalAddresses::System")
                .field("refresh", &refresh)
                .finish_non_exhaustive(),
            None => f
                .debug_tuple("LocalAddresses::Fixed")
                .field(&self.addresses())
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("literal")
    }

    #[test]
    fn loopback_always_counts_and_mapped_addresses_are_canonical() {
        let host = LocalAddresses::fixed([ip("192.0.2.10"), ip("::ffff:198.51.100.3")]);
        for addr in [
            "127.0.0.1",
            "127.5.5.5",
            "::1",
            "192.0.2.10",
            "::ffff:192.0.2.10",
            "198.51.100.3",
        ] {
            assert!(host.contains(ip(addr)), "{addr}");
        }
        assert!(!host.contains(ip("192.0.2.11")));
        assert_eq!(host.addresses(), [ip("192.0.2.10"), ip("198.51.100.3")]);
        assert!(host.refresh(), "a fixed set has nothing to refresh");
        assert_eq!(host.addresses().len(), 2);
    }

    #[test]
    fn the_system_set_holds_the_loopback_interface_and_is_shared() {
        let system = LocalAddresses::system();
        // Every Linux host, namespaces included, has `lo` with 127.0.0.1 (down or up, the
        // address is listed once configured); the set must at least answer for it.
        assert!(system.contains(ip("127.0.0.1")));
        assert_eq!(system, LocalAddresses::default());
        assert!(Arc::ptr_eq(&system.inner, &LocalAddresses::system().inner));
        assert!(system.refresh());
        // A documentation address is not this host's.
        assert!(!system.contains(ip("203.0.113.254")));
    }

    #[test]
    fn a_stale_snapshot_is_replaced_at_the_next_lookup() {
        let host = LocalAddresses::system_every(Duration::from_millis(1));
        let first = host.current();
        std::thread::sleep(Duration::from_millis(5));
        let second = host.current();
        assert!(
            !Arc::ptr_eq(&first, &second),
            "a new snapshot after the interval"
        );
        let cached = LocalAddresses::system_every(Duration::from_secs(3600));
        let first = cached.current();
        assert!(Arc::ptr_eq(&first, &cached.current()), "reused within it");
    }

    #[test]
    fn lookups_from_many_threads_agree() {
        let host = LocalAddresses::system_every(Duration::from_millis(1));
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..200 {
                        assert!(host.contains(ip("127.0.0.1")));
                        assert!(!host.contains(ip("203.0.113.254")));
                    }
                });
            }
        });
    }
}
