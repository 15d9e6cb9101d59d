//! The client library against socksmith's own server (the library's `Server`, on real
//! loopback sockets): every version and target kind, authentication with percent-encoded
//! credentials and a wrong password, BIND in both versions, UDP ASSOCIATE, Tor's RESOLVE and
//! RESOLVE_PTR, chains mixing it with Dante, and a client running over a transport that is
//! not a TCP socket.

mod client_support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use client_support::{
    bind_round_trip, client, connect_echo, dead_addr, hop_kind, udp_round_trip, TIMEOUTS,
};
use socksmith::client::{Client, HopErrorKind, Protocol, Proxy};
use socksmith::resolve::StaticResolver;
use socksmith::server::{Server, ServerConfig, Users};
use socksmith_proto::{ReplyCode, TargetAddr};
use socksmith_testkit::dante::{Dante, DanteOptions};
use socksmith_testkit::{within, EchoServer, ProxyKind, UdpEchoServer, TEST_DEADLINE};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// A socksmith server on 127.0.0.1:0 (and [::1]:0 where available), stopped on drop. Tests
/// that use IPv6 ask `start_v6`/`localhost_v6` first, which apply the missing-peer rule.
struct Socksmith {
    addr: SocketAddr,
    addr_v6: Option<SocketAddr>,
    _stop: oneshot::Sender<()>,
}

impl Socksmith {
    async fn start(config: ServerConfig) -> Self {
        let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind 127.0.0.1:0");
        let addr = v4.local_addr().expect("addr");
        let mut listeners = vec![v4];
        let mut addr_v6 = None;
        if let Ok(v6) = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).await {
            addr_v6 = Some(v6.local_addr().expect("addr"));
            listeners.push(v6);
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let server = Server::new(config);
        tokio::spawn(async move {
            server
                .serve(listeners, async {
                    let _ = stopped.await;
                })
                .await
                .expect("the server runs");
        });
        Socksmith {
            addr,
            addr_v6,
            _stop: stop,
        }
    }

    fn client(&self, protocol: Protocol) -> Client {
        Client::builder()
            .proxy(Proxy::new(protocol, self.addr))
            .timeouts(TIMEOUTS)
            .build()
            .expect("client")
    }
}

#[tokio::test]
async fn every_version_reaches_ipv4_ipv6_and_name_targets() {
    within(TEST_DEADLINE, "socksmith connect", async {
        let server = Socksmith::start(ServerConfig::default()).await;
        let echo = EchoServer::start().await;
        let port = echo.addr().port();
        for protocol in [
            Protocol::Socks4,
            Protocol::Socks4a,
            Protocol::Socks5,
            Protocol::Socks5h,
        ] {
            let c = server.client(protocol);
            connect_echo(&c, echo.addr()).await;
            connect_echo(&c, ("localhost", port)).await;
        }
        // ::1 goes through the missing-peer rule; where it exists, the server listens on it.
        if let Some(echo6) = EchoServer::start_v6().await {
            let v6 = server
                .addr_v6
                .expect("the server listens on ::1 where the host has it");
            connect_echo(&server.client(Protocol::Socks5), echo6.addr()).await;
            let c = Client::from_url(&format!("socks5h://[::1]:{}", v6.port())).expect("URL");
            connect_echo(&c, echo6.addr()).await;
            connect_echo(&c, echo.addr()).await;
        }
        // The server reports the address it connected from.
        let stream = server
            .client(Protocol::Socks5)
            .connect(echo.addr())
            .await
            .expect("connect");
        let bound = stream.bound_addr().ip_literal().expect("an address");
        assert!(bound.ip().is_loopback() && bound.port() != 0, "{bound}");
    })
    .await;
}

