//! `socksmith serve` driven by real third-party clients: curl (every SOCKS scheme, with and
//! without credentials, IPv4, IPv6 and name targets), ncat (SOCKS4 and SOCKS5 with
//! `--proxy-auth`) and PySocks (TCP over SOCKS4/4a/5/5h, UDP through UDP ASSOCIATE).

mod serve_support;

use serve_support::{log_with, serve};
use socksmith_testkit::clients::{curl, ncat, pysocks, PyMode};
use socksmith_testkit::targets::HTTP_ROOT_BODY;
use socksmith_testkit::{
    pattern, within, Credentials, EchoServer, HttpServer, ProxyKind, Target, UdpEchoServer,
    TEST_DEADLINE,
};

const ALL_KINDS: [ProxyKind; 4] = [
    ProxyKind::Socks4,
    ProxyKind::Socks4a,
    ProxyKind::Socks5,
    ProxyKind::Socks5h,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reaches_ipv4_and_name_targets_over_every_scheme() {
    within(TEST_DEADLINE, "curl through every scheme", async {
        let server = serve(&[]).await;
        let http = HttpServer::start().await;
        for kind in ALL_KINDS {
            let proxy = server.proxy(kind);
            for url in [
                http.url("/bytes/100000"),
                http.url_with_host("localhost", "/bytes/100000"),
            ] {
                let Some(out) = curl(&proxy, &url, &[]).await else {
                    return;
                };
                out.assert_success();
                assert_eq!(out.stdout, pattern(100_000), "{kind:?} {url}");
            }
        }
        // A SOCKS4 user id is logged as the (unverified) user.
        let with_id = server
            .proxy(ProxyKind::Socks4a)
            .with_auth(Some(Credentials::new("ident", "")));
        let Some(out) = curl(&with_id, &http.url("/"), &[]).await else {
            return;
        };
        out.assert_success();
        log_with(&server, "user=ident version=SOCKS4", 1).await;
        // socks4a and socks5h sent the name: the server resolved it.
        log_with(
            &server,
            "version=SOCKS4 command=CONNECT destination=localhost:",
            1,
        )
        .await;
        log_with(
            &server,
            "version=SOCKS5 command=CONNECT destination=localhost:",
            1,
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reaches_an_ipv6_target_and_an_ipv6_listener() {
    within(TEST_DEADLINE, "curl over IPv6", async {
        let Some(http6) = HttpServer::start_v6().await else {
            return;
        };
        let server = serve(&["--listen", "127.0.0.1:0", "--listen", "[::1]:0"]).await;
        assert!(server.addrs()[1].is_ipv6(), "{:?}", server.addrs());
        for listener in server.addrs() {
            for kind in [ProxyKind::Socks5, ProxyKind::Socks5h] {
                let proxy = socksmith_testkit::Proxy::new(kind, *listener);
                let Some(out) = curl(&proxy, &http6.url("/"), &[]).await else {
                    return;
                };
                out.assert_success();
                assert_eq!(out.stdout_str(), HTTP_ROOT_BODY, "{kind:?} via {listener}");
            }
        }
        log_with(&server, "destination=[::1]:", 4).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_with_credentials_wrong_password_and_socks4_refused() {
    within(TEST_DEADLINE, "curl with authentication", async {
        let server = serve(&["--user", "alice:s3cret-pw", "--user", "bob:other"]).await;
        let http = HttpServer::start().await;
        let alice = Some(Credentials::new("alice", "s3cret-pw"));
        for kind in [ProxyKind::Socks5, ProxyKind::Socks5h] {
            let proxy = server.proxy(kind).with_auth(alice.clone());
            let Some(out) = curl(&proxy, &http.url("/"), &[]).await else {
                return;
            };
            out.assert_success();
            assert_eq!(out.stdout_str(), HTTP_ROOT_BODY);
        }
        let wrong = server
            .proxy(ProxyKind::Socks5h)
            .with_auth(Some(Credentials::new("alice", "wrong-pw")));
        let Some(out) = curl(&wrong, &http.url("/"), &[]).await else {
            return;
        };
        out.assert_failure();
        // An empty password (curl sends PLEN 0, which RFC 1929 does not allow): refused with
        // the failure status, as a wrong one is, not a bare hang-up.
        let empty = server
            .proxy(ProxyKind::Socks5h)
            .with_auth(Some(Credentials::new("alice", "")));
        let Some(out) = curl(&empty, &http.url("/"), &[]).await else {
            return;
        };
        out.assert_failure();
        assert!(out.stderr_str().contains("User was rejected"), "{out}");
        // No credentials at all: the server accepts no method the client offers.
        let Some(out) = curl(&server.proxy(ProxyKind::Socks5h), &http.url("/"), &[]).await else {
            return;
        };
        out.assert_failure();
        // SOCKS4 cannot carry a password: refused with 0x5B (curl reports 91).
        let Some(out) = curl(&server.proxy(ProxyKind::Socks4a), &http.url("/"), &[]).await else {
            return;
        };
        out.assert_failure();
        assert!(out.stderr_str().contains("(91)"), "{out}");

        log_with(&server, "user=alice version=SOCKS5 command=CONNECT", 2).await;
        // The claimed name of a failed login is logged as a keyed hash: a password typed into
        // the name field must never reach the log.
        let failed = log_with(&server, r#"authentication failed for user \"?"#, 1).await;
        log_with(&server, r#"authentication failed for user \"\""#, 1).await;
        assert!(
            !failed.contains("user=alice version=SOCKS5 duration"),
            "{failed}"
        );
        let log = log_with(
            &server,
            "SOCKS4 refused: the server requires authentication",
            1,
        )
        .await;
        assert!(
            !log.contains("s3cret-pw") && !log.contains("wrong-pw"),
            "passwords in the log: {log}"
        );
        assert_eq!(
            http.accepted(),
            2,
            "only the authenticated requests reached the target"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ncat_relays_over_socks4_socks4a_and_socks5_with_proxy_auth() {
    within(TEST_DEADLINE, "ncat", async {
        let echo = EchoServer::start().await;
        let data = pattern(200_000);
        let open = serve(&[]).await;
        for kind in [ProxyKind::Socks4, ProxyKind::Socks4a, ProxyKind::Socks5h] {
            let host = if kind.remote_dns() {
                "localhost"
            } else {
                "127.0.0.1"
            };
            let Some(out) = ncat(&open.proxy(kind), host, echo.addr().port(), &data, &[]).await
            else {
                return;
            };
            out.assert_success();
            assert_eq!(out.stdout.len(), data.len(), "{kind:?}");
            assert!(out.stdout == data, "{kind:?}: bytes differ");
        }

        let authed = serve(&["--user", "carol:pa:ss"]).await;
        let proxy = authed
            .proxy(ProxyKind::Socks5)
            .with_auth(Some(Credentials::new("carol", "pa:ss")));
        let Some(out) = ncat(&proxy, "127.0.0.1", echo.addr().port(), &data, &[]).await else {
            return;
        };
        out.assert_success();
        assert!(out.stdout == data, "SOCKS5 with --proxy-auth: bytes differ");
        log_with(&authed, "user=carol version=SOCKS5", 1).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pysocks_tcp_over_socks4_and_socks5_with_and_without_remote_dns() {
    within(TEST_DEADLINE, "PySocks TCP", async {
        let server = serve(&[]).await;
        let echo = EchoServer::start().await;
        let payload = pattern(50_000);
        for kind in ALL_KINDS {
            let target = if kind.remote_dns() {
                Target::domain("localhost", echo.addr().port())
            } else {
                Target::Ip(echo.addr())
            };
            for mode in [PyMode::TcpEcho, PyMode::TcpHalfClose] {
                let Some(result) = pysocks(&server.proxy(kind), &target, mode, &payload).await
                else {
                    return;
                };
                result.assert_ok();
                assert!(
                    result.received == payload,
                    "{kind:?} {mode:?}: bytes differ"
                );
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pysocks_udp_associate_with_ip_and_name_targets() {
    within(TEST_DEADLINE, "PySocks UDP", async {
        let server = serve(&[]).await;
        let udp = UdpEchoServer::start().await;
        for (kind, target) in [
            (ProxyKind::Socks5, Target::Ip(udp.addr())),
            (
                ProxyKind::Socks5h,
                Target::domain("localhost", udp.addr().port()),
            ),
        ] {
            let payload = format!("datagram via {kind:?}").into_bytes();
            let Some(result) = pysocks(&server.proxy(kind), &target, PyMode::Udp, &payload).await
            else {
                return;
            };
            result.assert_ok();
            assert_eq!(result.received, payload, "{kind:?}");
        }
        assert_eq!(udp.received(), 2);
        log_with(&server, "command=UDP ASSOCIATE", 2).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tor_resolve_gets_remote_dns_over_socks5_and_socks4a() {
    within(TEST_DEADLINE, "tor-resolve", async {
        // Debian's `tor` package ships tor-resolve, the one widespread client of Tor's RESOLVE
        // and RESOLVE_PTR extensions.
        let Some(tor_resolve) = socksmith_testkit::tools::find_tool("tor-resolve").or_else(|| {
            socksmith_testkit::peer_missing(
                "tor-resolve not installed: run scripts/test (Debian package tor)",
            )
        }) else {
            return;
        };
        let server = serve(&[]).await;
        let proxy = server.addr().to_string();
        for (args, answer) in [
            (vec!["-5", "localhost"], "127.0.0.1"),
            (vec!["-4", "localhost"], "127.0.0.1"),
            (vec!["-x", "127.0.0.1"], "localhost"),
        ] {
            let mut cmd = tokio::process::Command::new(&tor_resolve);
            cmd.args(&args).arg(&proxy);
            let out = socksmith_testkit::process::run_command(cmd, b"", serve_support::STEP).await;
            out.assert_success();
            assert_eq!(out.stdout_str().trim(), answer, "{args:?}: {out}");
        }
        log_with(
            &server,
            "version=SOCKS5 command=RESOLVE destination=localhost:0",
            1,
        )
        .await;
        log_with(
            &server,
            "version=SOCKS4 command=RESOLVE destination=localhost:0",
            1,
        )
        .await;
        log_with(&server, "command=RESOLVE_PTR destination=127.0.0.1:0", 1).await;
    })
    .await;
}
