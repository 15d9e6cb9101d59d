//! `socksmith serve --admin`: the metrics parsed by a real Prometheus parser (Python's
//! `prometheus_client`, Debian's python3-prometheus-client) after real traffic (curl through
//! the proxy), the live-session API with a tunnel held open, the bearer token, the refusal of
//! a reachable address without one, the environment and config-file keys, and the status page
//! rendered by headless Chromium.

mod serve_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use serve_support::{bin, log_with, serve, TestDir, STEP};
use socksmith_testkit::clients::curl;
use socksmith_testkit::process::{run_command, CLIENT_DEADLINE};
use socksmith_testkit::raw::socks5_connect;
use socksmith_testkit::socksmith::SocksmithServer;
use socksmith_testkit::tools::peer_missing;
use socksmith_testkit::{
    pattern, require_tool, within, Credentials, EchoServer, HttpServer, ProxyKind, TEST_DEADLINE,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const TOKEN: &str = "t0ken-for-tests";

/// The `http://ADDR/` that `admin on http://ADDR/` announced.
fn admin_addr(server: &SocksmithServer) -> SocketAddr {
    let stdout = server.stdout();
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("admin on http://"))
        .unwrap_or_else(|| panic!("no `admin on` line on stdout:\n{stdout}"));
    line.trim_end_matches('/')
        .parse()
        .unwrap_or_else(|e| panic!("`admin on` names no address ({e}): {line}"))
}

/// The admin server as a client on this host reaches it (0.0.0.0 through 127.0.0.1).
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

/// One HTTP response.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: String,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// `GET path` over HTTP/1.1, with `Authorization: Bearer TOKEN` when a token is given.
async fn get(admin: SocketAddr, path: &str, token: Option<&str>) -> Response {
    request_with(admin, "GET", path, token, "").await
}

/// The OpenMetrics `Accept` Prometheus sends.
const ACCEPT_OPENMETRICS: &str =
    "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n";

/// `METHOD path` over HTTP/1.1 (without a body), as [`get`].
async fn request(admin: SocketAddr, method: &str, path: &str, token: Option<&str>) -> Response {
    request_with(admin, method, path, token, "").await
}

/// [`request`] with more header lines (each ending in CRLF).
async fn request_with(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    extra: &str,
) -> Response {
    let mut s = tokio::time::timeout(STEP, TcpStream::connect(reachable(admin)))
        .await
        .expect("connect to the admin server in time")
        .expect("connect to the admin server");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\n{auth}{extra}Connection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(STEP, s.read_to_end(&mut raw))
        .await
        .expect("answered in time")
        .expect("read the answer");
    let raw = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    Response {
        status,
        headers: headers.to_owned(),
        body: body.to_owned(),
    }
}

/// Debian's interpreter when it can import `prometheus_client`.
fn require_prometheus_parser() -> Option<PathBuf> {
    let python = Path::new("/usr/bin/python3");
    let ok = std::process::Command::new(python)
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Some(python.to_path_buf())
    } else {
        peer_missing(
            "prometheus_client not installed for /usr/bin/python3: run scripts/test, which \
             installs it (Debian package python3-prometheus-client)",
        )
    }
}

/// The families of an OpenMetrics text, as the official Python parser reads it (which rejects
/// anything malformed): `{family: {"type": ..., "samples": [[name, {labels}, value]]}}`.
async fn parse_metrics(python: &Path, text: &str) -> Value {
    parse_with(python, "prometheus_client.openmetrics.parser", text).await
}

/// The families of a Prometheus text-format (0.0.4) exposition, as the official Python parser
/// reads it, in [`parse_metrics`]'s shape.
async fn parse_prometheus_text(python: &Path, text: &str) -> Value {
    parse_with(python, "prometheus_client.parser", text).await
}

