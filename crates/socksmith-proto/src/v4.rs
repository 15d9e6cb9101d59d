//! SOCKS4 and SOCKS4a requests and replies, and SOCKS4 reply codes.
//!
//! ```text
//! request:  +----+----+---------+-------+--------+------+  SOCKS4a: DSTIP = 0.0.0.x, x != 0,
//!           | VN | CD | DSTPORT | DSTIP | USERID | NULL |  then  +--------+------+
//!           +----+----+---------+-------+--------+------+        | DOMAIN | NULL |
//!           | 1  | 1  |    2    |   4   |  var   |  1   |        +--------+------+
//!
//! reply:    +----+----+---------+-------+
//!           | VN | CD | DSTPORT | DSTIP |   VN = 0x00 (not 0x04)
//!           +----+----+---------+-------+
//!           | 1  | 1  |    2    |   4   |
//! ```
//!
//! CD in a request: 1 CONNECT, 2 BIND, 0xF0 RESOLVE (Tor, SOCKS4a only). CD in a reply: 0x5A
//! granted, 0x5B rejected or failed, 0x5C identd unreachable, 0x5D identd mismatch.

use crate::addr::{DomainName, TargetAddr};
use crate::error::{InvalidInput, Malformed, ProtocolError, Version};
use crate::reader::{Reader, Until};
use crate::v5::{Command, ReplyCode};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// The SOCKS4 request version byte.
pub const VERSION: u8 = 0x04;

/// The longest user id or SOCKS4a domain name accepted before its NUL, in bytes.
pub const MAX_FIELD_LEN: usize = 255;

/// Whether DSTIP is SOCKS4a's "0.0.0.x with x != 0", announcing a domain name.
fn is_v4a_marker(ip: Ipv4Addr) -> bool {
    matches!(ip.octets(), [0, 0, 0, x] if x != 0)
}

/// A SOCKS4 or SOCKS4a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V4Request {
    /// CD. Code 3 is `Command::Unknown(3)`: SOCKS4 has no UDP ASSOCIATE.
    pub command: Command,
    /// `Ip` (always IPv4) for SOCKS4, `Domain` for SOCKS4a.
    pub target: TargetAddr,
    /// USERID without its NUL (at most 255 bytes, no NUL inside). An identity claim, not
    /// authentication.
    pub user_id: Vec<u8>,
}

impl V4Request {
    /// Decodes a request from the start of `input` (the VN byte, 0x04).
    ///
    /// `Ok(None)`: incomplete. A user id or SOCKS4a domain with no NUL within 255 bytes is an
    /// error, not "need more", so a peer cannot make the caller buffer without bound. An
    /// empty SOCKS4a domain is an error.
    pub fn decode(input: &[u8]) -> Result<Option<(V4Request, usize)>, ProtocolError> {
        let mut r = Reader::new(input);
        if !r.version(VERSION)? {
            return Ok(None);
        }
        let Some(cd) = r.u8() else { return Ok(None) };
        let Some(port) = r.u16() else { return Ok(None) };
        let Some(ip) = r.array::<4>() else {
            return Ok(None);
        };
        let user_id = match r.take_until_nul(MAX_FIELD_LEN) {
            Until::Found(id) => id.to_vec(),
            Until::NeedMore => return Ok(None),
            Until::TooLong => return Err(Malformed::V4UserIdTooLong.into()),
        };
        let ip = Ipv4Addr::from(ip);
        let target = if is_v4a_marker(ip) {
            match r.take_until_nul(MAX_FIELD_LEN) {
                Until::Found([]) => return Err(Malformed::EmptyDomain.into()),
                Until::Found(name) => {
                    let name = DomainName::new(name)
                        .expect("1..=255 bytes before the first NUL is a valid DomainName");
                    TargetAddr::Domain(name, port)
                }
                Until::NeedMore => return Ok(None),
                Until::TooLong => return Err(Malformed::V4DomainTooLong.into()),
            }
        } else {
            TargetAddr::Ip(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        };
        let command = Command::from_v4(cd);
        Ok(Some((
            V4Request {
                command,
                target,
                user_id,
            },
            r.consumed(),
        )))
    }

    /// Appends the request to `out`, in SOCKS4a form when the target is a domain name.
    ///
    /// Fails when the target is IPv6 or an IPv4 address of the form 0.0.0.x with x != 0
    /// (SOCKS4a's marker), the command is UDP ASSOCIATE, or the user id is longer than 255
    /// bytes or contains a NUL.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        if self.command == Command::UdpAssociate {
            return Err(InvalidInput::UnsupportedCommand {
                version: Version::V4,
                command: self.command,
            }
            .into());
        }
        if self.user_id.len() > MAX_FIELD_LEN {
            return Err(InvalidInput::V4UserIdTooLong(self.user_id.len()).into());
        }
        if self.user_id.contains(&0) {
            return Err(InvalidInput::V4UserIdContainsNul.into());
        }
        let (ip, domain) = match &self.target {
            TargetAddr::Ip(SocketAddr::V4(a)) if is_v4a_marker(*a.ip()) => {
                return Err(InvalidInput::V4aMarkerAddress(*a.ip()).into());
            }
            TargetAddr::Ip(SocketAddr::V4(a)) => (*a.ip(), None),
            TargetAddr::Ip(SocketAddr::V6(_)) => return Err(InvalidInput::V4Ipv6Address.into()),
            TargetAddr::Domain(name, _) => (Ipv4Addr::new(0, 0, 0, 1), Some(name)),
        };
        out.extend_from_slice(&[VERSION, self.command.as_u8()]);
        out.extend_from_slice(&self.target.port().to_be_bytes());
        out.extend_from_slice(&ip.octets());
        out.extend_from_slice(&self.user_id);
        out.push(0);
        if let Some(name) = domain {
            out.extend_from_slice(name.as_bytes());
            out.push(0);
        }
        Ok(())
    }
}

