//! Errors of the SOCKS wire layer, sorted by who is at fault.
//!
//! Following rustls, [`ProtocolError`] groups its variants by fault:
//!
//! - [`Malformed`]: the peer sent bytes that break the wire format.
//! - [`Incompatible`]: well-formed, but asking for something this side or this protocol
//!   version does not support (an unknown SOCKS version, an unsupported command, no common
//!   authentication method, an IPv6 target over SOCKS4).
//! - [`PeerMisbehaved`]: the peer broke the rules of the exchange (a server choosing a method
//!   that was never offered).
//! - [`Denied`]: the peer understood and said no (authentication failed, request rejected).
//! - [`InvalidInput`]: a value supplied by the caller cannot be put on the wire (an empty
//!   domain name, a password of 300 bytes).
//!
//! Every error knows the SOCKS5 reply the peer should get, see [`ProtocolError::reply_code`].
//! This module owns no I/O errors: the caller that does the I/O has its own error type.

use crate::v4::V4ReplyCode;
use crate::v5::{AuthMethod, Command, ReplyCode};
use std::fmt;

/// The SOCKS protocol version a client speaks. `V4` covers SOCKS4a too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// SOCKS4 or SOCKS4a (first byte 0x04).
    V4,
    /// SOCKS5, RFC 1928 (first byte 0x05).
    V5,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V4 => "SOCKS4",
            Version::V5 => "SOCKS5",
        })
    }
}

/// Any failure of the SOCKS wire layer: decoding, encoding or a handshake machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The peer sent bytes that break the wire format.
    #[error(transparent)]
    Malformed(#[from] Malformed),
    /// The peer asks for something this side or this protocol version does not support.
    #[error(transparent)]
    Incompatible(#[from] Incompatible),
    /// The peer broke the rules of the exchange.
    #[error(transparent)]
    PeerMisbehaved(#[from] PeerMisbehaved),
    /// The peer understood the request and refused it.
    #[error(transparent)]
    Denied(#[from] Denied),
    /// A value supplied by the caller cannot be put on the wire.
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    /// A handshake machine method was called in a state where it makes no sense, such as
    /// `reply()` before any request arrived. The caller's bug, never the peer's.
    #[error("handshake method called out of order: {0}")]
    InvalidState(&'static str),
}

/// Bytes from the peer that break the wire format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// A message's version byte is not the one this message must carry (for example a SOCKS5
    /// request after a SOCKS5 greeting that starts with 0x04, or a SOCKS4 reply with VN 0x07).
    #[error("version byte 0x{found:02x}, expected 0x{expected:02x}")]
    WrongVersion {
        /// The byte received.
        found: u8,
        /// The byte this message must carry.
        expected: u8,
    },
    /// A SOCKS5 greeting announcing zero methods (RFC 1928: NMETHODS is 1..255).
    #[error("SOCKS5 greeting with NMETHODS 0")]
    NoMethods,
    /// A domain name whose length byte is 0, or an empty SOCKS4a name.
    #[error("domain name of length 0")]
    EmptyDomain,
    /// A domain name containing a NUL byte. Never cut at the NUL: `good.example\0evil` is
    /// not `good.example`.
    #[error("domain name contains a NUL byte at offset {offset}")]
    DomainContainsNul {
        /// Offset of the first NUL inside the name.
        offset: usize,
    },
    /// An ATYP byte other than 0x01 (IPv4), 0x03 (domain) and 0x04 (IPv6).
    #[error("unknown address type 0x{0:02x}")]
    UnknownAddressType(u8),
    /// The RSV byte of a SOCKS5 request or reply is not 0.
    #[error("reserved byte is 0x{0:02x}, must be 0")]
    NonZeroReserved(u8),
    /// The two RSV bytes of a SOCKS5 UDP datagram header are not 0.
    #[error("UDP reserved field is 0x{0:04x}, must be 0")]
    NonZeroUdpReserved(u16),
    /// A UDP datagram too short to hold its SOCKS5 header. A datagram is whole: there is no
    /// "more bytes later".
    #[error("SOCKS5 UDP datagram of {len} bytes is shorter than its header")]
    UdpDatagramTooShort {
        /// The datagram's length.
        len: usize,
    },
    /// No NUL within the first 256 bytes of a SOCKS4 user id.
    #[error("SOCKS4 user id longer than 255 bytes without NUL")]
    V4UserIdTooLong,
    /// No NUL within the first 256 bytes of a SOCKS4a domain name.
    #[error("SOCKS4a domain name longer than 255 bytes without NUL")]
    V4DomainTooLong,
    /// An RFC 1929 message whose VER is not 0x01.
    #[error("wrong sub-negotiation version 0x{0:02x}, expected 0x01")]
    WrongSubnegotiationVersion(u8),
    /// An RFC 1929 request with ULEN 0.
    #[error("RFC 1929 username of length 0")]
    EmptyUsername,
    /// An RFC 1929 request with PLEN 0.
    #[error("RFC 1929 password of length 0")]
    EmptyPassword,
}

/// Well-formed input asking for something unsupported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Incompatible {
    /// The first byte of a connection is neither 0x04 nor 0x05.
    #[error("unsupported SOCKS version 0x{0:02x}")]
    UnsupportedVersion(u8),
    /// A command this side does not implement, or one the protocol version cannot carry
    /// (UDP ASSOCIATE over SOCKS4).
    #[error("{command} is not supported over {version}")]
    UnsupportedCommand {
        /// The protocol version in use.
        version: Version,
        /// The command requested.
        command: Command,
    },
    /// The server answered the greeting with 0xFF: it accepts none of the offered methods.
    #[error("the server accepts none of the offered authentication methods")]
    NoAcceptableMethod,
}

/// The peer broke the rules of the exchange.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerMisbehaved {
    /// The server chose an authentication method the client never offered.
    #[error("the server chose {0}, which was not offered")]
    UnofferedMethod(AuthMethod),
}

/// The peer understood and refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denied {
    /// The server answered the RFC 1929 sub-negotiation with a non-zero status.
    #[error("authentication failed (status 0x{status:02x})")]
    AuthenticationFailed {
        /// The STATUS byte received.
        status: u8,
    },
    /// The server answered the request with a failure reply.
    #[error("request rejected: {code}")]
    Rejected {
        /// The reply code; for SOCKS4 the closest SOCKS5 code (see
        /// [`V4ReplyCode::to_reply_code`]).
        code: ReplyCode,
        /// For SOCKS4 the raw reply code received.
        v4_code: Option<V4ReplyCode>,
    },
}

