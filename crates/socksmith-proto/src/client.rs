//! The client side of the handshake as a sans-IO state machine: [`ClientHandshake`].
//!
//! The machine validates the request up front (what the chosen version can carry), produces
//! the bytes to send and turns the server's answers into events or typed errors. It never
//! reads past the final reply: bytes the server sends right after it stay with the caller.
//!
//! SOCKS5 is not pipelined: the greeting goes first, the request only after the method choice,
//! which every server understands.
//!
//! ```
//! use socksmith_proto::{ClientConfig, ClientEvent, ClientHandshake, ClientState, ClientVersion,
//!     Command, TargetAddr};
//! let mut hs = ClientHandshake::new(ClientConfig {
//!     version: ClientVersion::V5,
//!     credentials: None,
//!     user_id: None,
//!     command: Command::Connect,
//!     target: TargetAddr::domain("example.com", 80).unwrap(),
//! })
//! .unwrap();
//! let mut out = Vec::new();
//! hs.poll_transmit(&mut out);
//! assert_eq!(out, [5, 1, 0]); // greeting: no authentication
//! assert_eq!(hs.receive(&[5, 0]).unwrap(), 2); // server chose no authentication
//! out.clear();
//! hs.poll_transmit(&mut out);
//! assert_eq!(&out[..5], &[5, 1, 0, 3, 11]); // CONNECT example.com
//! let reply_and_data = [5, 0, 0, 1, 10, 0, 0, 1, 0x1f, 0x90, b'h', b'i'];
//! assert_eq!(hs.receive(&reply_and_data).unwrap(), 10); // "hi" is tunnel data
//! assert!(matches!(hs.poll_event(), Some(ClientEvent::Succeeded { .. })));
//! assert_eq!(hs.state(), ClientState::Established);
//! ```
//!
//! Every unsuccessful end is an `Err` from `receive`: no acceptable method
//! ([`crate::Incompatible::NoAcceptableMethod`]), failed authentication and failure replies
//! ([`crate::Denied`]), a method that was never offered ([`crate::PeerMisbehaved`]), and
//! malformed answers. The state is then `Failed`.

use crate::addr::TargetAddr;
use crate::auth::{AuthRequest, AuthStatus, Credentials};
use crate::error::{Denied, Incompatible, InvalidInput, PeerMisbehaved, ProtocolError, Version};
use crate::v4::{V4Reply, V4Request};
use crate::v5::{AuthMethod, Command, Greeting, MethodChoice, Reply, Request};
use std::collections::VecDeque;

/// The protocol the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientVersion {
    /// SOCKS4: IPv4 targets only.
    V4,
    /// SOCKS4a: IPv4 or domain targets (the server resolves).
    V4a,
    /// SOCKS5.
    V5,
}

/// What the client asks for and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The protocol version.
    pub version: ClientVersion,
    /// SOCKS5: offered with method 0x02 next to 0x00. SOCKS4/4a: when `user_id` is `None`,
    /// the username is sent as the user id; the password is never sent.
    pub credentials: Option<Credentials>,
    /// SOCKS4/4a: the USERID field, sent as is (empty is valid; at most 255 bytes, no NUL).
    /// `None` sends the username of `credentials`, or an empty user id without them. Unused
    /// by SOCKS5.
    pub user_id: Option<Vec<u8>>,
    /// The command.
    pub command: Command,
    /// The target: for RESOLVE a domain (port conventionally 0), for RESOLVE_PTR an IP.
    pub target: TargetAddr,
}

/// Something the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// BIND only, first reply: the server listens at `bound` (if its IP is unspecified,
    /// substitute the proxy's address). A second reply follows when a peer connects.
    BindListening {
        /// The address the server listens on.
        bound: TargetAddr,
    },
    /// The request succeeded. `bound` is BND.ADDR: for CONNECT the server's outbound address,
    /// for BIND the peer that connected, for UDP ASSOCIATE the relay's address, for RESOLVE
    /// the answer (an IP), for RESOLVE_PTR the answer (a name).
    Succeeded {
        /// BND.ADDR and BND.PORT (SOCKS4: DSTIP and DSTPORT).
        bound: TargetAddr,
    },
}

/// Where the client handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// The greeting is sent or queued; waiting for the method choice.
    AwaitingMethodChoice,
    /// The RFC 1929 request is sent or queued; waiting for the status.
    AwaitingAuthStatus,
    /// The request is sent or queued; waiting for the reply.
    AwaitingReply,
    /// BIND: the first reply arrived; waiting for the second.
    AwaitingBindPeer,
    /// The handshake succeeded: the tunnel begins (for RESOLVE/RESOLVE_PTR there is no
    /// tunnel; close).
    Established,
    /// `receive` returned an error; close.
    Failed,
}

