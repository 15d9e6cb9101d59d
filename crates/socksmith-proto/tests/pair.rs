//! A `ClientHandshake` and a `ServerHandshake` wired together in memory (quinn's `Pair`):
//! every version × command × address type, with and without authentication, wrong passwords
//! and server refusals. Asserts the events on both sides, the final states, and that bytes
//! sent after the request (client) or after the final reply (server) are never consumed.

use socksmith_proto::{
    AuthPolicy, ClientConfig, ClientEvent, ClientHandshake, ClientState, ClientVersion,
    CloseReason, Command, Credentials, Denied, HandshakeConfig, IncomingRequest, Incompatible,
    InvalidInput, ProtocolError, ReplyCode, ServerEvent, ServerHandshake, ServerState, TargetAddr,
    V4ReplyCode, Version,
};
use std::net::SocketAddr;

const CLIENT_EARLY_DATA: &[u8] = b"GET / HTTP/1.1\r\n";
const SERVER_EARLY_DATA: &[u8] = b"SSH-2.0-banner\r\n";

fn ip(s: &str) -> TargetAddr {
    TargetAddr::Ip(s.parse::<SocketAddr>().expect("literal"))
}

/// What the server side decides.
#[derive(Clone)]
struct ServerScript {
    /// The password the server accepts (for user "alice").
    password: &'static [u8],
    /// The reply to every request (both BIND replies).
    reply: ReplyCode,
    /// BND for the first reply, and for BIND the second.
    bound: [TargetAddr; 2],
}

impl Default for ServerScript {
    fn default() -> Self {
        ServerScript {
            password: b"secret",
            reply: ReplyCode::Succeeded,
            bound: [ip("10.0.0.1:5000"), ip("192.0.2.7:6000")],
        }
    }
}

/// The outcome of one handshake between the two machines.
#[derive(Debug)]
struct Outcome {
    client_result: Result<(), ProtocolError>,
    client_events: Vec<ClientEvent>,
    client_state: ClientState,
    server_result: Result<(), ProtocolError>,
    server_requests: Vec<IncomingRequest>,
    server_state: ServerState,
    /// Bytes left unconsumed in the client→server pipe.
    c2s_left: Vec<u8>,
    /// Bytes left unconsumed in the server→client pipe.
    s2c_left: Vec<u8>,
}

struct Pair {
    client: ClientHandshake,
    server: ServerHandshake,
    script: ServerScript,
    c2s: Vec<u8>,
    s2c: Vec<u8>,
    client_events: Vec<ClientEvent>,
    server_requests: Vec<IncomingRequest>,
    client_result: Result<(), ProtocolError>,
    server_result: Result<(), ProtocolError>,
    replies_sent: usize,
}

impl Pair {
    fn new(client: ClientHandshake, server: HandshakeConfig, script: ServerScript) -> Self {
        Pair {
            client,
            server: ServerHandshake::new(server),
            script,
            c2s: Vec::new(),
            s2c: Vec::new(),
            client_events: Vec::new(),
            server_requests: Vec::new(),
            client_result: Ok(()),
            server_result: Ok(()),
            replies_sent: 0,
        }
    }

    /// Shuttles bytes until neither side makes progress.
    fn run(mut self) -> Outcome {
        let mut client_sent_request = false;
        for _ in 0..64 {
            let mut progress = false;

            progress |= self.client.poll_transmit(&mut self.c2s) > 0;
            // Once the client has sent its request, it pipelines application data at once.
            if !client_sent_request
                && matches!(
                    self.client.state(),
                    ClientState::AwaitingReply | ClientState::AwaitingBindPeer
                )
            {
                self.c2s.extend_from_slice(CLIENT_EARLY_DATA);
                client_sent_request = true;
            }

            match self.server.receive(&self.c2s) {
                Ok(n) => {
                    progress |= n > 0;
                    self.c2s.drain(..n);
                }
                Err(e) => {
                    assert!(self.server_result.is_ok(), "server failed twice");
                    self.server_result = Err(e);
                }
            }
            while let Some(event) = self.server.poll_event() {
                progress = true;
                self.decide(event);
            }
            if self.server.state() == ServerState::AwaitingBindPeer && self.replies_sent == 1 {
                let bound = self.script.bound[1].clone();
                self.server
                    .reply(self.script.reply, bound)
                    .expect("second reply awaited");
                self.replies_sent += 1;
            }
            let before = self.s2c.len();
            self.server.poll_transmit(&mut self.s2c);
            if self.s2c.len() > before {
                progress = true;
                // Once the server has replied for good, its application data follows at once.
                if self.server.state() == ServerState::Established {
                    self.s2c.extend_from_slice(SERVER_EARLY_DATA);
                }
            }

            match self.client.receive(&self.s2c) {
                Ok(n) => {
                    progress |= n > 0;
                    self.s2c.drain(..n);
                }
                Err(e) => {
                    assert!(self.client_result.is_ok(), "client failed twice");
                    self.client_result = Err(e);
                }
            }
            while let Some(event) = self.client.poll_event() {
                progress = true;
                self.client_events.push(event);
            }
            if !progress {
                return Outcome {
                    client_result: self.client_result,
                    client_events: self.client_events,
                    client_state: self.client.state(),
                    server_result: self.server_result,
                    server_requests: self.server_requests,
                    server_state: self.server.state(),
                    c2s_left: self.c2s,
                    s2c_left: self.s2c,
                };
            }
        }
        panic!("the handshake did not settle");
    }

