//! `socksmith serve --blocklist`: every list format (hosts, one domain a line, adblock `||x^`
//! and `*.x`), label matching, case and a trailing dot, the reply a blocked request gets
//! (0x02, SOCKS4 0x5B) with the target never contacted and the log naming the list, and
//! `--require-hostname`, and first-flight sniffing (HTTP Host, TLS SNI, a ClientHello split in
//! two, server-first protocols); with raw SOCKS bytes, curl, PySocks, Python's OpenSSL and
//! tor-resolve.
//!
//! Everything stays on loopback, and no name here is ever looked up in the outside DNS: the
//! names that are not on a list are refused by a `[[rules]]` "fence" (which the log tells
//! apart from a blocklist), and the only name that reaches the resolver is `localhost`.

mod serve_support;

use std::path::Path;
use std::time::Instant;

use serve_support::*;
use socksmith_testkit::clients::{curl, curl_via, pysocks, PyMode};
use socksmith_testkit::raw::{udp_unwrap, udp_wrap};
use socksmith_testkit::socksmith::SocksmithServer;
use socksmith_testkit::targets::HTTP_ROOT_BODY;
use socksmith_testkit::{
    within, EchoServer, HttpServer, ProxyKind, Target, UdpEchoServer, TEST_DEADLINE,
};
use tokio::net::UdpSocket;

const HOSTS_LIST: &str = "\
# a hosts file as published
127.0.0.1 localhost
255.255.255.255 broadcasthost
::1 localhost
0.0.0.0 ads.example.com
127.0.0.1 tracker.example.org # trailing comment
:: v6only.example.net
";

const DOMAINS_LIST: &str = "\
# one domain a line
plain.example.com
";

const ADBLOCK_LIST: &str = "\
! adblock syntax
||adblock.example.com^
*.wild.example.com
";

/// Names outside every list are refused by this rule instead of being looked up.
const FENCE: &str = r#"
[[rules]]
name = "fence"
action = "deny"
domains = ["example.com", ".example.com", ".example.org", ".example.net"]
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a test file");
    path.to_str().expect("UTF-8 temporary path").to_owned()
}

/// The reply code of a no-auth SOCKS5 CONNECT to `name:port`.
async fn v5_connect_name(server: &SocksmithServer, name: &str, port: u16) -> u8 {
    let mut s = connect(server.addr()).await;
    v5_exchange(&mut s, 1, &v5_name(name, port)).await.0
}

