//! `socksmith serve` under systemd's protocols, without a running systemd: socket activation
//! through systemd's own `systemd-socket-activate` and through a socket the test binds and
//! passes as fd 3, and readiness reported to a `NOTIFY_SOCKET` the test binds (READY=1,
//! STOPPING=1).

mod serve_support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serve_support::*;
use socksmith_testkit::process::{can_bind, free_port};
use socksmith_testkit::raw::socks5_connect;
use socksmith_testkit::systemd::{start_socket_activated, start_with_listener, NotifySocket};
use socksmith_testkit::{within, EchoServer, TEST_DEADLINE};
use tokio::net::TcpStream;

/// SOCKS5 CONNECT to `target` over a stream already connected to the proxy, then one echo.
async fn echo_through(mut stream: TcpStream, target: SocketAddr) {
    let (code, _) = v5_exchange(&mut stream, 1, &v5_addr(target)).await;
    assert_eq!(code, 0, "CONNECT succeeded");
    send(&mut stream, b"activated").await;
    assert_eq!(recv(&mut stream, 9).await, b"activated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_socket_activate_hands_over_its_sockets_and_readiness_is_reported() {
    within(TEST_DEADLINE, "systemd-socket-activate", async {
        let echo = EchoServer::start().await;
        let mut notify = NotifySocket::bind();
        let notify_path = notify.path().to_str().expect("UTF-8 path").to_owned();
        let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut listen = vec![SocketAddr::new(v4, free_port(&[v4]))];
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        if can_bind(v6) {
            listen.push(SocketAddr::new(v6, free_port(&[v6])));
        }
        let Some(started) = start_socket_activated(
            bin(),
            &listen,
            &["serve"],
            &[("NOTIFY_SOCKET", &notify_path)],
        )
        .await
        else {
            return;
        };
        let (mut server, first) = started.unwrap_or_else(|e| panic!("{e}"));
        // One `listening on` line per inherited socket, with the address systemd bound.
        assert_eq!(server.addrs(), &listen[..], "{}", server.stdout());
        notify.wait_for("READY=1", STEP).await;
        // The connection that set off the activation waited in the socket's queue: served.
        echo_through(first, echo.addr()).await;
        for addr in &listen {
            let (mut tunnel, _) = socks5_connect(*addr, None, echo.addr())
                .await
                .unwrap_or_else(|e| panic!("through {addr}: {e}"));
            send(&mut tunnel, b"x").await;
            assert_eq!(recv(&mut tunnel, 1).await, b"x");
        }
        server.process_mut().signal("TERM");
        notify.wait_for("STOPPING=1", STEP).await;
        let status = server.process_mut().wait_exit(STEP).await.expect("exits");
        assert!(status.success(), "{}", server.stderr());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_passed_as_fd_3_is_served_without_listen() {
    within(TEST_DEADLINE, "fd 3", async {
        let echo = EchoServer::start().await;
        let mut notify = NotifySocket::bind();
        let notify_path = notify.path().to_str().expect("UTF-8 path").to_owned();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        // A client may connect before the service runs: the kernel queues it.
        let early = TcpStream::connect(addr).await.expect("connect early");
        let mut server = start_with_listener(
            bin(),
            listener,
            &["serve"],
            &[("NOTIFY_SOCKET", &notify_path)],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(server.addrs(), &[addr], "{}", server.stdout());
        let ready = notify.wait_for("READY=1", STEP).await;
        assert_eq!(ready.trim(), "READY=1");
        echo_through(early, echo.addr()).await;
        server.process_mut().signal("TERM");
        notify.wait_for("STOPPING=1", STEP).await;
        let status = server.process_mut().wait_exit(STEP).await.expect("exits");
        assert!(status.success(), "{}", server.stderr());
        assert_eq!(
            notify.received().first().map(|m| m.trim()),
            Some("READY=1"),
            "READY=1 comes first: {:?}",
            notify.received()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inherited_sockets_and_listen_together_are_refused() {
    within(TEST_DEADLINE, "fd 3 and --listen", async {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let refused =
            start_with_listener(bin(), listener, &["serve", "--listen", "127.0.0.1:0"], &[])
                .await
                .expect_err("both sources of listeners");
        assert!(refused.stderr.contains("LISTEN_FDS"), "{refused}");
        assert!(refused.stdout.is_empty(), "{refused}");
        // A socket that is not a TCP listener is refused with a clear line, not served.
        let not_tcp = unix_socket_as_fd_3().await;
        assert!(not_tcp.contains("passed by systemd"), "{not_tcp}");
    })
    .await;
}

/// Starts socksmith with a Unix listener as fd 3 and returns what it printed on stderr.
async fn unix_socket_as_fd_3() -> String {
    let dir = TestDir::new("unix-fd3");
    let unix = std::os::unix::net::UnixListener::bind(dir.path().join("s.sock")).expect("bind");
    let script = "export LISTEN_PID=$$ LISTEN_FDS=1; exec \"$0\" \"$@\" 3<&0 0</dev/null";
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .arg(bin())
            .arg("serve")
            .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(unix)))
            .output(),
    )
    .await
    .expect("exits in time")
    .expect("runs");
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}
