//! The server through its library API: what only the API can reach (injected outbounds,
//! policies, resolvers and authenticators; the counters) and the behaviour behind it (reply
//! 0x06 for a connect that never completes, FRAG drops counted, Happy Eyeballs over a name's
//! addresses, the session limit, shutdown with a grace period).

mod server_support;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use server_support::{udp_exchange, v4_bind_any, v5_request, Running, STEP};
use socksmith::policy::{Decision, DenyReason, Policy};
use socksmith::resolve::StaticResolver;
use socksmith::server::{
    AuthFuture, Authenticator, Connected, Egress, EgressError, EgressFuture, EgressRequest, Server,
    ServerConfig, ServerError, Session, TunnelStream,
};
use socksmith_proto::{Command, Credentials, TargetAddr, Version};
use socksmith_testkit::raw::{socks5_connect, socks5_request, socks5_udp_associate, udp_wrap};
use socksmith_testkit::{within, EchoServer, Target, UdpEchoServer, TEST_DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};

async fn v4_connect_code(proxy: SocketAddr, target: SocketAddr) -> u8 {
    let SocketAddr::V4(t) = target else {
        panic!("IPv4")
    };
    let mut s = TcpStream::connect(proxy).await.expect("connect");
    let mut req = vec![4, 1];
    req.extend_from_slice(&t.port().to_be_bytes());
    req.extend_from_slice(&t.ip().octets());
    req.push(0);
    s.write_all(&req).await.expect("write");
    let mut reply = [0u8; 8];
    s.read_exact(&mut reply).await.expect("SOCKS4 reply");
    reply[1]
}

/// An outbound whose connections never complete.
#[derive(Debug)]
struct Blackhole;

impl Egress for Blackhole {
    fn connect<'a>(&'a self, _request: EgressRequest<'a>) -> EgressFuture<'a, Connected> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn a_connect_that_never_completes_gets_0x06_at_the_timeout() {
    within(TEST_DEADLINE, "connect timeout", async {
        let mut config = ServerConfig::default();
        config.egress = Some(Arc::new(Blackhole));
        config.connect_timeout = Duration::from_millis(100);
        config.resolve_timeout = Duration::from_millis(50);
        let server = Running::start(config).await;
        let target = Target::Ip("127.0.0.1:9".parse().expect("literal"));
        let started = Instant::now();
        let (_s, code, _) = v5_request(server.addr, 1, &target).await;
        assert_eq!(code, 0x06, "TTL expired: the closest code to a timeout");
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(
            v4_connect_code(server.addr, "127.0.0.1:9".parse().expect("literal")).await,
            0x5B
        );
        let stats = server.stats_when(|s| s.connect_failures == 2).await;
        assert_eq!(stats.tunnels_total, 0);
        server.shutdown().await.expect("clean shutdown");
    })
    .await;
}

/// Denies everything, and remembers what it was asked.
#[derive(Debug, Default)]
struct Recording(Mutex<Vec<Session>>);

impl Policy for Recording {
    fn check_request(&self, session: &Session) -> Decision {
        self.0.lock().expect("lock").push(session.clone());
        Decision::Deny(DenyReason::Other("the test says no".into()))
    }
}

/// Accepts any user whose password is the user name reversed, deciding on the blocking pool
/// as a slow password hash or a synchronous directory client would.
#[derive(Debug)]
struct Reversed;

impl Authenticator for Reversed {
    fn authenticate<'a>(&'a self, c: &'a Credentials) -> AuthFuture<'a> {
        let name = c.username().to_vec();
        let password = c.password().to_vec();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut reversed = name.clone();
                reversed.reverse();
                (reversed == password).then(|| String::from_utf8_lossy(&name).into_owned())
            })
            .await
            .expect("the check does not panic")
        })
    }
}

