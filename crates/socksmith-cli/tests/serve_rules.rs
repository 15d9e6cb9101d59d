//! `socksmith serve` access control and limits, on loopback: `[[rules]]` (every key, first
//! match, `default = "deny"`, a name resolving into a denied range), `--allow-from`, the
//! per-user and per-client limits (the N+1-th refused with 0x02 while others work) and
//! `--udp-advertise`. Clients from another address come from 127.0.0.2 (the whole of
//! 127.0.0.0/8 is loopback on Linux).

mod serve_support;

use std::net::{IpAddr, SocketAddr};

use serve_support::*;
use socksmith_testkit::socksmith::SocksmithServer;
use socksmith_testkit::{within, EchoServer, TEST_DEADLINE};
use tokio::net::{TcpSocket, TcpStream};

const OTHER_CLIENT: [u8; 4] = [127, 0, 0, 2];

/// Connects to the proxy from `source`.
async fn connect_from(proxy: SocketAddr, source: [u8; 4]) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind the client's address");
    tokio::time::timeout(STEP, socket.connect(proxy))
        .await
        .expect("connect in time")
        .expect("connect to the proxy")
}

/// A server with `config` as its file and `args` as flags.
async fn serve_with(dir: &TestDir, config: &str, args: &[&str]) -> SocksmithServer {
    let path = dir.path().join("socksmith.toml");
    std::fs::write(&path, config).expect("write the config file");
    let path = path.to_str().expect("UTF-8 temporary path").to_owned();
    let mut all = vec!["--config", path.as_str()];
    all.extend_from_slice(args);
    serve(&all).await
}

/// Greeting, RFC 1929 login as `user` (password `pw`) when given, and a request: the reply
/// code and address bytes, and the stream (the tunnel when 0).
async fn v5_request(
    mut s: TcpStream,
    user: Option<&str>,
    cmd: u8,
    addr: &[u8],
) -> (u8, Vec<u8>, TcpStream) {
    match user {
        None => send(&mut s, &[5, 1, 0]).await,
        Some(_) => send(&mut s, &[5, 1, 2]).await,
    }
    let choice = recv(&mut s, 2).await;
    if let Some(user) = user {
        assert_eq!(choice, [5, 2], "username/password chosen");
        let mut login = vec![1, u8::try_from(user.len()).expect("short name")];
        login.extend_from_slice(user.as_bytes());
        login.extend_from_slice(&[2, b'p', b'w']);
        send(&mut s, &login).await;
        assert_eq!(recv(&mut s, 2).await, [1, 0], "{user} logged in");
    } else {
        assert_eq!(choice, [5, 0]);
    }
    let mut request = vec![5, cmd, 0];
    request.extend_from_slice(addr);
    send(&mut s, &request).await;
    let (rep, bound) = v5_reply(&mut s).await;
    (rep, bound, s)
}

/// The reply code of a no-auth CONNECT from 127.0.0.1.
async fn connect_code(server: &SocksmithServer, addr: &[u8]) -> u8 {
    v5_request(connect(server.addr()).await, None, 1, addr)
        .await
        .0
}

/// The log line of the session for `destination`.
async fn line_for(server: &SocksmithServer, destination: &str) -> String {
    let needle = format!("destination={destination} ");
    let log = log_with(server, &needle, 1).await;
    log.lines()
        .rev()
        .find(|l| l.contains(&needle))
        .expect("found above")
        .to_owned()
}

