//! Who may use the server: the [`Authenticator`] seam and [`Users`], an in-memory table of
//! RFC 1929 usernames and passwords.
//!
//! Passwords are compared in constant time: both sides are padded to the protocol's maximum
//! of 255 bytes and compared whole with `subtle`, together with their lengths, so neither the
//! content nor the length of the stored password leaks through timing; an unknown user costs
//! the same comparison against a dummy secret. The trait is asynchronous so that an
//! authenticator can verify slow password hashes on a blocking pool, or ask a database or LDAP,
//! without stalling the runtime. This module never logs and its types never print a password.

use std::collections::HashMap;
use std::fmt;
use std::future::{ready, Future};
use std::pin::Pin;

use socksmith_proto::Credentials;
use subtle::ConstantTimeEq;

/// RFC 1929: passwords are 1..=255 bytes.
const MAX_SECRET: usize = 255;

/// The future an [`Authenticator`] returns: the user's name when the credentials are valid.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Option<String>> + Send + 'a>>;

/// Checks RFC 1929 credentials.
///
/// ```
/// use socksmith::server::{AuthFuture, Authenticator};
/// use socksmith::Credentials;
///
/// /// Lets in anyone whose password is their name backwards (an example, not a policy).
/// #[derive(Debug)]
/// struct Mirror;
///
/// impl Authenticator for Mirror {
///     fn authenticate<'a>(&'a self, credentials: &'a Credentials) -> AuthFuture<'a> {
///         Box::pin(async move {
///             let name = credentials.username();
///             let reversed: Vec<u8> = name.iter().rev().copied().collect();
///             (credentials.password() == reversed.as_slice())
///                 .then(|| String::from_utf8_lossy(name).into_owned())
///         })
///     }
/// }
/// ```
pub trait Authenticator: Send + Sync + fmt::Debug {
    /// The user's name (as it should appear in logs and to the policy) when the credentials
    /// are valid, `None` when not. Runs on the session's task: work that blocks (a slow
    /// hash, a synchronous client library) belongs on `tokio::task::spawn_blocking`. It
    /// should take the same time whatever is wrong with the credentials. The server bounds
    /// it by the handshake deadline.
    fn authenticate<'a>(&'a self, credentials: &'a Credentials) -> AuthFuture<'a>;
}

/// Users and their passwords, held in memory.
///
/// ```
/// use socksmith::server::Users;
/// use socksmith::Credentials;
///
/// let mut users = Users::new();
/// users.insert("alice", "s3cret").unwrap();
/// let ok = Credentials::new("alice", "s3cret").unwrap();
/// assert_eq!(users.check(&ok).as_deref(), Some("alice"));
/// let wrong = Credentials::new("alice", "s3cre").unwrap();
/// assert_eq!(users.check(&wrong), None);
/// ```
#[derive(Clone, Default)]
pub struct Users {
    table: HashMap<Vec<u8>, Secret>,
}

/// Why a user could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UserError {
    /// RFC 1929 usernames are 1..=255 bytes.
    #[error("username of {0} bytes, must be 1..=255")]
    UsernameLength(usize),
    /// RFC 1929 passwords are 1..=255 bytes.
    #[error("password of {0} bytes, must be 1..=255")]
    PasswordLength(usize),
    /// The same username was given twice.
    #[error("user {0:?} is defined twice")]
    Duplicate(String),
}

impl Users {
    /// No users.
    pub fn new() -> Self {
        Users::default()
    }

