//! The client library against OpenSSH's `ssh -D` (through a throwaway loopback sshd started by
//! the testkit): SOCKS4, SOCKS4a, SOCKS5 and SOCKS5h CONNECT, and the closed connection it
//! answers BIND, UDP ASSOCIATE and failed connects with.

mod client_support;

use client_support::{client, connect_echo, dead_addr, hop_kind};
use socksmith::client::HopErrorKind;
use socksmith_testkit::ssh::SshDynamic;
use socksmith_testkit::{within, EchoServer, ProxyKind, TEST_DEADLINE};

#[tokio::test]
async fn every_version_connects_to_ipv4_ipv6_and_names() {
    within(TEST_DEADLINE, "ssh -D connect", async {
        let Some(ssh) = SshDynamic::start().await else {
            return;
        };
        let echo = EchoServer::start().await;
        let port = echo.addr().port();
        for kind in [
            ProxyKind::Socks4,
            ProxyKind::Socks4a,
            ProxyKind::Socks5,
            ProxyKind::Socks5h,
        ] {
            let c = client(&[&ssh.proxy(kind)]);
            connect_echo(&c, echo.addr()).await;
            connect_echo(&c, ("localhost", port)).await;
        }
        if let Some(echo6) = EchoServer::start_v6().await {
            connect_echo(&client(&[&ssh.proxy(ProxyKind::Socks5)]), echo6.addr()).await;
        }
    })
    .await;
}

#[tokio::test]
async fn bind_udp_and_failed_connects_end_in_a_closed_connection() {
    within(TEST_DEADLINE, "ssh -D unsupported", async {
        let Some(ssh) = SshDynamic::start().await else {
            return;
        };
        let c = client(&[&ssh.proxy(ProxyKind::Socks5)]);
        let closed = |err: &socksmith::client::ClientError| {
            assert!(
                matches!(hop_kind(err).1, HopErrorKind::Closed | HopErrorKind::Io(_)),
                "{err}"
            );
        };
        closed(&c.bind("127.0.0.1:0").await.expect_err("no BIND"));
        closed(&c.udp_associate().await.expect_err("no UDP"));
        closed(&c.connect(dead_addr()).await.expect_err("refused"));
    })
    .await;
}