/// The reply code of a SOCKS4a CONNECT to `name:port`.
async fn v4a_connect_name(server: &SocksmithServer, name: &str, port: u16) -> u8 {
    let mut s = connect(server.addr()).await;
    send(&mut s, &v4a_request(1, name, port, "")).await;
    recv(&mut s, 8).await[1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_format_blocks_by_label_whatever_the_case_and_names_the_list() {
    within(TEST_DEADLINE, "blocklist formats", async {
        let dir = TestDir::new("blocklist-formats");
        let hosts = write(dir.path(), "hosts.txt", HOSTS_LIST);
        let domains = write(dir.path(), "domains.txt", DOMAINS_LIST);
        let adblock = write(dir.path(), "adblock.txt", ADBLOCK_LIST);
        let config = write(dir.path(), "socksmith.toml", FENCE);
        let server = serve(&[
            "--config",
            &config,
            "--blocklist",
            &hosts,
            "--blocklist",
            &domains,
            "--blocklist",
            &adblock,
        ])
        .await;
        let blocked = [
            ("ads.example.com", &hosts),
            ("x.ads.example.com", &hosts),
            ("a.b.ADS.Example.COM.", &hosts),
            ("tracker.example.org", &hosts),
            ("v6only.example.net", &hosts),
            ("plain.example.com", &domains),
            ("deep.plain.example.com", &domains),
            ("adblock.example.com", &adblock),
            ("sub.adblock.example.com", &adblock),
            ("x.wild.example.com", &adblock),
        ];
        for (name, list) in blocked {
            assert_eq!(v5_connect_name(&server, name, 80).await, 0x02, "{name}");
            log_with(
                &server,
                &format!("\\\"{name}\\\" is on the blocklist {list}"),
                1,
            )
            .await;
        }
        // Label boundaries: a longer label or a parent domain is not on the lists, and meets
        // the fence rule instead.
        for name in [
            "notads.example.com",
            "example.com",
            "ads.example.com.evil.example.org",
        ] {
            assert_eq!(v5_connect_name(&server, name, 80).await, 0x02, "{name}");
            let log = log_with(&server, &format!("destination={name}:80"), 1).await;
            let line = log
                .lines()
                .find(|l| l.contains(&format!("destination={name}:80")))
                .expect("found above");
            assert!(line.contains("denied by rule \\\"fence\\\""), "{line}");
            assert!(!line.contains("blocklist"), "{line}");
        }
        // SOCKS4a gets 0x5B, with a trailing dot and odd case.
        assert_eq!(
            v4a_connect_name(&server, "Tracker.Example.Org.", 80).await,
            0x5B
        );
        log_with(
            &server,
            "\\\"Tracker.Example.Org.\\\" is on the blocklist",
            1,
        )
        .await;
        // The hosts file's `localhost` header lines block nothing: localhost reaches a target.
        let echo = EchoServer::start().await;
        let mut s = connect(server.addr()).await;
        let (rep, _) = v5_exchange(&mut s, 1, &v5_name("localhost", echo.addr().port())).await;
        assert_eq!(rep, 0, "localhost is only a header line of the hosts file");
        send(&mut s, b"ping").await;
        assert_eq!(recv(&mut s, 4).await, b"ping");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_pysocks_and_tor_resolve_are_refused_a_listed_name_and_the_target_never_sees_them() {
    within(TEST_DEADLINE, "blocked clients", async {
        let dir = TestDir::new("blocklist-clients");
        // `localhost` is listed (adblock form: hosts and plain lists skip it as a header
        // name), so a request that got through would reach the targets below: their accept
        // counters show that none did.
        let list = write(dir.path(), "local.txt", "||localhost^\n");
        let blocking = serve(&["--blocklist", &list]).await;
        let open = serve(&[]).await;
        let http = HttpServer::start().await;
        let echo = EchoServer::start().await;
        let url = http.url_with_host("localhost", "/");
        let Some(out) = curl(&blocking.proxy(ProxyKind::Socks5h), &url, &[]).await else {
            return;
        };
        out.assert_failure();
        assert!(
            out.stderr_str().contains("(97)"),
            "curl: SOCKS failure: {out}"
        );
        log_with(
            &blocking,
            &format!("\\\"localhost\\\" is on the blocklist {list}"),
            1,
        )
        .await;
        // The same request through a server without the list works: the name is real.
        let ok = curl(&open.proxy(ProxyKind::Socks5h), &url, &[])
            .await
            .expect("curl ran above");
        ok.assert_success();
        assert_eq!(ok.stdout_str(), HTTP_ROOT_BODY);
        assert_eq!(
            http.accepted(),
            1,
            "only the unblocked request reached the target"
        );

        let target = Target::Domain("localhost".into(), echo.addr().port());
        let Some(result) = pysocks(
            &blocking.proxy(ProxyKind::Socks5h),
            &target,
            PyMode::TcpEcho,
            b"hello",
        )
        .await
        else {
            return;
        };
        assert!(
            !result.ok,
            "PySocks got through a listed name: {:?}",
            result.output
        );
        let Some(result) = pysocks(
            &blocking.proxy(ProxyKind::Socks4a),
            &target,
            PyMode::TcpEcho,
            b"hello",
        )
        .await
        else {
            return;
        };
        assert!(
            !result.ok,
            "PySocks (SOCKS4a) got through: {:?}",
            result.output
        );
        assert_eq!(echo.accepted(), 0, "the echo target was never contacted");
        log_with(&blocking, "\\\"localhost\\\" is on the blocklist", 3).await;

        // RESOLVE of a listed name is refused too.
        let Some(tor_resolve) = socksmith_testkit::tools::find_tool("tor-resolve").or_else(|| {
            socksmith_testkit::peer_missing(
                "tor-resolve not installed: run scripts/test (Debian package tor)",
            )
        }) else {
            return;
        };
        let mut cmd = tokio::process::Command::new(&tor_resolve);
        cmd.args(["-5", "localhost"])
            .arg(blocking.addr().to_string());
        let out = socksmith_testkit::process::run_command(cmd, b"", STEP).await;
        out.assert_failure();
        assert!(!out.stdout_str().contains("127.0.0.1"), "{out}");
        log_with(&blocking, "command=RESOLVE destination=localhost:0", 1).await;
        log_with(&blocking, "\\\"localhost\\\" is on the blocklist", 4).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_hostname_drops_udp_datagrams_to_bare_addresses_and_relays_named_ones() {
    within(TEST_DEADLINE, "--require-hostname and UDP", async {
        let server = serve(&["--require-hostname"]).await;
        let echo = UdpEchoServer::start().await;
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        // The association itself names no target: it is granted.
        let (_control, relay) = udp_associate(server.addr(), &client).await;
        // To the echo's address: dropped, as a CONNECT to it is refused.
        client
            .send_to(&udp_wrap(&Target::Ip(echo.addr()), b"by address"), relay)
            .await
            .expect("send");
        log_with(&server, "UDP: datagrams to bare addresses are dropped", 1).await;
        // To its name: relayed.
        let named = Target::domain("localhost", echo.addr().port());
        client
            .send_to(&udp_wrap(&named, b"by name"), relay)
            .await
            .expect("send");
        let mut buf = vec![0; 2048];
        let (n, _) = tokio::time::timeout(STEP, client.recv_from(&mut buf))
            .await
            .expect("an answer in time")
            .expect("recv");
        let (_, payload) = udp_unwrap(&buf[..n]).expect("valid");
        assert_eq!(payload, b"by name");
        assert_eq!(
            echo.received(),
            1,
            "only the named datagram reached the target"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_hostname_refuses_curl_socks5_with_a_hint_and_serves_socks5h() {
    within(TEST_DEADLINE, "--require-hostname", async {
        let server = serve(&["--require-hostname"]).await;
        let http = HttpServer::start().await;
        let Some(out) = curl(&server.proxy(ProxyKind::Socks5), &http.url("/"), &[]).await else {
            return;
        };
        out.assert_failure();
        let log = log_with(&server, "requires host names", 1).await;
        assert!(
            log.contains("socks5h://"),
            "the log line tells what to do: {log}"
        );
        // SOCKS4 with an address: 0x5B.
        let mut s = connect(server.addr()).await;
        send(&mut s, &v4_request(1, http.addr(), "")).await;
        assert_eq!(recv(&mut s, 8).await[1], 0x5B);
        assert_eq!(http.accepted(), 0);
        let ok = curl(
            &server.proxy(ProxyKind::Socks5h),
            &http.url_with_host("localhost", "/"),
            &[],
        )
        .await
        .expect("curl ran above");
        ok.assert_success();
        assert_eq!(ok.stdout_str(), HTTP_ROOT_BODY);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_domain_list_loads_on_reload_and_blocks() {
    within(TEST_DEADLINE, "a million domains", async {
        let dir = TestDir::new("blocklist-million");
        let list = write(dir.path(), "million.txt", "d0000000.example.com\n");
        let config = write(dir.path(), "socksmith.toml", FENCE);
        let mut server = serve(&["--config", &config, "--blocklist", &list]).await;
        // The big list comes in by SIGHUP: a debug build on shared cores takes several
        // seconds to read it, longer than a start is given, and the server keeps serving
        // with the old list meanwhile.
        let mut text = String::with_capacity(1_000_000 * 24);
        for i in 0..1_000_000u32 {
            text.push_str(&format!("d{i:07}.example.com\n"));
        }
        std::fs::write(&list, text).expect("write a million names");
        let started = Instant::now();
        server.process_mut().signal("HUP");
        assert_eq!(
            v5_connect_name(&server, "d0000000.example.com", 443).await,
            0x02
        );
        let limit = std::time::Duration::from_secs(75);
        loop {
            let log = server.stderr();
            if log.contains("configuration reloaded") {
                assert!(log.contains("names=1000000"), "{log}");
                break;
            }
            assert!(
                started.elapsed() < limit,
                "no reload within {limit:?}:\n{log}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        for name in [
            "d0999999.example.com",
            "x.d0500000.example.com",
            "D0123456.EXAMPLE.COM.",
        ] {
            assert_eq!(v5_connect_name(&server, name, 443).await, 0x02, "{name}");
            log_with(
                &server,
                &format!("\\\"{name}\\\" is on the blocklist {list}"),
                1,
            )
            .await;
        }
        assert_eq!(
            v5_connect_name(&server, "d1000000.example.com", 443).await,
            0x02
        );
        let log = log_with(&server, "destination=d1000000.example.com:443", 1).await;
        assert!(
            log.contains("denied by rule \\\"fence\\\""),
            "not listed: {log}"
        );
    })
    .await;
}

/// curl through `server` with `--socks5` (curl resolves, the proxy sees only 127.0.0.1),
/// `name` pinned to 127.0.0.1 with `--resolve`.
async fn curl_socks5_ip(
    server: &SocksmithServer,
    scheme: &str,
    name: &str,
    port: u16,
) -> Option<socksmith_testkit::CmdOutput> {
    let resolve = format!("{name}:{port}:127.0.0.1");
    curl(
        &server.proxy(ProxyKind::Socks5),
        &format!("{scheme}://{name}:{port}/"),
        &["-k", "--resolve", &resolve],
    )
    .await
}

/// curl through `server` as an HTTP proxy with a CONNECT tunnel (`-p`) to 127.0.0.1, for a
/// URL naming `name` (`--connect-to`: the CONNECT carries only the address).
async fn curl_http_connect_ip(
    server: &SocksmithServer,
    scheme: &str,
    name: &str,
    port: u16,
) -> Option<socksmith_testkit::CmdOutput> {
    let connect_to = format!("{name}:{port}:127.0.0.1:{port}");
    curl_via(
        &format!("http://{}", server.addr()),
        &format!("{scheme}://{name}:{port}/"),
        &["-k", "-p", "--connect-to", &connect_to],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sniffing_catches_the_name_of_ip_only_http_and_tls_from_curl_socks5() {
    within(TEST_DEADLINE, "first-flight sniffing", async {
        let dir = TestDir::new("blocklist-sniff");
        let list = write(dir.path(), "ads.txt", "0.0.0.0 ads.example.com\n");
        let server = serve(&["--blocklist", &list]).await;
        let http = HttpServer::start().await;
        let port = http.addr().port();
        let destination = format!("destination=127.0.0.1:{port} ");
        for (scheme, name) in [("http", "ads.example.com"), ("https", "x.ADS.example.com")] {
            let Some(out) = curl_socks5_ip(&server, scheme, name, port).await else {
                return;
            };
            out.assert_failure();
            let lowered = name.to_ascii_lowercase();
            let log = log_with(&server, "is on the blocklist", 1).await;
            let line = log
                .lines()
                .rev()
                .find(|l| l.contains(&destination) && l.contains("blocklist"))
                .unwrap_or_else(|| panic!("{scheme}: no blocked line for {destination}:\n{log}"));
            assert!(line.contains(&list), "{line}");
            assert!(
                line.to_ascii_lowercase()
                    .contains(&format!("\\\"{lowered}\\\"")),
                "{scheme}: the sniffed name: {line}"
            );
            assert!(
                line.contains("bytes_up=0 "),
                "nothing reached the target: {line}"
            );
        }
        // The same through HTTP CONNECT to the address (`curl -p --connect-to`): sniffed too.
        for (i, (scheme, name)) in [("http", "ads.example.com"), ("https", "x.ads.example.com")]
            .into_iter()
            .enumerate()
        {
            let out = curl_http_connect_ip(&server, scheme, name, port)
                .await
                .expect("curl ran above");
            out.assert_failure();
            let log = log_with(&server, "version=HTTP command=CONNECT", i + 1).await;
            let line = log
                .lines()
                .filter(|l| l.contains("version=HTTP") && l.contains(&destination))
                .nth(i)
                .unwrap_or_else(|| panic!("{scheme}: no HTTP line for {destination}:\n{log}"));
            assert!(
                line.contains(&format!("\\\"{name}\\\" is on the blocklist")),
                "{line}"
            );
            assert!(
                line.contains("bytes_up=0 "),
                "nothing reached the target: {line}"
            );
        }
        let ok = curl_http_connect_ip(&server, "http", "fine.example.com", port)
            .await
            .expect("curl ran above");
        ok.assert_success();
        assert_eq!(ok.stdout_str(), HTTP_ROOT_BODY);
        // An unlisted name passes, byte for byte, after the sniff.
        let ok = curl_socks5_ip(&server, "http", "fine.example.com", port)
            .await
            .expect("curl ran above");
        ok.assert_success();
        assert_eq!(ok.stdout_str(), HTTP_ROOT_BODY);
        // --no-sniff: the same listed name over socks5:// is not seen.
        let unsniffed = serve(&["--blocklist", &list, "--no-sniff"]).await;
        let through = curl_socks5_ip(&unsniffed, "http", "ads.example.com", port)
            .await
            .expect("curl ran above");
        through.assert_success();
        assert_eq!(through.stdout_str(), HTTP_ROOT_BODY);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_first_protocols_wait_no_longer_than_the_sniff_window() {
    within(TEST_DEADLINE, "--sniff-timeout", async {
        let dir = TestDir::new("blocklist-window");
        let list = write(dir.path(), "ads.txt", "ads.example.com\n");
        let server = serve(&["--blocklist", &list, "--sniff-timeout", "150ms"]).await;
        // An SSH-like target that speaks first.
        let banner = socksmith_testkit::SourceServer::start(64).await;
        let mut s = connect(server.addr()).await;
        let started = Instant::now();
        let (rep, _) = v5_exchange(&mut s, 1, &v5_addr(banner.addr())).await;
        assert_eq!(rep, 0);
        let first = recv(&mut s, 64).await;
        let waited = started.elapsed();
        assert_eq!(
            first,
            socksmith_testkit::pattern(64),
            "forwarded byte for byte"
        );
        // The window was applied (the flag took effect) and not exceeded beyond slack.
        assert!(
            waited >= std::time::Duration::from_millis(140),
            "the banner came after {waited:?}, inside the sniff window"
        );
        assert!(
            waited < std::time::Duration::from_millis(1500),
            "the banner waited {waited:?}, past the 150ms window and any slack"
        );
    })
    .await;
}

/// OpenSSL's ClientHello for `sys.argv[3]` (Python's `ssl` with memory BIOs), sent through
/// the proxy at `argv[1]` to 127.0.0.1:`argv[2]` by address only, split over two segments
/// 100 ms apart. Prints what came back before the proxy closed.
const SPLIT_HELLO: &str = r#"
import socket, ssl, struct, sys, time
proxy, port, name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context()
incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
try:
    tls.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = outgoing.read()
s = socket.create_connection(("127.0.0.1", proxy), timeout=10)
s.sendall(bytes([5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1]) + struct.pack(">H", port))
reply = b""
while len(reply) < 12:
    reply += s.recv(12 - len(reply))
print("reply", reply[1], flush=True)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.sendall(hello[:40])
time.sleep(0.1)
try:
    s.sendall(hello[40:])
    rest = s.recv(100)
except OSError:
    rest = b""
print("hello-bytes", len(hello), "back", len(rest), flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clienthello_split_over_two_segments_is_reassembled_and_refused() {
    within(TEST_DEADLINE, "split ClientHello", async {
        let Some(python) = socksmith_testkit::require_tool("python3") else {
            return;
        };
        let dir = TestDir::new("blocklist-split");
        let list = write(dir.path(), "ads.txt", "||ads.example.com^\n");
        let script = write(dir.path(), "hello.py", SPLIT_HELLO);
        let server = serve(&["--blocklist", &list]).await;
        let sink = socksmith_testkit::SinkServer::start().await;
        let port = sink.addr().port().to_string();
        let proxy = server.addr().port().to_string();
        let mut cmd = tokio::process::Command::new(&python);
        cmd.args([script.as_str(), &proxy, &port, "www.ads.example.com"]);
        let out = socksmith_testkit::process::run_command(cmd, b"", STEP).await;
        out.assert_success();
        let stdout = out.stdout_str();
        assert!(stdout.contains("reply 0\n"), "{out}");
        assert!(stdout.contains(" back 0\n"), "nothing came back: {out}");
        let hello_len: usize = stdout
            .split("hello-bytes ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no hello-bytes line: {out}"));
        assert!(
            hello_len > 40,
            "the hello was really split: {hello_len} bytes"
        );
        let destination = format!("destination=127.0.0.1:{port} ");
        let log = log_with(
            &server,
            "\\\"www.ads.example.com\\\" is on the blocklist",
            1,
        )
        .await;
        let line = log
            .lines()
            .find(|l| l.contains(&destination))
            .unwrap_or_else(|| panic!("no line for {destination}:\n{log}"));
        assert!(
            line.contains("bytes_up=0 "),
            "nothing reached the target: {line}"
        );
    })
    .await;
}
