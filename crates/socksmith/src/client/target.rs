//! What the client accepts as a target: [`IntoTarget`] and [`parse_target`] (`HOST:PORT`).
//!
//! This module turns caller input into a [`TargetAddr`]; it does not resolve names (the
//! client decides that per hop, see [`crate::client::Protocol::remote_dns`]).

use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};

use socksmith_proto::TargetAddr;

/// Why a target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// No `:PORT` at the end.
    #[error("target {0:?} has no port (expected HOST:PORT, [IPv6]:PORT)")]
    MissingPort(String),
    /// The port is not a number in 0..=65535.
    #[error("target {0:?} has an invalid port")]
    InvalidPort(String),
    /// The host is empty, has an unclosed bracket, or is not a name SOCKS can carry
    /// (1..=255 bytes, no NUL).
    #[error("target {input:?} has an invalid host: {reason}")]
    InvalidHost {
        /// The input.
        input: String,
        /// Why.
        reason: String,
    },
}

/// Anything the client can use as a target: a [`TargetAddr`], a [`SocketAddr`], an
/// `(IpAddr, u16)`, a `(&str, u16)` / `(String, u16)` host and port, or a `"HOST:PORT"`
/// string (IPv6 in brackets).
///
/// ```
/// use socksmith::client::IntoTarget;
/// use socksmith_proto::TargetAddr;
/// let t = ("example.com", 443).into_target().unwrap();
/// assert_eq!(t, TargetAddr::domain("example.com", 443).unwrap());
/// let t = "[::1]:80".into_target().unwrap();
/// assert_eq!(t, TargetAddr::Ip("[::1]:80".parse().unwrap()));
/// ```
pub trait IntoTarget {
    /// The target, or why it cannot be one.
    fn into_target(self) -> Result<TargetAddr, TargetError>;
}

impl IntoTarget for TargetAddr {
    fn into_target(self) -> Result<TargetAddr, TargetError> {
        Ok(self)
    }
}

impl IntoTarget for &TargetAddr {
    fn into_target(self) -> Result<TargetAddr, TargetError> {
        Ok(self.clone())
    }
}

impl IntoTarget for SocketAddr {
    fn into_target(self) -> Result<TargetAddr, TargetError> {
        Ok(TargetAddr::Ip(self))
    }
}

impl IntoTarget for SocketAddrV4 {
    fn into_target(self) -> Result<TargetAddr, TargetError> {
        Ok(TargetAddr::Ip(self.into()))
    }
}

impl IntoTarget for SocketAddrV6 {
    fn into_target(self) -> Result<TargetAddr, TargetError> {
        Ok(TargetAddr::Ip(self.into()))
    }
}

impl IntoTarget for (IpAddr, u16) {
    fn into_target(self) -> Result<TargetAddr, TargetError> {
        Ok(TargetAddr::Ip(SocketAddr::new(self.0, self.1)))
    }
}

impl IntoTarget for (&str, u16) {
    fn into_target(self) -> Result<TargetAddr, TargetError> {
        host_and_port(self.0, self.1, self.0)
    }
}

impl IntoTarget for (String, u16) {
    fn into_target(self) -> Result<TargetAddr, TargetError> {
        host_and_port(&self.0, self.1, &self.0)
    }
}

impl IntoTarget for &str {
    fn into_target(self) -> Result<TargetAddr, TargetError> {
        parse_target(self)
    }
}

impl IntoTarget for &String {
    fn into_target(self) -> Result<TargetAddr, TargetError> {
        parse_target(self)
    }
}

/// Parses `HOST:PORT`: `example.com:80`, `10.0.0.1:80`, `[::1]:80`. An IP literal becomes
/// [`TargetAddr::Ip`], anything else a domain name.
///
/// ```
/// use socksmith::client::parse_target;
/// assert_eq!(parse_target("localhost:7").unwrap().to_string(), "localhost:7");
/// assert!(parse_target("::1:80").is_err()); // IPv6 needs brackets
/// assert!(parse_target("example.com").is_err());
/// ```
pub fn parse_target(input: &str) -> Result<TargetAddr, TargetError> {
    let (host, port) = input
        .rsplit_once(':')
        .ok_or_else(|| TargetError::MissingPort(input.to_owned()))?;
    let port: u16 = match port.parse() {
        Ok(p) if port.bytes().all(|b| b.is_ascii_digit()) => p,
        _ => return Err(TargetError::InvalidPort(input.to_owned())),
    };
    let host = if let Some(inner) = host.strip_prefix('[') {
        let ip = inner
            .strip_suffix(']')
            .and_then(|ip| ip.parse::<std::net::Ipv6Addr>().ok())
            .ok_or_else(|| invalid_host(input, "expected an IPv6 address in brackets"))?;
        return Ok(TargetAddr::Ip(SocketAddr::new(ip.into(), port)));
    } else {
        host
    };
    if host.contains(':') {
        return Err(invalid_host(
            input,
            "an IPv6 address needs brackets: [::1]:80",
        ));
    }
    host_and_port(host, port, input)
}

fn host_and_port(host: &str, port: u16, input: &str) -> Result<TargetAddr, TargetError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(TargetAddr::Ip(SocketAddr::new(ip, port)));
    }
    TargetAddr::domain(host, port).map_err(|e| invalid_host(input, &e.to_string()))
}

fn invalid_host(input: &str, reason: &str) -> TargetError {
    TargetError::InvalidHost {
        input: input.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_literals() {
        assert_eq!(
            parse_target("10.0.0.1:80"),
            Ok(TargetAddr::Ip("10.0.0.1:80".parse().expect("addr")))
        );
        assert_eq!(
            parse_target("[::1]:0"),
            Ok(TargetAddr::Ip("[::1]:0".parse().expect("addr")))
        );
        assert_eq!(
            parse_target("example.com:65535"),
            Ok(TargetAddr::domain("example.com", 65535).expect("valid"))
        );
    }

    #[test]
    fn refuses_what_cannot_be_a_target() {
        assert!(matches!(
            parse_target("x"),
            Err(TargetError::MissingPort(_))
        ));
        assert!(matches!(
            parse_target("x:y"),
            Err(TargetError::InvalidPort(_))
        ));
        assert!(matches!(
            parse_target("x:65536"),
            Err(TargetError::InvalidPort(_))
        ));
        assert!(matches!(
            parse_target(":80"),
            Err(TargetError::InvalidHost { .. })
        ));
        assert!(matches!(
            parse_target("[::1:80"),
            Err(TargetError::InvalidHost { .. })
        ));
        let long = format!("{}:80", "a".repeat(256));
        assert!(matches!(
            parse_target(&long),
            Err(TargetError::InvalidHost { .. })
        ));
    }

    #[test]
    fn tuples_turn_literals_into_addresses() {
        assert_eq!(
            ("::1", 5).into_target(),
            Ok(TargetAddr::Ip("[::1]:5".parse().expect("addr")))
        );
        assert!(("", 5).into_target().is_err());
    }
}
