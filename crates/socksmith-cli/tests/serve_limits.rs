//! Descriptor exhaustion from one address (issue 13, finding 1): under `ulimit -n 128`, 140
//! silent connections from one client address used to take every descriptor, and a normal
//! client timed out. The default limits (a session cap derived from the open-file limit and
//! a per-client share) keep the server answering everyone else.

mod serve_support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;

use serve_support::{bin, connect, recv, send, v5_addr, STEP};
use socksmith_testkit::socksmith::SocksmithServer;
use socksmith_testkit::{within, EchoServer, TEST_DEADLINE};
use tokio::net::{TcpSocket, TcpStream};

/// A wrapper that runs the binary under test with at most 128 open files (soft and hard, so
/// the server cannot raise it).
fn under_ulimit(dir: &std::path::Path) -> std::path::PathBuf {
    let script = dir.join("socksmith-ulimit-128");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nulimit -n 128 || exit 99\nexec '{}' \"$@\"\n",
            bin().display()
        ),
    )
    .expect("write the wrapper");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .expect("make it executable");
    script
}

/// A connection from 127.0.0.2 that says nothing.
async fn silent_from_second_address(proxy: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind("127.0.0.2:0".parse().expect("literal")).ok()?;
    tokio::time::timeout(STEP, socket.connect(proxy))
        .await
        .ok()?
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_address_cannot_starve_a_normal_client() {
    within(TEST_DEADLINE, "descriptor flood", async {
        let dir = std::env::temp_dir().join(format!("socksmith-limits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let wrapper = under_ulimit(&dir);
        let server = SocksmithServer::start(&wrapper, &[]).await;
        let echo = EchoServer::start().await;

        let mut flood = Vec::new();
        for _ in 0..140 {
            if let Some(s) = silent_from_second_address(server.addr()).await {
                flood.push(s);
            }
        }
        assert!(flood.len() >= 100, "the flood connected ({})", flood.len());

        // A normal client from another address is served at once, flood or not.
        let mut s = connect(server.addr()).await;
        let mut request = vec![5, 1, 0, 5, 1, 0];
        request.extend(v5_addr(echo.addr()));
        send(&mut s, &request).await;
        assert_eq!(recv(&mut s, 2).await, [5, 0]);
        let reply = recv(&mut s, 10).await;
        assert_eq!(reply[1], 0, "CONNECT succeeded");
        send(&mut s, b"still serving").await;
        assert_eq!(recv(&mut s, 13).await, b"still serving");
        drop(flood);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
