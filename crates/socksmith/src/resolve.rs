//! Host name resolution: the [`Resolve`] trait the rest of the crate looks names up through,
//! the [`SystemResolver`] (the C library's resolver, on tokio's blocking pool, with a timeout
//! and a cap on lookups in flight),
//! and the [`StaticResolver`], a fixed table for tests and pinned names.
//!
//! This module knows nothing of SOCKS and makes no policy decision (which addresses a client may
//! reach is decided elsewhere). IP literals never reach a resolver: [`resolve`] answers them
//! itself, so a client that sends `"10.0.0.1"` as a name costs no lookup.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

/// The future a [`Resolve`] method returns.
pub type Lookup<'a, T> = Pin<Box<dyn Future<Output = Result<T, ResolveError>> + Send + 'a>>;

/// Looks host names up, and addresses back up (Tor's `RESOLVE_PTR`).
///
/// Object safe, so a server can hold an `Arc<dyn Resolve>`. Callers go through [`resolve`] for
/// forward lookups, which answers IP literals without calling the resolver.
pub trait Resolve: Send + Sync + fmt::Debug {
    /// Every address `name` resolves to, most preferred first, never empty on success.
    fn lookup_name<'a>(&'a self, name: &'a str) -> Lookup<'a, Vec<IpAddr>>;

    /// The host name `ip` maps back to.
    fn lookup_addr(&self, ip: IpAddr) -> Lookup<'_, String>;
}

impl<R: Resolve + ?Sized> Resolve for Arc<R> {
    fn lookup_name<'a>(&'a self, name: &'a str) -> Lookup<'a, Vec<IpAddr>> {
        (**self).lookup_name(name)
    }

    fn lookup_addr(&self, ip: IpAddr) -> Lookup<'_, String> {
        (**self).lookup_addr(ip)
    }
}

/// Why a lookup gave no answer. Each message names the query, escaped (it may come from a
/// client and hold control characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The name has no address, or the address no name.
    #[error("{}: not found", .query.escape_debug())]
    NotFound {
        /// The name or address looked up.
        query: String,
    },
    /// No answer within the resolver's timeout.
    #[error("{}: no answer within {after:?}", .query.escape_debug())]
    Timeout {
        /// The name or address looked up.
        query: String,
        /// The timeout that ran out.
        after: Duration,
    },
    /// Not something a resolver can be asked: empty, longer than 253 bytes, or holding a NUL
    /// byte (which the C resolver would silently cut the name at).
    #[error("{}: not a valid host name", .query.escape_debug())]
    InvalidName {
        /// The name as given.
        query: String,
    },
    /// Too many lookups were in flight: none finished in time to make room for this one
    /// (see [`SystemResolver::max_in_flight`]).
    #[error(
        "{}: not looked up, {limit} lookups in flight and no room within {after:?}",
        .query.escape_debug()
    )]
    Busy {
        /// The name or address that was to be looked up.
        query: String,
        /// The limit on lookups in flight.
        limit: usize,
        /// How long the lookup waited for room.
        after: Duration,
    },
    /// The resolver failed (no server answered, a server failure, a system error).
    #[error("{}: lookup failed: {message}", .query.escape_debug())]
    Other {
        /// The name or address looked up.
        query: String,
        /// The resolver's own description of the failure.
        message: String,
    },
}

impl ResolveError {
    /// The name or address whose lookup failed.
    pub fn query(&self) -> &str {
        match self {
            ResolveError::NotFound { query }
            | ResolveError::Timeout { query, .. }
            | ResolveError::InvalidName { query }
            | ResolveError::Busy { query, .. }
            | ResolveError::Other { query, .. } => query,
        }
    }
}

