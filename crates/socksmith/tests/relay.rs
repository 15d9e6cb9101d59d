//! The relay between real loopback TCP connections (zero-copy and copying) and between
//! in-memory streams: integrity, half-close both ways, resets, idle timeout, pipelined bytes.

use std::io;
use std::time::Duration;

use socksmith::relay::{relay, relay_generic, RelayError, RelayOptions, RelayOutcome, Side};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The two ways `relay` moves TCP bytes.
#[derive(Debug, Clone, Copy)]
enum Mode {
    ZeroCopy,
    Copy,
}

const MODES: [Mode; 2] = [Mode::ZeroCopy, Mode::Copy];

fn options(mode: Mode) -> RelayOptions {
    let mut opts = RelayOptions::default();
    opts.zero_copy = matches!(mode, Mode::ZeroCopy);
    opts
}

/// A connected pair of loopback TCP streams.
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (a.expect("connect"), b.expect("accept").0)
}

/// A tunnel under test: the user's end of the client connection, the far end of the target
/// connection, and the relay between them running in a task.
struct Tunnel {
    client: TcpStream,
    target: TcpStream,
    relay: JoinHandle<RelayOutcome>,
}

async fn tunnel(opts: RelayOptions, pending: &'static [u8]) -> Tunnel {
    let (client, client_inner) = tcp_pair().await;
    let (target_inner, target) = tcp_pair().await;
    let relay =
        tokio::spawn(async move { relay(client_inner, target_inner, pending, &opts).await });
    Tunnel {
        client,
        target,
        relay,
    }
}

/// A byte stream no chunking can fool: byte `i` is `PATTERN[i % PATTERN_LEN]`, the length a
/// prime so that a lost, repeated or reordered chunk shows up at once.
const PATTERN_LEN: usize = 1_000_003;

fn pattern(seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..PATTERN_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Writes `len` bytes of the pattern, then shuts down the write half.
async fn send_pattern<W: AsyncWrite + Unpin>(
    mut w: W,
    pattern: &[u8],
    len: usize,
) -> io::Result<()> {
    let mut pos = 0;
    while pos < len {
        let at = pos % PATTERN_LEN;
        let n = (PATTERN_LEN - at).min(len - pos).min(256 * 1024);
        w.write_all(&pattern[at..at + n]).await?;
        pos += n;
    }
    w.shutdown().await
}

/// Reads to end of stream, checking every byte against the pattern; returns the count.
async fn check_pattern<R: AsyncRead + Unpin>(mut r: R, pattern: &[u8]) -> io::Result<usize> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut pos = 0;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(pos);
        }
        let mut got = &buf[..n];
        while !got.is_empty() {
            let at = pos % PATTERN_LEN;
            let k = got.len().min(PATTERN_LEN - at);
            assert!(
                got[..k] == pattern[at..at + k],
                "corrupt stream at byte {pos}"
            );
            got = &got[k..];
            pos += k;
        }
    }
}

async fn relay_result(relay: JoinHandle<RelayOutcome>) -> RelayOutcome {
    tokio::time::timeout(Duration::from_secs(60), relay)
        .await
        .expect("relay ends")
        .expect("relay task does not panic")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_64_mib_each_way_at_once_intact() {
    const LEN: usize = 64 << 20;
    let up = pattern(1);
    let down = pattern(2);
    for mode in MODES {
        let t = tunnel(options(mode), b"").await;
        let (client_r, client_w) = t.client.into_split();
        let (target_r, target_w) = t.target.into_split();
        let (sent_up, sent_down, got_up, got_down) = tokio::join!(
            send_pattern(client_w, &up, LEN),
            send_pattern(target_w, &down, LEN),
            check_pattern(target_r, &up),
            check_pattern(client_r, &down),
        );
        sent_up.expect("client sends");
        sent_down.expect("target sends");
        assert_eq!(got_up.expect("target reads"), LEN, "{mode:?}");
        assert_eq!(got_down.expect("client reads"), LEN, "{mode:?}");
        let out = relay_result(t.relay).await;
        out.result.expect("clean end");
        assert_eq!(out.client_to_target, LEN as u64);
        assert_eq!(out.target_to_client, LEN as u64);
    }
}

/// `closer` writes `first` and shuts down its write half; `other` sees `first`, then end of
/// stream, and only then answers with `len` bytes of `body`, which `closer` reads back whole.
async fn half_close_then_answer(
    closer: &mut TcpStream,
    other: &mut TcpStream,
    first: &[u8],
    body: &[u8],
    len: usize,
) {
    closer.write_all(first).await.expect("write");
    closer.shutdown().await.expect("shut down the write half");
    let mut got = Vec::new();
    other.read_to_end(&mut got).await.expect("read");
    assert_eq!(got, first);
    send_pattern(&mut *other, body, len).await.expect("answer");
    assert_eq!(check_pattern(&mut *closer, body).await.expect("read"), len);
}

#[tokio::test]
async fn client_half_close_lets_the_response_flow_after_it() {
    const RESPONSE: usize = 3 << 20;
    let body = pattern(3);
    for mode in MODES {
        let mut t = tunnel(options(mode), b"").await;
        half_close_then_answer(&mut t.client, &mut t.target, b"request", &body, RESPONSE).await;

        let out = relay_result(t.relay).await;
        out.result.expect("clean end");
        assert_eq!(
            (out.client_to_target, out.target_to_client),
            (7, RESPONSE as u64)
        );
    }
}

#[tokio::test]
async fn target_half_close_lets_the_upload_flow_after_it() {
    const UPLOAD: usize = 3 << 20;
    let body = pattern(4);
    for mode in MODES {
        let mut t = tunnel(options(mode), b"").await;
        half_close_then_answer(&mut t.target, &mut t.client, b"banner", &body, UPLOAD).await;

        let out = relay_result(t.relay).await;
        out.result.expect("clean end");
        assert_eq!(
            (out.client_to_target, out.target_to_client),
            (UPLOAD as u64, 6)
        );
    }
}

/// Closes `stream` with a reset instead of a FIN.
fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER");
    drop(stream);
}

