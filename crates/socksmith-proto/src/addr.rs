//! Target and bound addresses: [`TargetAddr`] and its [`DomainName`].
//!
//! Owns the validity rules of names (1..=255 bytes, no NUL) and the SOCKS5 address encoding
//! (ATYP, DST.ADDR, DST.PORT) shared by requests, replies and UDP headers. It does not resolve
//! names: that is the library's job.

use crate::error::{InvalidInput, Malformed, ProtocolError};
use crate::reader::Reader;
use std::borrow::Cow;
use std::fmt::{self, Write as _};
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
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Err(InvalidInput::EmptyDomain.into());
        }
        if bytes.len() > Self::MAX_LEN {
            return Err(InvalidInput::DomainTooLong(bytes.len()).into());
        }
        if let Some(offset) = bytes.iter().position(|&b| b == 0) {
            return Err(InvalidInput::DomainContainsNul { offset }.into());
        }
        Ok(DomainName(bytes))
    }

    /// The name's bytes as they go on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The name as `&str` when it is valid UTF-8.
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The name as text, invalid UTF-8 replaced by U+FFFD.
    pub fn to_string_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    /// Consumes the name, returning its bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Debug for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DomainName({:?})", self.to_string_lossy())
    }
}

/// Displays the name as text with invalid UTF-8 replaced and control characters escaped, so
/// a hostile name cannot forge log lines.
impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.to_string_lossy().chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

impl TryFrom<&str> for DomainName {
    type Error = ProtocolError;
    fn try_from(s: &str) -> Result<Self, ProtocolError> {
        DomainName::new(s.as_bytes())
    }
}

impl TryFrom<String> for DomainName {
    type Error = ProtocolError;
    fn try_from(s: String) -> Result<Self, ProtocolError> {
        DomainName::new(s.into_bytes())
    }
}

impl TryFrom<&[u8]> for DomainName {
    type Error = ProtocolError;
    fn try_from(b: &[u8]) -> Result<Self, ProtocolError> {
        DomainName::new(b)
    }
}

impl TryFrom<Vec<u8>> for DomainName {
    type Error = ProtocolError;
    fn try_from(b: Vec<u8>) -> Result<Self, ProtocolError> {
        DomainName::new(b)
    }
}

/// Where a client wants to go, or the address a server reports: an IP socket address or a
/// domain name with a port.
///
/// ```
/// use socksmith_proto::{DomainName, TargetAddr};
/// let t = TargetAddr::Domain(DomainName::try_from("::1").unwrap(), 80);
/// assert_eq!(t.ip_literal(), Some("[::1]:80".parse().unwrap()));
/// assert_eq!(t.to_string(), "[::1]:80");
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
        Ok(TargetAddr::Domain(DomainName::new(name)?, port))
    }

    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            TargetAddr::Ip(a) => a.port(),
            TargetAddr::Domain(_, port) => *port,
        }
    }

    /// The socket address this target is or spells: `Ip` as is, and a `Domain` whose name is
    /// an IPv4 or IPv6 literal (`10.0.0.1`, `::1`, `[::1]`), which some clients send with
    /// ATYP 0x03. `None` for a real name.
    pub fn ip_literal(&self) -> Option<SocketAddr> {
        match self {
            TargetAddr::Ip(a) => Some(*a),
            TargetAddr::Domain(name, port) => {
                let text = name.to_str()?;
                let text = text
                    .strip_prefix('[')
                    .and_then(|t| t.strip_suffix(']'))
                    .map_or(text, |inner| inner);
                let ip: IpAddr = text.parse().ok()?;
                Some(SocketAddr::new(ip, *port))
            }
        }
    }

    /// Whether this is a domain name (which may still spell an IP, see [`Self::ip_literal`]).
    pub fn is_domain(&self) -> bool {
        matches!(self, TargetAddr::Domain(..))
    }
}

