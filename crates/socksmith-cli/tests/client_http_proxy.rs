//! The client commands with `http://` proxies (tinyproxy, started on loopback by the testkit):
//! `connect` alone and in mixed chains, `forward`, `check`'s HTTP report, `serve --upstream
//! http://...` (CONNECT relayed, BIND and UDP ASSOCIATE answered 0x07), the exit statuses
//! scripts rely on, and `NO_PROXY`/`--noproxy` sending matching targets around the proxy.
//!
//! tinyproxy closes both directions at the first EOF (as microsocks does), so no test here
//! half-closes and then waits for more: stdin stays open until the echo is back.

mod serve_support;

use std::process::Stdio;

use serde_json::Value;
use serve_support::bin;
use socksmith_testkit::dante::{Dante, DanteOptions};
use socksmith_testkit::microsocks::{Microsocks, MicrosocksOptions};
use socksmith_testkit::process::{run_command, CLIENT_DEADLINE};
use socksmith_testkit::raw::{
    echo_exact, socks5_bind, socks5_connect, socks5_udp_associate, RawError,
};
use socksmith_testkit::socksmith::{run, SocksmithServer};
use socksmith_testkit::tinyproxy::{Tinyproxy, TinyproxyOptions};
use socksmith_testkit::{pattern, within, CmdOutput, EchoServer, ProxyKind, TEST_DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `socksmith connect ARGS... TARGET` with `env`, writing `line` and reading its echo before
/// closing stdin; returns the command's stderr after it exits successfully.
async fn connect_echo(args: &[String], target: &str, env: &[(&str, &str)]) -> String {
    let line = b"through the http hop\n";
    let mut child = tokio::process::Command::new(bin())
        .arg("connect")
        .args(args)
        .arg(target)
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn socksmith connect");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    stdin.write_all(line).await.expect("write");
    let mut back = vec![0; line.len()];
    let read = tokio::time::timeout(CLIENT_DEADLINE, stdout.read_exact(&mut back)).await;
    drop(stdin);
    let out = child.wait_with_output().await.expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        matches!(read, Ok(Ok(_))) && back == line,
        "connect {args:?} {target}: no echo ({read:?}); stderr:\n{stderr}"
    );
    stderr
}

/// `socksmith ARGS...` with stdin closed and no proxy variables; its output.
async fn socksmith(args: &[&str]) -> CmdOutput {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.args(args)
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    run_command(cmd, b"", CLIENT_DEADLINE).await
}

fn exit_code(out: &CmdOutput) -> Option<i32> {
    out.status.code()
}

#[tokio::test]
async fn connect_through_tinyproxy_alone_and_in_mixed_chains() {
    within(TEST_DEADLINE, "connect via tinyproxy", async {
        let (Some(tp), Some(tp_auth), Some(ms), Some(dante)) = (
            Tinyproxy::start(TinyproxyOptions::default()).await,
            Tinyproxy::start(TinyproxyOptions::with_auth()).await,
            Microsocks::start(MicrosocksOptions::default()).await,
            Dante::start(DanteOptions::default()).await,
        ) else {
            return;
        };
        let echo = EchoServer::start().await;
        let by_ip = echo.addr().to_string();
        let by_name = format!("localhost:{}", echo.addr().port());
        let x = |url: String| ["-x".to_owned(), url];
        connect_echo(&x(tp.url()), &by_ip, &[]).await;
        connect_echo(&x(tp_auth.url_encoded()), &by_name, &[]).await;
        // The corporate proxy in front, a SOCKS hop behind it: -x http://... -x socks5h://...
        let chain = [x(tp_auth.url()), x(ms.proxy(ProxyKind::Socks5h).url())].concat();
        connect_echo(&chain, &by_name, &[]).await;
        // SOCKS first, then HTTP.
        let chain = [x(dante.proxy(ProxyKind::Socks5).url()), x(tp.url())].concat();
        connect_echo(&chain, &by_ip, &[]).await;
        // The proxy from the environment.
        connect_echo(&[], &by_ip, &[("ALL_PROXY", &tp.url())]).await;
        let log = tp_auth.log();
        assert!(log.contains(&format!("CONNECT {}", ms.addr())), "{log}");
    })
    .await;
}

