//! Blocklist sets loading files and URLs: reloads swap lists in, failures keep the list in
//! use, a URL's cached copy survives a restart without network. URLs are served by a small
//! HTTP/1.1 server on 127.0.0.1 in the test itself, which can also fail on purpose.

use std::path::Path;

use socksmith::policy::blocklist::{BlocklistConfig, BlocklistError, BlocklistSet, ListSource};

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write the list file");
}

#[tokio::test]
async fn file_lists_load_reload_and_keep_the_copy_in_use_on_failure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = dir.path().join("first.hosts");
    let second = dir.path().join("second.txt");
    write(
        &first,
        "# header\n127.0.0.1 localhost\n0.0.0.0 ads.example.com\n",
    );
    write(&second, "||tracker.example^\nnot a line we read\n");
    let set = BlocklistSet::open(BlocklistConfig::new(vec![
        ListSource::File(first.clone()),
        ListSource::File(second.clone()),
    ]))
    .expect("both files load");
    let first_name = first.display().to_string();
    let second_name = second.display().to_string();
    assert_eq!(
        set.check("x.Ads.Example.com.").map(|l| l.to_string()),
        Some(first_name.clone())
    );
    assert_eq!(
        set.check("tracker.example").map(|l| l.to_string()),
        Some(second_name.clone())
    );
    assert_eq!(set.check("localhost"), None);
    assert_eq!(set.check("example.com"), None);
    let status = set.status();
    assert_eq!(
        (status[0].names, status[0].blocked, status[1].skipped_lines),
        (1, 1, 1)
    );

    // A file caught empty (being rewritten) keeps its last copy.
    write(&first, "");
    let outcome = set.refresh().await;
    assert!(
        matches!(
            &outcome[0].1,
            Err(BlocklistError::Emptied { in_use: 1, .. })
        ),
        "{outcome:?}"
    );
    assert!(set.check("ads.example.com").is_some());

    // A changed file is read again; a vanished one keeps its last copy.
    write(&first, "0.0.0.0 new.example\n");
    std::fs::remove_file(&second).expect("remove");
    let outcome = set.refresh().await;
    assert!(matches!(outcome[0].1, Ok(1)), "{outcome:?}");
    assert!(
        matches!(&outcome[1].1, Err(BlocklistError::Read { path, .. }) if *path == second),
        "{outcome:?}"
    );
    assert_eq!(set.check("ads.example.com"), None);
    assert!(set.check("a.new.example").is_some());
    assert_eq!(
        set.check("tracker.example").map(|l| l.to_string()),
        Some(second_name)
    );
    // Counters survive the reloads (the first list blocked once more while caught empty).
    assert_eq!(set.status()[0].blocked, 3);
    assert_eq!(set.status()[1].blocked, 2);
}

#[test]
fn unreadable_or_junk_files_are_clear_errors_at_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.txt");
    let err = BlocklistSet::open(BlocklistConfig::new(vec![ListSource::File(
        missing.clone(),
    )]))
    .expect_err("no such file");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot read blocklist {}: ", missing.display())),
        "{err}"
    );
    let junk = dir.path().join("page.html");
    write(&junk, "<html>\n<body>moved</body>\n");
    let err = BlocklistSet::open(BlocklistConfig::new(vec![ListSource::File(junk.clone())]))
        .expect_err("no names");
    let message = err.to_string();
    assert!(
        message.contains(&format!("{}:1: ", junk.display())) && message.contains("2 lines skipped"),
        "{message}"
    );
}

