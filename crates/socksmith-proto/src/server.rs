//! The server side of the handshake as a sans-IO state machine: [`ServerHandshake`].
//!
//! The machine decides everything the wire needs decided (which version, which method, which
//! reply bytes) and leaves to the caller what needs the outside world: checking credentials,
//! connecting, binding, resolving. It never reads past the request, so bytes the client
//! pipelined after it stay in the caller's buffer for the tunnel.
//!
//! # Driving it
//!
//! ```
//! use socksmith_proto::{
//!     AuthPolicy, HandshakeConfig, ReplyCode, ServerEvent, ServerHandshake, ServerState,
//!     TargetAddr,
//! };
//! let mut hs = ServerHandshake::new(HandshakeConfig::default());
//! // Greeting (no auth) and CONNECT 127.0.0.1:80 in one read, then 3 bytes of payload.
//! let mut buf = vec![5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80, b'G', b'E', b'T'];
//! let used = hs.receive(&buf).unwrap();
//! buf.drain(..used);
//! assert_eq!(buf, b"GET"); // pipelined payload stays with the caller
//! let mut out = Vec::new();
//! hs.poll_transmit(&mut out);
//! assert_eq!(out, [5, 0]); // method choice: no authentication
//! let Some(ServerEvent::Request(req)) = hs.poll_event() else { panic!() };
//! assert_eq!(req.target.to_string(), "127.0.0.1:80");
//! // ... connect to the target, then:
//! hs.reply(ReplyCode::Succeeded, "10.0.0.2:4321".parse::<std::net::SocketAddr>().unwrap().into())
//!     .unwrap();
//! out.clear();
//! hs.poll_transmit(&mut out);
//! assert_eq!(out, [5, 0, 0, 1, 10, 0, 0, 2, 0x10, 0xe1]);
//! assert_eq!(hs.state(), ServerState::Established);
//! ```
//!
//! After every `receive`, `reply` or `accept_credentials`: send what `poll_transmit` gives,
//! handle every `poll_event`, then look at `state()`: `Closing` means flush and close,
//! `Established` means start relaying.
//!
//! # Errors
//!
//! When `receive` returns an error whose [`ProtocolError::reply_code`] is `Some` (an unknown
//! ATYP, an unsupported command, a malformed request), the machine has already queued that
//! reply in the client's version (SOCKS4: 0x5B): flush `poll_transmit`, then close. Unknown
//! commands are answered this way (0x07) and never reach the caller as an event.

use crate::addr::TargetAddr;
use crate::auth::Credentials;
use crate::error::{ProtocolError, Version};
use crate::v5::{Command, ReplyCode};

/// How the server wants SOCKS5 clients to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthPolicy {
    /// No authentication: choose method 0x00 when offered, else 0xFF.
    #[default]
    None,
    /// RFC 1929 username/password: choose 0x02 when offered, else 0xFF.
    UsernamePassword,
}

/// What the handshake machine needs to know about the server's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeConfig {
    /// The authentication SOCKS5 clients must perform.
    pub auth: AuthPolicy,
    /// Whether SOCKS4/4a clients are served. SOCKS4 has no passwords, so with
    /// [`AuthPolicy::UsernamePassword`] it should stay `false`; a refused SOCKS4 client gets
    /// reply 0x5B and the state says why.
    pub allow_socks4: bool,
}

impl HandshakeConfig {
    /// A configuration for `auth`, allowing SOCKS4 only when no authentication is required.
    pub fn new(auth: AuthPolicy) -> Self {
        HandshakeConfig {
            auth,
            allow_socks4: auth == AuthPolicy::None,
        }
    }
}

/// No authentication, SOCKS4 allowed.
impl Default for HandshakeConfig {
    fn default() -> Self {
        HandshakeConfig::new(AuthPolicy::None)
    }
}

/// A client's request, as the server needs it to act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingRequest {
    /// The version the client speaks; replies are encoded in it.
    pub version: Version,
    /// The command: never `Command::Unknown` (the machine refuses those itself).
    pub command: Command,
    /// The target. May be a domain that spells an IP literal: see
    /// [`TargetAddr::ip_literal`].
    pub target: TargetAddr,
    /// The SOCKS4 user id (possibly empty); `None` for SOCKS5.
    pub user_id: Option<Vec<u8>>,
}

/// Something the caller must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// Check these credentials, then call [`ServerHandshake::accept_credentials`].
    Authenticate(Credentials),
    /// Act on this request, then call [`ServerHandshake::reply`] (twice for BIND).
    Request(IncomingRequest),
}

