//! `socksmith forward` against real servers: `listening on ADDR` per `-L`, 50 concurrent
//! tunnels through one proxy and through a two-hop chain, a refused target closing only its
//! own connection, a clean exit on SIGTERM, the idle timeout (with a unit) and a refused
//! `--max-connections 0`.

mod serve_support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use serve_support::{bin, serve};
use socksmith_testkit::dante::{Dante, DanteOptions};
use socksmith_testkit::microsocks::{dante_and_microsocks, MicrosocksOptions};
use socksmith_testkit::socksmith::parse_listening;
use socksmith_testkit::{pattern, within, EchoServer, ProxyKind, TEST_DEADLINE};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// A running `socksmith forward`, killed on drop; its stderr is collected for messages.
struct Forwarder {
    child: Child,
    listening: Vec<SocketAddr>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Forwarder {
    /// Starts `socksmith forward ARGS` and waits for one `listening on` line per `-L`.
    async fn start(args: &[String]) -> Self {
        let expected = args.iter().filter(|a| *a == "-L").count();
        let mut child = Command::new(bin())
            .arg("forward")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn socksmith forward");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut err_pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("not poisoned")
                    .extend_from_slice(&buf[..n]);
            }
        });
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut listening = Vec::new();
        while listening.len() < expected {
            match lines.next_line().await.expect("read stdout") {
                Some(line) => listening.extend(parse_listening(&line)),
                None => panic!(
                    "socksmith forward exited before listening:\n{}",
                    String::from_utf8_lossy(&stderr.lock().expect("not poisoned"))
                ),
            }
        }
        Forwarder {
            child,
            listening,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("not poisoned")).into_owned()
    }
}

/// Opens `n` connections to `addr` at once; each sends its own 16 KiB and checks the echo.
async fn concurrent_echoes(addr: SocketAddr, n: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        tasks.spawn(async move {
            let mut data = pattern(16 * 1024);
            data[0] = i as u8;
            let mut conn = TcpStream::connect(addr)
                .await
                .expect("connect to the forward");
            let (mut r, mut w) = conn.split();
            let write = w.write_all(&data);
            let mut back = vec![0; data.len()];
            let read = r.read_exact(&mut back);
            let (wrote, read) = tokio::join!(write, read);
            wrote.expect("write");
            read.unwrap_or_else(|e| panic!("connection {i}: {e}"));
            assert!(back == data, "connection {i}: echo differs");
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a connection task panicked");
    }
}

#[tokio::test]
async fn fifty_concurrent_tunnels_through_dante_on_two_forwardings() {
    within(TEST_DEADLINE, "forward via dante", async {
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        let echo = EchoServer::start().await;
        let port = echo.addr().port();
        let fwd = Forwarder::start(&[
            "--proxy".into(),
            dante.proxy(ProxyKind::Socks5h).url(),
            "-L".into(),
            format!("127.0.0.1:0:127.0.0.1:{port}"),
            "-L".into(),
            format!("0:localhost:{port}"),
        ])
        .await;
        assert_eq!(fwd.listening.len(), 2);
        for addr in &fwd.listening {
            assert!(addr.ip().is_loopback(), "{addr}");
            concurrent_echoes(*addr, 50).await;
        }
        assert!(echo.accepted() >= 100, "{}", fwd.stderr());
    })
    .await;
}

#[tokio::test]
async fn fifty_concurrent_tunnels_through_a_two_hop_chain() {
    within(TEST_DEADLINE, "forward via chain", async {
        let Some((dante, ms)) =
            dante_and_microsocks(DanteOptions::default(), MicrosocksOptions::with_auth()).await
        else {
            return;
        };
        let echo = EchoServer::start().await;
        let fwd = Forwarder::start(&[
            "--proxy".into(),
            ms.proxy(ProxyKind::Socks5).url(),
            "--proxy".into(),
            dante.proxy(ProxyKind::Socks4).url(),
            "-L".into(),
            format!("0:{}", echo.addr()),
        ])
        .await;
        concurrent_echoes(fwd.listening[0], 50).await;
    })
    .await;
}

#[tokio::test]
async fn a_refused_target_closes_the_local_connection_and_sigterm_stops_the_command() {
    within(TEST_DEADLINE, "forward errors", async {
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let mut fwd = Forwarder::start(&[
            "--proxy".into(),
            dante.proxy(ProxyKind::Socks5).url(),
            "-L".into(),
            format!("0:{dead}"),
        ])
        .await;
        let mut conn = TcpStream::connect(fwd.listening[0]).await.expect("connect");
        let mut buf = [0u8; 16];
        let n = conn.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0, "the local connection is closed");
        // The failure is logged with hop, step and reply code; the forward keeps serving.
        let mut conn = TcpStream::connect(fwd.listening[0])
            .await
            .expect("still listening");
        let _ = conn.read(&mut buf).await;
        let pid = fwd.child.id().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("kill");
        assert!(status.success());
        let exit = fwd.child.wait().await.expect("wait");
        assert!(exit.success(), "{exit}: {}", fwd.stderr());
        let log = fwd.stderr();
        assert!(
            log.contains("connection refused (reply 0x05)"),
            "the refusal is logged: {log}"
        );
    })
    .await;
}

