//! Blocklists in the server, end to end on loopback: names in requests, names sniffed from the
//! first bytes of a CONNECT that carried only an address (HTTP `Host`, a TLS ClientHello's SNI
//! split over many segments), DNS queries through UDP ASSOCIATE, and what must not change
//! (allowed traffic byte for byte, a server-first protocol delayed at most the sniff window).
//! Also `allow_from` and `require_hostname`.

mod server_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use server_support::{udp_associate, v5_request, Running, STEP};
use socksmith::policy::blocklist::{BlocklistConfig, BlocklistSet, ListSource};
use socksmith::policy::{ClientFilter, IpNet};
use socksmith::resolve::StaticResolver;
use socksmith::server::ServerConfig;
use socksmith_testkit::raw::{socks5_greeting, socks5_request, udp_unwrap, udp_wrap, CMD_CONNECT};
use socksmith_testkit::{within, EchoServer, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const LIST: &str = "# ads\n0.0.0.0 ads.example.com\n||tracker.test^\n*.Blocked.Test\n";

/// A server with `LIST` loaded (as a file) and names of the test resolved to loopback.
async fn blocking_server(tweak: impl FnOnce(&mut ServerConfig)) -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ads.hosts");
    std::fs::write(&path, LIST).expect("write the list");
    let set = BlocklistSet::open(BlocklistConfig::new(vec![ListSource::parse(
        path.to_str().expect("utf-8 path"),
    )]))
    .expect("the list loads");
    let loopback = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let mut config = ServerConfig::default();
    config.blocklist = Some(Arc::new(set));
    config.resolver = Arc::new(
        StaticResolver::new()
            .with_host("ads.example.com", loopback)
            .with_host("x.ads.example.com", loopback)
            .with_host("notads.example.com", loopback),
    );
    tweak(&mut config);
    (Running::start(config).await, dir)
}

/// Greets and CONNECTs to `target`; the stream and the reply code.
async fn connect(proxy: SocketAddr, target: &Target) -> (TcpStream, u8) {
    let mut s = TcpStream::connect(proxy).await.expect("connect");
    assert_eq!(socks5_greeting(&mut s, &[0]).await.expect("greeting"), 0);
    let reply = socks5_request(&mut s, CMD_CONNECT, target)
        .await
        .expect("reply");
    (s, reply.code)
}

#[tokio::test]
async fn listed_names_and_their_subdomains_are_refused_without_contacting_the_target() {
    within(STEP, "names", async {
        let echo = EchoServer::start().await;
        let (server, _dir) = blocking_server(|_| {}).await;
        let port = echo.addr().port();
        for blocked in [
            "ads.example.com",
            "x.ads.example.com",
            "ADS.Example.COM.",
            "tracker.test",
            "a.b.blocked.test",
        ] {
            let (_s, code) = connect(server.addr, &Target::Domain(blocked.into(), port)).await;
            assert_eq!(code, 0x02, "{blocked}");
        }
        let (mut s, code) = connect(
            server.addr,
            &Target::Domain("notads.example.com".into(), port),
        )
        .await;
        assert_eq!(code, 0, "a label boundary, not a substring");
        s.write_all(b"ok").await.expect("send");
        let mut back = [0u8; 2];
        s.read_exact(&mut back).await.expect("echo");
        assert_eq!(
            echo.accepted(),
            1,
            "only the allowed name reached the target"
        );
    })
    .await;
}

#[tokio::test]
async fn an_http_host_sniffed_behind_an_address_is_refused_before_any_byte_reaches_the_target() {
    within(STEP, "http sniff", async {
        let target = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target_addr = target.local_addr().expect("addr");
        let (server, _dir) = blocking_server(|_| {}).await;

        let (mut s, code) = connect(server.addr, &Target::Ip(target_addr)).await;
        assert_eq!(code, 0, "an address passes the request check");
        let (mut accepted, _) = target.accept().await.expect("the server dialed");
        s.write_all(b"GET / HTTP/1.1\r\nHost: ads.example.com\r\n\r\n")
            .await
            .expect("send");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.expect("closed");
        assert!(rest.is_empty());
        let mut got = Vec::new();
        accepted
            .read_to_end(&mut got)
            .await
            .expect("target side closed");
        assert!(got.is_empty(), "not one byte reached the target");
        server.stats_when(|s| s.policy_denied == 1).await;
    })
    .await;
}

/// A TLS 1.3 ClientHello (Python's ssl module) naming ads.example.com.
fn client_hello_for_listed_name() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../socksmith-proto/tests/vectors/python-ssl-sni-ads.example.com.bin"
    );
    std::fs::read(path).expect("the captured ClientHello")
}

