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

use crate::error::{InvalidInput, Malformed, ProtocolError};
use crate::reader::Reader;
use std::fmt;

/// The longest username or password RFC 1929 can carry.
const MAX_LEN: usize = 255;

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
        let (username, password) = (username.into(), password.into());
        if !(1..=MAX_LEN).contains(&username.len()) {
            return Err(InvalidInput::UsernameLength(username.len()).into());
        }
        if !(1..=MAX_LEN).contains(&password.len()) {
            return Err(InvalidInput::PasswordLength(password.len()).into());
        }
        Ok(Credentials { username, password })
    }

    /// The username's bytes.
    pub fn username(&self) -> &[u8] {
        &self.username
    }

    /// The password's bytes. Compare them in constant time.
    pub fn password(&self) -> &[u8] {
        &self.password
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &String::from_utf8_lossy(&self.username))
            .field("password", &format_args!("***"))
            .finish()
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
        let mut r = Reader::new(input);
        let Some(ver) = r.u8() else { return Ok(None) };
        if ver != SUBNEGOTIATION_VERSION {
            return Err(Malformed::WrongSubnegotiationVersion(ver).into());
        }
        let Some(ulen) = r.u8() else { return Ok(None) };
        if ulen == 0 {
            return Err(Malformed::EmptyUsername.into());
        }
        let Some(username) = r.take(usize::from(ulen)) else {
            return Ok(None);
        };
        let Some(plen) = r.u8() else { return Ok(None) };
        if plen == 0 {
            return Err(Malformed::EmptyPassword.into());
        }
        let Some(password) = r.take(usize::from(plen)) else {
            return Ok(None);
        };
        let credentials = Credentials {
            username: username.to_vec(),
            password: password.to_vec(),
        };
        Ok(Some((AuthRequest { credentials }, r.consumed())))
    }

    /// Appends the request to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let Credentials { username, password } = &self.credentials;
        out.push(SUBNEGOTIATION_VERSION);
        for field in [username, password] {
            out.push(u8::try_from(field.len()).expect("Credentials fields are at most 255 bytes"));
            out.extend_from_slice(field);
        }
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
        self.0 == 0
    }

    /// Decodes a status message. `Ok(None)`: incomplete. Error: VER not 0x01.
    pub fn decode(input: &[u8]) -> Result<Option<(AuthStatus, usize)>, ProtocolError> {
        let mut r = Reader::new(input);
        let Some(ver) = r.u8() else { return Ok(None) };
        if ver != SUBNEGOTIATION_VERSION {
            return Err(Malformed::WrongSubnegotiationVersion(ver).into());
        }
        let Some(status) = r.u8() else {
            return Ok(None);
        };
        Ok(Some((AuthStatus(status), r.consumed())))
    }

    /// Appends the status message to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[SUBNEGOTIATION_VERSION, self.0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_vector() {
        let bytes = [0x01, 0x03, b'f', b'o', b'o', 0x03, b'b', b'a', b'r'];
        let req = AuthRequest {
            credentials: Credentials::new("foo", "bar").expect("valid"),
        };
        assert_eq!(AuthRequest::decode(&bytes), Ok(Some((req.clone(), 9))));
        let mut out = Vec::new();
        req.encode(&mut out);
        assert_eq!(out, bytes);
        for n in 0..bytes.len() {
            assert_eq!(AuthRequest::decode(&bytes[..n]), Ok(None));
        }
    }

    #[test]
    fn request_errors() {
        assert_eq!(
            AuthRequest::decode(&[0x05, 0x01, 0x00]),
            Err(Malformed::WrongSubnegotiationVersion(5).into())
        );
        assert_eq!(
            AuthRequest::decode(&[0x01, 0x00]),
            Err(Malformed::EmptyUsername.into())
        );
        assert_eq!(
            AuthRequest::decode(&[0x01, 0x01, b'u', 0x00]),
            Err(Malformed::EmptyPassword.into())
        );
    }

    #[test]
    fn nul_bytes_are_kept_not_cut() {
        let bytes = [0x01, 0x03, b'a', 0, b'b', 0x02, 0, 0];
        let (req, _) = AuthRequest::decode(&bytes)
            .expect("valid")
            .expect("complete");
        assert_eq!(req.credentials.username(), b"a\0b");
        assert_eq!(req.credentials.password(), b"\0\0");
    }

    #[test]
    fn credentials_are_validated_and_debug_hides_the_password() {
        let c = Credentials::new("alice", "hunter2").expect("valid");
        let debug = format!("{c:?}");
        assert_eq!(debug, "Credentials { username: \"alice\", password: *** }");
        assert_eq!(
            Credentials::new("", "p"),
            Err(InvalidInput::UsernameLength(0).into())
        );
        assert_eq!(
            Credentials::new("u", ""),
            Err(InvalidInput::PasswordLength(0).into())
        );
        assert_eq!(
            Credentials::new(vec![b'u'; 256], "p"),
            Err(InvalidInput::UsernameLength(256).into())
        );
        assert_eq!(
            Credentials::new("u", vec![b'p'; 256]),
            Err(InvalidInput::PasswordLength(256).into())
        );
        assert!(Credentials::new(vec![b'u'; 255], vec![b'p'; 255]).is_ok());
    }

    #[test]
    fn status_vectors() {
        assert_eq!(
            AuthStatus::decode(&[1, 0]),
            Ok(Some((AuthStatus::SUCCESS, 2)))
        );
        assert_eq!(
            AuthStatus::decode(&[1, 0x7f, 5]),
            Ok(Some((AuthStatus(0x7f), 2)))
        );
        assert_eq!(AuthStatus::decode(&[1]), Ok(None));
        assert_eq!(
            AuthStatus::decode(&[5, 0]),
            Err(Malformed::WrongSubnegotiationVersion(5).into())
        );
        assert!(AuthStatus::SUCCESS.is_success() && !AuthStatus::FAILURE.is_success());
        let mut out = Vec::new();
        AuthStatus::FAILURE.encode(&mut out);
        assert_eq!(out, [1, 1]);
    }
}
