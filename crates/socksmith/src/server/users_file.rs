//! The users file (`--users FILE`): users whose passwords are stored as argon2id hashes,
//! parsed into [`UsersFile`] (the file as written, for `socksmith passwd` to edit) and into
//! [`HashedUsers`] (what the server checks credentials against).
//!
//! The format is one user a line, `NAME:HASH`, where HASH is an argon2id PHC string
//! (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`); blank lines and lines starting with `#`
//! are comments. [`hash_password`] makes such a string.
//!
//! argon2 is slow on purpose (tens of milliseconds and ~19 MiB per check with the default
//! parameters), so [`HashedUsers`] runs the check on tokio's blocking pool, a few at a time,
//! and remembers credentials that passed: the cache holds a keyed BLAKE3 digest of (user,
//! password) under a key drawn at random when the users are loaded, never the password, so a
//! memory dump yields nothing to try elsewhere and a returning client costs one digest instead
//! of one argon2 run. An unknown user costs one argon2 run against a dummy hash with the same
//! parameters, so timing does not tell which names exist.
//!
//! This module does not own the in-memory `--user NAME:PASS` table (see `auth`) nor the
//! throttling of password guessing. It never logs, and its types never print a hash or a
//! password.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use socksmith_proto::Credentials;
use tokio::sync::Semaphore;

use crate::server::{AuthFuture, Authenticator};

/// RFC 1929: usernames and passwords are 1..=255 bytes.
const MAX_FIELD: usize = 255;

/// Verified credentials remembered per cache generation; two generations are kept (see
/// [`VerifiedCache`]), so at most twice this many digests of 32 bytes: about 256 KiB.
const CACHE_GENERATION: usize = 4096;

/// Why a users file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsersFileError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("cannot read users file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// A line is not a valid `NAME:HASH` entry.
    #[error("{}:{line}: {problem}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        problem: LineProblem,
    },
    /// The system's random number generator failed (the cache key or the dummy hash could
    /// not be drawn).
    #[error("cannot draw random bytes for the users file's cache key: {0}")]
    Random(getrandom::Error),
    /// The dummy hash that unknown users are checked against could not be computed.
    #[error("cannot compute the dummy hash for unknown users: {0}")]
    DummyHash(String),
}

/// What is wrong with one line of a users file. The messages never repeat the line's
/// content: someone may have written a plain password where the hash belongs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineProblem {
    /// No `:` between name and hash.
    #[error("expected NAME:HASH (use `socksmith passwd FILE NAME` to add a user)")]
    MissingColon,
    /// The name is empty or longer than RFC 1929's 255 bytes.
    #[error("user name of {0} bytes, must be 1..=255")]
    NameLength(usize),
    /// The name contains whitespace, a control character or a `:` (which ends the name on a
    /// line of the file).
    #[error(
        "user name {0:?} contains whitespace, a control character or a ':' (a ':' ends the \
         name in the file)"
    )]
    NameCharacter(String),
    /// The hash is not a PHC string (`$argon2id$v=19$...`).
    #[error(
        "the hash of user {user:?} is not a PHC string like $argon2id$v=19$m=...: {reason} \
         (use `socksmith passwd FILE {user}` to set a password)"
    )]
    NotPhc {
        /// The user on that line.
        user: String,
        /// What the PHC parser said.
        reason: String,
    },
    /// The hash is a PHC string of another algorithm.
    #[error("the hash of user {user:?} uses {algorithm}, only argon2id is accepted")]
    NotArgon2id {
        /// The user on that line.
        user: String,
        /// The algorithm it names.
        algorithm: String,
    },
    /// The argon2id parameters, salt or output are not usable.
    #[error("the argon2id hash of user {user:?} is unusable: {reason}")]
    BadHash {
        /// The user on that line.
        user: String,
        /// What argon2 said.
        reason: String,
    },
    /// The name appeared on an earlier line.
    #[error("user {name:?} is already defined on line {first_line}")]
    Duplicate {
        /// The user.
        name: String,
        /// Where it was first defined.
        first_line: usize,
    },
}

/// Why a password could not be hashed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashPasswordError {
    /// RFC 1929 passwords are 1..=255 bytes; a longer one could never be sent.
    #[error("password of {0} bytes, must be 1..=255 (RFC 1929)")]
    Length(usize),
    /// argon2 or the random salt failed.
    #[error("hashing the password failed: {0}")]
    Hash(String),
}