/// A value supplied by the caller that cannot be put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// An empty domain name.
    #[error("domain name of length 0")]
    EmptyDomain,
    /// A domain name longer than 255 bytes; never truncated.
    #[error("domain name of {0} bytes, longer than 255")]
    DomainTooLong(usize),
    /// A domain name with a NUL byte inside.
    #[error("domain name contains a NUL byte at offset {offset}")]
    DomainContainsNul {
        /// Offset of the first NUL.
        offset: usize,
    },
    /// A username that is empty or longer than 255 bytes (RFC 1929: 1..=255).
    #[error("username of {0} bytes, must be 1..=255")]
    UsernameLength(usize),
    /// A password that is empty or longer than 255 bytes (RFC 1929: 1..=255).
    #[error("password of {0} bytes, must be 1..=255")]
    PasswordLength(usize),
    /// A SOCKS5 greeting with no methods or more than 255.
    #[error("greeting with {0} methods, must be 1..=255")]
    MethodCount(usize),
    /// A SOCKS4 user id longer than 255 bytes.
    #[error("SOCKS4 user id of {0} bytes, longer than 255")]
    V4UserIdTooLong(usize),
    /// A SOCKS4 user id with a NUL byte inside (the NUL terminates it on the wire).
    #[error("SOCKS4 user id contains a NUL byte")]
    V4UserIdContainsNul,
    /// SOCKS4 and SOCKS4a carry only IPv4 addresses.
    #[error("SOCKS4 cannot carry an IPv6 address")]
    V4Ipv6Address,
    /// An IPv4 address 0.0.0.x with x != 0: on the SOCKS4 wire it means "a SOCKS4a domain
    /// name follows", so it cannot be sent as an address.
    #[error("{0} is the SOCKS4a domain marker and cannot be a SOCKS4 target")]
    V4aMarkerAddress(std::net::Ipv4Addr),
    /// Plain SOCKS4 carries no domain names; SOCKS4a does.
    #[error("SOCKS4 cannot carry a domain name (SOCKS4a can)")]
    V4Domain,
    /// RESOLVE asks the server to look up a name, so its target must be a domain name.
    #[error("RESOLVE needs a domain name target")]
    ResolveNeedsDomain,
    /// RESOLVE_PTR asks for the name of an address, so its target must be an IP address, and
    /// SOCKS4 cannot carry the answer.
    #[error("RESOLVE_PTR needs an IP address target over SOCKS5")]
    ResolvePtrNeedsIpOverV5,
    /// A command the chosen protocol version cannot carry.
    #[error("{command} cannot be sent over {version}")]
    UnsupportedCommand {
        /// The protocol version chosen.
        version: Version,
        /// The command.
        command: Command,
    },
}

