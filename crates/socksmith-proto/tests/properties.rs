//! Property tests: every message round trips; decoders and machines never panic on arbitrary
//! bytes; feeding bytes one at a time (or in any chunks) gives the same result as all at once
//! and never consumes more than given; bytes after a message are left alone.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use socksmith_proto::{
    AuthMethod, AuthPolicy, AuthRequest, AuthStatus, ClientConfig, ClientEvent, ClientHandshake,
    ClientState, ClientVersion, Command, Credentials, DomainName, Greeting, HandshakeConfig,
    MethodChoice, ProtocolError, Reply, ReplyCode, Request, ServerEvent, ServerHandshake,
    ServerState, TargetAddr, UdpHeader, V4Reply, V4ReplyCode, V4Request,
};
use std::fmt::Debug;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

type Decode<T> = fn(&[u8]) -> Result<Option<(T, usize)>, ProtocolError>;

// ---------------------------------------------------------------------------------------
// Strategies

fn domain() -> impl Strategy<Value = DomainName> {
    prop::collection::vec(1u8..=255, 1..=255)
        .prop_map(|b| DomainName::new(b).expect("1..=255 bytes without NUL"))
}

fn ipv4() -> impl Strategy<Value = SocketAddrV4> {
    (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddrV4::new(ip.into(), port))
}

fn target() -> impl Strategy<Value = TargetAddr> {
    prop_oneof![
        ipv4().prop_map(TargetAddr::from),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            0,
            0
        )
        .into()),
        (domain(), any::<u16>()).prop_map(|(d, port)| TargetAddr::Domain(d, port)),
    ]
}

fn credentials() -> impl Strategy<Value = Credentials> {
    (
        prop::collection::vec(any::<u8>(), 1..=255),
        prop::collection::vec(any::<u8>(), 1..=255),
    )
        .prop_map(|(u, p)| Credentials::new(u, p).expect("1..=255 bytes each"))
}

fn greeting() -> impl Strategy<Value = Greeting> {
    prop::collection::vec(any::<u8>().prop_map(AuthMethod::from), 1..=255)
        .prop_map(|methods| Greeting { methods })
}

fn request() -> impl Strategy<Value = Request> {
    (any::<u8>().prop_map(Command::from), target())
        .prop_map(|(command, target)| Request { command, target })
}

fn reply() -> impl Strategy<Value = Reply> {
    (any::<u8>().prop_map(ReplyCode::from), target())
        .prop_map(|(code, bound)| Reply { code, bound })
}

fn v4_request() -> impl Strategy<Value = V4Request> {
    // 0.0.0.x (x != 0) on the wire announces SOCKS4a, so it cannot be a plain target.
    let plain = ipv4().prop_map(|a| match a.ip().octets() {
        [0, 0, 0, x] if x != 0 => SocketAddrV4::new(Ipv4Addr::new(1, 0, 0, x), a.port()),
        _ => a,
    });
    (
        any::<u8>().prop_map(Command::from_v4),
        prop_oneof![
            plain.prop_map(TargetAddr::from),
            (domain(), any::<u16>()).prop_map(|(d, p)| TargetAddr::Domain(d, p)),
        ],
        prop::collection::vec(1u8..=255, 0..=255),
    )
        .prop_map(|(command, target, user_id)| V4Request {
            command,
            target,
            user_id,
        })
}

fn v4_reply() -> impl Strategy<Value = V4Reply> {
    (any::<u8>().prop_map(V4ReplyCode::from), ipv4())
        .prop_map(|(code, addr)| V4Reply { code, addr })
}

