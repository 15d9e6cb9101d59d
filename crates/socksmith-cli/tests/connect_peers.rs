//! `socksmith connect` against real servers: stdin to the target and the target to stdout,
//! EOF on stdin half-closes (not with `--no-shutdown`), stdin still flows to a target that
//! stopped sending first, the command exits once both ways are done (quietly when its stdout
//! reader stops early); `ALL_PROXY`; chains; errors on stderr naming hop, step and reply code.

mod serve_support;

use std::process::Stdio;

use serve_support::bin;
use socksmith_testkit::dante::{Dante, DanteOptions};
use socksmith_testkit::microsocks::{dante_and_microsocks, MicrosocksOptions};
use socksmith_testkit::process::{run_command, CLIENT_DEADLINE};
use socksmith_testkit::socksmith::run;
use socksmith_testkit::ssh::SshDynamic;
use socksmith_testkit::{pattern, within, EchoServer, ProxyKind, SourceServer, TEST_DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `socksmith connect --proxy URL... TARGET` with `input` on stdin; asserts success and that
/// stdout is `expected`.
async fn connect_ok(urls: &[String], target: &str, input: &[u8], expected: &[u8]) {
    let mut args = vec!["connect"];
    for u in urls {
        args.extend(["--proxy", u.as_str()]);
    }
    args.push(target);
    let out = run(bin(), &args, input).await;
    out.assert_success();
    assert!(
        out.stdout == expected,
        "{}: stdout has {} bytes, expected {}",
        out.command,
        out.stdout.len(),
        expected.len()
    );
}

#[tokio::test]
async fn pipes_through_dante_and_ssh_in_every_version_and_exits_after_the_half_close() {
    within(TEST_DEADLINE, "connect via dante and ssh", async {
        let (Some(dante), Some(ssh)) = (
            Dante::start(DanteOptions::default()).await,
            SshDynamic::start().await,
        ) else {
            return;
        };
        let echo = EchoServer::start().await;
        let data = pattern(256 * 1024);
        let by_ip = echo.addr().to_string();
        let by_name = format!("localhost:{}", echo.addr().port());
        for (proxy, target) in [
            (dante.proxy(ProxyKind::Socks5), &by_ip),
            (dante.proxy(ProxyKind::Socks5h), &by_name),
            (dante.proxy(ProxyKind::Socks4), &by_name),
            (ssh.proxy(ProxyKind::Socks4a), &by_name),
            (ssh.proxy(ProxyKind::Socks5), &by_ip),
        ] {
            // EOF on stdin shuts down the write side; the echo server then closes its side,
            // which ends the command with the whole echo on stdout.
            connect_ok(&[proxy.url()], target, &data, &data).await;
        }
        if let Some(echo6) = EchoServer::start_v6().await {
            let target = echo6.addr().to_string();
            assert!(target.starts_with("[::1]:"));
            connect_ok(
                &[dante.proxy(ProxyKind::Socks5).url()],
                &target,
                b"v6",
                b"v6",
            )
            .await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_target_that_speaks_first_and_closes_ends_the_command() {
    within(TEST_DEADLINE, "connect to a source", async {
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        let source = SourceServer::start(100_000).await;
        connect_ok(
            &[dante.proxy(ProxyKind::Socks5).url()],
            &source.addr().to_string(),
            b"",
            &pattern(100_000),
        )
        .await;
    })
    .await;
}

/// `socksmith connect ARGS...` running, its stdin, stdout and stderr piped.
fn spawn_connect(args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(bin())
        .arg("connect")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn socksmith connect")
}

/// A listener on 127.0.0.1 that hands its first connection to `serve` (a scripted proxy or
/// target); its address.
async fn serve_one<F, Fut>(serve: F) -> std::net::SocketAddr
where
    F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (conn, _) = listener.accept().await.expect("accept");
        serve(conn).await;
    });
    addr
}

/// A SOCKS5 proxy in one script: grants the first CONNECT and writes its reply together with
/// `then` in one write (the way a target's banner can arrive with the reply), then resets the
/// connection after `reset_after`, or holds it open.
async fn reply_with_bytes(then: &'static [u8], reset_after: Option<std::time::Duration>) -> String {
    let addr = serve_one(move |mut conn| async move {
        let mut greeting = [0u8; 3];
        conn.read_exact(&mut greeting).await.expect("greeting");
        conn.write_all(&[5, 0]).await.expect("method");
        let mut request = [0u8; 10];
        conn.read_exact(&mut request)
            .await
            .expect("CONNECT to an IPv4 address");
        let reply_and_bytes = [&[5, 0, 0, 1, 127, 0, 0, 1, 0, 9][..], then].concat();
        conn.write_all(&reply_and_bytes).await.expect("reply");
        match reset_after {
            Some(after) => {
                tokio::time::sleep(after).await;
                conn.set_zero_linger().expect("SO_LINGER 0");
                drop(conn); // a reset
            }
            None => tokio::time::sleep(TEST_DEADLINE).await,
        }
    })
    .await;
    format!("socks5://{addr}")
}

#[tokio::test]
async fn bytes_that_come_with_the_reply_reach_stdout_at_once_and_before_a_reset() {
    within(TEST_DEADLINE, "connect: bytes with the reply", async {
        // A banner, and stdin still open: it must show without waiting for more.
        let proxy = reply_with_bytes(b"220 banner ready\n", None).await;
        let mut child = spawn_connect(&["--proxy", &proxy, "127.0.0.1:9"]);
        let mut stdout = child.stdout.take().expect("stdout");
        let mut banner = [0u8; 17];
        tokio::time::timeout(CLIENT_DEADLINE, stdout.read_exact(&mut banner))
            .await
            .expect("the banner in time")
            .expect("read");
        assert_eq!(&banner, b"220 banner ready\n");
        drop(child);

        // The same bytes, then a reset: they still reach stdout, and the command fails.
        let proxy = reply_with_bytes(
            b"partial data\n",
            Some(std::time::Duration::from_millis(200)),
        )
        .await;
        let mut cmd = tokio::process::Command::new(bin());
        cmd.args(["connect", "--proxy", &proxy, "127.0.0.1:9"]);
        let out = run_command(cmd, b"", CLIENT_DEADLINE).await;
        assert_eq!(out.stdout, b"partial data\n", "{out}");
    })
    .await;
}

#[tokio::test]
async fn reads_all_proxy_and_chains_repeated_proxies() {
    within(TEST_DEADLINE, "connect env and chain", async {
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        let echo = EchoServer::start().await;
        let target = format!("localhost:{}", echo.addr().port());
        for var in ["ALL_PROXY", "all_proxy"] {
            let mut cmd = tokio::process::Command::new(bin());
            cmd.args(["connect", &target])
                .env_remove("ALL_PROXY")
                .env_remove("all_proxy")
                .env(var, dante.proxy(ProxyKind::Socks5h).url());
            let out = run_command(cmd, b"through the environment", CLIENT_DEADLINE).await;
            out.assert_success();
            assert_eq!(out.stdout, b"through the environment", "{var}");
        }
        // `--proxy` wins over the environment, and repeats make a chain: Dante (SOCKS5),
        // then ssh -D (SOCKS4a, resolving the name).
        let Some(ssh) = SshDynamic::start().await else {
            return;
        };
        let mut cmd = tokio::process::Command::new(bin());
        cmd.arg("connect")
            .args(["--proxy", &dante.proxy(ProxyKind::Socks5).url()])
            .args(["--proxy", &ssh.proxy(ProxyKind::Socks4a).url()])
            .arg(&target)
            .env("ALL_PROXY", "socks5://127.0.0.1:1");
        let out = run_command(cmd, b"two hops", CLIENT_DEADLINE).await;
        out.assert_success();
        assert_eq!(out.stdout, b"two hops");
    })
    .await;
}

#[tokio::test]
async fn interactive_session_through_a_chain_with_microsocks() {
    within(TEST_DEADLINE, "connect interactive", async {
        let Some((dante, ms)) =
            dante_and_microsocks(DanteOptions::default(), MicrosocksOptions::with_auth()).await
        else {
            return;
        };
        let echo = EchoServer::start().await;
        // microsocks closes both directions at the first EOF, so stdin stays open until each
        // echo is back.
        let mut child = spawn_connect(&[
            "--proxy",
            &ms.proxy(ProxyKind::Socks5).url(),
            "--proxy",
            &dante.proxy(ProxyKind::Socks4).url(),
            &echo.addr().to_string(),
        ]);
        let mut stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        // Each line comes back before the next is sent: stdout is not held back in a buffer.
        for line in ["first line\n", "second line\n"] {
            stdin.write_all(line.as_bytes()).await.expect("write");
            let mut back = vec![0; line.len()];
            stdout.read_exact(&mut back).await.expect("read the echo");
            assert_eq!(back, line.as_bytes());
        }
        drop(stdin);
        // The tunnel closes after the EOF; the command exits.
        let status = child.wait().await.expect("wait");
        assert!(status.success(), "{status}");
    })
    .await;
}

#[tokio::test]
async fn failures_exit_non_zero_with_hop_step_and_reply_code() {
    within(TEST_DEADLINE, "connect errors", async {
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let url = dante.proxy(ProxyKind::Socks5).url();
        let out = run(bin(), &["connect", "--proxy", &url, &dead.to_string()], b"").await;
        out.assert_failure();
        assert_eq!(
            out.stderr_str().trim_end(),
            format!("socksmith: hop 1 ({url}): CONNECT {dead}: connection refused (reply 0x05)")
        );
        let out = run(
            bin(),
            &["connect", "--proxy", "https://127.0.0.1", "x:1"],
            b"",
        )
        .await;
        out.assert_failure();
        assert!(
            out.stderr_str().contains("unsupported scheme"),
            "{}",
            out.stderr_str()
        );
        let out = run(
            bin(),
            &["connect", "--proxy", "socks5://u:secret@127.0.0.1:1", "x:1"],
            b"",
        )
        .await;
        out.assert_failure();
        let err = out.stderr_str();
        assert!(err.contains("socks5://u:***@127.0.0.1:1"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        // Credentials SOCKS5 cannot carry are a usage error found before any connection:
        // the first hop is Dante, alive, and never reached; the second names a user
        // without a password.
        let long_user = "u".repeat(300);
        for (second, problem) in [
            (
                "socks5://alice@127.0.0.1:1".to_owned(),
                "password of 0 bytes",
            ),
            (
                format!("socks5://{long_user}:pw@127.0.0.1:1"),
                "username of 300 bytes",
            ),
        ] {
            let out = run(bin(), &["connect", "-x", &url, "-x", &second, "x:1"], b"").await;
            assert_eq!(out.status.code(), Some(2), "{out}");
            let err = out.stderr_str();
            assert!(err.contains("hop 2 (") && err.contains(problem), "{err}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_password_never_reaches_stderr_even_when_the_url_is_malformed() {
    within(TEST_DEADLINE, "connect redacts passwords", async {
        // '/', '?' and '#' end the address in a URL, so before the user information was split
        // off at the last '@' these were printed whole. Port 1 on loopback: nothing listens.
        for url in [
            "socks5://alice:s3cr/etPW@127.0.0.1:1",
            "socks5://alice:s3cr?etPW@127.0.0.1:1",
            "socks5://alice:s3cr#etPW@127.0.0.1:1",
            "socks5h://alice:s3cr/etPW@127.0.0.1:1/path",
            "alice:s3cr/etPW@127.0.0.1:1",
        ] {
            let via_flag = run(bin(), &["connect", "-x", url, "127.0.0.1:9"], b"").await;
            let mut cmd = tokio::process::Command::new(bin());
            cmd.args(["connect", "127.0.0.1:9"])
                .env_remove("all_proxy")
                .env("ALL_PROXY", url);
            let via_env = run_command(cmd, b"", CLIENT_DEADLINE).await;
            for (out, origin) in [(via_flag, "--proxy"), (via_env, "ALL_PROXY")] {
                out.assert_failure();
                let err = out.stderr_str();
                assert!(
                    !err.contains("s3cr") && !err.contains("etPW"),
                    "{url}: {err}"
                );
                assert!(err.contains(":***@"), "{url}: {err}");
                assert!(err.contains(origin), "{url}: {err}");
            }
        }
    })
    .await;
}

#[tokio::test]
async fn pipes_through_socksmith_serve_in_every_version() {
    within(TEST_DEADLINE, "connect via socksmith serve", async {
        let server = socksmith_testkit::socksmith::SocksmithServer::start(bin(), &[]).await;
        let echo = EchoServer::start().await;
        let data = pattern(64 * 1024);
        let by_name = format!("localhost:{}", echo.addr().port());
        for kind in [
            ProxyKind::Socks4,
            ProxyKind::Socks4a,
            ProxyKind::Socks5,
            ProxyKind::Socks5h,
        ] {
            connect_ok(&[server.proxy(kind).url()], &by_name, &data, &data).await;
        }
        // Durations take a unit, as in `serve`; a plain number is seconds.
        for timeout in ["5s", "1500ms", "1m", "5", "2.5"] {
            let url = server.proxy(ProxyKind::Socks5).url();
            let out = run(
                bin(),
                &["connect", "--timeout", timeout, "-x", &url, &by_name],
                b"timed",
            )
            .await;
            out.assert_success();
            assert_eq!(out.stdout, b"timed", "--timeout {timeout}");
        }
    })
    .await;
}

/// `socksmith serve` with its defaults, and its `socks5://` URL.
async fn socksmith_socks5() -> (socksmith_testkit::socksmith::SocksmithServer, String) {
    let server = socksmith_testkit::socksmith::SocksmithServer::start(bin(), &[]).await;
    let url = server.proxy(ProxyKind::Socks5).url();
    (server, url)
}

/// A target that greets, stops sending (shuts down its write side) and reads on: what it read
/// comes back through the returned receiver once its client has ended.
async fn greets_then_listens() -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Receiver<Vec<u8>>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let addr = serve_one(|mut conn| async move {
        conn.write_all(b"hello\n").await.expect("greeting");
        conn.shutdown().await.expect("half-close");
        let mut got = Vec::new();
        let _ = conn.read_to_end(&mut got).await;
        let _ = tx.send(got);
    })
    .await;
    (addr, rx)
}

#[tokio::test]
async fn stdin_still_reaches_a_target_that_stopped_sending_first() {
    within(TEST_DEADLINE, "connect: target half-closes first", async {
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        let server = socksmith_testkit::socksmith::SocksmithServer::start(bin(), &[]).await;
        // More than the pipes and socket buffers hold, so most of it is still in stdin when
        // the target's end of stream arrives.
        let data = pattern(8 * 1024 * 1024);
        for proxy in [
            dante.proxy(ProxyKind::Socks5).url(),
            server.proxy(ProxyKind::Socks5).url(),
        ] {
            let (target, received) = greets_then_listens().await;
            let out = run(
                bin(),
                &["connect", "-x", &proxy, &target.to_string()],
                &data,
            )
            .await;
            out.assert_success();
            assert_eq!(out.stdout, b"hello\n", "{out}");
            let received = received.await.expect("the target read to its end");
            assert!(
                received == data,
                "{proxy}: the target got {} of {} bytes",
                received.len(),
                data.len()
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_reader_that_stops_early_ends_the_command_quietly() {
    within(TEST_DEADLINE, "connect | head", async {
        let server = socksmith_testkit::socksmith::SocksmithServer::start(bin(), &[]).await;
        let source = SourceServer::start(64 * 1024 * 1024).await;
        let proxy = server.proxy(ProxyKind::Socks5).url();
        let mut child = spawn_connect(&["-x", &proxy, &source.addr().to_string()]);
        let mut stdout = child.stdout.take().expect("stdout");
        let mut first = [0u8; 100];
        stdout
            .read_exact(&mut first)
            .await
            .expect("the first bytes");
        assert_eq!(first.as_slice(), &pattern(100)[..]);
        drop(stdout);
        let out = tokio::time::timeout(CLIENT_DEADLINE, child.wait_with_output())
            .await
            .expect("exits once its reader is gone")
            .expect("wait");
        assert!(out.status.success(), "{out:?}");
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await;
}

#[tokio::test]
async fn no_shutdown_keeps_the_write_side_open_after_stdin_ends() {
    within(TEST_DEADLINE, "connect --no-shutdown", async {
        let server = socksmith_testkit::socksmith::SocksmithServer::start(bin(), &[]).await;
        // A target that answers only after a pause, and says whether its client's end of
        // stream came first (as it does without --no-shutdown).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let target = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            for _ in 0..2 {
                let (mut conn, _) = listener.accept().await.expect("accept");
                let mut request = [0u8; 4];
                conn.read_exact(&mut request).await.expect("request");
                let mut more = [0u8; 1];
                let eof = matches!(
                    tokio::time::timeout(
                        std::time::Duration::from_millis(300),
                        conn.read(&mut more)
                    )
                    .await,
                    Ok(Ok(0))
                );
                let answer: &[u8] = if eof { b"saw eof\n" } else { b"still open\n" };
                conn.write_all(answer).await.expect("answer");
            }
        });
        let proxy = server.proxy(ProxyKind::Socks5).url();
        let out = run(bin(), &["connect", "-x", &proxy, &target], b"ping").await;
        out.assert_success();
        assert_eq!(out.stdout, b"saw eof\n", "{out}");
        let out = run(
            bin(),
            &["connect", "--no-shutdown", "-x", &proxy, &target],
            b"ping",
        )
        .await;
        out.assert_success();
        assert_eq!(out.stdout, b"still open\n", "{out}");
    })
    .await;
}

/// A target that reads `read` bytes (or until its client's end of stream), writes `answer`,
/// ends its stream, and a moment later closes the connection (resetting it if its client
/// sent more: the answer has reached the proxy by then).
async fn answers_and_closes(read: usize, answer: &'static [u8]) -> std::net::SocketAddr {
    serve_one(move |mut conn| async move {
        let mut got = vec![0u8; read];
        let mut filled = 0;
        while filled < read {
            match conn.read(&mut got[filled..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => filled += n,
            }
        }
        conn.write_all(answer).await.expect("answer");
        conn.shutdown().await.expect("end of stream");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        // Dropped with unread bytes queued: the kernel resets the connection.
    })
    .await
}

#[tokio::test]
async fn stdout_ends_when_the_target_closes_even_while_stdin_stays_open() {
    within(
        TEST_DEADLINE,
        "connect: stdout ends with the target",
        async {
            let server = socksmith_testkit::socksmith::SocksmithServer::start(bin(), &[]).await;
            let proxy = server.proxy(ProxyKind::Socks5).url();
            // As ssh's ProxyCommand: stdin open until stdout has ended.
            let target = answers_and_closes(4, b"bye\n").await;
            let mut child = spawn_connect(&["-x", &proxy, &target.to_string()]);
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(b"ping").await.expect("write");
            let mut stdout = child.stdout.take().expect("stdout");
            let mut out = Vec::new();
            tokio::time::timeout(CLIENT_DEADLINE, stdout.read_to_end(&mut out))
                .await
                .expect("stdout ends while stdin is still open")
                .expect("read");
            assert_eq!(out, b"bye\n");
            drop(stdin);
            let status = tokio::time::timeout(CLIENT_DEADLINE, child.wait())
                .await
                .expect("exits at the end of stdin")
                .expect("wait");
            assert!(status.success(), "{status}");
        },
    )
    .await;
}

#[tokio::test]
async fn a_target_that_closes_before_the_end_of_stdin_fails_the_command_after_its_answer() {
    within(TEST_DEADLINE, "connect: target closes first", async {
        let (_server, proxy) = socksmith_socks5().await;
        // It reads a little of a long upload, answers and closes: the rest cannot be sent.
        let target = answers_and_closes(1024, b"enough\n").await;
        let out = run(
            bin(),
            &["connect", "-x", &proxy, &target.to_string()],
            &pattern(32 * 1024 * 1024),
        )
        .await;
        // Its answer arrives whole; the part of stdin it never read is reported (as the
        // target's reset, if that reaches the client before its end of stream).
        assert_eq!(out.stdout, b"enough\n", "{out}");
        assert_eq!(out.status.code(), Some(1), "{out}");
        let err = out.stderr_str();
        assert!(
            err.contains("the target closed the connection before the end of stdin")
                || err.contains("reset"),
            "{err}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_stdin_that_fails_to_read_still_half_closes_the_tunnel() {
    within(TEST_DEADLINE, "connect: stdin read error", async {
        let (_server, proxy) = socksmith_socks5().await;
        // Answers only once its client's stream has ended.
        let target = answers_and_closes(usize::MAX >> 40, b"seen the end\n").await;
        let directory = std::fs::File::open("/").expect("open /");
        let mut cmd = tokio::process::Command::new(bin());
        cmd.args(["connect", "-x", &proxy, &target.to_string()])
            .stdin(Stdio::from(directory))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = tokio::time::timeout(CLIENT_DEADLINE, cmd.output())
            .await
            .expect("the target saw the end of stream and answered")
            .expect("run");
        assert_eq!(out.stdout, b"seen the end\n");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("relaying from stdin to the target"), "{err}");
        assert_eq!(out.status.code(), Some(1), "{err}");
    })
    .await;
}
