//! The header of a SOCKS5 UDP datagram (RFC 1928, section 7).
//!
//! ```text
//! +-----+------+------+----------+----------+----------+
//! | RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
//! +-----+------+------+----------+----------+----------+
//! |  2  |  1   |  1   | Variable |    2     | Variable |
//! ```
//!
//! A datagram arrives whole, so unlike the stream messages, a short datagram is an error.

use crate::addr::TargetAddr;
use crate::error::ProtocolError;

/// The header in front of every datagram relayed through a UDP association.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpHeader {
    /// FRAG: 0 for a standalone datagram. Relays may drop datagrams with FRAG != 0.
    pub frag: u8,
    /// DST.ADDR and DST.PORT: the destination (client to relay) or the source (relay to
    /// client).
    pub target: TargetAddr,
}

impl UdpHeader {
    /// Decodes the header at the start of a whole datagram and returns it with its length;
    /// the payload is `&datagram[len..]`.
    ///
    /// Errors: RSV not 0, unknown ATYP, bad domain, and a datagram too short for its header.
    pub fn decode(datagram: &[u8]) -> Result<(UdpHeader, usize), ProtocolError> {
        todo!()
    }

    /// Appends the header to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        todo!()
    }

    /// A whole datagram: this header followed by `payload`.
    pub fn wrap(&self, payload: &[u8]) -> Vec<u8> {
        todo!()
    }
}