fn encode_with<T>(msg: &T, encode: impl Fn(&T, &mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    encode(msg, &mut out);
    out
}

// ---------------------------------------------------------------------------------------
// Checks

/// `encoded` decodes to `msg` consuming exactly its length, with or without `trailing`
/// bytes after it, and every shorter prefix is "need more".
fn check_round_trip<T: PartialEq + Debug + Clone>(
    msg: &T,
    encoded: &[u8],
    trailing: &[u8],
    decode: Decode<T>,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(decode(encoded), Ok(Some((msg.clone(), encoded.len()))));
    let mut with_trailing = encoded.to_vec();
    with_trailing.extend_from_slice(trailing);
    prop_assert_eq!(
        decode(&with_trailing),
        Ok(Some((msg.clone(), encoded.len()))),
        "trailing bytes must stay unconsumed"
    );
    for end in 0..encoded.len() {
        prop_assert_eq!(decode(&encoded[..end]), Ok(None), "prefix of {} bytes", end);
    }
    Ok(())
}

/// On arbitrary bytes: no panic, never more consumed than given, and every growing prefix is
/// "need more" until it gives exactly what the whole input gives.
fn check_arbitrary<T: PartialEq + Debug>(
    data: &[u8],
    decode: Decode<T>,
) -> Result<(), TestCaseError> {
    let whole = decode(data);
    if let Ok(Some((_, n))) = &whole {
        prop_assert!(*n <= data.len());
    }
    for end in 0..=data.len() {
        let prefix = decode(&data[..end]);
        match (&prefix, &whole) {
            (Ok(None), _) => {}
            (Ok(Some((m, n))), Ok(Some((wm, wn)))) => {
                prop_assert!(*n <= end);
                prop_assert_eq!((m, n), (wm, wn));
            }
            (Err(e), Err(w)) => prop_assert_eq!(e, w),
            _ => prop_assert!(false, "prefix {} gave {:?}, whole {:?}", end, prefix, whole),
        }
    }
    Ok(())
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..300)
}

fn trailing() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 1..16)
}