#[tokio::test]
async fn fifty_concurrent_tunnels_through_socksmith_serve_and_ssh() {
    within(TEST_DEADLINE, "forward via socksmith and ssh", async {
        let server = serve(&[]).await;
        let echo = EchoServer::start().await;
        let fwd = Forwarder::start(&[
            "--proxy".into(),
            server.proxy(ProxyKind::Socks5).url(),
            "-L".into(),
            format!("0:{}", echo.addr()),
        ])
        .await;
        concurrent_echoes(fwd.listening[0], 50).await;
        let Some(ssh) = socksmith_testkit::ssh::SshDynamic::start().await else {
            return;
        };
        let fwd = Forwarder::start(&[
            "--proxy".into(),
            ssh.proxy(ProxyKind::Socks4a).url(),
            "-L".into(),
            format!("0:localhost:{}", echo.addr().port()),
        ])
        .await;
        concurrent_echoes(fwd.listening[0], 50).await;
    })
    .await;
}

#[tokio::test]
async fn an_idle_tunnel_closes_after_an_idle_timeout_given_with_a_unit() {
    within(TEST_DEADLINE, "forward idle timeout", async {
        let server = serve(&[]).await;
        let echo = EchoServer::start().await;
        let fwd = Forwarder::start(&[
            "--proxy".into(),
            server.proxy(ProxyKind::Socks5).url(),
            "--timeout".into(),
            "5s".into(),
            "--idle-timeout".into(),
            "300ms".into(),
            "-L".into(),
            format!("0:{}", echo.addr()),
        ])
        .await;
        let mut conn = TcpStream::connect(fwd.listening[0]).await.expect("connect");
        conn.write_all(b"ping").await.expect("write");
        let mut back = [0u8; 4];
        conn.read_exact(&mut back).await.expect("echo");
        assert_eq!(&back, b"ping");
        // Then silence: the forward closes the tunnel, the local side sees EOF.
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            conn.read_to_end(&mut rest),
        )
        .await;
        assert!(
            matches!(read, Ok(Ok(0))),
            "the idle tunnel is closed: {read:?} after {:?}\n{}",
            started.elapsed(),
            fwd.stderr()
        );
    })
    .await;
}

#[tokio::test]
async fn zero_max_connections_is_refused() {
    within(TEST_DEADLINE, "forward --max-connections 0", async {
        let out = socksmith_testkit::socksmith::run(
            bin(),
            &[
                "forward",
                "--max-connections",
                "0",
                "--proxy",
                "socks5://127.0.0.1:1",
                "-L",
                "0:127.0.0.1:9",
            ],
            b"",
        )
        .await;
        out.assert_failure();
        assert!(out.stdout.is_empty(), "it never listened: {out}");
        let err = out.stderr_str();
        assert!(
            err.contains("'0' for '--max-connections <N>'") && err.contains("1..=1000000"),
            "{err}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_target_the_chain_cannot_carry_is_refused_before_listening() {
    within(TEST_DEADLINE, "forward: IPv6 over SOCKS4a", async {
        // Nothing listens on the proxy's port: the target is judged before any connection.
        let out = socksmith_testkit::socksmith::run(
            bin(),
            &[
                "forward",
                "-x",
                "socks4a://127.0.0.1:1",
                "-L",
                "0:[::1]:8080",
            ],
            b"",
        )
        .await;
        assert_eq!(out.status.code(), Some(2), "a usage error: {out}");
        assert!(
            out.stderr_str()
                .contains("SOCKS4 cannot carry an IPv6 address"),
            "{out}"
        );
        assert!(!out.stdout_str().contains("listening on"), "{out}");
    })
    .await;
}
