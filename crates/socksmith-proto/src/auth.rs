//! Username/password authentication for SOCKS5 (RFC 1929).
//!
//! ```text
//! request:  +-----+------+----------+------+----------+   status:  +-----+--------+
//!           | VER | ULEN |  UNAME   | PLEN |  PASSWD  |            | VER | STATUS |
//!           +-----+------+----------+------+----------+            +-----+--------+
//!           |  1  |  1   | 1 to 255 |  1   | 1 to 255 |            |  1  |   1    |
//! ```
//!
//! VER is 0x01 (the sub-negotiation version), not 0x05. STATUS 0x00 is success; anything else
//! is failure, after which the server MUST close. Checking the credentials is the caller's job
//! (in constant time); this module only carries them and never prints the password.

use crate::error::ProtocolError;
use std::fmt;

/// The RFC 1929 sub-negotiation version byte.
pub const SUBNEGOTIATION_VERSION: u8 = 0x01;

/// A username and password, each 1..=255 arbitrary bytes (NUL included: they are length
/// prefixed, not C strings).
///
/// `Debug` prints the username and `***` for the password.
///
/// ```
/// use socksmith_proto::Credentials;
/// let c = Credentials::new("alice", "s3cret").unwrap();
/// assert_eq!(c.username(), b"alice");
/// assert!(!format!("{c:?}").contains("s3cret"));
/// assert!(Credentials::new("", "x").is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    username: Vec<u8>,
    password: Vec<u8>,
}

impl Credentials {
    /// Validates and wraps a username and password (each 1..=255 bytes).
    pub fn new(
        username: impl Into<Vec<u8>>,
        password: impl Into<Vec<u8>>,
    ) -> Result<Self, ProtocolError> {
        todo!()
    }

    /// The username's bytes.
    pub fn username(&self) -> &[u8] {
        todo!()
    }

    /// The password's bytes. Compare them in constant time.
    pub fn password(&self) -> &[u8] {
        todo!()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!()
    }
}

/// The client's RFC 1929 request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    /// UNAME and PASSWD.
    pub credentials: Credentials,
}

impl AuthRequest {
    /// Decodes a request from the start of `input` (VER 0x01). `Ok(None)`: incomplete.
    /// Errors: VER not 0x01 ("wrong sub-negotiation version"), ULEN or PLEN 0.
    pub fn decode(input: &[u8]) -> Result<Option<(AuthRequest, usize)>, ProtocolError> {
        todo!()
    }

    /// Appends the request to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        todo!()
    }
}

/// The server's RFC 1929 answer: STATUS, 0x00 for success. The raw byte is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthStatus(pub u8);

impl AuthStatus {
    /// Status 0x00.
    pub const SUCCESS: AuthStatus = AuthStatus(0x00);
    /// Status 0x01, the customary failure value.
    pub const FAILURE: AuthStatus = AuthStatus(0x01);
    /// The length of a status message on the wire.
    pub const LEN: usize = 2;

    /// Whether the status is 0x00.
    pub fn is_success(self) -> bool {
        todo!()
    }

    /// Decodes a status message. `Ok(None)`: incomplete. Error: VER not 0x01.
    pub fn decode(input: &[u8]) -> Result<Option<(AuthStatus, usize)>, ProtocolError> {
        todo!()
    }

    /// Appends the status message to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        todo!()
    }
}
