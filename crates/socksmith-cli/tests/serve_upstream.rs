//! `socksmith serve --upstream URL`: real clients (curl, PySocks, hand-written bytes) through
//! socksmith and real parent proxies (Dante, microsocks) on loopback. CONNECT by address and by
//! name, credentials in the URL, a two-hop chain, the replies and log lines of a refusing and of
//! an unreachable upstream, BIND and UDP ASSOCIATE through Dante, 64 MiB each way, the
//! config file's `upstream` key and the one-line errors for bad URLs.
//!
//! That a tunnel really went through the parent is read from the parent's own log (Dante logs
//! each session's target as `IP.PORT`; microsocks logs `connected to HOST:PORT`).

mod serve_support;

use std::net::SocketAddr;

use serve_support::*;
use socksmith_testkit::clients::{curl, pysocks, PyMode};
use socksmith_testkit::dante::{Dante, DanteOptions};
use socksmith_testkit::microsocks::{
    dante_and_microsocks, Microsocks, MicrosocksOptions, MICROSOCKS_PASSWORD, MICROSOCKS_USER,
};
use socksmith_testkit::raw::{
    echo_exact, socks4_bind, socks4_bind_accepted, socks5_bind, socks5_bind_accepted,
    socks5_connect, socks5_udp_associate, udp_unwrap, udp_wrap,
};
use socksmith_testkit::socksmith::SocksmithServer;
use socksmith_testkit::targets::HTTP_ROOT_BODY;
use socksmith_testkit::{
    pattern, within, EchoServer, HttpServer, ProxyKind, Target, UdpEchoServer, TEST_DEADLINE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// A loopback port with nothing listening.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("address")
}

/// How Dante writes an address in its log: `127.0.0.1.8080`.
fn dante_addr(addr: SocketAddr) -> String {
    format!("{}.{}", addr.ip(), addr.port())
}