/// `host` parsed as an IP literal: `"192.0.2.1"`, `"::1"` or `"[::1]"`.
pub fn parse_ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// Resolves `host` to its addresses: an IP literal directly, anything else through `resolver`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use socksmith::resolve::{resolve, StaticResolver};
/// use std::net::{IpAddr, Ipv4Addr};
///
/// let resolver = StaticResolver::new().with_host("db.internal", [Ipv4Addr::new(10, 0, 0, 7).into()]);
/// assert_eq!(resolve(&resolver, "db.internal").await.unwrap(), [IpAddr::from([10, 0, 0, 7])]);
/// // Literals never reach the resolver.
/// assert_eq!(resolve(&resolver, "[::1]").await.unwrap(), [IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])]);
/// # }
/// ```
pub async fn resolve<R: Resolve + ?Sized>(
    resolver: &R,
    host: &str,
) -> Result<Vec<IpAddr>, ResolveError> {
    if let Some(ip) = parse_ip_literal(host) {
        return Ok(vec![ip]);
    }
    check_name(host)?;
    let ips = resolver.lookup_name(host).await?;
    if ips.is_empty() {
        return Err(ResolveError::NotFound {
            query: host.to_owned(),
        });
    }
    Ok(ips)
}

/// Refuses names no resolver should see. 253 bytes is the longest name DNS can carry (255 on
/// the wire, with the length bytes), one more for a trailing dot.
fn check_name(name: &str) -> Result<(), ResolveError> {
    let len = name.strip_suffix('.').unwrap_or(name).len();
    if len == 0 || len > 253 || name.contains('\0') {
        return Err(ResolveError::InvalidName {
            query: name.to_owned(),
        });
    }
    Ok(())
}

/// The system's resolver (`/etc/hosts`, DNS, whatever the C library is set up for), run on
/// tokio's blocking pool and bounded by a timeout.
///
/// A lookup that times out keeps its blocking thread until the C library gives up; the caller
/// gets [`ResolveError::Timeout`] at once all the same. So that stuck lookups cannot pile up
/// threads without bound (a client asking for names whose servers never answer, say), at most
/// [`SystemResolver::max_in_flight`] run at once, counting those that timed out but still hold
/// their thread; a lookup waits for room within its timeout, then fails with
/// [`ResolveError::Busy`]. Clones share the limit.
#[derive(Debug, Clone)]
pub struct SystemResolver {
    timeout: Duration,
    limit: usize,
    in_flight: Arc<Semaphore>,
}

impl SystemResolver {
    /// The timeout [`SystemResolver::default`] uses.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// The most lookups in flight at once, by default.
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

    /// A system resolver whose lookups give up after `timeout`, at most
    /// [`Self::DEFAULT_MAX_IN_FLIGHT`] at once.
    pub fn new(timeout: Duration) -> Self {
        SystemResolver::with_max_in_flight(timeout, Self::DEFAULT_MAX_IN_FLIGHT)
    }

    /// A system resolver whose lookups give up after `timeout`, at most `limit` at once (at
    /// least 1).
    pub fn with_max_in_flight(timeout: Duration, limit: usize) -> Self {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        SystemResolver {
            timeout,
            limit,
            in_flight: Arc::new(Semaphore::new(limit)),
        }
    }

    /// How long a lookup may take, waiting for room included.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The most lookups (blocking threads) in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.limit
    }

    /// Runs a blocking lookup on the blocking pool once there is room, all bounded by the
    /// timeout. The room is given back when the lookup's thread is done, not when the caller
    /// stops waiting.
    #[cfg(target_os = "linux")]
    async fn blocking<T, F>(&self, query: String, lookup: F) -> Result<T, ResolveError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, String> + Send + 'static,
        Result<T, String>: Send,
    {
        let started = tokio::time::Instant::now();
        let room = Arc::clone(&self.in_flight).acquire_owned();
        let permit = match tokio::time::timeout(self.timeout, room).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(closed)) => {
                return Err(ResolveError::Other {
                    query,
                    message: closed.to_string(),
                })
            }
            Err(_) => {
                return Err(ResolveError::Busy {
                    query,
                    limit: self.limit,
                    after: self.timeout,
                })
            }
        };
        let job = tokio::task::spawn_blocking(move || {
            let _room = permit;
            lookup()
        });
        let left = self.timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, job).await {
            Err(_) => Err(ResolveError::Timeout {
                query,
                after: self.timeout,
            }),
            Ok(Err(join)) => Err(ResolveError::Other {
                query,
                message: join.to_string(),
            }),
            Ok(Ok(Err(message))) => Err(ResolveError::Other { query, message }),
            Ok(Ok(Ok(found))) => Ok(found),
        }
    }
}

