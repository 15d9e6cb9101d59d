//! The handshake driver: runs a [`ClientHandshake`] machine over any
//! `AsyncRead + AsyncWrite + Unpin` transport until the machine has something to say.
//!
//! It moves bytes only: what to send, how to read the answers and whether they mean success
//! is decided by the machine in `socksmith-proto`. Each step (method negotiation,
//! authentication, request, BIND peer) has its own deadline, so a proxy that answers one byte
//! at a time cannot stretch a step. Bytes past the final reply stay in the
//! [`ProxyStream`]'s buffer: they belong to the next hop's handshake, or to the tunnel.

use std::future::Future;
use std::io;
use std::time::Duration;

use socksmith_proto::{ClientEvent, ClientHandshake, ClientState, Command, TargetAddr};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::error::{HopErrorKind, Step};
use super::stream::ProxyStream;

/// How much more to read at a time: a SOCKS message is at most 262 bytes (a SOCKS5 reply with
/// a 255-byte name), so one read usually takes a whole answer.
const READ_CHUNK: usize = 512;

/// The deadlines of the steps of one handshake.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepDeadlines {
    /// For each step but the BIND peer.
    pub step: Duration,
    /// For the BIND peer to connect.
    pub bind_peer: Duration,
}

/// Runs `hs` over `stream` until it yields an event: the first BIND reply or the final
/// success. Errors carry the step they happened in.
pub(crate) async fn next_event<S>(
    stream: &mut ProxyStream<S>,
    hs: &mut ClientHandshake,
    command: Command,
    target: &TargetAddr,
    deadlines: StepDeadlines,
    offered_credentials: bool,
) -> Result<ClientEvent, (Step, HopErrorKind)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let step_of = |state: ClientState| match state {
        ClientState::AwaitingMethodChoice => Step::Greeting,
        ClientState::AwaitingAuthStatus => Step::Auth,
        ClientState::AwaitingBindPeer => Step::BindPeer,
        _ => Step::Request {
            command,
            target: target.clone(),
        },
    };
    let limit_of = |state: ClientState| match state {
        ClientState::AwaitingBindPeer => deadlines.bind_peer,
        _ => deadlines.step,
    };
    let mut state = hs.state();
    let mut deadline = Instant::now() + limit_of(state);
    let mut out = Vec::new();
    loop {
        if hs.state() != state {
            state = hs.state();
            deadline = Instant::now() + limit_of(state);
        }
        let fail = |kind: HopErrorKind| (step_of(state), kind);
        out.clear();
        if hs.poll_transmit(&mut out) > 0 {
            let write = async {
                stream.get_mut().write_all(&out).await?;
                stream.get_mut().flush().await
            };
            before(deadline, limit_of(state), write)
                .await
                .map_err(fail)?;
        }
        if let Some(event) = hs.poll_event() {
            return Ok(event);
        }
        if hs.is_finished() {
            return Err(fail(HopErrorKind::Protocol(
                socksmith_proto::ProtocolError::InvalidState("handshake already finished"),
            )));
        }
        let used = hs
            .receive(stream.read_buffer())
            .map_err(|e| fail(HopErrorKind::from_protocol(e, offered_credentials)))?;
        if used > 0 {
            stream.consume(used);
            continue;
        }
        // The machine needs more than what is buffered.
        let (buf, io) = stream.buf_and_io();
        buf.reserve(READ_CHUNK);
        let read = before(deadline, limit_of(state), io.read_buf(buf))
            .await
            .map_err(fail)?;
        if read == 0 {
            return Err(fail(HopErrorKind::Closed));
        }
    }
}