#[tokio::test]
async fn a_client_hello_split_over_many_segments_is_reassembled_and_refused() {
    within(STEP, "tls sniff", async {
        let echo = EchoServer::start().await;
        // A window wide enough for ~80 segments on a loaded machine: this is about
        // reassembly, not about the window.
        let (server, _dir) = blocking_server(|c| c.sniff_timeout = Duration::from_secs(5)).await;
        let (mut s, code) = connect(server.addr, &Target::Ip(echo.addr())).await;
        assert_eq!(code, 0);
        s.set_nodelay(true).expect("nodelay");
        for chunk in client_hello_for_listed_name().chunks(7) {
            s.write_all(chunk).await.expect("send");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "the echo never saw the ClientHello");
        server.stats_when(|s| s.policy_denied == 1).await;
    })
    .await;
}

#[tokio::test]
async fn allowed_traffic_behind_an_address_flows_byte_for_byte() {
    within(STEP, "allowed", async {
        let echo = EchoServer::start().await;
        let (server, _dir) = blocking_server(|_| {}).await;
        let (mut s, code) = connect(server.addr, &Target::Ip(echo.addr())).await;
        assert_eq!(code, 0);
        let mut data = b"GET / HTTP/1.1\r\nHost: fine.example\r\n\r\n".to_vec();
        data.extend(socksmith_testkit::pattern(300_000));
        s.write_all(&data).await.expect("send");
        let mut back = vec![0u8; data.len()];
        s.read_exact(&mut back).await.expect("echo");
        assert!(back == data);
    })
    .await;
}

#[tokio::test]
async fn a_server_first_protocol_waits_at_most_the_sniff_window() {
    within(STEP, "server first", async {
        let banner_server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = banner_server.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = banner_server.accept().await.expect("accept");
            s.write_all(b"SSH-2.0-test\r\n").await.expect("banner");
            let mut buf = [0u8; 16];
            let _ = s.read(&mut buf).await;
        });
        let (server, _dir) =
            blocking_server(|c| c.sniff_timeout = Duration::from_millis(200)).await;
        let (mut s, code) = connect(server.addr, &Target::Ip(addr)).await;
        assert_eq!(code, 0);
        let started = tokio::time::Instant::now();
        let mut banner = [0u8; 14];
        s.read_exact(&mut banner).await.expect("the banner arrives");
        assert_eq!(&banner, b"SSH-2.0-test\r\n");
        // The lower bound is the window (the upper one is the test's own deadline).
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "{:?}",
            started.elapsed()
        );
    })
    .await;
}

#[tokio::test]
async fn a_first_segment_of_a_few_bytes_that_could_start_a_request_is_not_waited_for() {
    within(STEP, "short start", async {
        let echo = EchoServer::start().await;
        // A window far longer than the test's own deadline: waiting it out fails the test.
        let (server, _dir) = blocking_server(|c| c.sniff_timeout = Duration::from_secs(600)).await;
        // `G` could start `GET `, 0x16 0x03 a TLS record: alone, neither is waited for.
        for start in [&b"G"[..], b"CONN", &[0x16, 0x03, 0x01]] {
            let (mut s, code) = connect(server.addr, &Target::Ip(echo.addr())).await;
            assert_eq!(code, 0);
            s.set_nodelay(true).expect("nodelay");
            s.write_all(start).await.expect("send");
            let mut back = vec![0u8; start.len()];
            s.read_exact(&mut back).await.expect("relayed at once");
            assert_eq!(back, start);
        }
    })
    .await;
}

#[tokio::test]
async fn without_sniffing_an_address_target_is_relayed_at_once() {
    within(STEP, "no sniff", async {
        let echo = EchoServer::start().await;
        let (server, _dir) = blocking_server(|c| c.sniff = false).await;
        let (mut s, code) = connect(server.addr, &Target::Ip(echo.addr())).await;
        assert_eq!(code, 0);
        s.write_all(b"GET / HTTP/1.1\r\nHost: ads.example.com\r\n\r\n")
            .await
            .expect("send");
        let mut back = [0u8; 16];
        s.read_exact(&mut back)
            .await
            .expect("relayed: sniffing is off");
    })
    .await;
}

/// A DNS query for `name`, type A, id 0x4242.
fn dns_query(name: &str) -> Vec<u8> {
    let mut q = vec![0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(u8::try_from(label.len()).expect("short label"));
        q.extend(label.as_bytes());
    }
    q.extend([0, 0, 1, 0, 1]);
    q
}