    /// Adds a user. Names and passwords are 1..=255 bytes (RFC 1929); a name may not repeat.
    pub fn insert(
        &mut self,
        name: impl Into<Vec<u8>>,
        password: impl AsRef<[u8]>,
    ) -> Result<(), UserError> {
        let name = name.into();
        if !(1..=MAX_SECRET).contains(&name.len()) {
            return Err(UserError::UsernameLength(name.len()));
        }
        let secret = Secret::new(password.as_ref())
            .ok_or(UserError::PasswordLength(password.as_ref().len()))?;
        if self.table.contains_key(&name) {
            return Err(UserError::Duplicate(
                String::from_utf8_lossy(&name).into_owned(),
            ));
        }
        self.table.insert(name, secret);
        Ok(())
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Users")
            .field(
                "names",
                &self
                    .table
                    .keys()
                    .map(|k| String::from_utf8_lossy(k))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Authenticator for Users {
    fn authenticate<'a>(&'a self, credentials: &'a Credentials) -> AuthFuture<'a> {
        Box::pin(ready(self.check(credentials)))
    }
}

impl Users {
    /// The user's name when `credentials` match a user, checked at once ([`Authenticator`]
    /// for this table is this, already resolved).
    pub fn check(&self, credentials: &Credentials) -> Option<String> {
        // Usernames are not secret; passwords are. An unknown user still pays for one full
        // comparison so that timing does not tell which names exist.
        let (secret, known) = match self.table.get(credentials.username()) {
            Some(secret) => (secret, true),
            None => (&Secret::DUMMY, false),
        };
        let offered = Secret::new(credentials.password())?;
        let equal: bool = secret.ct_eq(&offered).into();
        (equal && known).then(|| String::from_utf8_lossy(credentials.username()).into_owned())
    }
}

/// A password padded to 255 bytes, with its length.
#[derive(Clone)]
struct Secret {
    bytes: [u8; MAX_SECRET],
    len: u8,
}

impl Secret {
    /// Matches nothing a client can send (length 0 is impossible on the wire).
    const DUMMY: Secret = Secret {
        bytes: [0; MAX_SECRET],
        len: 0,
    };

    fn new(password: &[u8]) -> Option<Secret> {
        let len = u8::try_from(password.len()).ok().filter(|&l| l > 0)?;
        let mut bytes = [0; MAX_SECRET];
        bytes
            .get_mut(..password.len())
            .expect("a password of at most 255 bytes fits the 255-byte pad")
            .copy_from_slice(password);
        Some(Secret { bytes, len })
    }

    /// Compares all 255 bytes and the length, without early exit.
    fn ct_eq(&self, other: &Secret) -> subtle::Choice {
        self.bytes.ct_eq(&other.bytes) & self.len.ct_eq(&other.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(u: &str, p: &[u8]) -> Credentials {
        Credentials::new(u, p).expect("valid credentials")
    }

    #[test]
    fn only_the_exact_password_passes() {
        let mut users = Users::new();
        users.insert("alice", "pw").expect("valid");
        users.insert("bob", "hunter2").expect("valid");
        assert_eq!(
            users.check(&creds("alice", b"pw")).as_deref(),
            Some("alice")
        );
        assert_eq!(users.check(&creds("alice", b"pw\0")), None, "padding");
        assert_eq!(users.check(&creds("alice", b"p")), None, "prefix");
        assert_eq!(users.check(&creds("alice", b"hunter2")), None);
        assert_eq!(users.check(&creds("carol", b"pw")), None);
        assert_eq!(
            users.check(&creds("bob", b"hunter2")).as_deref(),
            Some("bob")
        );
    }

    #[test]
    fn insert_validates_lengths_and_duplicates() {
        let mut users = Users::new();
        assert_eq!(users.insert("", "pw"), Err(UserError::UsernameLength(0)));
        assert_eq!(users.insert("u", ""), Err(UserError::PasswordLength(0)));
        assert_eq!(
            users.insert("u", vec![b'x'; 256]),
            Err(UserError::PasswordLength(256))
        );
        users
            .insert("u", vec![b'x'; 255])
            .expect("255 bytes is the maximum");
        assert_eq!(
            users.insert("u", "other"),
            Err(UserError::Duplicate("u".into()))
        );
        assert_eq!(users.len(), 1);
        assert!(users.check(&creds("u", &[b'x'; 255])).is_some());
    }

    #[test]
    fn debug_shows_names_not_passwords() {
        let mut users = Users::new();
        users.insert("alice", "topsecret").expect("valid");
        let debug = format!("{users:?}");
        assert!(
            debug.contains("alice") && !debug.contains("topsecret"),
            "{debug}"
        );
    }
}