#[cfg(not(feature = "blocklist-fetch"))]
#[test]
fn urls_need_the_fetch_feature() {
    let err = BlocklistSet::open(BlocklistConfig::new(vec![ListSource::parse(
        "http://127.0.0.1:9/hosts",
    )]))
    .expect_err("no HTTP client in this build");
    assert!(
        matches!(err, BlocklistError::FetchUnsupported { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("blocklist-fetch"), "{err}");
}

#[cfg(feature = "blocklist-fetch")]
mod fetch {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::sync::Mutex;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// What the test server answers next.
    #[derive(Clone)]
    enum Answer {
        Ok(Vec<u8>),
        Status(u16),
        /// A 200 whose Content-Length claims this many bytes.
        Claims(u64),
    }

    /// A one-route HTTP/1.1 server on 127.0.0.1: every request gets the current answer,
    /// then the connection closes.
    struct ListServer {
        url: String,
        answer: Arc<Mutex<Answer>>,
        requests: Arc<AtomicUsize>,
        requested: Arc<tokio::sync::Notify>,
        task: tokio::task::JoinHandle<()>,
    }

    impl ListServer {
        async fn start(answer: Answer) -> ListServer {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let url = format!(
                "http://{}/lists/hosts.txt",
                listener.local_addr().expect("addr")
            );
            let answer = Arc::new(Mutex::new(answer));
            let requests = Arc::new(AtomicUsize::new(0));
            let requested = Arc::new(tokio::sync::Notify::new());
            let task = tokio::spawn({
                let (answer, requests, requested) =
                    (answer.clone(), requests.clone(), requested.clone());
                async move {
                    loop {
                        let Ok((mut stream, _)) = listener.accept().await else {
                            return;
                        };
                        let mut head = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        assert!(head.starts_with(b"GET /lists/hosts.txt HTTP/1.1\r\n"));
                        let reply = match answer.lock().expect("not poisoned").clone() {
                            Answer::Ok(body) => {
                                let mut r = format!(
                                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                    body.len()
                                )
                                .into_bytes();
                                r.extend_from_slice(&body);
                                r
                            }
                            Answer::Status(code) => format!(
                                "HTTP/1.1 {code} Oops\r\nContent-Length: 5\r\nConnection: close\r\n\r\noops\n"
                            )
                            .into_bytes(),
                            Answer::Claims(len) => format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\nads.example\n"
                            )
                            .into_bytes(),
                        };
                        let _ = stream.write_all(&reply).await;
                        let _ = stream.shutdown().await;
                        requests.fetch_add(1, Ordering::SeqCst);
                        requested.notify_one();
                    }
                }
            });
            ListServer {
                url,
                answer,
                requests,
                requested,
                task,
            }
        }

        fn answer(&self, answer: Answer) {
            *self.answer.lock().expect("not poisoned") = answer;
        }
    }

    impl Drop for ListServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn config(url: &str, cache: &Path) -> BlocklistConfig {
        BlocklistConfig::new(vec![ListSource::parse(url)])
            .cache_dir(cache)
            .fetch_timeout(Duration::from_secs(10))
    }

    #[tokio::test]
    async fn a_url_is_fetched_cached_and_failures_keep_the_list() {
        let server = ListServer::start(Answer::Ok(
            b"0.0.0.0 ads.example.com\n0.0.0.0 tracker.example\n".to_vec(),
        ))
        .await;
        let cache = tempfile::tempdir().expect("temp dir");
        let cache_dir = cache.path().join("blocklists");
        let set = BlocklistSet::open(config(&server.url, &cache_dir)).expect("opens");
        // Nothing cached yet: empty until fetched.
        assert_eq!(set.check("ads.example.com"), None);
        let outcome = set.refresh_urls().await;
        assert!(matches!(outcome[0].1, Ok(2)), "{outcome:?}");
        assert_eq!(
            set.check("a.ads.example.com").map(|l| l.to_string()),
            Some(server.url.clone())
        );
        let cached = ListSource::parse(&server.url)
            .cache_file(&cache_dir)
            .expect("a URL");
        assert_eq!(
            std::fs::read(&cached).expect("cache written"),
            b"0.0.0.0 ads.example.com\n0.0.0.0 tracker.example\n"
        );

        // A server error, garbage, an absurd size: each keeps the list and the cache.
        let failures = [
            (Answer::Status(500), "HTTP 500"),
            (Answer::Status(404), "HTTP 404"),
            (
                Answer::Ok(b"<html>\n<h1>Captive portal</h1>\n</html>\n".to_vec()),
                "holds no domain name",
            ),
            (
                Answer::Ok(vec![0xff, 0x00, 0x17, 0x03, 0x03]),
                "holds no domain name",
            ),
            (Answer::Claims(1 << 40), "larger than"),
            // An empty download (or only comments) unblocks nothing and caches nothing.
            (Answer::Ok(Vec::new()), "came back without a name"),
            (
                Answer::Ok(b"# list being regenerated\n".to_vec()),
                "came back without a name",
            ),
        ];
        for (answer, expected) in failures {
            server.answer(answer);
            let outcome = set.refresh_urls().await;
            let error = outcome[0].1.as_ref().expect_err("the fetch fails");
            assert!(error.to_string().contains(expected), "{error}");
            assert!(
                set.check("tracker.example").is_some(),
                "list kept after {error}"
            );
            assert!(std::fs::read(&cached)
                .expect("cache kept")
                .starts_with(b"0.0.0.0 ads.example.com"));
        }

        // A new good list replaces the old one.
        server.answer(Answer::Ok(b"||new.example^\n".to_vec()));
        let outcome = set.refresh_urls().await;
        assert!(matches!(outcome[0].1, Ok(1)), "{outcome:?}");
        assert_eq!(set.check("tracker.example"), None);
        assert!(set.check("x.new.example").is_some());
    }

    #[tokio::test]
    async fn a_restart_without_network_blocks_from_the_cache() {
        let cache = tempfile::tempdir().expect("temp dir");
        let url = {
            let server = ListServer::start(Answer::Ok(b"||cached.example^\n".to_vec())).await;
            let set = BlocklistSet::open(config(&server.url, cache.path())).expect("opens");
            let outcome = set.refresh_urls().await;
            assert!(matches!(outcome[0].1, Ok(1)), "{outcome:?}");
            server.url.clone()
        };
        // The server is gone: its port refuses connections.
        let set = BlocklistSet::open(config(&url, cache.path())).expect("opens from cache");
        assert_eq!(
            set.check("www.cached.example").map(|l| l.to_string()),
            Some(url.clone())
        );
        let outcome = set.refresh_urls().await;
        let error = outcome[0].1.as_ref().expect_err("connection refused");
        assert!(matches!(error, BlocklistError::Fetch { .. }), "{error:?}");
        assert!(error
            .to_string()
            .starts_with(&format!("cannot fetch blocklist {url}")));
        assert!(set.check("cached.example").is_some(), "cache copy kept");

        // Without a cache directory, the restart starts empty.
        let uncached =
            BlocklistSet::open(BlocklistConfig::new(vec![ListSource::parse(&url)])).expect("opens");
        assert_eq!(uncached.check("cached.example"), None);
    }

    #[tokio::test]
    async fn the_refresh_task_fetches_at_start_and_on_every_interval() {
        let server = ListServer::start(Answer::Ok(b"one.example\n".to_vec())).await;
        let cache = tempfile::tempdir().expect("temp dir");
        let set = Arc::new(
            BlocklistSet::open(
                config(&server.url, cache.path()).refresh(Duration::from_millis(50)),
            )
            .expect("opens"),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(set.clone().run_refresh(async {
            let _ = stopped.await;
        }));
        // Wait for a fetch to have been answered and installed.
        let until = |host: &'static str, present: bool| {
            let set = set.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(10), async {
                    while set.check(host).is_some() != present {
                        tokio::task::yield_now().await;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
                .await
                .unwrap_or_else(|_| panic!("{host} never became {present}"))
            }
        };
        until("one.example", true).await;
        server.answer(Answer::Ok(b"two.example\n".to_vec()));
        until("two.example", true).await;
        until("one.example", false).await;
        // A failing server: the task goes on, the list stays.
        server.answer(Answer::Status(503));
        let seen = server.requests.load(Ordering::SeqCst);
        while server.requests.load(Ordering::SeqCst) < seen + 2 {
            tokio::time::timeout(Duration::from_secs(10), server.requested.notified())
                .await
                .expect("the task keeps fetching");
        }
        assert!(set.check("two.example").is_some());
        stop.send(()).expect("task running");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the task stops on shutdown")
            .expect("no panic");
    }
}