const UDP_ANY: [u8; 7] = [1, 0, 0, 0, 0, 0, 0];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rule_key_matches_and_the_denial_names_the_rule() {
    within(TEST_DEADLINE, "rule keys", async {
        let dir = TestDir::new("rules-keys");
        let echo = EchoServer::start().await;
        let other = EchoServer::bind(SocketAddr::from((OTHER_CLIENT, 0)))
            .await
            .expect("an echo target on 127.0.0.2");
        let port = echo.addr().port();
        let config = format!(
            r#"
            [[rules]]
            name = "from-other"
            action = "deny"
            from = ["127.0.0.2/32"]
            [[rules]]
            name = "bob"
            action = "deny"
            users = ["bob"]
            [[rules]]
            name = "no-bind-udp"
            action = "deny"
            commands = ["bind", "udp", "resolve"]
            [[rules]]
            name = "no-other-target"
            action = "deny"
            to = ["127.0.0.2/32"]
            [[rules]]
            name = "no-ports"
            action = "deny"
            ports = [{low}, "{low}-{high}"]
            [[rules]]
            name = "no-name"
            action = "deny"
            domains = ["*.localhost", "localhost"]
            ports = [{port}]
            "#,
            low = port.saturating_add(1),
            high = port.saturating_add(2),
        );
        let server = serve_with(&dir, &config, &["--user", "alice:pw", "--user", "bob:pw"]).await;
        let echo_addr = v5_addr(echo.addr());
        // from
        let from_other = connect_from(server.addr(), OTHER_CLIENT).await;
        assert_eq!(
            v5_request(from_other, Some("alice"), 1, &echo_addr).await.0,
            2
        );
        let line = line_for(&server, &echo.addr().to_string()).await;
        assert!(line.contains("rule \\\"from-other\\\" (#1)"), "{line}");
        // users
        let (rep, _, _) =
            v5_request(connect(server.addr()).await, Some("bob"), 1, &echo_addr).await;
        assert_eq!(rep, 2);
        log_with(&server, "denied by rule \\\"bob\\\" (#2)", 1).await;
        let (rep, _, mut tunnel) =
            v5_request(connect(server.addr()).await, Some("alice"), 1, &echo_addr).await;
        assert_eq!(rep, 0, "alice from 127.0.0.1 matches no rule");
        send(&mut tunnel, b"hi").await;
        assert_eq!(recv(&mut tunnel, 2).await, b"hi");
        // commands
        for cmd in [2, 3, 0xF0] {
            let addr = if cmd == 0xF0 {
                v5_name("localhost", 0)
            } else {
                UDP_ANY.to_vec()
            };
            let (rep, _, _) =
                v5_request(connect(server.addr()).await, Some("alice"), cmd, &addr).await;
            assert_eq!(rep, 2, "command {cmd:#04x}");
        }
        log_with(&server, "denied by rule \\\"no-bind-udp\\\" (#3)", 3).await;
        // to
        let (rep, _, _) = v5_request(
            connect(server.addr()).await,
            Some("alice"),
            1,
            &v5_addr(other.addr()),
        )
        .await;
        assert_eq!(rep, 2);
        log_with(&server, "denied by rule \\\"no-other-target\\\" (#4)", 1).await;
        assert_eq!(other.accepted(), 0);
        // ports, number and range
        for p in [port + 1, port + 2] {
            let target = SocketAddr::from(([127, 0, 0, 1], p));
            let (rep, _, _) = v5_request(
                connect(server.addr()).await,
                Some("alice"),
                1,
                &v5_addr(target),
            )
            .await;
            assert_eq!(rep, 2, "port {p}");
        }
        log_with(&server, "denied by rule \\\"no-ports\\\" (#5)", 2).await;
        // domains (case aside); rule #4 needs the address first, so
        // these names are resolved before rule #6 refuses them
        for name in ["localhost", "LocalHost"] {
            let (rep, _, _) = v5_request(
                connect(server.addr()).await,
                Some("alice"),
                1,
                &v5_name(name, port),
            )
            .await;
            assert_eq!(rep, 2, "{name}");
        }
        log_with(&server, "denied by rule \\\"no-name\\\" (#6)", 2).await;
        assert_eq!(
            echo.accepted(),
            1,
            "only alice's allowed tunnel reached the target"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_match_wins_default_deny_and_a_name_resolving_into_a_denied_range() {
    within(TEST_DEADLINE, "rule order and default", async {
        let dir = TestDir::new("rules-order");
        let echo = EchoServer::start().await;
        let refused = EchoServer::start().await;
        let config = format!(
            r#"
            default = "deny"
            [[rules]]
            name = "loopback-names-out"
            action = "deny"
            to = ["127.0.0.0/8"]
            domains = ["localhost"]
            [[rules]]
            name = "echo"
            action = "allow"
            ports = [{port}]
            [[rules]]
            name = "never-reached"
            action = "deny"
            ports = [{port}]
            "#,
            port = echo.addr().port()
        );
        let server = serve_with(&dir, &config, &[]).await;
        let (rep, _, mut tunnel) =
            v5_request(connect(server.addr()).await, None, 1, &v5_addr(echo.addr())).await;
        assert_eq!(rep, 0, "rule #2 allows the echo port");
        send(&mut tunnel, b"hi").await;
        assert_eq!(recv(&mut tunnel, 2).await, b"hi");
        drop(tunnel);
        let line = line_for(&server, &echo.addr().to_string()).await;
        assert!(!line.contains("denied"), "{line}");
        // No rule matches another port: the default.
        assert_eq!(connect_code(&server, &v5_addr(refused.addr())).await, 2);
        let line = line_for(&server, &refused.addr().to_string()).await;
        assert!(
            line.contains("no rule matched and the default is deny"),
            "{line}"
        );
        // `localhost` resolves into 127.0.0.0/8, which rule 1 denies for that name.
        let port = echo.addr().port();
        assert_eq!(connect_code(&server, &v5_name("localhost", port)).await, 2);
        let line = line_for(&server, &format!("localhost:{port}")).await;
        assert!(
            line.contains("rule \\\"loopback-names-out\\\" (#1)"),
            "{line}"
        );
        assert_eq!(echo.accepted(), 1);
        assert_eq!(refused.accepted(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_from_closes_other_clients_before_a_byte() {
    within(TEST_DEADLINE, "--allow-from", async {
        let server = serve(&["--allow-from", "127.0.0.1/32"]).await;
        let echo = EchoServer::start().await;
        let mut stranger = connect_from(server.addr(), OTHER_CLIENT).await;
        // The greeting may or may not be written before the close arrives; nothing comes back.
        let _ = tokio::io::AsyncWriteExt::write_all(&mut stranger, &[5, 1, 0]).await;
        assert_eq!(
            recv_to_end(&mut stranger).await,
            b"",
            "nothing sent to 127.0.0.2"
        );
        let (rep, _, mut tunnel) =
            v5_request(connect(server.addr()).await, None, 1, &v5_addr(echo.addr())).await;
        assert_eq!(rep, 0, "127.0.0.1 is allowed");
        send(&mut tunnel, b"hi").await;
        assert_eq!(recv(&mut tunnel, 2).await, b"hi");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tunnels_per_user_refuses_the_next_while_others_work() {
    within(TEST_DEADLINE, "--max-tunnels-per-user", async {
        let server = serve(&[
            "--max-tunnels-per-user",
            "2",
            "--user",
            "alice:pw",
            "--user",
            "bob:pw",
        ])
        .await;
        let echo = EchoServer::start().await;
        let target = v5_addr(echo.addr());
        let open = |user: &'static str| {
            let target = target.clone();
            let proxy = server.addr();
            async move { v5_request(connect(proxy).await, Some(user), 1, &target).await }
        };
        let (rep, _, first) = open("alice").await;
        assert_eq!(rep, 0);
        let (rep, _, _second) = open("alice").await;
        assert_eq!(rep, 0);
        let (rep, _, _) = open("alice").await;
        assert_eq!(rep, 2, "alice's third tunnel");
        let line = log_with(&server, "--max-tunnels-per-user", 1).await;
        assert!(line.contains("alice"), "{line}");
        let (rep, _, mut bob) = open("bob").await;
        assert_eq!(rep, 0, "bob is not held back by alice");
        send(&mut bob, b"ok").await;
        assert_eq!(recv(&mut bob, 2).await, b"ok");
        // The slot is free again once a tunnel ends (the server sees the close first).
        drop(first);
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let (rep, _, _again) = open("alice").await;
            if rep == 0 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "slot never freed");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_and_bind_limits_count_per_client_address() {
    within(
        TEST_DEADLINE,
        "--max-udp-per-client, --max-bind-per-client",
        async {
            let server = serve(&["--max-udp-per-client", "1", "--max-bind-per-client", "1"]).await;
            for (cmd, flag) in [(3u8, "--max-udp-per-client"), (2, "--max-bind-per-client")] {
                let (rep, _, _held) =
                    v5_request(connect(server.addr()).await, None, cmd, &UDP_ANY).await;
                assert_eq!(rep, 0, "{flag}: the first");
                let (rep, _, _) =
                    v5_request(connect(server.addr()).await, None, cmd, &UDP_ANY).await;
                assert_eq!(rep, 2, "{flag}: the second from 127.0.0.1");
                log_with(&server, flag, 1).await;
                let other = connect_from(server.addr(), OTHER_CLIENT).await;
                let (rep, _, _other_held) = v5_request(other, None, cmd, &UDP_ANY).await;
                assert_eq!(rep, 0, "{flag}: another client address still gets one");
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_advertise_is_the_address_in_udp_and_bind_replies() {
    within(TEST_DEADLINE, "--udp-advertise", async {
        let advertised: IpAddr = "192.0.2.44".parse().expect("literal");
        let server = serve(&["--udp-advertise", "192.0.2.44"]).await;
        for cmd in [3u8, 2] {
            let (rep, bound, _held) =
                v5_request(connect(server.addr()).await, None, cmd, &UDP_ANY).await;
            assert_eq!(rep, 0);
            let addr = reply_addr(&bound);
            assert_eq!(addr.ip(), advertised, "command {cmd}");
            assert_ne!(addr.port(), 0);
        }
        let plain = serve(&[]).await;
        let (_, bound, _held) = v5_request(connect(plain.addr()).await, None, 3, &UDP_ANY).await;
        assert_eq!(reply_addr(&bound).ip(), IpAddr::from([127, 0, 0, 1]));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_per_user_holds_a_user_to_the_rate_with_bytes_intact() {
    within(TEST_DEADLINE, "--rate-per-user", async {
        let server = serve(&["--rate-per-user", "256KiB/s", "--user", "alice:pw"]).await;
        let echo = EchoServer::start().await;
        let (rep, _, tunnel) = v5_request(
            connect(server.addr()).await,
            Some("alice"),
            1,
            &v5_addr(echo.addr()),
        )
        .await;
        assert_eq!(rep, 0);
        let total = 640 * 1024;
        let started = std::time::Instant::now();
        echo_integrity(tunnel, total, 7).await;
        let took = started.elapsed();
        // One second of burst, then 256 KiB/s: 640 KiB each way needs at least 1.5 s.
        assert!(
            took >= std::time::Duration::from_millis(1400),
            "640 KiB at 256KiB/s took only {took:?}"
        );
        assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_per_user_holds_http_proxy_users_to_the_rate_too() {
    within(TEST_DEADLINE, "--rate-per-user over HTTP", async {
        let server = serve(&["--rate-per-user", "256KiB/s", "--user", "alice:pw"]).await;
        let http = socksmith_testkit::HttpServer::start().await;
        let proxy = format!("http://alice:pw@{}", server.addr());
        let body = 640 * 1024;
        let url = http.url(&format!("/bytes/{body}"));
        // A forwarded GET, then the same through a CONNECT tunnel (`-p`).
        for extra in [&[][..], &["-p"][..]] {
            let started = std::time::Instant::now();
            let Some(out) = socksmith_testkit::clients::curl_via(&proxy, &url, extra).await else {
                return;
            };
            let took = started.elapsed();
            out.assert_success();
            assert_eq!(out.stdout, socksmith_testkit::pattern(body), "{extra:?}");
            // One second of burst, then 256 KiB/s: 640 KiB down needs at least 1.5 s.
            assert!(
                took >= std::time::Duration::from_millis(1400),
                "{extra:?}: 640 KiB at 256KiB/s took only {took:?}"
            );
        }
    })
    .await;
}
