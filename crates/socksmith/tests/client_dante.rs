//! The client library against Dante (danted 1.4), started on loopback by the testkit: SOCKS5
//! and SOCKS4 CONNECT to IPv4, IPv6 and name targets (SOCKS4 with any user id, empty too),
//! username authentication and a wrong password, BIND in both versions, UDP ASSOCIATE, and
//! Dante's refusal of SOCKS4a.

mod client_support;

use client_support::{
    bind_round_trip, client, connect_echo, dead_addr, hop_kind, udp_round_trip, TIMEOUTS,
};
use socksmith::client::{Client, HopErrorKind, Step};
use socksmith_proto::{ReplyCode, TargetAddr, V4ReplyCode};
use socksmith_testkit::dante::{Dante, DanteOptions};
use socksmith_testkit::{within, Credentials, EchoServer, ProxyKind, UdpEchoServer, TEST_DEADLINE};

#[tokio::test]
async fn socks5_connects_to_ipv4_ipv6_and_names_resolved_on_either_side() {
    within(TEST_DEADLINE, "dante socks5", async {
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        let echo = EchoServer::start().await;
        let port = echo.addr().port();
        for kind in [ProxyKind::Socks5, ProxyKind::Socks5h] {
            let c = client(&[&dante.proxy(kind)]);
            connect_echo(&c, echo.addr()).await;
            // socks5: resolved here; socks5h: Dante resolves (to 127.0.0.1, its first address).
            connect_echo(&c, ("localhost", port)).await;
        }
        if let Some(echo6) = EchoServer::start_v6().await {
            connect_echo(&client(&[&dante.proxy(ProxyKind::Socks5)]), echo6.addr()).await;
            // The proxy itself on ::1, in brackets in the URL.
            let v6 = dante
                .addr_v6()
                .expect("Dante listens on ::1 where the host has it");
            let c =
                Client::from_url(&format!("socks5://[{}]:{}", v6.ip(), v6.port())).expect("URL");
            connect_echo(&c, echo6.addr()).await;
        }
    })
    .await;
}