/// `host:port`, with IPv6 addresses in brackets (`[::1]:80`), and names containing `:` too.
/// Domain names are shown as [`DomainName`]'s `Display` does.
impl fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetAddr::Ip(a) => write!(f, "{a}"),
            // A name spelling an IPv6 literal gets brackets so the port stays unambiguous.
            TargetAddr::Domain(name, port) if name.as_bytes().contains(&b':') => {
                if name.as_bytes().starts_with(b"[") {
                    write!(f, "{name}:{port}")
                } else {
                    write!(f, "[{name}]:{port}")
                }
            }
            TargetAddr::Domain(name, port) => write!(f, "{name}:{port}"),
        }
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

/// ATYP for an IPv4 address.
pub(crate) const ATYP_IPV4: u8 = 0x01;
/// ATYP for a domain name.
pub(crate) const ATYP_DOMAIN: u8 = 0x03;
/// ATYP for an IPv6 address.
pub(crate) const ATYP_IPV6: u8 = 0x04;

/// Decodes the SOCKS5 `ATYP | ADDR | PORT` form. `Ok(None)`: need more bytes.
pub(crate) fn read_socks5_addr(r: &mut Reader<'_>) -> Result<Option<TargetAddr>, ProtocolError> {
    let Some(atyp) = r.u8() else {
        return Ok(None);
    };
    let addr = match atyp {
        ATYP_IPV4 => {
            let Some(ip) = r.array::<4>() else {
                return Ok(None);
            };
            IpAddr::from(ip)
        }
        ATYP_IPV6 => {
            let Some(ip) = r.array::<16>() else {
                return Ok(None);
            };
            IpAddr::from(ip)
        }
        ATYP_DOMAIN => {
            let Some(len) = r.u8() else {
                return Ok(None);
            };
            // RFC 1928 gives no minimum, but an empty name names nothing: refuse it as soon
            // as the length byte is seen.
            if len == 0 {
                return Err(Malformed::EmptyDomain.into());
            }
            let Some(name) = r.take(usize::from(len)) else {
                return Ok(None);
            };
            if let Some(offset) = name.iter().position(|&b| b == 0) {
                return Err(Malformed::DomainContainsNul { offset }.into());
            }
            let Some(port) = r.u16() else {
                return Ok(None);
            };
            let name = DomainName::new(name)
                .expect("1..=255 bytes without NUL, checked above, is a valid DomainName");
            return Ok(Some(TargetAddr::Domain(name, port)));
        }
        other => return Err(Malformed::UnknownAddressType(other).into()),
    };
    let Some(port) = r.u16() else {
        return Ok(None);
    };
    Ok(Some(TargetAddr::Ip(SocketAddr::new(addr, port))))
}