#[tokio::test]
async fn the_policy_sees_the_session_and_its_denial_is_0x02_or_0x5b() {
    within(TEST_DEADLINE, "policy", async {
        let policy = Arc::new(Recording::default());
        let echo = EchoServer::start().await;
        let mut config = ServerConfig::default();
        config.policy = policy.clone();
        config.auth = Some(Arc::new(Reversed));
        config.allow_socks4 = Some(true);
        let server = Running::start(config).await;

        let creds = socksmith_testkit::Credentials::new(
            "bob",
            "bob".chars().rev().collect::<String>().as_str(),
        );
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        socksmith_testkit::raw::socks5_auth(&mut s, Some(&creds))
            .await
            .expect("authenticated");
        let reply = socks5_request(&mut s, 1, &Target::Ip(echo.addr()))
            .await
            .expect("reply");
        assert_eq!(reply.code, 0x02);
        assert_eq!(v4_connect_code(server.addr, echo.addr()).await, 0x5B);
        assert_eq!(
            echo.accepted(),
            0,
            "a denied request never reaches the target"
        );

        let seen = policy.0.lock().expect("lock").clone();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].user.as_deref(), Some("bob"));
        assert_eq!(
            (seen[0].version, seen[0].command),
            (Version::V5, Command::Connect)
        );
        assert_eq!(seen[0].target, TargetAddr::Ip(echo.addr()));
        assert_eq!(seen[0].local, server.addr);
        assert_eq!(seen[1].version, Version::V4);
        assert_eq!(seen[1].user, None, "an empty SOCKS4 user id is no user");
        server.stats_when(|s| s.policy_denied == 2).await;
    })
    .await;
}

#[tokio::test]
async fn udp_fragments_and_strangers_are_dropped_and_counted() {
    within(TEST_DEADLINE, "UDP counters", async {
        let server = Running::start(ServerConfig::default()).await;
        let echo = UdpEchoServer::start().await;
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let (control, relay) = socks5_udp_associate(
            server.addr,
            None,
            "0.0.0.0:0".parse::<SocketAddr>().expect("literal"),
        )
        .await
        .expect("associate");
        let target = Target::Ip(echo.addr());

        let (_, source, data) = udp_exchange(&client, relay, &target, b"first").await;
        assert_eq!((source, data), (target.clone(), b"first".to_vec()));

        let mut fragment = udp_wrap(&target, b"fragment");
        fragment[2] = 0x01;
        client.send_to(&fragment, relay).await.expect("send");
        let stranger = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        stranger
            .send_to(&udp_wrap(&target, b"stranger"), relay)
            .await
            .expect("send");
        let (_, _, data) = udp_exchange(&client, relay, &target, b"last").await;
        assert_eq!(data, b"last");

        let stats = server
            .stats_when(|s| s.udp_frag_dropped == 1 && s.udp_foreign_dropped == 1)
            .await;
        assert_eq!(stats.udp_associations, 1);
        assert_eq!(stats.udp_datagrams_client_to_target, 2);
        assert_eq!(stats.udp_datagrams_target_to_client, 2);
        assert_eq!(echo.received(), 2);
        drop(control);
        server.stats_when(|s| s.sessions_active == 0).await;
    })
    .await;
}

#[tokio::test]
async fn udp_association_trusts_the_control_connections_ip_not_the_request() {
    within(TEST_DEADLINE, "UDP client address", async {
        let server = Running::start(ServerConfig::default()).await;
        let echo = UdpEchoServer::start().await;
        // The request names a third party (127.0.0.2, with its port); the control connection
        // comes from 127.0.0.1, and so do the client's datagrams, from another port (as
        // behind NAT).
        let third_party = UdpSocket::bind("127.0.0.2:0")
            .await
            .expect("bind 127.0.0.2");
        let named = third_party.local_addr().expect("address");
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let (control, relay) = socks5_udp_associate(server.addr, None, named)
            .await
            .expect("associate");
        let target = Target::Ip(echo.addr());

        third_party
            .send_to(&udp_wrap(&target, b"reflected"), relay)
            .await
            .expect("send");
        let (from, source, data) = udp_exchange(&client, relay, &target, b"mine").await;
        assert_eq!(from, relay);
        assert_eq!((source, data), (target.clone(), b"mine".to_vec()));
        let mut buf = vec![0u8; 2048];
        let stats = server.stats_when(|s| s.udp_foreign_dropped == 1).await;
        assert_eq!(stats.udp_datagrams_client_to_target, 1);
        assert_eq!(echo.received(), 1, "the third party's datagram never left");
        assert!(
            third_party.try_recv_from(&mut buf).is_err(),
            "nothing was sent to the third party"
        );
        drop(control);
        server.stats_when(|s| s.sessions_active == 0).await;
    })
    .await;
}

