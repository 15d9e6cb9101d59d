//! `Client::from_env`: the proxy from `all_proxy`/`ALL_PROXY` (lower case first, blank as
//! unset), the bypass list from `no_proxy`/`NO_PROXY`, and a direct connection for a target the
//! list matches while others go through the proxy (tinyproxy, whose log tells them apart).
//!
//! The environment is process-wide, so this binary holds one test that changes it.

use socksmith::client::{parse_target, Client, ClientError, Protocol};
use socksmith_testkit::tinyproxy::{Tinyproxy, TinyproxyOptions};
use socksmith_testkit::{pattern, within, EchoServer, TEST_DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VARIABLES: [&str; 4] = ["all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"];

fn set(pairs: &[(&str, &str)]) {
    for name in VARIABLES {
        std::env::remove_var(name);
    }
    for (name, value) in pairs {
        std::env::set_var(name, value);
    }
}

#[tokio::test]
async fn from_env_reads_all_proxy_and_no_proxy_as_curl() {
    within(TEST_DEADLINE, "from_env", async {
        set(&[]);
        assert!(matches!(Client::from_env(), Err(ClientError::NoProxy)));
        set(&[("ALL_PROXY", "  ")]);
        assert!(matches!(Client::from_env(), Err(ClientError::NoProxy)));
        set(&[("ALL_PROXY", "ftp://x")]);
        assert!(matches!(Client::from_env(), Err(ClientError::Url(_))));
        // Lower case wins, as in curl.
        set(&[
            ("all_proxy", "socks5h://127.0.0.1:1081"),
            ("ALL_PROXY", "socks4://127.0.0.1:1082"),
        ]);
        let c = Client::from_env().expect("all_proxy");
        assert_eq!(c.hops()[0].protocol(), Protocol::Socks5h);
        assert_eq!(c.hops()[0].port(), 1081);
        assert!(c.no_proxy().is_empty());

        let Some(tp) = Tinyproxy::start(TinyproxyOptions::default()).await else {
            return;
        };
        let echo = EchoServer::start().await;
        set(&[
            ("ALL_PROXY", &tp.url()),
            ("NO_PROXY", "example.invalid, localhost"),
        ]);
        let c = Client::from_env().expect("ALL_PROXY and NO_PROXY");
        assert_eq!(c.hops()[0].protocol(), Protocol::Http);
        set(&[]);
        let by_name = parse_target(&format!("localhost:{}", echo.addr().port())).expect("target");
        let by_ip = parse_target(&echo.addr().to_string()).expect("target");
        assert!(c.bypasses(&by_name));
        assert!(!c.bypasses(&by_ip));
        for target in [by_name, by_ip] {
            let mut stream = c.connect(target.clone()).await.expect("connect");
            let data = pattern(1000);
            stream.write_all(&data).await.expect("write");
            let mut back = vec![0; data.len()];
            stream.read_exact(&mut back).await.expect("echo");
            assert!(back == data, "{target}");
        }
        let log = tp.log();
        assert!(log.contains(&format!("CONNECT {}", echo.addr())), "{log}");
        assert!(
            !log.contains("CONNECT localhost"),
            "NO_PROXY's target went through the proxy:\n{log}"
        );
        // A bypassed target that refuses is a direct error, not a hop's.
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        let c = Client::builder()
            .proxy(tp.url().parse().expect("url"))
            .no_proxy(socksmith::client::NoProxy::parse("127.0.0.0/8"))
            .build()
            .expect("client");
        let err = c.connect(dead).await.expect_err("refused");
        assert!(matches!(err, ClientError::Direct { .. }), "{err}");
        assert!(err.to_string().contains("NO_PROXY"), "{err}");
    })
    .await;
}
