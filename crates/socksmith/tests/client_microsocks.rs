//! The client library against microsocks (1.0.3), started on loopback by the testkit: SOCKS5
//! CONNECT to IPv4, IPv6 and name targets, with and without `-u/-P`, a wrong password, a proxy
//! on ::1, and the typed errors for what microsocks does not do (SOCKS4, BIND, UDP).

mod client_support;

use std::net::{IpAddr, Ipv6Addr};

use client_support::{client, connect_echo, hop_kind};
use socksmith::client::{HopErrorKind, Step};
use socksmith_proto::{Command, ReplyCode};
use socksmith_testkit::microsocks::{Microsocks, MicrosocksOptions};
use socksmith_testkit::{within, Credentials, EchoServer, ProxyKind, TEST_DEADLINE};

#[tokio::test]
async fn socks5_connects_to_ipv4_ipv6_and_name_targets() {
    within(TEST_DEADLINE, "microsocks connect", async {
        let Some(ms) = Microsocks::start(MicrosocksOptions::default()).await else {
            return;
        };
        let echo = EchoServer::start().await;
        for kind in [ProxyKind::Socks5, ProxyKind::Socks5h] {
            let c = client(&[&ms.proxy(kind)]);
            connect_echo(&c, echo.addr()).await;
            connect_echo(&c, ("localhost", echo.addr().port())).await;
        }
        if let Some(echo6) = EchoServer::start_v6().await {
            connect_echo(&client(&[&ms.proxy(ProxyKind::Socks5)]), echo6.addr()).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_proxy_on_ipv6_loopback_is_reached_by_bracketed_url() {
    within(TEST_DEADLINE, "microsocks on ::1", async {
        if !socksmith_testkit::process::can_bind(IpAddr::V6(Ipv6Addr::LOCALHOST)) {
            return socksmith_testkit::peer_missing::<()>("IPv6 loopback").unwrap_or(());
        }
        let Some(ms) = Microsocks::start(MicrosocksOptions {
            listen: IpAddr::V6(Ipv6Addr::LOCALHOST),
            ..MicrosocksOptions::default()
        })
        .await
        else {
            return;
        };
        let proxy = ms.proxy(ProxyKind::Socks5h);
        assert!(proxy.url().contains("[::1]"), "{}", proxy.url());
        let echo = EchoServer::start().await;
        connect_echo(&client(&[&proxy]), echo.addr()).await;
    })
    .await;
}

#[tokio::test]
async fn credentials_are_required_checked_and_never_printed() {
    within(TEST_DEADLINE, "microsocks auth", async {
        let Some(ms) = Microsocks::start(MicrosocksOptions::with_auth()).await else {
            return;
        };
        let echo = EchoServer::start().await;
        let proxy = ms.proxy(ProxyKind::Socks5h);
        connect_echo(&client(&[&proxy]), echo.addr()).await;

        let creds = ms.credentials().expect("with auth");
        let wrong = proxy
            .clone()
            .with_auth(Some(Credentials::new(&creds.user, "wrong-pw")));
        let err = client(&[&wrong])
            .connect(echo.addr())
            .await
            .expect_err("wrong password");
        assert!(
            matches!(hop_kind(&err).1, HopErrorKind::AuthenticationFailed { .. }),
            "{err}"
        );
        assert!(!err.to_string().contains("wrong-pw"), "{err}");

        let err = client(&[&proxy.clone().with_auth(None)])
            .connect(echo.addr())
            .await
            .expect_err("no credentials");
        assert!(
            matches!(hop_kind(&err).1, HopErrorKind::NoAcceptableMethod { .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("it may require a username and password"),
            "{err}"
        );
    })
    .await;
}

#[tokio::test]
async fn refused_bind_and_udp_get_reply_codes_and_socks4_a_protocol_error() {
    within(TEST_DEADLINE, "microsocks unsupported", async {
        let Some(ms) = Microsocks::start(MicrosocksOptions::default()).await else {
            return;
        };
        let c = client(&[&ms.proxy(ProxyKind::Socks5)]);
        let err = c.bind("127.0.0.1:0").await.expect_err("no BIND");
        assert_eq!(
            err.reply_code(),
            Some(ReplyCode::CommandNotSupported),
            "{err}"
        );
        assert!(err.to_string().contains("(reply 0x07)"), "{err}");
        let err = c.udp_associate().await.expect_err("no UDP");
        assert_eq!(
            err.reply_code(),
            Some(ReplyCode::CommandNotSupported),
            "{err}"
        );
        assert!(matches!(
            err.step(),
            Some(Step::Request {
                command: Command::UdpAssociate,
                ..
            })
        ));

        let dead = client_support::dead_addr();
        let err = c.connect(dead).await.expect_err("refused");
        assert_eq!(
            err.reply_code(),
            Some(ReplyCode::ConnectionRefused),
            "{err}"
        );

        let echo = EchoServer::start().await;
        let err = client(&[&ms.proxy(ProxyKind::Socks4)])
            .connect(echo.addr())
            .await
            .expect_err("no SOCKS4");
        // microsocks answers a SOCKS4 request in SOCKS5 (VER 0x05) and closes.
        assert!(
            matches!(hop_kind(&err).1, HopErrorKind::Protocol(_)),
            "{err}"
        );
        assert!(
            err.to_string()
                .ends_with("version byte 0x05, expected 0x00"),
            "{err}"
        );
    })
    .await;
}
