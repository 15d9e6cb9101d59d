//! `socksmith passwd`: adds, replaces and deletes users in a users file, which it writes
//! atomically with mode 0600 and without the plain password; and real clients (curl with
//! `--proxy-user`, PySocks) authenticate against a server that checks that file.
//!
//! The server is the library's, given the file through `HashedUsers::load`, and the real
//! `socksmith serve --users FILE` (beside `--user`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use socksmith::server::{HashedUsers, Server, ServerConfig};
use socksmith_testkit::clients::{curl, pysocks, PyMode};
use socksmith_testkit::socksmith::run;
use socksmith_testkit::targets::HTTP_ROOT_BODY;
use socksmith_testkit::{
    pattern, within, CmdOutput, Credentials, EchoServer, HttpServer, Proxy, ProxyKind, Target,
    TEST_DEADLINE,
};
use tokio::net::TcpListener;

mod serve_support;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_socksmith"))
}

/// `socksmith passwd [EXTRA...] FILE USER` with `stdin`.
async fn passwd(file: &Path, user: &str, extra: &[&str], stdin: &[u8]) -> CmdOutput {
    let file = file.to_str().expect("a UTF-8 temporary path");
    let mut args = vec!["passwd"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[file, user]);
    run(bin(), &args, stdin).await
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("file exists")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwd_adds_replaces_and_deletes_users_in_a_0600_file_without_plain_passwords() {
    within(TEST_DEADLINE, "socksmith passwd", async {
        let dir = tempfile::tempdir().expect("temporary directory");
        let file = dir.path().join("users");

        // Adding creates the file; the password is the first line of stdin.
        passwd(&file, "alice", &[], b"first-secret\nignored second line\n")
            .await
            .assert_success();
        assert_eq!(mode(&file), 0o600);
        passwd(&file, "bob", &[], b"bobs-secret\r\n")
            .await
            .assert_success();
        let text = std::fs::read_to_string(&file).expect("readable");
        assert!(
            text.starts_with("alice:$argon2id$v=19$") && text.contains("\nbob:$argon2id$"),
            "{text}"
        );
        for secret in ["first-secret", "ignored", "bobs-secret"] {
            assert!(
                !text.contains(secret),
                "plain password {secret:?} in:\n{text}"
            );
        }
        let users = HashedUsers::load(&file).expect("the file loads");
        assert!(users.verify(b"alice", b"first-secret"));
        assert!(
            users.verify(b"bob", b"bobs-secret"),
            "CRLF is not part of it"
        );

        // Comments the administrator wrote survive; replacing changes only that user.
        std::fs::write(&file, format!("# proxy users\n{text}")).expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let out = passwd(&file, "alice", &[], b"second-secret\n").await;
        out.assert_success();
        assert!(out.stderr_str().contains("changed user \"alice\""), "{out}");
        assert_eq!(mode(&file), 0o600, "rewritten files are 0600 again");
        let replaced = std::fs::read_to_string(&file).expect("readable");
        assert!(replaced.starts_with("# proxy users\nalice:"), "{replaced}");
        let bob_line = |t: &str| t.lines().find(|l| l.starts_with("bob:")).map(str::to_owned);
        assert_eq!(bob_line(&replaced), bob_line(&text));
        let users = HashedUsers::load(&file).expect("the file loads");
        assert!(users.verify(b"alice", b"second-secret"));
        assert!(!users.verify(b"alice", b"first-secret"));

        // Deleting removes the user; deleting again says so and fails.
        passwd(&file, "bob", &["--delete"], b"")
            .await
            .assert_success();
        let after = std::fs::read_to_string(&file).expect("readable");
        assert!(
            !after.contains("bob:") && after.contains("alice:"),
            "{after}"
        );
        let out = passwd(&file, "bob", &["--delete"], b"").await;
        out.assert_failure();
        assert!(out.stderr_str().contains("no user \"bob\""), "{out}");

        // No temporary file is left behind.
        let entries: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(entries, ["users"], "only the users file remains");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwd_refuses_bad_input_and_leaves_the_file_alone() {
    within(TEST_DEADLINE, "socksmith passwd errors", async {
        let dir = tempfile::tempdir().expect("temporary directory");
        let file = dir.path().join("users");

        let out = passwd(&file, "alice", &[], b"\n").await;
        out.assert_failure();
        assert!(out.stderr_str().contains("empty password"), "{out}");
        assert!(!file.exists(), "nothing written");

        let out = passwd(&file, "al:ice", &[], b"pw\n").await;
        out.assert_failure();
        assert!(out.stderr_str().contains("user \"al:ice\""), "{out}");

        let long = format!("{}\n", "x".repeat(256));
        let out = passwd(&file, "alice", &[], long.as_bytes()).await;
        out.assert_failure();
        assert!(out.stderr_str().contains("at most 255"), "{out}");

        // A file with a plain password in it is not silently rewritten; the error names the
        // file and line but not the password.
        let broken = "# users\nmallory:hunter2\n";
        std::fs::write(&file, broken).expect("write");
        let out = passwd(&file, "alice", &[], b"pw\n").await;
        out.assert_failure();
        let stderr = out.stderr_str();
        assert!(
            stderr.contains(&format!("{}:2:", file.display())) && !stderr.contains("hunter2"),
            "{out}"
        );
        assert_eq!(std::fs::read_to_string(&file).expect("readable"), broken);

        let out = passwd(&dir.path().join("missing"), "bob", &["--delete"], b"").await;
        out.assert_failure();
        assert!(out.stderr_str().contains("cannot read users file"), "{out}");
    })
    .await;
}

/// A library server on 127.0.0.1:0 whose users are the users file at `file`.
async fn server_with_users_file(file: &Path) -> std::net::SocketAddr {
    let users = HashedUsers::load(file).expect("the users file loads");
    let mut config = ServerConfig::default();
    config.auth = Some(Arc::new(users));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        Server::new(config)
            .serve(vec![listener], std::future::pending())
            .await
            .expect("the server serves");
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_pysocks_authenticate_with_a_password_set_by_passwd() {
    within(
        TEST_DEADLINE,
        "real clients against the users file",
        async {
            let dir = tempfile::tempdir().expect("temporary directory");
            let file = dir.path().join("users");
            passwd(&file, "alice", &[], b"s3cret-pw\n")
                .await
                .assert_success();
            passwd(&file, "bob", &[], b"other-pw\n")
                .await
                .assert_success();
            let addr = server_with_users_file(&file).await;
            let http = HttpServer::start().await;

            // curl with --proxy-user (-U), both with local and remote name resolution.
            for kind in [ProxyKind::Socks5, ProxyKind::Socks5h] {
                let proxy = Proxy::new(kind, addr);
                let Some(out) =
                    curl(&proxy, &http.url("/"), &["--proxy-user", "alice:s3cret-pw"]).await
                else {
                    return;
                };
                out.assert_success();
                assert_eq!(out.stdout_str(), HTTP_ROOT_BODY);
            }
            let proxy = Proxy::new(ProxyKind::Socks5h, addr);
            for wrong in ["alice:other-pw", "carol:s3cret-pw", "alice:s3cret-p"] {
                let Some(out) = curl(&proxy, &http.url("/"), &["--proxy-user", wrong]).await else {
                    return;
                };
                out.assert_failure();
            }

            // PySocks, with the user's credentials; a second round comes from the cache.
            let echo = EchoServer::start().await;
            let target = Target::Ip(echo.addr());
            let payload = pattern(4096);
            for user in ["bob", "bob"] {
                let proxy = Proxy::new(ProxyKind::Socks5, addr)
                    .with_auth(Some(Credentials::new(user, "other-pw")));
                let Some(result) = pysocks(&proxy, &target, PyMode::TcpEcho, &payload).await else {
                    return;
                };
                result.assert_ok();
                assert_eq!(result.received, payload);
            }
            let wrong = Proxy::new(ProxyKind::Socks5, addr)
                .with_auth(Some(Credentials::new("bob", "s3cret-pw")));
            let Some(result) = pysocks(&wrong, &target, PyMode::TcpEcho, &payload).await else {
                return;
            };
            assert!(!result.ok, "a wrong password must fail: {}", result.output);
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_users_file_lets_in_curl_and_pysocks_with_passwd_passwords_beside_user() {
    within(TEST_DEADLINE, "socksmith serve --users", async {
        let dir = tempfile::tempdir().expect("temporary directory");
        let file = dir.path().join("users");
        passwd(&file, "alice", &[], b"s3cret-pw\n")
            .await
            .assert_success();
        let file_arg = file.to_str().expect("UTF-8 path");
        let server = serve_support::serve(&["--users", file_arg, "--user", "bob:inline-pw"]).await;
        let http = HttpServer::start().await;
        for kind in [ProxyKind::Socks5, ProxyKind::Socks5h] {
            let proxy = server.proxy(kind);
            let Some(out) =
                curl(&proxy, &http.url("/"), &["--proxy-user", "alice:s3cret-pw"]).await
            else {
                return;
            };
            out.assert_success();
            assert_eq!(out.stdout_str(), HTTP_ROOT_BODY);
        }
        let Some(out) = curl(
            &server.proxy(ProxyKind::Socks5h),
            &http.url("/"),
            &["--proxy-user", "alice:wrong"],
        )
        .await
        else {
            return;
        };
        out.assert_failure();
        // `--user` and `--users` together: the inline user gets in too, and a file user's
        // name with the inline password does not.
        let bob = curl(
            &server.proxy(ProxyKind::Socks5h),
            &http.url("/"),
            &["--proxy-user", "bob:inline-pw"],
        )
        .await
        .expect("curl ran above");
        bob.assert_success();
        assert_eq!(bob.stdout_str(), HTTP_ROOT_BODY);
        curl(
            &server.proxy(ProxyKind::Socks5h),
            &http.url("/"),
            &["--proxy-user", "alice:inline-pw"],
        )
        .await
        .expect("curl ran above")
        .assert_failure();
        let echo = EchoServer::start().await;
        let payload = pattern(4096);
        let proxy = server
            .proxy(ProxyKind::Socks5)
            .with_auth(Some(Credentials::new("alice", "s3cret-pw")));
        let Some(result) =
            pysocks(&proxy, &Target::Ip(echo.addr()), PyMode::TcpEcho, &payload).await
        else {
            return;
        };
        result.assert_ok();
        assert_eq!(result.received, payload);
        // The log names the user, never the password or its hash.
        let log = server.stderr();
        assert!(
            !log.contains("s3cret-pw") && !log.contains("$argon2id$"),
            "{log}"
        );
    })
    .await;
}
