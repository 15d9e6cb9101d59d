//! The default policy refuses the proxy host's own addresses to remote clients, not only its
//! loopback (issue 13, finding 2): with the server on 10.9.9.1 and a service on 0.0.0.0,
//! CONNECT 10.9.9.1:PORT must be refused like CONNECT 127.0.0.1:PORT, and an address added
//! while the server runs is refused too.
//!
//! Runs inside a private network namespace (`unshare -n`, 10.9.9.1/24 on its `lo`): the test
//! re-executes itself there, so no packet can leave the machine. Needs root, `unshare` and
//! `ip` (missing ones fail under `SOCKSMITH_REQUIRE_PEERS=1`, by the testkit's rule).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use socksmith::policy::{LoopbackTargets, Rules};
use socksmith::server::{Server, ServerConfig, Users};
use socksmith_testkit::tools::{require_root, require_tool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Set in the re-executed test process, which runs inside the namespace.
const IN_NAMESPACE: &str = "SOCKSMITH_TEST_IN_NETNS";
const STEP: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosts_interface_addresses_are_refused_to_remote_clients() {
    if std::env::var_os(IN_NAMESPACE).is_some() {
        tokio::time::timeout(STEP * 3, inside_the_namespace())
            .await
            .expect("the namespace test finishes in time");
        return;
    }
    let Some(()) = require_root("unshare -n needs root") else {
        return;
    };
    let (Some(unshare), Some(_)) = (require_tool("unshare"), require_tool("ip")) else {
        return;
    };
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = tokio::process::Command::new(unshare);
    cmd.args([
        "-n",
        "sh",
        "-c",
        "ip link set lo up && ip addr add 10.9.9.1/24 dev lo && exec \"$0\" --exact \
         the_hosts_interface_addresses_are_refused_to_remote_clients --nocapture",
    ])
    .arg(&exe)
    .env(IN_NAMESPACE, "1")
    .kill_on_drop(true);
    let out = tokio::time::timeout(STEP * 4, cmd.output())
        .await
        .expect("the namespace test finishes in time")
        .expect("unshare runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "inside the namespace: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
}

/// Runs in the namespace: a service on 0.0.0.0, servers on 10.9.9.1 with a password (so
/// that a non-loopback listener is allowed), clients connecting to them over 10.9.9.1, which
/// is not loopback: remote clients as far as the policy knows.
async fn inside_the_namespace() {
    let service = TcpListener::bind("0.0.0.0:0").await.expect("bind service");
    let service_port = service.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = service.accept().await {
            let _ = stream.write_all(b"internal admin port\n").await;
        }
    });

    let guarded = start_server(Rules::default()).await;
    for target in ["10.9.9.1", "127.0.0.1"] {
        let reply = connect_through(guarded, target.parse().expect("literal"), service_port).await;
        assert_eq!(
            reply, 0x02,
            "CONNECT {target}:{service_port} must be refused"
        );
    }

    // An address added while the server runs is the host's as soon as the snapshot is
    // renewed (at most a second later).
    let added = tokio::process::Command::new("ip")
        .args(["addr", "add", "10.9.9.2/24", "dev", "lo"])
        .status()
        .await
        .expect("ip runs");
    assert!(added.success(), "ip addr add 10.9.9.2: {added}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reply = connect_through(guarded, "10.9.9.2".parse().expect("literal"), service_port).await;
    assert_eq!(reply, 0x02, "an address added at run time is refused too");

    // The refusal is the policy's: with the host's addresses allowed, the same request
    // reaches the service.
    let open = start_server(Rules::default().loopback(LoopbackTargets::Allow)).await;
    let reply = connect_through(open, "10.9.9.1".parse().expect("literal"), service_port).await;
    assert_eq!(reply, 0x00, "allowed when the policy allows the host");
}

/// A server on 10.9.9.1 with user `u`, password `p`; runs until the test process ends.
async fn start_server(policy: Rules) -> SocketAddr {
    let mut users = Users::new();
    users.insert("u", "p").expect("valid user");
    let mut config = ServerConfig::default();
    config.auth = Some(Arc::new(users));
    config.policy = Arc::new(policy);
    config.connect_timeout = STEP;
    let listener = TcpListener::bind("10.9.9.1:0").await.expect("bind server");
    let addr = listener.local_addr().expect("address");
    let server = Server::new(config);
    let (keep, stop) = oneshot::channel::<()>();
    tokio::spawn(async move {
        server
            .serve(vec![listener], async {
                let _ = stop.await;
            })
            .await
            .expect("the server serves");
    });
    std::mem::forget(keep);
    addr
}

/// SOCKS5 with username/password, CONNECT `ip:port`; returns the reply code.
async fn connect_through(server: SocketAddr, ip: IpAddr, port: u16) -> u8 {
    let IpAddr::V4(v4) = ip else {
        panic!("IPv4 targets only")
    };
    let mut stream = TcpStream::connect(server).await.expect("connect to server");
    stream.write_all(&[5, 1, 2]).await.expect("greeting");
    let mut method = [0u8; 2];
    stream.read_exact(&mut method).await.expect("method");
    assert_eq!(method, [5, 2], "username/password chosen");
    stream
        .write_all(&[1, 1, b'u', 1, b'p'])
        .await
        .expect("credentials");
    let mut status = [0u8; 2];
    stream.read_exact(&mut status).await.expect("auth status");
    assert_eq!(status, [1, 0], "authenticated");
    let mut request = vec![5, 1, 0, 1];
    request.extend_from_slice(&v4.octets());
    request.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&request).await.expect("request");
    let mut reply = [0u8; 10];
    stream.read_exact(&mut reply).await.expect("reply");
    assert_eq!(reply[0], 5);
    reply[1]
}
