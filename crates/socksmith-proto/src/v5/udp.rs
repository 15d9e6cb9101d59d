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

use crate::addr::{read_socks5_addr, write_socks5_addr, TargetAddr};
use crate::error::{Malformed, ProtocolError};
use crate::reader::Reader;

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
        let short = || -> ProtocolError {
            Malformed::UdpDatagramTooShort {
                len: datagram.len(),
            }
            .into()
        };
        let mut r = Reader::new(datagram);
        let rsv = r.u16().ok_or_else(short)?;
        if rsv != 0 {
            return Err(Malformed::NonZeroUdpReserved(rsv).into());
        }
        let frag = r.u8().ok_or_else(short)?;
        let target = read_socks5_addr(&mut r)?.ok_or_else(short)?;
        Ok((UdpHeader { frag, target }, r.consumed()))
    }

    /// Appends the header to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0x00, 0x00, self.frag]);
        write_socks5_addr(&self.target, out);
    }

    /// A whole datagram: this header followed by `payload`.
    pub fn wrap(&self, payload: &[u8]) -> Vec<u8> {
        // 2 + 1 + ATYP + 16 (IPv6) + 2; domains grow the vector once.
        let mut out = Vec::with_capacity(22 + payload.len());
        self.encode(&mut out);
        out.extend_from_slice(payload);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn ipv4_datagram_vector() {
        let dgram = [
            0x00, 0x00, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01, 0x00, 0x35, b'h', b'i',
        ];
        let header = UdpHeader {
            frag: 0,
            target: TargetAddr::Ip("127.0.0.1:53".parse::<SocketAddr>().expect("literal")),
        };
        let (decoded, len) = UdpHeader::decode(&dgram).expect("valid");
        assert_eq!((&decoded, len), (&header, 10));
        assert_eq!(&dgram[len..], b"hi");
        assert_eq!(header.wrap(b"hi"), dgram);
    }

    #[test]
    fn domain_datagram_with_frag() {
        let dgram = b"\x00\x00\x02\x03\x0bexample.com\x00\x35";
        let (h, len) = UdpHeader::decode(dgram).expect("valid");
        assert_eq!(h.frag, 2);
        assert_eq!(
            h.target,
            TargetAddr::domain("example.com", 53).expect("valid")
        );
        assert_eq!(len, dgram.len(), "empty payload");
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(out, dgram);
    }

    #[test]
    fn short_datagrams_are_errors_not_incomplete() {
        let dgram = [0x00, 0x00, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01, 0x00, 0x35];
        for n in 0..dgram.len() {
            assert_eq!(
                UdpHeader::decode(&dgram[..n]),
                Err(Malformed::UdpDatagramTooShort { len: n }.into())
            );
        }
    }

    #[test]
    fn udp_header_errors() {
        assert_eq!(
            UdpHeader::decode(&[0x00, 0x01, 0x00, 0x01, 1, 2, 3, 4, 0, 0]),
            Err(Malformed::NonZeroUdpReserved(1).into())
        );
        assert_eq!(
            UdpHeader::decode(&[0, 0, 0, 0x05, 1, 2, 3, 4, 0, 0]),
            Err(Malformed::UnknownAddressType(5).into())
        );
        assert_eq!(
            UdpHeader::decode(&[0, 0, 0, 0x03, 0, 0, 0]),
            Err(Malformed::EmptyDomain.into())
        );
    }
}