/// The client-side handshake machine. See the [module docs](self).
#[derive(Debug)]
pub struct ClientHandshake {
    config: ClientConfig,
    state: ClientState,
    /// The methods the greeting offered (SOCKS5).
    offered: Vec<AuthMethod>,
    /// Bytes queued for the server.
    transmit: Vec<u8>,
    events: VecDeque<ClientEvent>,
}

impl ClientHandshake {
    /// Validates `config` and queues the first message (the SOCKS5 greeting or the SOCKS4
    /// request).
    ///
    /// Errors ([`crate::InvalidInput`]): SOCKS4/4a with an IPv6 target, plain SOCKS4 with a
    /// domain, UDP ASSOCIATE or RESOLVE_PTR over SOCKS4/4a, RESOLVE without a domain target
    /// (so never over plain SOCKS4), RESOLVE_PTR without an IP target, a SOCKS4 user id
    /// containing NUL or longer than 255 bytes.
    pub fn new(config: ClientConfig) -> Result<Self, ProtocolError> {
        let version = match config.version {
            ClientVersion::V4 | ClientVersion::V4a => Version::V4,
            ClientVersion::V5 => Version::V5,
        };
        match (config.command, &config.target) {
            (Command::Resolve, TargetAddr::Ip(_)) => {
                return Err(InvalidInput::ResolveNeedsDomain.into())
            }
            (Command::ResolvePtr, TargetAddr::Domain(..)) => {
                return Err(InvalidInput::ResolvePtrNeedsIpOverV5.into())
            }
            (Command::ResolvePtr, _) if version == Version::V4 => {
                return Err(InvalidInput::ResolvePtrNeedsIpOverV5.into())
            }
            (Command::UdpAssociate, _) if version == Version::V4 => {
                return Err(InvalidInput::UnsupportedCommand {
                    version,
                    command: config.command,
                }
                .into())
            }
            (_, TargetAddr::Domain(..)) if config.version == ClientVersion::V4 => {
                return Err(InvalidInput::V4Domain.into())
            }
            _ => {}
        }
        let mut hs = ClientHandshake {
            config,
            state: ClientState::AwaitingMethodChoice,
            offered: Vec::new(),
            transmit: Vec::new(),
            events: VecDeque::new(),
        };
        match version {
            Version::V4 => {
                hs.queue_request()?;
                hs.state = ClientState::AwaitingReply;
            }
            Version::V5 => {
                hs.offered.push(AuthMethod::NoAuth);
                if hs.config.credentials.is_some() {
                    hs.offered.push(AuthMethod::UsernamePassword);
                }
                Greeting {
                    methods: hs.offered.clone(),
                }
                .encode(&mut hs.transmit)?;
            }
        }
        Ok(hs)
    }

