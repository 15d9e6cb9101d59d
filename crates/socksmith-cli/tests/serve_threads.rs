//! `socksmith serve --threads N`: one thread (a current-thread runtime) and two worker
//! threads serve curl and many tunnels at once alike; the count comes from the flag, the
//! environment or the file; a count that cannot be is refused with one clear line.

mod serve_support;

use serve_support::*;
use socksmith_testkit::clients::curl;
use socksmith_testkit::raw::socks5_connect;
use socksmith_testkit::socksmith::{run, SocksmithServer};
use socksmith_testkit::{pattern, within, EchoServer, HttpServer, ProxyKind, TEST_DEADLINE};
use tokio::task::JoinSet;

/// The runtime's worker threads of process `pid` (tokio names them `tokio-rt-worker`; a
/// current-thread runtime has none: it runs on the main thread).
fn named_workers(pid: u32) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the server's threads");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "tokio-rt-worker")
        .count()
}

/// Every thread of process `pid`: 1 for a current-thread runtime with nothing blocking.
fn all_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the server's threads")
        .count()
}

/// [`named_workers`] once it is `expected`, or after [`STEP`]: a new thread names itself
/// when it first runs, which may be a moment after the server printed `listening on`.
async fn worker_threads(pid: u32, expected: usize) -> usize {
    let give_up = tokio::time::Instant::now() + STEP;
    loop {
        let count = named_workers(pid);
        if count == expected || tokio::time::Instant::now() >= give_up {
            return count;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_and_two_threads_serve_curl_and_many_tunnels_at_once() {
    within(TEST_DEADLINE, "--threads 1 and 2", async {
        let http = HttpServer::start().await;
        let echo = EchoServer::start().await;
        for (threads, workers) in [("1", 0), ("2", 2)] {
            let mut server = serve(&["--threads", threads]).await;
            assert_eq!(
                worker_threads(server.process_mut().pid(), workers).await,
                workers,
                "--threads {threads}: worker threads"
            );
            if workers == 0 {
                let pid = server.process_mut().pid();
                assert_eq!(all_threads(pid), 1, "--threads 1: one thread in all");
            }
            let Some(out) = curl(
                &server.proxy(ProxyKind::Socks5h),
                &http.url_with_host("localhost", "/bytes/100000"),
                &[],
            )
            .await
            else {
                return;
            };
            out.assert_success();
            assert_eq!(out.stdout, pattern(100_000), "--threads {threads}: curl");
            // Enough tunnels at once for both workers to carry some, each one's bytes checked.
            let mut tunnels = JoinSet::new();
            for seed in 0..24u64 {
                let proxy = server.addr();
                let target = echo.addr();
                tunnels.spawn(async move {
                    let (stream, _) =
                        tokio::time::timeout(STEP, socks5_connect(proxy, None, target))
                            .await
                            .expect("tunnel in time")
                            .expect("tunnel");
                    echo_integrity(stream, 256 * 1024, seed).await;
                });
            }
            while let Some(done) = tunnels.join_next().await {
                done.expect("--threads {threads}: a tunnel carried its bytes back intact");
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_thread_count_comes_from_the_environment_or_the_file_and_the_flag_wins() {
    within(TEST_DEADLINE, "threads from every source", async {
        let dir = TestDir::new("threads-sources");
        let config = dir.path().join("threads.toml");
        std::fs::write(&config, "listen = [\"127.0.0.1:0\"]\nthreads = 3\n").expect("write");
        let config = config.to_str().expect("UTF-8 path");
        let start = |args: &'static [&'static str],
                     env: &'static [(&'static str, &'static str)]| {
            let mut all = vec!["serve", "--config", config];
            all.extend_from_slice(args);
            async move {
                SocksmithServer::try_start(bin(), &all, env, 1)
                    .await
                    .expect("start")
            }
        };
        let mut file = start(&[], &[]).await;
        assert_eq!(
            worker_threads(file.process_mut().pid(), 3).await,
            3,
            "threads = 3 in the file"
        );
        let mut env = start(&[], &[("SOCKSMITH_THREADS", "2")]).await;
        assert_eq!(
            worker_threads(env.process_mut().pid(), 2).await,
            2,
            "SOCKSMITH_THREADS over the file"
        );
        let mut flag = start(&["--threads", "1"], &[("SOCKSMITH_THREADS", "2")]).await;
        assert_eq!(
            worker_threads(flag.process_mut().pid(), 0).await,
            0,
            "--threads 1 over both"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_or_nonsense_threads_are_refused_with_one_line() {
    within(TEST_DEADLINE, "bad --threads", async {
        for (args, env, expected) in [
            (&["serve", "--threads", "0"][..], None, "must be at least 1"),
            (&["serve"][..], Some("0"), "must be at least 1"),
            (
                &["serve", "--threads", "many"][..],
                None,
                "not a number of threads",
            ),
        ] {
            let mut cmd = tokio::process::Command::new(bin());
            cmd.args(args).kill_on_drop(true);
            if let Some(value) = env {
                cmd.env("SOCKSMITH_THREADS", value);
            }
            let out = tokio::time::timeout(STEP, cmd.output())
                .await
                .expect("exits in time")
                .expect("runs");
            assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: usage error");
            let stderr = String::from_utf8_lossy(&out.stderr);
            let first = stderr.lines().next().unwrap_or_default();
            assert!(
                first.contains("--threads") && first.contains(expected),
                "{args:?} {env:?}: {stderr}"
            );
            // The rest is clap's usual pointer to --help, never a panic or a second error.
            assert!(!stderr.contains("panicked"), "{stderr}");
            assert_eq!(stderr.matches("error:").count(), 1, "{stderr}");
        }
        let dir = TestDir::new("threads-zero");
        let path = dir.path().join("zero.toml");
        std::fs::write(&path, "threads = 0\n").expect("write");
        let path = path.to_str().expect("UTF-8 path");
        let out = run(bin(), &["serve", "--config", path, "--check"], b"").await;
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = out.stderr_str();
        assert!(
            stderr.contains("line 1: threads: must be at least 1"),
            "{stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    })
    .await;
}