#[tokio::test]
async fn forward_through_tinyproxy() {
    within(TEST_DEADLINE, "forward via tinyproxy", async {
        let Some(tp) = Tinyproxy::start(TinyproxyOptions::with_auth()).await else {
            return;
        };
        let echo = EchoServer::start().await;
        let spec = format!("0:127.0.0.1:{}", echo.addr().port());
        let forward =
            SocksmithServer::try_start(bin(), &["forward", "-x", &tp.url(), "-L", &spec], &[], 1)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..3 {
            let local = TcpStream::connect(forward.addr()).await.expect("connect");
            let data = pattern(64 * 1024);
            let back = echo_exact(local, &data)
                .await
                .expect("echo through forward");
            assert!(back == data, "the echo came back different");
        }
    })
    .await;
}

#[tokio::test]
async fn serve_upstream_http_relays_connect_and_refuses_bind_and_udp() {
    within(TEST_DEADLINE, "serve --upstream http", async {
        let Some(tp) = Tinyproxy::start(TinyproxyOptions::with_auth()).await else {
            return;
        };
        let server = SocksmithServer::start(bin(), &["--upstream", &tp.url()]).await;
        let echo = EchoServer::start().await;
        for target in [
            socksmith_testkit::Target::from(echo.addr()),
            socksmith_testkit::Target::Domain("localhost".into(), echo.addr().port()),
        ] {
            let (tunnel, _) = socks5_connect(server.addr(), None, target)
                .await
                .expect("CONNECT through socksmith and tinyproxy");
            let data = pattern(256 * 1024);
            let back = echo_exact(tunnel, &data).await.expect("echo");
            assert!(back == data, "the echo came back different");
        }
        let log = tp.log();
        assert!(
            log.contains(&format!("CONNECT localhost:{}", echo.addr().port())),
            "the name went to tinyproxy:\n{log}"
        );
        // BIND and UDP ASSOCIATE cannot go through an HTTP proxy: 0x07.
        let bind = socks5_bind(server.addr(), None, echo.addr()).await;
        assert!(matches!(bind, Err(RawError::Rejected(0x07))), "{bind:?}");
        let udp = socks5_udp_associate(server.addr(), None, echo.addr()).await;
        assert!(matches!(udp, Err(RawError::Rejected(0x07))), "{udp:?}");
        // A target tinyproxy refuses (its filter admits loopback only): 0x02 from its 403.
        let refused = socks5_connect(
            server.addr(),
            None,
            socksmith_testkit::Target::Domain("not-loopback.invalid".into(), 80),
        )
        .await;
        assert!(
            matches!(refused, Err(RawError::Rejected(0x02))),
            "{refused:?}"
        );
    })
    .await;
}

async fn check_json(args: &[&str]) -> (CmdOutput, Value) {
    let mut full = vec!["check", "--json", "--timeout", "5"];
    full.extend_from_slice(args);
    let out = socksmith(&full).await;
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{}: not JSON ({e}):\n{}\n{}",
            out.command,
            out.stdout_str(),
            out.stderr_str()
        )
    });
    (out, json)
}

