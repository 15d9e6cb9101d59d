//! SIGHUP: the config file is read again and applies to new sessions; tunnels that are moving
//! bytes while it happens go on byte for byte; a file that does not validate is logged and the
//! old configuration keeps serving; systemd hears RELOADING=1 then READY=1.

mod serve_support;

use std::time::Duration;

use serve_support::*;
use socksmith_testkit::raw::{socks5_connect, RawError};
use socksmith_testkit::socksmith::SocksmithServer;
use socksmith_testkit::systemd::NotifySocket;
use socksmith_testkit::{within, Credentials, EchoServer, TEST_DEADLINE};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;

const CHUNK: usize = 128 * 1024;

fn config(password: &str) -> String {
    format!("listen = [\"127.0.0.1:0\"]\n[[users]]\nname = \"alice\"\npassword = \"{password}\"\n")
}

/// A server started on a config file holding `text`: the directory (removed on drop), the
/// file's path and the server.
async fn serve_file(name: &str, text: &str) -> (TestDir, std::path::PathBuf, SocksmithServer) {
    let dir = TestDir::new(name);
    let path = dir.path().join("socksmith.toml");
    std::fs::write(&path, text).expect("write the config");
    let path_str = path.to_str().expect("UTF-8 path").to_owned();
    let server = SocksmithServer::try_start(bin(), &["serve", "--config", &path_str], &[], 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (dir, path, server)
}

/// Sends chunks of [`Stream64`] through the tunnel and checks each echo byte for byte, until
/// `stop` says so (and at least `min_rounds`); returns the bytes moved each way.
async fn pump(
    mut tunnel: TcpStream,
    seed: u64,
    min_rounds: usize,
    stop: watch::Receiver<bool>,
) -> usize {
    let mut gen = Stream64(seed);
    let mut out = vec![0u8; CHUNK];
    let mut back = vec![0u8; CHUNK];
    let mut moved = 0;
    let mut rounds = 0;
    while rounds < min_rounds || !*stop.borrow() {
        gen.fill(&mut out);
        let (mut r, mut w) = tunnel.split();
        let write = w.write_all(&out);
        let read = r.read_exact(&mut back);
        let (written, read) = tokio::time::timeout(STEP, async { tokio::join!(write, read) })
            .await
            .expect("a chunk's round trip in time");
        written.expect("write through the tunnel");
        read.expect("read the echo");
        assert!(
            out == back,
            "round {rounds}: the echo differs from what was sent"
        );
        moved += CHUNK;
        rounds += 1;
        assert!(rounds < 100_000, "bounded");
    }
    tunnel.shutdown().await.expect("half-close");
    let mut rest = Vec::new();
    tokio::time::timeout(STEP, tunnel.read_to_end(&mut rest))
        .await
        .expect("the echo closes in time")
        .expect("read to the end");
    assert!(rest.is_empty(), "nothing after the last echo");
    moved
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_moving_bytes_through_a_reload_stay_exact_and_new_sessions_get_the_new_file() {
    within(TEST_DEADLINE, "reload", async {
        let dir = TestDir::new("reload");
        let path = dir.path().join("socksmith.toml");
        std::fs::write(&path, config("old-password")).expect("write the config");
        let path_str = path.to_str().expect("UTF-8 path").to_owned();
        let mut notify = NotifySocket::bind();
        let notify_path = notify.path().to_str().expect("UTF-8 path").to_owned();
        let mut server = SocksmithServer::try_start(
            bin(),
            &["serve", "--config", &path_str],
            &[("NOTIFY_SOCKET", &notify_path)],
            1,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        notify.wait_for("READY=1", STEP).await;
        let echo = EchoServer::start().await;
        let old = Credentials::new("alice", "old-password");
        let new = Credentials::new("alice", "new-password");

        // Tunnels opened under the old file, moving bytes all along.
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut pumps = Vec::new();
        for seed in 1..=4u64 {
            let (tunnel, _) = socks5_connect(server.addr(), Some(&old), echo.addr())
                .await
                .expect("a tunnel under the old file");
            pumps.push(tokio::spawn(pump(tunnel, seed, 8, stop_rx.clone())));
        }

        // Three reloads while they run: new file, then the same again, then broken.
        std::fs::write(&path, config("new-password")).expect("rewrite the config");
        server.process_mut().signal("HUP");
        notify.wait_for("RELOADING=1", STEP).await;
        notify.wait_for("READY=1", STEP).await;
        log_with(&server, "configuration reloaded", 1).await;
        server.process_mut().signal("HUP");
        log_with(&server, "configuration reloaded", 2).await;

        // New sessions use the new file: the old password is refused, the new one works.
        let refused = socks5_connect(server.addr(), Some(&old), echo.addr())
            .await
            .expect_err("the old password after the reload");
        assert!(matches!(refused, RawError::AuthFailed(_)), "{refused}");
        let (mut fresh, _) = socks5_connect(server.addr(), Some(&new), echo.addr())
            .await
            .expect("the new password after the reload");
        send(&mut fresh, b"new").await;
        assert_eq!(recv(&mut fresh, 3).await, b"new");

        stop_tx.send(true).expect("the pumps listen");
        for pump in pumps {
            let moved = pump.await.expect("pump task");
            assert!(moved >= 8 * CHUNK, "{moved}");
        }
        assert!(server.process_mut().exited().is_none(), "still running");
        let messages = notify.received().to_vec();
        let states: Vec<&str> = messages
            .iter()
            .flat_map(|m| m.lines())
            .filter(|l| !l.starts_with("MONOTONIC_USEC="))
            .collect();
        assert_eq!(
            &states[..3],
            ["READY=1", "RELOADING=1", "READY=1"],
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m.contains("MONOTONIC_USEC=")),
            "RELOADING=1 carries the time, as systemd 253+ wants: {messages:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_on_reload_is_logged_and_the_old_one_keeps_serving() {
    within(TEST_DEADLINE, "broken reload", async {
        let (_dir, path, mut server) = serve_file("reload-broken", &config("pw")).await;
        let path_str = path.to_str().expect("UTF-8 path").to_owned();
        let echo = EchoServer::start().await;
        let creds = Credentials::new("alice", "pw");
        let (mut tunnel, _) = socks5_connect(server.addr(), Some(&creds), echo.addr())
            .await
            .expect("tunnel");

        let broken = [
            // Does not parse.
            ("listen = [\"127.0.0.1:0\"\n[[users]]\n", "line 2"),
            // Parses, does not validate: and nothing of it is applied (the users stay).
            (
                "listen = [\"127.0.0.1:0\"]\nmax_sessions = 0\n",
                "line 2: max_sessions: must be at least 1",
            ),
            // A bad value in a table.
            (
                "listen = [\"127.0.0.1:0\"]\n[timeouts]\nidle = \"soon\"\n",
                "line 3: timeouts.idle",
            ),
        ];
        for (i, (text, expected)) in broken.into_iter().enumerate() {
            std::fs::write(&path, text).expect("write the broken config");
            server.process_mut().signal("HUP");
            let log = log_with(&server, "the old one keeps serving", i + 1).await;
            let line = log
                .lines()
                .filter(|l| l.contains("the old one keeps serving"))
                .nth(i)
                .expect("the line");
            assert!(line.contains(expected), "{expected:?} not in {line}");
            assert!(line.contains(&path_str), "the file is named: {line}");
            assert!(
                !line.contains(r#"error="\""#),
                "quoted once, not twice: {line}"
            );
            // The old configuration serves: same password, tunnel alive.
            let (mut fresh, _) = socks5_connect(server.addr(), Some(&creds), echo.addr())
                .await
                .expect("the old file still applies");
            send(&mut fresh, b"ok").await;
            assert_eq!(recv(&mut fresh, 2).await, b"ok");
            send(&mut tunnel, b"still").await;
            assert_eq!(recv(&mut tunnel, 5).await, b"still");
        }
        assert!(!server.stderr().contains("configuration reloaded"));
        server.process_mut().signal("TERM");
        let status = server
            .process_mut()
            .wait_exit(Duration::from_secs(15))
            .await
            .expect("exits");
        assert!(status.success());
    })
    .await;
}

/// The config file of the limits test: alice, and the two limits it changes.
fn limits_config(tunnels_per_user: usize, sessions_per_client: usize) -> String {
    format!(
        "max_tunnels_per_user = {tunnels_per_user}\nmax_sessions_per_client = {sessions_per_client}\n{}",
        config("pw")
    )
}

/// Reloads `server` with `text` as its file and waits for it to say so (the `nth` time).
async fn reload_with(server: &mut SocksmithServer, path: &std::path::Path, text: &str, nth: usize) {
    std::fs::write(path, text).expect("write the config");
    server.process_mut().signal("HUP");
    log_with(server, "configuration reloaded", nth).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_counting_held_tunnels_and_applies_new_session_limits() {
    within(TEST_DEADLINE, "limits across a reload", async {
        let (_dir, path, mut server) = serve_file("reload-limits", &limits_config(2, 3)).await;
        let echo = EchoServer::start().await;
        let creds = Credentials::new("alice", "pw");
        let proxy = server.addr();
        let tunnel = || socks5_connect(proxy, Some(&creds), echo.addr());
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(tunnel().await.expect("under the limit").0);
        }
        assert!(matches!(tunnel().await, Err(RawError::Rejected(0x02))));

        // The same file again: alice's two tunnels still count.
        reload_with(&mut server, &path, &limits_config(2, 3), 1).await;
        assert!(
            matches!(tunnel().await, Err(RawError::Rejected(0x02))),
            "a reload gave alice a fresh allowance"
        );

        // One more tunnel allowed: the third comes, the fourth session is over this
        // client's share (3) and closed at once.
        reload_with(&mut server, &path, &limits_config(3, 3), 2).await;
        held.push(tunnel().await.expect("the raised tunnel limit").0);
        assert!(
            matches!(tunnel().await, Err(RawError::Closed)),
            "the session limit per client applies"
        );

        // A larger share: the fourth session is served (and refused by the tunnel limit).
        reload_with(&mut server, &path, &limits_config(3, 5), 3).await;
        assert!(matches!(tunnel().await, Err(RawError::Rejected(0x02))));
        log_with(&server, "session limits changed sessions=", 1).await;
        for mut tunnel in held {
            send(&mut tunnel, b"alive").await;
            assert_eq!(recv(&mut tunnel, 5).await, b"alive");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_session_limit_lets_waiting_clients_in_at_once() {
    within(TEST_DEADLINE, "max_sessions across a reload", async {
        let file = |sessions: usize| format!("max_sessions = {sessions}\n{}", config("pw"));
        let (_dir, path, mut server) = serve_file("reload-max-sessions", &file(1)).await;
        let echo = EchoServer::start().await;
        let creds = Credentials::new("alice", "pw");
        let (mut held, _) = socks5_connect(server.addr(), Some(&creds), echo.addr())
            .await
            .expect("the one session");
        // The next client waits in the listen queue: no answer to its greeting.
        let mut waiting = TcpStream::connect(server.addr()).await.expect("connect");
        waiting.write_all(&[5, 1, 2]).await.expect("greeting");
        let mut choice = [0u8; 2];
        assert!(
            tokio::time::timeout(Duration::from_millis(300), waiting.read_exact(&mut choice))
                .await
                .is_err(),
            "no room for a second session"
        );
        // A higher limit takes it in while the first session still runs.
        reload_with(&mut server, &path, &file(3), 1).await;
        tokio::time::timeout(STEP, waiting.read_exact(&mut choice))
            .await
            .expect("answered after the reload")
            .expect("read");
        assert_eq!(choice, [5, 2]);
        send(&mut held, b"still").await;
        assert_eq!(recv(&mut held, 5).await, b"still");
    })
    .await;
}
