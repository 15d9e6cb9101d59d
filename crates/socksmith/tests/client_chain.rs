//! Chains of real proxies: each hop reached through the previous one, in any mix of versions,
//! and errors that name the hop that failed.

mod client_support;

use client_support::{bind_round_trip, client, connect_echo, dead_addr, hop_kind, udp_round_trip};
use socksmith::client::{HopErrorKind, Step};
use socksmith_proto::{ReplyCode, TargetAddr};
use socksmith_testkit::dante::{Dante, DanteOptions};
use socksmith_testkit::microsocks::{dante_and_microsocks, Microsocks, MicrosocksOptions};
use socksmith_testkit::ssh::SshDynamic;
use socksmith_testkit::{within, EchoServer, ProxyKind, UdpEchoServer, TEST_DEADLINE};

#[tokio::test]
async fn two_hops_through_two_different_servers_in_both_orders() {
    within(TEST_DEADLINE, "two-hop chain", async {
        let Some((dante, ms)) =
            dante_and_microsocks(DanteOptions::default(), MicrosocksOptions::with_auth()).await
        else {
            return;
        };
        let echo = EchoServer::start().await;
        let port = echo.addr().port();
        // microsocks (SOCKS5 with a password) then Dante (SOCKS4).
        let c = client(&[
            &ms.proxy(ProxyKind::Socks5),
            &dante.proxy(ProxyKind::Socks4),
        ]);
        connect_echo(&c, echo.addr()).await;
        connect_echo(&c, ("localhost", port)).await;
        // Dante (SOCKS5, names resolved here) then microsocks (SOCKS5h).
        let c = client(&[
            &dante.proxy(ProxyKind::Socks5),
            &ms.proxy(ProxyKind::Socks5h),
        ]);
        connect_echo(&c, echo.addr()).await;
        connect_echo(&c, ("localhost", port)).await;
        if let Some(echo6) = EchoServer::start_v6().await {
            connect_echo(&c, echo6.addr()).await;
        }
    })
    .await;
}

#[tokio::test]
async fn three_hops_with_ssh_and_bind_and_udp_at_the_last_hop() {
    within(TEST_DEADLINE, "three-hop chain", async {
        let (Some(dante), Some(ms), Some(ssh)) = (
            Dante::start(DanteOptions::default()).await,
            Microsocks::start(MicrosocksOptions::default()).await,
            SshDynamic::start().await,
        ) else {
            return;
        };
        let echo = EchoServer::start().await;
        let c = client(&[
            &ssh.proxy(ProxyKind::Socks4a),
            &ms.proxy(ProxyKind::Socks5),
            &dante.proxy(ProxyKind::Socks5h),
        ]);
        connect_echo(&c, ("localhost", echo.addr().port())).await;
        // BIND and UDP ASSOCIATE at Dante, the last hop; the control connection goes through
        // the first two.
        bind_round_trip(&c).await;
        let udp = UdpEchoServer::start().await;
        let from = udp_round_trip(&c, TargetAddr::Ip(udp.addr())).await;
        assert_eq!(from, TargetAddr::Ip(udp.addr()));
    })
    .await;
}

#[tokio::test]
async fn a_failure_at_hop_two_names_hop_two() {
    within(TEST_DEADLINE, "chain errors", async {
        let Some((dante, ms)) =
            dante_and_microsocks(DanteOptions::default(), MicrosocksOptions::default()).await
        else {
            return;
        };
        let target = dead_addr();
        let c = client(&[
            &ms.proxy(ProxyKind::Socks5),
            &dante.proxy(ProxyKind::Socks5),
        ]);
        let err = c.connect(target).await.expect_err("refused");
        assert_eq!(err.hop(), Some(2), "{err}");
        assert_eq!(err.reply_code(), Some(ReplyCode::ConnectionRefused));
        // A server chaining through this client passes the target's refusal on.
        assert_eq!(c.downstream_reply(&err), ReplyCode::ConnectionRefused);
        assert_eq!(
            err.to_string(),
            format!(
                "hop 2 (socks5://{}): CONNECT {target}: connection refused (reply 0x05)",
                dante.addr()
            )
        );

        // Hop 2 does not exist: hop 1 reports that it cannot reach it.
        let missing = dead_addr();
        let c = client(&[
            &ms.proxy(ProxyKind::Socks5),
            &socksmith_testkit::Proxy::new(ProxyKind::Socks5, missing),
        ]);
        let err = c.connect(target).await.expect_err("no hop 2");
        let (hop, kind) = hop_kind(&err);
        assert_eq!(hop, 1, "{err}");
        assert!(matches!(kind, HopErrorKind::Rejected { .. }), "{err}");
        // The chain itself is broken: not the target's fault.
        assert_eq!(c.downstream_reply(&err), ReplyCode::GeneralFailure);
        assert_eq!(
            err.step(),
            Some(&Step::Request {
                command: socksmith_proto::Command::Connect,
                target: TargetAddr::Ip(missing)
            })
        );
    })
    .await;
}