#[tokio::test]
async fn dns_queries_for_listed_names_are_answered_nxdomain_and_never_forwarded() {
    within(STEP, "dns", async {
        // Where allowed datagrams go (any port: only port 53 is read as DNS).
        let resolver = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let resolver_addr = resolver.local_addr().expect("addr");
        let (server, _dir) = blocking_server(|_| {}).await;
        let (control, relay) = udp_associate(server.addr).await;
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");

        let dns = Target::Ip("127.0.0.1:53".parse().expect("literal"));
        let query = dns_query("x.ads.example.com");
        client
            .send_to(&udp_wrap(&dns, &query), relay)
            .await
            .expect("send");
        let mut buf = [0u8; 2048];
        let (n, _) = tokio::time::timeout(STEP, client.recv_from(&mut buf))
            .await
            .expect("an answer")
            .expect("recv");
        let (source, answer) = udp_unwrap(&buf[..n]).expect("a SOCKS5 datagram");
        assert_eq!(source, dns, "answered as if by the server it was sent to");
        assert_eq!(&answer[..2], &[0x42, 0x42], "the query's id");
        assert_eq!(answer[3] & 0x0F, 3, "NXDOMAIN");
        assert_eq!(answer[2] & 0x80, 0x80, "a response");

        // Other datagrams pass untouched, a query for an allowed name included.
        let allowed = dns_query("fine.example");
        client
            .send_to(&udp_wrap(&Target::Ip(resolver_addr), &allowed), relay)
            .await
            .expect("send");
        let (n, _) = tokio::time::timeout(STEP, resolver.recv_from(&mut buf))
            .await
            .expect("forwarded")
            .expect("recv");
        assert_eq!(&buf[..n], &allowed[..]);
        drop(control);
    })
    .await;
}

#[tokio::test]
async fn a_client_outside_allow_from_is_closed_with_nothing_sent() {
    within(STEP, "allow_from", async {
        let mut config = ServerConfig::default();
        config.allow_from = ClientFilter::new(vec!["127.0.0.1/32".parse::<IpNet>().expect("net")]);
        let server = Running::start(config).await;

        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.2:0".parse().expect("literal"))
            .expect("bind 127.0.0.2");
        let mut stranger = socket.connect(server.addr).await.expect("connect");
        let _ = stranger.write_all(&[5, 1, 0]).await;
        let mut got = Vec::new();
        let _ = stranger.read_to_end(&mut got).await;
        assert!(got.is_empty(), "not one byte to a stranger");
        server.stats_when(|s| s.clients_not_allowed == 1).await;

        // The allowed network is served.
        let echo = EchoServer::start().await;
        let (_s, code, _) = v5_request(server.addr, 1, &Target::Ip(echo.addr())).await;
        assert_eq!(code, 0);
    })
    .await;
}

#[tokio::test]
async fn require_hostname_refuses_address_only_connects() {
    within(STEP, "require_hostname", async {
        let echo = EchoServer::start().await;
        let mut config = ServerConfig::default();
        config.require_hostname = true;
        config.resolver = Arc::new(
            StaticResolver::new().with_host("echo.test", [IpAddr::V4(Ipv4Addr::LOCALHOST)]),
        );
        let server = Running::start(config).await;
        let (_s, code, _) = v5_request(server.addr, 1, &Target::Ip(echo.addr())).await;
        assert_eq!(code, 0x02);
        let by_name = Target::Domain("echo.test".into(), echo.addr().port());
        let (_s, code, _) = v5_request(server.addr, 1, &by_name).await;
        assert_eq!(code, 0);
    })
    .await;
}

#[tokio::test]
async fn an_http_connect_to_a_listed_name_gets_403_and_never_reaches_the_target() {
    within(STEP, "http blocklist", async {
        let echo = EchoServer::start().await;
        let (server, _dir) = blocking_server(|_| {}).await;
        let port = echo.addr().port();
        for (host, status) in [("x.ads.example.com", "403"), ("notads.example.com", "200")] {
            let mut s = TcpStream::connect(server.addr).await.expect("connect");
            let head = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n");
            s.write_all(head.as_bytes()).await.expect("send");
            let mut answer = [0u8; 12];
            s.read_exact(&mut answer).await.expect("status line");
            let line = String::from_utf8_lossy(&answer).into_owned();
            assert!(
                line.starts_with("HTTP/1.1 ") && line.ends_with(status),
                "{host}: {line}"
            );
        }
        assert_eq!(
            echo.accepted(),
            1,
            "only the allowed name reached the target"
        );
    })
    .await;
}