#[tokio::test]
async fn a_client_reset_ends_the_tunnel_and_closes_the_target() {
    for mode in MODES {
        let mut t = tunnel(options(mode), b"").await;
        t.client.write_all(b"partial").await.expect("write");
        let mut got = [0u8; 7];
        t.target
            .read_exact(&mut got)
            .await
            .expect("bytes before the reset arrive");
        reset(t.client);

        let out = relay_result(t.relay).await;
        let err = out.result.expect_err("a reset is an error");
        assert_eq!(err.side(), Some(Side::Client), "{mode:?}: {err}");
        assert!(err.is_reset(), "{mode:?}: {err}");
        assert_eq!(out.client_to_target, 7);
        // The target's connection is closed (with a reset passed on in zero-copy mode).
        let mut rest = Vec::new();
        let end = t.target.read_to_end(&mut rest).await;
        assert!(rest.is_empty());
        if let Err(e) = end {
            assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{mode:?}");
        }
    }
}

#[tokio::test]
async fn a_target_reset_ends_the_tunnel_and_closes_the_client() {
    for mode in MODES {
        let mut t = tunnel(options(mode), b"").await;
        t.client.write_all(b"hello").await.expect("write");
        let mut got = [0u8; 5];
        t.target.read_exact(&mut got).await.expect("read");
        reset(t.target);

        let out = relay_result(t.relay).await;
        let err = out.result.expect_err("a reset is an error");
        assert_eq!(err.side(), Some(Side::Target), "{mode:?}: {err}");
        assert!(err.is_reset(), "{mode:?}: {err}");
        let mut rest = Vec::new();
        let _ = t.client.read_to_end(&mut rest).await;
        assert!(rest.is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_tunnel_times_out_but_a_busy_one_does_not() {
    let idle = Duration::from_millis(200);
    for mode in MODES {
        let mut opts = options(mode);
        opts.idle_timeout = Some(idle);
        let mut t = tunnel(opts, b"").await;
        // Traffic every 150 ms, alternating directions, for 1.5 s: never idle for 200 ms.
        let mut byte = [0u8; 1];
        for i in 0..10 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            if i % 2 == 0 {
                t.client.write_all(b"x").await.expect("write");
                t.target.read_exact(&mut byte).await.expect("relayed");
            } else {
                t.target.write_all(b"y").await.expect("write");
                t.client.read_exact(&mut byte).await.expect("relayed");
            }
        }
        let last = Instant::now();
        let out = relay_result(t.relay).await;
        let waited = Instant::now() - last;
        assert!(
            matches!(out.result, Err(RelayError::IdleTimeout(d)) if d == idle),
            "{mode:?}: {:?}",
            out.result
        );
        assert!(
            waited >= idle && waited < idle * 2,
            "{mode:?}: ended after {waited:?}"
        );
        assert_eq!((out.client_to_target, out.target_to_client), (5, 5));
        // Both connections are closed.
        assert_eq!(t.client.read(&mut byte).await.expect("EOF"), 0);
        assert_eq!(t.target.read(&mut byte).await.expect("EOF"), 0);
    }
}

#[tokio::test]
async fn pending_client_bytes_reach_the_target_first() {
    for mode in MODES {
        let (mut client, client_inner) = tcp_pair().await;
        let (target_inner, mut target) = tcp_pair().await;
        // The client sent its request and more right away; the server read the request and
        // "GET /" with it, and the rest still waits in the socket.
        client.write_all(b" HTTP/1.0\r\n\r\n").await.expect("write");
        client.shutdown().await.expect("shutdown");
        let opts = options(mode);
        let relay =
            tokio::spawn(async move { relay(client_inner, target_inner, b"GET /", &opts).await });
        let mut got = Vec::new();
        target.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"GET / HTTP/1.0\r\n\r\n", "{mode:?}");
        drop(target);
        let out = relay_result(relay).await;
        out.result.expect("clean end");
        assert_eq!(out.client_to_target, 18);
    }
}

#[tokio::test]
async fn pending_bytes_larger_than_socket_buffers_are_all_delivered() {
    const LEN: usize = 8 << 20;
    let body = pattern(7);
    for mode in MODES {
        let (client, client_inner) = tcp_pair().await;
        let (target_inner, target) = tcp_pair().await;
        let pending: Vec<u8> = body.iter().copied().cycle().take(LEN).collect();
        let opts = options(mode);
        let relay =
            tokio::spawn(async move { relay(client_inner, target_inner, &pending, &opts).await });
        // The client also sends more after the pending bytes, then ends.
        let mut client = client;
        client.write_all(b"tail").await.expect("write");
        client.shutdown().await.expect("shutdown");
        let mut target = target;
        let mut got = Vec::with_capacity(LEN + 4);
        target.read_to_end(&mut got).await.expect("read");
        assert_eq!(got.len(), LEN + 4, "{mode:?}");
        assert!(got[..LEN] == body.iter().copied().cycle().take(LEN).collect::<Vec<u8>>()[..]);
        assert_eq!(&got[LEN..], b"tail");
        drop((client, target));
        let out = relay_result(relay).await;
        out.result.expect("clean end");
        assert_eq!(out.client_to_target, LEN as u64 + 4);
    }
}

#[tokio::test]
async fn generic_relay_over_in_memory_streams() {
    const LEN: usize = 4 << 20;
    let up = pattern(5);
    let down = pattern(6);
    // Small pipes force partial writes, so bytes must be held and the buffers reused.
    let (client, client_inner) = tokio::io::duplex(1000);
    let (target_inner, target) = tokio::io::duplex(3000);
    let relay = tokio::spawn(async move {
        relay_generic(
            client_inner,
            target_inner,
            b"hello ",
            &RelayOptions::default(),
        )
        .await
    });
    let (client_r, client_w) = tokio::io::split(client);
    let (mut target_r, target_w) = tokio::io::split(target);
    let mut hello = [0u8; 6];
    target_r
        .read_exact(&mut hello)
        .await
        .expect("pending bytes first");
    assert_eq!(&hello, b"hello ");
    let (sent_up, sent_down, got_up, got_down) = tokio::join!(
        send_pattern(client_w, &up, LEN),
        send_pattern(target_w, &down, LEN),
        check_pattern(target_r, &up),
        check_pattern(client_r, &down),
    );
    sent_up.expect("client sends");
    sent_down.expect("target sends");
    assert_eq!(got_up.expect("read"), LEN);
    assert_eq!(got_down.expect("read"), LEN);
    let out = relay_result(relay).await;
    out.result.expect("clean end");
    assert_eq!(
        (out.client_to_target, out.target_to_client),
        (LEN as u64 + 6, LEN as u64)
    );
}

#[tokio::test]
async fn generic_relay_half_closes_in_memory_streams() {
    let (mut client, client_inner) = tokio::io::duplex(64);
    let (target_inner, mut target) = tokio::io::duplex(64);
    let relay = tokio::spawn(async move {
        relay_generic(client_inner, target_inner, b"", &RelayOptions::default()).await
    });
    client.write_all(b"question").await.expect("write");
    client.shutdown().await.expect("shutdown");
    let mut question = Vec::new();
    target
        .read_to_end(&mut question)
        .await
        .expect("read to EOF");
    assert_eq!(question, b"question");
    target
        .write_all(b"answer")
        .await
        .expect("write after the client's EOF");
    drop(target);
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.expect("read");
    assert_eq!(answer, b"answer");
    let out = relay_result(relay).await;
    out.result.expect("clean end");
}

#[tokio::test]
async fn generic_relay_reports_a_broken_destination() {
    let (mut client, client_inner) = tokio::io::duplex(64);
    let (target_inner, target) = tokio::io::duplex(64);
    let relay = tokio::spawn(async move {
        relay_generic(client_inner, target_inner, b"", &RelayOptions::default()).await
    });
    drop(target);
    // The relay may see the target's EOF first; it then keeps relaying client bytes into a
    // stream nobody reads, which fails.
    let _ = client.write_all(b"into the void").await;
    let out = relay_result(relay).await;
    let err = out.result.expect_err("the target is gone");
    assert_eq!(err.side(), Some(Side::Target), "{err}");
    assert!(err.is_reset(), "{err}");
}

/// TCP urgent data ("out of band", telnet's interrupt) in the middle of a bulk stream: splice(2)
/// stops in front of the urgent mark where read(2) steps over it, so a spliced direction must
/// neither stall there nor take the stop for the end of the stream. Every in-band byte arrives,
/// before and after the mark, in both modes, and the end follows.
#[tokio::test]
async fn urgent_data_neither_stalls_nor_truncates_a_bulk_stream() {
    for (mode, fin_right_after) in [
        (Mode::ZeroCopy, false),
        (Mode::ZeroCopy, true),
        (Mode::Copy, false),
    ] {
        let Tunnel {
            client,
            mut target,
            relay,
        } = tunnel(options(mode), b"").await;
        let bulk = vec![7u8; 256 * 1024];
        let (mut client_read, mut client_write) = client.into_split();
        let writer = {
            let bulk = bulk.clone();
            tokio::spawn(async move {
                // Enough bulk for the direction to switch to splicing first.
                client_write.write_all(&bulk).await.expect("bulk");
                client_write.flush().await.expect("flush");
                let sock = socket2::SockRef::from(client_write.as_ref());
                sock.send_out_of_band(b"!").expect("urgent byte");
                if !fin_right_after {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                client_write.write_all(b"after").await.expect("after");
                client_write.shutdown().await.expect("half-close");
            })
        };
        let mut received = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), target.read_to_end(&mut received))
            .await
            .unwrap_or_else(|_| panic!("{mode:?}: the direction stalled at the urgent mark"))
            .expect("read to end");
        writer.await.expect("writer");
        assert_eq!(
            received.len(),
            bulk.len() + 5,
            "{mode:?} fin_right_after={fin_right_after}"
        );
        assert!(
            received.ends_with(b"after"),
            "{mode:?}: bytes after the mark were lost"
        );
        target.shutdown().await.expect("target half-close");
        let mut rest = Vec::new();
        client_read
            .read_to_end(&mut rest)
            .await
            .expect("client end");
        let outcome = relay.await.expect("relay task");
        assert!(outcome.result.is_ok(), "{mode:?}: {:?}", outcome.result);
    }
}

