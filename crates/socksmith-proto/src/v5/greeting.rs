//! The SOCKS5 greeting and the server's method choice (RFC 1928, section 3).
//!
//! ```text
//! greeting:  +-----+----------+----------+      choice:  +-----+--------+
//!            | VER | NMETHODS | METHODS  |               | VER | METHOD |
//!            +-----+----------+----------+               +-----+--------+
//!            |  1  |    1     | 1 to 255 |               |  1  |   1    |
//! ```

use crate::error::ProtocolError;
use std::fmt;

/// An authentication method code. Unknown codes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// 0x00, no authentication required.
    NoAuth,
    /// 0x01, GSSAPI (RFC 1961). Never chosen by socksmith's server.
    Gssapi,
    /// 0x02, username/password (RFC 1929).
    UsernamePassword,
    /// 0xFF, "no acceptable methods": the server refuses every offered method.
    NoAcceptable,
    /// Any other code (0x03..=0x7F IANA-assigned, 0x80..=0xFE private).
    Other(u8),
}

impl AuthMethod {
    /// The wire code.
    pub fn as_u8(self) -> u8 {
        todo!()
    }
}

impl From<u8> for AuthMethod {
    fn from(b: u8) -> Self {
        todo!()
    }
}

impl From<AuthMethod> for u8 {
    fn from(m: AuthMethod) -> u8 {
        m.as_u8()
    }
}

/// The method's name: "no authentication", "GSSAPI", "username/password",
/// "no acceptable methods", "method 0x80".
impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!()
    }
}

/// The client's first message: the methods it can authenticate with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// The offered methods, in the client's order (1..=255 of them).
    pub methods: Vec<AuthMethod>,
}

impl Greeting {
    /// Decodes a greeting from the start of `input` (the VER byte).
    ///
    /// `Ok(None)`: incomplete. `Ok(Some((greeting, consumed)))`: bytes after `consumed` are
    /// not part of it. NMETHODS 0 is an error.
    pub fn decode(input: &[u8]) -> Result<Option<(Greeting, usize)>, ProtocolError> {
        todo!()
    }

    /// Appends the greeting to `out`. Fails when `methods` is empty or longer than 255.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        todo!()
    }
}

/// The server's answer to the greeting: the chosen method, or
/// [`AuthMethod::NoAcceptable`] before closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodChoice {
    /// The chosen method.
    pub method: AuthMethod,
}

impl MethodChoice {
    /// The length of a method choice on the wire.
    pub const LEN: usize = 2;

    /// Decodes a method choice. `Ok(None)`: incomplete.
    pub fn decode(input: &[u8]) -> Result<Option<(MethodChoice, usize)>, ProtocolError> {
        todo!()
    }

    /// Appends the method choice to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        todo!()
    }
}
