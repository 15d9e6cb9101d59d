//! Helpers shared by the `client_*` integration tests: a client from a testkit proxy, and
//! round trips (TCP echo, BIND, UDP) through the library's client types.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use socksmith::client::{
    Client, ClientError, HopErrorKind, ProxyStream, Timeouts, MAX_UDP_HEADER_LEN,
};
use socksmith_proto::TargetAddr;
use socksmith_testkit::{pattern, Proxy};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Deadlines short enough that a hang fails the test quickly, long enough for a loaded CI box.
pub const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(5),
    handshake: Duration::from_secs(5),
    resolve: Duration::from_secs(5),
    bind_accept: Duration::from_secs(5),
};

/// A client for a chain of testkit proxies (credentials included).
pub fn client(proxies: &[&Proxy]) -> Client {
    let mut builder = Client::builder().timeouts(TIMEOUTS);
    for p in proxies {
        builder = builder.proxy(
            p.url()
                .parse()
                .unwrap_or_else(|e| panic!("testkit URL {p}: {e}")),
        );
    }
    builder.build().expect("at least one proxy")
}

/// Writes `len` pattern bytes and reads them back from an echo target, concurrently (so a
/// large payload cannot deadlock on full buffers), then checks them.
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(stream: S, len: usize) {
    let data = pattern(len);
    let (mut r, mut w) = tokio::io::split(stream);
    let write = async {
        w.write_all(&data).await.expect("write to the tunnel");
        w
    };
    let read = async {
        let mut back = vec![0; len];
        r.read_exact(&mut back).await.expect("read the echo");
        back
    };
    let (_w, back) = tokio::join!(write, read);
    assert!(back == data, "the echo of {len} bytes came back different");
}

/// Connects through `client` to `target` and checks a 64 KiB echo.
pub async fn connect_echo(
    client: &Client,
    target: impl socksmith::client::IntoTarget + Clone + std::fmt::Debug,
) -> TargetAddr {
    let stream = client
        .connect(target.clone())
        .await
        .unwrap_or_else(|e| panic!("CONNECT {target:?} through {client:?}: {e}"));
    let bound = stream.bound_addr().clone();
    echo(stream, 64 * 1024).await;
    bound
}

/// BIND through `client` expecting a peer from 127.0.0.1, connect that peer, and check bytes
/// both ways. Returns the listening address and the peer address the proxy reported.
pub async fn bind_round_trip(client: &Client) -> (TargetAddr, TargetAddr) {
    let expected = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0);
    let listener = client
        .bind(expected)
        .await
        .unwrap_or_else(|e| panic!("BIND through {client:?}: {e}"));
    let listen = listener.listen_addr().clone();
    let addr = listen
        .ip_literal()
        .unwrap_or_else(|| panic!("BIND listens on a name: {listen}"));
    assert!(addr.ip().is_loopback(), "BIND listens on {listen}");
    let peer_side = async {
        let mut peer = TcpStream::connect(addr)
            .await
            .expect("connect to the BIND port");
        peer.write_all(b"from the peer").await.expect("peer write");
        let mut answer = [0; 15];
        peer.read_exact(&mut answer).await.expect("peer read");
        assert_eq!(&answer, b"from the client");
        peer.local_addr().expect("peer address")
    };
    let client_side = async {
        let (mut stream, from) = listener.accept().await.expect("the peer is accepted");
        let mut got = [0; 13];
        stream.read_exact(&mut got).await.expect("client read");
        assert_eq!(&got, b"from the peer");
        stream
            .write_all(b"from the client")
            .await
            .expect("client write");
        (stream, from)
    };
    let (peer_addr, (_stream, from)) = tokio::join!(peer_side, client_side);
    if let Some(reported) = from.ip_literal() {
        assert_eq!(reported.ip(), peer_addr.ip(), "BIND peer address");
    }
    (listen, from)
}

/// A UDP association through `client`, a datagram to `target` (a UDP echo server) and back.
/// Returns the source the relay reported for the answer.
pub async fn udp_round_trip(client: &Client, target: TargetAddr) -> TargetAddr {
    let udp = client
        .udp_associate()
        .await
        .unwrap_or_else(|e| panic!("UDP ASSOCIATE through {client:?}: {e}"));
    let mut buf = vec![0; 1200 + MAX_UDP_HEADER_LEN];
    let mut from = None;
    // A large datagram, then a small one: each is wrapped exactly (the client reuses its
    // send buffer, so nothing of the first may trail the second).
    let sizes = [1200, 16];
    for (i, len) in sizes.into_iter().enumerate() {
        let payload = pattern(len);
        let earlier: Vec<Vec<u8>> = sizes[..i].iter().map(|&l| pattern(l)).collect();
        from = Some(udp_echo(&udp, &target, &payload, &earlier, &mut buf).await);
    }
    from.expect("at least one size")
}

/// Sends `payload` to `target` until its echo comes back (loopback rarely drops a datagram,
/// but it may: a few tries, each bounded); late echoes of `earlier` payloads are skipped.
async fn udp_echo(
    udp: &socksmith::client::UdpAssociation,
    target: &TargetAddr,
    payload: &[u8],
    earlier: &[Vec<u8>],
    buf: &mut [u8],
) -> TargetAddr {
    for _ in 0..5 {
        udp.send_to(payload, target.clone()).await.expect("send_to");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            match tokio::time::timeout_at(deadline, udp.recv_from(buf)).await {
                Ok(Ok((n, _))) if earlier.iter().any(|e| e[..] == buf[..n]) => continue,
                Ok(Ok((n, from))) => {
                    assert_eq!(
                        &buf[..n],
                        payload,
                        "UDP echo payload of {} bytes",
                        payload.len()
                    );
                    return from;
                }
                Ok(Err(e)) => panic!("recv_from: {e}"),
                Err(_) => break,
            }
        }
    }
    panic!("no UDP echo of {} bytes to {target}", payload.len());
}

/// The hop and kind of a client error, with the error's text on mismatch.
pub fn hop_kind(err: &ClientError) -> (usize, &HopErrorKind) {
    match (err.hop(), err.kind()) {
        (Some(hop), Some(kind)) => (hop, kind),
        _ => panic!("not a hop error: {err}"),
    }
}

/// A loopback address nothing listens on: a port bound and released.
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// Type check: the stream from `Client::connect` is a TcpStream-backed ProxyStream.
pub fn is_tcp(_: &ProxyStream<TcpStream>) {}