proptest! {
    #[test]
    fn greeting_round_trips(msg in greeting(), tail in trailing()) {
        let enc = encode_with(&msg, |m, o| m.encode(o).expect("1..=255 methods"));
        check_round_trip(&msg, &enc, &tail, Greeting::decode)?;
    }

    #[test]
    fn method_choice_round_trips(m in any::<u8>(), tail in trailing()) {
        let msg = MethodChoice { method: AuthMethod::from(m) };
        let enc = encode_with(&msg, MethodChoice::encode);
        check_round_trip(&msg, &enc, &tail, MethodChoice::decode)?;
    }

    #[test]
    fn auth_request_round_trips(credentials in credentials(), tail in trailing()) {
        let msg = AuthRequest { credentials };
        let enc = encode_with(&msg, AuthRequest::encode);
        check_round_trip(&msg, &enc, &tail, AuthRequest::decode)?;
    }

    #[test]
    fn auth_status_round_trips(s in any::<u8>(), tail in trailing()) {
        let msg = AuthStatus(s);
        let enc = encode_with(&msg, AuthStatus::encode);
        check_round_trip(&msg, &enc, &tail, AuthStatus::decode)?;
    }

    #[test]
    fn request_round_trips(msg in request(), tail in trailing()) {
        let enc = encode_with(&msg, Request::encode);
        check_round_trip(&msg, &enc, &tail, Request::decode)?;
    }

    #[test]
    fn reply_round_trips(msg in reply(), tail in trailing()) {
        let enc = encode_with(&msg, Reply::encode);
        check_round_trip(&msg, &enc, &tail, Reply::decode)?;
    }

    #[test]
    fn v4_request_round_trips(msg in v4_request(), tail in trailing()) {
        let enc = encode_with(&msg, |m, o| m.encode(o).expect("encodable by construction"));
        check_round_trip(&msg, &enc, &tail, V4Request::decode)?;
    }

    #[test]
    fn v4_reply_round_trips(msg in v4_reply(), tail in trailing()) {
        let enc = encode_with(&msg, V4Reply::encode);
        prop_assert_eq!(enc.len(), V4Reply::LEN);
        check_round_trip(&msg, &enc, &tail, V4Reply::decode)?;
    }

    #[test]
    fn udp_header_round_trips(frag in any::<u8>(), target in target(), payload in bytes()) {
        let header = UdpHeader { frag, target };
        let dgram = header.wrap(&payload);
        let (decoded, len) = UdpHeader::decode(&dgram).expect("valid datagram");
        prop_assert_eq!(&decoded, &header);
        prop_assert_eq!(&dgram[len..], &payload[..]);
        let header_len = encode_with(&header, UdpHeader::encode).len();
        prop_assert_eq!(len, header_len);
        for end in 0..header_len {
            prop_assert!(UdpHeader::decode(&dgram[..end]).is_err(), "a short datagram is an error");
        }
    }

    #[test]
    fn domain_names_round_trip_their_bytes(d in domain()) {
        prop_assert_eq!(DomainName::try_from(d.as_bytes().to_vec()), Ok(d.clone()));
        prop_assert!(!d.to_string().contains('\n'), "Display escapes control characters");
    }

    #[test]
    fn decoders_never_panic_and_agree_byte_at_a_time(data in bytes()) {
        check_arbitrary(&data, Greeting::decode)?;
        check_arbitrary(&data, MethodChoice::decode)?;
        check_arbitrary(&data, AuthRequest::decode)?;
        check_arbitrary(&data, AuthStatus::decode)?;
        check_arbitrary(&data, Request::decode)?;
        check_arbitrary(&data, Reply::decode)?;
        check_arbitrary(&data, V4Request::decode)?;
        check_arbitrary(&data, V4Reply::decode)?;
        if let Ok((_, len)) = UdpHeader::decode(&data) {
            prop_assert!(len <= data.len());
        }
    }

    /// Decoders see plausible-looking input too: a valid message with one byte flipped.
    #[test]
    fn decoders_agree_byte_at_a_time_on_mutated_messages(
        msg in request(), v4 in v4_request(), at in any::<usize>(), xor in 1u8..,
    ) {
        let mut enc = encode_with(&msg, Request::encode);
        let i = at % enc.len();
        enc[i] ^= xor;
        check_arbitrary(&enc, Request::decode)?;
        check_arbitrary(&enc, Reply::decode)?;
        let mut enc = encode_with(&v4, |m, o| m.encode(o).expect("encodable"));
        let i = at % enc.len();
        enc[i] ^= xor;
        check_arbitrary(&enc, V4Request::decode)?;
    }
}

// ---------------------------------------------------------------------------------------
// Machines

/// Everything observable about a server machine after a run.
#[derive(Debug, PartialEq)]
struct ServerTrace {
    transmit: Vec<u8>,
    events: Vec<ServerEvent>,
    state: ServerState,
    /// Bytes consumed in all; `None` after an error, when the count is unspecified (a
    /// failing call may have consumed earlier messages of the same input).
    consumed: Option<usize>,
    error: Option<ProtocolError>,
}

/// Feeds `data` to a server `chunk` bytes at a time, accepting the password "ok" and
/// answering every request with `code`.
fn run_server(config: HandshakeConfig, data: &[u8], chunk: usize, code: ReplyCode) -> ServerTrace {
    let mut hs = ServerHandshake::new(config);
    let mut trace = ServerTrace {
        transmit: Vec::new(),
        events: Vec::new(),
        state: ServerState::AwaitingGreeting,
        consumed: Some(0),
        error: None,
    };
    let mut buffer = Vec::new();
    let mut fed = 0;
    loop {
        let mut progress = false;
        if fed < data.len() {
            let end = (fed + chunk).min(data.len());
            buffer.extend_from_slice(&data[fed..end]);
            fed = end;
            progress = true;
        }
        match hs.receive(&buffer) {
            Ok(n) => {
                assert!(n <= buffer.len(), "consumed more than given");
                buffer.drain(..n);
                trace.consumed = trace.consumed.map(|c| c + n);
                progress |= n > 0;
            }
            Err(e) => {
                assert!(hs.is_finished(), "an error leaves the machine closing");
                assert!(trace.error.is_none(), "a second error after the first");
                trace.error = Some(e);
                trace.consumed = None;
            }
        }
        while let Some(event) = hs.poll_event() {
            progress = true;
            match &event {
                ServerEvent::Authenticate(c) => {
                    hs.accept_credentials(c.password() == b"ok")
                        .expect("awaited");
                }
                ServerEvent::Request(_) => {
                    hs.reply(code, TargetAddr::UNSPECIFIED).expect("awaited")
                }
            }
            trace.events.push(event);
        }
        if hs.state() == ServerState::AwaitingBindPeer {
            hs.reply(code, TargetAddr::UNSPECIFIED)
                .expect("second BIND reply awaited");
            progress = true;
        }
        hs.poll_transmit(&mut trace.transmit);
        if !progress {
            break;
        }
    }
    if hs.is_finished() {
        assert_eq!(hs.receive(&buffer), Ok(0), "nothing consumed once finished");
    }
    trace.state = hs.state();
    trace
}

