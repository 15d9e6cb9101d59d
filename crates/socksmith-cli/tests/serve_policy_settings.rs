//! The policy settings of `socksmith serve` as a user meets them: bad values refused in one
//! line naming the flag or key, the environment between flag and file, blocklist files and
//! the users file re-read on SIGHUP, and a blocklist URL fetched from a local HTTP server,
//! cached, and still blocking after a restart while that server fails.

mod serve_support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serve_support::*;
use socksmith_testkit::socksmith::{run, SocksmithServer};
use socksmith_testkit::{within, TEST_DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a test file");
    path.to_str().expect("UTF-8 temporary path").to_owned()
}

async fn code_for(server: &SocksmithServer, name: &str) -> u8 {
    let mut s = connect(server.addr()).await;
    v5_exchange(&mut s, 1, &v5_name(name, 80)).await.0
}

/// Names outside the lists are refused by a rule instead of being looked up.
const FENCE: &str = "[[rules]]\nname = \"fence\"\naction = \"deny\"\ndomains = [\".example\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_are_one_line_errors_naming_the_flag_or_key() {
    within(TEST_DEADLINE, "bad policy values", async {
        let dir = TestDir::new("policy-errors");
        let bad_file = write(dir.path(), "bad.toml", "rate_per_user = \"lots\"\n");
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (vec!["--rate-per-user", "fast"], "--rate-per-user"),
            (
                vec!["--max-tunnels-per-user", "0"],
                "--max-tunnels-per-user",
            ),
            (vec!["--allow-from", "10.0.0.0/99"], "--allow-from"),
            (vec!["--udp-advertise", "nowhere"], "--udp-advertise"),
            (vec!["--sniff-timeout", "soon"], "--sniff-timeout"),
            (
                vec![
                    "--outbound-address",
                    "10.0.0.1",
                    "--outbound-address",
                    "10.0.0.2",
                ],
                "--outbound-address: 10.0.0.1 and 10.0.0.2 are both IPv4",
            ),
            (
                vec!["--blocklist", "/nonexistent/socksmith-list"],
                "/nonexistent/socksmith-list",
            ),
            // A URL list that could never be fetched is an error now, not an empty list.
            (
                vec!["--blocklist", "http://[::1"],
                "blocklist http://[::1 is not a valid URL",
            ),
            (
                vec!["--blocklist", "https://u:secret@/ads.txt"],
                "blocklist https://u:***@/ads.txt is not a valid URL: empty host",
            ),
            (
                vec!["--upstream", "socks5://alice@127.0.0.1:1"],
                "--upstream #1: hop 1 (socks5://alice@127.0.0.1:1): password of 0 bytes",
            ),
            (
                vec!["--users", "/nonexistent/socksmith-users"],
                "/nonexistent/socksmith-users",
            ),
            (
                vec!["--config", &bad_file],
                "line 1: rate_per_user: \"lots\" is not a rate",
            ),
        ];
        for (flags, expected) in cases {
            let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--check"];
            args.extend(flags.iter().copied());
            let out = run(bin(), &args, b"").await;
            out.assert_failure();
            let err = out.stderr_str();
            assert!(err.contains(expected), "{flags:?}: {err}");
            let lines: Vec<_> = err.lines().filter(|l| !l.trim().is_empty()).collect();
            assert!(
                lines.len() <= 3,
                "{flags:?}: a short error, not a wall: {err}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_sits_between_flag_and_file() {
    within(TEST_DEADLINE, "SOCKSMITH_ policy variables", async {
        let dir = TestDir::new("policy-env");
        let from_file = write(dir.path(), "file.txt", "file.example\n");
        let from_env = write(dir.path(), "env.txt", "env.example\n");
        let config = write(
            dir.path(),
            "socksmith.toml",
            &format!("blocklist = [\"{from_file}\"]\nrequire_hostname = true\n{FENCE}"),
        );
        let start = |env: Vec<(&'static str, String)>, extra: Vec<String>| {
            let config = config.clone();
            async move {
                let mut args = vec!["serve".to_owned(), "--listen".into(), "127.0.0.1:0".into()];
                args.extend(["--config".to_owned(), config]);
                args.extend(extra);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
                SocksmithServer::try_start(bin(), &args, &env, 1)
                    .await
                    .unwrap_or_else(|e| panic!("{e:?}"))
            }
        };
        // The file alone: its list blocks.
        let server = start(vec![], vec![]).await;
        assert_eq!(code_for(&server, "file.example").await, 2);
        log_with(&server, "\\\"file.example\\\" is on the blocklist", 1).await;
        // The environment replaces the file's list, and switches require_hostname off.
        let server = start(
            vec![
                ("SOCKSMITH_BLOCKLIST", from_env.clone()),
                ("SOCKSMITH_REQUIRE_HOSTNAME", "false".into()),
            ],
            vec![],
        )
        .await;
        assert_eq!(code_for(&server, "env.example").await, 2);
        assert_eq!(code_for(&server, "file.example").await, 2);
        log_with(&server, "\\\"env.example\\\" is on the blocklist", 1).await;
        log_with(&server, "denied by rule \\\"fence\\\"", 1).await;
        let echo = socksmith_testkit::EchoServer::start().await;
        let mut s = connect(server.addr()).await;
        assert_eq!(
            v5_exchange(&mut s, 1, &v5_addr(echo.addr())).await.0,
            0,
            "IPs allowed"
        );
        // The flag beats both.
        let server = start(
            vec![("SOCKSMITH_BLOCKLIST", from_env.clone())],
            vec!["--blocklist".into(), from_file.clone()],
        )
        .await;
        assert_eq!(code_for(&server, "file.example").await, 2);
        log_with(&server, "\\\"file.example\\\" is on the blocklist", 1).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_blocklist_and_users_files() {
    within(TEST_DEADLINE, "reload of lists and users", async {
        let dir = TestDir::new("policy-reload");
        let list = write(dir.path(), "list.txt", "first.example\n");
        let users = dir.path().join("users");
        let users_arg = users.to_str().expect("UTF-8 path").to_owned();
        let passwd = run(bin(), &["passwd", &users_arg, "alice"], b"pw-one\n").await;
        passwd.assert_success();
        let config = write(dir.path(), "socksmith.toml", FENCE);
        let mut server = serve(&[
            "--config",
            &config,
            "--blocklist",
            &list,
            "--users",
            &users_arg,
        ])
        .await;
        let proxy = server.addr();
        let login = move |password: &'static str| async move {
            let mut s = connect(proxy).await;
            send(&mut s, &[5, 1, 2]).await;
            assert_eq!(recv(&mut s, 2).await, [5, 2]);
            let mut request = vec![1, 5];
            request.extend_from_slice(b"alice");
            request.push(u8::try_from(password.len()).expect("short"));
            request.extend_from_slice(password.as_bytes());
            send(&mut s, &request).await;
            recv(&mut s, 2).await[1]
        };
        assert_eq!(login("pw-one").await, 0);
        std::fs::write(&list, "second.example\n").expect("rewrite the list");
        run(bin(), &["passwd", &users_arg, "alice"], b"pw-two\n")
            .await
            .assert_success();
        server.process_mut().signal("HUP");
        log_with(&server, "configuration reloaded", 1).await;
        let blocked = move |name: &'static str| async move {
            let mut s = connect(proxy).await;
            send(&mut s, &[5, 1, 2]).await;
            assert_eq!(recv(&mut s, 2).await, [5, 2]);
            let mut request = vec![1, 5];
            request.extend_from_slice(b"alice\x06pw-two");
            send(&mut s, &request).await;
            assert_eq!(recv(&mut s, 2).await, [1, 0]);
            let mut connect_req = vec![5, 1, 0];
            connect_req.extend(v5_name(name, 80));
            send(&mut s, &connect_req).await;
            v5_reply(&mut s).await.0
        };
        assert_eq!(blocked("second.example").await, 2);
        log_with(&server, "\\\"second.example\\\" is on the blocklist", 1).await;
        assert_eq!(blocked("first.example").await, 2);
        let log = log_with(&server, "destination=first.example:80", 1).await;
        assert!(
            log.lines()
                .any(|l| l.contains("destination=first.example:80") && l.contains("fence")),
            "first.example is no longer listed: {log}"
        );
        assert_eq!(login("pw-one").await, 1, "the old password no longer works");
    })
    .await;
}

/// A tiny HTTP server for one list: answers every request with `body`, or with 500 while
/// `failing` is set.
async fn list_server(body: &'static str, failing: Arc<AtomicBool>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let failing = failing.load(Ordering::SeqCst);
            tokio::spawn(async move {
                let mut request = vec![0u8; 4096];
                let _ = stream.read(&mut request).await;
                let response = if failing {
                    "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned()
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_list_is_fetched_cached_and_still_blocks_after_a_restart_while_its_server_fails() {
    within(TEST_DEADLINE, "blocklist URL", async {
        let dir = TestDir::new("policy-url");
        let cache = dir.path().join("cache");
        let cache_arg = cache.to_str().expect("UTF-8 path").to_owned();
        let config = write(dir.path(), "socksmith.toml", FENCE);
        let failing = Arc::new(AtomicBool::new(false));
        let addr = list_server("0.0.0.0 fetched.example\n", failing.clone()).await;
        let url = format!("http://{addr}/hosts.txt");
        let args = [
            "--config",
            &config,
            "--blocklist",
            &url,
            "--blocklist-cache-dir",
            &cache_arg,
        ];
        let server = serve(&args).await;
        log_with(&server, "names=1", 1).await;
        assert_eq!(code_for(&server, "fetched.example").await, 2);
        log_with(
            &server,
            &format!("\\\"fetched.example\\\" is on the blocklist {url}"),
            1,
        )
        .await;
        assert!(
            std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0) >= 1,
            "a cached copy in {cache_arg}"
        );
        drop(server);
        // The list's server now fails: the restarted proxy blocks from its cache and logs
        // the failed fetch.
        failing.store(true, Ordering::SeqCst);
        let server = serve(&args).await;
        assert_eq!(code_for(&server, "x.fetched.example").await, 2);
        log_with(&server, "\\\"x.fetched.example\\\" is on the blocklist", 1).await;
        log_with(&server, "keeping the copy in use", 1).await;
    })
    .await;
}
