//! The server side of the handshake as a sans-IO state machine: [`ServerHandshake`]; and
//! [`UdpClientFilter`], the rule for which source a UDP ASSOCIATE relay takes datagrams from.
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
use crate::auth::{AuthRequest, AuthStatus, Credentials};
use crate::error::{Incompatible, InvalidInput, Malformed, ProtocolError, Version};
use crate::v4::{V4Reply, V4ReplyCode, V4Request};
use crate::v5::{AuthMethod, Command, Greeting, MethodChoice, Reply, ReplyCode, Request};
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

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
    /// The command: never `Command::Unknown`, and over SOCKS4 never UDP ASSOCIATE or
    /// RESOLVE_PTR (the machine refuses those itself, with 0x07 or 0x5B).
    pub command: Command,
    /// The target. May be a domain that spells an IP literal: see
    /// [`TargetAddr::ip_literal`]. For BIND it is the address the peer is expected to
    /// connect from; for UDP ASSOCIATE where the client will send from (often `0.0.0.0:0`). The machine does not check that it suits the command
    /// (RESOLVE with an IP, RESOLVE_PTR with a name): answer those as you see fit.
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
    /// The caller rejected the credentials, or the client sent an empty username or password
    /// (which RFC 1929 does not allow and no account can match); a failure status was sent.
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
    state: ServerState,
    /// Set by the client's first byte.
    version: Option<Version>,
    /// The command of the request being answered.
    command: Option<Command>,
    /// Bytes queued for the client.
    transmit: Vec<u8>,
    events: VecDeque<ServerEvent>,
}

impl ServerHandshake {
    /// A machine waiting for a client's first byte.
    pub fn new(config: HandshakeConfig) -> Self {
        ServerHandshake {
            config,
            state: ServerState::AwaitingGreeting,
            version: None,
            command: None,
            transmit: Vec::new(),
            events: VecDeque::new(),
        }
    }

    /// Feeds received bytes; returns how many were consumed.
    ///
    /// Consumes as many whole messages as the current state can take (a greeting and a
    /// pipelined request together, say) and never a byte past the request: the rest stays in
    /// the caller's buffer. Returns `Ok(0)` when the machine waits for a decision or is done;
    /// after an error the state is `Closing` and further calls return `Ok(0)`.
    ///
    /// After an error the connection must close, so the number of bytes consumed is not
    /// reported (a call may have consumed earlier messages of `input` before failing).
    pub fn receive(&mut self, input: &[u8]) -> Result<usize, ProtocolError> {
        let mut used = 0;
        loop {
            let rest = input.get(used..).unwrap_or_default();
            let step = match self.state {
                ServerState::AwaitingGreeting => self.on_first_message(rest),
                ServerState::AwaitingAuth => self.on_auth_request(rest),
                ServerState::AwaitingRequest => self.on_v5_request(rest),
                // Waiting for a decision, or done: the bytes are not ours.
                _ => return Ok(used),
            };
            match step {
                Ok(Some(n)) => used += n,
                Ok(None) => return Ok(used),
                Err(e) => {
                    self.state = ServerState::Closing(CloseReason::Error(e.clone()));
                    return Err(e);
                }
            }
        }
    }

