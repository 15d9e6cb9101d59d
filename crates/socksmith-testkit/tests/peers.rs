//! The testkit's own tests: each real peer is started and driven with hand-written SOCKS bytes
//! ([`socksmith_testkit::raw`], no socksmith code) and with the real clients (curl, ncat, PySocks).
//! Together they document what each peer supports; the module docs of `dante`, `microsocks` and
//! `ssh` summarise the same facts.

use std::net::SocketAddr;
use std::path::Path;

use socksmith_testkit::clients::{self, PyMode};
use socksmith_testkit::dante::{Dante, DanteOptions};
use socksmith_testkit::microsocks::{Microsocks, MicrosocksOptions};
use socksmith_testkit::raw::{self, RawError, Target};
use socksmith_testkit::socksmith::SocksmithServer;
use socksmith_testkit::ssh::SshDynamic;
use socksmith_testkit::targets::HTTP_ROOT_BODY;
use socksmith_testkit::{
    pattern, within, Credentials, EchoServer, HttpServer, ProxyKind, SinkServer, SourceServer,
    UdpEchoServer, TEST_DEADLINE,
};
use tokio::net::{TcpStream, UdpSocket};

/// A SOCKS5 CONNECT through `proxy` to `target`, and an echo round trip of 100 KiB.
async fn socks5_echo(proxy: SocketAddr, creds: Option<&Credentials>, target: impl Into<Target>) {
    let target = target.into();
    let (tunnel, _bound) = raw::socks5_connect(proxy, creds, target.clone())
        .await
        .unwrap_or_else(|e| panic!("SOCKS5 CONNECT via {proxy} to {target}: {e}"));
    let data = pattern(100 * 1024);
    let back = raw::echo_exact(tunnel, &data).await.expect("echo");
    assert!(
        back == data,
        "echo via {proxy} to {target} came back different"
    );
}

/// A SOCKS4 (or, for a name, SOCKS4a) CONNECT and an echo round trip.
async fn socks4_echo(proxy: SocketAddr, target: impl Into<Target>) {
    let target = target.into();
    let tunnel = raw::socks4_connect(proxy, "socksmith", target.clone())
        .await
        .unwrap_or_else(|e| panic!("SOCKS4 CONNECT via {proxy} to {target}: {e}"));
    let data = pattern(10 * 1024);
    let back = raw::echo_exact(tunnel, &data).await.expect("echo");
    assert!(
        back == data,
        "echo via {proxy} to {target} came back different"
    );
}

