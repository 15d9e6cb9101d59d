//! `socksmith bench` end to end with tiny counts and windows: straight to its own targets
//! (`--direct`), through `socksmith serve` (with `--proxy-pid`, so the idle phase reads /proc),
//! through microsocks, a real third-party peer, and through a relay that corrupts bytes (which
//! must show up as errors, not as figures). These check the output's structure and that every
//! figure is there and non-zero; they never assert on speed.

mod serve_support;

use serde_json::Value;
use serve_support::bin;
use socksmith_testkit::microsocks::{Microsocks, MicrosocksOptions};
use socksmith_testkit::socksmith::{run, SocksmithServer};
use socksmith_testkit::{within, TEST_DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Tiny everything: the whole run takes a few seconds.
const TINY: [&str; 18] = [
    "--repeat",
    "2",
    "--duration",
    "200ms",
    "--warmup",
    "50ms",
    "--parallel",
    "2",
    "--connrate-max",
    "300",
    "--idle-tunnels",
    "40",
    "--idle-settle",
    "0.1",
    "--idle-timeout",
    "10",
    "--json",
    "--rr-tunnels=2",
];

async fn bench_json(args: &[&str]) -> Value {
    let mut full = vec!["bench"];
    full.extend_from_slice(&TINY);
    full.extend_from_slice(args);
    let out = run(bin(), &full, b"").await;
    out.assert_success();
    let stderr = out.stderr_str();
    assert!(
        stderr.contains("throughput, 1 tunnel, upload"),
        "progress on stderr: {stderr}"
    );
    serde_json::from_str(&out.stdout_str()).expect("stdout is one JSON document")
}

fn metric<'a>(report: &'a Value, key: &str) -> &'a Value {
    report["metrics"]
        .as_array()
        .expect("metrics is an array")
        .iter()
        .find(|m| m["key"] == key)
        .unwrap_or_else(|| panic!("metric {key} in {report}"))
}

fn median(report: &Value, key: &str) -> f64 {
    let m = metric(report, key);
    let s = &m["summary"];
    assert_eq!(
        s["samples"].as_array().map(Vec::len),
        Some(if key.starts_with("idle") { 1 } else { 2 }),
        "one sample per repeat for {key}: {m}"
    );
    s["median"]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} has a median: {m}"))
}

fn assert_load_figures(report: &Value) {
    for key in [
        "throughput_1_up",
        "throughput_1_down",
        "throughput_n_up",
        "throughput_n_down",
        "connrate",
        "connrate_p50_us",
        "connrate_p99_us",
        "rr",
        "rr_p50_us",
        "rr_p99_us",
    ] {
        assert!(median(report, key) > 0.0, "{key} is non-zero: {report}");
    }
    assert_eq!(median(report, "connrate_errors"), 0.0, "{report}");
    assert_eq!(median(report, "rr_errors"), 0.0, "{report}");
    assert_eq!(median(report, "idle_open"), 40.0, "{report}");
    assert_eq!(
        report["idle"]["alive"], report["idle"]["probed"],
        "{report}"
    );
}

#[tokio::test]
async fn direct_run_reports_every_figure_as_json() {
    within(TEST_DEADLINE, "socksmith bench --direct", async {
        let report = bench_json(&["--direct"]).await;
        assert_eq!(report["proxy"], "direct");
        assert_eq!(report["repeat"], 2);
        assert_load_figures(&report);
        assert!(median(&report, "udp") > 0.0, "{report}");
        assert_eq!(median(&report, "udp_corrupted"), 0.0, "{report}");
        // No proxy process: no memory figures, and the table says why.
        assert!(metric(&report, "idle_kib_per_tunnel")["summary"].is_null());
    })
    .await;
}