    /// Appends the bytes to send to the client (method choice, auth status, replies) to `out`
    /// and returns how many were appended.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        let n = self.transmit.len();
        out.append(&mut self.transmit);
        n
    }

    /// The next event the caller must act on.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// The caller's verdict on a [`ServerEvent::Authenticate`]. `true` queues status 0x00 and
    /// waits for the request; `false` queues status 0x01 and moves to
    /// `Closing(AuthenticationFailed)`. Errors with `InvalidState` when no credentials wait.
    pub fn accept_credentials(&mut self, ok: bool) -> Result<(), ProtocolError> {
        if self.state != ServerState::AwaitingCredentialsDecision {
            return Err(ProtocolError::InvalidState(
                "accept_credentials() called while no credentials await a decision",
            ));
        }
        if ok {
            AuthStatus::SUCCESS.encode(&mut self.transmit);
            self.state = ServerState::AwaitingRequest;
        } else {
            // RFC 1929: "If the server returns a `failure' (STATUS value other than X'00')
            // status, it MUST close the connection."
            AuthStatus::FAILURE.encode(&mut self.transmit);
            self.state = ServerState::Closing(CloseReason::AuthenticationFailed);
        }
        Ok(())
    }

    /// The caller's answer to a [`ServerEvent::Request`]: queues the reply in the client's
    /// version.
    ///
    /// SOCKS5: `code` and `bound` as given. SOCKS4: `Succeeded` is 0x5A, anything else 0x5B;
    /// `bound` goes into DSTPORT/DSTIP when it is IPv4, else 0.0.0.0:0 is sent, which is fine
    /// where clients ignore the address (CONNECT, BIND's second reply). Where the address is
    /// the answer (BIND's first reply: where to connect; a RESOLVE answer), a success that
    /// cannot carry it (see [`Self::check_bound`]) is not sent: 0x5B is queued instead, the
    /// state moves to `Closing(RequestFailed(GeneralFailure))` and the error says why
    /// (`InvalidInput::V4Ipv6Address` or `InvalidInput::V4Domain`).
    ///
    /// Then: a failure moves to `Closing(RequestFailed)`; a success on RESOLVE/RESOLVE_PTR to
    /// `Closing(Resolved)`; the first success on BIND to `AwaitingBindPeer` (call `reply`
    /// again with the peer's address); any other success to `Established`. Errors with
    /// `InvalidState` when no reply is expected.
    pub fn reply(&mut self, code: ReplyCode, bound: TargetAddr) -> Result<(), ProtocolError> {
        let first_bind_reply = match self.state {
            ServerState::AwaitingReply => self.command == Some(Command::Bind),
            ServerState::AwaitingBindPeer => false,
            _ => {
                return Err(ProtocolError::InvalidState(
                    "reply() called while no request awaits a reply",
                ))
            }
        };
        let version = self.version.unwrap_or(Version::V5);
        if code.is_success() {
            if let Err(e) = self.check_bound(&bound) {
                let code = ReplyCode::GeneralFailure;
                self.queue_reply(version, code, &TargetAddr::UNSPECIFIED);
                self.state = ServerState::Closing(CloseReason::RequestFailed(code));
                return Err(e);
            }
        }
        self.queue_reply(version, code, &bound);
        self.state = if !code.is_success() {
            ServerState::Closing(CloseReason::RequestFailed(code))
        } else if first_bind_reply {
            ServerState::AwaitingBindPeer
        } else if matches!(self.command, Some(Command::Resolve | Command::ResolvePtr)) {
            ServerState::Closing(CloseReason::Resolved)
        } else {
            ServerState::Established
        };
        Ok(())
    }

    /// Whether a success reply sent now can carry `bound`. Always over SOCKS5. A SOCKS4
    /// reply has room for an IPv4 address only: where the address is the answer (the first
    /// BIND reply, where the client must connect; a RESOLVE answer) anything else is an
    /// error: a 0.0.0.0:0 in a granted BIND reply tells the client to connect to the proxy's
    /// own IP on port 0. Elsewhere (CONNECT, the second BIND reply) zeros are sent and
    /// clients ignore them, so any address fits. Ask before binding a listener, to refuse
    /// early.
    pub fn check_bound(&self, bound: &TargetAddr) -> Result<(), ProtocolError> {
        let answer_is_the_address = match self.state {
            ServerState::AwaitingReply => matches!(
                self.command,
                Some(Command::Bind | Command::Resolve | Command::ResolvePtr)
            ),
            _ => false,
        };
        if self.version != Some(Version::V4) || !answer_is_the_address {
            return Ok(());
        }
        match bound {
            TargetAddr::Ip(SocketAddr::V4(_)) => Ok(()),
            TargetAddr::Ip(SocketAddr::V6(_)) => Err(InvalidInput::V4Ipv6Address.into()),
            TargetAddr::Domain(..) => Err(InvalidInput::V4Domain.into()),
        }
    }

    /// Where the handshake stands.
    pub fn state(&self) -> ServerState {
        self.state.clone()
    }

    /// Whether the handshake is over: `Established` or `Closing`.
    pub fn is_finished(&self) -> bool {
        matches!(
            self.state,
            ServerState::Established | ServerState::Closing(_)
        )
    }

    /// The version the client speaks, once its first byte has been seen.
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// The first message: the version byte selects a SOCKS5 greeting or a SOCKS4 request.
    fn on_first_message(&mut self, input: &[u8]) -> Result<Option<usize>, ProtocolError> {
        match input.first() {
            None => Ok(None),
            Some(&crate::v4::VERSION) => {
                self.version = Some(Version::V4);
                self.on_v4_request(input)
            }
            Some(&crate::v5::VERSION) => {
                self.version = Some(Version::V5);
                self.on_greeting(input)
            }
            Some(&other) => Err(Incompatible::UnsupportedVersion(other).into()),
        }
    }

    fn on_greeting(&mut self, input: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let Some((greeting, n)) = Greeting::decode(input)? else {
            return Ok(None);
        };
        let wanted = match self.config.auth {
            AuthPolicy::None => AuthMethod::NoAuth,
            AuthPolicy::UsernamePassword => AuthMethod::UsernamePassword,
        };
        let method = if greeting.methods.contains(&wanted) {
            wanted
        } else {
            AuthMethod::NoAcceptable
        };
        MethodChoice { method }.encode(&mut self.transmit);
        self.state = match method {
            AuthMethod::NoAuth => ServerState::AwaitingRequest,
            AuthMethod::UsernamePassword => ServerState::AwaitingAuth,
            // RFC 1928: "If the selected METHOD is X'FF', none of the methods listed by the
            // client are acceptable, and the client MUST close the connection." We close too.
            _ => ServerState::Closing(CloseReason::NoAcceptableMethod),
        };
        Ok(Some(n))
    }

    fn on_auth_request(&mut self, input: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let decoded = match AuthRequest::decode(input) {
            // RFC 1929 allows neither, but clients send them (curl sends PLEN 0 for
            // `user:@host`): they are credentials that cannot match, so the client gets the
            // failure status a wrong password gets, not a bare hang-up.
            Err(ProtocolError::Malformed(Malformed::EmptyUsername | Malformed::EmptyPassword)) => {
                AuthStatus::FAILURE.encode(&mut self.transmit);
                self.state = ServerState::Closing(CloseReason::AuthenticationFailed);
                return Ok(Some(input.len()));
            }
            decoded => decoded?,
        };
        let Some((request, n)) = decoded else {
            return Ok(None);
        };
        self.events
            .push_back(ServerEvent::Authenticate(request.credentials));
        self.state = ServerState::AwaitingCredentialsDecision;
        Ok(Some(n))
    }

    fn on_v5_request(&mut self, input: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let decoded = Request::decode(input).inspect_err(|e| self.queue_error_reply(e))?;
        let Some((request, n)) = decoded else {
            return Ok(None);
        };
        self.accept_request(Version::V5, request.command, request.target, None)?;
        Ok(Some(n))
    }

    fn on_v4_request(&mut self, input: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let decoded = V4Request::decode(input).inspect_err(|e| self.queue_error_reply(e))?;
        let Some((request, n)) = decoded else {
            return Ok(None);
        };
        if !self.config.allow_socks4 {
            // SOCKS4 cannot carry a password: letting it in would bypass authentication.
            self.queue_reply(Version::V4, ReplyCode::NotAllowed, &TargetAddr::UNSPECIFIED);
            self.state = ServerState::Closing(match self.config.auth {
                AuthPolicy::UsernamePassword => CloseReason::Socks4AuthRequired,
                AuthPolicy::None => CloseReason::Socks4Disabled,
            });
            return Ok(Some(n));
        }
        let user_id = Some(request.user_id);
        self.accept_request(Version::V4, request.command, request.target, user_id)?;
        Ok(Some(n))
    }

    /// Emits the request event, or answers an unsupported command itself.
    fn accept_request(
        &mut self,
        version: Version,
        command: Command,
        target: TargetAddr,
        user_id: Option<Vec<u8>>,
    ) -> Result<(), ProtocolError> {
        let supported = match command {
            Command::Connect | Command::Bind | Command::Resolve => true,
            // SOCKS4 has no UDP ASSOCIATE, and its reply cannot carry RESOLVE_PTR's name.
            Command::UdpAssociate | Command::ResolvePtr => version == Version::V5,
            Command::Unknown(_) => false,
        };
        if !supported {
            let e = ProtocolError::from(Incompatible::UnsupportedCommand { version, command });
            self.queue_error_reply(&e);
            return Err(e);
        }
        self.command = Some(command);
        self.events.push_back(ServerEvent::Request(IncomingRequest {
            version,
            command,
            target,
            user_id,
        }));
        self.state = ServerState::AwaitingReply;
        Ok(())
    }

    /// Queues the reply a request-phase error deserves, if any.
    fn queue_error_reply(&mut self, e: &ProtocolError) {
        if let (Some(code), Some(version)) = (e.reply_code(), self.version) {
            self.queue_reply(version, code, &TargetAddr::UNSPECIFIED);
        }
    }

    fn queue_reply(&mut self, version: Version, code: ReplyCode, bound: &TargetAddr) {
        match version {
            Version::V5 => Reply {
                code,
                bound: bound.clone(),
            }
            .encode(&mut self.transmit),
            Version::V4 => {
                let addr = match bound {
                    TargetAddr::Ip(SocketAddr::V4(a)) => *a,
                    _ => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
                };
                V4Reply {
                    code: V4ReplyCode::from_reply_code(code),
                    addr,
                }
                .encode(&mut self.transmit);
            }
        }
    }
}