    fn decide(&mut self, event: ServerEvent) {
        match event {
            ServerEvent::Authenticate(c) => {
                let ok = c.username() == b"alice" && c.password() == self.script.password;
                self.server
                    .accept_credentials(ok)
                    .expect("credentials awaited");
            }
            ServerEvent::Request(request) => {
                self.server_requests.push(request);
                let bound = self.script.bound[0].clone();
                self.server
                    .reply(self.script.reply, bound)
                    .expect("reply awaited");
                self.replies_sent += 1;
            }
        }
    }
}

fn client(
    version: ClientVersion,
    command: Command,
    target: TargetAddr,
    password: Option<&str>,
) -> Result<ClientHandshake, ProtocolError> {
    ClientHandshake::new(ClientConfig {
        version,
        credentials: password.map(|p| Credentials::new("alice", p).expect("valid")),
        user_id: None,
        command,
        target,
    })
}

/// What SOCKS4 can say back about `bound`.
fn v4_view(bound: &TargetAddr) -> TargetAddr {
    match bound {
        TargetAddr::Ip(SocketAddr::V4(_)) => bound.clone(),
        _ => TargetAddr::UNSPECIFIED,
    }
}

/// The command, target and reply addresses used for a command over a kind of address.
fn scenario(command: Command, atyp: usize) -> (TargetAddr, ServerScript) {
    let target = match atyp {
        0 => ip("198.51.100.9:443"),
        1 => ip("[2001:db8::9]:443"),
        _ => TargetAddr::domain("example.com", 443).expect("valid"),
    };
    let mut script = ServerScript::default();
    match command {
        Command::Resolve => script.bound[0] = ip("93.184.216.34:0"),
        Command::ResolvePtr => {
            script.bound[0] = TargetAddr::domain("host.example", 0).expect("valid")
        }
        Command::Bind => script.bound = [ip("10.0.0.1:5000"), ip("[2001:db8::7]:6000")],
        _ => {}
    }
    (target, script)
}

/// Whether the client machine accepts this combination, or the error it gives.
fn expected_config_error(
    version: ClientVersion,
    command: Command,
    target: &TargetAddr,
) -> Option<InvalidInput> {
    let v4 = version != ClientVersion::V5;
    let is_domain = target.is_domain();
    let is_v6 = matches!(target, TargetAddr::Ip(SocketAddr::V6(_)));
    match command {
        Command::Resolve if !is_domain => Some(InvalidInput::ResolveNeedsDomain),
        Command::ResolvePtr if is_domain || v4 => Some(InvalidInput::ResolvePtrNeedsIpOverV5),
        Command::UdpAssociate if v4 => Some(InvalidInput::UnsupportedCommand {
            version: Version::V4,
            command,
        }),
        _ if version == ClientVersion::V4 && is_domain => Some(InvalidInput::V4Domain),
        _ if v4 && is_v6 => Some(InvalidInput::V4Ipv6Address),
        _ => None,
    }
}

const VERSIONS: [ClientVersion; 3] = [ClientVersion::V4, ClientVersion::V4a, ClientVersion::V5];
const COMMANDS: [Command; 5] = [
    Command::Connect,
    Command::Bind,
    Command::UdpAssociate,
    Command::Resolve,
    Command::ResolvePtr,
];

