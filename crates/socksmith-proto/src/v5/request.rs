//! The SOCKS5 request (RFC 1928, section 4) and the command codes shared with SOCKS4.
//!
//! ```text
//! +-----+-----+-------+------+----------+----------+
//! | VER | CMD |  RSV  | ATYP | DST.ADDR | DST.PORT |
//! +-----+-----+-------+------+----------+----------+
//! |  1  |  1  | X'00' |  1   | Variable |    2     |
//! ```

use super::VERSION;
use crate::addr::{read_socks5_addr, write_socks5_addr, TargetAddr};
use crate::error::{Malformed, ProtocolError};
use crate::reader::Reader;
use std::fmt;

/// A request command, shared by SOCKS4 and SOCKS5. Unknown codes are kept.
///
/// Codes: 0x01 CONNECT, 0x02 BIND, 0x03 UDP ASSOCIATE (SOCKS5 only), 0xF0 RESOLVE and 0xF1
/// RESOLVE_PTR (Tor's extensions, both versions). SOCKS4 has no UDP ASSOCIATE, so its code 3
/// decodes as `Unknown(3)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// 0x01: open a TCP connection to the target.
    Connect,
    /// 0x02: listen for one inbound connection from the target.
    Bind,
    /// 0x03: relay UDP datagrams (SOCKS5 only).
    UdpAssociate,
    /// 0xF0: Tor's RESOLVE, look up a name; the answer is in the reply, no tunnel follows.
    Resolve,
    /// 0xF1: Tor's RESOLVE_PTR, look up an address's name (SOCKS5 only in practice).
    ResolvePtr,
    /// Any other code.
    Unknown(u8),
}

impl Command {
    /// The wire code (the same in SOCKS4 and SOCKS5).
    pub fn as_u8(self) -> u8 {
        match self {
            Command::Connect => 0x01,
            Command::Bind => 0x02,
            Command::UdpAssociate => 0x03,
            Command::Resolve => 0xF0,
            Command::ResolvePtr => 0xF1,
            Command::Unknown(b) => b,
        }
    }

    /// The command for a SOCKS4 CD byte: like `From<u8>`, but 3 is `Unknown(3)` because
    /// SOCKS4 has no UDP ASSOCIATE.
    pub fn from_v4(b: u8) -> Self {
        match b {
            0x03 => Command::Unknown(0x03),
            other => Command::from(other),
        }
    }
}

/// The SOCKS5 meaning of the code.
impl From<u8> for Command {
    fn from(b: u8) -> Self {
        match b {
            0x01 => Command::Connect,
            0x02 => Command::Bind,
            0x03 => Command::UdpAssociate,
            0xF0 => Command::Resolve,
            0xF1 => Command::ResolvePtr,
            other => Command::Unknown(other),
        }
    }
}

/// The command's name: "CONNECT", "BIND", "UDP ASSOCIATE", "RESOLVE", "RESOLVE_PTR",
/// "unknown command 0x09".
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Connect => f.write_str("CONNECT"),
            Command::Bind => f.write_str("BIND"),
            Command::UdpAssociate => f.write_str("UDP ASSOCIATE"),
            Command::Resolve => f.write_str("RESOLVE"),
            Command::ResolvePtr => f.write_str("RESOLVE_PTR"),
            Command::Unknown(b) => write!(f, "unknown command 0x{b:02x}"),
        }
    }
}

/// A SOCKS5 request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// CMD. Unknown commands decode successfully as [`Command::Unknown`]; whether to serve
    /// them is the server's decision.
    pub command: Command,
    /// DST.ADDR and DST.PORT.
    pub target: TargetAddr,
}

impl Request {
    /// Decodes a request from the start of `input` (the VER byte, 0x05).
    ///
    /// `Ok(None)`: incomplete. Errors: VER not 5, RSV not 0, unknown ATYP (the peer should
    /// get reply 0x08, see [`ProtocolError::reply_code`]), a domain of length 0 or with a
    /// NUL inside.
    pub fn decode(input: &[u8]) -> Result<Option<(Request, usize)>, ProtocolError> {
        let mut r = Reader::new(input);
        let Some((code, target)) = read_message(&mut r)? else {
            return Ok(None);
        };
        Ok(Some((
            Request {
                command: code.into(),
                target,
            },
            r.consumed(),
        )))
    }

    /// Appends the request to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[VERSION, self.command.as_u8(), 0x00]);
        write_socks5_addr(&self.target, out);
    }
}