/// A users file as written: its users in order, with comments and blank lines kept, so that
/// `socksmith passwd` can change one user and leave the rest of the file alone.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct UsersFile {
    lines: Vec<Line>,
}

#[derive(Clone, PartialEq, Eq)]
enum Line {
    /// A comment or a blank line, kept verbatim.
    Other(String),
    /// A user, with its hash checked to be a usable argon2id PHC string.
    User {
        name: String,
        /// Boxed: a parsed PHC string keeps its fields in fixed buffers of ~200 bytes.
        hash: Box<PasswordHash>,
    },
}

impl UsersFile {
    /// An empty file.
    pub fn new() -> Self {
        UsersFile::default()
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, UsersFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| UsersFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        UsersFile::parse(&text, path)
    }

    /// Parses a users file's text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, UsersFileError> {
        let mut lines = Vec::new();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let number = index + 1;
            let error = |problem| UsersFileError::Line {
                path: path.to_owned(),
                line: number,
                problem,
            };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                lines.push(Line::Other(raw.to_owned()));
                continue;
            }
            let (name, hash) = parse_entry(trimmed).map_err(error)?;
            if let Some(&first_line) = seen.get(name) {
                return Err(error(LineProblem::Duplicate {
                    name: name.to_owned(),
                    first_line,
                }));
            }
            seen.insert(name, number);
            lines.push(Line::User {
                name: name.to_owned(),
                hash: Box::new(hash),
            });
        }
        Ok(UsersFile { lines })
    }

    /// Adds `name` with `hash` (a string from [`hash_password`]), or replaces its hash where
    /// it already is. Returns whether it replaced one.
    pub fn set(&mut self, name: &str, hash: &str) -> Result<bool, LineProblem> {
        check_name(name)?;
        let hash = parse_hash(name, hash)?;
        for line in &mut self.lines {
            if let Line::User {
                name: existing,
                hash: old,
            } = line
            {
                if existing == name {
                    **old = hash;
                    return Ok(true);
                }
            }
        }
        self.lines.push(Line::User {
            name: name.to_owned(),
            hash: Box::new(hash),
        });
        Ok(false)
    }

    /// Removes `name`; returns whether it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.lines.len();
        self.lines
            .retain(|line| !matches!(line, Line::User { name: existing, .. } if existing == name));
        self.lines.len() != before
    }

    /// Whether `name` is in the file.
    pub fn contains(&self, name: &str) -> bool {
        self.users().any(|(existing, _)| existing == name)
    }

    /// The users' names, in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.users().map(|(name, _)| name)
    }

    /// The file's text: comments and blank lines as read, one `NAME:HASH` line per user, a
    /// newline after each line.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for line in &self.lines {
            match line {
                Line::Other(other) => text.push_str(other),
                Line::User { name, hash } => {
                    text.push_str(name);
                    text.push(':');
                    text.push_str(&hash.to_string());
                }
            }
            text.push('\n');
        }
        text
    }

    fn users(&self) -> impl Iterator<Item = (&str, &PasswordHash)> {
        self.lines.iter().filter_map(|line| match line {
            Line::User { name, hash } => Some((name.as_str(), &**hash)),
            Line::Other(_) => None,
        })
    }
}

impl fmt::Debug for UsersFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsersFile")
            .field("names", &self.names().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn parse_entry(line: &str) -> Result<(&str, PasswordHash), LineProblem> {
    let (name, hash) = line.split_once(':').ok_or(LineProblem::MissingColon)?;
    let name = name.trim_end();
    check_name(name)?;
    Ok((name, parse_hash(name, hash.trim_start())?))
}

fn check_name(name: &str) -> Result<(), LineProblem> {
    if !(1..=MAX_FIELD).contains(&name.len()) {
        return Err(LineProblem::NameLength(name.len()));
    }
    if name.contains(|c: char| c.is_whitespace() || c.is_control() || c == ':') {
        return Err(LineProblem::NameCharacter(name.escape_debug().to_string()));
    }
    Ok(())
}

/// Parses and checks a hash so that a bad one fails when the file is loaded, not at a login.
fn parse_hash(user: &str, text: &str) -> Result<PasswordHash, LineProblem> {
    let hash = PasswordHash::new(text).map_err(|e| LineProblem::NotPhc {
        user: user.to_owned(),
        reason: e.to_string(),
    })?;
    if hash.algorithm.as_str() != "argon2id" {
        return Err(LineProblem::NotArgon2id {
            user: user.to_owned(),
            algorithm: hash.algorithm.as_str().to_owned(),
        });
    }
    let bad = |reason: String| LineProblem::BadHash {
        user: user.to_owned(),
        reason,
    };
    if let Some(version) = hash.version {
        Version::try_from(version).map_err(|e| bad(e.to_string()))?;
    }
    Params::try_from(&hash).map_err(|e| bad(e.to_string()))?;
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(bad("the salt or the hash output is missing".to_owned()));
    }
    Ok(hash)
}