/// Which source a UDP ASSOCIATE relay takes client datagrams from.
///
/// RFC 1928 section 7: the request's DST.ADDR and DST.PORT are where the client expects to
/// send from, and "the server MAY use this information to limit access to the association".
/// Only the IP of the control connection is trusted: a client behind NAT does not know the
/// address it is seen from, and a client that names another host's IP must not aim the
/// relay at it (reflection). So the IP is always the control connection's (IPv4-mapped
/// IPv6 canonicalised to IPv4); the request's port is taken only when its IP is that same
/// IP or unspecified (0.0.0.0, ::), and port 0 (or a name) means "not known yet": then the
/// first admitted datagram fixes it ([`UdpClientFilter::admit`]).
///
/// ```
/// use socksmith_proto::{TargetAddr, UdpClientFilter};
/// use std::net::SocketAddr;
///
/// let ip = "127.0.0.1".parse().unwrap();
/// let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
/// // A request naming another host: its IP and port are ignored.
/// let mut filter = UdpClientFilter::new(ip, &TargetAddr::Ip(addr("127.0.0.2:5000")));
/// assert!(!filter.admit(addr("127.0.0.2:5000")));
/// assert!(filter.admit(addr("127.0.0.1:6000")));
/// // The first datagram fixed the port.
/// assert!(!filter.admit(addr("127.0.0.1:6001")));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpClientFilter {
    ip: IpAddr,
    port: Option<u16>,
}

