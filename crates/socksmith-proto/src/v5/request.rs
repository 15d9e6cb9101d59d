//! The SOCKS5 request (RFC 1928, section 4) and the command codes shared with SOCKS4.
//!
//! ```text
//! +-----+-----+-------+------+----------+----------+
//! | VER | CMD |  RSV  | ATYP | DST.ADDR | DST.PORT |
//! +-----+-----+-------+------+----------+----------+
//! |  1  |  1  | X'00' |  1   | Variable |    2     |
//! ```

use crate::addr::TargetAddr;
use crate::error::ProtocolError;
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
        todo!()
    }

    /// The command for a SOCKS4 CD byte: like `From<u8>`, but 3 is `Unknown(3)` because
    /// SOCKS4 has no UDP ASSOCIATE.
    pub fn from_v4(b: u8) -> Self {
        todo!()
    }
}

/// The SOCKS5 meaning of the code.
impl From<u8> for Command {
    fn from(b: u8) -> Self {
        todo!()
    }
}

/// The command's name: "CONNECT", "BIND", "UDP ASSOCIATE", "RESOLVE", "RESOLVE_PTR",
/// "unknown command 0x09".
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!()
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
        todo!()
    }

    /// Appends the request to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        todo!()
    }
}