/// Runs `io` until the step's `deadline`: an I/O error, or the deadline passing (reported with
/// the step's `limit`), is the step's failure.
async fn before<T>(
    deadline: Instant,
    limit: Duration,
    io: impl Future<Output = io::Result<T>>,
) -> Result<T, HopErrorKind> {
    match tokio::time::timeout_at(deadline, io).await {
        Ok(result) => result.map_err(HopErrorKind::from_io),
        Err(_) => Err(HopErrorKind::Timeout(limit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socksmith_proto::{ClientConfig, ClientVersion, Credentials, ReplyCode};
    use tokio::io::{duplex, DuplexStream};

    const DEADLINES: StepDeadlines = StepDeadlines {
        step: Duration::from_secs(5),
        bind_peer: Duration::from_secs(5),
    };

    /// Drives a SOCKS5 CONNECT to `target` over `io` (offering `credentials` if any) up to its
    /// first event; returns the stream too, for the bytes after the reply.
    async fn connect(
        io: DuplexStream,
        credentials: Option<Credentials>,
        target: &TargetAddr,
    ) -> (
        ProxyStream<DuplexStream>,
        Result<ClientEvent, (Step, HopErrorKind)>,
    ) {
        let offered_credentials = credentials.is_some();
        let mut hs = ClientHandshake::new(ClientConfig {
            version: ClientVersion::V5,
            credentials,
            user_id: None,
            command: Command::Connect,
            target: target.clone(),
        })
        .expect("valid config");
        let mut stream = ProxyStream::new(io);
        let result = next_event(
            &mut stream,
            &mut hs,
            Command::Connect,
            target,
            DEADLINES,
            offered_credentials,
        )
        .await;
        (stream, result)
    }

    /// A scripted proxy: for each expected request, checks it and sends the answer.
    async fn scripted(mut io: DuplexStream, script: Vec<(Vec<u8>, Vec<u8>)>) {
        for (expect, answer) in script {
            let mut got = vec![0; expect.len()];
            io.read_exact(&mut got).await.expect("read request");
            assert_eq!(got, expect);
            // One byte at a time: the driver must cope with partial answers.
            for b in answer {
                io.write_all(&[b]).await.expect("write answer");
            }
        }
        // Keep the tunnel open until the client is done.
        let mut rest = Vec::new();
        let _ = io.read_to_end(&mut rest).await;
    }

    #[tokio::test]
    async fn drives_auth_and_keeps_early_tunnel_bytes() {
        let target = TargetAddr::Ip("127.0.0.1:80".parse().expect("addr"));
        let (a, b) = duplex(1024);
        let server = tokio::spawn(scripted(
            b,
            vec![
                (vec![5, 2, 0, 2], vec![5, 2]),
                (b"\x01\x01u\x01p".to_vec(), vec![1, 0]),
                (
                    vec![5, 1, 0, 1, 127, 0, 0, 1, 0, 80],
                    b"\x05\x00\x00\x01\x0a\x00\x00\x01\x00\x09banner".to_vec(),
                ),
            ],
        ));
        let credentials = Credentials::new("u", "p").expect("valid");
        let (mut stream, result) = connect(a, Some(credentials), &target).await;
        let event = result.expect("handshake");
        assert_eq!(
            event,
            ClientEvent::Succeeded {
                bound: TargetAddr::Ip("10.0.0.1:9".parse().expect("addr"))
            }
        );
        // "banner" may still be in flight; read it through the stream.
        let mut banner = [0; 6];
        stream.read_exact(&mut banner).await.expect("banner");
        assert_eq!(&banner, b"banner");
        drop(stream);
        server.await.expect("server");
    }

    #[tokio::test]
    async fn rejection_names_the_request_step() {
        let target = TargetAddr::domain("example.com", 80).expect("valid");
        let (a, b) = duplex(1024);
        let mut request = vec![5, 1, 0, 3, 11];
        request.extend_from_slice(b"example.com\x00\x50");
        let server = tokio::spawn(scripted(
            b,
            vec![
                (vec![5, 1, 0], vec![5, 0]),
                (request, vec![5, 5, 0, 1, 0, 0, 0, 0, 0, 0]),
            ],
        ));
        let (stream, result) = connect(a, None, &target).await;
        let (step, kind) = result.expect_err("refused");
        assert_eq!(
            step,
            Step::Request {
                command: Command::Connect,
                target
            }
        );
        assert!(matches!(
            kind,
            HopErrorKind::Rejected {
                code: ReplyCode::ConnectionRefused,
                ..
            }
        ));
        drop(stream);
        server.await.expect("server");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_proxy_times_out_in_the_greeting() {
        let target = TargetAddr::Ip("127.0.0.1:80".parse().expect("addr"));
        let (a, _b) = duplex(1024);
        let (_, result) = connect(a, None, &target).await;
        let (step, kind) = result.expect_err("timeout");
        assert_eq!(step, Step::Greeting);
        assert!(matches!(kind, HopErrorKind::Timeout(d) if d == DEADLINES.step));
    }

    #[tokio::test]
    async fn a_proxy_that_hangs_up_is_reported_as_closed() {
        let target = TargetAddr::Ip("127.0.0.1:80".parse().expect("addr"));
        let (a, b) = duplex(1024);
        drop(b);
        let (_, result) = connect(a, None, &target).await;
        let (_, kind) = result.expect_err("closed");
        // Writing the greeting to a closed duplex fails with BrokenPipe, or the read sees EOF.
        assert!(
            matches!(kind, HopErrorKind::Closed | HopErrorKind::Io(_)),
            "{kind:?}"
        );
    }
}