#[tokio::test]
async fn check_reports_what_an_http_proxy_supports() {
    within(TEST_DEADLINE, "check tinyproxy", async {
        let (Some(open), Some(auth), Some(only_443)) = (
            Tinyproxy::start(TinyproxyOptions::default()).await,
            Tinyproxy::start(TinyproxyOptions::with_auth()).await,
            Tinyproxy::start(TinyproxyOptions {
                connect_ports: vec![443],
                ..TinyproxyOptions::default()
            })
            .await,
        ) else {
            return;
        };
        let (out, json) = check_json(&["-x", &open.url()]).await;
        out.assert_success();
        let caps = &json["capabilities"];
        for yes in ["http_connect", "any_port", "basic_auth", "remote_dns"] {
            assert_eq!(caps[yes]["support"], "yes", "{yes}: {json:#}");
        }
        assert_eq!(caps["basic_auth"]["detail"], "not required", "{json:#}");
        for no in ["socks5", "socks4", "bind", "udp_associate", "resolve"] {
            assert_eq!(caps[no]["support"], "no", "{no}: {json:#}");
        }
        assert_eq!(json["connect_works"], true);

        let (out, json) = check_json(&["-x", &auth.url()]).await;
        out.assert_success();
        let basic = &json["capabilities"]["basic_auth"];
        assert_eq!(basic["support"], "yes", "{json:#}");
        assert!(
            basic["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("required (HTTP 407")),
            "{json:#}"
        );
        // Without credentials: exit 4, and the report says what is missing.
        let (out, json) = check_json(&["-x", &auth.url_without_auth()]).await;
        assert_eq!(exit_code(&out), Some(4), "{out}");
        assert_eq!(
            json["capabilities"]["basic_auth"]["support"], "no",
            "{json:#}"
        );
        // CONNECT to port 443 only: the echo's port is refused, exit 5.
        let (out, json) = check_json(&["-x", &only_443.url()]).await;
        assert_eq!(exit_code(&out), Some(5), "{out}");
        assert_eq!(
            json["capabilities"]["any_port"]["support"], "no",
            "{json:#}"
        );
        // The table names the HTTP rows.
        let out = socksmith(&["check", "-x", &open.url()]).await;
        out.assert_success();
        let table = out.stdout_str();
        for row in [
            "HTTP CONNECT",
            "any port",
            "Basic auth",
            "verdict        CONNECT works",
        ] {
            assert!(table.contains(row), "{row}:\n{table}");
        }
    })
    .await;
}

#[tokio::test]
async fn exit_statuses_tell_failures_apart() {
    within(TEST_DEADLINE, "exit statuses", async {
        let Some(tp) = Tinyproxy::start(TinyproxyOptions::with_auth()).await else {
            return;
        };
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .to_string();
        // A proxy that accepts and never answers, and one that answers nonsense.
        let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let silent_addr = silent.local_addr().expect("addr");
        let garbage = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let garbage_addr = garbage.local_addr().expect("addr");
        let _keep = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                tokio::select! {
                    Ok((conn, _)) = silent.accept() => held.push(conn),
                    Ok((mut conn, _)) = garbage.accept() => {
                        let _ = conn.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await;
                        held.push(conn);
                    }
                }
            }
        });
        let echo_server = EchoServer::start().await;
        let echo = echo_server.addr().to_string();
        let cases: [(Vec<String>, i32, &str); 7] = [
            (
                vec!["-x".into(), "ftp://h".into(), echo.clone()],
                2,
                "unsupported scheme",
            ),
            (vec![echo.clone()], 2, "give --proxy URL or set ALL_PROXY"),
            (
                vec!["-x".into(), format!("http://{dead}"), echo.clone()],
                3,
                "connecting to the proxy",
            ),
            (
                vec!["-x".into(), tp.url_with_wrong_password(), echo.clone()],
                4,
                "wrong username or password",
            ),
            (
                vec!["-x".into(), tp.url(), dead.clone()],
                5,
                "refused with HTTP 500",
            ),
            (
                vec![
                    "--timeout".into(),
                    "300ms".into(),
                    "-x".into(),
                    format!("http://{silent_addr}"),
                    echo.clone(),
                ],
                6,
                "no answer within 300ms",
            ),
            (
                vec!["-x".into(), format!("http://{garbage_addr}"), echo.clone()],
                7,
                "malformed HTTP response",
            ),
        ];
        for (args, code, message) in cases {
            let mut full = vec!["connect"];
            full.extend(args.iter().map(String::as_str));
            let out = socksmith(&full).await;
            assert_eq!(exit_code(&out), Some(code), "{out}");
            let stderr = out.stderr_str();
            assert!(stderr.starts_with("socksmith: "), "{stderr}");
            assert!(stderr.contains(message), "{message}: {stderr}");
            assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        }
        // forward: a bad -L is a usage error.
        let out = socksmith(&["forward", "-x", &tp.url(), "-L", "nonsense"]).await;
        assert_eq!(exit_code(&out), Some(2), "{out}");
        // check: an unreachable proxy is 3.
        let out = socksmith(&["check", "-x", &format!("http://{dead}")]).await;
        assert_eq!(exit_code(&out), Some(3), "{out}");
        // --help documents them.
        for command in ["connect", "forward", "check"] {
            let out = socksmith(&[command, "--help"]).await;
            out.assert_success();
            assert!(
                out.stdout_str().contains("Exit status:\n  0  success"),
                "{command} --help:\n{}",
                out.stdout_str()
            );
        }
    })
    .await;
}

