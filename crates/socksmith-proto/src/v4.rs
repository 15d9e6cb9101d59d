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

use crate::addr::TargetAddr;
use crate::error::ProtocolError;
use crate::v5::{Command, ReplyCode};
use std::fmt;
use std::net::SocketAddrV4;

/// The SOCKS4 request version byte.
pub const VERSION: u8 = 0x04;

/// The longest user id or SOCKS4a domain name accepted before its NUL, in bytes.
pub const MAX_FIELD_LEN: usize = 255;

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
        todo!()
    }

    /// Appends the request to `out`, in SOCKS4a form when the target is a domain name.
    ///
    /// Fails when the target is IPv6, the command is UDP ASSOCIATE, or the user id is longer
    /// than 255 bytes or contains a NUL.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        todo!()
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
        todo!()
    }

    /// The SOCKS4 code for a SOCKS5 reply code: `Succeeded` is `Granted`, anything else
    /// `Rejected`.
    pub fn from_reply_code(code: ReplyCode) -> Self {
        todo!()
    }

    /// The closest SOCKS5 code: `Granted` is `Succeeded`, the identd codes are
    /// `NotAllowed`, anything else `GeneralFailure`.
    pub fn to_reply_code(self) -> ReplyCode {
        todo!()
    }
}

impl From<u8> for V4ReplyCode {
    fn from(b: u8) -> Self {
        todo!()
    }
}

/// The meaning: "request granted", "request rejected or failed", "rejected: identd
/// unreachable", "rejected: identd reports a different user id", "unknown SOCKS4 reply code 0x00".
impl fmt::Display for V4ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!()
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
        todo!()
    }

    /// Appends the reply to `out`, with VN 0x00.
    pub fn encode(&self, out: &mut Vec<u8>) {
        todo!()
    }
}
