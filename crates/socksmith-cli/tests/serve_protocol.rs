//! `socksmith serve` on the wire, with hand-written bytes: every reply code the loopback can
//! produce, pipelined data, the handshake deadline, BIND (SOCKS4 and SOCKS5, expected-peer
//! check and timeout), UDP ASSOCIATE (sender check, wrapping), and Tor's RESOLVE and
//! RESOLVE_PTR.
//!
//! Reply codes that need a network without routes (0x03, and 0x04 for a failed lookup) are in
//! `serve_netns.rs`; the timeout code (0x06) is tested at the library level with an outbound
//! that never completes.

mod serve_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serve_support::*;
use socksmith_testkit::raw::{udp_unwrap, udp_wrap};
use socksmith_testkit::{pattern, within, EchoServer, Target, UdpEchoServer, TEST_DEADLINE};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};

/// A loopback port with nothing listening.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_gets_the_closest_reply_code() {
    within(TEST_DEADLINE, "reply codes", async {
        let server = serve(&["--deny", "127.0.0.2/32"]).await;
        let proxy = server.addr();
        let refused = closed_port().await;

        // 0x01 general failure: a request whose reserved byte is not zero.
        let mut s = connect(proxy).await;
        send(&mut s, &[5, 1, 0, 5, 1, 1, 1, 127, 0, 0, 1, 0, 80]).await;
        assert_eq!(recv(&mut s, 2).await, [5, 0]);
        assert_eq!(v5_reply(&mut s).await.0, 0x01, "RSV != 0");
        assert!(recv_to_end(&mut s).await.is_empty());

        // 0x02 not allowed: the target is in a denied network (SOCKS4: 0x5B).
        let denied: SocketAddr = SocketAddr::new([127, 0, 0, 2].into(), refused.port());
        let mut s = connect(proxy).await;
        assert_eq!(v5_exchange(&mut s, 1, &v5_addr(denied)).await.0, 0x02);
        let mut s = connect(proxy).await;
        send(&mut s, &v4_request(1, denied, "")).await;
        assert_eq!(recv(&mut s, 8).await[..2], [0, 0x5B]);

        // 0x05 connection refused: a closed loopback port (SOCKS4: 0x5B).
        let mut s = connect(proxy).await;
        let (rep, addr) = v5_exchange(&mut s, 1, &v5_addr(refused)).await;
        assert_eq!((rep, addr), (0x05, vec![1, 0, 0, 0, 0, 0, 0]));
        assert!(
            recv_to_end(&mut s).await.is_empty(),
            "closed after a failure reply"
        );
        let mut s = connect(proxy).await;
        send(&mut s, &v4_request(1, refused, "")).await;
        assert_eq!(recv(&mut s, 8).await, [0, 0x5B, 0, 0, 0, 0, 0, 0]);

        // 0x07 command not supported: an unknown command, and UDP ASSOCIATE over SOCKS4.
        let mut s = connect(proxy).await;
        assert_eq!(v5_exchange(&mut s, 0x09, &v5_addr(refused)).await.0, 0x07);
        let mut s = connect(proxy).await;
        send(&mut s, &v4_request(3, refused, "")).await;
        assert_eq!(recv(&mut s, 8).await[..2], [0, 0x5B]);

        // 0x08 address type not supported.
        let mut s = connect(proxy).await;
        send(&mut s, &[5, 1, 0, 5, 1, 0, 0x07, 1, 2, 3, 4, 0, 80]).await;
        assert_eq!(recv(&mut s, 2).await, [5, 0]);
        assert_eq!(v5_reply(&mut s).await.0, 0x08);

        // 0xFF: the client offers only username/password to a server without users.
        let mut s = connect(proxy).await;
        send(&mut s, &[5, 1, 2]).await;
        assert_eq!(recv(&mut s, 2).await, [5, 0xFF]);
        assert!(recv_to_end(&mut s).await.is_empty());

        // Not SOCKS: an HTTP client, and not a proxy request (--no-http closes it instead).
        let mut s = connect(proxy).await;
        send(&mut s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(recv_to_end(&mut s).await.starts_with(b"HTTP/1.1 400 "));

        let log = log_with(&server, "outcome=", 5).await;
        for reason in [
            "denied by policy: target 127.0.0.2 is in denied network 127.0.0.2/32",
            "Connection refused",
            "no acceptable authentication method offered",
        ] {
            assert!(log.contains(reason), "{reason:?} not in the log:\n{log}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_failures_and_socks4_under_authentication() {
    within(TEST_DEADLINE, "authentication replies", async {
        let server = serve(&["--user", "alice:pw1"]).await;
        let proxy = server.addr();
        let echo = EchoServer::start().await;

        // 0xFF: the client offers only "no authentication".
        let mut s = connect(proxy).await;
        send(&mut s, &[5, 1, 0]).await;
        assert_eq!(recv(&mut s, 2).await, [5, 0xFF]);

        // Wrong password: status 0x01, then the server closes (RFC 1929 MUST).
        let mut s = connect(proxy).await;
        send(
            &mut s,
            &[
                5, 2, 0, 2, 1, 5, b'a', b'l', b'i', b'c', b'e', 3, b'p', b'w', b'2',
            ],
        )
        .await;
        assert_eq!(recv(&mut s, 2).await, [5, 2]);
        assert_eq!(recv(&mut s, 2).await, [1, 1]);
        assert!(recv_to_end(&mut s).await.is_empty());

        // A password that is a prefix of the right one fails too.
        let mut s = connect(proxy).await;
        send(
            &mut s,
            &[5, 1, 2, 1, 5, b'a', b'l', b'i', b'c', b'e', 2, b'p', b'w'],
        )
        .await;
        assert_eq!(recv(&mut s, 4).await, [5, 2, 1, 1]);

        // The right one, with the request and data pipelined behind it.
        let mut s = connect(proxy).await;
        let mut bytes = vec![
            5, 1, 2, 1, 5, b'a', b'l', b'i', b'c', b'e', 3, b'p', b'w', b'1',
        ];
        bytes.extend([5, 1, 0]);
        bytes.extend(v5_addr(echo.addr()));
        bytes.extend(b"ping");
        send(&mut s, &bytes).await;
        assert_eq!(recv(&mut s, 4).await, [5, 2, 1, 0]);
        assert_eq!(v5_reply(&mut s).await.0, 0);
        assert_eq!(recv(&mut s, 4).await, b"ping");

        // SOCKS4 cannot authenticate: 0x5B.
        let mut s = connect(proxy).await;
        send(&mut s, &v4_request(1, echo.addr(), "alice")).await;
        assert_eq!(recv(&mut s, 8).await[..2], [0, 0x5B]);
        assert_eq!(echo.accepted(), 1);
    })
    .await;
}

/// The keys of a log line's `key=value` fields, as a logfmt reader splits them: a quoted value
/// runs to its closing quote (`\"` inside it is a quote), any other to the next space.
/// Words without an `=` (the rest of an unquoted value with spaces) are no keys.
fn field_keys(fields: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut rest = fields;
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.rsplit(' ').next().unwrap_or(key);
        keys.push(key.to_owned());
        rest = if let Some(quoted) = after.strip_prefix('"') {
            let mut end = 0;
            let mut chars = quoted.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    _ => {}
                }
            }
            &quoted[end..]
        } else {
            after.split_once(' ').map_or("", |(_, r)| r)
        };
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_spaces_cannot_forge_log_fields() {
    within(TEST_DEADLINE, "log field injection", async {
        let server = serve(&[]).await;
        let echo = EchoServer::start().await;
        // A SOCKS4 user id that spells fields of its own.
        let mut s = connect(server.addr()).await;
        send(
            &mut s,
            &v4_request(1, echo.addr(), "root version=SOCKS5 client=10.0.0.1:1"),
        )
        .await;
        assert_eq!(recv(&mut s, 8).await[..2], [0, 0x5A]);
        drop(s);
        let log = log_with(&server, "session finished", 1).await;
        assert!(
            log.contains(r#" user="root version=SOCKS5 client=10.0.0.1:1" version=SOCKS4 "#),
            "the value is quoted, one field: {log}"
        );

        // A SOCKS5 name that does the same. The server hands names to an upstream proxy that
        // is not there, so nothing is looked up (no DNS query leaves the machine).
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let upstream = format!("socks5h://{}", closed.local_addr().expect("addr"));
        drop(closed);
        let server = serve(&["--upstream", &upstream]).await;
        let mut s = connect(server.addr()).await;
        send(&mut s, &[5, 1, 0]).await;
        assert_eq!(recv(&mut s, 2).await, [5, 0]);
        let name = br#"x user=admin outcome=ok "quoted""#;
        let mut bytes = vec![5, 1, 0, 3, u8::try_from(name.len()).expect("short")];
        bytes.extend(name);
        bytes.extend([0, 80]);
        send(&mut s, &bytes).await;
        assert_ne!(v5_reply(&mut s).await.0, 0, "the upstream is not there");
        let log = log_with(&server, "session finished", 1).await;
        let line = log
            .lines()
            .find(|l| l.contains("session finished"))
            .expect("the session's line");
        assert!(
            line.contains(r#" user=- version=SOCKS5 command=CONNECT destination="x user=admin outcome=ok \"quoted\":80" "#),
            "{line}"
        );
        let keys = field_keys(line.split_once("session finished ").expect("fields").1);
        assert_eq!(
            keys.iter().filter(|k| *k == "user").count(),
            1,
            "{keys:?} in {line}"
        );

        // A user id that opens a quote, then a name with fields behind it: the quote must
        // not run on into the next value.
        let mut s = connect(server.addr()).await;
        send(&mut s, &v4a_request(1, "x outcome=ok user=admin", 80, "\"q")).await;
        assert_ne!(recv(&mut s, 8).await[1], 0x5A, "the upstream is not there");
        let log = log_with(&server, "session finished", 2).await;
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("session finished"))
            .expect("the second session's line");
        let keys = field_keys(line.split_once("session finished ").expect("fields").1);
        for key in ["user", "outcome"] {
            assert_eq!(
                keys.iter().filter(|k| *k == key).count(),
                1,
                "{key}: {keys:?} in {line}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_names_with_control_characters_cannot_forge_log_lines() {
    within(TEST_DEADLINE, "log injection", async {
        // An RFC 1929 user name, before authentication succeeds.
        let server = serve(&["--user", "alice:pw1"]).await;
        let name = b"eve\nINFO forged=1\r";
        let mut s = connect(server.addr()).await;
        let mut bytes = vec![5, 1, 2, 1, u8::try_from(name.len()).expect("short")];
        bytes.extend(name);
        bytes.extend([1, b'x']);
        send(&mut s, &bytes).await;
        assert_eq!(recv(&mut s, 4).await, [5, 2, 1, 1]);
        let log = log_with(&server, "handshake failed", 1).await;
        // A failed name is logged as a keyed hash, so nothing of it reaches the log at all.
        assert!(
            log.contains(r#"authentication failed for user \"?"#),
            "{log}"
        );
        assert!(!log.contains("eve"), "{log}");
        assert!(!log.lines().any(|l| l.starts_with("INFO forged")), "{log}");

        // A SOCKS4 user id (no authentication, so SOCKS4 is served).
        let server = serve(&[]).await;
        let echo = EchoServer::start().await;
        let mut s = connect(server.addr()).await;
        send(&mut s, &v4_request(1, echo.addr(), "bob\n\x1b[2Jforged")).await;
        assert_eq!(recv(&mut s, 8).await[..2], [0, 0x5A]);
        drop(s);
        let log = log_with(&server, "session finished", 1).await;
        assert!(log.contains(r#"user=bob\n\u{1b}[2Jforged "#), "{log}");
        assert!(
            !log.lines().any(|l| l.starts_with("\x1b[2Jforged")),
            "{log}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_greeting_request_and_payload_reach_the_target() {
    within(TEST_DEADLINE, "pipelining", async {
        let server = serve(&[]).await;
        let echo = EchoServer::start().await;
        let payload = pattern(3000);

        // SOCKS5: greeting, CONNECT and payload in one write; the payload spans past the
        // 512-byte handshake buffer.
        let mut s = connect(server.addr()).await;
        let mut bytes = v5_greeting_and_request(1, &v5_addr(echo.addr()));
        bytes.extend(&payload);
        send(&mut s, &bytes).await;
        assert_eq!(recv(&mut s, 2).await, [5, 0]);
        assert_eq!(v5_reply(&mut s).await.0, 0);
        assert_eq!(recv(&mut s, payload.len()).await, payload);

        // SOCKS4a: request with a name and payload in one write.
        let mut s = connect(server.addr()).await;
        let mut bytes = v4a_request(1, "localhost", echo.addr().port(), "me");
        bytes.extend(b"after the request");
        send(&mut s, &bytes).await;
        assert_eq!(recv(&mut s, 8).await[..2], [0, 0x5A]);
        assert_eq!(recv(&mut s, 17).await, b"after the request");

        // SOCKS5 one byte at a time.
        let mut s = connect(server.addr()).await;
        let mut bytes = v5_greeting_and_request(1, &v5_name("localhost", echo.addr().port()));
        bytes.extend(b"xy");
        for b in bytes {
            send(&mut s, &[b]).await;
        }
        assert_eq!(recv(&mut s, 2).await, [5, 0]);
        assert_eq!(v5_reply(&mut s).await.0, 0);
        assert_eq!(recv(&mut s, 2).await, b"xy");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_in_the_handshake_is_disconnected_at_the_deadline() {
    within(TEST_DEADLINE, "handshake deadline", async {
        let server = serve(&["--handshake-timeout", "300ms"]).await;
        let started = Instant::now();
        let mut s = connect(server.addr()).await;
        send(&mut s, &[5, 2]).await; // half a greeting
        assert!(recv_to_end(&mut s).await.is_empty());
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(300),
            "closed after {waited:?}"
        );
        // A client that completes in time is unaffected.
        let echo = EchoServer::start().await;
        let mut s = connect(server.addr()).await;
        assert_eq!(v5_exchange(&mut s, 1, &v5_addr(echo.addr())).await.0, 0);
    })
    .await;
}

/// Connects to `to` from the loopback address `from_ip`.
async fn connect_from(from_ip: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((from_ip, 0)))
        .expect("bind a loopback source address");
    socket.connect(to).await.expect("connect to the BIND port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_bind_accepts_only_the_expected_peer_then_relays() {
    within(TEST_DEADLINE, "SOCKS5 BIND", async {
        let server = serve(&["-v"]).await;
        let mut control = connect(server.addr()).await;
        let expected: SocketAddr = "127.0.0.1:0".parse().expect("literal");
        let (rep, addr) = v5_exchange(&mut control, 2, &v5_addr(expected)).await;
        assert_eq!(rep, 0);
        let listening = reply_addr(&addr);
        assert_eq!(listening.ip(), server.addr().ip(), "never 0.0.0.0");

        // A stranger from 127.0.0.2 is turned away (the debug line says which session)...
        let mut stranger = connect_from([127, 0, 0, 2], listening).await;
        assert!(recv_to_end(&mut stranger).await.is_empty());
        let client = control.local_addr().expect("address");
        let log = log_with(
            &server,
            "BIND: connection from an unexpected peer closed",
            1,
        )
        .await;
        let line = log
            .lines()
            .find(|l| l.contains("unexpected peer"))
            .expect("the line");
        assert!(
            line.contains(&format!("session{{client={client} target=127.0.0.1:0}}")),
            "{line}"
        );
        // ... the expected peer gets through, and the second reply names it.
        let mut peer = connect_from([127, 0, 0, 1], listening).await;
        let (rep, addr) = v5_reply(&mut control).await;
        assert_eq!(rep, 0);
        assert_eq!(reply_addr(&addr), peer.local_addr().expect("address"));

        send(&mut peer, b"from the peer").await;
        assert_eq!(recv(&mut control, 13).await, b"from the peer");
        send(&mut control, b"from the client").await;
        assert_eq!(recv(&mut peer, 15).await, b"from the client");
        control.shutdown().await.expect("half-close");
        assert!(recv_to_end(&mut peer).await.is_empty());
        peer.shutdown().await.expect("half-close");
        assert!(recv_to_end(&mut control).await.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks4_bind_and_bind_timeout() {
    within(TEST_DEADLINE, "SOCKS4 BIND", async {
        let server = serve(&["--bind-timeout", "300ms"]).await;
        let mut control = connect(server.addr()).await;
        send(
            &mut control,
            &v4_request(2, "127.0.0.1:0".parse().expect("literal"), ""),
        )
        .await;
        let first = recv(&mut control, 8).await;
        assert_eq!(first[..2], [0, 0x5A]);
        let listening = v4_reply_addr(&first);
        let mut peer = connect_from([127, 0, 0, 1], listening).await;
        let second = recv(&mut control, 8).await;
        assert_eq!(second[..2], [0, 0x5A]);
        assert_eq!(v4_reply_addr(&second), peer.local_addr().expect("address"));
        send(&mut control, b"abc").await;
        assert_eq!(recv(&mut peer, 3).await, b"abc");

        // Nobody connects: after the timeout, a failure reply and the end.
        let mut control = connect(server.addr()).await;
        let (rep, _) = v5_exchange(
            &mut control,
            2,
            &v5_addr("127.0.0.1:0".parse().expect("literal")),
        )
        .await;
        assert_eq!(rep, 0);
        let (rep, _) = v5_reply(&mut control).await;
        assert_eq!(rep, 0x06, "BIND timeout");
        assert!(recv_to_end(&mut control).await.is_empty());
        let mut control = connect(server.addr()).await;
        send(
            &mut control,
            &v4_request(2, "127.0.0.1:0".parse().expect("literal"), ""),
        )
        .await;
        assert_eq!(recv(&mut control, 8).await[..2], [0, 0x5A]);
        assert_eq!(
            recv(&mut control, 8).await[..2],
            [0, 0x5B],
            "SOCKS4 BIND timeout"
        );
        log_with(
            &server,
            "BIND: no connection from the expected peer within 300ms",
            2,
        )
        .await;
    })
    .await;
}

async fn recv_datagram(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0; 65536];
    let (n, from) = tokio::time::timeout(STEP, socket.recv_from(&mut buf))
        .await
        .expect("a datagram in time")
        .expect("recv");
    buf.truncate(n);
    (buf, from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_associate_relays_only_the_clients_datagrams() {
    within(TEST_DEADLINE, "UDP ASSOCIATE", async {
        let server = serve(&[]).await;
        let echo = UdpEchoServer::start().await;
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let (control, relay) = udp_associate(server.addr(), &client).await;
        assert_eq!(
            relay.ip(),
            server.addr().ip(),
            "a reachable relay address, never 0.0.0.0"
        );

        let target = Target::Ip(echo.addr());
        client
            .send_to(&udp_wrap(&target, b"one"), relay)
            .await
            .expect("send");
        let (datagram, from) = recv_datagram(&client).await;
        assert_eq!(from, relay);
        assert_eq!(
            udp_unwrap(&datagram).expect("valid"),
            (target.clone(), b"one".to_vec())
        );

        // Another socket on the same host: not the client's port, ignored.
        let stranger = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        stranger
            .send_to(&udp_wrap(&target, b"stranger"), relay)
            .await
            .expect("send");
        // A fragment from the client: dropped (no reassembly).
        let mut fragment = udp_wrap(&target, b"fragment");
        fragment[2] = 1;
        client.send_to(&fragment, relay).await.expect("send");
        // A name destination, resolved by the server.
        let named = Target::domain("localhost", echo.addr().port());
        client
            .send_to(&udp_wrap(&named, b"two"), relay)
            .await
            .expect("send");
        let (datagram, _) = recv_datagram(&client).await;
        assert_eq!(
            udp_unwrap(&datagram).expect("valid"),
            (target, b"two".to_vec())
        );
        assert_eq!(
            echo.received(),
            2,
            "the stranger's datagram and the fragment were dropped"
        );

        // The association ends with its control connection; the log line counts the
        // payloads relayed ("one" and "two" each way), not the dropped ones.
        drop(control);
        let log = log_with(&server, "command=UDP ASSOCIATE", 1).await;
        assert!(log.contains(" bytes_up=6 bytes_down=6 "), "{log}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_and_resolve_ptr_answer_from_the_servers_resolver() {
    within(TEST_DEADLINE, "RESOLVE", async {
        let server = serve(&[]).await;

        // SOCKS5 RESOLVE: the address is in the reply, then the connection closes.
        let mut s = connect(server.addr()).await;
        let (rep, addr) = v5_exchange(&mut s, 0xF0, &v5_name("localhost", 0)).await;
        assert_eq!((rep, addr), (0, vec![1, 127, 0, 0, 1, 0, 0]));
        assert!(recv_to_end(&mut s).await.is_empty());

        // SOCKS5 RESOLVE_PTR: the name is in the reply.
        let mut s = connect(server.addr()).await;
        let (rep, addr) = v5_exchange(
            &mut s,
            0xF1,
            &v5_addr("127.0.0.1:0".parse().expect("literal")),
        )
        .await;
        assert_eq!(rep, 0);
        assert_eq!(addr[0], 3, "a name");
        assert_eq!(&addr[2..2 + usize::from(addr[1])], b"localhost");

        // SOCKS4a RESOLVE: the address is in DSTIP.
        let mut s = connect(server.addr()).await;
        send(&mut s, &v4a_request(0xF0, "localhost", 0, "")).await;
        assert_eq!(recv(&mut s, 8).await, [0, 0x5A, 0, 0, 127, 0, 0, 1]);

        // An IP literal sent as a name is that address, no lookup needed.
        let mut s = connect(server.addr()).await;
        let (rep, addr) = v5_exchange(&mut s, 0xF0, &v5_name("::1", 0)).await;
        assert_eq!(rep, 0);
        assert_eq!(reply_addr(&addr), "[::1]:0".parse().expect("literal"));
        log_with(&server, "command=RESOLVE ", 3).await;
        log_with(&server, "command=RESOLVE_PTR destination=127.0.0.1:0 ", 1).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_udp_association_ends_and_closes_its_control_connection() {
    within(TEST_DEADLINE, "UDP idle", async {
        let server = serve(&["--udp-idle-timeout", "300ms"]).await;
        let mut control = connect(server.addr()).await;
        let started = Instant::now();
        let (rep, _) = v5_exchange(
            &mut control,
            3,
            &v5_addr("0.0.0.0:0".parse().expect("literal")),
        )
        .await;
        assert_eq!(rep, 0);
        assert!(
            recv_to_end(&mut control).await.is_empty(),
            "the server closes the control connection"
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
        log_with(&server, "outcome=UDP association idle for 300ms", 1).await;
    })
    .await;
}