/// Plausible client transcripts: valid messages in order, then application data.
fn client_transcript() -> impl Strategy<Value = Vec<u8>> {
    let v5 = (greeting(), credentials(), request(), bytes()).prop_map(|(g, c, r, tail)| {
        let mut out = Vec::new();
        g.encode(&mut out).expect("valid greeting");
        AuthRequest { credentials: c }.encode(&mut out);
        r.encode(&mut out);
        out.extend_from_slice(&tail);
        out
    });
    let v5_ok = (request(), bytes()).prop_map(|(r, tail)| {
        let mut out = vec![5, 2, 0, 2, 1, 1, b'u', 2, b'o', b'k'];
        r.encode(&mut out);
        out.extend_from_slice(&tail);
        out
    });
    let v4 = (v4_request(), bytes()).prop_map(|(r, tail)| {
        let mut out = Vec::new();
        r.encode(&mut out).expect("encodable");
        out.extend_from_slice(&tail);
        out
    });
    prop_oneof![bytes(), v5, v5_ok, v4]
}

fn mutated(s: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (s, any::<usize>(), any::<u8>()).prop_map(|(mut b, at, xor)| {
        if !b.is_empty() {
            let i = at % b.len();
            b[i] ^= xor;
        }
        b
    })
}

fn handshake_config() -> impl Strategy<Value = HandshakeConfig> {
    (any::<bool>(), any::<bool>()).prop_map(|(auth, allow_socks4)| HandshakeConfig {
        auth: if auth {
            AuthPolicy::UsernamePassword
        } else {
            AuthPolicy::None
        },
        allow_socks4,
    })
}

/// Everything observable about a client machine after a run.
#[derive(Debug, PartialEq)]
struct ClientTrace {
    transmit: Vec<u8>,
    events: Vec<ClientEvent>,
    state: ClientState,
    /// As in [`ServerTrace`].
    consumed: Option<usize>,
    error: Option<ProtocolError>,
}

fn run_client(config: ClientConfig, data: &[u8], chunk: usize) -> Option<ClientTrace> {
    let mut hs = ClientHandshake::new(config).ok()?;
    let mut trace = ClientTrace {
        transmit: Vec::new(),
        events: Vec::new(),
        state: hs.state(),
        consumed: Some(0),
        error: None,
    };
    let mut buffer = Vec::new();
    let mut fed = 0;
    loop {
        let mut progress = hs.poll_transmit(&mut trace.transmit) > 0;
        if fed < data.len() {
            let end = (fed + chunk).min(data.len());
            buffer.extend_from_slice(&data[fed..end]);
            fed = end;
            progress = true;
        }
        match hs.receive(&buffer) {
            Ok(n) => {
                assert!(n <= buffer.len(), "consumed more than given");
                buffer.drain(..n);
                trace.consumed = trace.consumed.map(|c| c + n);
                progress |= n > 0;
            }
            Err(e) => {
                assert_eq!(hs.state(), ClientState::Failed);
                assert!(trace.error.is_none(), "a second error after the first");
                trace.error = Some(e);
                trace.consumed = None;
            }
        }
        while let Some(event) = hs.poll_event() {
            progress = true;
            trace.events.push(event);
        }
        if !progress {
            break;
        }
    }
    if hs.is_finished() {
        assert_eq!(hs.receive(&buffer), Ok(0), "nothing consumed once finished");
    }
    trace.state = hs.state();
    Some(trace)
}

