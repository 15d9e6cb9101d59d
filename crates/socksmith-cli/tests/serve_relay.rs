//! The relay of `socksmith serve`, seen from both ends of real tunnels: half-close in each
//! direction, resets, 64 MiB each way with checksums, and 200 tunnels at once.

mod serve_support;

use std::net::SocketAddr;

use serve_support::*;
use socksmith_testkit::raw::{half_close_to_sink, socks5_connect};
use socksmith_testkit::{within, EchoServer, SinkServer, TEST_DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A tunnel to `target` through `proxy` (SOCKS5, no authentication).
async fn tunnel(proxy: SocketAddr, target: SocketAddr) -> TcpStream {
    let (stream, _) = tokio::time::timeout(STEP, socks5_connect(proxy, None, target))
        .await
        .expect("tunnel in time")
        .expect("tunnel");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_from_the_client_keeps_the_answer_flowing() {
    within(TEST_DEADLINE, "client half-close", async {
        let server = serve(&[]).await;
        let sink = SinkServer::start().await;
        let data = vec![7u8; 300_000];
        let answer = half_close_to_sink(tunnel(server.addr(), sink.addr()).await, &data)
            .await
            .expect("half-close round trip");
        assert_eq!(
            answer,
            Some(data.len() as u64),
            "the sink's count came back"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_from_the_target_keeps_the_client_direction_open() {
    within(TEST_DEADLINE, "target half-close", async {
        let server = serve(&[]).await;
        let target = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target_addr = target.local_addr().expect("address");
        // The target greets, half-closes, then reads everything the client still sends.
        let target_side = tokio::spawn(async move {
            let (mut s, _) = target.accept().await.expect("accept");
            s.write_all(b"greeting").await.expect("write");
            s.shutdown().await.expect("half-close");
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.expect("read to end");
            got
        });
        let mut client = tunnel(server.addr(), target_addr).await;
        assert_eq!(
            recv_to_end(&mut client).await,
            b"greeting",
            "EOF after the greeting"
        );
        // The client's direction still works after the target's EOF.
        send(&mut client, b"still talking").await;
        client.shutdown().await.expect("half-close");
        let got = within(STEP, "target sees the client's bytes and EOF", target_side)
            .await
            .expect("target task");
        assert_eq!(got, b"still talking");
        log_with(&server, "outcome=ok", 1).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_on_either_side_ends_the_tunnel_and_the_server_goes_on() {
    within(TEST_DEADLINE, "resets", async {
        let server = serve(&[]).await;
        let target = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target_addr = target.local_addr().expect("address");

        // The target resets: the client sees the tunnel end (reset or EOF), not a hang.
        let mut client = tunnel(server.addr(), target_addr).await;
        let (t, _) = target.accept().await.expect("accept");
        t.set_zero_linger().expect("SO_LINGER 0");
        drop(t);
        let mut buf = [0u8; 16];
        let end = tokio::time::timeout(STEP, client.read(&mut buf))
            .await
            .expect("tunnel ends");
        assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");

        // The client resets: the target sees the end.
        let client = tunnel(server.addr(), target_addr).await;
        let (mut t, _) = target.accept().await.expect("accept");
        client.set_zero_linger().expect("SO_LINGER 0");
        drop(client);
        let end = tokio::time::timeout(STEP, t.read(&mut buf))
            .await
            .expect("tunnel ends");
        assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");

        let log = log_with(&server, "session finished", 2).await;
        assert!(
            log.contains("outcome=tunnel: target connection failed"),
            "{log}"
        );
        assert!(
            log.contains("outcome=tunnel: client connection failed"),
            "{log}"
        );
        // Still serving.
        let echo = EchoServer::start().await;
        let mut s = tunnel(server.addr(), echo.addr()).await;
        send(&mut s, b"alive").await;
        assert_eq!(recv(&mut s, 5).await, b"alive");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_each_way_arrive_intact() {
    const TOTAL: usize = 64 << 20;
    within(TEST_DEADLINE, "64 MiB through an echo target", async {
        let server = serve(&[]).await;
        let echo = EchoServer::start().await;
        let client = tunnel(server.addr(), echo.addr()).await;
        echo_integrity(client, TOTAL, 0x9E37_79B9_7F4A_7C15).await;
        let log = log_with(&server, "outcome=ok", 1).await;
        let expected = format!("bytes_up={TOTAL} bytes_down={TOTAL}");
        assert!(log.contains(&expected), "{expected} not in:\n{log}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_tunnels_at_once() {
    const TUNNELS: usize = 200;
    within(TEST_DEADLINE, "200 concurrent tunnels", async {
        let server = serve(&[]).await;
        let echo = EchoServer::start().await;
        // Open all of them first, so that they really are concurrent.
        let mut open = JoinSet::new();
        for _ in 0..TUNNELS {
            let proxy = server.addr();
            let target = echo.addr();
            open.spawn(async move { tunnel(proxy, target).await });
        }
        let mut tunnels = Vec::with_capacity(TUNNELS);
        while let Some(t) = open.join_next().await {
            tunnels.push(t.expect("open task"));
        }
        let mut traffic = JoinSet::new();
        for (i, mut t) in tunnels.into_iter().enumerate() {
            traffic.spawn(async move {
                let data: Vec<u8> = (0..16 * 1024).map(|j| ((i * 31 + j) % 256) as u8).collect();
                t.write_all(&data).await.expect("write");
                let mut back = vec![0u8; data.len()];
                t.read_exact(&mut back).await.expect("read back");
                assert!(back == data, "tunnel {i}: bytes differ");
            });
        }
        while let Some(done) = traffic.join_next().await {
            done.expect("tunnel task");
        }
        // Counted only now: the proxy's CONNECT succeeds once the kernel has queued the
        // connection, which can be before the echo server's accept loop has taken it.
        assert_eq!(echo.accepted(), TUNNELS);
        log_with(&server, "session finished", TUNNELS).await;
    })
    .await;
}

/// The server runs in its own process, so paused time cannot help; the margins are wide instead:
/// traffic every 250 ms against a 2 s idle timeout keeps a tunnel alive for 3 s, more than the
/// timeout (a tick would have to be 1.75 s late for a false close on a loaded machine), and the
/// silence that follows must last at least 1.5 s before the close (the timeout counts from the
/// last tick, which the server saw before the client read its echo).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_is_closed_after_the_idle_timeout() {
    use std::time::Duration;
    const IDLE: Duration = Duration::from_secs(2);
    const TICK: Duration = Duration::from_millis(250);
    within(TEST_DEADLINE, "idle tunnel", async {
        let server = serve(&["--idle-timeout", "2s"]).await;
        let echo = EchoServer::start().await;
        let mut t = tunnel(server.addr(), echo.addr()).await;
        // Traffic keeps it alive, for longer than the idle timeout...
        let busy = std::time::Instant::now();
        while busy.elapsed() < IDLE + Duration::from_secs(1) {
            tokio::time::sleep(TICK).await;
            send(&mut t, b"tick").await;
            assert_eq!(recv(&mut t, 4).await, b"tick");
        }
        // ... silence ends it.
        let started = std::time::Instant::now();
        let mut buf = [0u8; 4];
        let end = tokio::time::timeout(STEP, t.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
        let silent = started.elapsed();
        assert!(
            silent >= IDLE - Duration::from_millis(500),
            "closed after {silent:?}"
        );
        log_with(&server, "outcome=tunnel: tunnel idle for 2s", 1).await;
    })
    .await;
}
