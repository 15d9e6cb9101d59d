//! `socksmith serve --proxy-protocol` behind a load balancer: a real HAProxy in front of two
//! instances (one sent v1 headers, one v2), curl through it from a second loopback address,
//! and the real client address in the decisions and log lines; health checks (v2 LOCAL)
//! answered; connections without a valid header closed without a byte.

mod serve_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serve_support::*;
use socksmith_testkit::clients::curl;
use socksmith_testkit::haproxy::{Haproxy, ProxyProtocol};
use socksmith_testkit::process::can_bind;
use socksmith_testkit::targets::HTTP_ROOT_BODY;
use socksmith_testkit::{
    peer_missing, within, EchoServer, HttpServer, Proxy, ProxyKind, TEST_DEADLINE,
};

/// The `session finished` lines of a server's log.
fn finished(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("session finished"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_in_front_of_two_instances_passes_the_real_client_address() {
    within(TEST_DEADLINE, "haproxy", async {
        let client_ip: std::net::IpAddr = "127.0.0.2".parse().expect("literal");
        if !can_bind(client_ip) {
            peer_missing::<()>("127.0.0.2 as a client address (loopback 127.0.0.0/8)");
            return;
        }
        let http = HttpServer::start().await;
        // -v: the debug line of each v2 LOCAL health check shows in the log. The HTTP target
        // is on loopback, which clients behind a balancer may reach only when allowed.
        let args = ["--proxy-protocol", "--allow-loopback-targets", "-v"];
        let v1 = serve(&args).await;
        let v2 = serve(&args).await;
        let Some(haproxy) = Haproxy::start(
            &[
                (v1.addr(), ProxyProtocol::V1),
                (v2.addr(), ProxyProtocol::V2),
            ],
            false,
        )
        .await
        else {
            return;
        };
        // HAProxy's checks send their header (v2: LOCAL), then a SOCKS5 greeting, and want
        // `05 00` back: both instances pass.
        haproxy.wait_all_checks_ok(STEP).await;
        assert!(
            v2.stderr().contains("PROXY protocol LOCAL"),
            "the v2 instance saw LOCAL health checks: {}",
            v2.stderr()
        );
        // Each check closes after the method choice: a health check, not a failed session.
        // (The connection HAProxy's start-up wait made through the balancer is a client's
        // that closed before a byte, `version=-`, and is logged as one.)
        for (name, server) in [("v1", &v1), ("v2", &v2)] {
            let log = log_with(
                server,
                "health check: the balancer closed in the handshake",
                2,
            )
            .await;
            assert!(
                !log.lines()
                    .any(|l| l.contains("handshake failed") && l.contains("SOCKS5")),
                "{name}: {log}"
            );
        }

        // curl from 127.0.0.2, round robin: each instance serves some of the requests.
        let proxy = Proxy::new(ProxyKind::Socks5h, haproxy.addr());
        for _ in 0..4 {
            let Some(out) = curl(&proxy, &http.url("/"), &["--interface", "127.0.0.2"]).await
            else {
                return;
            };
            out.assert_success();
            assert_eq!(out.stdout_str(), HTTP_ROOT_BODY);
        }
        for (name, server) in [("v1", &v1), ("v2", &v2)] {
            let log = log_with(server, "session finished", 1).await;
            let lines = finished(&log);
            assert!(!lines.is_empty(), "{name}: {log}");
            for line in lines {
                // The client is curl on 127.0.0.2, not HAProxy on 127.0.0.1.
                assert!(line.contains("client=127.0.0.2:"), "{name}: {line}");
                assert!(line.contains("outcome=ok"), "{name}: {line}");
            }
            assert!(
                !log.contains("no valid PROXY protocol header"),
                "{name}: every connection from HAProxy had a header: {log}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_rules_decide_on_the_real_client() {
    within(TEST_DEADLINE, "haproxy rules", async {
        for ip in ["127.0.0.2", "127.0.0.3"] {
            if !can_bind(ip.parse().expect("literal")) {
                peer_missing::<()>(&format!("{ip} as a client address (loopback 127.0.0.0/8)"));
                return;
            }
        }
        let http = HttpServer::start().await;
        let dir = TestDir::new("haproxy-rules");
        let config = dir.path().join("socksmith.toml");
        std::fs::write(
            &config,
            "proxy_protocol = true\nallow_loopback_targets = true\n\
             [[rules]]\nname = \"not-from-127.0.0.2\"\naction = \"deny\"\nfrom = [\"127.0.0.2/32\"]\n",
        )
        .expect("write the config");
        let config = config.to_str().expect("UTF-8 path");
        let v1 = serve(&["--config", config]).await;
        let v2 = serve(&["--config", config]).await;
        let Some(haproxy) = Haproxy::start(
            &[(v1.addr(), ProxyProtocol::V1), (v2.addr(), ProxyProtocol::V2)],
            false,
        )
        .await
        else {
            return;
        };
        haproxy.wait_all_checks_ok(STEP).await;
        let proxy = Proxy::new(ProxyKind::Socks5h, haproxy.addr());
        // Every connection reaches socksmith from HAProxy's 127.0.0.1: only the header tells
        // the two clients apart.
        for _ in 0..2 {
            let Some(out) = curl(&proxy, &http.url("/"), &["--interface", "127.0.0.2"]).await
            else {
                return;
            };
            assert!(!out.success(), "denied: {}", out.stdout_str());
            assert!(out.stderr_str().contains("(2)"), "reply 0x02: {}", out.stderr_str());
            let Some(out) = curl(&proxy, &http.url("/"), &["--interface", "127.0.0.3"]).await
            else {
                return;
            };
            out.assert_success();
            assert_eq!(out.stdout_str(), HTTP_ROOT_BODY);
        }
        let mut denied = 0;
        let mut allowed = 0;
        // Round robin: two requests each (the checks do not take turns).
        for server in [&v1, &v2] {
            let log = log_with(server, "session finished", 2).await;
            for line in finished(&log) {
                if line.contains("client=127.0.0.2:") {
                    assert!(line.contains("not-from-127.0.0.2"), "the rule is named: {line}");
                    denied += 1;
                } else {
                    assert!(line.contains("client=127.0.0.3:"), "{line}");
                    assert!(line.contains("outcome=ok"), "{line}");
                    allowed += 1;
                }
            }
        }
        assert_eq!((denied, allowed), (2, 2));
    })
    .await;
}

/// Sends `header` then a SOCKS5 CONNECT to `target`; returns the reply code.
async fn connect_with_header(proxy: SocketAddr, header: &[u8], target: SocketAddr) -> u8 {
    let mut s = connect(proxy).await;
    let mut bytes = header.to_vec();
    // Pipelined right behind the header, as a balancer forwards a fast client: none is lost.
    bytes.extend(v5_greeting_and_request(1, &v5_addr(target)));
    send(&mut s, &bytes).await;
    assert_eq!(recv(&mut s, 2).await, [5, 0]);
    let (code, _) = v5_reply(&mut s).await;
    if code == 0 {
        send(&mut s, b"through").await;
        assert_eq!(recv(&mut s, 7).await, b"through");
    }
    code
}

fn v2_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (source, destination) else {
        panic!("IPv4 addresses only in this helper");
    };
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend_from_slice(&[0x21, 0x11, 0, 12]);
    out.extend_from_slice(&s.ip().octets());
    out.extend_from_slice(&d.ip().octets());
    out.extend_from_slice(&s.port().to_be_bytes());
    out.extend_from_slice(&d.port().to_be_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_and_log_lines_use_the_address_in_the_header() {
    within(TEST_DEADLINE, "header address", async {
        let echo = EchoServer::start().await;
        let remote: SocketAddr = "192.0.2.7:51000".parse().expect("literal");
        let local: SocketAddr = "127.0.0.2:51001".parse().expect("literal");
        let v1 = |from: SocketAddr, to: SocketAddr| {
            format!(
                "PROXY TCP4 {} {} {} {}\r\n",
                from.ip(),
                to.ip(),
                from.port(),
                to.port()
            )
            .into_bytes()
        };
        // Behind a balancer, a loopback listener says nothing about where clients are: this
        // host's loopback is refused to all of them (0x02), whatever the header says...
        let guarded = serve(&["--proxy-protocol"]).await;
        for from in [remote, local] {
            let header = v1(from, guarded.addr());
            assert_eq!(
                connect_with_header(guarded.addr(), &header, echo.addr()).await,
                2
            );
            let header = v2_header(from, guarded.addr());
            assert_eq!(
                connect_with_header(guarded.addr(), &header, echo.addr()).await,
                2
            );
        }
        // ...unless allowed. Either way the decision's session and the log line carry the
        // header's client, never the connection's own peer (the test, on 127.0.0.1).
        let open = serve(&["--proxy-protocol", "--allow-loopback-targets"]).await;
        for from in [remote, local] {
            let header = v1(from, open.addr());
            assert_eq!(
                connect_with_header(open.addr(), &header, echo.addr()).await,
                0
            );
            let header = v2_header(from, open.addr());
            assert_eq!(
                connect_with_header(open.addr(), &header, echo.addr()).await,
                0
            );
        }
        for server in [&guarded, &open] {
            let log = log_with(server, "session finished", 4).await;
            let lines = finished(&log);
            for client in ["client=192.0.2.7:51000", "client=127.0.0.2:51001"] {
                assert_eq!(
                    lines.iter().filter(|l| l.contains(client)).count(),
                    2,
                    "{client}: {log}"
                );
            }
            assert!(
                !lines.iter().any(|l| l.contains("client=127.0.0.1:")),
                "never the connection's own peer: {log}"
            );
        }
        let denied = log_with(&guarded, "session finished", 4).await;
        assert!(
            finished(&denied)
                .iter()
                .all(|l| l.contains("denied by policy")),
            "{denied}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_valid_header_gets_no_byte_and_is_logged() {
    within(TEST_DEADLINE, "no header", async {
        let echo = EchoServer::start().await;
        let server = serve(&["--proxy-protocol", "--handshake-timeout", "500ms"]).await;
        let attempts: [(&str, Vec<u8>); 4] = [
            (
                "SOCKS5 straight",
                v5_greeting_and_request(1, &v5_addr(echo.addr())),
            ),
            ("SOCKS4 straight", v4_request(1, echo.addr(), "")),
            (
                "bad v1",
                b"PROXY TCP4 1.2.3.4 nonsense\r\n\x05\x01\x00".to_vec(),
            ),
            ("bad v2", b"\r\n\r\n\0\r\nQUIT\n\x21\x51\x00\x0c".to_vec()),
        ];
        for (what, bytes) in &attempts {
            let mut s = connect(server.addr()).await;
            send(&mut s, bytes).await;
            assert!(
                recv_to_end(&mut s).await.is_empty(),
                "{what}: no reply byte"
            );
        }
        // Silence: closed at the handshake deadline, still without a byte.
        let mut silent = connect(server.addr()).await;
        let start = Instant::now();
        assert!(recv_to_end(&mut silent).await.is_empty());
        assert!(
            start.elapsed() >= Duration::from_millis(400),
            "{:?}",
            start.elapsed()
        );
        let log = log_with(&server, "no valid PROXY protocol header", 5).await;
        assert!(log.contains("starts with byte 0x05"), "{log}");
        assert!(log.contains("starts with byte 0x04"), "{log}");
        assert!(log.contains("malformed PROXY protocol v1 header"), "{log}");
        assert!(log.contains("malformed PROXY protocol v2 header"), "{log}");
        assert!(
            log.contains("no complete PROXY protocol header within 500ms"),
            "{log}"
        );
        // A header late in the window leaves the SOCKS handshake only what is left of it.
        let mut late = connect(server.addr()).await;
        let start = Instant::now();
        tokio::time::sleep(Duration::from_millis(450)).await;
        send(
            &mut late,
            b"PROXY TCP4 192.0.2.9 127.0.0.1 40000 1080\r\n\x05",
        )
        .await;
        assert!(recv_to_end(&mut late).await.is_empty());
        assert!(
            start.elapsed() < Duration::from_millis(800),
            "one deadline from the accept (500 ms), not one per stage: {:?}",
            start.elapsed()
        );
        // No target was reached by any of them.
        assert!(finished(&log).is_empty(), "{log}");
        assert!(
            echo.peers().is_empty(),
            "the echo target saw {:?}",
            echo.peers()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_check_that_sends_its_header_and_closes_is_no_failed_session() {
    within(TEST_DEADLINE, "plain health checks", async {
        // -v: a failed handshake would show as a debug line.
        let server = serve(&["--proxy-protocol", "-v"]).await;
        // HAProxy's `check check-send-proxy`: v2 LOCAL (no addresses), or v1 UNKNOWN.
        let v2_local: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
        let v1_unknown: &[u8] = b"PROXY UNKNOWN\r\n";
        for header in [v2_local, v1_unknown] {
            let mut s = connect(server.addr()).await;
            send(&mut s, header).await;
            drop(s);
        }
        let log = log_with(&server, "health check: a header, then closed", 2).await;
        assert!(!log.contains("handshake failed"), "{log}");
        // A check that goes on to speak SOCKS is served as before, and its close in the
        // handshake is no failed session either (HAProxy's `tcp-check send-binary 050100`).
        for header in [v2_local, v1_unknown] {
            let mut s = connect(server.addr()).await;
            send(&mut s, &[header, &[5, 1, 0]].concat()).await;
            assert_eq!(recv(&mut s, 2).await, [5, 0]);
        }
        let log = log_with(
            &server,
            "health check: the balancer closed in the handshake",
            2,
        )
        .await;
        assert!(!log.contains("handshake failed"), "{log}");
        // A client's connection that does the same is a handshake that failed.
        let mut s = connect(server.addr()).await;
        send(
            &mut s,
            b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 1080\r\n\x05\x01\x00",
        )
        .await;
        assert_eq!(recv(&mut s, 2).await, [5, 0]);
        drop(s);
        let log = log_with(&server, "handshake failed", 1).await;
        assert!(log.contains("client=192.0.2.7:40000"), "{log}");
    })
    .await;
}