/// Plausible server transcripts: a method choice, a status, replies, then data.
fn server_transcript() -> impl Strategy<Value = Vec<u8>> {
    let v5 = (any::<u8>(), any::<u8>(), reply(), reply(), bytes()).prop_map(
        |(method, status, r1, r2, tail)| {
            let mut out = vec![5, method % 4];
            if method % 4 == 2 {
                out.extend_from_slice(&[1, status % 2]);
            }
            r1.encode(&mut out);
            r2.encode(&mut out);
            out.extend_from_slice(&tail);
            out
        },
    );
    let v4 = (v4_reply(), v4_reply(), bytes()).prop_map(|(r1, r2, tail)| {
        let mut out = Vec::new();
        r1.encode(&mut out);
        r2.encode(&mut out);
        out.extend_from_slice(&tail);
        out
    });
    prop_oneof![bytes(), v5, v4]
}

fn client_config() -> impl Strategy<Value = ClientConfig> {
    (
        prop_oneof![
            Just(ClientVersion::V4),
            Just(ClientVersion::V4a),
            Just(ClientVersion::V5)
        ],
        prop::option::of(credentials()),
        any::<u8>().prop_map(Command::from),
        target(),
    )
        .prop_map(|(version, credentials, command, target)| ClientConfig {
            version,
            credentials,
            user_id: None,
            command,
            target,
        })
}

proptest! {
    #[test]
    fn server_never_panics_and_chunking_does_not_matter(
        config in handshake_config(),
        data in prop_oneof![client_transcript(), mutated(client_transcript())],
        chunk in 1usize..8,
        code in any::<u8>().prop_map(ReplyCode::from),
    ) {
        let whole = run_server(config, &data, data.len().max(1), code);
        prop_assert_eq!(&run_server(config, &data, 1, code), &whole, "byte at a time");
        prop_assert_eq!(&run_server(config, &data, chunk, code), &whole, "in chunks");
        prop_assert!(whole.consumed.unwrap_or(0) <= data.len());
    }

    #[test]
    fn client_never_panics_and_chunking_does_not_matter(
        config in client_config(),
        data in prop_oneof![server_transcript(), mutated(server_transcript())],
        chunk in 1usize..8,
    ) {
        let whole = run_client(config.clone(), &data, data.len().max(1));
        prop_assert_eq!(&run_client(config.clone(), &data, 1), &whole, "byte at a time");
        prop_assert_eq!(&run_client(config, &data, chunk), &whole, "in chunks");
        if let Some(whole) = whole {
            prop_assert!(whole.consumed.unwrap_or(0) <= data.len());
        }
    }
}

#[test]
fn server_consumes_exactly_the_handshake_before_pipelined_payload() {
    // A whole valid SOCKS5 handshake with credentials, then payload, byte at a time.
    let mut data = vec![5, 1, 2, 1, 1, b'u', 2, b'o', b'k'];
    data.extend_from_slice(&[5, 1, 0, 3, 3, b'a', b'.', b'b', 0, 80]);
    let handshake_len = data.len();
    data.extend_from_slice(b"payload");
    let config = HandshakeConfig::new(AuthPolicy::UsernamePassword);
    let trace = run_server(config, &data, 1, ReplyCode::Succeeded);
    assert_eq!(trace.consumed, Some(handshake_len));
    assert_eq!(trace.state, ServerState::Established);
    assert_eq!(trace.error, None);
}