/// Every version × command × address type, without and with authentication: either the
/// client refuses the combination up front, or both sides agree on a successful handshake.
#[test]
fn every_version_command_and_address_type_succeeds_or_is_refused_up_front() {
    let mut handshakes = 0;
    for auth in [AuthPolicy::None, AuthPolicy::UsernamePassword] {
        for version in VERSIONS {
            for command in COMMANDS {
                for atyp in 0..3 {
                    let (target, script) = scenario(command, atyp);
                    let what = format!("{auth:?} {version:?} {command} {target}");
                    let password = (auth == AuthPolicy::UsernamePassword).then_some("secret");
                    let hs = client(version, command, target.clone(), password);
                    if let Some(error) = expected_config_error(version, command, &target) {
                        assert_eq!(hs.map(|_| ()), Err(error.into()), "{what}");
                        continue;
                    }
                    let hs = hs.unwrap_or_else(|e| panic!("{what}: {e}"));
                    // SOCKS4 has no passwords: allow it explicitly for this matrix.
                    let config = HandshakeConfig {
                        auth,
                        allow_socks4: true,
                    };
                    let out = Pair::new(hs, config, script.clone()).run();
                    handshakes += 1;
                    let user_id = if password.is_some() {
                        &b"alice"[..]
                    } else {
                        b""
                    };
                    check_success(&what, version, command, &target, user_id, &script, out);
                }
            }
        }
    }
    // Per auth policy: SOCKS5 12 (CONNECT, BIND, UDP × 3 address types, RESOLVE × domain,
    // RESOLVE_PTR × 2 IPs), SOCKS4a 5 (CONNECT, BIND × IPv4/domain, RESOLVE), SOCKS4 2.
    assert_eq!(handshakes, 2 * 19, "every valid combination ran");
}

fn check_success(
    what: &str,
    version: ClientVersion,
    command: Command,
    target: &TargetAddr,
    user_id: &[u8],
    script: &ServerScript,
    out: Outcome,
) {
    assert_eq!(out.client_result, Ok(()), "{what}");
    assert_eq!(out.server_result, Ok(()), "{what}");
    let v4 = version != ClientVersion::V5;
    let request = IncomingRequest {
        version: if v4 { Version::V4 } else { Version::V5 },
        command,
        target: target.clone(),
        user_id: v4.then(|| user_id.to_vec()),
    };
    assert_eq!(out.server_requests, [request], "{what}");

    let view = |b: &TargetAddr| if v4 { v4_view(b) } else { b.clone() };
    let mut events = Vec::new();
    if command == Command::Bind {
        events.push(ClientEvent::BindListening {
            bound: view(&script.bound[0]),
        });
        events.push(ClientEvent::Succeeded {
            bound: view(&script.bound[1]),
        });
    } else {
        events.push(ClientEvent::Succeeded {
            bound: view(&script.bound[0]),
        });
    }
    assert_eq!(out.client_events, events, "{what}");
    assert_eq!(out.client_state, ClientState::Established, "{what}");

    if matches!(command, Command::Resolve | Command::ResolvePtr) {
        assert_eq!(
            out.server_state,
            ServerState::Closing(CloseReason::Resolved),
            "{what}"
        );
        assert!(out.s2c_left.is_empty(), "{what}");
    } else {
        assert_eq!(out.server_state, ServerState::Established, "{what}");
        assert_eq!(out.s2c_left, SERVER_EARLY_DATA, "{what}: server data kept");
    }
    assert_eq!(
        out.c2s_left, CLIENT_EARLY_DATA,
        "{what}: pipelined data kept"
    );
}

#[test]
fn socks4_user_id_is_the_username() {
    let hs = client(
        ClientVersion::V4a,
        Command::Connect,
        TargetAddr::domain("example.com", 80).expect("valid"),
        Some("ignored"),
    )
    .expect("valid");
    let out = Pair::new(hs, HandshakeConfig::default(), ServerScript::default()).run();
    assert_eq!(out.server_requests.len(), 1);
    assert_eq!(
        out.server_requests[0].user_id.as_deref(),
        Some(&b"alice"[..])
    );
}

#[test]
fn wrong_password_fails_on_both_sides() {
    let hs = client(
        ClientVersion::V5,
        Command::Connect,
        ip("1.2.3.4:80"),
        Some("guess"),
    )
    .expect("valid");
    let config = HandshakeConfig::new(AuthPolicy::UsernamePassword);
    let out = Pair::new(hs, config, ServerScript::default()).run();
    assert_eq!(
        out.client_result,
        Err(Denied::AuthenticationFailed { status: 1 }.into())
    );
    assert_eq!(out.client_state, ClientState::Failed);
    assert_eq!(
        out.server_state,
        ServerState::Closing(CloseReason::AuthenticationFailed)
    );
    assert!(out.server_requests.is_empty());
    assert!(out.client_events.is_empty());
}

#[test]
fn client_without_credentials_meets_a_server_requiring_them() {
    let hs = client(ClientVersion::V5, Command::Connect, ip("1.2.3.4:80"), None).expect("valid");
    let config = HandshakeConfig::new(AuthPolicy::UsernamePassword);
    let out = Pair::new(hs, config, ServerScript::default()).run();
    assert_eq!(
        out.client_result,
        Err(Incompatible::NoAcceptableMethod.into())
    );
    assert_eq!(
        out.server_state,
        ServerState::Closing(CloseReason::NoAcceptableMethod)
    );
}