#[tokio::test]
async fn no_proxy_sends_matching_targets_around_the_proxy() {
    within(TEST_DEADLINE, "NO_PROXY", async {
        let Some(tp) = Tinyproxy::start(TinyproxyOptions::default()).await else {
            return;
        };
        let echo = EchoServer::start().await;
        let port = echo.addr().port();
        let by_name = format!("localhost:{port}");
        let dead_proxy = {
            let addr = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port");
            format!("http://{addr}")
        };
        let x = |url: &str| vec!["-x".to_owned(), url.to_owned()];
        // The proxy is dead: only a direct connection can work.
        connect_echo(
            &x(&dead_proxy),
            &by_name,
            &[("NO_PROXY", "example.test, localhost")],
        )
        .await;
        connect_echo(
            &x(&dead_proxy),
            &echo.addr().to_string(),
            &[("no_proxy", "127.0.0.0/8")],
        )
        .await;
        connect_echo(&x(&dead_proxy), &by_name, &[("NO_PROXY", "*")]).await;
        let flag = [
            x(&dead_proxy),
            vec!["--noproxy".into(), ".localhost,localhost".into()],
        ]
        .concat();
        connect_echo(&flag, &by_name, &[("NO_PROXY", "other.test")]).await;
        // Not matched: through the proxy (tinyproxy sees it).
        connect_echo(
            &x(&tp.url()),
            &by_name,
            &[("NO_PROXY", "127.0.0.1, example.test")],
        )
        .await;
        let log = tp.log();
        assert!(log.contains(&format!("CONNECT localhost:{port}")), "{log}");
        // `--noproxy ''` overrides the environment: through the proxy again.
        let flag = [x(&tp.url()), vec!["--noproxy".into(), String::new()]].concat();
        connect_echo(&flag, &echo.addr().to_string(), &[("NO_PROXY", "*")]).await;
        let log = tp.log();
        assert!(log.contains(&format!("CONNECT {}", echo.addr())), "{log}");
        // forward too: a dead proxy, and the target reached directly.
        let spec = format!("0:localhost:{port}");
        let forward = SocksmithServer::try_start(
            bin(),
            &["forward", "-x", &dead_proxy, "-L", &spec],
            &[("NO_PROXY", "localhost")],
            1,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let local = TcpStream::connect(forward.addr()).await.expect("connect");
        let data = pattern(10_000);
        let back = echo_exact(local, &data)
            .await
            .expect("echo through forward");
        assert!(back == data, "the echo came back different");
        // A bypassed target that refuses exits 5, naming NO_PROXY.
        let out = run(
            bin(),
            &[
                "connect",
                "-x",
                &dead_proxy,
                "--noproxy",
                "*",
                "127.0.0.1:1",
            ],
            b"",
        )
        .await;
        assert_eq!(out.status.code(), Some(5), "{out}");
        assert!(out.stderr_str().contains("NO_PROXY"), "{out}");
    })
    .await;
}
