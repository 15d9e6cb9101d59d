//! The server with an [`Upstream`]: every command goes through the parent proxy chain. The
//! parent here is another socksmith server, told apart by its counters and by its resolver:
//! the server under test resolves no name at all, so a name that works went to the parent.
//! Also: CONNECT through the chain is spliced (the bare TCP stream) unless the target's first
//! bytes came with the reply, the policy still decides first, and what the chain's protocol
//! cannot carry is refused with 0x07.

mod server_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use server_support::{udp_exchange, v4_bind_any, v5_request, Running, STEP};
use socksmith::client::Client;
use socksmith::policy::{IpNet, Rules};
use socksmith::resolve::StaticResolver;
use socksmith::server::{Egress, EgressRequest, ServerConfig, Session, TunnelStream, Upstream};
use socksmith_proto::{Command, TargetAddr, Version};
use socksmith_testkit::raw::{
    bind_talk, echo_exact, socks5_bind, socks5_bind_accepted, socks5_connect, socks5_udp_associate,
    RawError, CMD_UDP_ASSOCIATE,
};
use socksmith_testkit::{pattern, within, EchoServer, Target, UdpEchoServer, TEST_DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// The one name the parent knows, and where it points.
const PARENT_ONLY_NAME: &str = "parent-only.test";
const PARENT_ONLY_IP: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A parent server (direct, knowing [`PARENT_ONLY_NAME`]) and a server that sends everything
/// through it with `scheme`, resolving no name itself. Returns (server, parent).
async fn chained(scheme: &str, policy: Rules) -> (Running, Running) {
    let loopback = "127.0.0.1:0".parse().expect("literal");
    chained_with(scheme, policy, ServerConfig::default(), loopback).await
}

/// [`chained`] with the parent's configuration and listening address.
async fn chained_with(
    scheme: &str,
    policy: Rules,
    mut parent: ServerConfig,
    parent_addr: SocketAddr,
) -> (Running, Running) {
    parent.resolver = Arc::new(
        StaticResolver::new()
            .with_host(PARENT_ONLY_NAME, [IpAddr::V4(PARENT_ONLY_IP)])
            .with_name(IpAddr::V4(PARENT_ONLY_IP), PARENT_ONLY_NAME),
    );
    parent.allow_socks4 = Some(true);
    let parent = Running::start_on(parent, parent_addr).await;
    let mut config = ServerConfig::default();
    config.resolver = Arc::new(StaticResolver::new());
    config.policy = Arc::new(policy);
    let url = format!("{scheme}://{}", parent.addr);
    config.set_upstream(Client::from_url(&url).expect("upstream URL"));
    (Running::start(config).await, parent)
}

#[tokio::test]
async fn connect_goes_through_the_parent_by_address_and_by_name() {
    within(TEST_DEADLINE, "connect through the upstream", async {
        let (server, parent) = chained("socks5h", Rules::default()).await;
        let echo = EchoServer::start().await;
        let data = pattern(200_000);

        let (tunnel, bound) = socks5_connect(server.addr, None, echo.addr())
            .await
            .expect("tunnel by address");
        assert_eq!(echo_exact(tunnel, &data).await.expect("echo"), data);
        // The reply carries the parent's bound address: where the target saw it come from.
        assert_eq!(bound, Target::Ip(echo.peers()[0]));

        // Only the parent can resolve this name.
        let by_name = Target::domain(PARENT_ONLY_NAME, echo.addr().port());
        let (tunnel, _) = socks5_connect(server.addr, None, by_name)
            .await
            .expect("tunnel by a name the parent resolves");
        assert_eq!(echo_exact(tunnel, &data).await.expect("echo"), data);

        let parent_stats = parent
            .stats_when(|s| s.tunnels_total == 2 && s.sessions_active == 0)
            .await;
        assert_eq!(parent_stats.bytes_client_to_target, 2 * data.len() as u64);
        let stats = server.stats_when(|s| s.sessions_active == 0).await;
        assert_eq!(stats.tunnels_total, 2);
        server.shutdown().await.expect("clean shutdown");
        parent.shutdown().await.expect("clean shutdown");
    })
    .await;
}

#[tokio::test]
async fn the_policy_decides_before_the_chain_is_asked() {
    within(TEST_DEADLINE, "policy before the upstream", async {
        let denied: IpNet = "127.0.0.3/32".parse().expect("prefix");
        let (server, parent) = chained("socks5h", Rules::default().deny(denied)).await;
        let target = Target::Ip("127.0.0.3:9".parse().expect("literal"));
        let (_s, code, _) = v5_request(server.addr, 1, &target).await;
        assert_eq!(code, 0x02, "not allowed by ruleset");
        server.stats_when(|s| s.policy_denied == 1).await;
        assert_eq!(
            parent.stats().sessions_accepted,
            0,
            "the parent was not asked"
        );
    })
    .await;
}

/// A session asking for `target`, for calling an outbound directly.
fn session(target: SocketAddr) -> Session {
    Session {
        client: "127.0.0.1:40000".parse().expect("literal"),
        local: "127.0.0.1:1080".parse().expect("literal"),
        user: None,
        version: Version::V5,
        http: false,
        command: Command::Connect,
        target: TargetAddr::Ip(target),
    }
}

#[tokio::test]
async fn the_tunnel_is_the_bare_tcp_stream_unless_early_bytes_came_with_the_reply() {
    within(TEST_DEADLINE, "zero-copy outbound", async {
        let (_server, parent) = chained("socks5", Rules::default()).await;
        let echo = EchoServer::start().await;
        let policy = Rules::default();
        let upstream =
            Upstream::new(Client::from_url(&format!("socks5://{}", parent.addr)).expect("url"));
        let session = session(echo.addr());
        let request = EgressRequest {
            session: &session,
            policy: &policy,
        };
        let connected = upstream.connect(request).await.expect("through the parent");
        let TunnelStream::Tcp(mut tcp) = connected.stream else {
            panic!("expected the bare TCP stream, got {:?}", connected.stream);
        };
        assert_eq!(
            tcp.peer_addr().expect("peer"),
            parent.addr,
            "connected to the first hop"
        );
        assert_eq!(connected.bound, TargetAddr::Ip(echo.peers()[0]));
        tcp.write_all(b"spliced").await.expect("write");
        let mut back = [0u8; 7];
        tcp.read_exact(&mut back).await.expect("read");
        assert_eq!(&back, b"spliced");

        // A proxy whose reply and the target's banner arrive in one segment.
        let fake = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let fake_addr = fake.local_addr().expect("address");
        let proxy = tokio::spawn(async move {
            let (mut s, _) = fake.accept().await.expect("accept");
            let mut head = [0u8; 2];
            s.read_exact(&mut head).await.expect("greeting");
            let mut methods = vec![0u8; usize::from(head[1])];
            s.read_exact(&mut methods).await.expect("methods");
            s.write_all(&[5, 0]).await.expect("method choice");
            let mut request = [0u8; 10];
            s.read_exact(&mut request)
                .await
                .expect("IPv4 CONNECT request");
            s.write_all(b"\x05\x00\x00\x01\x7f\x00\x00\x01\x04\x38banner")
                .await
                .expect("reply and banner");
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
        });
        let upstream =
            Upstream::new(Client::from_url(&format!("socks5://{fake_addr}")).expect("url"));
        let connected = upstream.connect(request).await.expect("through the fake");
        assert_eq!(
            connected.bound,
            TargetAddr::Ip("127.0.0.1:1080".parse().expect("literal"))
        );
        let TunnelStream::Other(mut stream) = connected.stream else {
            panic!(
                "early bytes need the buffered stream, got {:?}",
                connected.stream
            );
        };
        let mut banner = [0u8; 6];
        stream.read_exact(&mut banner).await.expect("banner");
        assert_eq!(&banner, b"banner", "the early bytes are delivered first");
        drop(stream);
        proxy.await.expect("fake proxy");
    })
    .await;
}

#[tokio::test]
async fn bind_goes_through_the_parent_which_listens_and_checks_the_peer() {
    within(TEST_DEADLINE, "bind through the upstream", async {
        let (server, parent) = chained("socks5h", Rules::default()).await;
        // The expected peer is a name only the parent resolves.
        let (mut control, listen) =
            socks5_bind(server.addr, None, Target::domain(PARENT_ONLY_NAME, 0))
                .await
                .expect("first BIND reply");
        assert_eq!(listen.ip(), parent.addr.ip());
        let mut peer = TcpStream::connect(listen).await.expect("peer connects");
        let peer_addr = peer.local_addr().expect("peer address");
        let announced = socks5_bind_accepted(&mut control)
            .await
            .expect("second BIND reply");
        assert_eq!(announced, Target::Ip(peer_addr));
        bind_talk(&mut control, &mut peer).await;
        drop((control, peer));
        parent.stats_when(|s| s.tunnels_total == 1).await;
        server.stats_when(|s| s.tunnels_total == 1).await;
    })
    .await;
}

#[tokio::test]
async fn udp_goes_through_the_parents_relay_names_included() {
    within(TEST_DEADLINE, "udp through the upstream", async {
        let (server, parent) = chained("socks5h", Rules::default()).await;
        let echo = UdpEchoServer::start().await;
        let local = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let (_control, relay) =
            socks5_udp_associate(server.addr, None, local.local_addr().expect("address"))
                .await
                .expect("association");
        let by_name = Target::domain(PARENT_ONLY_NAME, echo.addr().port());
        for (i, target) in [Target::Ip(echo.addr()), by_name].iter().enumerate() {
            let payload = format!("datagram {i}");
            let (from, source, data) =
                udp_exchange(&local, relay, target, payload.as_bytes()).await;
            assert_eq!(from, relay);
            assert_eq!(source, Target::Ip(echo.addr()));
            assert_eq!(data, payload.as_bytes());
        }
        let parent_stats = parent
            .stats_when(|s| s.udp_datagrams_target_to_client == 2)
            .await;
        assert_eq!(parent_stats.udp_associations, 1);
        assert_eq!(parent_stats.udp_datagrams_client_to_target, 2);
        let stats = server.stats();
        assert_eq!(stats.udp_datagrams_client_to_target, 2);
        assert_eq!(stats.udp_datagrams_target_to_client, 2);
    })
    .await;
}

#[tokio::test]
async fn resolve_and_resolve_ptr_are_answered_by_the_parent() {
    within(TEST_DEADLINE, "resolve through the upstream", async {
        let (server, parent) = chained("socks5h", Rules::default()).await;
        let (_s, code, answer) =
            v5_request(server.addr, 0xF0, &Target::domain(PARENT_ONLY_NAME, 0)).await;
        assert_eq!(code, 0x00);
        assert_eq!(
            answer,
            Target::Ip(SocketAddr::new(PARENT_ONLY_IP.into(), 0))
        );
        let ptr = Target::Ip(SocketAddr::new(PARENT_ONLY_IP.into(), 0));
        let (_s, code, answer) = v5_request(server.addr, 0xF1, &ptr).await;
        assert_eq!(code, 0x00);
        assert_eq!(answer, Target::domain(PARENT_ONLY_NAME, 0));
        // A name the parent does not know: its "host unreachable" is passed on.
        let (_s, code, _) = v5_request(server.addr, 0xF0, &Target::domain("nowhere.test", 0)).await;
        assert_eq!(code, 0x04);
        parent.stats_when(|s| s.resolves == 3).await;
    })
    .await;
}

#[tokio::test]
async fn udp_over_a_socks4_upstream_is_refused_with_0x07_and_nothing_goes_direct() {
    within(TEST_DEADLINE, "udp over socks4 upstream", async {
        let (server, parent) = chained("socks4a", Rules::default()).await;
        let err = socks5_udp_associate(
            server.addr,
            None,
            "127.0.0.1:0".parse::<SocketAddr>().expect("literal"),
        )
        .await
        .expect_err("SOCKS4 has no UDP");
        assert!(matches!(err, RawError::Rejected(0x07)), "{err}");
        let (_s, code, _) = v5_request(
            server.addr,
            CMD_UDP_ASSOCIATE,
            &Target::Ip("0.0.0.0:0".parse().expect("literal")),
        )
        .await;
        assert_eq!(code, 0x07, "command not supported");
        let stats = server.stats_when(|s| s.sessions_active == 0).await;
        assert_eq!(stats.udp_associations, 0);
        assert_eq!(
            parent.stats().sessions_accepted,
            0,
            "refused before the chain"
        );
    })
    .await;
}

#[tokio::test]
async fn when_the_parent_ends_a_udp_association_the_clients_ends_too() {
    within(TEST_DEADLINE, "upstream ends the association", async {
        let mut parent = ServerConfig::default();
        parent.shutdown_grace = Duration::from_millis(50);
        let loopback = "127.0.0.1:0".parse().expect("literal");
        let (server, parent) = chained_with("socks5", Rules::default(), parent, loopback).await;
        let local = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let (mut control, _relay) =
            socks5_udp_associate(server.addr, None, local.local_addr().expect("address"))
                .await
                .expect("association");
        parent.stats_when(|s| s.udp_associations == 1).await;
        parent.shutdown().await.expect("clean shutdown");
        let mut rest = Vec::new();
        let end = tokio::time::timeout(STEP, control.read_to_end(&mut rest))
            .await
            .expect("the control connection is closed in time");
        assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
        server.stats_when(|s| s.sessions_active == 0).await;
    })
    .await;
}

#[tokio::test]
async fn a_socks4_bind_is_refused_when_the_parent_listens_on_ipv6() {
    within(
        TEST_DEADLINE,
        "SOCKS4 BIND, IPv6 upstream listener",
        async {
            let Some(v6) = socksmith_testkit::targets::localhost_v6() else {
                return;
            };
            let (server, parent) =
                chained_with("socks5", Rules::default(), ServerConfig::default(), v6).await;
            // SOCKS4 BIND for any peer: the parent listens on ::1, which a SOCKS4 reply cannot say.
            let (mut s, reply) = v4_bind_any(server.addr).await;
            assert_eq!(
                reply,
                [0, 0x5B, 0, 0, 0, 0, 0, 0],
                "rejected, not 0.0.0.0 granted"
            );
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(STEP, s.read_to_end(&mut rest)).await;
            server.stats_when(|s| s.sessions_active == 0).await;
            parent.stats_when(|s| s.sessions_active == 0).await;
            assert_eq!(parent.stats().sessions_accepted, 1, "the parent was asked");
        },
    )
    .await;
}

#[tokio::test]
async fn a_name_resolved_here_goes_on_to_its_next_allowed_address_through_the_chain() {
    within(TEST_DEADLINE, "upstream address fallback", async {
        let parent = Running::start(ServerConfig::default()).await;
        let echo = EchoServer::start().await;
        // Nothing listens on 127.0.0.3 (the echo target is on 127.0.0.1 only): the parent's
        // CONNECT to it is refused, and the next address is asked for.
        let ip = |last: u8| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
        let resolver = StaticResolver::new().with_host("multi.test", [ip(3), ip(1)]);
        let upstream = Client::builder()
            .proxy(
                format!("socks5://{}", parent.addr)
                    .parse()
                    .expect("upstream URL"),
            )
            .resolver(Arc::new(resolver))
            .build()
            .expect("client");
        let mut config = ServerConfig::default();
        config.set_upstream(upstream);
        let server = Running::start(config).await;
        let target = Target::domain("multi.test", echo.addr().port());
        let (tunnel, _) = socks5_connect(server.addr, None, target)
            .await
            .expect("a tunnel through the name's second address");
        let data = pattern(10_000);
        assert_eq!(echo_exact(tunnel, &data).await.expect("echo"), data);
    })
    .await;
}