impl Default for SystemResolver {
    fn default() -> Self {
        SystemResolver::new(Self::DEFAULT_TIMEOUT)
    }
}

#[cfg(target_os = "linux")]
impl Resolve for SystemResolver {
    fn lookup_name<'a>(&'a self, name: &'a str) -> Lookup<'a, Vec<IpAddr>> {
        use crate::sys::netdb::{self, GaiKind};
        Box::pin(async move {
            let Some(c_name) = netdb::c_name(name) else {
                return Err(ResolveError::InvalidName {
                    query: name.to_owned(),
                });
            };
            let answer = self
                .blocking(name.to_owned(), move || Ok(netdb::lookup_name(&c_name)))
                .await?;
            match answer {
                Ok(ips) if !ips.is_empty() => Ok(ips),
                Err(e) if e.kind == GaiKind::Other => Err(ResolveError::Other {
                    query: name.to_owned(),
                    message: e.message,
                }),
                _ => Err(ResolveError::NotFound {
                    query: name.to_owned(),
                }),
            }
        })
    }

    fn lookup_addr(&self, ip: IpAddr) -> Lookup<'_, String> {
        use crate::sys::netdb::{self, GaiKind};
        Box::pin(async move {
            let query = ip.to_string();
            match self
                .blocking(query.clone(), move || Ok(netdb::lookup_addr(ip)))
                .await?
            {
                Ok(name) => Ok(name),
                Err(e) if e.kind == GaiKind::NotFound => Err(ResolveError::NotFound { query }),
                Err(e) => Err(ResolveError::Other {
                    query,
                    message: e.message,
                }),
            }
        })
    }
}

/// Elsewhere the standard library's resolver: it does not tell "not found" from other
/// failures, and there is no reverse lookup.
#[cfg(not(target_os = "linux"))]
impl Resolve for SystemResolver {
    fn lookup_name<'a>(&'a self, name: &'a str) -> Lookup<'a, Vec<IpAddr>> {
        Box::pin(async move {
            let lookup = tokio::net::lookup_host((name, 0));
            let found = match tokio::time::timeout(self.timeout, lookup).await {
                Err(_) => {
                    return Err(ResolveError::Timeout {
                        query: name.to_owned(),
                        after: self.timeout,
                    })
                }
                Ok(Err(e)) => {
                    return Err(ResolveError::Other {
                        query: name.to_owned(),
                        message: e.to_string(),
                    })
                }
                Ok(Ok(addrs)) => addrs,
            };
            let mut ips = Vec::new();
            for addr in found {
                if !ips.contains(&addr.ip()) {
                    ips.push(addr.ip());
                }
            }
            Ok(ips)
        })
    }

    fn lookup_addr(&self, ip: IpAddr) -> Lookup<'_, String> {
        Box::pin(async move {
            Err(ResolveError::Other {
                query: ip.to_string(),
                message: "reverse lookups are not supported on this system".to_owned(),
            })
        })
    }
}

/// A fixed table of names and addresses: for tests, and for names pinned in configuration.
/// Names match without regard to ASCII case or a trailing dot, like DNS names.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    hosts: HashMap<String, Vec<IpAddr>>,
    names: HashMap<IpAddr, String>,
}

impl StaticResolver {
    /// An empty table: every lookup is [`ResolveError::NotFound`].
    pub fn new() -> Self {
        StaticResolver::default()
    }