/// The same urgent byte, but the sender keeps its connection open afterwards: the bytes after
/// the mark must arrive on their own, not only once a FIN wakes the direction up. (A spliced
/// direction used to lose its readiness at the mark and sleep until the sender closed.)
#[tokio::test]
async fn bytes_after_urgent_data_arrive_while_the_sender_stays_open() {
    for mode in MODES {
        let Tunnel {
            client,
            mut target,
            relay,
        } = tunnel(options(mode), b"").await;
        let bulk = vec![7u8; 256 * 1024];
        let (mut client_read, mut client_write) = client.into_split();
        let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
        let writer = {
            let bulk = bulk.clone();
            tokio::spawn(async move {
                // Enough bulk for the direction to switch to splicing first.
                client_write.write_all(&bulk).await.expect("bulk");
                let sock = socket2::SockRef::from(client_write.as_ref());
                sock.send_out_of_band(b"!").expect("urgent byte");
                client_write.write_all(b"after").await.expect("after");
                // No FIN until the reader has everything (or gave up).
                let _ = close_rx.await;
                client_write.shutdown().await.expect("half-close");
            })
        };
        let mut received = vec![0u8; bulk.len() + 5];
        let got =
            tokio::time::timeout(Duration::from_secs(5), target.read_exact(&mut received)).await;
        let _ = close_tx.send(());
        got.unwrap_or_else(|_| panic!("{mode:?}: bytes after the urgent mark waited for a FIN"))
            .expect("read");
        writer.await.expect("writer");
        assert!(received[..bulk.len()] == bulk[..], "{mode:?}: bulk intact");
        assert_eq!(&received[bulk.len()..], b"after", "{mode:?}");
        let mut rest = Vec::new();
        target.read_to_end(&mut rest).await.expect("target end");
        assert!(rest.is_empty(), "{mode:?}: nothing after the end: {rest:?}");
        target.shutdown().await.expect("target half-close");
        client_read
            .read_to_end(&mut rest)
            .await
            .expect("client end");
        let outcome = relay.await.expect("relay task");
        assert!(outcome.result.is_ok(), "{mode:?}: {:?}", outcome.result);
        assert_eq!(outcome.client_to_target, bulk.len() as u64 + 5);
    }
}