impl UdpClientFilter {
    /// The filter for an association asked for over a control connection from
    /// `control_peer`, whose request named `requested`.
    pub fn new(control_peer: IpAddr, requested: &TargetAddr) -> Self {
        let ip = control_peer.to_canonical();
        let port = match requested.ip_literal() {
            Some(addr) => {
                let named = addr.ip().to_canonical();
                (named == ip || named.is_unspecified()).then_some(addr.port())
            }
            // A name says nothing checkable about where the client sends from.
            None => None,
        };
        UdpClientFilter {
            ip,
            port: port.filter(|&p| p != 0),
        }
    }

    /// The client's IP: datagrams to the client go there.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The client's port, once known.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The client's address, once its port is known.
    pub fn client(&self) -> Option<SocketAddr> {
        self.port.map(|port| SocketAddr::new(self.ip, port))
    }

    /// Whether a datagram from `from` is the client's, without learning anything.
    pub fn admits(&self, from: SocketAddr) -> bool {
        from.ip().to_canonical() == self.ip && self.port.is_none_or(|port| port == from.port())
    }

    /// Whether a datagram from `from` is the client's; the first one admitted fixes the port
    /// when the request did not name it.
    pub fn admit(&mut self, from: SocketAddr) -> bool {
        let admitted = self.admits(from);
        if admitted {
            self.port = Some(from.port());
        }
        admitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> TargetAddr {
        TargetAddr::Ip(s.parse::<SocketAddr>().expect("literal"))
    }

    fn sent(hs: &mut ServerHandshake) -> Vec<u8> {
        let mut out = Vec::new();
        hs.poll_transmit(&mut out);
        out
    }

    fn request_event(hs: &mut ServerHandshake) -> IncomingRequest {
        match hs.poll_event() {
            Some(ServerEvent::Request(r)) => r,
            other => panic!("expected a request event, got {other:?}"),
        }
    }

    fn auth_required() -> ServerHandshake {
        ServerHandshake::new(HandshakeConfig::new(AuthPolicy::UsernamePassword))
    }

    #[test]
    fn greeting_byte_at_a_time() {
        let mut hs = ServerHandshake::new(HandshakeConfig::default());
        assert_eq!(hs.state(), ServerState::AwaitingGreeting);
        assert_eq!(hs.version(), None);
        assert_eq!(hs.receive(&[]), Ok(0));
        assert_eq!(hs.receive(&[5]), Ok(0));
        assert_eq!(hs.version(), Some(Version::V5));
        assert_eq!(hs.receive(&[5, 2]), Ok(0));
        assert_eq!(hs.receive(&[5, 2, 2]), Ok(0));
        assert_eq!(hs.receive(&[5, 2, 2, 0]), Ok(4));
        assert_eq!(sent(&mut hs), [5, 0]);
        assert_eq!(hs.state(), ServerState::AwaitingRequest);
    }

    #[test]
    fn username_password_flow() {
        let mut hs = auth_required();
        assert_eq!(hs.receive(&[5, 2, 0, 2]), Ok(4));
        assert_eq!(sent(&mut hs), [5, 2]);
        assert_eq!(hs.state(), ServerState::AwaitingAuth);
        let auth = [1, 3, b'f', b'o', b'o', 3, b'b', b'a', b'r'];
        // Auth request and pipelined request: the machine stops at the decision.
        let mut input = auth.to_vec();
        input.extend_from_slice(&[5, 1, 0, 1, 127, 0, 0, 1, 0, 80]);
        assert_eq!(hs.receive(&input), Ok(9));
        assert_eq!(
            hs.poll_event(),
            Some(ServerEvent::Authenticate(
                Credentials::new("foo", "bar").expect("valid")
            ))
        );
        assert_eq!(hs.state(), ServerState::AwaitingCredentialsDecision);
        assert_eq!(
            hs.receive(&input[9..]),
            Ok(0),
            "no request before the verdict"
        );
        hs.accept_credentials(true).expect("awaiting a verdict");
        assert_eq!(sent(&mut hs), [1, 0]);
        assert_eq!(hs.receive(&input[9..]), Ok(10));
        let req = request_event(&mut hs);
        assert_eq!((req.version, req.command), (Version::V5, Command::Connect));
        assert_eq!(req.target, ip("127.0.0.1:80"));
        assert_eq!(req.user_id, None);
    }

    #[test]
    fn rejected_credentials_close() {
        let mut hs = auth_required();
        hs.receive(&[5, 1, 2, 1, 1, b'u', 1, b'p']).expect("valid");
        assert!(matches!(
            hs.poll_event(),
            Some(ServerEvent::Authenticate(_))
        ));
        hs.accept_credentials(false).expect("awaiting a verdict");
        assert_eq!(sent(&mut hs), [5, 2, 1, 1]);
        assert_eq!(
            hs.state(),
            ServerState::Closing(CloseReason::AuthenticationFailed)
        );
        assert!(hs.is_finished());
        assert_eq!(hs.receive(&[5, 1, 0, 1, 1, 2, 3, 4, 0, 80]), Ok(0));
        assert!(hs.poll_event().is_none());
    }

    #[test]
    fn an_empty_username_or_password_gets_the_failure_status() {
        // curl sends PLEN 0 for `user:@host`; an empty name may come with more behind it.
        for auth in [&[1, 1, b'u', 0][..], &[1, 0], &[1, 0, 1, b'p']] {
            let mut hs = auth_required();
            hs.receive(&[5, 1, 2]).expect("greeting");
            assert_eq!(sent(&mut hs), [5, 2]);
            assert_eq!(hs.receive(auth), Ok(auth.len()), "{auth:?}");
            assert!(hs.poll_event().is_none(), "nothing to check: {auth:?}");
            assert_eq!(sent(&mut hs), [1, 1], "{auth:?}");
            assert_eq!(
                hs.state(),
                ServerState::Closing(CloseReason::AuthenticationFailed)
            );
        }
    }

    #[test]
    fn method_selection() {
        // Auth required, client offers only "none".
        let mut hs = auth_required();
        assert_eq!(hs.receive(&[5, 1, 0, 0xAA]), Ok(3));
        assert_eq!(sent(&mut hs), [5, 0xFF]);
        assert_eq!(
            hs.state(),
            ServerState::Closing(CloseReason::NoAcceptableMethod)
        );
        // No auth, client offers only username/password and GSSAPI.
        let mut hs = ServerHandshake::new(HandshakeConfig::default());
        assert_eq!(hs.receive(&[5, 2, 2, 1]), Ok(4));
        assert_eq!(sent(&mut hs), [5, 0xFF]);
        assert_eq!(
            hs.state(),
            ServerState::Closing(CloseReason::NoAcceptableMethod)
        );
        // Auth required: "none" is not chosen even when offered first.
        let mut hs = auth_required();
        hs.receive(&[5, 2, 0, 2]).expect("valid");
        assert_eq!(sent(&mut hs), [5, 2]);
    }

    #[test]
    fn first_byte_selects_the_protocol() {
        let mut hs = ServerHandshake::new(HandshakeConfig::default());
        assert_eq!(
            hs.receive(b"GET / HTTP/1.1\r\n"),
            Err(Incompatible::UnsupportedVersion(b'G').into())
        );
        assert!(sent(&mut hs).is_empty());
        assert!(matches!(
            hs.state(),
            ServerState::Closing(CloseReason::Error(_))
        ));
        assert_eq!(hs.receive(&[5, 1, 0]), Ok(0));

        let mut hs = ServerHandshake::new(HandshakeConfig::default());
        assert_eq!(hs.receive(&[5, 0]), Err(Malformed::NoMethods.into()));
        assert!(sent(&mut hs).is_empty(), "no reply to a broken greeting");
    }

    #[test]
    fn request_errors_are_answered_by_the_machine() {
        let cases: [(&[u8], ProtocolError, u8); 4] = [
            (
                &[5, 9, 0, 1, 1, 2, 3, 4, 0, 80],
                Incompatible::UnsupportedCommand {
                    version: Version::V5,
                    command: Command::Unknown(9),
                }
                .into(),
                0x07,
            ),
            (&[5, 1, 0, 7], Malformed::UnknownAddressType(7).into(), 0x08),
            (&[5, 1, 1], Malformed::NonZeroReserved(1).into(), 0x01),
            (&[5, 1, 0, 3, 0], Malformed::EmptyDomain.into(), 0x01),
        ];
        for (request, error, rep) in cases {
            let mut hs = ServerHandshake::new(HandshakeConfig::default());
            hs.receive(&[5, 1, 0]).expect("valid greeting");
            assert_eq!(sent(&mut hs), [5, 0]);
            assert_eq!(hs.receive(request), Err(error.clone()));
            assert_eq!(sent(&mut hs), [5, rep, 0, 1, 0, 0, 0, 0, 0, 0]);
            assert_eq!(hs.state(), ServerState::Closing(CloseReason::Error(error)));
            assert!(
                hs.poll_event().is_none(),
                "the caller never sees the request"
            );
        }
    }

    #[test]
    fn socks4_connect_and_unknown_command() {
        let mut hs = ServerHandshake::new(HandshakeConfig::default());
        let mut input = vec![4, 1, 0, 80, 127, 0, 0, 1, b'u', 0];
        input.extend_from_slice(b"payload");
        assert_eq!(hs.receive(&input), Ok(10));
        let req = request_event(&mut hs);
        assert_eq!(req.version, Version::V4);
        assert_eq!(req.user_id.as_deref(), Some(&b"u"[..]));
        hs.reply(ReplyCode::Succeeded, ip("10.0.0.2:4321"))
            .expect("awaiting");
        assert_eq!(sent(&mut hs), [0, 0x5A, 0x10, 0xE1, 10, 0, 0, 2]);
        assert_eq!(hs.state(), ServerState::Established);

        let mut hs = ServerHandshake::new(HandshakeConfig::default());
        let err = hs
            .receive(&[4, 3, 0, 80, 1, 2, 3, 4, 0])
            .expect_err("unsupported");
        assert_eq!(err.reply_code(), Some(ReplyCode::CommandNotSupported));
        assert_eq!(sent(&mut hs), [0, 0x5B, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn socks4_refused_when_authentication_is_required() {
        let mut hs = auth_required();
        assert_eq!(hs.receive(&[4, 1, 0, 80, 1, 2, 3, 4, 0, b'x']), Ok(9));
        assert_eq!(sent(&mut hs), [0, 0x5B, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            hs.state(),
            ServerState::Closing(CloseReason::Socks4AuthRequired)
        );
        assert!(hs.poll_event().is_none());

        let mut hs = ServerHandshake::new(HandshakeConfig {
            auth: AuthPolicy::None,
            allow_socks4: false,
        });
        hs.receive(&[4, 1, 0, 80, 1, 2, 3, 4, 0]).expect("valid");
        assert_eq!(
            hs.state(),
            ServerState::Closing(CloseReason::Socks4Disabled)
        );

        let mut hs = ServerHandshake::new(HandshakeConfig {
            auth: AuthPolicy::UsernamePassword,
            allow_socks4: true,
        });
        hs.receive(&[4, 1, 0, 80, 1, 2, 3, 4, 0]).expect("valid");
        assert_eq!(hs.state(), ServerState::AwaitingReply);
    }

    #[test]
    fn socks4a_resolve_answer_goes_in_dstip() {
        let mut hs = ServerHandshake::new(HandshakeConfig::default());
        hs.receive(b"\x04\xf0\x00\x00\x00\x00\x00\x01\x00torproject.org\x00")
            .expect("valid");
        let req = request_event(&mut hs);
        assert_eq!(req.command, Command::Resolve);
        hs.reply(ReplyCode::Succeeded, ip("1.2.3.4:0"))
            .expect("awaiting");
        assert_eq!(sent(&mut hs), [0, 0x5A, 0, 0, 1, 2, 3, 4]);
        assert_eq!(hs.state(), ServerState::Closing(CloseReason::Resolved));
    }

    #[test]
    fn socks4_connect_reply_with_a_non_ipv4_bound_sends_zeros() {
        let mut hs = ServerHandshake::new(HandshakeConfig::default());
        hs.receive(&[4, 1, 0, 80, 1, 2, 3, 4, 0]).expect("valid");
        hs.reply(ReplyCode::Succeeded, ip("[::1]:80"))
            .expect("awaiting");
        assert_eq!(sent(&mut hs), [0, 0x5A, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn socks4_refuses_to_grant_a_bind_or_resolve_it_cannot_address() {
        // BIND: the first reply is where the client must connect.
        for (bound, error) in [
            (ip("[::1]:5000"), InvalidInput::V4Ipv6Address),
            (
                TargetAddr::domain("relay.example", 5000).expect("valid"),
                InvalidInput::V4Domain,
            ),
        ] {
            let mut hs = ServerHandshake::new(HandshakeConfig::default());
            hs.receive(&[4, 2, 0, 0, 0, 0, 0, 0, 0]).expect("valid");
            assert_eq!(request_event(&mut hs).command, Command::Bind);
            assert_eq!(hs.check_bound(&bound), Err(error.clone().into()));
            assert_eq!(hs.check_bound(&ip("10.0.0.1:5000")), Ok(()));
            assert_eq!(hs.reply(ReplyCode::Succeeded, bound), Err(error.into()));
            assert_eq!(
                sent(&mut hs),
                [0, 0x5B, 0, 0, 0, 0, 0, 0],
                "refused, not granted"
            );
            assert_eq!(
                hs.state(),
                ServerState::Closing(CloseReason::RequestFailed(ReplyCode::GeneralFailure))
            );
        }
        // RESOLVE: the address is the answer.
        let mut hs = ServerHandshake::new(HandshakeConfig::default());
        hs.receive(b"\x04\xf0\x00\x00\x00\x00\x00\x01\x00example.org\x00")
            .expect("valid");
        request_event(&mut hs);
        assert_eq!(
            hs.reply(ReplyCode::Succeeded, ip("[2001:db8::1]:0")),
            Err(InvalidInput::V4Ipv6Address.into())
        );
        assert_eq!(sent(&mut hs), [0, 0x5B, 0, 0, 0, 0, 0, 0]);
        // A failure needs no address; SOCKS5 carries any.
        let mut hs = ServerHandshake::new(HandshakeConfig::default());
        hs.receive(&[4, 2, 0, 0, 0, 0, 0, 0, 0]).expect("valid");
        hs.reply(ReplyCode::GeneralFailure, ip("[::1]:1"))
            .expect("a failure is always sendable");
        let mut hs = ServerHandshake::new(HandshakeConfig::default());
        hs.receive(&[5, 1, 0, 5, 2, 0, 1, 0, 0, 0, 0, 0, 0])
            .expect("valid");
        assert_eq!(hs.check_bound(&ip("[::1]:5000")), Ok(()));
        hs.reply(ReplyCode::Succeeded, ip("[::1]:5000"))
            .expect("SOCKS5 carries IPv6");
    }

    #[test]
    fn socks4_bind_second_reply_may_send_zeros() {
        let mut hs = ServerHandshake::new(HandshakeConfig::default());
        hs.receive(&[4, 2, 0, 0, 0, 0, 0, 0, 0]).expect("valid");
        request_event(&mut hs);
        hs.reply(ReplyCode::Succeeded, ip("10.0.0.1:5000"))
            .expect("first");
        sent(&mut hs);
        assert_eq!(hs.check_bound(&ip("[::1]:6000")), Ok(()));
        hs.reply(ReplyCode::Succeeded, ip("[::1]:6000"))
            .expect("second");
        assert_eq!(sent(&mut hs), [0, 0x5A, 0, 0, 0, 0, 0, 0]);
        assert_eq!(hs.state(), ServerState::Established);
    }

    #[test]
    fn bind_takes_two_replies() {
        let mut hs = ServerHandshake::new(HandshakeConfig::default());
        hs.receive(&[5, 1, 0, 5, 2, 0, 1, 1, 2, 3, 4, 0, 0])
            .expect("valid");
        assert_eq!(request_event(&mut hs).command, Command::Bind);
        sent(&mut hs);
        hs.reply(ReplyCode::Succeeded, ip("10.0.0.1:5000"))
            .expect("first");
        assert_eq!(hs.state(), ServerState::AwaitingBindPeer);
        assert!(!hs.is_finished());
        hs.reply(ReplyCode::Succeeded, ip("1.2.3.4:6000"))
            .expect("second");
        assert_eq!(hs.state(), ServerState::Established);
        let mut expected = vec![5, 0, 0, 1, 10, 0, 0, 1, 0x13, 0x88];
        expected.extend_from_slice(&[5, 0, 0, 1, 1, 2, 3, 4, 0x17, 0x70]);
        assert_eq!(sent(&mut hs), expected);
        assert!(matches!(
            hs.reply(ReplyCode::Succeeded, TargetAddr::UNSPECIFIED),
            Err(ProtocolError::InvalidState(_))
        ));

        // A failed second reply closes.
        let mut hs = ServerHandshake::new(HandshakeConfig::default());
        hs.receive(&[5, 1, 0, 5, 2, 0, 1, 1, 2, 3, 4, 0, 0])
            .expect("valid");
        hs.reply(ReplyCode::Succeeded, ip("10.0.0.1:5000"))
            .expect("first");
        hs.reply(ReplyCode::NotAllowed, TargetAddr::UNSPECIFIED)
            .expect("second");
        assert_eq!(
            hs.state(),
            ServerState::Closing(CloseReason::RequestFailed(ReplyCode::NotAllowed))
        );
    }

    #[test]
    fn udp_associate_and_resolve_ptr() {
        let mut hs = ServerHandshake::new(HandshakeConfig::default());
        hs.receive(&[5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0])
            .expect("valid");
        assert_eq!(request_event(&mut hs).command, Command::UdpAssociate);
        hs.reply(ReplyCode::Succeeded, ip("127.0.0.1:9999"))
            .expect("awaiting");
        assert_eq!(hs.state(), ServerState::Established);

        let mut hs = ServerHandshake::new(HandshakeConfig::default());
        hs.receive(&[5, 1, 0, 5, 0xF1, 0, 1, 8, 8, 8, 8, 0, 0])
            .expect("valid");
        assert_eq!(request_event(&mut hs).command, Command::ResolvePtr);
        sent(&mut hs);
        let name = TargetAddr::domain("dns.google", 0).expect("valid");
        hs.reply(ReplyCode::Succeeded, name).expect("awaiting");
        assert_eq!(sent(&mut hs), b"\x05\x00\x00\x03\x0adns.google\x00\x00");
        assert_eq!(hs.state(), ServerState::Closing(CloseReason::Resolved));
    }

    #[test]
    fn decisions_out_of_order_are_state_errors() {
        let mut hs = ServerHandshake::new(HandshakeConfig::default());
        assert!(matches!(
            hs.accept_credentials(true),
            Err(ProtocolError::InvalidState(_))
        ));
        assert!(matches!(
            hs.reply(ReplyCode::Succeeded, TargetAddr::UNSPECIFIED),
            Err(ProtocolError::InvalidState(_))
        ));
        assert_eq!(hs.state(), ServerState::AwaitingGreeting);
    }

    #[test]
    fn udp_filter_trusts_only_the_control_connections_ip() {
        let addr = |s: &str| s.parse::<SocketAddr>().expect("literal");
        let peer: IpAddr = "127.0.0.1".parse().expect("literal");
        // Another host's IP in the request: neither its IP nor its port is used.
        let f = UdpClientFilter::new(peer, &ip("127.0.0.2:5000"));
        assert_eq!((f.ip(), f.port()), (peer, None));
        assert!(!f.admits(addr("127.0.0.2:5000")));
        assert!(f.admits(addr("127.0.0.1:5001")));
        // The control connection's own IP, or an unspecified one: the port is taken.
        for requested in [
            "127.0.0.1:5000",
            "0.0.0.0:5000",
            "[::]:5000",
            "[::ffff:127.0.0.1]:5000",
        ] {
            let f = UdpClientFilter::new(peer, &ip(requested));
            assert_eq!(f.client(), Some(addr("127.0.0.1:5000")), "{requested}");
            assert!(!f.admits(addr("127.0.0.1:5001")), "{requested}");
        }
        // Port 0 and names: learned from the first datagram.
        let name = TargetAddr::domain("client.example", 5000).expect("valid");
        for requested in [ip("0.0.0.0:0"), ip("127.0.0.1:0"), name] {
            let mut f = UdpClientFilter::new(peer, &requested);
            assert_eq!(f.port(), None, "{requested}");
            assert!(!f.admit(addr("127.0.0.3:7000")), "{requested}");
            assert_eq!(f.port(), None, "a stranger teaches nothing");
            assert!(f.admit(addr("127.0.0.1:7000")));
            assert!(!f.admit(addr("127.0.0.1:7001")));
        }
        // A v4-mapped control connection is the IPv4 client.
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("literal");
        let f = UdpClientFilter::new(mapped, &ip("0.0.0.0:0"));
        assert_eq!(f.ip(), peer);
        assert!(f.admits(addr("127.0.0.1:9")));
        assert!(f.admits(addr("[::ffff:127.0.0.1]:9")));
    }
}