/// A SOCKS4 reply code (CD in a reply). Unknown codes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum V4ReplyCode {
    /// 0x5A request granted.
    Granted,
    /// 0x5B request rejected or failed.
    Rejected,
    /// 0x5C rejected: the server cannot reach the client's identd.
    IdentdUnreachable,
    /// 0x5D rejected: identd reports a different user id.
    IdentdMismatch,
    /// Any other code.
    Unknown(u8),
}

impl V4ReplyCode {
    /// The wire code.
    pub fn as_u8(self) -> u8 {
        match self {
            V4ReplyCode::Granted => 0x5A,
            V4ReplyCode::Rejected => 0x5B,
            V4ReplyCode::IdentdUnreachable => 0x5C,
            V4ReplyCode::IdentdMismatch => 0x5D,
            V4ReplyCode::Unknown(b) => b,
        }
    }

    /// The SOCKS4 code for a SOCKS5 reply code: `Succeeded` is `Granted`, anything else
    /// `Rejected`.
    pub fn from_reply_code(code: ReplyCode) -> Self {
        if code.is_success() {
            V4ReplyCode::Granted
        } else {
            V4ReplyCode::Rejected
        }
    }

    /// The closest SOCKS5 code: `Granted` is `Succeeded`, the identd codes are
    /// `NotAllowed`, anything else `GeneralFailure`.
    pub fn to_reply_code(self) -> ReplyCode {
        match self {
            V4ReplyCode::Granted => ReplyCode::Succeeded,
            V4ReplyCode::IdentdUnreachable | V4ReplyCode::IdentdMismatch => ReplyCode::NotAllowed,
            V4ReplyCode::Rejected | V4ReplyCode::Unknown(_) => ReplyCode::GeneralFailure,
        }
    }
}

impl From<u8> for V4ReplyCode {
    fn from(b: u8) -> Self {
        match b {
            0x5A => V4ReplyCode::Granted,
            0x5B => V4ReplyCode::Rejected,
            0x5C => V4ReplyCode::IdentdUnreachable,
            0x5D => V4ReplyCode::IdentdMismatch,
            other => V4ReplyCode::Unknown(other),
        }
    }
}

/// The meaning: "request granted", "request rejected or failed", "rejected: identd
/// unreachable", "rejected: identd reports a different user id", "unknown SOCKS4 reply code 0x00".
impl fmt::Display for V4ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            V4ReplyCode::Granted => "request granted",
            V4ReplyCode::Rejected => "request rejected or failed",
            V4ReplyCode::IdentdUnreachable => "rejected: identd unreachable",
            V4ReplyCode::IdentdMismatch => "rejected: identd reports a different user id",
            V4ReplyCode::Unknown(b) => return write!(f, "unknown SOCKS4 reply code 0x{b:02x}"),
        })
    }
}