/// `text` read by the `text_string_to_metric_families` of the Python module `parser`.
async fn parse_with(python: &Path, parser: &str, text: &str) -> Value {
    let script = format!(
        r#"
import json, sys
from {parser} import text_string_to_metric_families
out = {{}}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = {{"type": f.type, "samples": [[s.name, s.labels, s.value] for s in f.samples]}}
print(json.dumps(out))
"#
    );
    let mut cmd = tokio::process::Command::new(python);
    cmd.args(["-c", &script]);
    let out = run_command(cmd, text.as_bytes(), CLIENT_DEADLINE).await;
    assert!(
        out.success(),
        "{parser} rejected /metrics: {}\n{text}",
        out.stderr_str()
    );
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

/// The value of the sample `name` with exactly `labels`, or `None`.
fn sample(families: &Value, family: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    families[family]["samples"]
        .as_array()?
        .iter()
        .find(|s| {
            let have = s[1].as_object().expect("labels object");
            s[0] == name
                && have.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| have.get(*k) == Some(&Value::from(*v)))
        })
        .and_then(|s| s[2].as_f64())
}

async fn scrape(python: &Path, admin: SocketAddr) -> (Response, Value) {
    let response = request_with(admin, "GET", "/metrics", None, ACCEPT_OPENMETRICS).await;
    assert_eq!(response.status, 200, "{response:?}");
    let families = parse_metrics(python, &response.body).await;
    (response, families)
}

