//! `socksmith serve` as a program: the open-proxy guard, SIGTERM/SIGINT with a grace period,
//! the config file (and flags overriding it), one-line config errors, and JSON log lines.

mod serve_support;

use std::time::{Duration, Instant};

use serve_support::*;
use socksmith_testkit::raw::{socks5_connect, RawError};
use socksmith_testkit::socksmith::SocksmithServer;
use socksmith_testkit::{within, Credentials, EchoServer, TEST_DEADLINE};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_proxy_is_refused_unless_explicitly_allowed() {
    within(TEST_DEADLINE, "open-proxy guard", async {
        let refused =
            SocksmithServer::try_start(bin(), &["serve", "--listen", "0.0.0.0:0"], &[], 1)
                .await
                .expect_err("a non-loopback listener without users must not start");
        let status = refused.status.expect("it exited");
        assert!(!status.success(), "{refused}");
        assert!(refused.stdout.is_empty(), "nothing announced: {refused}");
        assert!(
            refused
                .stderr
                .contains("refusing to run an open proxy: 0.0.0.0:"),
            "{refused}"
        );
        assert_eq!(
            refused.stderr.trim().lines().count(),
            1,
            "one clear line: {refused}"
        );

        // Users, but SOCKS4 (no password) beside them: open too.
        let refused = SocksmithServer::try_start(
            bin(),
            &[
                "serve",
                "--listen",
                "0.0.0.0:0",
                "--user",
                "u:p",
                "--allow-socks4",
            ],
            &[],
            1,
        )
        .await
        .expect_err("SOCKS4 beside users on a public address must not start");
        assert!(
            refused.stderr.contains("SOCKS4 is allowed"),
            "the message names SOCKS4: {refused}"
        );
        // The check comes before binding: an address this host does not have is refused as
        // an open proxy, not reported as impossible to bind.
        let refused =
            SocksmithServer::try_start(bin(), &["serve", "--listen", "192.0.2.1:0"], &[], 1)
                .await
                .expect_err("refused");
        assert!(
            refused
                .stderr
                .contains("refusing to run an open proxy: 192.0.2.1:0"),
            "checked before binding: {refused}"
        );

        // Meant: the explicit flag, or users.
        let open = serve(&["--listen", "0.0.0.0:0", "--allow-open-proxy"]).await;
        assert!(open.addr().ip().is_unspecified());
        // The echo target is on loopback, which a public server refuses to reach unless told.
        let echo = EchoServer::start().await;
        let creds = Credentials::new("u", "p");
        let authed = serve(&["--listen", "0.0.0.0:0", "--user", "u:p"]).await;
        let proxy = "127.0.0.1:".to_owned() + &authed.addr().port().to_string();
        let refused = socks5_connect(proxy.parse().expect("address"), Some(&creds), echo.addr())
            .await
            .expect_err("a loopback target through a public server");
        assert!(matches!(refused, RawError::Rejected(2)), "{refused}");
        let authed = serve(&[
            "--listen",
            "0.0.0.0:0",
            "--user",
            "u:p",
            "--allow-loopback-targets",
        ])
        .await;
        let proxy = "127.0.0.1:".to_owned() + &authed.addr().port().to_string();
        socks5_connect(proxy.parse().expect("address"), Some(&creds), echo.addr())
            .await
            .expect("an authenticated client gets through");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_accepting_lets_tunnels_finish_and_exits_zero() {
    within(TEST_DEADLINE, "SIGTERM", async {
        let mut server = serve(&["--shutdown-grace", "20s"]).await;
        let echo = EchoServer::start().await;
        let (mut tunnel, _) = socks5_connect(server.addr(), None, echo.addr())
            .await
            .expect("tunnel");
        server.process_mut().signal("TERM");
        log_with(&server, "shutting down: waiting for running sessions", 1).await;
        // No new clients...
        assert!(
            TcpStream::connect(server.addr()).await.is_err(),
            "still accepting"
        );
        // ... but the running tunnel still works, and its end lets the server exit at once.
        send(&mut tunnel, b"during the grace period").await;
        assert_eq!(recv(&mut tunnel, 23).await, b"during the grace period");
        drop(tunnel);
        let status = server
            .process_mut()
            .wait_exit(STEP)
            .await
            .expect("exit once the last tunnel ends, long before the grace period");
        assert!(status.success(), "exit status {status}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_cuts_idle_tunnels_after_the_grace_period_and_exits_zero() {
    within(TEST_DEADLINE, "SIGINT with grace", async {
        let mut server = serve(&["--shutdown-grace", "300ms"]).await;
        let echo = EchoServer::start().await;
        let (mut tunnel, _) = socks5_connect(server.addr(), None, echo.addr())
            .await
            .expect("tunnel");
        let signalled = Instant::now();
        server.process_mut().signal("INT");
        assert!(
            recv_to_end(&mut tunnel).await.is_empty(),
            "the tunnel is cut"
        );
        let status = server.process_mut().wait_exit(STEP).await.expect("exit");
        assert!(status.success(), "exit status {status}");
        assert!(signalled.elapsed() >= Duration::from_millis(300));
        assert!(server
            .stderr()
            .contains("grace period over: closing remaining sessions"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_sets_listeners_users_and_timeouts_and_flags_override_it() {
    within(TEST_DEADLINE, "config file", async {
        let dir = TestDir::new("config");
        let path = dir.path().join("socksmith.toml");
        std::fs::write(
            &path,
            r#"
listen = ["127.0.0.1:0", "[::1]:0"]
deny = ["127.0.0.2/32"]

[[users]]
name = "alice"
password = "from-the-file"

[timeouts]
handshake = "300ms"
"#,
        )
        .expect("write the config file");
        let config = path.to_str().expect("UTF-8 path");
        let server = SocksmithServer::try_start(bin(), &["serve", "--config", config], &[], 2)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(server.addrs().len(), 2);
        assert!(server.addrs()[1].is_ipv6());
        let echo = EchoServer::start().await;
        for proxy in server.addrs() {
            let creds = Credentials::new("alice", "from-the-file");
            socks5_connect(*proxy, Some(&creds), echo.addr())
                .await
                .expect("the file's user gets in on every listener");
        }
        // The file's handshake timeout applies.
        let started = Instant::now();
        let mut stalled = connect(server.addr()).await;
        send(&mut stalled, &[5]).await;
        assert!(recv_to_end(&mut stalled).await.is_empty());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );

        // Flags win: one listener, another user.
        let server = SocksmithServer::try_start(
            bin(),
            &[
                "serve",
                "--config",
                config,
                "--listen",
                "127.0.0.1:0",
                "--user",
                "bob:flag",
            ],
            &[],
            1,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let bob = Credentials::new("bob", "flag");
        socks5_connect(server.addr(), Some(&bob), echo.addr())
            .await
            .expect("the flag's user gets in");
        let alice = Credentials::new("alice", "from-the-file");
        assert!(socks5_connect(server.addr(), Some(&alice), echo.addr())
            .await
            .is_err());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_file_fails_with_one_line_naming_the_key() {
    within(TEST_DEADLINE, "bad config", async {
        let dir = TestDir::new("config");
        let cases = [
            (
                "listen = [\"127.0.0.1:0\"]\nlisen = 1\n",
                "line 2: key `lisen`: unknown field `lisen`",
            ),
            (
                "[timeouts]\nidle = \"ten minutes\"\n",
                "timeouts.idle: \"ten minutes\" is not a duration",
            ),
            (
                "deny = [\"not-a-net\"]\n",
                "deny[0]: \"not-a-net\" is not an IP address",
            ),
            // A password's value is never shown, even when it is of the wrong type.
            (
                "[[users]]\nname = \"a\"\npassword = 12345678\n",
                "line 3: key `password`: expected a string, found integer (value not shown",
            ),
        ];
        for (i, (text, expected)) in cases.into_iter().enumerate() {
            let path = dir.path().join(format!("bad{i}.toml"));
            std::fs::write(&path, text).expect("write");
            let config = path.to_str().expect("UTF-8 path");
            let failed = SocksmithServer::try_start(bin(), &["serve", "--config", config], &[], 1)
                .await
                .expect_err("a bad config must not start");
            assert!(!failed.status.expect("it exited").success());
            let stderr = failed.stderr.trim();
            assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
            assert!(stderr.starts_with("socksmith: config file "), "{stderr}");
            assert!(stderr.contains(expected), "{expected:?} not in {stderr:?}");
            assert!(!stderr.contains("12345678"), "a password shown: {stderr:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_carry_the_session_fields() {
    within(TEST_DEADLINE, "JSON log", async {
        let server = serve(&["--log-format", "json", "--user", "alice:pw-not-logged"]).await;
        let echo = EchoServer::start().await;
        let creds = Credentials::new("alice", "pw-not-logged");
        let (mut tunnel, _) = socks5_connect(server.addr(), Some(&creds), echo.addr())
            .await
            .expect("tunnel");
        send(&mut tunnel, b"12345").await;
        assert_eq!(recv(&mut tunnel, 5).await, b"12345");
        drop(tunnel);
        let log = log_with(&server, "session finished", 1).await;
        assert!(!log.contains("pw-not-logged"));
        let line = log
            .lines()
            .find(|l| l.contains("session finished"))
            .expect("the session line");
        let json: serde_json::Value = serde_json::from_str(line).expect("a JSON object per line");
        let field = |k: &str| json.get(k).unwrap_or_else(|| panic!("no {k:?} in {line}"));
        assert_eq!(field("message"), "session finished");
        assert_eq!(field("user"), "alice");
        assert_eq!(field("version"), "SOCKS5");
        assert_eq!(field("command"), "CONNECT");
        assert_eq!(field("destination"), &echo.addr().to_string());
        assert_eq!(field("bytes_up"), 5);
        assert_eq!(field("bytes_down"), 5);
        assert_eq!(field("outcome"), "ok");
        assert!(field("duration_ms").is_u64());
        assert!(field("client")
            .as_str()
            .expect("a string")
            .starts_with("127.0.0.1:"));
        assert_eq!(field("level"), "INFO");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_pauses_accepting_without_spinning() {
    within(TEST_DEADLINE, "EMFILE", async {
        // A low descriptor limit, and a short handshake deadline to free them again. The
        // session limit derived from the descriptor limit would keep the server clear of
        // EMFILE; an explicit one far above it makes it run out, to test the accept loop.
        let script = format!(
            "ulimit -n 48 && exec '{}' serve --listen 127.0.0.1:0 --handshake-timeout 1s --max-sessions 1000",
            bin().display()
        );
        let server =
            SocksmithServer::try_start(std::path::Path::new("/bin/sh"), &["-c", &script], &[], 1)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        // More idle clients than descriptors: the server runs out.
        let mut idle = Vec::new();
        for _ in 0..80 {
            idle.push(connect(server.addr()).await);
        }
        log_with(&server, "accept failed; pausing", 1).await;
        // Once the deadline frees descriptors, every client is served (or cut) and new
        // clients get through.
        for mut s in idle {
            assert!(recv_to_end(&mut s).await.is_empty());
        }
        let echo = EchoServer::start().await;
        let (mut t, _) = socks5_connect(server.addr(), None, echo.addr())
            .await
            .expect("served again");
        send(&mut t, b"ok").await;
        assert_eq!(recv(&mut t, 2).await, b"ok");
        // Paused, not spinning: a handful of failed accepts, not thousands.
        let failures = server.stderr().matches("accept failed; pausing").count();
        assert!(
            (1..50).contains(&failures),
            "{failures} accept failures logged"
        );
    })
    .await;
}