/// A SOCKS4 reply: always 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V4Reply {
    /// CD.
    pub code: V4ReplyCode,
    /// DSTPORT and DSTIP: the bound address (BIND), the answer (RESOLVE), or often zeros.
    pub addr: SocketAddrV4,
}

impl V4Reply {
    /// The length of a reply on the wire.
    pub const LEN: usize = 8;

    /// Decodes a reply. VN must be 0x00; 0x04, sent by some sloppy servers, is accepted too.
    /// `Ok(None)`: incomplete.
    pub fn decode(input: &[u8]) -> Result<Option<(V4Reply, usize)>, ProtocolError> {
        let mut r = Reader::new(input);
        let Some(vn) = r.u8() else { return Ok(None) };
        // The SOCKS4 note: "VN is the version of the reply code and should be 0". Some servers
        // echo the request's 4; accept it rather than fail a granted request.
        if vn != 0x00 && vn != VERSION {
            return Err(Malformed::WrongVersion {
                found: vn,
                expected: 0x00,
            }
            .into());
        }
        let Some(cd) = r.u8() else { return Ok(None) };
        let Some(port) = r.u16() else { return Ok(None) };
        let Some(ip) = r.array::<4>() else {
            return Ok(None);
        };
        let reply = V4Reply {
            code: cd.into(),
            addr: SocketAddrV4::new(ip.into(), port),
        };
        Ok(Some((reply, r.consumed())))
    }

