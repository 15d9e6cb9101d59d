//! `socksmith serve` settings from every source: flag > environment (`SOCKSMITH_<KEY>`) >
//! config file > default, the `--listen` short forms, `--quiet`, `--check`, and the
//! deprecated `allow_loopback` key.

mod serve_support;

use std::net::SocketAddr;

use serve_support::*;
use socksmith_testkit::raw::socks5_connect;
use socksmith_testkit::socksmith::{run, SocksmithServer};
use socksmith_testkit::{within, EchoServer, TEST_DEADLINE};

fn write_config(dir: &TestDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write the config file");
    path.to_str().expect("UTF-8 path").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flag_beats_the_environment_which_beats_the_file() {
    within(TEST_DEADLINE, "precedence", async {
        let dir = TestDir::new("precedence");
        let config = write_config(&dir, "c.toml", "listen = [\"127.0.0.1:0\"]\n");
        let ip = |server: &SocksmithServer| server.addr().ip().to_string();

        // The file alone.
        let file = SocksmithServer::try_start(bin(), &["serve", "--config", &config], &[], 1)
            .await
            .expect("start");
        assert_eq!(ip(&file), "127.0.0.1");
        // The environment over the file (the config file itself named by the environment).
        let env = SocksmithServer::try_start(
            bin(),
            &["serve"],
            &[
                ("SOCKSMITH_CONFIG", &config),
                ("SOCKSMITH_LISTEN", "127.0.0.3:0"),
            ],
            1,
        )
        .await
        .expect("start");
        assert_eq!(ip(&env), "127.0.0.3");
        // The flag over both.
        let flag = SocksmithServer::try_start(
            bin(),
            &["serve", "--config", &config, "--listen", "127.0.0.4:0"],
            &[("SOCKSMITH_LISTEN", "127.0.0.3:0")],
            1,
        )
        .await
        .expect("start");
        assert_eq!(ip(&flag), "127.0.0.4");
        // A list in the environment: comma-separated.
        let two = SocksmithServer::try_start(
            bin(),
            &["serve"],
            &[("SOCKSMITH_LISTEN", "127.0.0.5:0,127.0.0.6:0")],
            2,
        )
        .await
        .expect("start");
        let ips: Vec<String> = two.addrs().iter().map(|a| a.ip().to_string()).collect();
        assert_eq!(ips, ["127.0.0.5", "127.0.0.6"]);
        // The global --log-format too.
        let mut json = SocksmithServer::try_start(
            bin(),
            &["serve", "--listen", "127.0.0.1:0"],
            &[("SOCKSMITH_LOG_FORMAT", "json")],
            1,
        )
        .await
        .expect("start");
        json.process_mut().signal("TERM");
        json.process_mut().wait_exit(STEP).await.expect("exits");
        let log = json.stderr();
        let line = log
            .lines()
            .find(|l| l.contains("SIGTERM"))
            .unwrap_or_else(|| panic!("{log}"));
        let parsed: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
        assert_eq!(parsed["message"], "SIGTERM: shutting down", "{line}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_off_setting_can_be_switched_off_by_a_later_source() {
    within(TEST_DEADLINE, "booleans", async {
        let dir = TestDir::new("booleans");
        let open = write_config(
            &dir,
            "open.toml",
            "listen = [\"0.0.0.0:0\"]\nallow_open_proxy = true\n",
        );
        // The file allows an open proxy...
        let started = SocksmithServer::try_start(bin(), &["serve", "--config", &open], &[], 1)
            .await
            .expect("the file allows it");
        assert!(started.addr().ip().is_unspecified());
        drop(started);
        // ...the environment takes it back...
        let refused = SocksmithServer::try_start(
            bin(),
            &["serve", "--config", &open],
            &[("SOCKSMITH_ALLOW_OPEN_PROXY", "false")],
            1,
        )
        .await
        .expect_err("the environment switched it off");
        assert!(
            refused.stderr.contains("refusing to run an open proxy"),
            "{refused}"
        );
        // ...and the flag gives it again, over the environment.
        let started = SocksmithServer::try_start(
            bin(),
            &["serve", "--config", &open, "--allow-open-proxy"],
            &[("SOCKSMITH_ALLOW_OPEN_PROXY", "false")],
            1,
        )
        .await
        .expect("the flag wins");
        drop(started);
        let refused = SocksmithServer::try_start(
            bin(),
            &["serve", "--config", &open, "--allow-open-proxy=false"],
            &[],
            1,
        )
        .await
        .expect_err("--flag=false switches it off");
        assert!(
            refused.stderr.contains("refusing to run an open proxy"),
            "{refused}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_takes_a_port_a_colon_port_and_a_host_name() {
    within(TEST_DEADLINE, "listen forms", async {
        for (form, expect_ip) in [(":0", "127.0.0.1"), ("0", "127.0.0.1")] {
            let server = SocksmithServer::try_start(bin(), &["serve", "--listen", form], &[], 1)
                .await
                .expect(form);
            assert_eq!(server.addr().ip().to_string(), expect_ip, "{form}");
            assert_ne!(server.addr().port(), 0, "{form}: the real port is printed");
        }
        // A name: every address it has. localhost is 127.0.0.1, and ::1 where /etc/hosts
        // says so; every one is on loopback and serves.
        let expected: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs("localhost:0")
            .expect("localhost resolves")
            .fold(Vec::new(), |mut all, a| {
                if !all.contains(&a) {
                    all.push(a);
                }
                all
            });
        let server = SocksmithServer::try_start(
            bin(),
            &["serve", "--listen", "localhost:0"],
            &[],
            expected.len(),
        )
        .await
        .expect("localhost:0");
        let echo = EchoServer::start().await;
        for addr in server.addrs() {
            assert!(addr.ip().is_loopback(), "{addr}");
            let (mut tunnel, _) = socks5_connect(*addr, None, echo.addr())
                .await
                .unwrap_or_else(|e| panic!("through {addr}: {e}"));
            send(&mut tunnel, b"ping").await;
            assert_eq!(recv(&mut tunnel, 4).await, b"ping");
        }
        let refused = SocksmithServer::try_start(bin(), &["serve", "--listen", "::1:1080"], &[], 1)
            .await
            .expect_err("an IPv6 address needs brackets");
        assert!(
            refused.stderr.contains("expected PORT or :PORT"),
            "{refused}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_drops_the_session_lines_and_keeps_the_rest() {
    within(TEST_DEADLINE, "quiet", async {
        let echo = EchoServer::start().await;
        for quiet in [false, true] {
            let args: &[&str] = if quiet { &["-q"] } else { &[] };
            let mut server = serve(args).await;
            let (mut tunnel, _) = socks5_connect(server.addr(), None, echo.addr())
                .await
                .expect("tunnel");
            send(&mut tunnel, b"abc").await;
            assert_eq!(recv(&mut tunnel, 3).await, b"abc");
            drop(tunnel);
            // A refused handshake (a SOCKS4 request to a server that wants SOCKS5 users is
            // not this; an unsupported method set is): no acceptable method.
            let mut refused = connect(server.addr()).await;
            send(&mut refused, &[5, 1, 0x80]).await;
            assert_eq!(recv(&mut refused, 2).await, [5, 0xFF]);
            drop(refused);
            if !quiet {
                log_with(&server, "session finished", 1).await;
                log_with(&server, "handshake failed", 1).await;
            }
            // SIGTERM's line comes after the sessions' lines would have.
            server.process_mut().signal("TERM");
            let status = server.process_mut().wait_exit(STEP).await.expect("exits");
            assert!(status.success());
            let log = server.stderr();
            assert!(log.contains("SIGTERM: shutting down"), "{log}");
            assert_eq!(
                log.contains("session finished"),
                !quiet,
                "quiet={quiet}: {log}"
            );
            assert_eq!(
                log.contains("handshake failed"),
                !quiet,
                "quiet={quiet}: {log}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_validates_and_names_the_file_line_and_key() {
    within(TEST_DEADLINE, "--check", async {
        let dir = TestDir::new("check");
        let good = write_config(
            &dir,
            "good.toml",
            "listen = [\"127.0.0.1:0\"]\nmax_sessions = 10\n[timeouts]\nidle = \"5m\"\n",
        );
        let out = run(bin(), &["serve", "--config", &good, "--check"], b"").await;
        out.assert_success();
        assert!(out.stdout_str().contains("ok"), "{}", out.stdout_str());
        assert!(!out.stdout_str().contains("listening on"));

        let cases = [
            (
                "listen = [\"127.0.0.1:0\"]\n\n[timeouts]\nidle = \"ten\"\n",
                "line 4: timeouts.idle: \"ten\" is not a duration",
            ),
            (
                "max_sessions = 10\nlisen = [\"127.0.0.1:0\"]\n",
                "line 2: key `lisen`: unknown field",
            ),
            (
                "deny = [\"10.0.0.0/8\",\n        \"nonsense\"]\n",
                "line 2: deny[1]:",
            ),
        ];
        for (i, (text, expected)) in cases.into_iter().enumerate() {
            let path = write_config(&dir, &format!("bad{i}.toml"), text);
            let out = run(bin(), &["serve", "--config", &path, "--check"], b"").await;
            assert_eq!(out.status.code(), Some(1), "{text}: {out:?}");
            let stderr = out.stderr_str();
            assert!(stderr.contains(&path), "the file: {stderr}");
            assert!(stderr.contains(expected), "{expected:?} not in {stderr}");
            assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        }
        // What would stop it at start stops --check too: an open proxy.
        let open = write_config(&dir, "open.toml", "listen = [\"0.0.0.0:1080\"]\n");
        let out = run(bin(), &["serve", "--config", &open, "--check"], b"").await;
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(
            out.stderr_str().contains("refusing to run an open proxy"),
            "{}",
            out.stderr_str()
        );
        // And the environment is part of what is checked.
        let mut cmd = tokio::process::Command::new(bin());
        cmd.args(["serve", "--config", &good, "--check"])
            .env("SOCKSMITH_LISTEN", "0.0.0.0:1080");
        let out = cmd.output().await.expect("run socksmith");
        assert_eq!(out.status.code(), Some(1), "{out:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_allow_loopback_key_still_works_with_a_warning() {
    within(TEST_DEADLINE, "deprecated key", async {
        let dir = TestDir::new("deprecated");
        let config = write_config(
            &dir,
            "old.toml",
            "listen = [\"0.0.0.0:0\"]\nallow_open_proxy = true\nallow_loopback = true\n",
        );
        let server = SocksmithServer::try_start(bin(), &["serve", "--config", &config], &[], 1)
            .await
            .expect("start");
        let log = server.stderr();
        assert!(log.contains("WARN"), "{log}");
        assert!(
            log.contains("`allow_loopback` is deprecated")
                && log.contains("allow_loopback_targets"),
            "{log}"
        );
        // And it still lets clients reach loopback targets through a public listener.
        let echo = EchoServer::start().await;
        let proxy = SocketAddr::from(([127, 0, 0, 1], server.addr().port()));
        let (mut tunnel, _) = socks5_connect(proxy, None, echo.addr())
            .await
            .expect("a loopback target is allowed");
        send(&mut tunnel, b"x").await;
        assert_eq!(recv(&mut tunnel, 1).await, b"x");
    })
    .await;
}
