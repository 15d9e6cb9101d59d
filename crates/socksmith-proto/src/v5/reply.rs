//! The SOCKS5 reply (RFC 1928, section 6) and its reply codes.
//!
//! ```text
//! +-----+-----+-------+------+----------+----------+
//! | VER | REP |  RSV  | ATYP | BND.ADDR | BND.PORT |
//! +-----+-----+-------+------+----------+----------+
//! |  1  |  1  | X'00' |  1   | Variable |    2     |
//! ```

use crate::addr::TargetAddr;
use crate::error::ProtocolError;
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
        todo!()
    }

    /// Whether this is [`ReplyCode::Succeeded`].
    pub fn is_success(self) -> bool {
        todo!()
    }
}

impl From<u8> for ReplyCode {
    fn from(b: u8) -> Self {
        todo!()
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
        todo!()
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
        todo!()
    }

    /// Appends the reply to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        todo!()
    }
}