#[tokio::test]
async fn percent_encoded_credentials_reach_the_server_decoded() {
    within(TEST_DEADLINE, "socksmith auth", async {
        let mut users = Users::new();
        users
            .insert("al:ice@home", "p@ss:w/rd %")
            .expect("valid user");
        let mut config = ServerConfig::default();
        config.auth = Some(Arc::new(users));
        let server = Socksmith::start(config).await;
        let echo = EchoServer::start().await;
        let url = format!(
            "socks5://al%3Aice%40home:p%40ss%3Aw%2Frd%20%25@{}",
            server.addr
        );
        connect_echo(&Client::from_url(&url).expect("URL"), echo.addr()).await;

        let wrong = format!("socks5://al%3Aice%40home:wrong@{}", server.addr);
        let err = Client::from_url(&wrong)
            .expect("URL")
            .connect(echo.addr())
            .await
            .expect_err("wrong password");
        assert!(
            matches!(hop_kind(&err).1, HopErrorKind::AuthenticationFailed { .. }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "hop 1 (socks5://al%3Aice%40home:***@{}): username/password authentication: \
                 authentication failed (status 0x01): wrong username or password",
                server.addr
            )
        );
        // SOCKS4 is refused when the server requires authentication.
        let err = server
            .client(Protocol::Socks4)
            .connect(echo.addr())
            .await
            .expect_err("SOCKS4 refused");
        assert!(err.to_string().ends_with("(reply 0x5b)"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn bind_udp_and_refusals() {
    within(TEST_DEADLINE, "socksmith bind and udp", async {
        let server = Socksmith::start(ServerConfig::default()).await;
        for protocol in [Protocol::Socks5, Protocol::Socks4] {
            bind_round_trip(&server.client(protocol)).await;
        }
        let udp = UdpEchoServer::start().await;
        let c = server.client(Protocol::Socks5);
        let from = udp_round_trip(&c, TargetAddr::Ip(udp.addr())).await;
        assert_eq!(from, TargetAddr::Ip(udp.addr()));
        if let Some(udp6) = UdpEchoServer::start_v6().await {
            let v6 = server
                .addr_v6
                .expect("the server listens on ::1 where the host has it");
            let c6 = Client::new(Proxy::new(Protocol::Socks5, v6));
            let from = udp_round_trip(&c6, TargetAddr::Ip(udp6.addr())).await;
            assert_eq!(from, TargetAddr::Ip(udp6.addr()));
        }
        let err = c.connect(dead_addr()).await.expect_err("refused");
        assert_eq!(
            err.reply_code(),
            Some(ReplyCode::ConnectionRefused),
            "{err}"
        );
        // UDP over SOCKS4 is refused before anything is sent.
        let err = server
            .client(Protocol::Socks4)
            .udp_associate()
            .await
            .expect_err("no UDP over SOCKS4");
        assert!(
            err.to_string().contains("not possible over socks4"),
            "{err}"
        );
    })
    .await;
}

#[tokio::test]
async fn resolve_and_resolve_ptr_through_the_proxy() {
    within(TEST_DEADLINE, "socksmith resolve", async {
        // A fixed table on the server side: the answers do not depend on this host's DNS, and
        // an unknown name fails at once instead of waiting for a DNS timeout.
        let mut config = ServerConfig::default();
        config.resolver = Arc::new(
            StaticResolver::new()
                .with_host("localhost", [IpAddr::V4(Ipv4Addr::LOCALHOST)])
                .with_name(IpAddr::V4(Ipv4Addr::LOCALHOST), "localhost"),
        );
        let server = Socksmith::start(config).await;
        for protocol in [Protocol::Socks5, Protocol::Socks4a] {
            let ip = server
                .client(protocol)
                .resolve("localhost")
                .await
                .unwrap_or_else(|e| panic!("{protocol}: {e}"));
            assert_eq!(ip, IpAddr::V4(Ipv4Addr::LOCALHOST), "{protocol}");
        }
        let name = server
            .client(Protocol::Socks5)
            .resolve_ptr(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .await
            .expect("RESOLVE_PTR");
        assert_eq!(name, "localhost");
        let err = server
            .client(Protocol::Socks5)
            .resolve("no-such-host.invalid")
            .await
            .expect_err("no such name");
        assert_eq!(err.reply_code(), Some(ReplyCode::HostUnreachable), "{err}");
        // RESOLVE_PTR cannot be sent over SOCKS4a.
        let err = server
            .client(Protocol::Socks4a)
            .resolve_ptr(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .await
            .expect_err("SOCKS5 only");
        assert!(
            matches!(hop_kind(&err).1, HopErrorKind::Protocol(_)),
            "{err}"
        );
    })
    .await;
}

#[tokio::test]
async fn chains_with_dante_in_both_orders() {
    within(TEST_DEADLINE, "socksmith and dante chain", async {
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        let server = Socksmith::start(ServerConfig::default()).await;
        let ours = socksmith_testkit::Proxy::new(ProxyKind::Socks4a, server.addr);
        let echo = EchoServer::start().await;
        let target = ("localhost", echo.addr().port());
        connect_echo(&client(&[&ours, &dante.proxy(ProxyKind::Socks5h)]), target).await;
        connect_echo(&client(&[&dante.proxy(ProxyKind::Socks5), &ours]), target).await;
    })
    .await;
}

#[tokio::test]
async fn the_client_runs_over_any_transport() {
    within(TEST_DEADLINE, "socksmith over a duplex", async {
        let server = Socksmith::start(ServerConfig::default()).await;
        let echo = EchoServer::start().await;
        // The transport is an in-memory pipe whose far end is bridged to the server, as a
        // tunnel inside another protocol would be.
        let (ours, theirs) = tokio::io::duplex(4096);
        let tcp = TcpStream::connect(server.addr).await.expect("connect");
        tokio::spawn(async move {
            let (mut theirs, mut tcp) = (theirs, tcp);
            let _ = tokio::io::copy_bidirectional(&mut theirs, &mut tcp).await;
        });
        let stream = server
            .client(Protocol::Socks5h)
            .connect_over(ours, ("localhost", echo.addr().port()))
            .await
            .expect("connect over the pipe");
        client_support::echo(stream, 64 * 1024).await;
    })
    .await;
}

#[tokio::test]
async fn a_name_resolved_here_goes_on_to_its_next_address_when_the_proxy_cannot_reach_one() {
    within(TEST_DEADLINE, "address fallback", async {
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        let server = Socksmith::start(ServerConfig::default()).await;
        let echo = EchoServer::start().await;
        let port = echo.addr().port();
        // Nothing listens on 127.0.0.3 and 127.0.0.4 (the echo target is on 127.0.0.1 only):
        // the proxy's CONNECT to them is refused.
        let ip = |last: u8| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
        let resolver = StaticResolver::new()
            .with_host("multi.test", [ip(3), ip(4), ip(1)])
            .with_host("nowhere.test", [ip(3), ip(4)]);
        let via = |proxy: Proxy| {
            Client::builder()
                .proxy(proxy)
                .resolver(Arc::new(resolver.clone()))
                .timeouts(TIMEOUTS)
                .build()
                .expect("client")
        };
        let socksmith5 = Proxy::new(Protocol::Socks5, server.addr);
        let dante5: Proxy = dante.proxy(ProxyKind::Socks5).url().parse().expect("URL");
        for proxy in [socksmith5, dante5] {
            let client = via(proxy.clone());
            connect_echo(&client, ("multi.test", port)).await;
            // Every address refused: the last refusal is the answer.
            let err = client
                .connect(("nowhere.test", port))
                .await
                .expect_err("nothing listens");
            assert!(
                err.to_string().contains(&format!("127.0.0.4:{port}")),
                "{proxy}: {err}"
            );
        }
        // A SOCKS4 refusal (0x5B) does not say why: the first address's answer stands.
        let dante4: Proxy = dante.proxy(ProxyKind::Socks4).url().parse().expect("URL");
        let err = via(dante4)
            .connect(("multi.test", port))
            .await
            .expect_err("refused");
        assert!(
            err.to_string().contains(&format!("127.0.0.3:{port}")),
            "{err}"
        );
    })
    .await;
}