/// Hashes `password` as an argon2id PHC string with a random salt and argon2's default
/// parameters (m=19456 KiB, t=2, p=1, OWASP's recommendation), for a users file line.
///
/// ```
/// let hash = socksmith::server::hash_password(b"correct horse").unwrap();
/// assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
/// ```
pub fn hash_password(password: &[u8]) -> Result<String, HashPasswordError> {
    hash_password_with(password, Params::DEFAULT)
}

fn hash_password_with(password: &[u8], params: Params) -> Result<String, HashPasswordError> {
    if !(1..=MAX_FIELD).contains(&password.len()) {
        return Err(HashPasswordError::Length(password.len()));
    }
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password)
        .map(|hash| hash.to_string())
        .map_err(|e| HashPasswordError::Hash(e.to_string()))
}

/// Users checked against argon2id hashes (the server's `--users FILE`), with verified
/// credentials cached (see the module documentation). Cheap to clone; clones share the
/// cache.
///
/// ```no_run
/// # fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use socksmith::server::HashedUsers;
///
/// let users = HashedUsers::load("/etc/socksmith/users".as_ref())?;
/// // Blocking: argon2 runs here. The server's authenticator runs it on the blocking pool.
/// assert!(!users.verify(b"nobody", b"guess"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HashedUsers {
    inner: Arc<Inner>,
}

struct Inner {
    users: HashMap<Vec<u8>, PasswordHash>,
    /// What an unknown user is checked against, so that it costs a real argon2 run.
    dummy: PasswordHash,
    cache: VerifiedCache,
    /// Bounds argon2 runs at once: each takes m_cost KiB (19 MiB by default), and tokio's
    /// blocking pool would otherwise start hundreds of them under a burst of logins.
    verifying: Semaphore,
}

impl HashedUsers {
    /// Reads the users file at `path`.
    pub fn load(path: &Path) -> Result<Self, UsersFileError> {
        HashedUsers::from_file(&UsersFile::load(path)?)
    }

    /// The users of a parsed file. Draws the cache key and computes the dummy hash (one
    /// argon2 run): call it where blocking briefly is fine.
    pub fn from_file(file: &UsersFile) -> Result<Self, UsersFileError> {
        let users: HashMap<Vec<u8>, PasswordHash> = file
            .users()
            .map(|(name, hash)| (name.as_bytes().to_vec(), hash.clone()))
            .collect();
        // The dummy takes the parameters of the first user's hash: in a file written by
        // `socksmith passwd` every hash has the same ones, so a miss costs what a hit does.
        let params = file
            .users()
            .next()
            .and_then(|(_, hash)| Params::try_from(hash).ok())
            .unwrap_or(Params::DEFAULT);
        let mut dummy_password = [0u8; 32];
        getrandom::fill(&mut dummy_password).map_err(UsersFileError::Random)?;
        let dummy = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(&dummy_password)
            .map_err(|e| UsersFileError::DummyHash(e.to_string()))?;
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(HashedUsers {
            inner: Arc::new(Inner {
                users,
                dummy,
                cache: VerifiedCache::new()?,
                verifying: Semaphore::new(workers),
            }),
        })
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.inner.users.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.inner.users.is_empty()
    }

    /// Whether `user` is defined (its password unchecked).
    pub fn contains(&self, user: &[u8]) -> bool {
        self.inner.users.contains_key(user)
    }

    /// Whether `password` is `user`'s. Blocks for one argon2 run unless these credentials
    /// passed before; call it on a blocking thread.
    pub fn verify(&self, user: &[u8], password: &[u8]) -> bool {
        let digest = self.inner.cache.digest(user, password);
        self.inner.cache.contains(&digest) || self.inner.verify_slowly(user, password, digest)
    }