#[tokio::test]
async fn strangers_datagrams_do_not_keep_a_udp_association_alive() {
    within(TEST_DEADLINE, "UDP idle with strangers", async {
        let idle = Duration::from_millis(300);
        let mut config = ServerConfig::default();
        config.udp_idle_timeout = idle;
        let server = Running::start(config).await;
        let (mut control, relay) = socks5_udp_associate(
            server.addr,
            None,
            "0.0.0.0:0".parse::<SocketAddr>().expect("literal"),
        )
        .await
        .expect("associate");
        // A stranger sends a datagram every 50 ms for 3 s (60 at most): far longer than the
        // idle timeout.
        let stranger = UdpSocket::bind("127.0.0.3:0")
            .await
            .expect("bind 127.0.0.3");
        let target = Target::Ip("127.0.0.1:9".parse().expect("literal"));
        let spray = tokio::spawn(async move {
            for _ in 0..60 {
                let _ = stranger
                    .send_to(&udp_wrap(&target, b"keepalive?"), relay)
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let started = Instant::now();
        let mut buf = [0u8; 16];
        let end = tokio::time::timeout(STEP, control.read(&mut buf))
            .await
            .expect("the association ends");
        assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
        let lasted = started.elapsed();
        assert!(
            lasted < Duration::from_millis(2000),
            "the association lasted {lasted:?} while a stranger sent datagrams"
        );
        spray.abort();
        let stats = server.stats();
        assert!(stats.udp_foreign_dropped >= 1, "{stats:?}");
    })
    .await;
}

#[tokio::test]
async fn a_name_with_several_addresses_is_raced_and_lookups_go_through_the_resolver() {
    within(TEST_DEADLINE, "names", async {
        let echo = EchoServer::start().await;
        let port = echo.addr().port();
        // [::1]:port is bound but not listening: connecting there is refused for sure.
        let blocker = TcpSocket::new_v6().expect("socket");
        blocker
            .bind(SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], port)))
            .expect("bind [::1]");
        let resolver = StaticResolver::new()
            .with_host(
                "dual.test",
                [
                    IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
                    IpAddr::from([127, 0, 0, 1]),
                ],
            )
            .with_host("refused.test", [IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])])
            .with_host("meta.test", [IpAddr::from([169, 254, 169, 254])]);
        let mut config = ServerConfig::default();
        config.resolver = Arc::new(resolver);
        let server = Running::start(config).await;

        // IPv6 first (refused), then IPv4: the tunnel works.
        let (mut t, bound) = socks5_connect(server.addr, None, Target::domain("dual.test", port))
            .await
            .expect("tunnel through the IPv4 address");
        assert_eq!(
            bound.ip().map(|a| a.ip()),
            Some(IpAddr::from([127, 0, 0, 1]))
        );
        t.write_all(b"raced").await.expect("write");
        let mut back = [0u8; 5];
        t.read_exact(&mut back).await.expect("read");
        assert_eq!(&back, b"raced");

        let code = |name: &str| {
            let target = Target::domain(name, port);
            async move { v5_request(server.addr, 1, &target).await.1 }
        };
        assert_eq!(code("refused.test").await, 0x05);
        assert_eq!(code("missing.test").await, 0x04, "a failed lookup");
        // The policy checks resolved addresses too: a name cannot smuggle the metadata address.
        assert_eq!(code("meta.test").await, 0x02);
        // An IP literal sent as a name needs no resolver.
        assert_eq!(code("127.0.0.1").await, 0x00);
        drop(blocker);
    })
    .await;
}

#[tokio::test]
async fn the_handshake_deadline_is_counted() {
    within(TEST_DEADLINE, "handshake deadline", async {
        let mut config = ServerConfig::default();
        config.handshake_timeout = Duration::from_millis(100);
        let server = Running::start(config).await;
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        s.write_all(&[5, 1]).await.expect("half a greeting");
        let mut buf = Vec::new();
        let n = tokio::time::timeout(STEP, s.read_to_end(&mut buf))
            .await
            .expect("closed");
        assert!(matches!(n, Ok(0)), "{n:?}");
        server.stats_when(|s| s.handshake_timeouts == 1).await;
    })
    .await;
}

