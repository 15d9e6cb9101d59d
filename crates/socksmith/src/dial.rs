//! Outbound TCP connections to a host with several addresses, raced with Happy Eyeballs
//! (RFC 8305): IPv6 and IPv4 interleaved, a new attempt every 250 ms or as soon as one fails,
//! the first to connect wins and the others are dropped (which closes their sockets).
//!
//! This module owns connecting only: it neither resolves names (see [`crate::resolve`]) nor
//! knows about SOCKS. Failures are classified by [`DialErrorKind`] so that a server can pick the
//! closest reply code (refused, network unreachable, host unreachable, timed out).

use std::future::{poll_fn, Future};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::task::Poll;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// How [`dial`] races its attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DialOptions {
    /// Time between the start of one attempt and the next ("Connection Attempt Delay",
    /// RFC 8305 section 5: 250 ms recommended, 100 ms at least).
    pub attempt_delay: Duration,
    /// Time allowed for the whole dial, all attempts together.
    pub timeout: Duration,
}

impl Default for DialOptions {
    fn default() -> Self {
        DialOptions {
            attempt_delay: Duration::from_millis(250),
            timeout: Duration::from_secs(10),
        }
    }
}

impl DialOptions {
    /// The default attempt delay with an overall timeout.
    pub fn with_timeout(timeout: Duration) -> Self {
        DialOptions {
            timeout,
            ..DialOptions::default()
        }
    }
}

/// What a failed connection attempt means for whoever asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DialErrorKind {
    /// The host answered and refused (nothing listens on that port).
    Refused,
    /// No route to that network (e.g. IPv6 on a host without IPv6).
    NetworkUnreachable,
    /// The network is there but the host did not answer (no route to host).
    HostUnreachable,
    /// No answer in time.
    TimedOut,
    /// This host's own network policy forbids the connection: a `prohibit` route (EACCES)
    /// or a firewall rule that rejects it locally (EPERM).
    Prohibited,
    /// Anything else (no free local port, ...).
    Other,
}

impl DialErrorKind {
    /// Classifies the error of one connection attempt.
    pub fn of(err: &io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => DialErrorKind::Refused,
            io::ErrorKind::NetworkUnreachable | io::ErrorKind::NetworkDown => {
                DialErrorKind::NetworkUnreachable
            }
            io::ErrorKind::HostUnreachable => DialErrorKind::HostUnreachable,
            io::ErrorKind::TimedOut => DialErrorKind::TimedOut,
            io::ErrorKind::PermissionDenied => DialErrorKind::Prohibited,
            _ => DialErrorKind::Other,
        }
    }

    /// How much the kind says about the target, to report the most telling of several
    /// failures. "Network unreachable" says least: it is what an IPv4-only machine answers for
    /// every IPv6 address, whatever the target.
    fn weight(self) -> u8 {
        match self {
            DialErrorKind::Refused => 4,
            DialErrorKind::Prohibited | DialErrorKind::HostUnreachable => 3,
            DialErrorKind::TimedOut => 2,
            DialErrorKind::Other => 1,
            DialErrorKind::NetworkUnreachable => 0,
        }
    }
}

/// Why no connection was made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The address list was empty.
    #[error("no address to connect to")]
    NoAddresses,
    /// Every attempt failed; this is the most telling of their errors.
    #[error("connecting to {addr} failed: {source} ({tried} of {total} addresses tried)")]
    Failed {
        /// The classification of `source`.
        kind: DialErrorKind,
        /// The address whose error is reported.
        addr: SocketAddr,
        /// Its error.
        source: io::Error,
        /// How many addresses were tried.
        tried: usize,
        /// How many addresses there were.
        total: usize,
    },
    /// The overall timeout ran out with attempts still pending.
    #[error("no connection within {after:?} ({tried} of {total} addresses tried)")]
    TimedOut {
        /// The overall timeout.
        after: Duration,
        /// How many addresses were tried.
        tried: usize,
        /// How many addresses there were.
        total: usize,
    },
}

impl DialError {
    /// The classification a server maps to its reply. An empty address list counts as
    /// [`DialErrorKind::HostUnreachable`]: there is no way to that host.
    pub fn kind(&self) -> DialErrorKind {
        match self {
            DialError::NoAddresses => DialErrorKind::HostUnreachable,
            DialError::Failed { kind, .. } => *kind,
            DialError::TimedOut { .. } => DialErrorKind::TimedOut,
        }
    }
}