    /// Adds (or replaces) the addresses `name` resolves to.
    pub fn with_host(mut self, name: &str, ips: impl IntoIterator<Item = IpAddr>) -> Self {
        self.hosts
            .insert(normalize(name), ips.into_iter().collect());
        self
    }

    /// Adds (or replaces) the name `ip` maps back to.
    pub fn with_name(mut self, ip: IpAddr, name: &str) -> Self {
        self.names.insert(ip, name.to_owned());
        self
    }
}

fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

impl Resolve for StaticResolver {
    fn lookup_name<'a>(&'a self, name: &'a str) -> Lookup<'a, Vec<IpAddr>> {
        let found = match self.hosts.get(&normalize(name)) {
            Some(ips) if !ips.is_empty() => Ok(ips.clone()),
            _ => Err(ResolveError::NotFound {
                query: name.to_owned(),
            }),
        };
        Box::pin(std::future::ready(found))
    }

    fn lookup_addr(&self, ip: IpAddr) -> Lookup<'_, String> {
        let found = self
            .names
            .get(&ip)
            .cloned()
            .ok_or_else(|| ResolveError::NotFound {
                query: ip.to_string(),
            });
        Box::pin(std::future::ready(found))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts the lookups that reach it, and finds nothing.
    #[derive(Debug, Default)]
    struct Counting(AtomicUsize);

    impl Resolve for Counting {
        fn lookup_name<'a>(&'a self, name: &'a str) -> Lookup<'a, Vec<IpAddr>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(std::future::ready(Err(ResolveError::NotFound {
                query: name.to_owned(),
            })))
        }

