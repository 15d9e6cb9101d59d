//! Target and bound addresses: [`TargetAddr`] and its [`DomainName`].
//!
//! Owns the validity rules of names (1..=255 bytes, no NUL) and the SOCKS5 address encoding
//! (ATYP, DST.ADDR, DST.PORT) shared by requests, replies and UDP headers. It does not resolve
//! names: that is the library's job.

use crate::error::{InvalidInput, Malformed, ProtocolError};
use crate::reader::Reader;
use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// A domain name as carried by SOCKS: 1..=255 arbitrary bytes without NUL.
///
/// SOCKS puts no other constraint on a name (it need not be UTF-8 nor a valid DNS name), so
/// the bytes are kept as received. A name is never truncated and never cut at a NUL.
///
/// ```
/// use socksmith_proto::DomainName;
/// let name = DomainName::try_from("example.com").unwrap();
/// assert_eq!(name.as_bytes(), b"example.com");
/// assert!(DomainName::try_from("").is_err());
/// assert!(DomainName::try_from("good.example\0evil").is_err());
/// assert!(DomainName::try_from("a".repeat(256).as_str()).is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DomainName(Vec<u8>);

impl DomainName {
    /// The longest name SOCKS can carry, in bytes.
    pub const MAX_LEN: usize = 255;

    /// Validates and wraps a name: 1..=255 bytes, no NUL.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, ProtocolError> {
        todo!()
    }

    /// The name's bytes as they go on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        todo!()
    }

    /// The name as `&str` when it is valid UTF-8.
    pub fn to_str(&self) -> Option<&str> {
        todo!()
    }

    /// The name as text, invalid UTF-8 replaced by U+FFFD.
    pub fn to_string_lossy(&self) -> Cow<'_, str> {
        todo!()
    }

    /// Consumes the name, returning its bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        todo!()
    }
}

impl fmt::Debug for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!()
    }
}

/// Displays the name as text with invalid UTF-8 replaced and control characters escaped, so
/// a hostile name cannot forge log lines.
impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!()
    }
}

impl TryFrom<&str> for DomainName {
    type Error = ProtocolError;
    fn try_from(s: &str) -> Result<Self, ProtocolError> {
        todo!()
    }
}

impl TryFrom<String> for DomainName {
    type Error = ProtocolError;
    fn try_from(s: String) -> Result<Self, ProtocolError> {
        todo!()
    }
}

impl TryFrom<&[u8]> for DomainName {
    type Error = ProtocolError;
    fn try_from(b: &[u8]) -> Result<Self, ProtocolError> {
        todo!()
    }
}

impl TryFrom<Vec<u8>> for DomainName {
    type Error = ProtocolError;
    fn try_from(b: Vec<u8>) -> Result<Self, ProtocolError> {
        todo!()
    }
}

/// Where a client wants to go, or the address a server reports: an IP socket address or a
/// domain name with a port.
///
/// ```
/// use socksmith_proto::{DomainName, TargetAddr};
/// let t = TargetAddr::Domain(DomainName::try_from("::1").unwrap(), 80);
/// assert_eq!(t.ip_literal(), Some("[::1]:80".parse().unwrap()));
/// assert_eq!(t.to_string(), "::1:80");
/// let ip = TargetAddr::from("[::1]:80".parse::<std::net::SocketAddr>().unwrap());
/// assert_eq!(ip.to_string(), "[::1]:80");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetAddr {
    /// An IPv4 or IPv6 address and port (ATYP 0x01 or 0x04).
    Ip(SocketAddr),
    /// A domain name and port (ATYP 0x03, or SOCKS4a).
    Domain(DomainName, u16),
}

impl TargetAddr {
    /// `0.0.0.0:0`, the customary "no address" in replies and UDP ASSOCIATE requests.
    pub const UNSPECIFIED: TargetAddr = TargetAddr::Ip(SocketAddr::V4(SocketAddrV4::new(
        std::net::Ipv4Addr::UNSPECIFIED,
        0,
    )));

    /// A domain target, validating the name.
    pub fn domain(name: impl Into<Vec<u8>>, port: u16) -> Result<Self, ProtocolError> {
        todo!()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        todo!()
    }

    /// The socket address this target is or spells: `Ip` as is, and a `Domain` whose name is
    /// an IPv4 or IPv6 literal (`10.0.0.1`, `::1`, `[::1]`), which some clients send with
    /// ATYP 0x03. `None` for a real name.
    pub fn ip_literal(&self) -> Option<SocketAddr> {
        todo!()
    }

    /// Whether this is a domain name (which may still spell an IP, see [`Self::ip_literal`]).
    pub fn is_domain(&self) -> bool {
        todo!()
    }
}

/// `host:port`, with IPv6 addresses in brackets (`[::1]:80`). Domain names are shown as
/// [`DomainName`]'s `Display` does.
impl fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!()
    }
}

impl From<SocketAddr> for TargetAddr {
    fn from(a: SocketAddr) -> Self {
        TargetAddr::Ip(a)
    }
}

impl From<SocketAddrV4> for TargetAddr {
    fn from(a: SocketAddrV4) -> Self {
        TargetAddr::Ip(SocketAddr::V4(a))
    }
}

impl From<SocketAddrV6> for TargetAddr {
    fn from(a: SocketAddrV6) -> Self {
        TargetAddr::Ip(SocketAddr::V6(a))
    }
}

impl From<(IpAddr, u16)> for TargetAddr {
    fn from((ip, port): (IpAddr, u16)) -> Self {
        TargetAddr::Ip(SocketAddr::new(ip, port))
    }
}

/// Decodes the SOCKS5 `ATYP | ADDR | PORT` form. `Ok(None)`: need more bytes.
pub(crate) fn read_socks5_addr(r: &mut Reader<'_>) -> Result<Option<TargetAddr>, ProtocolError> {
    let _ = (r, Malformed::EmptyDomain, InvalidInput::EmptyDomain);
    todo!()
}

/// Encodes the SOCKS5 `ATYP | ADDR | PORT` form.
pub(crate) fn write_socks5_addr(addr: &TargetAddr, out: &mut Vec<u8>) {
    let _ = (addr, out);
    todo!()
}
