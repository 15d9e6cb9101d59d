//! `socksmith serve --users FILE` (key `users_file`): argon2id hashes written by
//! `socksmith passwd`, checked for SOCKS5 logins, and read again on SIGHUP.

mod serve_support;

use serve_support::*;
use socksmith_testkit::raw::{socks5_connect, RawError};
use socksmith_testkit::socksmith::{run, SocksmithServer};
use socksmith_testkit::{within, Credentials, EchoServer, TEST_DEADLINE};

async fn passwd(file: &str, user: &str, password: &str) {
    let out = run(
        bin(),
        &["passwd", file, user],
        format!("{password}\n").as_bytes(),
    )
    .await;
    out.assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_file_is_checked_and_read_again_on_reload() {
    within(TEST_DEADLINE, "users file", async {
        let dir = TestDir::new("users-file");
        let users = dir.path().join("users");
        let users_str = users.to_str().expect("UTF-8 path").to_owned();
        passwd(&users_str, "alice", "first-password").await;
        // The config file names it relative to itself.
        let config = dir.path().join("socksmith.toml");
        std::fs::write(
            &config,
            "listen = [\"127.0.0.1:0\"]\nusers_file = \"users\"\n",
        )
        .expect("write the config");
        let config_str = config.to_str().expect("UTF-8 path").to_owned();
        let mut server =
            SocksmithServer::try_start(bin(), &["serve", "--config", &config_str], &[], 1)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        let echo = EchoServer::start().await;
        let first = Credentials::new("alice", "first-password");
        let second = Credentials::new("alice", "second-password");
        let (mut tunnel, _) = socks5_connect(server.addr(), Some(&first), echo.addr())
            .await
            .expect("the password in the file");
        send(&mut tunnel, b"1").await;
        assert_eq!(recv(&mut tunnel, 1).await, b"1");
        let refused = socks5_connect(server.addr(), Some(&second), echo.addr())
            .await
            .expect_err("a wrong password");
        assert!(matches!(refused, RawError::AuthFailed(_)), "{refused}");

        // A new password in the file, then SIGHUP: new logins use it, the tunnel goes on.
        passwd(&users_str, "alice", "second-password").await;
        server.process_mut().signal("HUP");
        log_with(&server, "configuration reloaded", 1).await;
        let (mut fresh, _) = socks5_connect(server.addr(), Some(&second), echo.addr())
            .await
            .expect("the new password after the reload");
        send(&mut fresh, b"2").await;
        assert_eq!(recv(&mut fresh, 1).await, b"2");
        let refused = socks5_connect(server.addr(), Some(&first), echo.addr())
            .await
            .expect_err("the old password after the reload");
        assert!(matches!(refused, RawError::AuthFailed(_)), "{refused}");
        send(&mut tunnel, b"3").await;
        assert_eq!(recv(&mut tunnel, 1).await, b"3");

        // A broken users file on reload: logged, the old users keep working.
        std::fs::write(&users, "alice:not-a-hash\n").expect("break the users file");
        server.process_mut().signal("HUP");
        let log = log_with(&server, "the old one keeps serving", 1).await;
        assert!(log.contains("users:1"), "file and line: {log}");
        assert!(
            !log.contains("not-a-hash"),
            "the line's content is never shown: {log}"
        );
        socks5_connect(server.addr(), Some(&second), echo.addr())
            .await
            .expect("the previous users still apply");

        // The flag replaces the file's key; both forms at once are refused.
        let both = SocksmithServer::try_start(
            bin(),
            &["serve", "--users", &users_str, "--user", "bob:pw"],
            &[],
            1,
        )
        .await
        .expect_err("--user and --users together");
        assert!(both.stderr.contains("use one"), "{both}");
    })
    .await;
}