/// Encodes the SOCKS5 `ATYP | ADDR | PORT` form.
pub(crate) fn write_socks5_addr(addr: &TargetAddr, out: &mut Vec<u8>) {
    match addr {
        TargetAddr::Ip(SocketAddr::V4(a)) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&a.ip().octets());
        }
        TargetAddr::Ip(SocketAddr::V6(a)) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&a.ip().octets());
        }
        TargetAddr::Domain(name, _) => {
            out.push(ATYP_DOMAIN);
            let len =
                u8::try_from(name.as_bytes().len()).expect("a DomainName is at most 255 bytes");
            out.push(len);
            out.extend_from_slice(name.as_bytes());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Result<Option<(TargetAddr, usize)>, ProtocolError> {
        let mut r = Reader::new(bytes);
        Ok(read_socks5_addr(&mut r)?.map(|a| (a, r.consumed())))
    }

    fn encode(addr: &TargetAddr) -> Vec<u8> {
        let mut out = Vec::new();
        write_socks5_addr(addr, &mut out);
        out
    }

    #[test]
    fn domain_names_are_1_to_255_bytes_without_nul() {
        assert_eq!(
            DomainName::try_from(""),
            Err(InvalidInput::EmptyDomain.into())
        );
        assert!(DomainName::try_from("a".repeat(255)).is_ok());
        assert_eq!(
            DomainName::try_from("a".repeat(256)),
            Err(InvalidInput::DomainTooLong(256).into())
        );
        assert_eq!(
            DomainName::try_from("good.example\0evil"),
            Err(InvalidInput::DomainContainsNul { offset: 12 }.into())
        );
        let raw = DomainName::try_from(vec![0xff, b'a']).expect("non-UTF-8 names are allowed");
        assert_eq!(raw.to_str(), None);
        assert_eq!(raw.to_string_lossy(), "\u{fffd}a");
        assert_eq!(raw.as_bytes(), &[0xff, b'a']);
    }

    #[test]
    fn display_escapes_control_characters() {
        let name = DomainName::try_from("evil\nINFO forged").expect("valid name");
        assert_eq!(name.to_string(), "evil\\nINFO forged");
        assert_eq!(format!("{name:?}"), "DomainName(\"evil\\nINFO forged\")");
    }

    #[test]
    fn target_display_and_port() {
        let v4 = TargetAddr::from("127.0.0.1:80".parse::<SocketAddr>().expect("literal"));
        assert_eq!(v4.to_string(), "127.0.0.1:80");
        let v6 = TargetAddr::from("[::1]:443".parse::<SocketAddr>().expect("literal"));
        assert_eq!(v6.to_string(), "[::1]:443");
        assert_eq!(v6.port(), 443);
        let d = TargetAddr::domain("example.com", 8080).expect("valid");
        assert_eq!(d.to_string(), "example.com:8080");
        assert_eq!(d.port(), 8080);
        let spelled = TargetAddr::domain("::1", 80).expect("valid");
        assert_eq!(spelled.to_string(), "[::1]:80");
        let bracketed = TargetAddr::domain("[::1]", 80).expect("valid");
        assert_eq!(bracketed.to_string(), "[::1]:80");
        assert!(d.is_domain() && !v4.is_domain());
        assert_eq!(TargetAddr::UNSPECIFIED.to_string(), "0.0.0.0:0");
    }

    #[test]
    fn ip_literals_spelled_as_domains() {
        let lit = |s: &str| TargetAddr::domain(s, 7).expect("valid").ip_literal();
        assert_eq!(
            lit("10.0.0.1"),
            Some("10.0.0.1:7".parse().expect("literal"))
        );
        assert_eq!(lit("::1"), Some("[::1]:7".parse().expect("literal")));
        assert_eq!(lit("[::1]"), Some("[::1]:7".parse().expect("literal")));
        assert_eq!(lit("example.com"), None);
        assert_eq!(lit("10.0.0.1.example"), None);
        assert_eq!(lit("[10.0.0.1"), None);
        assert_eq!(lit("010.0.0.1"), None, "no octal forms");
        let ip: SocketAddr = "1.2.3.4:5".parse().expect("literal");
        assert_eq!(TargetAddr::from(ip).ip_literal(), Some(ip));
    }

    #[test]
    fn socks5_address_vectors() {
        let v4 = [0x01, 0x7f, 0x00, 0x00, 0x01, 0x00, 0x50];
        let addr = TargetAddr::from("127.0.0.1:80".parse::<SocketAddr>().expect("literal"));
        assert_eq!(decode(&v4), Ok(Some((addr.clone(), 7))));
        assert_eq!(encode(&addr), v4);

        let mut v6 = vec![0x04];
        v6.extend_from_slice(&[0; 15]);
        v6.extend_from_slice(&[1, 0x01, 0xbb]);
        let addr = TargetAddr::from("[::1]:443".parse::<SocketAddr>().expect("literal"));
        assert_eq!(decode(&v6), Ok(Some((addr.clone(), 19))));
        assert_eq!(encode(&addr), v6);

        let dom = b"\x03\x0bexample.com\x00\x50";
        let addr = TargetAddr::domain("example.com", 80).expect("valid");
        assert_eq!(decode(dom), Ok(Some((addr.clone(), 15))));
        assert_eq!(encode(&addr), dom);

        for n in 0..dom.len() {
            assert_eq!(decode(&dom[..n]), Ok(None), "prefix of {n} bytes");
        }
    }

    #[test]
    fn socks5_address_errors() {
        assert_eq!(decode(&[0x03, 0x00]), Err(Malformed::EmptyDomain.into()));
        assert_eq!(
            decode(&[0x07, 1, 2, 3, 4, 0, 80]),
            Err(Malformed::UnknownAddressType(0x07).into())
        );
        assert_eq!(
            decode(b"\x03\x05ab\0cd\x00\x50"),
            Err(Malformed::DomainContainsNul { offset: 2 }.into())
        );
    }
}
