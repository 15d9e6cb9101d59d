//! The proxy settings curl reads from the environment: the proxy URL (`all_proxy`, then
//! `ALL_PROXY`) and the targets that bypass it ([`NoProxy`], from `no_proxy`, then `NO_PROXY`),
//! and [`Client::from_env`], which builds a client from them.
//!
//! The scheme-specific variables (`http_proxy`, `https_proxy`, ...) are not read: curl picks one
//! of them by the scheme of the URL it fetches, and this client connects to `host:port` with no
//! scheme at all. Reading `https_proxy` for an SSH connection would send it through a proxy the
//! user set up for web traffic; `ALL_PROXY` is the variable that means "every connection".
//!
//! This module reads variables and matches names; it does no I/O.

use std::net::IpAddr;

use ipnet::IpNet;
use socksmith_proto::TargetAddr;

use super::builder::Client;
use super::error::ClientError;

/// The variables [`proxy_url_from_env`] reads, in order (lower case first, as curl).
pub const PROXY_VARIABLES: [&str; 2] = ["all_proxy", "ALL_PROXY"];

/// The variables [`NoProxy::from_env`] reads, in order (lower case first, as curl).
pub const NO_PROXY_VARIABLES: [&str; 2] = ["no_proxy", "NO_PROXY"];

/// The first of [`PROXY_VARIABLES`] that is set and not blank: its name and value.
pub fn proxy_url_from_env() -> Option<(&'static str, String)> {
    first_set(&PROXY_VARIABLES)
}

fn first_set(names: &[&'static str]) -> Option<(&'static str, String)> {
    names.iter().find_map(|name| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| (*name, v))
    })
}

/// Targets reached directly instead of through the proxies, with curl's `NO_PROXY` rules:
/// a comma-separated list (spaces around entries ignored) of
///
/// - `*` alone: every target;
/// - a host name: that name and every name under it (`example.com` matches `example.com`
///   and `www.example.com`, not `badexample.com`); a leading dot means the same
///   (`.example.com`), case does not matter, and a trailing dot on either side is ignored;
/// - an IP address (`10.1.2.3`, `::1` or `[::1]`) or a CIDR block (`10.0.0.0/8`, `fd00::/8`):
///   targets given as an address in it.
///
/// As in curl, names are never resolved to be matched against addresses: `localhost` must be
/// listed as a name to bypass the proxy for `localhost:80`. Ports in entries are not
/// supported (curl ignores them too); such entries, like any that parse as nothing, match
/// nothing.
///
/// ```
/// use socksmith::client::{parse_target, NoProxy};
/// let rules = NoProxy::parse("localhost, .internal.example, 10.0.0.0/8, ::1");
/// let bypassed = |t: &str| rules.matches(&parse_target(t).unwrap());
/// assert!(bypassed("localhost:80"));
/// assert!(bypassed("db.internal.example:5432"));
/// assert!(bypassed("10.20.30.40:22"));
/// assert!(bypassed("[::1]:8080"));
/// assert!(!bypassed("example.com:443"));
/// assert!(NoProxy::parse("*").matches(&parse_target("anything:1").unwrap()));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    everything: bool,
    names: Vec<String>,
    networks: Vec<IpNet>,
}

impl NoProxy {
    /// No target bypasses the proxies.
    pub fn none() -> Self {
        NoProxy::default()
    }

    /// The rules in `list` (see the type's docs).
    pub fn parse(list: &str) -> Self {
        let mut rules = NoProxy::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                rules.everything = true;
            } else if let Ok(net) = entry.parse::<IpNet>() {
                rules.networks.push(net.trunc());
            } else if let Some(ip) = parse_ip(entry) {
                rules.networks.push(IpNet::from(ip));
            } else {
                let name = entry.trim_start_matches('.').trim_end_matches('.');
                if !name.is_empty() && !name.contains([':', '/']) {
                    rules.names.push(name.to_ascii_lowercase());
                }
            }
        }
        rules
    }

    /// The rules in `no_proxy`, else `NO_PROXY`; none when both are unset or blank.
    pub fn from_env() -> Self {
        first_set(&NO_PROXY_VARIABLES)
            .map(|(_, list)| NoProxy::parse(&list))
            .unwrap_or_default()
    }

    /// Whether no rule is set.
    pub fn is_empty(&self) -> bool {
        !self.everything && self.names.is_empty() && self.networks.is_empty()
    }

    /// Whether `target` is to be reached directly.
    pub fn matches(&self, target: &TargetAddr) -> bool {
        if self.everything {
            return true;
        }
        if let Some(addr) = target.ip_literal() {
            let ip = addr.ip();
            return self.networks.iter().any(|net| net.contains(&ip));
        }
        let TargetAddr::Domain(name, _) = target else {
            return false;
        };
        let name = name.to_string_lossy().to_ascii_lowercase();
        let name = name.trim_end_matches('.');
        self.names.iter().any(|rule| {
            name == rule
                || name
                    .strip_suffix(rule.as_str())
                    .is_some_and(|head| head.ends_with('.'))
        })
    }
}