    /// The RFC 1929 check the server makes: the user's name when the credentials are valid.
    /// Cached credentials are answered at once; others wait for a turn (a few argon2 runs at
    /// a time) and are checked on tokio's blocking pool. Needs a tokio runtime.
    pub async fn check(&self, credentials: &Credentials) -> Option<String> {
        let user = credentials.username();
        let password = credentials.password();
        let digest = self.inner.cache.digest(user, password);
        if !self.inner.cache.contains(&digest) {
            let _turn = self.inner.verifying.acquire().await.ok()?;
            // Another session may have verified the same credentials while this one waited.
            if !self.inner.cache.contains(&digest) {
                let inner = Arc::clone(&self.inner);
                let (user, password) = (user.to_vec(), password.to_vec());
                let valid = tokio::task::spawn_blocking(move || {
                    inner.verify_slowly(&user, &password, digest)
                })
                .await
                .unwrap_or(false);
                if !valid {
                    return None;
                }
            }
        }
        // Names in the file are UTF-8 without control characters (checked on load).
        Some(String::from_utf8_lossy(user).into_owned())
    }
}

impl Authenticator for HashedUsers {
    fn authenticate<'a>(&'a self, credentials: &'a Credentials) -> AuthFuture<'a> {
        Box::pin(self.check(credentials))
    }
}

impl Inner {
    /// One argon2 run, against the dummy hash for an unknown user; remembers a success.
    fn verify_slowly(&self, user: &[u8], password: &[u8], digest: Digest) -> bool {
        let (hash, known) = match self.users.get(user) {
            Some(hash) => (hash, true),
            None => (&self.dummy, false),
        };
        let valid = Argon2::default().verify_password(password, hash).is_ok() && known;
        if valid {
            self.cache.insert(digest);
        }
        valid
    }
}

impl fmt::Debug for HashedUsers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self
            .inner
            .users
            .keys()
            .map(|k| String::from_utf8_lossy(k))
            .collect();
        names.sort();
        f.debug_struct("HashedUsers")
            .field("names", &names)
            .finish_non_exhaustive()
    }
}

type Digest = [u8; 32];

/// Credentials that passed, remembered as keyed digests.
///
/// Bounded by two generations: when the current one is full it becomes the previous one and
/// a fresh one starts, so the credentials in use stay (a hit in the previous generation moves
/// to the current one) and memory never exceeds two generations.
struct VerifiedCache {
    key: [u8; 32],
    generations: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    current: HashSet<Digest>,
    previous: HashSet<Digest>,
}

