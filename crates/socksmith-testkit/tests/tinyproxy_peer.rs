//! The testkit's own tests of tinyproxy, driven with hand-written HTTP bytes (no socksmith
//! code): what the `tinyproxy` module's docs say it does. CONNECT to IPv4, IPv6 and name
//! targets on any port, Basic auth (407 without credentials, 401 with wrong ones), 403 for
//! targets its loopback-only filter refuses and for ports outside `ConnectPort`, 500 for a
//! refused target, and no half-close.

use std::net::SocketAddr;

use socksmith_testkit::tinyproxy::{Tinyproxy, TinyproxyOptions};
use socksmith_testkit::{pattern, raw, within, EchoServer, TEST_DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `Basic` credentials for [`socksmith_testkit::tinyproxy::TINYPROXY_USER`] and
/// [`socksmith_testkit::tinyproxy::TINYPROXY_PASSWORD`]: Base64 of `tp-user:tp.pass_1`.
const RIGHT_CREDENTIALS: &str = "Basic dHAtdXNlcjp0cC5wYXNzXzE=";
/// Base64 of `tp-user:wrong`.
const WRONG_CREDENTIALS: &str = "Basic dHAtdXNlcjp3cm9uZw==";

/// Sends `CONNECT authority` (with `Proxy-Authorization: authorization` if given) and reads
/// the response head; returns the stream and the status line.
async fn connect(
    proxy: SocketAddr,
    authority: &str,
    authorization: Option<&str>,
) -> (TcpStream, String) {
    let mut s = TcpStream::connect(proxy)
        .await
        .expect("connect to tinyproxy");
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(value) = authorization {
        request.push_str(&format!("Proxy-Authorization: {value}\r\n"));
    }
    request.push_str("\r\n");
    s.write_all(request.as_bytes()).await.expect("send CONNECT");
    // One byte at a time up to the empty line, so nothing of the tunnel is read here.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if s.read(&mut byte).await.expect("read the answer") == 0 {
            break;
        }
        head.push(byte[0]);
        assert!(head.len() < 64 * 1024, "an endless head");
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.lines().next().unwrap_or_default().to_owned();
    (s, status)
}

async fn connect_echo(proxy: SocketAddr, authority: &str, authorization: Option<&str>) {
    let (tunnel, status) = connect(proxy, authority, authorization).await;
    assert_eq!(status, "HTTP/1.0 200 Connection established", "{authority}");
    let data = pattern(100 * 1024);
    let back = raw::echo_exact(tunnel, &data).await.expect("echo");
    assert!(
        back == data,
        "echo via tinyproxy to {authority} came back different"
    );
}

#[tokio::test]
async fn tinyproxy_connects_to_ipv4_ipv6_and_name_targets_on_any_port() {
    within(TEST_DEADLINE, "tinyproxy connect", async {
        let Some(tp) = Tinyproxy::start(TinyproxyOptions::default()).await else {
            return;
        };
        let echo = EchoServer::start().await;
        connect_echo(tp.addr(), &echo.addr().to_string(), None).await;
        connect_echo(
            tp.addr(),
            &format!("localhost:{}", echo.addr().port()),
            None,
        )
        .await;
        if let Some(echo6) = EchoServer::start_v6().await {
            connect_echo(tp.addr(), &echo6.addr().to_string(), None).await;
        }
    })
    .await;
}

#[tokio::test]
async fn tinyproxy_basic_auth_answers_407_then_401_then_200() {
    within(TEST_DEADLINE, "tinyproxy auth", async {
        let Some(tp) = Tinyproxy::start(TinyproxyOptions::with_auth()).await else {
            return;
        };
        let echo_server = EchoServer::start().await;
        let echo = echo_server.addr().to_string();
        let (mut s, status) = connect(tp.addr(), &echo, None).await;
        assert_eq!(status, "HTTP/1.0 407 Proxy Authentication Required");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        let (_, status) = connect(tp.addr(), &echo, Some(WRONG_CREDENTIALS)).await;
        assert_eq!(status, "HTTP/1.0 401 Unauthorized");
        connect_echo(tp.addr(), &echo, Some(RIGHT_CREDENTIALS)).await;
    })
    .await;
}

#[tokio::test]
async fn tinyproxy_refuses_outside_targets_other_ports_and_dead_ones() {
    within(TEST_DEADLINE, "tinyproxy refusals", async {
        let (Some(tp), Some(only_443)) = (
            Tinyproxy::start(TinyproxyOptions::default()).await,
            Tinyproxy::start(TinyproxyOptions {
                connect_ports: vec![443],
                ..TinyproxyOptions::default()
            })
            .await,
        ) else {
            return;
        };
        // The filter admits loopback only: anything else is refused before any lookup.
        let (_, status) = connect(tp.addr(), "example.invalid:80", None).await;
        assert_eq!(status, "HTTP/1.1 403 Filtered");
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let (_, status) = connect(tp.addr(), &dead.to_string(), None).await;
        assert_eq!(status, "HTTP/1.1 500 Unable to connect");
        let echo = EchoServer::start().await;
        let (_, status) = connect(only_443.addr(), &echo.addr().to_string(), None).await;
        assert!(
            status.starts_with("HTTP/1.") && status.contains(" 403 "),
            "{status}"
        );
    })
    .await;
}

#[tokio::test]
async fn tinyproxy_closes_both_directions_at_the_first_eof() {
    within(TEST_DEADLINE, "tinyproxy half-close", async {
        let Some(tp) = Tinyproxy::start(TinyproxyOptions::default()).await else {
            return;
        };
        let echo = EchoServer::start().await;
        let (mut tunnel, status) = connect(tp.addr(), &echo.addr().to_string(), None).await;
        assert_eq!(status, "HTTP/1.0 200 Connection established");
        tunnel.write_all(b"late").await.expect("write");
        tunnel.shutdown().await.expect("half-close");
        let mut back = Vec::new();
        let _ = tunnel.read_to_end(&mut back).await;
        // The echo of "late" may or may not make it before tinyproxy closes; what matters is
        // that the connection ends instead of staying open for the other direction.
        assert!(back.len() <= 4, "{back:?}");
    })
    .await;
}