    /// Appends the bytes to send to the server to `out` and returns how many were appended.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        let n = self.transmit.len();
        out.append(&mut self.transmit);
        n
    }

    /// Feeds bytes received from the server; returns how many were consumed, never a byte past
    /// the final reply. Returns `Ok(0)` once `Established` or `Failed`.
    ///
    /// After an error the connection must close, so the number of bytes consumed is not
    /// reported (a call may have consumed earlier messages of `input` before failing).
    pub fn receive(&mut self, input: &[u8]) -> Result<usize, ProtocolError> {
        let mut used = 0;
        loop {
            let rest = input.get(used..).unwrap_or_default();
            let step = match self.state {
                ClientState::AwaitingMethodChoice => self.on_method_choice(rest),
                ClientState::AwaitingAuthStatus => self.on_auth_status(rest),
                ClientState::AwaitingReply | ClientState::AwaitingBindPeer => self.on_reply(rest),
                ClientState::Established | ClientState::Failed => return Ok(used),
            };
            match step {
                Ok(Some(n)) => used += n,
                Ok(None) => return Ok(used),
                Err(e) => {
                    self.state = ClientState::Failed;
                    return Err(e);
                }
            }
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Where the handshake stands.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// Whether the handshake is over (`Established` or `Failed`).
    pub fn is_finished(&self) -> bool {
        matches!(self.state, ClientState::Established | ClientState::Failed)
    }

    fn on_method_choice(&mut self, input: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let Some((choice, n)) = MethodChoice::decode(input)? else {
            return Ok(None);
        };
        match choice.method {
            AuthMethod::NoAcceptable => return Err(Incompatible::NoAcceptableMethod.into()),
            m if !self.offered.contains(&m) => {
                return Err(PeerMisbehaved::UnofferedMethod(m).into())
            }
            AuthMethod::UsernamePassword => {
                let credentials = self
                    .config
                    .credentials
                    .clone()
                    .expect("username/password is offered only with credentials");
                AuthRequest { credentials }.encode(&mut self.transmit);
                self.state = ClientState::AwaitingAuthStatus;
            }
            _ => {
                self.queue_request()?;
                self.state = ClientState::AwaitingReply;
            }
        }
        Ok(Some(n))
    }

    fn on_auth_status(&mut self, input: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let Some((status, n)) = AuthStatus::decode(input)? else {
            return Ok(None);
        };
        if !status.is_success() {
            return Err(Denied::AuthenticationFailed { status: status.0 }.into());
        }
        self.queue_request()?;
        self.state = ClientState::AwaitingReply;
        Ok(Some(n))
    }

    fn on_reply(&mut self, input: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let (code, v4_code, bound, n) = match self.config.version {
            ClientVersion::V5 => {
                let Some((reply, n)) = Reply::decode(input)? else {
                    return Ok(None);
                };
                (reply.code, None, reply.bound, n)
            }
            ClientVersion::V4 | ClientVersion::V4a => {
                let Some((reply, n)) = V4Reply::decode(input)? else {
                    return Ok(None);
                };
                let bound = TargetAddr::from(reply.addr);
                (reply.code.to_reply_code(), Some(reply.code), bound, n)
            }
        };
        if !code.is_success() {
            return Err(Denied::Rejected { code, v4_code }.into());
        }
        let first_bind_reply =
            self.config.command == Command::Bind && self.state == ClientState::AwaitingReply;
        if first_bind_reply {
            self.events.push_back(ClientEvent::BindListening { bound });
            self.state = ClientState::AwaitingBindPeer;
        } else {
            self.events.push_back(ClientEvent::Succeeded { bound });
            self.state = ClientState::Established;
        }
        Ok(Some(n))
    }

    /// Queues the request in the configured version.
    fn queue_request(&mut self) -> Result<(), ProtocolError> {
        let ClientConfig {
            version,
            credentials,
            user_id,
            command,
            target,
        } = &self.config;
        match version {
            ClientVersion::V5 => Request {
                command: *command,
                target: target.clone(),
            }
            .encode(&mut self.transmit),
            ClientVersion::V4 | ClientVersion::V4a => V4Request {
                command: *command,
                target: target.clone(),
                user_id: match (user_id, credentials) {
                    (Some(id), _) => id.clone(),
                    (None, Some(c)) => c.username().to_vec(),
                    (None, None) => Vec::new(),
                },
            }
            .encode(&mut self.transmit)?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Malformed;
    use crate::v4::V4ReplyCode;
    use crate::v5::ReplyCode;
    use std::net::SocketAddr;

    fn ip(s: &str) -> TargetAddr {
        TargetAddr::Ip(s.parse::<SocketAddr>().expect("literal"))
    }

    fn config(version: ClientVersion, command: Command, target: TargetAddr) -> ClientConfig {
        ClientConfig {
            version,
            credentials: None,
            user_id: None,
            command,
            target,
        }
    }

    fn sent(hs: &mut ClientHandshake) -> Vec<u8> {
        let mut out = Vec::new();
        hs.poll_transmit(&mut out);
        out
    }

    #[test]
    fn config_validation() {
        let domain = TargetAddr::domain("example.com", 80).expect("valid");
        let cases = [
            (
                ClientVersion::V4,
                Command::Connect,
                ip("[::1]:80"),
                InvalidInput::V4Ipv6Address,
            ),
            (
                ClientVersion::V4a,
                Command::Connect,
                ip("[::1]:80"),
                InvalidInput::V4Ipv6Address,
            ),
            (
                ClientVersion::V4,
                Command::Connect,
                domain.clone(),
                InvalidInput::V4Domain,
            ),
            (
                ClientVersion::V4,
                Command::Resolve,
                domain.clone(),
                InvalidInput::V4Domain,
            ),
            (
                ClientVersion::V4a,
                Command::Resolve,
                ip("1.2.3.4:0"),
                InvalidInput::ResolveNeedsDomain,
            ),
            (
                ClientVersion::V5,
                Command::Resolve,
                ip("1.2.3.4:0"),
                InvalidInput::ResolveNeedsDomain,
            ),
            (
                ClientVersion::V5,
                Command::ResolvePtr,
                domain.clone(),
                InvalidInput::ResolvePtrNeedsIpOverV5,
            ),
            (
                ClientVersion::V4a,
                Command::ResolvePtr,
                ip("1.2.3.4:0"),
                InvalidInput::ResolvePtrNeedsIpOverV5,
            ),
            (
                ClientVersion::V4a,
                Command::UdpAssociate,
                ip("0.0.0.0:0"),
                InvalidInput::UnsupportedCommand {
                    version: Version::V4,
                    command: Command::UdpAssociate,
                },
            ),
        ];
        for (version, command, target, error) in cases {
            assert_eq!(
                ClientHandshake::new(config(version, command, target)).map(|_| ()),
                Err(error.into())
            );
        }
        let mut with_nul = config(ClientVersion::V4, Command::Connect, ip("1.2.3.4:80"));
        with_nul.credentials = Some(Credentials::new("a\0b", "p").expect("valid"));
        assert_eq!(
            ClientHandshake::new(with_nul).map(|_| ()),
            Err(InvalidInput::V4UserIdContainsNul.into())
        );
        assert!(ClientHandshake::new(config(ClientVersion::V4a, Command::Resolve, domain)).is_ok());
    }

    #[test]
    fn socks4_sends_the_request_at_once_with_the_username_as_user_id() {
        let mut cfg = config(ClientVersion::V4, Command::Connect, ip("127.0.0.1:80"));
        cfg.credentials = Some(Credentials::new("u", "secret").expect("valid"));
        let mut hs = ClientHandshake::new(cfg).expect("valid");
        assert_eq!(hs.state(), ClientState::AwaitingReply);
        assert_eq!(sent(&mut hs), [4, 1, 0, 80, 127, 0, 0, 1, b'u', 0]);
        assert_eq!(hs.receive(&[0, 0x5A, 0, 0, 0, 0, 0]), Ok(0));
        assert_eq!(hs.receive(&[0, 0x5A, 0, 0, 0, 0, 0, 0, 0xEE]), Ok(8));
        assert_eq!(
            hs.poll_event(),
            Some(ClientEvent::Succeeded {
                bound: ip("0.0.0.0:0")
            })
        );
        assert_eq!(hs.state(), ClientState::Established);
        assert_eq!(hs.receive(&[0xEE]), Ok(0));
    }

    #[test]
    fn socks4_user_id_is_sent_as_given_even_empty() {
        let request = |user_id: &[u8], credentials: Option<Credentials>| {
            let mut cfg = config(ClientVersion::V4, Command::Connect, ip("127.0.0.1:80"));
            cfg.user_id = Some(user_id.to_vec());
            cfg.credentials = credentials;
            ClientHandshake::new(cfg).map(|mut hs| sent(&mut hs))
        };
        assert_eq!(
            request(b"id", None),
            Ok(vec![4, 1, 0, 80, 127, 0, 0, 1, b'i', b'd', 0])
        );
        // The explicit user id wins over the credentials' username, even when empty.
        let creds = Credentials::new("u", "p").expect("valid");
        assert_eq!(
            request(b"", Some(creds)),
            Ok(vec![4, 1, 0, 80, 127, 0, 0, 1, 0])
        );
        assert_eq!(
            request(&[b'a'; 256], None),
            Err(InvalidInput::V4UserIdTooLong(256).into())
        );
        assert_eq!(
            request(b"a\0b", None),
            Err(InvalidInput::V4UserIdContainsNul.into())
        );
    }

    #[test]
    fn socks4a_rejection_is_an_error_with_both_codes() {
        let target = TargetAddr::domain("example.com", 80).expect("valid");
        let mut hs = ClientHandshake::new(config(ClientVersion::V4a, Command::Connect, target))
            .expect("valid");
        assert_eq!(
            sent(&mut hs),
            b"\x04\x01\x00\x50\x00\x00\x00\x01\x00example.com\x00"
        );
        assert_eq!(
            hs.receive(&[0, 0x5C, 0, 0, 0, 0, 0, 0]),
            Err(Denied::Rejected {
                code: ReplyCode::NotAllowed,
                v4_code: Some(V4ReplyCode::IdentdUnreachable)
            }
            .into())
        );
        assert_eq!(hs.state(), ClientState::Failed);
        assert!(hs.poll_event().is_none());
    }

    #[test]
    fn socks5_with_credentials() {
        let mut cfg = config(ClientVersion::V5, Command::Connect, ip("127.0.0.1:80"));
        cfg.credentials = Some(Credentials::new("foo", "bar").expect("valid"));
        let mut hs = ClientHandshake::new(cfg).expect("valid");
        assert_eq!(sent(&mut hs), [5, 2, 0, 2]);
        assert_eq!(hs.receive(&[5, 2]), Ok(2));
        assert_eq!(sent(&mut hs), [1, 3, b'f', b'o', b'o', 3, b'b', b'a', b'r']);
        assert_eq!(hs.state(), ClientState::AwaitingAuthStatus);
        assert_eq!(hs.receive(&[1, 0]), Ok(2));
        assert_eq!(sent(&mut hs), [5, 1, 0, 1, 127, 0, 0, 1, 0, 80]);
        assert_eq!(hs.receive(&[5, 0, 0, 1, 1, 2, 3, 4, 0, 9, 1]), Ok(10));
        assert_eq!(
            hs.poll_event(),
            Some(ClientEvent::Succeeded {
                bound: ip("1.2.3.4:9")
            })
        );
        assert!(hs.is_finished());
    }

    #[test]
    fn socks5_failures() {
        let new = |creds: bool| {
            let mut cfg = config(ClientVersion::V5, Command::Connect, ip("127.0.0.1:80"));
            if creds {
                cfg.credentials = Some(Credentials::new("u", "p").expect("valid"));
            }
            ClientHandshake::new(cfg).expect("valid")
        };
        assert_eq!(
            new(false).receive(&[5, 0xFF]),
            Err(Incompatible::NoAcceptableMethod.into())
        );
        assert_eq!(
            new(false).receive(&[5, 2]),
            Err(PeerMisbehaved::UnofferedMethod(AuthMethod::UsernamePassword).into())
        );
        assert_eq!(
            new(true).receive(&[5, 1]),
            Err(PeerMisbehaved::UnofferedMethod(AuthMethod::Gssapi).into())
        );
        assert_eq!(
            new(true).receive(&[5, 2, 1, 1]),
            Err(Denied::AuthenticationFailed { status: 1 }.into())
        );
        assert_eq!(
            new(true).receive(&[5, 2, 5, 0]),
            Err(Malformed::WrongSubnegotiationVersion(5).into())
        );
        let mut hs = new(false);
        assert_eq!(
            hs.receive(&[5, 0, 5, 5, 0, 1, 0, 0, 0, 0, 0, 0]),
            Err(Denied::Rejected {
                code: ReplyCode::ConnectionRefused,
                v4_code: None
            }
            .into())
        );
        assert_eq!(hs.state(), ClientState::Failed);
        assert_eq!(hs.receive(&[5, 0]), Ok(0));
    }

    #[test]
    fn bind_waits_for_the_second_reply() {
        let mut hs =
            ClientHandshake::new(config(ClientVersion::V5, Command::Bind, ip("1.2.3.4:0")))
                .expect("valid");
        let first = [5, 0, 0, 1, 10, 0, 0, 1, 0x13, 0x88];
        let second = [5, 0, 0, 1, 1, 2, 3, 4, 0x17, 0x70];
        let mut input = vec![5, 0];
        input.extend_from_slice(&first);
        assert_eq!(hs.receive(&input), Ok(12));
        assert_eq!(
            hs.poll_event(),
            Some(ClientEvent::BindListening {
                bound: ip("10.0.0.1:5000")
            })
        );
        assert_eq!(hs.state(), ClientState::AwaitingBindPeer);
        assert_eq!(hs.receive(&second), Ok(10));
        assert_eq!(
            hs.poll_event(),
            Some(ClientEvent::Succeeded {
                bound: ip("1.2.3.4:6000")
            })
        );
        assert_eq!(hs.state(), ClientState::Established);
    }

    #[test]
    fn resolve_ptr_answer_is_a_name() {
        let mut hs = ClientHandshake::new(config(
            ClientVersion::V5,
            Command::ResolvePtr,
            ip("8.8.8.8:0"),
        ))
        .expect("valid");
        hs.receive(&[5, 0]).expect("valid");
        assert_eq!(sent(&mut hs), [5, 1, 0, 5, 0xF1, 0, 1, 8, 8, 8, 8, 0, 0]);
        hs.receive(b"\x05\x00\x00\x03\x0adns.google\x00\x00")
            .expect("valid");
        assert_eq!(
            hs.poll_event(),
            Some(ClientEvent::Succeeded {
                bound: TargetAddr::domain("dns.google", 0).expect("valid")
            })
        );
    }
}
