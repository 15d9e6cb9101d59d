//! IP prefixes (`10.0.0.0/8`, `2001:db8::/32`) for destination rules.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP prefix: an address and how many leading bits of it count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix_len: u8,
}

/// Why a prefix did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpNetParseError {
    /// The part before `/` is not an IP address.
    #[error("{0:?} is not an IP address")]
    Address(String),
    /// The prefix length is not a number within the address's bit count.
    #[error("prefix length {0:?} must be 0..=32 for IPv4 and 0..=128 for IPv6")]
    PrefixLength(String),
}

impl IpNet {
    /// The prefix `addr/prefix_len`; `None` when the length exceeds the address's bits.
    /// Bits of `addr` past the prefix are cleared.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<Self> {
        let max = max_len(addr);
        if prefix_len > max {
            return None;
        }
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask32(prefix_len)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask128(prefix_len)).into()),
        };
        Some(IpNet { addr, prefix_len })
    }

    /// Whether `ip` lies in the prefix. IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask32(self.prefix_len) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.prefix_len) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn max_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// `"10.0.0.0/8"`, `"2001:db8::/32"`; a bare address is a single-host prefix.
impl FromStr for IpNet {
    type Err = IpNetParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| IpNetParseError::Address(addr.to_owned()))?;
        let prefix_len = match len {
            None => max_len(addr),
            Some(len) => len
                .parse::<u8>()
                .map_err(|_| IpNetParseError::PrefixLength(len.to_owned()))?,
        };
        IpNet::new(addr, prefix_len)
            .ok_or_else(|| IpNetParseError::PrefixLength(prefix_len.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("valid prefix")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("valid address")
    }

    #[test]
    fn contains_by_prefix() {
        assert!(net("10.0.0.0/8").contains(ip("10.255.1.2")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.0")));
        assert!(net("0.0.0.0/0").contains(ip("1.2.3.4")));
        assert!(!net("0.0.0.0/0").contains(ip("::1")));
        assert!(net("127.0.0.2").contains(ip("127.0.0.2")));
        assert!(!net("127.0.0.2").contains(ip("127.0.0.3")));
        assert!(net("2001:db8::/32").contains(ip("2001:db8:1::5")));
        assert!(!net("2001:db8::/32").contains(ip("2001:db9::")));
        assert!(
            net("10.0.0.0/8").contains(ip("::ffff:10.1.1.1")),
            "v4-mapped"
        );
    }

    #[test]
    fn parse_and_display() {
        assert_eq!(net("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(net("::1").to_string(), "::1/128");
        assert_eq!(
            "10.0.0.0/33".parse::<IpNet>(),
            Err(IpNetParseError::PrefixLength("33".into()))
        );
        assert_eq!(
            "host/8".parse::<IpNet>(),
            Err(IpNetParseError::Address("host".into()))
        );
        assert_eq!(
            "10.0.0.0/x".parse::<IpNet>(),
            Err(IpNetParseError::PrefixLength("x".into()))
        );
    }
}