        fn lookup_addr(&self, ip: IpAddr) -> Lookup<'_, String> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(std::future::ready(Err(ResolveError::NotFound {
                query: ip.to_string(),
            })))
        }
    }

    /// A bound for tests that touch the system resolver: well past any local answer.
    const TEST_TIMEOUT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn ip_literals_never_reach_the_resolver() {
        let resolver = Counting::default();
        for (host, ip) in [
            ("10.0.0.1", IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
            ("::1", IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ("[::1]", IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ] {
            assert_eq!(resolve(&resolver, host).await, Ok(vec![ip]));
        }
        assert_eq!(resolver.0.load(Ordering::SeqCst), 0);
        // Anything else does.
        assert!(resolve(&resolver, "example.test").await.is_err());
        assert_eq!(resolver.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn invalid_names_are_refused_before_any_lookup() {
        let resolver = Counting::default();
        let long = "a".repeat(254);
        for name in ["", ".", "good.example\0evil", long.as_str()] {
            let err = resolve(&resolver, name).await.expect_err(name);
            assert!(matches!(err, ResolveError::InvalidName { .. }), "{err:?}");
        }
        assert_eq!(resolver.0.load(Ordering::SeqCst), 0);
        // The message shows the NUL instead of cutting the name at it.
        let err = resolve(&resolver, "good.example\0evil")
            .await
            .expect_err("NUL");
        assert_eq!(
            err.to_string(),
            "good.example\\0evil: not a valid host name"
        );
    }

    #[tokio::test]
    async fn static_resolver_matches_names_like_dns() {
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        let resolver = StaticResolver::new()
            .with_host("Db.Example", [ip])
            .with_name(ip, "db.example");
        assert_eq!(resolve(&resolver, "db.example.").await, Ok(vec![ip]));
        assert_eq!(resolver.lookup_addr(ip).await, Ok("db.example".to_owned()));
        let err = resolve(&resolver, "other.example")
            .await
            .expect_err("absent");
        assert_eq!(
            err,
            ResolveError::NotFound {
                query: "other.example".to_owned()
            }
        );
        assert_eq!(err.to_string(), "other.example: not found");
    }

    /// The system resolver's tests run in a private resolver world (their own `/etc/hosts`
    /// and a DNS server that knows no names, in private namespaces), so that they depend
    /// neither on the machine's network nor on its files.
    #[cfg(target_os = "linux")]
    use crate::sys::netdb::private_resolver::{inside, serve_nxdomain};

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn system_resolver_finds_localhost_on_loopback() {
        if !inside(
            module_path!(),
            "system_resolver_finds_localhost_on_loopback",
        ) {
            return;
        }
        let resolver = SystemResolver::new(TEST_TIMEOUT);
        let mut ips = resolve(&resolver, "localhost").await.expect("localhost");
        ips.sort();
        assert_eq!(
            ips,
            [
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            ]
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn system_resolver_reports_an_unknown_name_as_not_found() {
        if !inside(
            module_path!(),
            "system_resolver_reports_an_unknown_name_as_not_found",
        ) {
            return;
        }
        // The private DNS server answers NXDOMAIN: that is NotFound, not a resolver failure.
        serve_nxdomain();
        let resolver = SystemResolver::new(TEST_TIMEOUT);
        let err = resolve(&resolver, "nonexistent.invalid")
            .await
            .expect_err("must not resolve");
        assert_eq!(
            err,
            ResolveError::NotFound {
                query: "nonexistent.invalid".to_owned()
            }
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn system_resolver_maps_loopback_back_to_a_name() {
        if !inside(
            module_path!(),
            "system_resolver_maps_loopback_back_to_a_name",
        ) {
            return;
        }
        serve_nxdomain();
        let resolver = SystemResolver::new(TEST_TIMEOUT);
        let name = resolver
            .lookup_addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .await
            .expect("127.0.0.1 has a name in the private /etc/hosts");
        assert_eq!(name, "localhost");
        let err = resolver
            .lookup_addr(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99)))
            .await
            .expect_err("no name");
        assert!(matches!(err, ResolveError::NotFound { .. }), "{err:?}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn stuck_lookups_hold_their_room_until_their_thread_ends() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let resolver = SystemResolver::with_max_in_flight(Duration::from_millis(100), 1);
            assert_eq!(resolver.max_in_flight(), 1);
            // A lookup stuck in the C library: it times out, but keeps its thread.
            let (release, wait) = std::sync::mpsc::channel::<()>();
            let err = resolver
                .blocking("stuck.example".to_owned(), move || {
                    wait.recv().map_err(|e| e.to_string())
                })
                .await
                .expect_err("stuck");
            assert!(matches!(err, ResolveError::Timeout { .. }), "{err:?}");
            // The room is still taken: the next lookup never starts and says why.
            let ran = Arc::new(AtomicUsize::new(0));
            let counter = Arc::clone(&ran);
            let err = resolver
                .clone()
                .blocking("next.example".to_owned(), move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .await
                .expect_err("no room");
            assert_eq!(
                err.to_string(),
                "next.example: not looked up, 1 lookups in flight and no room within 100ms"
            );
            assert_eq!(ran.load(Ordering::SeqCst), 0);
            // Once the stuck thread ends, lookups run again.
            release.send(()).expect("the stuck lookup waits");
            let counter = Arc::clone(&ran);
            resolver
                .blocking("next.example".to_owned(), move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .await
                .expect("room again");
            assert_eq!(ran.load(Ordering::SeqCst), 1);
        });
    }

    #[test]
    fn system_resolver_gives_up_at_its_timeout() {
        // One blocking thread, kept busy: the lookup cannot even start, and must time out.
        let rt = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (release, wait) = std::sync::mpsc::channel::<()>();
            let busy = tokio::task::spawn_blocking(move || wait.recv());
            let resolver = SystemResolver::new(Duration::from_millis(50));
            let err = resolver
                .lookup_name("localhost")
                .await
                .expect_err("no thread to answer on");
            assert!(matches!(err, ResolveError::Timeout { .. }), "{err:?}");
            assert_eq!(err.to_string(), "localhost: no answer within 50ms");
            release.send(()).expect("blocking task waits");
            busy.await.expect("join").expect("released");
        });
    }
}