impl VerifiedCache {
    fn new() -> Result<Self, UsersFileError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(UsersFileError::Random)?;
        Ok(VerifiedCache {
            key,
            generations: Mutex::default(),
        })
    }

    /// BLAKE3 keyed with this process's random key over (user length, user, password): the
    /// length prefix keeps ("ab", "c") and ("a", "bc") apart.
    fn digest(&self, user: &[u8], password: &[u8]) -> Digest {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(&(user.len() as u64).to_le_bytes());
        hasher.update(user);
        hasher.update(password);
        *hasher.finalize().as_bytes()
    }

    fn contains(&self, digest: &Digest) -> bool {
        let mut generations = self.lock();
        if generations.current.contains(digest) {
            return true;
        }
        if generations.previous.remove(digest) {
            generations.insert(*digest);
            return true;
        }
        false
    }

    fn insert(&self, digest: Digest) {
        self.lock().insert(digest);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // A panic while holding the lock leaves two valid sets behind: keep using them.
        self.generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Generations {
    fn insert(&mut self, digest: Digest) {
        if self.current.len() >= CACHE_GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(digest);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters (8 KiB, one pass) so that tests do not spend seconds in argon2.
    fn cheap(password: &str) -> String {
        let params = Params::new(8, 1, 1, None).expect("valid parameters");
        hash_password_with(password.as_bytes(), params).expect("hashable")
    }

    fn path() -> &'static Path {
        Path::new("/etc/socksmith/users")
    }

    fn line_problem(text: &str) -> (usize, LineProblem) {
        match UsersFile::parse(text, path()) {
            Err(UsersFileError::Line { line, problem, .. }) => (line, problem),
            other => panic!("expected a line error, got {other:?}"),
        }
    }

    #[test]
    fn parses_users_comments_and_blank_lines() {
        let text = format!(
            "# socksmith users\n\nalice:{}\n  bob : {}  \n# end\n",
            cheap("pw-a"),
            cheap("pw-b")
        );
        let file = UsersFile::parse(&text, path()).expect("valid file");
        assert_eq!(file.names().collect::<Vec<_>>(), ["alice", "bob"]);
        assert!(file.contains("bob") && !file.contains("carol"));
        // Comments survive a round trip; entries are rewritten canonically.
        let again = UsersFile::parse(&file.render(), path()).expect("rendered file parses");
        assert_eq!(again, file);
        assert!(file
            .render()
            .starts_with("# socksmith users\n\nalice:$argon2id$"));
    }

    #[test]
    fn errors_name_the_file_and_line_without_echoing_the_line() {
        let good = cheap("pw");
        let (line, problem) = line_problem(&format!("# c\nalice:{good}\nbob:hunter2\n"));
        assert_eq!(line, 3);
        assert!(matches!(problem, LineProblem::NotPhc { .. }), "{problem:?}");
        let message = UsersFile::parse("bob:hunter2\n", path())
            .expect_err("plain password")
            .to_string();
        assert!(
            message.starts_with("/etc/socksmith/users:1: the hash of user \"bob\""),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");

        assert_eq!(line_problem("alice\n"), (1, LineProblem::MissingColon));
        assert_eq!(
            line_problem(&format!(":{good}")),
            (1, LineProblem::NameLength(0))
        );
        assert_eq!(
            line_problem(&format!("{}:{good}", "a".repeat(256))),
            (1, LineProblem::NameLength(256))
        );
        assert!(matches!(
            line_problem(&format!("al ice:{good}")),
            (1, LineProblem::NameCharacter(_))
        ));
        assert!(matches!(
            line_problem(&format!("alice:{good}\n\nalice:{good}")),
            (3, LineProblem::Duplicate { first_line: 1, .. })
        ));
        let argon2i = good.replacen("argon2id", "argon2i", 1);
        assert!(matches!(
            line_problem(&format!("alice:{argon2i}")),
            (1, LineProblem::NotArgon2id { .. })
        ));
        let scrypt = "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E";
        assert!(matches!(
            line_problem(&format!("alice:{scrypt}")),
            (1, LineProblem::NotArgon2id { .. })
        ));
        let no_output = good.rsplit_once('$').expect("a PHC string").0.to_owned();
        assert!(matches!(
            line_problem(&format!("alice:{no_output}")),
            (1, LineProblem::BadHash { .. })
        ));
        let bad_params = good.replacen("m=8,", "m=1,", 1);
        assert!(matches!(
            line_problem(&format!("alice:{bad_params}")),
            (1, LineProblem::BadHash { .. })
        ));
    }

    #[test]
    fn load_reports_a_missing_file_by_path() {
        let error =
            UsersFile::load(Path::new("/nonexistent/socksmith-users")).expect_err("no such file");
        assert!(
            error
                .to_string()
                .starts_with("cannot read users file /nonexistent/socksmith-users:"),
            "{error}"
        );
    }

    #[test]
    fn set_adds_or_replaces_and_remove_deletes() {
        let mut file = UsersFile::parse("# keep me\n", path()).expect("valid");
        assert_eq!(file.set("alice", &cheap("one")), Ok(false));
        assert_eq!(file.set("bob", &cheap("two")), Ok(false));
        let replaced = cheap("three");
        assert_eq!(file.set("alice", &replaced), Ok(true));
        let text = file.render();
        assert!(text.starts_with("# keep me\nalice:"), "{text}");
        assert!(text.contains(&replaced));
        assert!(file.remove("bob"));
        assert!(!file.remove("bob"));
        assert_eq!(file.names().collect::<Vec<_>>(), ["alice"]);
        assert!(matches!(
            file.set("alice", "plain"),
            Err(LineProblem::NotPhc { .. })
        ));
        assert!(matches!(
            file.set("a:b", &replaced),
            Err(LineProblem::NameCharacter(_))
        ));
    }

    #[test]
    fn hash_password_makes_default_argon2id_strings_with_fresh_salts() {
        assert_eq!(hash_password(b""), Err(HashPasswordError::Length(0)));
        assert_eq!(
            hash_password(&[b'x'; 256]),
            Err(HashPasswordError::Length(256))
        );
        let one = cheap("same");
        let two = cheap("same");
        assert_ne!(one, two, "salts must differ");
        assert!(!one.contains("same"));
    }

    fn users(entries: &[(&str, &str)]) -> HashedUsers {
        let mut file = UsersFile::new();
        for (name, password) in entries {
            file.set(name, &cheap(password)).expect("valid entry");
        }
        HashedUsers::from_file(&file).expect("random bytes available")
    }

    #[test]
    fn verify_accepts_only_the_right_password_of_a_known_user() {
        let users = users(&[("alice", "wonder"), ("bob", "builder")]);
        assert_eq!(users.len(), 2);
        assert!(users.verify(b"alice", b"wonder"));
        assert!(users.verify(b"bob", b"builder"));
        assert!(!users.verify(b"alice", b"builder"));
        assert!(!users.verify(b"alice", b"wonde"));
        assert!(!users.verify(b"carol", b"wonder"));
        // A second time comes from the cache and gives the same answers.
        assert!(users.verify(b"alice", b"wonder"));
        assert!(!users.verify(b"alice", b"builder"));
    }

    #[test]
    fn the_cache_keeps_digests_not_passwords_and_only_of_successes() {
        let users = users(&[("alice", "wonder")]);
        assert!(users.verify(b"alice", b"wonder"));
        assert!(!users.verify(b"alice", b"nope"));
        let cache = &users.inner.cache;
        let generations = cache.lock();
        assert_eq!(generations.len(), 1);
        let stored = *generations.current.iter().next().expect("one entry");
        drop(generations);
        assert_eq!(stored, cache.digest(b"alice", b"wonder"));
        assert!(!stored.windows(6).any(|w| w == b"wonder"));
        // The user/password boundary is part of the digest.
        assert_ne!(cache.digest(b"ab", b"c"), cache.digest(b"a", b"bc"));
        // Another process (another key) digests differently.
        let other = VerifiedCache::new().expect("random bytes");
        assert_ne!(other.digest(b"alice", b"wonder"), stored);
    }

    #[test]
    fn the_cache_is_bounded_and_keeps_what_is_in_use() {
        let cache = VerifiedCache::new().expect("random bytes");
        let in_use = cache.digest(b"alice", b"pw");
        cache.insert(in_use);
        for i in 0..(3 * CACHE_GENERATION) {
            cache.insert(cache.digest(b"user", i.to_string().as_bytes()));
            if i % 1000 == 0 {
                assert!(cache.contains(&in_use), "used entries move forward");
            }
            assert!(cache.lock().len() <= 2 * CACHE_GENERATION);
        }
        let forgotten = cache.digest(b"user", b"0");
        assert!(
            !cache.contains(&forgotten),
            "old unused entries are dropped"
        );
    }

    #[test]
    fn an_unknown_user_costs_an_argon2_run() {
        // The dummy hash has the first user's parameters and does not verify.
        let users = users(&[("alice", "wonder")]);
        let alice =
            Params::try_from(users.inner.users.values().next().expect("one user")).expect("valid");
        let dummy = Params::try_from(&users.inner.dummy).expect("valid");
        assert_eq!(
            (dummy.m_cost(), dummy.t_cost(), dummy.p_cost()),
            (alice.m_cost(), alice.t_cost(), alice.p_cost())
        );
        assert!(!users.verify(b"mallory", b"wonder"));
        assert!(!users.contains(b"mallory"));
        assert_eq!(users.inner.cache.lock().len(), 0);
    }

    #[tokio::test]
    async fn authenticate_runs_on_the_blocking_pool_and_returns_the_name() {
        let users = users(&[("alice", "wonder")]);
        let ok = Credentials::new("alice", "wonder").expect("valid");
        let wrong = Credentials::new("alice", "nope").expect("valid");
        let unknown = Credentials::new("zed", "wonder").expect("valid");
        let authenticator: &dyn Authenticator = &users;
        assert_eq!(
            authenticator.authenticate(&ok).await.as_deref(),
            Some("alice")
        );
        assert_eq!(
            authenticator.authenticate(&ok).await.as_deref(),
            Some("alice")
        );
        assert_eq!(authenticator.authenticate(&wrong).await, None);
        assert_eq!(authenticator.authenticate(&unknown).await, None);
        // Many at once all get an answer.
        let checks: Vec<_> = (0..16)
            .map(|_| {
                let users = users.clone();
                let ok = ok.clone();
                tokio::spawn(async move { users.check(&ok).await })
            })
            .collect();
        for check in checks {
            assert_eq!(check.await.expect("no panic").as_deref(), Some("alice"));
        }
    }

    #[test]
    fn debug_shows_names_only() {
        let users = users(&[("alice", "wonder")]);
        let debug = format!("{users:?}");
        assert!(
            debug.contains("alice") && !debug.contains("argon2"),
            "{debug}"
        );
        let file = UsersFile::parse(&format!("alice:{}", cheap("x")), path()).expect("valid");
        assert!(!format!("{file:?}").contains("argon2"));
    }
}
