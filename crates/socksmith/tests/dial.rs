//! Happy Eyeballs against real loopback sockets, and with an injected connector where the
//! network cannot be made to behave (hanging attempts, timing).

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use socksmith::dial::{dial, dial_with, Connect, DialError, DialErrorKind, DialOptions};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// A loopback port with nothing listening: bind one, note it, close it.
async fn closed_port(ip: std::net::IpAddr) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind loopback");
    listener.local_addr().expect("local addr")
}

const V4: std::net::IpAddr = std::net::IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: std::net::IpAddr = std::net::IpAddr::V6(Ipv6Addr::LOCALHOST);

#[tokio::test]
async fn a_refused_address_is_skipped_for_one_that_works() {
    let refused = closed_port(V4).await;
    let listener = TcpListener::bind((V4, 0)).await.expect("bind");
    let working = listener.local_addr().expect("addr");

    let stream = dial(&[refused, working], &DialOptions::default())
        .await
        .expect("second address answers");
    assert_eq!(stream.peer_addr().expect("peer"), working);
    assert!(stream.nodelay().expect("nodelay"), "TCP_NODELAY is set");
    listener
        .accept()
        .await
        .expect("the winner reached the listener");
}

#[tokio::test]
async fn ipv6_is_tried_first() {
    let v4 = TcpListener::bind((V4, 0)).await.expect("bind v4");
    let v6 = TcpListener::bind((V6, 0)).await.expect("bind ::1");
    let v4_addr = v4.local_addr().expect("addr");
    let v6_addr = v6.local_addr().expect("addr");

    // The resolver listed IPv4 first; IPv6 still goes first and wins on loopback.
    let stream = dial(&[v4_addr, v6_addr], &DialOptions::default())
        .await
        .expect("connects");
    assert_eq!(stream.peer_addr().expect("peer"), v6_addr);
}

#[tokio::test]
async fn all_refused_is_refused() {
    let addrs = [
        closed_port(V6).await,
        closed_port(V4).await,
        closed_port(V4).await,
    ];
    let err = dial(&addrs, &DialOptions::default())
        .await
        .expect_err("nothing listens");
    assert_eq!(err.kind(), DialErrorKind::Refused);
    match &err {
        DialError::Failed {
            addr, tried, total, ..
        } => {
            assert_eq!((*tried, *total), (3, 3));
            assert_eq!(*addr, addrs[0], "the first of equal failures is reported");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("3 of 3 addresses tried"), "{err}");
}

#[tokio::test]
async fn no_address_is_an_error_of_its_own() {
    let err = dial(&[], &DialOptions::default()).await.expect_err("empty");
    assert!(matches!(err, DialError::NoAddresses));
    assert_eq!(err.kind(), DialErrorKind::HostUnreachable);
}

/// What a scripted attempt does.
#[derive(Clone, Copy)]
enum Script {
    Hang,
    Fail(io::ErrorKind),
    Connect,
}

/// A connector that follows a script per address and notes when each attempt started.
struct Scripted {
    script: Vec<(SocketAddr, Script)>,
    started: Mutex<Vec<(SocketAddr, Instant)>>,
}

impl Scripted {
    fn new(script: &[(&str, Script)]) -> Self {
        Scripted {
            script: script
                .iter()
                .map(|(a, s)| (a.parse().expect("address"), *s))
                .collect(),
            started: Mutex::new(Vec::new()),
        }
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.script.iter().map(|(a, _)| *a).collect()
    }

    fn started(&self) -> Vec<(SocketAddr, Instant)> {
        self.started.lock().expect("lock").clone()
    }
}

impl Connect for Scripted {
    type Stream = SocketAddr;

    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<SocketAddr>> + Send {
        self.started
            .lock()
            .expect("lock")
            .push((addr, Instant::now()));
        let script = self
            .script
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, s)| *s)
            .expect("scripted address");
        async move {
            match script {
                Script::Hang => std::future::pending().await,
                Script::Fail(kind) => Err(io::Error::from(kind)),
                Script::Connect => Ok(addr),
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_next_attempt_starts_after_the_attempt_delay() {
    let net = Scripted::new(&[
        ("[2001:db8::1]:80", Script::Hang),
        ("192.0.2.1:80", Script::Connect),
    ]);
    let t0 = Instant::now();
    let (won, addr) = dial_with(&net, &net.addrs(), &DialOptions::default())
        .await
        .expect("IPv4 answers");
    assert_eq!(won, addr);
    assert_eq!(addr, "192.0.2.1:80".parse().expect("addr"));
    let started = net.started();
    assert_eq!(started.len(), 2);
    assert_eq!(started[0].1 - t0, Duration::ZERO);
    assert_eq!(started[1].1 - t0, Duration::from_millis(250));
}

#[tokio::test(start_paused = true)]
async fn a_failed_attempt_starts_the_next_at_once() {
    let net = Scripted::new(&[
        (
            "[2001:db8::1]:80",
            Script::Fail(io::ErrorKind::NetworkUnreachable),
        ),
        ("192.0.2.1:80", Script::Connect),
    ]);
    let t0 = Instant::now();
    dial_with(&net, &net.addrs(), &DialOptions::default())
        .await
        .expect("IPv4 answers");
    assert_eq!(
        Instant::now() - t0,
        Duration::ZERO,
        "no delay after a failure"
    );
}

#[tokio::test(start_paused = true)]
async fn attempts_that_never_answer_time_out() {
    let net = Scripted::new(&[
        ("[2001:db8::1]:80", Script::Hang),
        ("192.0.2.1:80", Script::Hang),
    ]);
    let t0 = Instant::now();
    let err = dial_with(
        &net,
        &net.addrs(),
        &DialOptions::with_timeout(Duration::from_secs(3)),
    )
    .await
    .expect_err("nothing answers");
    assert_eq!(Instant::now() - t0, Duration::from_secs(3));
    assert_eq!(err.kind(), DialErrorKind::TimedOut);
    assert!(
        matches!(
            err,
            DialError::TimedOut {
                tried: 2,
                total: 2,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_timeout_reports_a_refusal_seen_on_the_way() {
    let net = Scripted::new(&[
        ("[2001:db8::1]:80", Script::Hang),
        (
            "192.0.2.1:80",
            Script::Fail(io::ErrorKind::ConnectionRefused),
        ),
    ]);
    let err = dial_with(
        &net,
        &net.addrs(),
        &DialOptions::with_timeout(Duration::from_secs(1)),
    )
    .await
    .expect_err("nothing answers");
    assert_eq!(err.kind(), DialErrorKind::Refused);
}

#[tokio::test(start_paused = true)]
async fn unreachable_ipv6_does_not_hide_a_refusal() {
    let net = Scripted::new(&[
        (
            "[2001:db8::1]:80",
            Script::Fail(io::ErrorKind::NetworkUnreachable),
        ),
        (
            "192.0.2.1:80",
            Script::Fail(io::ErrorKind::ConnectionRefused),
        ),
    ]);
    let err = dial_with(&net, &net.addrs(), &DialOptions::default())
        .await
        .expect_err("all fail");
    assert_eq!(err.kind(), DialErrorKind::Refused);
}