impl ProtocolError {
    /// The SOCKS5 reply the peer should get for this error, or `None` when no reply is
    /// possible or meaningful (a broken greeting, an unknown version, an error on our side).
    ///
    /// Request-phase problems map as RFC 1928 suggests: an unknown ATYP to
    /// [`ReplyCode::AddressTypeNotSupported`], an unsupported command to
    /// [`ReplyCode::CommandNotSupported`], other malformed requests to
    /// [`ReplyCode::GeneralFailure`]. A SOCKS4 peer gets 0x5B for any of them.
    pub fn reply_code(&self) -> Option<ReplyCode> {
        match self {
            ProtocolError::Malformed(m) => match m {
                Malformed::UnknownAddressType(_) => Some(ReplyCode::AddressTypeNotSupported),
                Malformed::WrongVersion { .. }
                | Malformed::EmptyDomain
                | Malformed::DomainContainsNul { .. }
                | Malformed::NonZeroReserved(_)
                | Malformed::V4UserIdTooLong
                | Malformed::V4DomainTooLong => Some(ReplyCode::GeneralFailure),
                // Greeting and sub-negotiation errors: no reply form exists for them yet.
                // UDP datagrams are dropped, never answered.
                Malformed::NoMethods
                | Malformed::WrongSubnegotiationVersion(_)
                | Malformed::EmptyUsername
                | Malformed::EmptyPassword
                | Malformed::NonZeroUdpReserved(_)
                | Malformed::UdpDatagramTooShort { .. } => None,
            },
            ProtocolError::Incompatible(i) => match i {
                Incompatible::UnsupportedCommand { .. } => Some(ReplyCode::CommandNotSupported),
                Incompatible::UnsupportedVersion(_) | Incompatible::NoAcceptableMethod => None,
            },
            ProtocolError::PeerMisbehaved(_)
            | ProtocolError::Denied(_)
            | ProtocolError::InvalidInput(_)
            | ProtocolError::InvalidState(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_precisely_what_was_wrong() {
        let cases: [(ProtocolError, &str); 8] = [
            (
                Malformed::NoMethods.into(),
                "SOCKS5 greeting with NMETHODS 0",
            ),
            (Malformed::EmptyDomain.into(), "domain name of length 0"),
            (
                Malformed::UnknownAddressType(7).into(),
                "unknown address type 0x07",
            ),
            (
                Malformed::NonZeroReserved(1).into(),
                "reserved byte is 0x01, must be 0",
            ),
            (
                Malformed::V4UserIdTooLong.into(),
                "SOCKS4 user id longer than 255 bytes without NUL",
            ),
            (
                Malformed::WrongSubnegotiationVersion(5).into(),
                "wrong sub-negotiation version 0x05, expected 0x01",
            ),
            (
                Incompatible::UnsupportedVersion(0x47).into(),
                "unsupported SOCKS version 0x47",
            ),
            (
                Incompatible::UnsupportedCommand {
                    version: Version::V5,
                    command: Command::Unknown(9),
                }
                .into(),
                "unknown command 0x09 is not supported over SOCKS5",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
    }

    #[test]
    fn each_error_knows_the_reply_the_peer_gets() {
        let reply = |e: ProtocolError| e.reply_code();
        assert_eq!(
            reply(Malformed::UnknownAddressType(7).into()),
            Some(ReplyCode::AddressTypeNotSupported)
        );
        assert_eq!(
            reply(
                Incompatible::UnsupportedCommand {
                    version: Version::V5,
                    command: Command::Unknown(9)
                }
                .into()
            ),
            Some(ReplyCode::CommandNotSupported)
        );
        assert_eq!(
            reply(Malformed::NonZeroReserved(1).into()),
            Some(ReplyCode::GeneralFailure)
        );
        assert_eq!(reply(Malformed::NoMethods.into()), None);
        assert_eq!(reply(Incompatible::UnsupportedVersion(0x47).into()), None);
        assert_eq!(reply(ProtocolError::InvalidState("x")), None);
    }
}
