//! How a client reaches a proxy: kind (which SOCKS version, who resolves names), address and
//! credentials, and the `socks5h://user:pass@host:port` URL form that curl and socksmith take.
//!
//! Every peer in this crate hands out [`Proxy`] values; the client runners in [`crate::clients`]
//! take them. Nothing here does I/O.

use std::fmt;
use std::net::SocketAddr;

pub use crate::raw::Credentials;

/// The SOCKS flavour a client speaks, as in curl's URL schemes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    /// SOCKS4: the client resolves names, sends an IPv4 address.
    Socks4,
    /// SOCKS4a: the proxy resolves names.
    Socks4a,
    /// SOCKS5 with the client resolving names.
    Socks5,
    /// SOCKS5 with the proxy resolving names (curl's `socks5h`).
    Socks5h,
}

impl ProxyKind {
    /// The URL scheme: `socks4`, `socks4a`, `socks5` or `socks5h`.
    pub fn scheme(self) -> &'static str {
        match self {
            Self::Socks4 => "socks4",
            Self::Socks4a => "socks4a",
            Self::Socks5 => "socks5",
            Self::Socks5h => "socks5h",
        }
    }

    /// Whether the proxy resolves names (4a, 5h).
    pub fn remote_dns(self) -> bool {
        matches!(self, Self::Socks4a | Self::Socks5h)
    }

    /// Whether this is SOCKS version 4 (or 4a).
    pub fn is_v4(self) -> bool {
        matches!(self, Self::Socks4 | Self::Socks4a)
    }
}

/// A proxy a client should use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proxy {
    /// The SOCKS flavour.
    pub kind: ProxyKind,
    /// Where the proxy listens.
    pub addr: SocketAddr,
    /// Username and password (SOCKS5 only; ignored by SOCKS4 clients, or sent as USERID).
    pub auth: Option<Credentials>,
}

impl Proxy {
    /// A proxy without credentials.
    pub fn new(kind: ProxyKind, addr: SocketAddr) -> Self {
        Self {
            kind,
            addr,
            auth: None,
        }
    }

    /// The same proxy with credentials.
    pub fn with_auth(mut self, auth: Option<Credentials>) -> Self {
        self.auth = auth;
        self
    }

    /// The same proxy spoken to as another kind.
    pub fn as_kind(&self, kind: ProxyKind) -> Self {
        Self {
            kind,
            ..self.clone()
        }
    }

    /// `scheme://[user:pass@]host:port`, credentials percent-encoded, IPv6 in brackets.
    pub fn url(&self) -> String {
        let auth = match &self.auth {
            Some(c) => format!("{}:{}@", url_encode(&c.user), url_encode(&c.pass)),
            None => String::new(),
        };
        format!("{}://{auth}{}", self.kind.scheme(), self.addr)
    }
}

impl fmt::Display for Proxy {
    /// The URL without the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.auth {
            Some(c) => write!(f, "{}://{}:***@{}", self.kind.scheme(), c.user, self.addr),
            None => write!(f, "{}://{}", self.kind.scheme(), self.addr),
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_brackets_ipv6_and_encodes_credentials() {
        let p = Proxy::new(ProxyKind::Socks5h, "[::1]:1080".parse().expect("addr"))
            .with_auth(Some(Credentials::new("a b", "p@ss:")));
        assert_eq!(p.url(), "socks5h://a%20b:p%40ss%3A@[::1]:1080");
        assert_eq!(p.to_string(), "socks5h://a b:***@[::1]:1080");
        assert_eq!(
            p.as_kind(ProxyKind::Socks4).with_auth(None).url(),
            "socks4://[::1]:1080"
        );
    }
}