/// Opens one connection to one address: the seam that lets tests replace the network.
pub trait Connect: Sync {
    /// The connected stream.
    type Stream: Send;

    /// Connects to `addr`. Dropping the future abandons the attempt.
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// Plain TCP connections with `TCP_NODELAY` set: a relay forwards what it gets at once, and
/// delaying small writes only adds latency to interactive protocols tunnelled through it.
/// With a source address for the target's family, the connection leaves from it (a host with
/// several addresses choosing the one targets see).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector {
    /// The address IPv4 connections leave from (`None`: the kernel's choice).
    pub source_v4: Option<Ipv4Addr>,
    /// The address IPv6 connections leave from (`None`: the kernel's choice).
    pub source_v6: Option<Ipv6Addr>,
}

impl Connect for TcpConnector {
    type Stream = TcpStream;

    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let source = match addr {
            SocketAddr::V4(_) => self.source_v4.map(IpAddr::V4),
            SocketAddr::V6(_) => self.source_v6.map(IpAddr::V6),
        };
        let stream = match source {
            None => TcpStream::connect(addr).await?,
            Some(ip) => {
                let socket = match ip {
                    IpAddr::V4(_) => TcpSocket::new_v4()?,
                    IpAddr::V6(_) => TcpSocket::new_v6()?,
                };
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(addr).await?
            }
        };
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Connects to the first of `addrs` that answers, racing them with Happy Eyeballs, and returns
/// the stream with `TCP_NODELAY` set. `addrs` is in the resolver's order of preference; IPv6
/// goes first.
pub async fn dial(addrs: &[SocketAddr], opts: &DialOptions) -> Result<TcpStream, DialError> {
    dial_with(&TcpConnector::default(), addrs, opts)
        .await
        .map(|(stream, _)| stream)
}

/// [`dial`] through any [`Connect`]or; also returns the address that answered.
pub async fn dial_with<C: Connect>(
    connector: &C,
    addrs: &[SocketAddr],
    opts: &DialOptions,
) -> Result<(C::Stream, SocketAddr), DialError> {
    let order = interleave(addrs);
    let total = order.len();
    if total == 0 {
        return Err(DialError::NoAddresses);
    }
    let deadline = tokio::time::sleep(opts.timeout);
    let next_attempt = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(deadline, next_attempt);
    let mut racing = Vec::with_capacity(total.min(4));
    let mut failures: Vec<(SocketAddr, io::Error)> = Vec::new();
    let mut started = 0;
    let mut start_now = true;

    poll_fn(|cx| loop {
        // Start the next attempt when the delay has passed or an attempt just failed.
        if started < total && (start_now || next_attempt.as_mut().poll(cx).is_ready()) {
            let addr = order[started];
            racing.push((addr, Box::pin(connector.connect(addr))));
            started += 1;
            start_now = false;
            next_attempt
                .as_mut()
                .reset(Instant::now() + opts.attempt_delay);
        }

        let mut i = 0;
        while i < racing.len() {
            let (addr, attempt) = &mut racing[i];
            match attempt.as_mut().poll(cx) {
                Poll::Ready(Ok(stream)) => return Poll::Ready(Ok((stream, *addr))),
                Poll::Ready(Err(err)) => {
                    failures.push((*addr, err));
                    // The attempt is over; dropping it frees its socket.
                    drop(racing.remove(i));
                    start_now = true;
                }
                Poll::Pending => i += 1,
            }
        }
        if racing.is_empty() && started == total {
            return Poll::Ready(Err(most_telling(&mut failures, started, total)));
        }
        if start_now && started < total {
            continue;
        }

        if deadline.as_mut().poll(cx).is_ready() {
            let best = failures
                .iter()
                .map(|(_, e)| DialErrorKind::of(e))
                .max_by_key(|k| k.weight());
            return Poll::Ready(Err(match best {
                Some(kind) if kind.weight() > DialErrorKind::TimedOut.weight() => {
                    most_telling(&mut failures, started, total)
                }
                _ => DialError::TimedOut {
                    after: opts.timeout,
                    tried: started,
                    total,
                },
            }));
        }
        // Registers the wake-up for the next attempt (the timer may just have been re-armed).
        if started < total && next_attempt.as_mut().poll(cx).is_ready() {
            continue;
        }
        return Poll::Pending;
    })
    .await
}

/// The failure that says most about the target; the earliest among equals.
fn most_telling(
    failures: &mut Vec<(SocketAddr, io::Error)>,
    tried: usize,
    total: usize,
) -> DialError {
    let mut best: Option<usize> = None;
    for (i, (_, err)) in failures.iter().enumerate() {
        let weight = DialErrorKind::of(err).weight();
        if best.is_none_or(|b| weight > DialErrorKind::of(&failures[b].1).weight()) {
            best = Some(i);
        }
    }
    match best {
        Some(i) => {
            let (addr, source) = failures.swap_remove(i);
            DialError::Failed {
                kind: DialErrorKind::of(&source),
                addr,
                source,
                tried,
                total,
            }
        }
        None => DialError::NoAddresses,
    }
}

/// The order attempts start in (RFC 8305 section 4): families alternate, IPv6 first, each
/// family keeping the resolver's order.
fn interleave(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let (v6, v4): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs.iter().partition(|a| a.is_ipv6());
    let mut out = Vec::with_capacity(addrs.len());
    let (mut v6, mut v4) = (v6.into_iter(), v4.into_iter());
    loop {
        match (v6.next(), v4.next()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter()
            .map(|a| a.parse().expect("socket address"))
            .collect()
    }

    #[test]
    fn families_alternate_starting_with_ipv6() {
        let given = addrs(&[
            "192.0.2.1:80",
            "192.0.2.2:80",
            "192.0.2.3:80",
            "[2001:db8::1]:80",
            "[2001:db8::2]:80",
        ]);
        let want = addrs(&[
            "[2001:db8::1]:80",
            "192.0.2.1:80",
            "[2001:db8::2]:80",
            "192.0.2.2:80",
            "192.0.2.3:80",
        ]);
        assert_eq!(interleave(&given), want);
        assert_eq!(interleave(&given[..2]), given[..2]);
        assert!(interleave(&[]).is_empty());
    }

    #[test]
    fn errors_are_classified_for_reply_codes() {
        let kind = |k| DialErrorKind::of(&io::Error::from(k));
        assert_eq!(
            kind(io::ErrorKind::ConnectionRefused),
            DialErrorKind::Refused
        );
        assert_eq!(
            kind(io::ErrorKind::NetworkUnreachable),
            DialErrorKind::NetworkUnreachable
        );
        assert_eq!(
            kind(io::ErrorKind::HostUnreachable),
            DialErrorKind::HostUnreachable
        );
        assert_eq!(kind(io::ErrorKind::TimedOut), DialErrorKind::TimedOut);
        assert_eq!(
            kind(io::ErrorKind::PermissionDenied),
            DialErrorKind::Prohibited
        );
        // From the raw OS errors too, as connect(2) reports them.
        let raw = |code| DialErrorKind::of(&io::Error::from_raw_os_error(code));
        assert_eq!(raw(111), DialErrorKind::Refused); // ECONNREFUSED on Linux
        assert_eq!(raw(101), DialErrorKind::NetworkUnreachable); // ENETUNREACH
        assert_eq!(raw(113), DialErrorKind::HostUnreachable); // EHOSTUNREACH
        assert_eq!(raw(13), DialErrorKind::Prohibited); // EACCES: a `prohibit` route
        assert_eq!(raw(1), DialErrorKind::Prohibited); // EPERM: a local firewall rule
    }

    #[test]
    fn the_most_telling_failure_is_reported() {
        let a = addrs(&["[2001:db8::1]:80", "192.0.2.1:80", "192.0.2.2:80"]);
        let mut failures = vec![
            (a[0], io::Error::from(io::ErrorKind::NetworkUnreachable)),
            (a[1], io::Error::from(io::ErrorKind::ConnectionRefused)),
            (a[2], io::Error::from(io::ErrorKind::ConnectionRefused)),
        ];
        match most_telling(&mut failures, 3, 3) {
            DialError::Failed { kind, addr, .. } => {
                assert_eq!(kind, DialErrorKind::Refused);
                assert_eq!(addr, a[1]);
            }
            other => panic!("{other:?}"),
        }
    }
}