#[tokio::test]
async fn the_handshake_deadline_runs_from_the_accept_whatever_the_client_sends() {
    within(TEST_DEADLINE, "one handshake deadline", async {
        let mut config = ServerConfig::default();
        config.handshake_timeout = Duration::from_millis(1000);
        let server = Running::start(config).await;
        // A first byte late in the window, then the rest byte by byte: the stages after the
        // first byte (the SOCKS handshake, the HTTP head) get what is left of it, not a
        // fresh one each.
        for (what, first, rest) in [
            ("SOCKS5", &b"\x05"[..], &b"\x01\x00\x05\x01\x00\x01"[..]),
            ("HTTP", b"C", b"ONNECT 127.0.0.1:9 HTTP/1.1\r\n"),
        ] {
            let started = tokio::time::Instant::now();
            let mut s = TcpStream::connect(server.addr).await.expect("connect");
            tokio::time::sleep(Duration::from_millis(700)).await;
            s.write_all(first).await.expect("the first byte");
            let (mut reader, mut writer) = s.into_split();
            let trickle = async move {
                for byte in rest {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if writer.write_all(&[*byte]).await.is_err() {
                        break;
                    }
                }
                writer
            };
            let closing = async {
                // The end of stream, or a reset if a byte arrived after the close.
                let mut buf = Vec::new();
                let _ = reader.read_to_end(&mut buf).await;
                started.elapsed()
            };
            let (_writer, closed) = tokio::join!(trickle, closing);
            assert!(
                closed < Duration::from_millis(1500),
                "{what}: closed after {closed:?}, the deadline was 1 s from the accept"
            );
        }
    })
    .await;
}

/// Connects directly, but hands the stream over as a generic one (as a parent proxy chain
/// would), reporting a made-up bound address.
#[derive(Debug)]
struct Generic;

impl Egress for Generic {
    fn connect<'a>(&'a self, request: EgressRequest<'a>) -> EgressFuture<'a, Connected> {
        Box::pin(async move {
            let addr = request.session.target.ip_literal().expect("an IP target");
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|e| EgressError::custom(socksmith::ReplyCode::GeneralFailure, e))?;
            Ok(Connected {
                stream: TunnelStream::Other(Box::new(stream)),
                bound: TargetAddr::domain("upstream.example", 4242).expect("valid"),
            })
        })
    }
}

#[tokio::test]
async fn a_custom_outbound_with_a_generic_stream_is_relayed() {
    within(TEST_DEADLINE, "generic outbound", async {
        let echo = EchoServer::start().await;
        let mut config = ServerConfig::default();
        config.egress = Some(Arc::new(Generic));
        let server = Running::start(config).await;
        let (mut s, code, _) = v5_request(server.addr, 1, &Target::Ip(echo.addr())).await;
        assert_eq!(code, 0);
        let data = vec![42u8; 100_000];
        let (mut r, mut w) = s.split();
        let write = async {
            w.write_all(&data).await.expect("write");
            w.shutdown().await.expect("half-close");
        };
        let mut back = Vec::new();
        let read = r.read_to_end(&mut back);
        let (_, read) = tokio::join!(write, read);
        read.expect("read");
        assert!(back == data);
        let stats = server
            .stats_when(|s| s.tunnels_total == 1 && s.tunnels_active == 0)
            .await;
        assert_eq!(stats.bytes_client_to_target, 100_000);
        assert_eq!(stats.bytes_target_to_client, 100_000);
    })
    .await;
}

#[tokio::test]
async fn the_session_limit_holds_further_clients_in_the_queue() {
    within(TEST_DEADLINE, "session limit", async {
        let echo = EchoServer::start().await;
        let mut config = ServerConfig::default();
        config.max_sessions = Some(1);
        let server = Running::start(config).await;
        let (first, _) = socks5_connect(server.addr, None, echo.addr())
            .await
            .expect("first");
        let mut second = TcpStream::connect(server.addr)
            .await
            .expect("queued in the kernel");
        second.write_all(&[5, 1, 0]).await.expect("greeting");
        let mut choice = [0u8; 2];
        let waited =
            tokio::time::timeout(Duration::from_millis(200), second.read_exact(&mut choice)).await;
        assert!(
            waited.is_err(),
            "the second client was served while the first one runs"
        );
        drop(first);
        tokio::time::timeout(STEP, second.read_exact(&mut choice))
            .await
            .expect("served")
            .expect("read");
        assert_eq!(choice, [5, 0]);
    })
    .await;
}