/// Dante's log once it mentions `needle` (it writes a session's line when the session ends).
async fn dante_log_with(dante: &Dante, needle: &str) -> String {
    within(STEP, "Dante's log line", async {
        loop {
            let log = dante.log();
            if log.contains(needle) {
                return log;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
}

/// A SOCKS5 tunnel to `target` through socksmith.
async fn tunnel(proxy: SocketAddr, target: impl Into<Target>) -> TcpStream {
    let (stream, _) = tokio::time::timeout(STEP, socks5_connect(proxy, None, target))
        .await
        .expect("tunnel in time")
        .expect("tunnel");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_serve_and_a_dante_upstream() {
    within(TEST_DEADLINE, "curl via a Dante upstream", async {
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        let server = serve(&["--upstream", &dante.url()]).await;
        let log = log_with(&server, "upstream chain", 1).await;
        assert!(
            log.contains(&format!("upstream=socks5h://{}", dante.addr())),
            "the startup line names the chain:\n{log}"
        );
        let http = HttpServer::start().await;
        for (kind, url) in [
            (ProxyKind::Socks5, http.url("/")),
            // socks5h: the name reaches socksmith, which passes it on to Dante as a name.
            (ProxyKind::Socks5h, http.url_with_host("localhost", "/")),
            (ProxyKind::Socks4, http.url("/")),
        ] {
            let Some(out) = curl(&server.proxy(kind), &url, &[]).await else {
                return;
            };
            out.assert_success();
            assert_eq!(out.stdout_str(), HTTP_ROOT_BODY, "{kind:?}");
        }
        assert_eq!(http.accepted(), 3);
        let log = log_with(&server, "outcome=ok", 3).await;
        assert!(log.contains("destination=localhost:"), "{log}");
        let dante_log = dante_log_with(&dante, &dante_addr(http.addr())).await;
        assert!(
            dante_log.matches(&dante_addr(http.addr())).count() >= 3,
            "every request went through Dante:\n{dante_log}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pysocks_through_serve_and_a_microsocks_upstream_with_credentials_in_the_url() {
    within(
        TEST_DEADLINE,
        "PySocks via microsocks with a password",
        async {
            let Some(ms) = Microsocks::start(MicrosocksOptions::with_auth()).await else {
                return;
            };
            let url = ms.url();
            assert!(url.contains(MICROSOCKS_PASSWORD), "{url}");
            let server = serve(&["--upstream", &url]).await;
            let echo = EchoServer::start().await;
            let payload = pattern(8 * 1024);
            let Some(result) = pysocks(
                &server.proxy(ProxyKind::Socks5),
                &Target::Ip(echo.addr()),
                PyMode::TcpEcho,
                &payload,
            )
            .await
            else {
                return;
            };
            result.assert_ok();
            assert!(result.received == payload, "the echo came back different");
            let log = log_with(&server, "outcome=ok", 1).await;
            assert!(
                log.contains(&format!("{MICROSOCKS_USER}:***@{}", ms.addr())),
                "the chain is logged with the password redacted:\n{log}"
            );
            assert!(
                !log.contains(MICROSOCKS_PASSWORD),
                "password in the log:\n{log}"
            );
            let ms_log = ms.log();
            assert!(
                ms_log.contains(&format!("connected to {}", echo.addr())),
                "microsocks connected to the target:\n{ms_log}"
            );
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_hop_chain_microsocks_then_dante_and_a_refusal_named_by_its_hop() {
    within(TEST_DEADLINE, "two-hop upstream", async {
        let (Some(ms), Some(dante)) = (
            Microsocks::start(MicrosocksOptions::with_auth()).await,
            Dante::start(DanteOptions::default()).await,
        ) else {
            return;
        };
        let server = serve(&["--upstream", &ms.url(), "--upstream", &dante.url()]).await;
        let echo = EchoServer::start().await;
        let data = pattern(300_000);
        for target in [
            Target::Ip(echo.addr()),
            Target::domain("localhost", echo.addr().port()),
        ] {
            let back = echo_exact(tunnel(server.addr(), target).await, &data)
                .await
                .expect("echo");
            assert!(back == data, "the echo came back different");
        }
        dante_log_with(&dante, &dante_addr(echo.addr())).await;

        // Dante, the second hop, finds the target's port closed: its 0x05 is passed on, and
        // the log line names the hop.
        let refused = closed_port().await;
        let mut s = connect(server.addr()).await;
        let (rep, _) = v5_exchange(&mut s, 1, &v5_addr(refused)).await;
        assert_eq!(rep, 0x05, "connection refused");
        assert!(recv_to_end(&mut s).await.is_empty());
        let expected = format!(
            "outcome=hop 2 (socks5h://{}): CONNECT {refused}: connection refused (reply 0x05)",
            dante.addr()
        );
        log_with(&server, &expected, 1).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_upstream_gives_0x05_and_an_unreachable_one_0x01() {
    within(TEST_DEADLINE, "upstream failures", async {
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        let refused = closed_port().await;

        let server = serve(&["--upstream", &dante.url()]).await;
        let mut s = connect(server.addr()).await;
        assert_eq!(v5_exchange(&mut s, 1, &v5_addr(refused)).await.0, 0x05);
        let mut s = connect(server.addr()).await;
        send(&mut s, &v4_request(1, refused, "")).await;
        assert_eq!(recv(&mut s, 8).await[..2], [0, 0x5B], "SOCKS4: rejected");
        let expected = format!(
            "outcome=hop 1 (socks5h://{}): CONNECT {refused}: connection refused (reply 0x05)",
            dante.addr()
        );
        log_with(&server, &expected, 2).await;

        // Nothing listens where the upstream should be: the chain itself is broken, which is
        // not the target's fault, so "general failure".
        let dead = closed_port().await;
        let server = serve(&["--upstream", &format!("socks5://{dead}")]).await;
        let echo = EchoServer::start().await;
        let mut s = connect(server.addr()).await;
        assert_eq!(v5_exchange(&mut s, 1, &v5_addr(echo.addr())).await.0, 0x01);
        assert!(recv_to_end(&mut s).await.is_empty());
        let expected = format!(
            "outcome=hop 1 (socks5://{dead}): connecting to the proxy: connecting to {dead} failed"
        );
        let log = log_with(&server, &expected, 1).await;
        assert!(log.contains("Connection refused"), "{log}");
        assert_eq!(echo.accepted(), 0, "nothing went direct");
    })
    .await;
}

/// Connects a peer to `listen`, then checks both BIND replies' addresses and bytes both ways.
async fn bind_peer_and_talk(mut control: TcpStream, listen: SocketAddr, v4: bool) {
    let mut peer = TcpStream::connect(listen).await.expect("peer connects");
    let peer_addr = peer.local_addr().expect("peer address");
    let announced = if v4 {
        socks4_bind_accepted(&mut control).await
    } else {
        socks5_bind_accepted(&mut control).await
    }
    .expect("second BIND reply");
    assert_eq!(announced.ip().map(|a| a.ip()), Some(peer_addr.ip()));
    peer.write_all(b"from the peer").await.expect("peer write");
    assert_eq!(recv(&mut control, 13).await, b"from the peer");
    send(&mut control, b"from the client").await;
    let mut buf = [0u8; 15];
    peer.read_exact(&mut buf).await.expect("peer read");
    assert_eq!(&buf, b"from the client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_goes_through_a_dante_upstream() {
    within(TEST_DEADLINE, "BIND via Dante", async {
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        let server = serve(&["--upstream", &dante.url()]).await;
        let expected: SocketAddr = "127.0.0.1:0".parse().expect("literal");

        let (control, listen) = socks5_bind(server.addr(), None, expected)
            .await
            .unwrap_or_else(|e| panic!("SOCKS5 BIND: {e}\n{}", server.stderr()));
        bind_peer_and_talk(control, listen, false).await;
        // Dante listens: its log has the BIND port.
        dante_log_with(&dante, &dante_addr(listen)).await;

        let (control, listen) = socks4_bind(server.addr(), "", expected)
            .await
            .unwrap_or_else(|e| panic!("SOCKS4 BIND: {e}\n{}", server.stderr()));
        bind_peer_and_talk(control, listen, true).await;
        dante_log_with(&dante, &dante_addr(listen)).await;
        log_with(&server, "command=BIND", 2).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_goes_through_a_dante_upstream() {
    within(TEST_DEADLINE, "UDP via Dante", async {
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        let server = serve(&["--upstream", &dante.url()]).await;
        let echo = UdpEchoServer::start().await;
        let local = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let (control, relay) =
            socks5_udp_associate(server.addr(), None, local.local_addr().expect("address"))
                .await
                .unwrap_or_else(|e| panic!("UDP ASSOCIATE: {e}\n{}", server.stderr()));
        // An address, and a name Dante resolves (socks5h: it is passed on as a name).
        for (i, target) in [
            Target::Ip(echo.addr()),
            Target::domain("localhost", echo.addr().port()),
        ]
        .iter()
        .enumerate()
        {
            let payload = format!("datagram {i} through two relays");
            local
                .send_to(&udp_wrap(target, payload.as_bytes()), relay)
                .await
                .expect("send");
            let mut buf = vec![0u8; 2048];
            let (n, from) = tokio::time::timeout(STEP, local.recv_from(&mut buf))
                .await
                .expect("an answer in time")
                .expect("receive");
            assert_eq!(from, relay, "answers come from socksmith's relay");
            let (source, data) = udp_unwrap(&buf[..n]).expect("a SOCKS5 datagram");
            assert_eq!(source.port(), echo.addr().port());
            assert_eq!(data, payload.as_bytes());
        }
        assert_eq!(echo.received(), 2);
        // The target heard from Dante's relay: Dante logs that address when the association
        // ends.
        drop(control);
        let sender = echo.senders()[0];
        dante_log_with(&dante, &dante_addr(sender)).await;
        log_with(&server, "command=UDP ASSOCIATE", 1).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_each_way_through_a_dante_upstream_arrive_intact() {
    const TOTAL: usize = 64 << 20;
    within(TEST_DEADLINE, "64 MiB via Dante", async {
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        let server = serve(&["--upstream", &dante.url()]).await;
        let echo = EchoServer::start().await;
        let client = tunnel(server.addr(), echo.addr()).await;
        echo_integrity(client, TOTAL, 0x2545_F491_4F6C_DD1D).await;
        let log = log_with(&server, "outcome=ok", 1).await;
        let expected = format!("bytes_up={TOTAL} bytes_down={TOTAL}");
        assert!(log.contains(&expected), "{expected} not in:\n{log}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_files_upstream_key_and_flags_overriding_it() {
    within(TEST_DEADLINE, "upstream in the config file", async {
        let Some((dante, ms)) =
            dante_and_microsocks(DanteOptions::default(), MicrosocksOptions::default()).await
        else {
            return;
        };
        let dir = TestDir::new("upstream");
        let path = dir.path().join("serve.toml");
        let text = format!(
            "listen = [\"127.0.0.1:0\"]\nupstream = [\"{}\"]\n",
            dante.url()
        );
        std::fs::write(&path, text).expect("write the config file");
        let config = path.to_str().expect("UTF-8 path");
        let echo = EchoServer::start().await;
        let data = pattern(10_000);

        let server = SocksmithServer::try_start(bin(), &["serve", "--config", config], &[], 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let back = echo_exact(tunnel(server.addr(), echo.addr()).await, &data).await;
        assert!(back.expect("echo") == data);
        dante_log_with(&dante, &dante_addr(echo.addr())).await;

        // The flag replaces the file's chain: microsocks, not Dante.
        let ms_url = ms.url();
        let server = SocksmithServer::try_start(
            bin(),
            &["serve", "--config", config, "--upstream", &ms_url],
            &[],
            1,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let log = log_with(&server, "upstream chain", 1).await;
        assert!(log.contains(&format!("upstream={ms_url}")), "{log}");
        assert!(!log.contains(&dante.url()), "{log}");
        let back = echo_exact(tunnel(server.addr(), echo.addr()).await, &data).await;
        assert!(back.expect("echo") == data);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_upstream_url_fails_at_startup_with_one_line() {
    within(TEST_DEADLINE, "bad upstream URLs", async {
        let failed = SocksmithServer::try_start(
            bin(),
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                "socks5h://127.0.0.1:1080",
                "--upstream",
                "https://alice:hunter2@proxy.example:3128",
            ],
            &[],
            1,
        )
        .await
        .expect_err("a bad URL must not start");
        assert!(!failed.status.expect("it exited").success());
        assert!(failed.stdout.is_empty(), "nothing announced: {failed}");
        let stderr = failed.stderr.trim();
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert_eq!(
            stderr,
            "socksmith: --upstream #2: invalid proxy URL \"https://alice:***@proxy.example:3128\": \
             unsupported scheme \"https\" (expected socks4, socks4a, socks5, socks5h or http)"
        );

        let dir = TestDir::new("upstream");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "upstream = [\"socks5://127.0.0.1:99999\"]\n").expect("write");
        let config = path.to_str().expect("UTF-8 path");
        let failed = SocksmithServer::try_start(bin(), &["serve", "--config", config], &[], 1)
            .await
            .expect_err("a bad URL in the file must not start");
        let stderr = failed.stderr.trim();
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains(
                ": upstream[0]: invalid proxy URL \"socks5://127.0.0.1:99999\": invalid port"
            ),
            "{stderr}"
        );
    })
    .await;
}
