//! Checks shared by the fuzz targets: the properties every stream decoder must have, and
//! drivers that push arbitrary bytes and decisions through the handshake machines.

pub mod config;
pub mod server;
pub mod sniff;

use socksmith_proto::{
    AuthPolicy, ClientConfig, ClientHandshake, ClientVersion, Command, Credentials,
    HandshakeConfig, ProtocolError, ReplyCode, ServerEvent, ServerHandshake, ServerState,
    TargetAddr,
};
use std::fmt::Debug;

pub mod targets;

/// A stream decoder: `Ok(None)` is "need more bytes".
pub type Decode<T> = fn(&[u8]) -> Result<Option<(T, usize)>, ProtocolError>;

/// Checks a stream decoder on `data`:
/// - it never claims more bytes than it was given;
/// - every prefix shorter than the message is `Ok(None)` (or, for an error, the same error);
/// - what it decodes re-encodes, and decodes again to the same value and length;
/// - when `canonical`, the re-encoding is byte-identical to the bytes consumed.
pub fn check_stream_decoder<T: PartialEq + Debug>(
    data: &[u8],
    decode: Decode<T>,
    encode: impl Fn(&T, &mut Vec<u8>),
    canonical: bool,
) {
    let whole = decode(data);
    // Incrementally growing prefixes agree with the whole input.
    for end in 0..data.len() {
        match (decode(&data[..end]), &whole) {
            (Ok(None), _) => {}
            (Ok(Some((_, n))), Ok(Some((_, m)))) => {
                assert_eq!(n, *m, "a prefix decoded a different length");
                assert!(n <= end);
                break; // every longer prefix decodes the same message
            }
            (Err(e), Err(w)) => {
                assert_eq!(&e, w, "a prefix failed differently from the whole");
                break;
            }
            (prefix, whole) => panic!("prefix of {end} bytes gave {prefix:?}, whole {whole:?}"),
        }
    }
    if let Ok(Some((msg, n))) = whole {
        assert!(n <= data.len(), "consumed more than given");
        let mut out = Vec::new();
        encode(&msg, &mut out);
        if canonical {
            assert_eq!(&out[..], &data[..n], "re-encoding differs from the input");
        }
        let again = decode(&out).expect("re-encoded message decodes");
        assert_eq!(
            again,
            Some((msg, out.len())),
            "round trip changed the message"
        );
    }
}

/// A cursor over fuzz input handing out small decisions.
pub struct Choices<'a> {
    data: &'a [u8],
}

impl<'a> Choices<'a> {
    /// Wraps fuzz input.
    pub fn new(data: &'a [u8]) -> Self {
        Choices { data }
    }

    /// One byte, 0 when exhausted.
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// Up to `n` bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// What is left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

fn bound_for(choice: u8) -> TargetAddr {
    match choice % 3 {
        0 => TargetAddr::UNSPECIFIED,
        1 => TargetAddr::Ip("[2001:db8::1]:443".parse().expect("literal")),
        _ => TargetAddr::domain("example.com", 80).expect("valid"),
    }
}

/// Replies to an awaited request. A SOCKS4 success that cannot carry its address (an IPv6 or
/// name answer to BIND or RESOLVE) is refused by the machine: an `InvalidInput` error, with
/// 0x5B queued and the machine closing. Any other error is a bug.
fn reply(hs: &mut ServerHandshake, code: ReplyCode, bound: TargetAddr) {
    match hs.reply(code, bound) {
        Ok(()) => {}
        Err(ProtocolError::InvalidInput(_)) => {
            assert!(
                hs.is_finished(),
                "a refused reply leaves the machine closing"
            );
        }
        Err(e) => panic!("a reply was awaited: {e}"),
    }
}

/// Feeds arbitrary bytes in arbitrary chunks to a server machine, taking arbitrary
/// decisions, and checks the machine's promises: never consumes more than given, never
/// consumes after the handshake ends, and errors leave it closing.
pub fn drive_server(data: &[u8]) {
    let mut c = Choices::new(data);
    let setup = c.byte();
    let config = HandshakeConfig {
        auth: if setup & 1 == 0 {
            AuthPolicy::None
        } else {
            AuthPolicy::UsernamePassword
        },
        allow_socks4: setup & 2 != 0,
    };
    let mut hs = ServerHandshake::new(config);
    let mut buffer: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    while !c.data.is_empty() {
        let chunk = usize::from(c.byte() % 32);
        buffer.extend_from_slice(c.bytes(chunk));
        let finished_before = hs.is_finished();
        match hs.receive(&buffer) {
            Ok(n) => {
                assert!(n <= buffer.len());
                if finished_before {
                    assert_eq!(n, 0, "consumed after the handshake ended");
                }
                buffer.drain(..n);
            }
            Err(_) => {
                assert!(hs.is_finished(), "an error must leave the machine closing");
                assert_eq!(hs.receive(&buffer), Ok(0));
            }
        }
        hs.poll_transmit(&mut out);
        while let Some(event) = hs.poll_event() {
            let decision = c.byte();
            match event {
                ServerEvent::Authenticate(_) => {
                    hs.accept_credentials(decision & 1 == 0)
                        .expect("credentials awaited");
                }
                ServerEvent::Request(_) => {
                    let code = ReplyCode::from(decision % 10);
                    reply(&mut hs, code, bound_for(decision / 10));
                }
            }
        }
        if hs.state() == ServerState::AwaitingBindPeer {
            let decision = c.byte();
            let code = ReplyCode::from(decision % 10);
            reply(&mut hs, code, bound_for(decision / 10));
        }
        // Decisions out of order must be refused, not panic.
        let stray = c.byte();
        if stray == 0xA5 {
            let _ = hs.reply(ReplyCode::Succeeded, TargetAddr::UNSPECIFIED);
        } else if stray == 0x5A {
            let _ = hs.accept_credentials(true);
        }
    }
    hs.poll_transmit(&mut out);
}

/// Feeds arbitrary server bytes in arbitrary chunks to a client machine built from an
/// arbitrary configuration.
pub fn drive_client(data: &[u8]) {
    let mut c = Choices::new(data);
    let setup = c.byte();
    let version = match setup % 3 {
        0 => ClientVersion::V4,
        1 => ClientVersion::V4a,
        _ => ClientVersion::V5,
    };
    let command = Command::from(c.byte());
    let target = match (setup / 3) % 3 {
        0 => TargetAddr::Ip("127.0.0.1:80".parse().expect("literal")),
        1 => TargetAddr::Ip("[::1]:80".parse().expect("literal")),
        _ => TargetAddr::domain("example.com", 80).expect("valid"),
    };
    let credentials = (setup & 0x80 != 0).then(|| Credentials::new("user", "pass").expect("valid"));
    let Ok(mut hs) = ClientHandshake::new(ClientConfig {
        version,
        credentials,
        user_id: None,
        command,
        target,
    }) else {
        return;
    };
    let mut buffer: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    while !c.data.is_empty() {
        hs.poll_transmit(&mut out);
        let chunk = usize::from(c.byte() % 32);
        buffer.extend_from_slice(c.bytes(chunk));
        let finished_before = hs.is_finished();
        match hs.receive(&buffer) {
            Ok(n) => {
                assert!(n <= buffer.len());
                if finished_before {
                    assert_eq!(n, 0, "consumed after the handshake ended");
                }
                buffer.drain(..n);
            }
            Err(_) => {
                assert!(hs.is_finished(), "an error must leave the machine failed");
                assert_eq!(hs.receive(&buffer), Ok(0));
            }
        }
        while hs.poll_event().is_some() {}
    }
    let _ = c.rest();
}