#[tokio::test]
async fn through_socksmith_serve_measures_the_proxy_process() {
    within(
        TEST_DEADLINE,
        "socksmith bench through socksmith serve",
        async {
            let mut server = SocksmithServer::start(bin(), &[]).await;
            let url = format!("socks5://{}", server.addr());
            let pid = server.process_mut().pid().to_string();
            let report = bench_json(&["-x", &url, "--proxy-pid", &pid]).await;
            assert_eq!(report["proxy"], url);
            assert_load_figures(&report);
            assert!(
                median(&report, "udp") > 0.0,
                "UDP ASSOCIATE works: {report}"
            );
            let idle = &report["idle"];
            assert_eq!(idle["before"]["processes"], 1, "{idle}");
            let fds_before = idle["before"]["fds"].as_u64().expect("fds before");
            let fds_after = idle["after"]["fds"].as_u64().expect("fds after");
            assert!(
                fds_after >= fds_before + 80,
                "two sockets per open tunnel: {idle}"
            );
            let fds_midway = idle["midway"]["fds"].as_u64().expect("fds midway");
            assert!(
                fds_midway >= fds_before + 40 && fds_after >= fds_midway + 40,
                "measured between the two halves too: {idle}"
            );
            assert!(median(&report, "idle_fds_per_tunnel") >= 2.0, "{report}");
            // Reported beside the second half's figure (its value at 40 tunnels is within the
            // noise of page sharing, even below zero).
            assert!(
                median(&report, "idle_kib_per_tunnel_all").is_finite(),
                "{report}"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn through_microsocks_reports_udp_as_unsupported() {
    within(TEST_DEADLINE, "socksmith bench through microsocks", async {
        let Some(microsocks) = Microsocks::start(MicrosocksOptions::default()).await else {
            return; // skipped loudly by the testkit's missing-peer policy
        };
        let url = format!("socks5://{}", microsocks.addr());
        let report = bench_json(&["--proxy", &url]).await;
        assert_load_figures(&report);
        let udp = metric(&report, "udp");
        assert!(udp["summary"].is_null(), "{udp}");
        let note = udp["note"].as_str().expect("a reason");
        assert!(note.starts_with("unsupported"), "{note}");
    })
    .await;
}

#[tokio::test]
async fn table_is_the_default_output() {
    within(TEST_DEADLINE, "socksmith bench table", async {
        let out = run(
            bin(),
            &[
                "bench",
                "--direct",
                "--only",
                "rr",
                "--repeat",
                "1",
                "--duration",
                "0.1",
                "--warmup",
                "0",
            ],
            b"",
        )
        .await;
        out.assert_success();
        let table = out.stdout_str();
        assert!(table.starts_with("socksmith bench: direct"), "{table}");
        assert!(
            table.contains("request/response (64 B ping-pong)"),
            "{table}"
        );
        assert!(
            table.contains("throughput, 1 tunnel, upload") && table.contains("phase not selected"),
            "phases not run are listed with the reason: {table}"
        );
    })
    .await;
}

#[tokio::test]
async fn idle_phase_stops_opening_once_the_proxy_takes_no_more() {
    within(
        TEST_DEADLINE,
        "socksmith bench idle at a session limit",
        async {
            // 30 sessions at most: the server stops accepting there, and the idle phase must
            // say so and measure the 30 instead of waiting out its 60 s bound.
            let mut server = SocksmithServer::start(bin(), &["--max-sessions", "30"]).await;
            let url = format!("socks5://{}", server.addr());
            let pid = server.process_mut().pid().to_string();
            let args = [
                "bench",
                "-x",
                &url,
                "--proxy-pid",
                &pid,
                "--only",
                "idle",
                "--idle-tunnels",
                "100",
                "--idle-settle",
                "0.1",
                "--idle-timeout",
                "60",
                "--json",
            ];
            let out = run(bin(), &args, b"").await;
            out.assert_success();
            let stderr = out.stderr_str();
            assert!(
                stderr.contains("the proxy takes no more tunnels"),
                "says why it stopped: {stderr}"
            );
            let report: Value = serde_json::from_str(&out.stdout_str()).expect("JSON");
            let idle = &report["idle"];
            assert_eq!(idle["stalled"], true, "{idle}");
            assert_eq!(idle["opened"], 30, "{idle}");
            assert_eq!(idle["alive"], idle["probed"], "{idle}");
        },
    )
    .await;
}

/// A SOCKS5 server just good enough for the bench's CONNECTs (no authentication, IPv4
/// targets) whose relay flips every 1000th byte from the client, starting with the first.
async fn corrupting_proxy() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("socks5://{}", listener.local_addr().expect("bound"));
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(corrupt_one(client));
        }
    });
    (url, task)
}

async fn corrupt_one(mut client: TcpStream) -> std::io::Result<()> {
    let mut greeting = [0u8; 3];
    client.read_exact(&mut greeting).await?;
    client.write_all(&[5, 0]).await?;
    let mut request = [0u8; 10];
    client.read_exact(&mut request).await?;
    let target = std::net::SocketAddr::from((
        [request[4], request[5], request[6], request[7]],
        u16::from_be_bytes([request[8], request[9]]),
    ));
    let target = TcpStream::connect(target).await?;
    client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut target_read, mut target_write) = target.into_split();
    let upstream = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut offset = 0usize;
        loop {
            let n = client_read.read(&mut buf).await?;
            if n == 0 {
                return target_write.shutdown().await;
            }
            for (i, byte) in buf[..n].iter_mut().enumerate() {
                if (offset + i) % 1000 == 0 {
                    *byte ^= 0x01;
                }
            }
            offset += n;
            target_write.write_all(&buf[..n]).await?;
        }
    };
    let downstream = tokio::io::copy(&mut target_read, &mut client_write);
    let _ = tokio::join!(upstream, downstream);
    Ok(())
}

#[tokio::test]
async fn a_relay_that_corrupts_bytes_scores_errors_not_figures() {
    within(
        TEST_DEADLINE,
        "socksmith bench through a corrupting relay",
        async {
            let (url, _proxy) = corrupting_proxy().await;
            let out = run(
                bin(),
                &[
                    "bench",
                    "-x",
                    &url,
                    "--only",
                    "throughput,connrate,rr",
                    "--repeat",
                    "1",
                    "--duration",
                    "200ms",
                    "--warmup",
                    "0",
                    "--parallel",
                    "2",
                    "--connrate-max",
                    "100",
                    "--rr-tunnels",
                    "2",
                    "--json",
                ],
                b"",
            )
            .await;
            out.assert_success();
            let report: Value = serde_json::from_str(&out.stdout_str()).expect("one JSON document");
            for key in ["throughput_1_up", "throughput_n_up"] {
                let m = metric(&report, key);
                assert!(m["summary"].is_null(), "no figure for corrupted bytes: {m}");
                let note = m["note"].as_str().expect("a reason");
                assert!(note.contains("differ"), "{note}");
            }
            // Downloads cross the relay untouched and still count.
            let down = &metric(&report, "throughput_1_down")["summary"]["median"];
            assert!(down.as_f64() > Some(0.0), "{report}");
            let cr = metric(&report, "connrate");
            assert!(cr["summary"].is_null(), "every echoed byte was wrong: {cr}");
            let cr_errors = &metric(&report, "connrate_errors")["summary"]["median"];
            assert!(cr_errors.as_f64() > Some(0.0), "{report}");
            let rr_errors = &metric(&report, "rr_errors")["summary"]["median"];
            assert_eq!(
                rr_errors.as_f64(),
                Some(2.0),
                "both tunnels failed: {report}"
            );
        },
    )
    .await;
}