/// Scrapes until `check` holds (the server counts a session when it has ended, just after
/// the client saw its last byte); panics with the last text after [`STEP`].
async fn scrape_until(
    python: &Path,
    admin: SocketAddr,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let (response, families) = scrape(python, admin).await;
        if check(&families) {
            return families;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not seen within {STEP:?}:\n{}",
            response.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_start_at_zero_then_count_curl_traffic_refusals_and_bad_logins() {
    within(TEST_DEADLINE, "metrics", async {
        let Some(python) = require_prometheus_parser() else {
            return;
        };
        let server = serve(&[
            "--admin",
            "127.0.0.1:0",
            "--user",
            "alice:wonderland",
            "--deny",
            "127.0.0.2/32",
        ])
        .await;
        let admin = admin_addr(&server);

        let (response, families) = scrape(&python, admin).await;
        assert_eq!(
            response.header("content-type"),
            Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
        );
        // Without OpenMetrics in `Accept` (curl, older scrapers): the Prometheus text format,
        // which its own parser reads with every counter's samples.
        let plain = get(admin, "/metrics", None).await;
        assert_eq!(
            plain.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let plain_families = parse_prometheus_text(&python, &plain.body).await;
        assert_eq!(
            plain_families["socksmith_sessions"]["type"], "counter",
            "{plain_families}"
        );
        assert!(
            sample(
                &plain_families,
                "socksmith_bytes",
                "socksmith_bytes_total",
                &[("direction", "up")]
            )
            .is_some(),
            "{plain_families}"
        );
        for (family, kind) in [
            ("socksmith_sessions_active", "gauge"),
            ("socksmith_sessions", "counter"),
            ("socksmith_bytes", "counter"),
            ("socksmith_auth_failures", "counter"),
            ("socksmith_denied", "counter"),
            ("socksmith_blocked", "counter"),
            ("socksmith_connect_duration_seconds", "histogram"),
            ("socksmith_resolve_duration_seconds", "histogram"),
        ] {
            assert_eq!(families[family]["type"], kind, "{family}: {families}");
        }
        let zero = Some(0.0);
        assert_eq!(
            sample(
                &families,
                "socksmith_sessions_active",
                "socksmith_sessions_active",
                &[]
            ),
            zero
        );
        for direction in ["up", "down"] {
            assert_eq!(
                sample(
                    &families,
                    "socksmith_bytes",
                    "socksmith_bytes_total",
                    &[("direction", direction)]
                ),
                zero,
                "{direction}"
            );
        }
        assert_eq!(
            sample(
                &families,
                "socksmith_auth_failures",
                "socksmith_auth_failures_total",
                &[]
            ),
            zero
        );
        for reason in [
            "denied_network",
            "loopback",
            "link_local",
            "metadata",
            "unusable_target",
            "hostname_required",
            "other",
        ] {
            assert_eq!(
                sample(
                    &families,
                    "socksmith_denied",
                    "socksmith_denied_total",
                    &[("reason", reason)]
                ),
                zero,
                "{reason}"
            );
        }
        for histogram in [
            "socksmith_connect_duration_seconds",
            "socksmith_resolve_duration_seconds",
        ] {
            assert_eq!(
                sample(&families, histogram, &format!("{histogram}_count"), &[]),
                zero
            );
        }
        assert_eq!(
            families["socksmith_sessions"]["samples"],
            Value::Array(vec![])
        );
        assert_eq!(
            families["socksmith_blocked"]["samples"],
            Value::Array(vec![])
        );

        // Real traffic: a download, a wrong password, a denied target.
        let http = HttpServer::start().await;
        let alice = server
            .proxy(ProxyKind::Socks5h)
            .with_auth(Some(Credentials::new("alice", "wonderland")));
        let Some(out) = curl(&alice, &http.url("/bytes/100000"), &[]).await else {
            return;
        };
        out.assert_success();
        assert_eq!(out.stdout, pattern(100_000));
        let mallory = server
            .proxy(ProxyKind::Socks5h)
            .with_auth(Some(Credentials::new("alice", "not-her-password")));
        let Some(out) = curl(&mallory, &http.url("/"), &[]).await else {
            return;
        };
        assert!(!out.success(), "a wrong password must fail");
        let denied_url = format!("http://127.0.0.2:{}/", http.addr().port());
        let Some(out) = curl(&alice, &denied_url, &[]).await else {
            return;
        };
        assert!(!out.success(), "a denied target must fail");

        let sessions = |f: &Value, outcome: &str| {
            sample(
                f,
                "socksmith_sessions",
                "socksmith_sessions_total",
                &[
                    ("version", "socks5"),
                    ("command", "connect"),
                    ("outcome", outcome),
                ],
            )
        };
        // Counted when each session ends; the gauge drops a moment later, as its task returns.
        let families = scrape_until(&python, admin, "the three sessions ended", |f| {
            sessions(f, "ok").is_some()
                && sessions(f, "denied").is_some()
                && sample(
                    f,
                    "socksmith_sessions_active",
                    "socksmith_sessions_active",
                    &[],
                ) == Some(0.0)
        })
        .await;
        assert_eq!(sessions(&families, "ok"), Some(1.0), "{families}");
        assert_eq!(sessions(&families, "denied"), Some(1.0), "{families}");
        assert_eq!(
            sample(
                &families,
                "socksmith_sessions",
                "socksmith_sessions_total",
                &[
                    ("version", "socks5"),
                    ("command", "none"),
                    ("outcome", "auth_failed")
                ]
            ),
            Some(1.0),
            "{families}"
        );
        let down = sample(
            &families,
            "socksmith_bytes",
            "socksmith_bytes_total",
            &[("direction", "down")],
        )
        .expect("bytes down");
        let up = sample(
            &families,
            "socksmith_bytes",
            "socksmith_bytes_total",
            &[("direction", "up")],
        )
        .expect("bytes up");
        assert!(down > 100_000.0, "the download and its headers: {down}");
        assert!(up > 0.0 && up < 1_000.0, "one GET request: {up}");
        assert_eq!(
            sample(
                &families,
                "socksmith_auth_failures",
                "socksmith_auth_failures_total",
                &[]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &families,
                "socksmith_denied",
                "socksmith_denied_total",
                &[("reason", "denied_network")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &families,
                "socksmith_connect_duration_seconds",
                "socksmith_connect_duration_seconds_count",
                &[]
            ),
            Some(1.0),
            "one CONNECT reached the egress"
        );
        assert_eq!(
            sample(
                &families,
                "socksmith_connect_duration_seconds",
                "socksmith_connect_duration_seconds_bucket",
                &[("le", "+Inf")]
            ),
            Some(1.0)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tor_resolve_lookups_are_timed_in_the_resolve_histogram() {
    within(TEST_DEADLINE, "resolve metrics", async {
        let Some(python) = require_prometheus_parser() else {
            return;
        };
        // Debian's tor-resolve: the client of Tor's RESOLVE extension (scripts/test unpacks it).
        let Some(tor_resolve) = socksmith_testkit::tools::find_tool("tor-resolve").or_else(|| {
            peer_missing("tor-resolve not installed: run scripts/test (Debian package tor)")
        }) else {
            return;
        };
        let server = serve(&["--admin", "127.0.0.1:0"]).await;
        let admin = admin_addr(&server);
        let mut cmd = tokio::process::Command::new(&tor_resolve);
        cmd.args(["-5", "localhost"]).arg(server.addr().to_string());
        let out = run_command(cmd, b"", STEP).await;
        out.assert_success();
        assert_eq!(out.stdout_str().trim(), "127.0.0.1", "{out}");
        let resolves = |f: &Value| {
            sample(
                f,
                "socksmith_sessions",
                "socksmith_sessions_total",
                &[
                    ("version", "socks5"),
                    ("command", "resolve"),
                    ("outcome", "ok"),
                ],
            )
        };
        let families = scrape_until(&python, admin, "the RESOLVE session", |f| {
            resolves(f).is_some()
        })
        .await;
        assert_eq!(resolves(&families), Some(1.0), "{families}");
        let histogram = "socksmith_resolve_duration_seconds";
        assert_eq!(
            sample(&families, histogram, &format!("{histogram}_count"), &[]),
            Some(1.0),
            "{families}"
        );
        assert_eq!(
            sample(
                &families,
                "socksmith_resolves",
                "socksmith_resolves_total",
                &[]
            ),
            Some(1.0),
            "{families}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counts_carry_on_across_a_sighup_reload() {
    within(TEST_DEADLINE, "metrics across a reload", async {
        let Some(python) = require_prometheus_parser() else {
            return;
        };
        let mut server = serve(&["--admin", "127.0.0.1:0"]).await;
        let admin = admin_addr(&server);
        let http = HttpServer::start().await;
        let proxy = server.proxy(ProxyKind::Socks5h);
        let ok_sessions = |f: &Value| {
            sample(
                f,
                "socksmith_sessions",
                "socksmith_sessions_total",
                &[
                    ("version", "socks5"),
                    ("command", "connect"),
                    ("outcome", "ok"),
                ],
            )
        };
        for round in 1..=2 {
            if round == 2 {
                server.process_mut().signal("HUP");
                log_with(&server, "configuration reloaded", 1).await;
            }
            let Some(out) = curl(&proxy, &http.url("/"), &[]).await else {
                return;
            };
            out.assert_success();
            let expected = f64::from(round);
            let families = scrape_until(&python, admin, "the session counted", |f| {
                ok_sessions(f) == Some(expected)
            })
            .await;
            assert_eq!(ok_sessions(&families), Some(expected), "{families}");
        }
        // The reloaded configuration still reports to the same table.
        let summary = get(admin, "/api/summary", None).await.json();
        assert_eq!(
            summary["finished"].as_array().map(Vec::len),
            Some(2),
            "{summary}"
        );
    })
    .await;
}

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_sessions_lists_a_tunnel_while_it_is_open_and_not_after() {
    within(TEST_DEADLINE, "live sessions", async {
        let server = serve(&["--admin", "127.0.0.1:0", "--user", "alice:wonderland"]).await;
        let admin = admin_addr(&server);
        let echo = EchoServer::start().await;
        let creds = Credentials::new("alice", "wonderland");
        let (mut tunnel, _) = socks5_connect(server.addr(), Some(&creds), echo.addr())
            .await
            .expect("CONNECT through the proxy");
        tunnel.write_all(b"ping").await.expect("send");
        let mut echoed = [0; 4];
        tunnel.read_exact(&mut echoed).await.expect("echo");
        let client = tunnel.local_addr().expect("local address");

        let response = get(admin, "/api/sessions", None).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-type"), Some("application/json"));
        let sessions = response.json()["sessions"].clone();
        let list = sessions.as_array().expect("a list");
        assert_eq!(list.len(), 1, "{sessions}");
        let live = &list[0];
        assert_eq!(live["client"], client.to_string());
        assert_eq!(live["user"], "alice");
        assert_eq!(live["command"], "connect");
        assert_eq!(live["target"], echo.addr().to_string());
        let started = live["started"].as_str().expect("started");
        assert!(
            started.len() == 20 && started.ends_with('Z') && started.as_bytes()[10] == b'T',
            "RFC 3339 UTC: {started}"
        );
        // Bytes are reported in steps of 256 KiB: four are not one yet.
        assert_eq!(
            (live["bytes_up"].as_u64(), live["bytes_down"].as_u64()),
            (Some(0), Some(0))
        );

        // A megabyte each way: the open row shows it while the tunnel stays open, behind by
        // less than one step.
        let data = socksmith_testkit::pattern(MIB);
        let (mut reader, mut writer) = tunnel.split();
        let mut back = vec![0; MIB];
        let (sent, read) = tokio::join!(writer.write_all(&data), reader.read_exact(&mut back));
        sent.expect("send a megabyte");
        read.expect("its echo");
        assert!(back == data, "the echo came back different");
        let moved = 2 * (MIB as u64 + 4);
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let sessions = get(admin, "/api/sessions", None).await.json();
            let row = &sessions["sessions"][0];
            let reported =
                row["bytes_up"].as_u64().unwrap_or(0) + row["bytes_down"].as_u64().unwrap_or(0);
            assert!(reported <= moved, "{sessions}");
            // `socksmith_bytes_total` (the summary's totals) moves in the same steps.
            let summary = get(admin, "/api/summary", None).await.json();
            let counted = summary["bytes_up"].as_u64().unwrap_or(0)
                + summary["bytes_down"].as_u64().unwrap_or(0);
            assert!(counted <= moved, "{summary}");
            if reported + 256 * 1024 > moved && counted + 256 * 1024 > moved {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the open tunnel's bytes did not show: {sessions}, {summary}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        drop(tunnel);
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let summary = get(admin, "/api/summary", None).await.json();
            // The row goes when the tunnel ends; the finished entry follows with the bytes.
            let gone = summary["sessions"].as_array().is_some_and(Vec::is_empty);
            let ended = summary["finished"]
                .as_array()
                .is_some_and(|f| !f.is_empty());
            if gone && ended {
                let finished = &summary["finished"][0];
                assert_eq!(finished["target"], echo.addr().to_string(), "{summary}");
                assert_eq!(finished["bytes_up"], MIB + 4, "{summary}");
                assert_eq!(finished["bytes_down"], MIB + 4, "{summary}");
                assert_eq!(finished["outcome"], "ok", "{summary}");
                assert_eq!(finished["user"], "alice", "{summary}");
                assert_eq!(summary["bytes_up"], MIB + 4, "{summary}");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "still listed: {summary}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let unknown = get(admin, "/nope", None).await;
        assert_eq!(unknown.status, 404);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_every_request_needs_the_bearer_header() {
    within(TEST_DEADLINE, "admin token", async {
        let server = serve(&["--admin", "127.0.0.1:0", "--admin-token", TOKEN]).await;
        let admin = admin_addr(&server);
        for path in ["/metrics", "/api/sessions", "/api/summary", "/"] {
            let missing = get(admin, path, None).await;
            assert_eq!(missing.status, 401, "{path} without a token: {missing:?}");
            assert!(
                missing
                    .header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Bearer")),
                "{missing:?}"
            );
            let wrong = get(admin, path, Some("not-the-token")).await;
            assert_eq!(wrong.status, 401, "{path} with a wrong token");
            let right = get(admin, path, Some(TOKEN)).await;
            assert_eq!(right.status, 200, "{path} with the token: {right:?}");
        }
        // The token is checked first, whatever the method or path.
        assert_eq!(get(admin, "/nope", None).await.status, 401);
        assert_eq!(get(admin, "/nope", Some(TOKEN)).await.status, 404);
        assert_eq!(request(admin, "POST", "/metrics", None).await.status, 401);
        let post = request(admin, "POST", "/metrics", Some(TOKEN)).await;
        assert_eq!(post.status, 405);
        assert_eq!(post.header("allow"), Some("GET, HEAD"));
        // Without the token `/` is still the page (it asks for the token), and holds no data.
        let page = get(admin, "/", None).await;
        assert!(page.body.contains("id=\"login\""), "{}", page.body);
        assert!(page
            .header("content-security-policy")
            .is_some_and(|p| p.contains("default-src 'none'")));
        // Secrets never reach the logs.
        assert!(!server.stderr().contains(TOKEN), "{}", server.stderr());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reachable_admin_address_is_refused_without_a_token_and_served_with_one() {
    within(TEST_DEADLINE, "non-loopback admin", async {
        let failure = SocksmithServer::try_start(
            bin(),
            &["serve", "--listen", "127.0.0.1:0", "--admin", "0.0.0.0:0"],
            &[],
            1,
        )
        .await
        .expect_err("0.0.0.0 without a token must be refused");
        assert_eq!(failure.status.and_then(|s| s.code()), Some(1), "{failure}");
        assert!(failure.stderr.contains("--admin-token"), "{failure}");
        assert!(
            !failure.stdout.contains("listening on"),
            "nothing may listen: {failure}"
        );
        assert!(!failure.stdout.contains("admin on"), "{failure}");

        let server = serve(&["--admin", "0.0.0.0:0", "--admin-token", TOKEN]).await;
        let admin = admin_addr(&server);
        assert!(admin.ip().is_unspecified() && admin.port() != 0, "{admin}");
        assert_eq!(get(admin, "/metrics", None).await.status, 401);
        assert_eq!(get(admin, "/metrics", Some(TOKEN)).await.status, 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_is_set_by_the_environment_and_by_the_config_file() {
    within(TEST_DEADLINE, "admin settings", async {
        let from_env = SocksmithServer::try_start(
            bin(),
            &["serve", "--listen", "127.0.0.1:0"],
            &[
                ("SOCKSMITH_ADMIN", "127.0.0.1:0"),
                ("SOCKSMITH_ADMIN_TOKEN", TOKEN),
            ],
            1,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let admin = admin_addr(&from_env);
        assert_eq!(get(admin, "/api/sessions", None).await.status, 401);
        assert_eq!(get(admin, "/api/sessions", Some(TOKEN)).await.status, 200);

        let dir = TestDir::new("admin-config");
        let config = dir.path().join("socksmith.toml");
        std::fs::write(
            &config,
            format!(
                "listen = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nadmin_token = \"{TOKEN}\"\n"
            ),
        )
        .expect("write the config file");
        let config = config.to_str().expect("UTF-8 path");
        let from_file = SocksmithServer::try_start(bin(), &["serve", "--config", config], &[], 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let admin = admin_addr(&from_file);
        assert_eq!(get(admin, "/metrics", None).await.status, 401);
        assert_eq!(get(admin, "/metrics", Some(TOKEN)).await.status, 200);

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "admin = \"localhost\"\nadmin_token = 12345678\n").expect("write");
        let bad = bad.to_str().expect("UTF-8 path");
        let failure = SocksmithServer::try_start(bin(), &["serve", "--config", bad], &[], 1)
            .await
            .expect_err("a bad admin key must be refused");
        assert!(failure.stderr.contains("admin_token"), "{failure}");
        assert!(
            !failure.stderr.contains("12345678"),
            "a secret was shown: {failure}"
        );
    })
    .await;
}

/// Runs headless Chromium on `url` with time for the page's script to fetch and draw, and
/// returns the DOM it ended with.
async fn chromium_dom(chromium: &Path, url: &str) -> String {
    let profile = TestDir::new("admin-chromium");
    let mut cmd = tokio::process::Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-proxy-server",
        "--virtual-time-budget=8000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(["--dump-dom", url]);
    let out = run_command(cmd, b"", CLIENT_DEADLINE).await;
    assert!(out.success(), "chromium failed: {}", out.stderr_str());
    out.stdout_str()
}

/// The markup of the element with `id`, up to the first `close` after it (`</tbody>` for a
/// table body, `</` for an element holding text only).
fn element<'a>(dom: &'a str, id: &str, close: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the DOM:\n{dom}"));
    let rest = &dom[start..];
    &rest[..rest.find(close).unwrap_or(rest.len())]
}

/// The text of the element with `id` that holds text only.
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let markup = element(dom, id, "</");
    markup.split_once('>').map_or("", |(_, text)| text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_live_tunnels_and_refusals_in_headless_chromium() {
    within(TEST_DEADLINE, "status page", async {
        let Some(chromium) = require_tool("chromium") else {
            return;
        };
        let server = serve(&[
            "--admin",
            "127.0.0.1:0",
            "--admin-token",
            TOKEN,
            "--deny",
            "127.0.0.2/32",
        ])
        .await;
        let admin = admin_addr(&server);
        let echo = EchoServer::start().await;
        let (tunnel, _) = socks5_connect(server.addr(), None, echo.addr())
            .await
            .expect("CONNECT through the proxy");
        let client = tunnel.local_addr().expect("local address");
        let http = HttpServer::start().await;
        let proxy = server.proxy(ProxyKind::Socks5h);
        let Some(out) = curl(
            &proxy,
            &format!("http://127.0.0.2:{}/", http.addr().port()),
            &[],
        )
        .await
        else {
            return;
        };
        assert!(!out.success(), "a denied target must fail");
        let Some(out) = curl(&proxy, &http.url("/bytes/3000"), &[]).await else {
            return;
        };
        out.assert_success();
        // Wait until the API has what the page is to show, so the page cannot race it.
        let deadline = tokio::time::Instant::now() + STEP;
        while get(admin, "/api/summary", Some(TOKEN)).await.json()["finished"]
            .as_array()
            .is_none_or(Vec::is_empty)
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the download never finished"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // The token in the fragment: the page keeps it and sends it as the bearer header.
        let dom = chromium_dom(&chromium, &format!("http://{admin}/#token={TOKEN}")).await;
        let status = text_of(&dom, "status");
        assert!(
            status.contains("updated"),
            "the page never fetched: {status}\n{dom}"
        );
        let live = element(&dom, "sessions", "</tbody>");
        assert!(
            live.contains(&client.to_string()),
            "live tunnel client missing: {live}"
        );
        assert!(
            live.contains(&echo.addr().to_string()),
            "live tunnel target missing: {live}"
        );
        let refusals = element(&dom, "refusals", "</tbody>");
        assert!(refusals.contains("denied_network"), "{refusals}");
        assert!(
            refusals.contains("127.0.0.2 is in denied network 127.0.0.2/32"),
            "{refusals}"
        );
        let finished = element(&dom, "finished", "</tbody>");
        assert!(finished.contains(&http.addr().to_string()), "{finished}");
        assert!(text_of(&dom, "tunnels-active") == "1", "{dom}");
        assert!(text_of(&dom, "denied") == "1", "{dom}");
        assert!(
            !dom.contains("id=\"login\" style=\"display: block"),
            "{dom}"
        );

        // Without the token the page shows its token form and no data.
        let dom = chromium_dom(&chromium, &format!("http://{admin}/")).await;
        assert!(dom.contains("id=\"login\" style=\"display: block"), "{dom}");
        assert!(text_of(&dom, "status").contains("needs a token"), "{dom}");
        assert!(
            !element(&dom, "sessions", "</tbody>").contains(&echo.addr().to_string()),
            "{dom}"
        );
        drop(tunnel);
    })
    .await;
}

/// The dashboard shipped in `dist/grafana/`.
fn dashboard() -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/grafana/socksmith-dashboard.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every PromQL expression of the dashboard's panels, with Grafana's variables filled in as
/// Grafana would for "all instances".
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut queries = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("a panel title").to_owned();
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("a PromQL expression");
            let expr = expr
                .replace("$instance", ".*")
                .replace("$__rate_interval", "1m");
            queries.push((title.clone(), expr));
        }
    }
    queries
}

/// `GET /api/v1/query?query=EXPR` on Prometheus; its `data` (panics unless `success`).
async fn promql(prometheus: SocketAddr, expr: &str) -> Value {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    let path = format!(
        "/api/v1/query?query={}",
        utf8_percent_encode(expr, NON_ALPHANUMERIC)
    );
    let response = get(prometheus, &path, None).await;
    let body = response.json();
    assert_eq!(body["status"], "success", "{expr}: {body}");
    body["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_admin_and_every_dashboard_query_runs() {
    use socksmith_testkit::process::{free_port, PeerProcess};
    within(TEST_DEADLINE, "prometheus and the dashboard", async {
        let dashboard = dashboard();
        let queries = dashboard_queries(&dashboard);
        assert!(queries.len() >= 10, "{queries:?}");
        for (title, expr) in &queries {
            assert!(expr.contains("socksmith_"), "{title}: {expr}");
        }
        let Some(prometheus_bin) = require_tool("prometheus") else {
            return;
        };
        let server = serve(&["--admin", "127.0.0.1:0"]).await;
        let admin = admin_addr(&server);
        let http = HttpServer::start().await;
        let Some(out) = curl(
            &server.proxy(ProxyKind::Socks5h),
            &http.url("/bytes/5000"),
            &[],
        )
        .await
        else {
            return;
        };
        out.assert_success();

        let dir = TestDir::new("admin-prometheus");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
                 - job_name: socksmith\n    static_configs:\n      - targets: ['{admin}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let port = free_port(&["127.0.0.1".parse().expect("valid")]);
        let prometheus = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = socksmith_testkit::process::peer_command(&prometheus_bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={prometheus}"));
        let _process = PeerProcess::spawn("prometheus", cmd, &dir.path().join("prometheus.log"))
            .unwrap_or_else(|e| panic!("{e}"));

        // Scraped, parsed and stored: the download's bytes are in Prometheus.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let stored = loop {
            // Up, past its start-up (503 until the storage is open), and scraped once.
            let up = TcpStream::connect(prometheus).await.is_ok()
                && get(prometheus, "/-/ready", None).await.status == 200;
            let ready = if up {
                let data = promql(prometheus, "socksmith_bytes_total{direction=\"down\"}").await;
                data["result"].as_array().filter(|r| !r.is_empty()).cloned()
            } else {
                None
            };
            if let Some(result) = ready {
                break result;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Prometheus stored nothing from {admin} within 60s:\n{}",
                std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let down: f64 = stored[0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .expect("a sample value");
        assert!(down >= 5_000.0, "{stored:?}");
        assert_eq!(stored[0]["metric"]["instance"], admin.to_string());

        // The scrape itself was clean (no parse error from the OpenMetrics text).
        let targets = get(prometheus, "/api/v1/targets", None).await.json();
        let target = &targets["data"]["activeTargets"][0];
        assert_eq!(target["health"], "up", "{targets}");
        assert_eq!(target["lastError"], "", "{targets}");

        // Every dashboard query is valid PromQL over these series; the unfiltered gauges and
        // the instance variable's own query find this server.
        for (_, expr) in &queries {
            promql(prometheus, expr).await;
        }
        let active = promql(
            prometheus,
            "sum(socksmith_sessions_active{instance=~\".*\"})",
        )
        .await;
        assert_eq!(
            active["result"].as_array().map(Vec::len),
            Some(1),
            "{active}"
        );
        let instance = dashboard["templating"]["list"]
            .as_array()
            .and_then(|l| l.iter().find(|v| v["name"] == "instance"))
            .expect("an instance variable");
        assert_eq!(
            instance["definition"],
            "label_values(socksmith_sessions_active, instance)"
        );
        let labels = get(
            prometheus,
            "/api/v1/label/instance/values?match%5B%5D=socksmith_sessions_active",
            None,
        )
        .await
        .json();
        assert!(
            labels["data"]
                .as_array()
                .is_some_and(|v| v.contains(&Value::from(admin.to_string()))),
            "{labels}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_replaces_the_admin_token_and_refuses_to_drop_a_needed_one() {
    within(TEST_DEADLINE, "admin token reload", async {
        let dir = TestDir::new("admin-token-reload");
        let path = dir.path().join("socksmith.toml");
        let file = |token: Option<&str>| {
            let token = token.map_or(String::new(), |t| format!("admin_token = \"{t}\"\n"));
            format!("listen = [\"127.0.0.1:0\"]\nadmin = \"0.0.0.0:0\"\n{token}")
        };
        std::fs::write(&path, file(Some("one"))).expect("write the config");
        let path_str = path.to_str().expect("UTF-8 path").to_owned();
        let mut server =
            SocksmithServer::try_start(bin(), &["serve", "--config", &path_str], &[], 1)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        let admin = admin_addr(&server);
        assert_eq!(get(admin, "/metrics", Some("one")).await.status, 200);

        // A leaked token is revoked by a reload.
        std::fs::write(&path, file(Some("two"))).expect("write the config");
        server.process_mut().signal("HUP");
        log_with(&server, "configuration reloaded", 1).await;
        assert_eq!(get(admin, "/metrics", Some("one")).await.status, 401);
        assert_eq!(get(admin, "/metrics", Some("two")).await.status, 200);

        // An admin server other machines can reach keeps needing one: as `--check` and a
        // start would, the reload refuses a file without it.
        std::fs::write(&path, file(None)).expect("write the config");
        server.process_mut().signal("HUP");
        let log = log_with(&server, "the old one keeps serving", 1).await;
        assert!(log.contains("--admin-token"), "{log}");
        assert_eq!(get(admin, "/metrics", None).await.status, 401);
        assert_eq!(get(admin, "/metrics", Some("two")).await.status, 200);
    })
    .await;
}
