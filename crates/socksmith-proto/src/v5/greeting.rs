//! The SOCKS5 greeting and the server's method choice (RFC 1928, section 3).
//!
//! ```text
//! greeting:  +-----+----------+----------+      choice:  +-----+--------+
//!            | VER | NMETHODS | METHODS  |               | VER | METHOD |
//!            +-----+----------+----------+               +-----+--------+
//!            |  1  |    1     | 1 to 255 |               |  1  |   1    |
//! ```

use super::VERSION;
use crate::error::{InvalidInput, Malformed, ProtocolError};
use crate::reader::Reader;
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
        match self {
            AuthMethod::NoAuth => 0x00,
            AuthMethod::Gssapi => 0x01,
            AuthMethod::UsernamePassword => 0x02,
            AuthMethod::NoAcceptable => 0xFF,
            AuthMethod::Other(b) => b,
        }
    }
}

impl From<u8> for AuthMethod {
    fn from(b: u8) -> Self {
        match b {
            0x00 => AuthMethod::NoAuth,
            0x01 => AuthMethod::Gssapi,
            0x02 => AuthMethod::UsernamePassword,
            0xFF => AuthMethod::NoAcceptable,
            other => AuthMethod::Other(other),
        }
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
        match self {
            AuthMethod::NoAuth => f.write_str("no authentication"),
            AuthMethod::Gssapi => f.write_str("GSSAPI"),
            AuthMethod::UsernamePassword => f.write_str("username/password"),
            AuthMethod::NoAcceptable => f.write_str("no acceptable methods"),
            AuthMethod::Other(b) => write!(f, "method 0x{b:02x}"),
        }
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
        let mut r = Reader::new(input);
        if !r.version(VERSION)? {
            return Ok(None);
        }
        let Some(n) = r.u8() else { return Ok(None) };
        // RFC 1928: "The NMETHODS field contains the number of method identifier octets that
        // appear in the METHODS field"; a greeting offering nothing cannot be answered.
        if n == 0 {
            return Err(Malformed::NoMethods.into());
        }
        let Some(methods) = r.take(usize::from(n)) else {
            return Ok(None);
        };
        let methods = methods.iter().copied().map(AuthMethod::from).collect();
        Ok(Some((Greeting { methods }, r.consumed())))
    }

    /// Appends the greeting to `out`. Fails when `methods` is empty or longer than 255.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let n = u8::try_from(self.methods.len())
            .ok()
            .filter(|&n| n > 0)
            .ok_or(InvalidInput::MethodCount(self.methods.len()))?;
        out.extend_from_slice(&[VERSION, n]);
        out.extend(self.methods.iter().map(|m| m.as_u8()));
        Ok(())
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
        let mut r = Reader::new(input);
        if !r.version(VERSION)? {
            return Ok(None);
        }
        let Some(method) = r.u8() else {
            return Ok(None);
        };
        Ok(Some((
            MethodChoice {
                method: method.into(),
            },
            r.consumed(),
        )))
    }

    /// Appends the method choice to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[VERSION, self.method.as_u8()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_vectors() {
        let g = Greeting {
            methods: vec![AuthMethod::NoAuth],
        };
        assert_eq!(Greeting::decode(&[5, 1, 0]), Ok(Some((g.clone(), 3))));
        let mut out = Vec::new();
        g.encode(&mut out).expect("one method");
        assert_eq!(out, [5, 1, 0]);

        let g = Greeting::decode(&[5, 3, 0, 2, 0x80, 0xAA]).expect("valid");
        let methods = vec![
            AuthMethod::NoAuth,
            AuthMethod::UsernamePassword,
            AuthMethod::Other(0x80),
        ];
        assert_eq!(g, Some((Greeting { methods }, 5)), "0xAA is not part of it");
    }

    #[test]
    fn greeting_incomplete_and_errors() {
        for prefix in [&[][..], &[5], &[5, 2], &[5, 2, 0]] {
            assert_eq!(Greeting::decode(prefix), Ok(None));
        }
        assert_eq!(Greeting::decode(&[5, 0]), Err(Malformed::NoMethods.into()));
        assert_eq!(
            Greeting::decode(&[4, 1, 0]),
            Err(Malformed::WrongVersion {
                found: 4,
                expected: 5
            }
            .into())
        );
        let mut out = Vec::new();
        let empty = Greeting { methods: vec![] };
        assert_eq!(
            empty.encode(&mut out),
            Err(InvalidInput::MethodCount(0).into())
        );
        let many = Greeting {
            methods: vec![AuthMethod::NoAuth; 256],
        };
        assert_eq!(
            many.encode(&mut out),
            Err(InvalidInput::MethodCount(256).into())
        );
        assert!(out.is_empty(), "nothing written on error");
    }

    #[test]
    fn method_choice_vectors() {
        let c = MethodChoice {
            method: AuthMethod::UsernamePassword,
        };
        assert_eq!(MethodChoice::decode(&[5, 2, 9]), Ok(Some((c, 2))));
        let mut out = Vec::new();
        c.encode(&mut out);
        assert_eq!(out, [5, 2]);
        assert_eq!(
            MethodChoice::decode(&[5, 0xFF]),
            Ok(Some((
                MethodChoice {
                    method: AuthMethod::NoAcceptable
                },
                2
            )))
        );
        assert_eq!(MethodChoice::decode(&[5]), Ok(None));
        assert_eq!(
            MethodChoice::decode(&[1, 0]),
            Err(Malformed::WrongVersion {
                found: 1,
                expected: 5
            }
            .into())
        );
    }

    #[test]
    fn auth_method_codes_round_trip() {
        for b in 0..=255u8 {
            assert_eq!(AuthMethod::from(b).as_u8(), b);
        }
        assert_eq!(
            AuthMethod::NoAcceptable.to_string(),
            "no acceptable methods"
        );
        assert_eq!(AuthMethod::Other(0x80).to_string(), "method 0x80");
    }
}
