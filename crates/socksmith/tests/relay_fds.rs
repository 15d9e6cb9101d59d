//! An idle zero-copy tunnel holds its two sockets and nothing else: the pipes it used while
//! bytes flowed are back in the pool. Alone in its own test binary, so that no other test opens
//! descriptors while this one counts them.
#![cfg(target_os = "linux")]

use socksmith::relay::{pooled_pipes, relay, RelayOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Descriptors open in this process (the directory listing's own descriptor included: the
/// count is only compared with itself).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (a.expect("connect"), b.expect("accept").0)
}

#[tokio::test]
async fn an_idle_tunnel_after_traffic_holds_only_its_two_sockets() {
    // The runtime opens some descriptors of its own on first use of the network: let it.
    drop(tcp_pair().await);
    let before = open_fds();
    let (mut client, client_inner) = tcp_pair().await;
    let (target_inner, mut target) = tcp_pair().await;
    // The test's two ends plus the tunnel's two sockets.
    let sockets = 4;
    assert_eq!(open_fds(), before + sockets);

    let relay = tokio::spawn(async move {
        relay(client_inner, target_inner, b"", &RelayOptions::default()).await
    });
    // Idle before any traffic: no pipe held. (A freshly accepted socket may report a spurious
    // readiness, so a pipe may have been taken and given back to the pool already.)
    tokio::task::yield_now().await;
    assert_eq!(open_fds(), before + sockets + 2 * pooled_pipes());

    // Traffic both ways, 4 MiB each, one direction after the other.
    let block = vec![7u8; 4 << 20];
    let mut got = vec![0u8; block.len()];
    for _ in 0..2 {
        let (w, r) = tokio::join!(client.write_all(&block), target.read_exact(&mut got));
        w.expect("write");
        r.expect("read");
        let (w, r) = tokio::join!(target.write_all(&block), client.read_exact(&mut got));
        w.expect("write");
        r.expect("read");
    }

    // The directions give their pipes back as soon as their sources would block; on this
    // single-threaded runtime that has happened by the time the last byte is read, but allow a
    // few turns of the scheduler all the same.
    let idle = || open_fds() == before + sockets + 2 * pooled_pipes();
    for _ in 0..1000 {
        if idle() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(pooled_pipes() >= 1, "the traffic went through pooled pipes");
    assert!(
        idle(),
        "{} descriptors open, expected {} + {} sockets + 2 x {} pooled pipes",
        open_fds(),
        before,
        sockets,
        pooled_pipes()
    );

    drop(client);
    drop(target);
    let out = relay.await.expect("relay task");
    out.result.expect("clean end");
    assert_eq!(out.client_to_target, 8 << 20);
    assert_eq!(out.target_to_client, 8 << 20);
    // Both tunnel sockets are closed; the pool keeps its pipes for the next tunnel.
    assert_eq!(open_fds(), before + 2 * pooled_pipes());
}
