//! The SOCKS5 reply (RFC 1928, section 6) and its reply codes.
//!
//! ```text
//! +-----+-----+-------+------+----------+----------+
//! | VER | REP |  RSV  | ATYP | BND.ADDR | BND.PORT |
//! +-----+-----+-------+------+----------+----------+
//! |  1  |  1  | X'00' |  1   | Variable |    2     |
//! ```

use super::request::read_message;
use super::VERSION;
use crate::addr::{write_socks5_addr, TargetAddr};
use crate::error::ProtocolError;
use crate::reader::Reader;
use std::fmt;

/// A SOCKS5 reply code (REP). Unknown codes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyCode {
    /// 0x00 succeeded.
    Succeeded,
    /// 0x01 general SOCKS server failure.
    GeneralFailure,
    /// 0x02 connection not allowed by ruleset.
    NotAllowed,
    /// 0x03 network unreachable.
    NetworkUnreachable,
    /// 0x04 host unreachable (also: name lookup failed).
    HostUnreachable,
    /// 0x05 connection refused.
    ConnectionRefused,
    /// 0x06 TTL expired.
    TtlExpired,
    /// 0x07 command not supported.
    CommandNotSupported,
    /// 0x08 address type not supported.
    AddressTypeNotSupported,
    /// Any other code (0x09..=0xFF, unassigned).
    Unknown(u8),
}

impl ReplyCode {
    /// The wire code.
    pub fn as_u8(self) -> u8 {
        match self {
            ReplyCode::Succeeded => 0x00,
            ReplyCode::GeneralFailure => 0x01,
            ReplyCode::NotAllowed => 0x02,
            ReplyCode::NetworkUnreachable => 0x03,
            ReplyCode::HostUnreachable => 0x04,
            ReplyCode::ConnectionRefused => 0x05,
            ReplyCode::TtlExpired => 0x06,
            ReplyCode::CommandNotSupported => 0x07,
            ReplyCode::AddressTypeNotSupported => 0x08,
            ReplyCode::Unknown(b) => b,
        }
    }

    /// Whether this is [`ReplyCode::Succeeded`].
    pub fn is_success(self) -> bool {
        self == ReplyCode::Succeeded
    }
}

impl From<u8> for ReplyCode {
    fn from(b: u8) -> Self {
        match b {
            0x00 => ReplyCode::Succeeded,
            0x01 => ReplyCode::GeneralFailure,
            0x02 => ReplyCode::NotAllowed,
            0x03 => ReplyCode::NetworkUnreachable,
            0x04 => ReplyCode::HostUnreachable,
            0x05 => ReplyCode::ConnectionRefused,
            0x06 => ReplyCode::TtlExpired,
            0x07 => ReplyCode::CommandNotSupported,
            0x08 => ReplyCode::AddressTypeNotSupported,
            other => ReplyCode::Unknown(other),
        }
    }
}

impl From<ReplyCode> for u8 {
    fn from(c: ReplyCode) -> u8 {
        c.as_u8()
    }
}

/// The RFC 1928 meaning: "succeeded", "general SOCKS server failure", "connection not allowed
/// by ruleset", "network unreachable", "host unreachable", "connection refused", "TTL
/// expired", "command not supported", "address type not supported", "unknown reply code 0x09".
impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplyCode::Succeeded => "succeeded",
            ReplyCode::GeneralFailure => "general SOCKS server failure",
            ReplyCode::NotAllowed => "connection not allowed by ruleset",
            ReplyCode::NetworkUnreachable => "network unreachable",
            ReplyCode::HostUnreachable => "host unreachable",
            ReplyCode::ConnectionRefused => "connection refused",
            ReplyCode::TtlExpired => "TTL expired",
            ReplyCode::CommandNotSupported => "command not supported",
            ReplyCode::AddressTypeNotSupported => "address type not supported",
            ReplyCode::Unknown(b) => return write!(f, "unknown reply code 0x{b:02x}"),
        })
    }
}

/// A SOCKS5 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// REP.
    pub code: ReplyCode,
    /// BND.ADDR and BND.PORT. A domain only in RESOLVE_PTR answers.
    pub bound: TargetAddr,
}

impl Reply {
    /// Decodes a reply from the start of `input` (VER 0x05). `Ok(None)`: incomplete. Errors:
    /// VER not 5, RSV not 0, unknown ATYP, bad domain.
    pub fn decode(input: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
        let mut r = Reader::new(input);
        let Some((code, bound)) = read_message(&mut r)? else {
            return Ok(None);
        };
        Ok(Some((
            Reply {
                code: code.into(),
                bound,
            },
            r.consumed(),
        )))
    }

    /// Appends the reply to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[VERSION, self.code.as_u8(), 0x00]);
        write_socks5_addr(&self.bound, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Malformed;
    use std::net::SocketAddr;

    fn encoded(r: &Reply) -> Vec<u8> {
        let mut out = Vec::new();
        r.encode(&mut out);
        out
    }

    #[test]
    fn success_reply_vector() {
        let bytes = [0x05, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, 0x10, 0xe1];
        let reply = Reply {
            code: ReplyCode::Succeeded,
            bound: TargetAddr::Ip("10.0.0.2:4321".parse::<SocketAddr>().expect("literal")),
        };
        assert_eq!(Reply::decode(&bytes), Ok(Some((reply.clone(), 10))));
        assert_eq!(encoded(&reply), bytes);
        for n in 0..bytes.len() {
            assert_eq!(Reply::decode(&bytes[..n]), Ok(None));
        }
    }

    #[test]
    fn failure_and_resolve_ptr_replies() {
        let refused = [0x05, 0x05, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        let (reply, n) = Reply::decode(&refused).expect("valid").expect("complete");
        assert_eq!((reply.code, n), (ReplyCode::ConnectionRefused, 10));
        assert_eq!(reply.code.to_string(), "connection refused");

        let ptr = b"\x05\x00\x00\x03\x0bexample.com\x00\x00";
        let reply = Reply {
            code: ReplyCode::Succeeded,
            bound: TargetAddr::domain("example.com", 0).expect("valid"),
        };
        assert_eq!(Reply::decode(ptr), Ok(Some((reply.clone(), 18))));
        assert_eq!(encoded(&reply), ptr);
    }

    #[test]
    fn reply_errors() {
        assert_eq!(
            Reply::decode(&[5, 0, 2]),
            Err(Malformed::NonZeroReserved(2).into())
        );
        assert_eq!(
            Reply::decode(&[5, 0, 0, 9]),
            Err(Malformed::UnknownAddressType(9).into())
        );
        assert_eq!(
            Reply::decode(&[0, 0x5a]),
            Err(Malformed::WrongVersion {
                found: 0,
                expected: 5
            }
            .into())
        );
    }

    #[test]
    fn reply_codes_and_meanings() {
        for b in 0..=255u8 {
            assert_eq!(ReplyCode::from(b).as_u8(), b);
        }
        let texts = [
            "succeeded",
            "general SOCKS server failure",
            "connection not allowed by ruleset",
            "network unreachable",
            "host unreachable",
            "connection refused",
            "TTL expired",
            "command not supported",
            "address type not supported",
            "unknown reply code 0x09",
        ];
        for (b, text) in (0u8..).zip(texts) {
            assert_eq!(ReplyCode::from(b).to_string(), text);
        }
        assert!(ReplyCode::Succeeded.is_success());
        assert!(!ReplyCode::Unknown(0x10).is_success());
    }
}