#[tokio::test]
async fn shutdown_waits_for_the_grace_period_then_cuts_tunnels() {
    within(TEST_DEADLINE, "shutdown", async {
        let echo = EchoServer::start().await;
        let mut config = ServerConfig::default();
        config.shutdown_grace = Duration::from_millis(200);
        let server = Running::start(config).await;
        let addr = server.addr;
        let (mut tunnel, _) = socks5_connect(addr, None, echo.addr())
            .await
            .expect("tunnel");
        let started = Instant::now();
        server.shutdown().await.expect("serve returns Ok");
        assert!(started.elapsed() >= Duration::from_millis(200));
        let mut buf = [0u8; 1];
        let end = tokio::time::timeout(STEP, tunnel.read(&mut buf))
            .await
            .expect("cut");
        assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
        assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    })
    .await;
}

#[tokio::test]
async fn serve_refuses_an_open_proxy() {
    within(TEST_DEADLINE, "open proxy", async {
        let listener = TcpListener::bind("0.0.0.0:0").await.expect("bind");
        let server = Server::new(ServerConfig::default());
        let err = server
            .serve(vec![listener], async {})
            .await
            .expect_err("refused");
        assert!(matches!(err, ServerError::OpenProxy { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("refusing to run an open proxy: 0.0.0.0:"),
            "{err}"
        );

        let mut config = ServerConfig::default();
        config.allow_open_proxy = true;
        let listener = TcpListener::bind("0.0.0.0:0").await.expect("bind");
        Server::new(config)
            .serve(vec![listener], async {})
            .await
            .expect("explicitly allowed");
        let err = Server::new(ServerConfig::default())
            .serve(vec![], async {})
            .await
            .expect_err("nothing to serve");
        assert!(matches!(err, ServerError::NoListeners));

        // Users, but SOCKS4 served beside them: anyone gets in over SOCKS4.
        let mut config = ServerConfig::default();
        config.auth = Some(Arc::new(Reversed));
        config.allow_socks4 = Some(true);
        let server = Server::new(config);
        let listener = TcpListener::bind("0.0.0.0:0").await.expect("bind");
        let err = server
            .serve(vec![listener], async {})
            .await
            .expect_err("refused");
        assert!(matches!(err, ServerError::OpenProxySocks4 { .. }), "{err}");
        assert!(err.to_string().contains("SOCKS4 is allowed"), "{err}");
        // The same check on addresses, before anything is bound; loopback is fine.
        let public: SocketAddr = "192.0.2.1:1080".parse().expect("literal");
        let local: SocketAddr = "127.0.0.1:1080".parse().expect("literal");
        assert!(matches!(
            server.check_addresses(&[local, public]),
            Err(ServerError::OpenProxySocks4 { addr }) if addr == public
        ));
        server.check_addresses(&[local]).expect("loopback only");
        // Users without SOCKS4: not open.
        let mut config = ServerConfig::default();
        config.auth = Some(Arc::new(Reversed));
        Server::new(config)
            .check_addresses(&[public])
            .expect("credentials required of everyone");
    })
    .await;
}

#[tokio::test]
async fn a_bind_ends_when_its_client_goes_away() {
    within(TEST_DEADLINE, "BIND abandoned", async {
        // The default BIND timeout is a minute: only the client's leaving can end this early.
        let server = Running::start(ServerConfig::default()).await;
        let (control, code, _) = v5_request(
            server.addr,
            2,
            &Target::Ip("127.0.0.1:0".parse().expect("literal")),
        )
        .await;
        assert_eq!(code, 0);
        assert_eq!(server.stats().sessions_active, 1);
        drop(control);
        server.stats_when(|s| s.sessions_active == 0).await;
    })
    .await;
}

#[tokio::test]
async fn a_socks4_bind_over_ipv6_is_refused_not_granted_with_zeros() {
    within(TEST_DEADLINE, "SOCKS4 BIND over IPv6", async {
        let Some(v6) = socksmith_testkit::targets::localhost_v6() else {
            return;
        };
        let server = Running::start_on(ServerConfig::default(), v6).await;
        // SOCKS4 BIND for any peer over a connection to [::1]: the listener would be on
        // ::1, which an 8-byte SOCKS4 reply cannot say.
        let (mut s, reply) = v4_bind_any(server.addr).await;
        assert_eq!(
            reply,
            [0, 0x5B, 0, 0, 0, 0, 0, 0],
            "refused, not 0.0.0.0:0 granted"
        );
        let mut rest = Vec::new();
        let end = tokio::time::timeout(STEP, s.read_to_end(&mut rest))
            .await
            .expect("closed");
        assert!(matches!(end, Ok(0)), "{end:?}");
        server.stats_when(|s| s.sessions_active == 0).await;
        // SOCKS5 BIND over the same connection type carries IPv6 fine.
        let (mut s, code, _) = v5_request(
            server.addr,
            2,
            &Target::Ip("[::1]:0".parse().expect("literal")),
        )
        .await;
        assert_eq!(code, 0);
        drop(s.shutdown().await);
    })
    .await;
}

/// Writes `request` and 8 KB of payload behind it at once (without closing its side), reads
/// `reply_len` bytes of reply, then expects a clean end of stream, not a reset.
async fn refused_with_payload_ends_cleanly(
    proxy: SocketAddr,
    request: &[u8],
    reply_len: usize,
) -> Vec<u8> {
    let mut s = TcpStream::connect(proxy).await.expect("connect");
    let mut bytes = request.to_vec();
    bytes.extend(vec![b'x'; 8 * 1024]);
    s.write_all(&bytes).await.expect("write");
    let mut reply = vec![0u8; reply_len];
    tokio::time::timeout(STEP, s.read_exact(&mut reply))
        .await
        .expect("reply in time")
        .expect("the reply arrives");
    let mut rest = Vec::new();
    let end = tokio::time::timeout(STEP, s.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    assert!(
        matches!(end, Ok(0)),
        "after the reply: {end:?} (a reset instead of an end of stream)"
    );
    reply
}

#[tokio::test]
async fn a_refused_client_with_pipelined_payload_gets_its_reply_then_eof_not_a_reset() {
    within(TEST_DEADLINE, "failure replies without RST", async {
        let mut config = ServerConfig::default();
        config.auth = Some(Arc::new(Reversed));
        config.allow_socks4 = Some(true);
        let server = Running::start(config).await;
        // Denied by policy (the metadata address), payload pipelined after the request.
        let mut request = vec![5, 1, 2, 1, 3, b'b', b'o', b'b', 3, b'b', b'o', b'b'];
        request.extend([5, 1, 0, 1, 169, 254, 169, 254, 0, 80]);
        let reply = refused_with_payload_ends_cleanly(server.addr, &request, 2 + 2 + 10).await;
        assert_eq!(reply[..5], [5, 2, 1, 0, 5]);
        assert_eq!(reply[5], 0x02, "not allowed");
        // Refused in the handshake (wrong password), request and payload behind it.
        let mut request = vec![5, 1, 2, 1, 3, b'b', b'o', b'b', 3, b'b', b'a', b'd'];
        request.extend([5, 1, 0, 1, 127, 0, 0, 1, 0, 80]);
        let reply = refused_with_payload_ends_cleanly(server.addr, &request, 4).await;
        assert_eq!(reply, [5, 2, 1, 1]);
        // SOCKS4, refused by policy.
        let request = [4, 1, 0, 80, 169, 254, 169, 254, 0];
        let reply = refused_with_payload_ends_cleanly(server.addr, &request, 8).await;
        assert_eq!(reply[..2], [0, 0x5B]);
        server.stats_when(|s| s.sessions_active == 0).await;
    })
    .await;
}

#[tokio::test]
async fn huge_timeouts_mean_never_not_a_panic() {
    within(TEST_DEADLINE, "Duration::MAX timeouts", async {
        let mut config = ServerConfig::default();
        config.handshake_timeout = Duration::MAX;
        config.resolve_timeout = Duration::MAX;
        config.connect_timeout = Duration::MAX;
        config.idle_timeout = Some(Duration::MAX);
        config.udp_idle_timeout = Duration::MAX;
        config.bind_timeout = Duration::MAX;
        let server = Running::start(config).await;
        let echo = EchoServer::start().await;
        let (mut t, _) = socks5_connect(server.addr, None, echo.addr())
            .await
            .expect("tunnel");
        t.write_all(b"ping").await.expect("write");
        let mut back = [0u8; 4];
        t.read_exact(&mut back).await.expect("read");
        assert_eq!(&back, b"ping");

        let udp_echo = UdpEchoServer::start().await;
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let (_control, relay) = socks5_udp_associate(
            server.addr,
            None,
            "0.0.0.0:0".parse::<SocketAddr>().expect("literal"),
        )
        .await
        .expect("associate");
        let target = Target::Ip(udp_echo.addr());
        let (_, _, data) = udp_exchange(&client, relay, &target, b"udp").await;
        assert_eq!(data, b"udp");
    })
    .await;
}