/// Why the connection must close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client offered no method the policy accepts; 0xFF was sent.
    NoAcceptableMethod,
    /// The caller rejected the credentials; a failure status was sent.
    AuthenticationFailed,
    /// A SOCKS4 client was refused with 0x5B because authentication is required.
    Socks4AuthRequired,
    /// A SOCKS4 client was refused with 0x5B because SOCKS4 is disabled.
    Socks4Disabled,
    /// The caller replied with a failure code (already queued).
    RequestFailed(ReplyCode),
    /// A RESOLVE or RESOLVE_PTR request was answered; no tunnel follows.
    Resolved,
    /// The client sent something wrong; `receive` returned this error.
    Error(ProtocolError),
}

/// Where the server handshake stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerState {
    /// Waiting for the first bytes: the version byte, then the greeting or SOCKS4 request.
    AwaitingGreeting,
    /// Waiting for the RFC 1929 request.
    AwaitingAuth,
    /// An [`ServerEvent::Authenticate`] is out; waiting for `accept_credentials`.
    AwaitingCredentialsDecision,
    /// Waiting for the SOCKS5 request.
    AwaitingRequest,
    /// A [`ServerEvent::Request`] is out; waiting for `reply`.
    AwaitingReply,
    /// BIND: the first reply (the listening address) is queued; waiting for the second
    /// `reply` (the peer that connected, or a failure).
    AwaitingBindPeer,
    /// The handshake succeeded: relay bytes (CONNECT, BIND) or keep the UDP association
    /// alive while this connection stays open (UDP ASSOCIATE).
    Established,
    /// Flush `poll_transmit`, then close the connection.
    Closing(CloseReason),
}

/// The server-side handshake machine. See the [module docs](self) for the driving loop.
#[derive(Debug)]
pub struct ServerHandshake {
    config: HandshakeConfig,
}

impl ServerHandshake {
    /// A machine waiting for a client's first byte.
    pub fn new(config: HandshakeConfig) -> Self {
        let _ = config;
        todo!()
    }

    /// Feeds received bytes; returns how many were consumed.
    ///
    /// Consumes as many whole messages as the current state can take (a greeting and a
    /// pipelined request together, say) and never a byte past the request: the rest stays in
    /// the caller's buffer. Returns `Ok(0)` when the machine waits for a decision or is done;
    /// after an error the state is `Closing` and further calls return `Ok(0)`.
    pub fn receive(&mut self, input: &[u8]) -> Result<usize, ProtocolError> {
        todo!()
    }

    /// Appends the bytes to send to the client (method choice, auth status, replies) to `out`
    /// and returns how many were appended.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        todo!()
    }

    /// The next event the caller must act on.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        todo!()
    }

    /// The caller's verdict on a [`ServerEvent::Authenticate`]. `true` queues status 0x00 and
    /// waits for the request; `false` queues status 0x01 and moves to
    /// `Closing(AuthenticationFailed)`. Errors with `InvalidState` when no credentials wait.
    pub fn accept_credentials(&mut self, ok: bool) -> Result<(), ProtocolError> {
        todo!()
    }

    /// The caller's answer to a [`ServerEvent::Request`]: queues the reply in the client's
    /// version.
    ///
    /// SOCKS5: `code` and `bound` as given. SOCKS4: `Succeeded` is 0x5A, anything else 0x5B;
    /// `bound` goes into DSTPORT/DSTIP when it is IPv4, else 0.0.0.0:0 is sent (a SOCKS4
    /// RESOLVE answer must therefore be IPv4).
    ///
    /// Then: a failure moves to `Closing(RequestFailed)`; a success on RESOLVE/RESOLVE_PTR to
    /// `Closing(Resolved)`; the first success on BIND to `AwaitingBindPeer` (call `reply`
    /// again with the peer's address); any other success to `Established`. Errors with
    /// `InvalidState` when no reply is expected.
    pub fn reply(&mut self, code: ReplyCode, bound: TargetAddr) -> Result<(), ProtocolError> {
        todo!()
    }

    /// Where the handshake stands.
    pub fn state(&self) -> ServerState {
        todo!()
    }

    /// Whether the handshake is over: `Established` or `Closing`.
    pub fn is_finished(&self) -> bool {
        todo!()
    }

    /// The version the client speaks, once its first byte has been seen.
    pub fn version(&self) -> Option<Version> {
        todo!()
    }
}