/// An IP address, IPv6 with or without brackets.
fn parse_ip(text: &str) -> Option<IpAddr> {
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    bare.parse().ok()
}

impl Client {
    /// A client configured as curl would be from the environment: the proxy in `all_proxy`
    /// or `ALL_PROXY` (one URL, any scheme [`super::Proxy`] parses, so `socks5h://` or
    /// `http://`) and the bypass list in `no_proxy` or `NO_PROXY` ([`NoProxy`]; targets it
    /// matches are reached by [`Client::connect`] directly). The scheme-specific variables
    /// (`https_proxy`, ...) are not read: curl picks one by the scheme of the URL it fetches,
    /// and this client connects to `host:port`, which has none.
    ///
    /// Fails with [`ClientError::NoProxy`] when neither proxy variable is set, and with
    /// [`ClientError::Url`] when the URL does not parse.
    pub fn from_env() -> Result<Client, ClientError> {
        let (_, url) = proxy_url_from_env().ok_or(ClientError::NoProxy)?;
        Client::builder()
            .proxy(url.parse()?)
            .no_proxy(NoProxy::from_env())
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(host: &str) -> TargetAddr {
        TargetAddr::domain(host, 80).expect("valid name")
    }

    fn ip(addr: &str) -> TargetAddr {
        TargetAddr::Ip(addr.parse().expect("valid address"))
    }

    #[test]
    fn names_match_themselves_and_what_is_under_them() {
        let rules = NoProxy::parse("example.com, .Internal.Test., localhost");
        for host in [
            "example.com",
            "www.example.com",
            "a.b.example.com",
            "EXAMPLE.COM.",
            "internal.test",
            "db.internal.test",
            "localhost",
        ] {
            assert!(rules.matches(&name(host)), "{host}");
        }
        for host in ["badexample.com", "example.org", "test", "localhost.example"] {
            assert!(!rules.matches(&name(host)), "{host}");
        }
        // Names are not resolved: an address is matched by address rules only.
        assert!(!rules.matches(&ip("127.0.0.1:80")));
    }

    #[test]
    fn addresses_and_cidr_blocks_match_address_targets() {
        let rules = NoProxy::parse("10.0.0.0/8,192.168.1.7, [::1], fd00::/8 ,172.16.5.9/12");
        for addr in [
            "10.1.2.3:1",
            "192.168.1.7:22",
            "[::1]:443",
            "[fd12::1]:80",
            "172.31.0.1:80",
        ] {
            assert!(rules.matches(&ip(addr)), "{addr}");
        }
        for addr in ["11.0.0.1:1", "192.168.1.8:22", "[::2]:443", "172.32.0.1:80"] {
            assert!(!rules.matches(&ip(addr)), "{addr}");
        }
        // An address spelled as a name is an address.
        assert!(rules.matches(&name("10.9.9.9")));
    }

    #[test]
    fn a_star_matches_everything_and_junk_matches_nothing() {
        assert!(NoProxy::parse("*").matches(&name("anything.example")));
        assert!(NoProxy::parse("a.test, *").matches(&ip("8.8.8.8:53")));
        let junk = NoProxy::parse(" , ., host:80, 10.0.0.0/99");
        assert!(junk.is_empty(), "{junk:?}");
        assert!(!junk.matches(&name("host")));
        assert!(NoProxy::none().is_empty());
        assert!(!NoProxy::parse("").matches(&name("a")));
    }
}