#[tokio::test]
async fn socks4_connects_and_socks4a_is_refused_with_the_v4_code() {
    within(TEST_DEADLINE, "dante socks4", async {
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        let echo = EchoServer::start().await;
        let c = client(&[&dante.proxy(ProxyKind::Socks4)]);
        connect_echo(&c, echo.addr()).await;
        // A name over socks4:// is resolved here and sent as an address.
        connect_echo(&c, ("localhost", echo.addr().port())).await;
        // The URL's user is the user id, even an empty one; the password is not sent.
        for user in ["@", "alice@", "alice:secret@", "alice:@"] {
            let url = format!("socks4://{user}{}", dante.addr());
            let c = Client::from_url(&url).expect("URL");
            connect_echo(&c, echo.addr()).await;
        }

        // Dante 1.4 does not implement SOCKS4a: it rejects with 0x5B.
        let c4a = client(&[&dante.proxy(ProxyKind::Socks4a)]);
        let err = c4a
            .connect(("localhost", echo.addr().port()))
            .await
            .expect_err("Dante has no SOCKS4a");
        let (hop, kind) = hop_kind(&err);
        assert_eq!(hop, 1);
        assert!(
            matches!(
                kind,
                HopErrorKind::Rejected {
                    v4_code: Some(V4ReplyCode::Rejected),
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("(reply 0x5b)"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn a_refused_target_is_reported_with_reply_0x05() {
    within(TEST_DEADLINE, "dante refused", async {
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        let target = dead_addr();
        let err = client(&[&dante.proxy(ProxyKind::Socks5)])
            .connect(target)
            .await
            .expect_err("nothing listens there");
        assert_eq!(
            err.reply_code(),
            Some(ReplyCode::ConnectionRefused),
            "{err}"
        );
        assert_eq!(
            err.step(),
            Some(&Step::Request {
                command: socksmith_proto::Command::Connect,
                target: TargetAddr::Ip(target)
            })
        );
        let text = err.to_string();
        assert_eq!(
            text,
            format!(
                "hop 1 (socks5://{}): CONNECT {target}: connection refused (reply 0x05)",
                dante.addr()
            )
        );
    })
    .await;
}

#[tokio::test]
async fn username_auth_works_and_a_wrong_password_is_a_typed_error() {
    within(TEST_DEADLINE, "dante username", async {
        let Some(dante) = Dante::start(DanteOptions::with_username()).await else {
            return;
        };
        let creds = dante.credentials().expect("username mode").clone();
        let echo = EchoServer::start().await;
        let proxy = dante.proxy(ProxyKind::Socks5);
        connect_echo(&client(&[&proxy]), echo.addr()).await;

        let wrong = proxy
            .clone()
            .with_auth(Some(Credentials::new(&creds.user, "not-the-password")));
        let err = client(&[&wrong])
            .connect(echo.addr())
            .await
            .expect_err("wrong password");
        assert!(
            matches!(hop_kind(&err).1, HopErrorKind::AuthenticationFailed { .. }),
            "{err}"
        );
        assert_eq!(err.step(), Some(&Step::Auth));
        let text = err.to_string();
        assert!(
            !text.contains("not-the-password"),
            "password leaked: {text}"
        );
        assert!(text.contains(":***@"), "{text}");

        // Without credentials, Dante accepts no method.
        let err = client(&[&proxy.clone().with_auth(None)])
            .connect(echo.addr())
            .await
            .expect_err("credentials required");
        assert!(
            matches!(
                hop_kind(&err).1,
                HopErrorKind::NoAcceptableMethod {
                    offered_credentials: false
                }
            ),
            "{err}"
        );
        // UDP with authentication.
        let udp = UdpEchoServer::start().await;
        udp_round_trip(&client(&[&proxy]), TargetAddr::Ip(udp.addr())).await;
    })
    .await;
}

#[tokio::test]
async fn bind_accepts_a_peer_in_socks5_and_socks4() {
    within(TEST_DEADLINE, "dante bind", async {
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        for kind in [ProxyKind::Socks5, ProxyKind::Socks4] {
            let (listen, peer) = bind_round_trip(&client(&[&dante.proxy(kind)])).await;
            assert!(
                peer.ip_literal().is_some_and(|a| a.ip().is_loopback()),
                "{kind:?}: listening on {listen}, peer {peer}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn udp_associate_relays_datagrams_and_ends_with_the_control_connection() {
    within(TEST_DEADLINE, "dante udp", async {
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        let echo = UdpEchoServer::start().await;
        let c = client(&[&dante.proxy(ProxyKind::Socks5)]);
        let from = udp_round_trip(&c, TargetAddr::Ip(echo.addr())).await;
        assert_eq!(from, TargetAddr::Ip(echo.addr()));
        // A name in the datagram header, resolved by Dante.
        let from = udp_round_trip(
            &c,
            TargetAddr::domain("localhost", echo.addr().port()).expect("name"),
        )
        .await;
        assert_eq!(from.port(), echo.addr().port());
        if let (Some(echo6), Some(v6)) = (UdpEchoServer::start_v6().await, dante.addr_v6()) {
            let c6 = Client::builder()
                .proxy(socksmith::client::Proxy::new(
                    socksmith::client::Protocol::Socks5,
                    v6,
                ))
                .timeouts(TIMEOUTS)
                .build()
                .expect("client");
            let from = udp_round_trip(&c6, TargetAddr::Ip(echo6.addr())).await;
            assert_eq!(from, TargetAddr::Ip(echo6.addr()));
        }

        // Stopping the proxy closes the control connection: the association ends.
        let udp = c.udp_associate().await.expect("associate");
        assert!(!udp.is_closed());
        drop(dante);
        udp.closed().await;
        let mut buf = [0; 64];
        let err = udp.recv_from(&mut buf).await.expect_err("ended");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted);
        let err = udp.send_to(b"x", echo.addr()).await.expect_err("ended");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted);
    })
    .await;
}