/// Sends the first BIND request with `bind`, connects a peer in from 127.0.0.1, reads the second
/// reply, and checks that bytes flow both ways.
async fn bind_and_talk<F, Fut>(bind: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = (TcpStream, SocketAddr, bool)>,
{
    let (mut control, listen, v4) = bind().await;
    assert!(listen.ip().is_loopback(), "BIND listens on {listen}");
    let mut peer = TcpStream::connect(listen)
        .await
        .expect("connect to the BIND port");
    let peer_addr = peer.local_addr().expect("local addr");
    let announced = if v4 {
        raw::socks4_bind_accepted(&mut control).await
    } else {
        raw::socks5_bind_accepted(&mut control).await
    }
    .expect("second BIND reply");
    assert_eq!(announced.ip().map(|a| a.ip()), Some(peer_addr.ip()));
    raw::bind_talk(&mut control, &mut peer).await;
}

/// A UDP ASSOCIATE through `proxy` and one datagram to `target` (a [`UdpEchoServer`]) and back.
async fn socks5_udp_echo(proxy: SocketAddr, creds: Option<&Credentials>, target: Target) -> Target {
    let local = UdpSocket::bind((proxy.ip(), 0)).await.expect("bind UDP");
    let (_control, relay) =
        raw::socks5_udp_associate(proxy, creds, local.local_addr().expect("addr"))
            .await
            .unwrap_or_else(|e| panic!("UDP ASSOCIATE via {proxy}: {e}"));
    local
        .send_to(&raw::udp_wrap(&target, b"datagram payload"), relay)
        .await
        .expect("send to relay");
    let mut buf = vec![0u8; 2048];
    let (n, from) = local.recv_from(&mut buf).await.expect("recv from relay");
    assert_eq!(from, relay, "the answer comes from the relay");
    let (source, data) = raw::udp_unwrap(&buf[..n]).expect("a SOCKS5 UDP datagram");
    assert_eq!(data, b"datagram payload");
    source
}

/// Through `proxy`, sends 64 KiB to a [`SinkServer`] and half-closes: `Some(count)` if the
/// half-close was relayed and the answer came back, `None` if the proxy closed everything.
async fn half_close_via(proxy: SocketAddr) -> Option<u64> {
    let sink = SinkServer::start().await;
    let (tunnel, _) = raw::socks5_connect(proxy, None, sink.addr())
        .await
        .expect("CONNECT to the sink");
    raw::half_close_to_sink(tunnel, &pattern(64 * 1024))
        .await
        .expect("half-close exchange")
}

/// A loopback address where nothing listens (bound, then released).
fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// A SOCKS5 CONNECT to a port where nothing listens is answered with REP 0x05.
async fn refused_gets_rep_5(proxy: SocketAddr, creds: Option<&Credentials>) {
    let err = raw::socks5_connect(proxy, creds, dead_addr())
        .await
        .expect_err("nothing listens there");
    assert!(matches!(err, RawError::Rejected(0x05)), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Dante

#[tokio::test]
async fn dante_socks5_connect_reaches_ipv4_ipv6_and_name_targets() {
    within(TEST_DEADLINE, "dante socks5 connect", async {
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        let echo = EchoServer::start().await;
        socks5_echo(dante.addr(), None, echo.addr()).await;
        socks5_echo(
            dante.addr(),
            None,
            Target::domain("localhost", echo.addr().port()),
        )
        .await;
        if let Some(echo6) = EchoServer::start_v6().await {
            socks5_echo(dante.addr(), None, echo6.addr()).await;
            // Dante listens on ::1 too, on the same port.
            let v6 = dante
                .addr_v6()
                .expect("Dante listens on ::1 where the host has it");
            socks5_echo(v6, None, echo6.addr()).await;
            socks5_echo(v6, None, echo.addr()).await;
        }
        // Dante connects out from its `external` address.
        assert!(echo.peers().iter().all(|p| p.ip().is_loopback()));
        refused_gets_rep_5(dante.addr(), None).await;
    })
    .await;
}

#[tokio::test]
async fn dante_relays_half_close() {
    within(TEST_DEADLINE, "dante half-close", async {
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        assert_eq!(half_close_via(dante.addr()).await, Some(64 * 1024));
    })
    .await;
}

#[tokio::test]
async fn dante_speaks_socks4_but_not_socks4a() {
    within(TEST_DEADLINE, "dante socks4", async {
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        let echo = EchoServer::start().await;
        socks4_echo(dante.addr(), echo.addr()).await;
        // Dante 1.4 takes DSTIP 0.0.0.1 literally (connect(2) fails with EINVAL) and rejects.
        let err = raw::socks4_connect(
            dante.addr(),
            "u",
            Target::domain("localhost", echo.addr().port()),
        )
        .await
        .expect_err("Dante does not implement SOCKS4a");
        assert!(
            matches!(err, RawError::Rejected(raw::SOCKS4_REJECTED)),
            "{err}"
        );
    })
    .await;
}

#[tokio::test]
async fn dante_socks5_and_socks4_bind_accept_a_peer() {
    within(TEST_DEADLINE, "dante bind", async {
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        let expected: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        bind_and_talk(|| async {
            let (c, l) = raw::socks5_bind(dante.addr(), None, expected)
                .await
                .unwrap_or_else(|e| panic!("SOCKS5 BIND: {e}\n{}", dante.log()));
            (c, l, false)
        })
        .await;
        bind_and_talk(|| async {
            let (c, l) = raw::socks4_bind(dante.addr(), "u", expected)
                .await
                .unwrap_or_else(|e| panic!("SOCKS4 BIND: {e}\n{}", dante.log()));
            (c, l, true)
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn dante_socks5_udp_associate_relays_datagrams() {
    within(TEST_DEADLINE, "dante udp", async {
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        let echo = UdpEchoServer::start().await;
        let source = socks5_udp_echo(dante.addr(), None, echo.addr().into()).await;
        assert_eq!(source, Target::Ip(echo.addr()));
        // A name target in a datagram is resolved by Dante.
        let source = socks5_udp_echo(
            dante.addr(),
            None,
            Target::domain("localhost", echo.addr().port()),
        )
        .await;
        assert_eq!(source.port(), echo.addr().port());
        // ::1 goes through the missing-peer rule; where it exists, Dante must listen on it.
        if let Some(echo6) = UdpEchoServer::start_v6().await {
            let v6 = dante
                .addr_v6()
                .expect("Dante listens on ::1 where the host has it");
            let source = socks5_udp_echo(v6, None, echo6.addr().into()).await;
            assert_eq!(source, Target::Ip(echo6.addr()));
        }
    })
    .await;
}

#[tokio::test]
async fn dante_username_accepts_the_test_user_and_refuses_the_rest() {
    within(TEST_DEADLINE, "dante username", async {
        let Some(dante) = Dante::start(DanteOptions::with_username()).await else {
            return;
        };
        let creds = dante
            .credentials()
            .expect("username mode has credentials")
            .clone();
        assert_eq!(creds.user, socksmith_testkit::users::TEST_USER);
        let echo = EchoServer::start().await;
        socks5_echo(dante.addr(), Some(&creds), echo.addr()).await;

        let wrong = Credentials::new(&creds.user, "not the password");
        let err = raw::socks5_connect(dante.addr(), Some(&wrong), echo.addr())
            .await
            .expect_err("a wrong password is refused");
        assert!(matches!(err, RawError::AuthFailed(_)), "{err}");

        let err = raw::socks5_connect(dante.addr(), None, echo.addr())
            .await
            .expect_err("method none is not acceptable");
        assert!(matches!(err, RawError::NoAcceptableMethod), "{err}");

        let err = raw::socks4_connect(dante.addr(), &creds.user, echo.addr())
            .await
            .expect_err("SOCKS4 cannot authenticate");
        assert!(
            matches!(err, RawError::Rejected(raw::SOCKS4_REJECTED)),
            "{err}"
        );

        // UDP works with authentication too.
        let udp = UdpEchoServer::start().await;
        socks5_udp_echo(dante.addr(), Some(&creds), udp.addr().into()).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// microsocks

#[tokio::test]
async fn microsocks_socks5_connect_reaches_ipv4_ipv6_and_name_targets() {
    within(TEST_DEADLINE, "microsocks connect", async {
        let Some(ms) = Microsocks::start(MicrosocksOptions::default()).await else {
            return;
        };
        let echo = EchoServer::start().await;
        socks5_echo(ms.addr(), None, echo.addr()).await;
        socks5_echo(
            ms.addr(),
            None,
            Target::domain("localhost", echo.addr().port()),
        )
        .await;
        if let Some(echo6) = EchoServer::start_v6().await {
            socks5_echo(ms.addr(), None, echo6.addr()).await;
        }
        refused_gets_rep_5(ms.addr(), None).await;
    })
    .await;
}

#[tokio::test]
async fn microsocks_has_no_socks4_bind_or_udp() {
    within(TEST_DEADLINE, "microsocks unsupported", async {
        let Some(ms) = Microsocks::start(MicrosocksOptions::default()).await else {
            return;
        };
        let echo = EchoServer::start().await;
        // SOCKS4: it answers as SOCKS5 ("05 FF") and closes, which is no valid SOCKS4 reply.
        let err = raw::socks4_connect(ms.addr(), "u", echo.addr())
            .await
            .expect_err("microsocks does not speak SOCKS4");
        assert!(
            matches!(err, RawError::Malformed(_) | RawError::Closed),
            "{err}"
        );
        for cmd in [raw::CMD_BIND, raw::CMD_UDP_ASSOCIATE] {
            let mut s = TcpStream::connect(ms.addr()).await.expect("connect");
            raw::socks5_auth(&mut s, None).await.expect("method none");
            let reply = raw::socks5_request(&mut s, cmd, &echo.addr().into())
                .await
                .expect("a reply");
            assert_eq!(reply.code, raw::REP_COMMAND_NOT_SUPPORTED, "command {cmd}");
        }
    })
    .await;
}

#[tokio::test]
async fn microsocks_closes_both_directions_at_the_first_eof() {
    within(TEST_DEADLINE, "microsocks half-close", async {
        let Some(ms) = Microsocks::start(MicrosocksOptions::default()).await else {
            return;
        };
        // No half-close: the sink's answer never comes back.
        assert_eq!(half_close_via(ms.addr()).await, None);
    })
    .await;
}

#[tokio::test]
async fn microsocks_with_credentials_requires_them() {
    within(TEST_DEADLINE, "microsocks auth", async {
        let Some(ms) = Microsocks::start(MicrosocksOptions::with_auth()).await else {
            return;
        };
        let creds = ms.credentials().expect("credentials").clone();
        let echo = EchoServer::start().await;
        socks5_echo(ms.addr(), Some(&creds), echo.addr()).await;
        let err = raw::socks5_connect(
            ms.addr(),
            Some(&Credentials::new(&creds.user, "nope")),
            echo.addr(),
        )
        .await
        .expect_err("wrong password");
        assert!(matches!(err, RawError::AuthFailed(_)), "{err}");
        let err = raw::socks5_connect(ms.addr(), None, echo.addr())
            .await
            .expect_err("no credentials");
        assert!(matches!(err, RawError::NoAcceptableMethod), "{err}");
    })
    .await;
}

#[tokio::test]
async fn microsocks_listens_on_ipv6_and_stops_on_drop() {
    within(TEST_DEADLINE, "microsocks ipv6", async {
        let Some(v6) = socksmith_testkit::targets::localhost_v6() else {
            return;
        };
        let Some(ms) = Microsocks::start(MicrosocksOptions {
            listen: v6.ip(),
            ..MicrosocksOptions::default()
        })
        .await
        else {
            return;
        };
        assert!(ms.addr().is_ipv6());
        let echo = EchoServer::start().await;
        socks5_echo(ms.addr(), None, echo.addr()).await;
        let addr = ms.addr();
        drop(ms);
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "microsocks still listens after drop"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// ssh -D

#[tokio::test]
async fn ssh_dynamic_speaks_socks5_socks4_and_socks4a_connect() {
    within(TEST_DEADLINE, "ssh -D connect", async {
        let Some(ssh) = SshDynamic::start().await else {
            return;
        };
        let echo = EchoServer::start().await;
        socks5_echo(ssh.addr(), None, echo.addr()).await;
        socks5_echo(
            ssh.addr(),
            None,
            Target::domain("localhost", echo.addr().port()),
        )
        .await;
        if let Some(echo6) = EchoServer::start_v6().await {
            socks5_echo(ssh.addr(), None, echo6.addr()).await;
        }
        socks4_echo(ssh.addr(), echo.addr()).await;
        socks4_echo(ssh.addr(), Target::domain("localhost", echo.addr().port())).await;
    })
    .await;
}

#[tokio::test]
async fn ssh_dynamic_relays_half_close() {
    within(TEST_DEADLINE, "ssh -D half-close", async {
        let Some(ssh) = SshDynamic::start().await else {
            return;
        };
        assert_eq!(half_close_via(ssh.addr()).await, Some(64 * 1024));
    })
    .await;
}

#[tokio::test]
async fn ssh_dynamic_has_no_bind_udp_or_password_and_closes_on_failure() {
    within(TEST_DEADLINE, "ssh -D unsupported", async {
        let Some(ssh) = SshDynamic::start().await else {
            return;
        };
        let echo = EchoServer::start().await;
        for cmd in [raw::CMD_BIND, raw::CMD_UDP_ASSOCIATE] {
            let mut s = TcpStream::connect(ssh.addr()).await.expect("connect");
            raw::socks5_auth(&mut s, None).await.expect("method none");
            let err = raw::socks5_request(&mut s, cmd, &echo.addr().into())
                .await
                .expect_err("no reply");
            assert!(matches!(err, RawError::Closed), "command {cmd}: {err}");
        }
        // Username/password is not offered back: only method none.
        let mut s = TcpStream::connect(ssh.addr()).await.expect("connect");
        let choice = raw::socks5_greeting(&mut s, &[raw::METHOD_USERPASS]).await;
        assert!(
            matches!(
                choice,
                Ok(raw::METHOD_NO_ACCEPTABLE) | Err(RawError::Closed)
            ),
            "{choice:?}"
        );
        // A refused target gets no REP 0x05: the connection is just closed.
        let err = raw::socks5_connect(ssh.addr(), None, dead_addr())
            .await
            .expect_err("connection refused");
        assert!(matches!(err, RawError::Closed), "{err}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Client runners

#[tokio::test]
async fn curl_fetches_through_microsocks_dante_and_ssh() {
    within(TEST_DEADLINE, "curl", async {
        let http = HttpServer::start().await;
        let Some(ms) = Microsocks::start(MicrosocksOptions::with_auth()).await else {
            return;
        };
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        let Some(ssh) = SshDynamic::start().await else {
            return;
        };
        let cases = [
            (
                ms.proxy(ProxyKind::Socks5h),
                http.url_with_host("localhost", "/"),
            ),
            (ms.proxy(ProxyKind::Socks5), http.url("/")),
            (dante.proxy(ProxyKind::Socks5h), http.url("/")),
            (dante.proxy(ProxyKind::Socks4), http.url("/")),
            (
                ssh.proxy(ProxyKind::Socks4a),
                http.url_with_host("localhost", "/"),
            ),
        ];
        for (proxy, url) in cases {
            let Some(out) = clients::curl(&proxy, &url, &[]).await else {
                return;
            };
            out.assert_success();
            assert_eq!(out.stdout_str(), HTTP_ROOT_BODY, "via {proxy}");
        }
        let Some(out) = clients::curl(
            &dante.proxy(ProxyKind::Socks5h),
            &http.url("/bytes/300000"),
            &[],
        )
        .await
        else {
            return;
        };
        assert!(out.assert_success().stdout == pattern(300_000));
        // A proxy that refuses: curl exits non-zero and says why.
        let bad = ms.proxy(ProxyKind::Socks5h).with_auth(None);
        let Some(out) = clients::curl(&bad, &http.url("/"), &[]).await else {
            return;
        };
        out.assert_failure();
    })
    .await;
}

#[tokio::test]
async fn ncat_relays_through_dante_and_microsocks() {
    within(TEST_DEADLINE, "ncat", async {
        let echo = EchoServer::start().await;
        let port = echo.addr().port();
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        let Some(ms) = Microsocks::start(MicrosocksOptions::with_auth()).await else {
            return;
        };
        let data = pattern(50_000);
        // Dante relays ncat's half-close at the end of stdin, so the echo comes back whole.
        let cases = [
            (dante.proxy(ProxyKind::Socks4), "127.0.0.1"),
            (dante.proxy(ProxyKind::Socks5), "127.0.0.1"),
            (dante.proxy(ProxyKind::Socks5h), "localhost"),
        ];
        for (proxy, host) in cases {
            let Some(out) = clients::ncat(&proxy, host, port, &data, &[]).await else {
                return;
            };
            assert!(out.assert_success().stdout == data, "via {proxy}:\n{out}");
        }
        if let Some(v6_loopback) = socksmith_testkit::targets::localhost_v6() {
            let addr = dante.addr_v6().unwrap_or_else(|| {
                panic!(
                    "Dante listens on {} where the host has it",
                    v6_loopback.ip()
                )
            });
            let mut v6 = dante.proxy(ProxyKind::Socks5);
            v6.addr = addr;
            let Some(out) = clients::ncat(&v6, "127.0.0.1", port, b"over v6", &[]).await else {
                return;
            };
            assert_eq!(out.assert_success().stdout, b"over v6");
        }
        // microsocks closes everything at ncat's half-close: receive only, from a source.
        let source = SourceServer::start(50_000).await;
        for (proxy, host) in [
            (ms.proxy(ProxyKind::Socks5h), "localhost"),
            (ms.proxy(ProxyKind::Socks5), "127.0.0.1"),
        ] {
            let Some(out) =
                clients::ncat(&proxy, host, source.addr().port(), b"", &["--recv-only"]).await
            else {
                return;
            };
            assert!(out.assert_success().stdout == data, "via {proxy}:\n{out}");
        }
    })
    .await;
}

#[tokio::test]
async fn pysocks_tcp_and_udp_through_microsocks_and_dante() {
    within(TEST_DEADLINE, "pysocks", async {
        let echo = EchoServer::start().await;
        let udp = UdpEchoServer::start().await;
        let Some(ms) = Microsocks::start(MicrosocksOptions::with_auth()).await else {
            return;
        };
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        let data = pattern(20_000);
        let echo_name = Target::domain("localhost", echo.addr().port());
        let cases = [
            (ms.proxy(ProxyKind::Socks5), Target::Ip(echo.addr())),
            (ms.proxy(ProxyKind::Socks5h), echo_name.clone()),
            (dante.proxy(ProxyKind::Socks4), Target::Ip(echo.addr())),
            (dante.proxy(ProxyKind::Socks5h), echo_name),
        ];
        for (proxy, target) in cases {
            let Some(r) = clients::pysocks(&proxy, &target, PyMode::TcpEcho, &data).await else {
                return;
            };
            assert!(r.assert_ok().received == data, "via {proxy} to {target}");
        }
        let sink = SinkServer::start().await;
        let plain = dante.proxy(ProxyKind::Socks5);
        let Some(r) =
            clients::pysocks(&plain, &sink.addr().into(), PyMode::TcpHalfClose, &data).await
        else {
            return;
        };
        assert_eq!(r.assert_ok().received, b"20000\n");
        let Some(r) = clients::pysocks(&plain, &udp.addr().into(), PyMode::Udp, b"py dgram").await
        else {
            return;
        };
        assert_eq!(r.assert_ok().received, b"py dgram");
        // microsocks refuses UDP ASSOCIATE; PySocks reports it.
        let socks5 = ms.proxy(ProxyKind::Socks5);
        let Some(r) = clients::pysocks(&socks5, &udp.addr().into(), PyMode::Udp, b"x").await else {
            return;
        };
        assert!(!r.ok, "{}", r.output);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The socksmith runner, with stand-in scripts (the real binary is tested in socksmith-cli).

fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[tokio::test]
async fn socksmith_server_reads_listening_lines_and_stops_on_drop() {
    within(TEST_DEADLINE, "socksmith runner", async {
        let dir = tempfile::tempdir().expect("tempdir");
        // Prints one line per --listen argument, echoing its args to stderr, then serves
        // "forever" (the sleep is the stand-in server's whole life, not a readiness wait).
        let fake = script(
            dir.path(),
            "fake-socksmith",
            r#"echo "args: $*" >&2
n=0
while [ $# -gt 0 ]; do
  if [ "$1" = "--listen" ]; then n=$((n+1)); echo "listening on 127.0.0.1:$((40000+n))"; fi
  shift
done
echo "some other line"
exec sleep 300"#,
        );
        let server = SocksmithServer::start(&fake, &["--auth", "none"]).await;
        assert_eq!(
            server.addrs(),
            ["127.0.0.1:40001".parse::<SocketAddr>().expect("addr")]
        );
        assert_eq!(server.url(), "socks5h://127.0.0.1:40001");
        assert!(
            server
                .stderr()
                .contains("args: serve --listen 127.0.0.1:0 --auth none"),
            "{}",
            server.stderr()
        );
        let server2 =
            SocksmithServer::start(&fake, &["--listen", "127.0.0.1:0", "--listen", "[::1]:0"])
                .await;
        assert_eq!(server2.addrs().len(), 2);
        let pid = {
            let mut s = server;
            s.process_mut().pid()
        };
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the server outlived its drop"
        );
    })
    .await;
}

#[tokio::test]
async fn socksmith_server_start_failure_carries_status_and_stderr() {
    within(TEST_DEADLINE, "socksmith runner failure", async {
        let dir = tempfile::tempdir().expect("tempdir");
        let failing = script(
            dir.path(),
            "failing-socksmith",
            "echo 'error: unknown key `lisen` in config' >&2\nexit 2",
        );
        let err = SocksmithServer::try_start(&failing, &["serve"], &[], 1)
            .await
            .expect_err("it exits");
        assert_eq!(err.status.and_then(|s| s.code()), Some(2), "{err}");
        assert!(err.stderr.contains("unknown key `lisen`"), "{err}");
        let out = socksmith_testkit::socksmith::run(&failing, &["connect"], b"").await;
        out.assert_failure();
        assert!(out.stderr_str().contains("lisen"));
    })
    .await;
}