#[test]
fn client_with_credentials_meets_a_server_without_auth() {
    let hs = client(
        ClientVersion::V5,
        Command::Connect,
        ip("1.2.3.4:80"),
        Some("secret"),
    )
    .expect("valid");
    let out = Pair::new(hs, HandshakeConfig::default(), ServerScript::default()).run();
    assert_eq!(out.client_result, Ok(()), "the server picks no-auth");
    assert_eq!(out.server_state, ServerState::Established);
}

#[test]
fn socks4_is_refused_when_the_server_requires_authentication() {
    for version in [ClientVersion::V4, ClientVersion::V4a] {
        let hs =
            client(version, Command::Connect, ip("1.2.3.4:80"), Some("secret")).expect("valid");
        let config = HandshakeConfig::new(AuthPolicy::UsernamePassword);
        let out = Pair::new(hs, config, ServerScript::default()).run();
        assert_eq!(
            out.client_result,
            Err(Denied::Rejected {
                code: ReplyCode::GeneralFailure,
                v4_code: Some(V4ReplyCode::Rejected)
            }
            .into())
        );
        assert_eq!(
            out.server_state,
            ServerState::Closing(CloseReason::Socks4AuthRequired)
        );
        assert!(out.server_requests.is_empty());
    }
}

#[test]
fn server_refusals_reach_the_client_with_their_code() {
    let refusals = [
        ReplyCode::GeneralFailure,
        ReplyCode::NotAllowed,
        ReplyCode::NetworkUnreachable,
        ReplyCode::HostUnreachable,
        ReplyCode::ConnectionRefused,
        ReplyCode::TtlExpired,
        ReplyCode::CommandNotSupported,
        ReplyCode::AddressTypeNotSupported,
    ];
    for code in refusals {
        for version in VERSIONS {
            for command in [Command::Connect, Command::Bind] {
                let hs = client(version, command, ip("1.2.3.4:80"), None).expect("valid");
                let script = ServerScript {
                    reply: code,
                    ..ServerScript::default()
                };
                let out = Pair::new(hs, HandshakeConfig::default(), script).run();
                let (code_seen, v4_code) = match version {
                    ClientVersion::V5 => (code, None),
                    _ => (ReplyCode::GeneralFailure, Some(V4ReplyCode::Rejected)),
                };
                let what = format!("{version:?} {command} {code}");
                assert_eq!(
                    out.client_result,
                    Err(Denied::Rejected {
                        code: code_seen,
                        v4_code
                    }
                    .into()),
                    "{what}"
                );
                assert_eq!(out.client_state, ClientState::Failed, "{what}");
                assert!(out.client_events.is_empty(), "{what}");
                assert_eq!(
                    out.server_state,
                    ServerState::Closing(CloseReason::RequestFailed(code)),
                    "{what}"
                );
            }
        }
    }
}

#[test]
fn bind_refused_after_listening() {
    // The first BIND reply succeeds, the second (no peer connected in time) fails.
    let hs = client(ClientVersion::V5, Command::Bind, ip("1.2.3.4:0"), None).expect("valid");
    let mut pair = Pair::new(hs, HandshakeConfig::default(), ServerScript::default());
    // Drive by hand: let the first reply through, then fail the second.
    let mut out = Vec::new();
    pair.client.poll_transmit(&mut out);
    let n = pair.server.receive(&out).expect("greeting");
    assert_eq!(n, out.len());
    let mut s2c = Vec::new();
    pair.server.poll_transmit(&mut s2c);
    pair.client.receive(&s2c).expect("choice");
    out.clear();
    pair.client.poll_transmit(&mut out);
    pair.server.receive(&out).expect("request");
    assert!(matches!(
        pair.server.poll_event(),
        Some(ServerEvent::Request(_))
    ));
    pair.server
        .reply(ReplyCode::Succeeded, ip("10.0.0.1:5000"))
        .expect("first");
    pair.server
        .reply(ReplyCode::TtlExpired, TargetAddr::UNSPECIFIED)
        .expect("second");
    s2c.clear();
    pair.server.poll_transmit(&mut s2c);
    assert_eq!(
        pair.client.receive(&s2c),
        Err(Denied::Rejected {
            code: ReplyCode::TtlExpired,
            v4_code: None
        }
        .into())
    );
    assert_eq!(
        pair.client.poll_event(),
        Some(ClientEvent::BindListening {
            bound: ip("10.0.0.1:5000")
        })
    );
    assert_eq!(pair.client.poll_event(), None);
}