/// Reads `VER | CODE | RSV | ATYP | ADDR | PORT`, the shape shared by requests and replies.
pub(super) fn read_message(r: &mut Reader<'_>) -> Result<Option<(u8, TargetAddr)>, ProtocolError> {
    if !r.version(VERSION)? {
        return Ok(None);
    }
    let Some(code) = r.u8() else { return Ok(None) };
    let Some(rsv) = r.u8() else { return Ok(None) };
    // RFC 1928: "Fields marked RESERVED (RSV) must be set to X'00'."
    if rsv != 0 {
        return Err(Malformed::NonZeroReserved(rsv).into());
    }
    let Some(target) = read_socks5_addr(r)? else {
        return Ok(None);
    };
    Ok(Some((code, target)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn ip(s: &str) -> TargetAddr {
        TargetAddr::Ip(s.parse::<SocketAddr>().expect("literal"))
    }

    fn encoded(r: &Request) -> Vec<u8> {
        let mut out = Vec::new();
        r.encode(&mut out);
        out
    }

    #[test]
    fn connect_ipv4_vector() {
        let bytes = [0x05, 0x01, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01, 0x00, 0x50];
        let req = Request {
            command: Command::Connect,
            target: ip("127.0.0.1:80"),
        };
        assert_eq!(Request::decode(&bytes), Ok(Some((req.clone(), 10))));
        assert_eq!(encoded(&req), bytes);
        for n in 0..bytes.len() {
            assert_eq!(Request::decode(&bytes[..n]), Ok(None));
        }
    }

    #[test]
    fn ipv6_and_domain_vectors() {
        let mut v6 = vec![0x05, 0x02, 0x00, 0x04, 0x20, 0x01, 0x0d, 0xb8];
        v6.extend_from_slice(&[0; 11]);
        v6.extend_from_slice(&[0x01, 0x1f, 0x90]);
        let req = Request {
            command: Command::Bind,
            target: ip("[2001:db8::1]:8080"),
        };
        assert_eq!(Request::decode(&v6), Ok(Some((req.clone(), 22))));
        assert_eq!(encoded(&req), v6);

        let dom = b"\x05\x01\x00\x03\x0bexample.com\x01\xbbtrailing";
        let req = Request {
            command: Command::Connect,
            target: TargetAddr::domain("example.com", 443).expect("valid"),
        };
        assert_eq!(Request::decode(dom), Ok(Some((req.clone(), 18))));
        assert_eq!(encoded(&req), &dom[..18]);
    }

    #[test]
    fn tor_resolve_vectors() {
        // tor-resolve: CMD 0xF0, ATYP 0x03, "torproject.org" (14 bytes), port 0.
        let resolve = b"\x05\xf0\x00\x03\x0etorproject.org\x00\x00";
        let req = Request {
            command: Command::Resolve,
            target: TargetAddr::domain("torproject.org", 0).expect("valid"),
        };
        assert_eq!(Request::decode(resolve), Ok(Some((req.clone(), 21))));
        assert_eq!(encoded(&req), resolve);

        let ptr = [0x05, 0xf1, 0x00, 0x01, 8, 8, 8, 8, 0, 0];
        let req = Request {
            command: Command::ResolvePtr,
            target: ip("8.8.8.8:0"),
        };
        assert_eq!(Request::decode(&ptr), Ok(Some((req, 10))));
    }

    #[test]
    fn unknown_commands_decode_and_keep_their_code() {
        let bytes = [0x05, 0x09, 0x00, 0x01, 1, 2, 3, 4, 0, 1];
        let (req, _) = Request::decode(&bytes).expect("valid").expect("complete");
        assert_eq!(req.command, Command::Unknown(9));
        assert_eq!(encoded(&req), bytes);
    }

    #[test]
    fn request_errors() {
        let err = |b: &[u8]| Request::decode(b).expect_err("must fail");
        assert_eq!(err(&[5, 1, 1]), Malformed::NonZeroReserved(1).into());
        let e = err(&[5, 1, 0, 7]);
        assert_eq!(e, Malformed::UnknownAddressType(7).into());
        assert_eq!(
            e.reply_code(),
            Some(crate::ReplyCode::AddressTypeNotSupported)
        );
        assert_eq!(err(&[5, 1, 0, 3, 0]), Malformed::EmptyDomain.into());
        assert_eq!(
            err(b"\x05\x01\x00\x03\x04ab\0c\x00\x50"),
            Malformed::DomainContainsNul { offset: 2 }.into()
        );
        assert_eq!(
            err(&[4, 1]),
            Malformed::WrongVersion {
                found: 4,
                expected: 5
            }
            .into()
        );
    }

    #[test]
    fn command_codes() {
        for b in 0..=255u8 {
            assert_eq!(Command::from(b).as_u8(), b);
            assert_eq!(Command::from_v4(b).as_u8(), b);
        }
        assert_eq!(Command::from_v4(3), Command::Unknown(3));
        assert_eq!(Command::from(3), Command::UdpAssociate);
        assert_eq!(Command::from_v4(0xF0), Command::Resolve);
        assert_eq!(Command::UdpAssociate.to_string(), "UDP ASSOCIATE");
    }
}