    /// Appends the reply to `out`, with VN 0x00.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0x00, self.code.as_u8()]);
        out.extend_from_slice(&self.addr.port().to_be_bytes());
        out.extend_from_slice(&self.addr.ip().octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(r: &V4Request) -> Result<Vec<u8>, ProtocolError> {
        let mut out = Vec::new();
        r.encode(&mut out)?;
        Ok(out)
    }

    #[test]
    fn socks4_connect_vector() {
        let bytes = [0x04, 0x01, 0x00, 0x50, 0x7f, 0x00, 0x00, 0x01, b'u', 0x00];
        let req = V4Request {
            command: Command::Connect,
            target: TargetAddr::Ip("127.0.0.1:80".parse().expect("literal")),
            user_id: b"u".to_vec(),
        };
        assert_eq!(V4Request::decode(&bytes), Ok(Some((req.clone(), 10))));
        assert_eq!(encoded(&req), Ok(bytes.to_vec()));
        for n in 0..bytes.len() {
            assert_eq!(V4Request::decode(&bytes[..n]), Ok(None));
        }
    }

    #[test]
    fn socks4a_connect_vector() {
        let bytes = b"\x04\x01\x00\x50\x00\x00\x00\x01\x00example.com\x00GET";
        let req = V4Request {
            command: Command::Connect,
            target: TargetAddr::domain("example.com", 80).expect("valid"),
            user_id: Vec::new(),
        };
        assert_eq!(V4Request::decode(bytes), Ok(Some((req.clone(), 21))));
        assert_eq!(encoded(&req), Ok(bytes[..21].to_vec()));
        for n in 0..21 {
            assert_eq!(V4Request::decode(&bytes[..n]), Ok(None));
        }
    }

    #[test]
    fn socks4a_tor_resolve_vector() {
        let bytes = b"\x04\xf0\x00\x00\x00\x00\x00\x07me\x00torproject.org\x00";
        let (req, n) = V4Request::decode(bytes).expect("valid").expect("complete");
        assert_eq!(n, bytes.len());
        assert_eq!(req.command, Command::Resolve);
        assert_eq!(
            req.target,
            TargetAddr::domain("torproject.org", 0).expect("valid")
        );
        assert_eq!(req.user_id, b"me");
    }

    #[test]
    fn fields_are_bounded_by_255_bytes() {
        let mut long_id = vec![4, 1, 0, 80, 1, 2, 3, 4];
        long_id.extend_from_slice(&[b'a'; 255]);
        assert_eq!(
            V4Request::decode(&long_id),
            Ok(None),
            "255 bytes: NUL may still come"
        );
        long_id.push(b'a');
        assert_eq!(
            V4Request::decode(&long_id),
            Err(Malformed::V4UserIdTooLong.into())
        );
        long_id[8 + 255] = 0;
        assert!(matches!(V4Request::decode(&long_id), Ok(Some((_, 264)))));

        let mut long_name = vec![4, 1, 0, 80, 0, 0, 0, 9, 0];
        long_name.extend_from_slice(&[b'a'; 256]);
        assert_eq!(
            V4Request::decode(&long_name),
            Err(Malformed::V4DomainTooLong.into())
        );
        long_name[9 + 255] = 0;
        assert!(matches!(V4Request::decode(&long_name), Ok(Some((_, 265)))));
    }

    #[test]
    fn request_errors() {
        assert_eq!(
            V4Request::decode(&[4, 1, 0, 80, 0, 0, 0, 1, 0, 0]),
            Err(Malformed::EmptyDomain.into())
        );
        assert_eq!(
            V4Request::decode(&[5, 1, 0]),
            Err(Malformed::WrongVersion {
                found: 5,
                expected: 4
            }
            .into())
        );
        let (req, _) = V4Request::decode(&[4, 3, 0, 80, 1, 2, 3, 4, 0])
            .expect("valid")
            .expect("complete");
        assert_eq!(
            req.command,
            Command::Unknown(3),
            "SOCKS4 has no UDP ASSOCIATE"
        );
    }

    #[test]
    fn encode_refuses_what_socks4_cannot_carry() {
        let base = V4Request {
            command: Command::Connect,
            target: TargetAddr::Ip("1.2.3.4:80".parse().expect("literal")),
            user_id: Vec::new(),
        };
        let with = |f: fn(&mut V4Request)| {
            let mut r = base.clone();
            f(&mut r);
            encoded(&r)
        };
        assert_eq!(
            with(|r| r.target = TargetAddr::Ip("[::1]:80".parse().expect("literal"))),
            Err(InvalidInput::V4Ipv6Address.into())
        );
        assert_eq!(
            with(|r| r.target = TargetAddr::Ip("0.0.0.7:80".parse().expect("literal"))),
            Err(InvalidInput::V4aMarkerAddress(Ipv4Addr::new(0, 0, 0, 7)).into())
        );
        assert_eq!(
            with(|r| r.user_id = b"a\0b".to_vec()),
            Err(InvalidInput::V4UserIdContainsNul.into())
        );
        assert_eq!(
            with(|r| r.user_id = vec![b'a'; 256]),
            Err(InvalidInput::V4UserIdTooLong(256).into())
        );
        assert!(matches!(
            with(|r| r.command = Command::UdpAssociate),
            Err(ProtocolError::InvalidInput(
                InvalidInput::UnsupportedCommand { .. }
            ))
        ));
        assert!(with(|r| r.target = TargetAddr::Ip("0.0.0.0:0".parse().expect("literal"))).is_ok());
    }

    #[test]
    fn reply_vectors() {
        let granted = [0x00, 0x5a, 0x1f, 0x90, 10, 0, 0, 1];
        let reply = V4Reply {
            code: V4ReplyCode::Granted,
            addr: "10.0.0.1:8080".parse().expect("literal"),
        };
        assert_eq!(V4Reply::decode(&granted), Ok(Some((reply, 8))));
        let mut out = Vec::new();
        reply.encode(&mut out);
        assert_eq!(out, granted);

        let sloppy = [0x04, 0x5b, 0, 0, 0, 0, 0, 0, 0xff];
        let (reply, n) = V4Reply::decode(&sloppy)
            .expect("accepted")
            .expect("complete");
        assert_eq!((reply.code, n), (V4ReplyCode::Rejected, 8));
        assert_eq!(
            V4Reply::decode(&[0x05, 0x5a]),
            Err(Malformed::WrongVersion {
                found: 5,
                expected: 0
            }
            .into())
        );
        assert_eq!(V4Reply::decode(&granted[..7]), Ok(None));
    }

    #[test]
    fn reply_codes() {
        for b in 0..=255u8 {
            assert_eq!(V4ReplyCode::from(b).as_u8(), b);
        }
        assert_eq!(
            V4ReplyCode::Rejected.to_string(),
            "request rejected or failed"
        );
        assert_eq!(
            V4ReplyCode::from_reply_code(ReplyCode::Succeeded),
            V4ReplyCode::Granted
        );
        assert_eq!(
            V4ReplyCode::from_reply_code(ReplyCode::HostUnreachable),
            V4ReplyCode::Rejected
        );
        assert_eq!(
            V4ReplyCode::IdentdMismatch.to_reply_code(),
            ReplyCode::NotAllowed
        );
        assert_eq!(
            V4ReplyCode::Unknown(0).to_reply_code(),
            ReplyCode::GeneralFailure
        );
    }
}
