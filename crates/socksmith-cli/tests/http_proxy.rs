//! `socksmith serve` as an HTTP proxy on its SOCKS port, driven by real HTTP clients: curl
//! (`-x http://` for http and https targets, `-p` for CONNECT, `-U` for credentials),
//! Python's standard library (urllib with a `ProxyHandler`) and git over smart HTTP through
//! `http.proxy`, with SOCKS clients on the same port in the same run. Raw bytes check what
//! clients do not send on their own: CONNECT with payload behind the head, half-close,
//! pipelining, smuggling shapes, oversized heads, `--no-http`.
//!
//! Targets are on loopback: the testkit's HTTP server, a Python HTTPS server with a
//! certificate made for the test, and Python's CGI server running `git http-backend`.

mod serve_support;

use std::path::Path;
use std::process::Stdio;

use serve_support::{connect, log_with, recv_to_end, send, serve, TestDir, STEP};
use socksmith_testkit::clients::curl;
use socksmith_testkit::process::{run_command, CmdOutput, CLIENT_DEADLINE};
use socksmith_testkit::socksmith::SocksmithServer;
use socksmith_testkit::targets::HTTP_ROOT_BODY;
use socksmith_testkit::tools::require_tool;
use socksmith_testkit::{
    pattern, within, Credentials, EchoServer, HttpServer, ProxyKind, TEST_DEADLINE,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

/// `curl -sS --max-time 10 -x http://[USER@]PROXY ARGS... URL`, without any proxy setting
/// from the environment getting in the way.
async fn curl_http(server: &SocksmithServer, args: &[&str], url: &str) -> Option<CmdOutput> {
    let curl = require_tool("curl")?;
    let mut cmd = Command::new(curl);
    clean_proxy_env(&mut cmd);
    cmd.args(["-sS", "--max-time", "10", "-x"])
        .arg(format!("http://{}", server.addr()))
        .args(args)
        .arg(url);
    Some(run_command(cmd, b"", CLIENT_DEADLINE).await)
}

fn clean_proxy_env(cmd: &mut Command) {
    for var in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(var);
    }
}

/// A Python program serving on a loopback port it prints first; killed on drop.
struct PythonServer {
    port: u16,
    _child: Child,
}

impl PythonServer {
    async fn start(program: &str, dir: &Path) -> Option<Self> {
        let python = require_tool("python3")?;
        let mut cmd = Command::new(python);
        clean_proxy_env(&mut cmd);
        cmd.args(["-c", program])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("start python3");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        tokio::time::timeout(STEP, BufReader::new(stdout).read_line(&mut line))
            .await
            .expect("the Python server reports its port in time")
            .expect("read the Python server's port");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the Python server printed {line:?} instead of its port"));
        Some(PythonServer {
            port,
            _child: child,
        })
    }
}

/// Serves the current directory over HTTPS with `cert.pem`/`key.pem`, HTTP/1.1 keep-alive.
const HTTPS_SERVER: &str = r#"
import http.server, ssl
class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain("cert.pem", "key.pem")
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// Serves the current directory's `cgi-bin/` (git http-backend) over HTTP.
const CGI_SERVER: &str = r#"
import http.server
class Handler(http.server.CGIHTTPRequestHandler):
    def log_message(self, *args): pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// Serves the current directory over HTTP/1.1 with keep-alive (several requests per
/// connection, unlike the testkit's server).
const KEEPALIVE_SERVER: &str = r#"
import http.server
class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// Runs a command to its end, for the test's setup; panics with its output if it fails.
async fn setup(program: &str, args: &[&str], dir: &Path) -> Option<()> {
    let path = require_tool(program)?;
    let mut cmd = Command::new(path);
    cmd.args(args).current_dir(dir);
    run_command(cmd, b"", CLIENT_DEADLINE)
        .await
        .assert_success();
    Some(())
}

/// The status code of the first response in `bytes`.
fn status(bytes: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(bytes);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 response: {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_forwards_tunnels_and_speaks_socks_on_the_same_port() {
    within(
        TEST_DEADLINE,
        "curl over HTTP and SOCKS on one port",
        async {
            let server = serve(&[]).await;
            let http = HttpServer::start().await;

            // Absolute-form, forwarded in origin-form with Host from the URI.
            let Some(out) = curl_http(&server, &[], &http.url("/bytes/100000")).await else {
                return;
            };
            out.assert_success();
            assert_eq!(out.stdout, pattern(100_000));
            let forwarded = http.requests().join("\n").to_ascii_lowercase();
            assert!(
                forwarded.starts_with("get /bytes/100000 http/1.1"),
                "{forwarded}"
            );
            assert!(
                forwarded.contains(&format!("host: {}", http.addr())),
                "{forwarded}"
            );
            assert!(!forwarded.contains("proxy-connection"), "{forwarded}");

            // CONNECT (-p) to a name the proxy resolves.
            let out = curl_http(&server, &["-p"], &http.url_with_host("localhost", "/"))
                .await
                .expect("curl is there");
            out.assert_success();
            assert_eq!(out.stdout_str(), HTTP_ROOT_BODY);

            // SOCKS5 and SOCKS4 on the same port in the same run.
            for kind in [ProxyKind::Socks5h, ProxyKind::Socks4] {
                let out = curl(&server.proxy(kind), &http.url("/"), &[])
                    .await
                    .expect("curl is there");
                out.assert_success();
                assert_eq!(out.stdout_str(), HTTP_ROOT_BODY, "{kind:?}");
            }

            let log = log_with(&server, "session finished", 4).await;
            assert!(log.contains("version=HTTP"), "{log}");
            assert!(log.contains("version=SOCKS5"), "{log}");
            assert!(log.contains("version=SOCKS4"), "{log}");
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_keeps_one_client_connection_for_several_origins() {
    within(TEST_DEADLINE, "keep-alive across origins", async {
        let server = serve(&[]).await;
        let dir = TestDir::new("http-keepalive");
        std::fs::write(dir.path().join("a.txt"), "first\n").expect("write a.txt");
        let Some(origin) = PythonServer::start(KEEPALIVE_SERVER, dir.path()).await else {
            return;
        };
        let other = HttpServer::start().await;
        let a = format!("http://127.0.0.1:{}/a.txt", origin.port);
        let b = format!("http://localhost:{}/a.txt", origin.port);
        let c = other.url("/");
        // One curl run, four URLs: curl reuses its proxy connection when it may.
        let Some(curl_bin) = require_tool("curl") else {
            return;
        };
        let mut cmd = Command::new(curl_bin);
        clean_proxy_env(&mut cmd);
        cmd.args(["-sS", "--max-time", "10", "-x"])
            .arg(format!("http://{}", server.addr()))
            .args(["-w", "[%{num_connects}]"])
            .args([&a, &b, &c, &a]);
        let out = run_command(cmd, b"", CLIENT_DEADLINE).await;
        out.assert_success();
        let text = out.stdout_str();
        assert_eq!(
            text,
            format!("first\n[1]first\n[0]{HTTP_ROOT_BODY}[0]first\n[0]"),
            "one connection to the proxy for every URL"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reaches_an_https_target_through_connect() {
    within(TEST_DEADLINE, "https through CONNECT", async {
        let server = serve(&[]).await;
        let dir = TestDir::new("http-tls");
        let Some(()) = setup(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "key.pem",
                "-out",
                "cert.pem",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
            ],
            dir.path(),
        )
        .await
        else {
            return;
        };
        let body = pattern(300_000);
        std::fs::write(dir.path().join("blob"), &body).expect("write the blob");
        let Some(tls) = PythonServer::start(HTTPS_SERVER, dir.path()).await else {
            return;
        };
        for host in ["127.0.0.1", "localhost"] {
            let url = format!("https://{host}:{}/blob", tls.port);
            let out = curl_http(&server, &["-k"], &url)
                .await
                .expect("curl is there");
            out.assert_success();
            assert!(out.stdout == body, "{host}: the blob came back changed");
        }
        let log = log_with(&server, "version=HTTP", 2).await;
        assert!(
            log.contains(&format!("destination=localhost:{}", tls.port)),
            "{log}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_required_checked_and_never_forwarded() {
    within(TEST_DEADLINE, "proxy authentication", async {
        let server = serve(&["--user", "alice:pw1"]).await;
        let http = HttpServer::start().await;
        let url = http.url("/");
        let code = ["-o", "/dev/null", "-w", "%{http_code}"];

        // None, then wrong: 407 with the challenge.
        let Some(out) = curl_http(&server, &["-i"], &url).await else {
            return;
        };
        let head = out.stdout_str();
        assert!(head.starts_with("HTTP/1.1 407"), "{head}");
        assert!(
            head.contains("proxy-authenticate: Basic realm=\"socksmith\""),
            "{head}"
        );
        let wrong = [&code[..], &["-U", "alice:nope"]].concat();
        let out = curl_http(&server, &wrong, &url).await.expect("curl");
        assert_eq!(out.stdout_str(), "407");
        let out = curl_http(&server, &["-p", "-U", "alice:nope"], &url)
            .await
            .expect("curl");
        out.assert_failure();
        assert!(out.stderr_str().contains("407"), "{out}");

        // Right: forwarded and tunnelled, and the credentials stay with the proxy.
        let out = curl_http(&server, &["-U", "alice:pw1"], &url)
            .await
            .expect("curl");
        out.assert_success();
        assert_eq!(out.stdout_str(), HTTP_ROOT_BODY);
        let out = curl_http(&server, &["-p", "-U", "alice:pw1"], &url)
            .await
            .expect("curl");
        out.assert_success();
        assert_eq!(out.stdout_str(), HTTP_ROOT_BODY);
        let forwarded = http.requests().join("\n").to_ascii_lowercase();
        assert!(!forwarded.contains("proxy-authorization"), "{forwarded}");

        // A SOCKS5 client of the same user on the same port.
        let proxy = server
            .proxy(ProxyKind::Socks5h)
            .with_auth(Some(Credentials::new("alice", "pw1")));
        let out = curl(&proxy, &url, &[]).await.expect("curl");
        out.assert_success();

        let log = log_with(&server, "user=alice", 3).await;
        assert!(log.contains("authentication failed"), "{log}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_urllib_goes_through_the_proxy_with_and_without_credentials() {
    within(TEST_DEADLINE, "Python urllib", async {
        let http = HttpServer::start().await;
        let program = r#"
import sys, urllib.request
proxy, url = sys.argv[1], sys.argv[2]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
try:
    with opener.open(url, timeout=10) as response:
        sys.stdout.write("%d %s" % (response.status, response.read().decode()))
except urllib.error.HTTPError as e:
    sys.stdout.write("%d" % e.code)
"#;
        for (args, proxy_user, expected) in [
            (&[][..], "", format!("200 {HTTP_ROOT_BODY}")),
            (&["--user", "bob:pw2"][..], "", "407".to_owned()),
            (
                &["--user", "bob:pw2"][..],
                "bob:pw2@",
                format!("200 {HTTP_ROOT_BODY}"),
            ),
        ] {
            let server = serve(args).await;
            let Some(python) = require_tool("python3") else {
                return;
            };
            let mut cmd = Command::new(python);
            clean_proxy_env(&mut cmd);
            cmd.args(["-c", program])
                .arg(format!("http://{proxy_user}{}", server.addr()))
                .arg(http.url("/"));
            let out = run_command(cmd, b"", CLIENT_DEADLINE).await;
            out.assert_success();
            assert_eq!(out.stdout_str(), expected, "{args:?} {proxy_user}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_clones_over_smart_http_through_the_proxy() {
    within(TEST_DEADLINE, "git through http.proxy", async {
        let server = serve(&[]).await;
        let dir = TestDir::new("http-git");
        let root = dir.path();
        let git = |args: &'static [&'static str]| setup("git", args, root);
        let Some(()) = git(&["init", "-q", "--bare", "-b", "main", "repo.git"]).await else {
            return;
        };
        git(&["init", "-q", "-b", "main", "work"]).await;
        std::fs::write(root.join("work/file.txt"), "through the proxy\n").expect("write");
        let work = root.join("work");
        for args in [
            &["add", "file.txt"][..],
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-qm",
                "one",
            ],
            &["push", "-q", "../repo.git", "main"],
        ] {
            setup("git", args, &work).await;
        }
        // Python's CGI server runs scripts as `nobody` when started as root: the repository
        // must be readable, and git must trust a repository it does not own.
        let cgi = root.join("cgi-bin");
        std::fs::create_dir_all(&cgi).expect("mkdir cgi-bin");
        let script = format!(
            "#!/bin/sh\nexport GIT_PROJECT_ROOT='{}' GIT_HTTP_EXPORT_ALL=1 GIT_CONFIG_COUNT=1 \
             GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0='*'\nexec git http-backend\n",
            root.display()
        );
        std::fs::write(cgi.join("git"), script).expect("write the CGI script");
        setup("chmod", &["-R", "a+rX", "."], root).await;
        setup("chmod", &["a+x", "cgi-bin/git"], root).await;
        let Some(backend) = PythonServer::start(CGI_SERVER, root).await else {
            return;
        };

        let git_bin = require_tool("git").expect("git is there");
        let mut cmd = Command::new(git_bin);
        clean_proxy_env(&mut cmd);
        cmd.env("GIT_TERMINAL_PROMPT", "0")
            .current_dir(root)
            .args(["-c"])
            .arg(format!("http.proxy=http://{}", server.addr()))
            .args(["clone", "-q"])
            .arg(format!(
                "http://127.0.0.1:{}/cgi-bin/git/repo.git",
                backend.port
            ))
            .arg("clone");
        run_command(cmd, b"", CLIENT_DEADLINE)
            .await
            .assert_success();
        let cloned = std::fs::read_to_string(root.join("clone/file.txt")).expect("cloned file");
        assert_eq!(cloned, "through the proxy\n");
        let log = log_with(&server, "version=HTTP", 2).await;
        assert!(
            log.contains(&format!("destination=127.0.0.1:{}", backend.port)),
            "{log}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_denials_are_403_and_unreachable_targets_502() {
    within(TEST_DEADLINE, "403 and 502", async {
        let server = serve(&["--deny", "127.0.0.2/32"]).await;
        let denied = "http://127.0.0.2:9/";
        let Some(out) = curl_http(&server, &["-i"], denied).await else {
            return;
        };
        let text = out.stdout_str();
        assert!(text.starts_with("HTTP/1.1 403"), "{text}");
        assert!(text.contains("127.0.0.2/32"), "the reason is given: {text}");
        let out = curl_http(&server, &["-p"], denied).await.expect("curl");
        out.assert_failure();
        assert!(out.stderr_str().contains("403"), "{out}");

        // Nothing listens there: refused, 502.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("addr").port();
        drop(closed);
        let url = format!("http://127.0.0.1:{port}/");
        let out = curl_http(&server, &["-o", "/dev/null", "-w", "%{http_code}"], &url)
            .await
            .expect("curl");
        assert_eq!(out.stdout_str(), "502");
        let mut s = connect(server.addr()).await;
        send(
            &mut s,
            format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status(&recv_to_end(&mut s).await), 502);
        log_with(&server, "denied by policy", 2).await;

        // Each request on one keep-alive connection is judged on its own.
        let http = HttpServer::start().await;
        let mut s = connect(server.addr()).await;
        let batch = [http.url("/"), denied.to_owned(), http.url("/")]
            .iter()
            .map(|url| format!("GET {url} HTTP/1.1\r\nHost: x\r\n\r\n"))
            .collect::<String>();
        send(&mut s, batch.as_bytes()).await;
        s.shutdown().await.expect("half-close");
        let got = String::from_utf8_lossy(&recv_to_end(&mut s).await).into_owned();
        let statuses: Vec<&str> = got
            .lines()
            .filter_map(|l| l.strip_prefix("HTTP/1.1 "))
            .collect();
        assert_eq!(statuses, ["200 OK", "403 Forbidden", "200 OK"], "{got}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_fields_stay_on_the_client_hop() {
    within(TEST_DEADLINE, "hop-by-hop fields", async {
        let server = serve(&[]).await;
        let http = HttpServer::start().await;
        let mut s = connect(server.addr()).await;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: wrong.example\r\nConnection: X-Private, close\r\n\
             X-Private: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
             Proxy-Connection: keep-alive\r\nUpgrade: h2c\r\nX-End-To-End: kept\r\n\r\n",
            http.url("/")
        );
        send(&mut s, request.as_bytes()).await;
        let got = String::from_utf8_lossy(&recv_to_end(&mut s).await).into_owned();
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert!(
            got.to_ascii_lowercase().contains("via: 1.1 socksmith"),
            "{got}"
        );
        let forwarded = http.requests().join("\n").to_ascii_lowercase();
        for gone in [
            "x-private",
            "keep-alive",
            "te:",
            "proxy-connection",
            "upgrade",
            "wrong.example",
        ] {
            assert!(
                !forwarded.contains(gone),
                "{gone} was forwarded:\n{forwarded}"
            );
        }
        assert!(forwarded.contains("x-end-to-end: kept"), "{forwarded}");
        assert!(
            forwarded.contains(&format!("host: {}", http.addr())),
            "{forwarded}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_keeps_early_bytes_and_passes_half_close() {
    within(TEST_DEADLINE, "CONNECT with payload", async {
        let server = serve(&[]).await;
        let echo = EchoServer::start().await;
        // HTTP/1.0, no Host, payload in the same write as the head.
        let mut s = connect(server.addr()).await;
        let head = format!("CONNECT {} HTTP/1.0\r\n\r\n", echo.addr());
        send(&mut s, &[head.as_bytes(), b"early bytes"].concat()).await;
        s.shutdown().await.expect("half-close");
        let got = recv_to_end(&mut s).await;
        let text = String::from_utf8_lossy(&got);
        assert_eq!(
            text, "HTTP/1.1 200 Connection established\r\n\r\nearly bytes",
            "the echo came back and the target's close reached the client"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_and_a_connect_may_follow() {
    within(TEST_DEADLINE, "pipelining", async {
        let server = serve(&[]).await;
        let http = HttpServer::start().await;
        let echo = EchoServer::start().await;
        let mut s = connect(server.addr()).await;
        let mut batch = Vec::new();
        for n in [3, 1, 2] {
            batch.extend_from_slice(
                format!(
                    "GET {} HTTP/1.1\r\nHost: x\r\n\r\n",
                    http.url(&format!("/bytes/{n}"))
                )
                .as_bytes(),
            );
        }
        batch.extend_from_slice(
            format!(
                "CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\nafter",
                echo.addr()
            )
            .as_bytes(),
        );
        send(&mut s, &batch).await;
        s.shutdown().await.expect("half-close");
        let got = String::from_utf8_lossy(&recv_to_end(&mut s).await).into_owned();
        let lengths: Vec<&str> = got
            .lines()
            .filter_map(|l| l.strip_prefix("content-length: "))
            .collect();
        assert_eq!(lengths, ["3", "1", "2"], "{got}");
        let tunnel = got.rfind("HTTP/1.1 200 OK").map_or("", |i| &got[i..]);
        assert!(tunnel.ends_with("\r\n\r\nafter"), "{got}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_smuggling_and_oversized_requests_are_refused_and_serving_goes_on() {
    within(TEST_DEADLINE, "bad requests", async {
        let server = serve(&[]).await;
        let http = HttpServer::start().await;
        let target = http.url("/");
        let big = "x".repeat(70 * 1024);
        let cases: Vec<(String, u16)> = vec![
            (
                format!("POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
                400,
            ),
            (
                format!("POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
                400,
            ),
            (format!("GET {target} HTTP/1.1\r\nHost : x\r\n\r\n"), 400),
            (format!("GET {target} HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n"), 431),
            ("GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(), 400),
            ("\x16\x03\x01\x00\x10garbage\r\n\r\n".to_owned(), 400),
            ("CONNECT nowhere HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(), 400),
        ];
        let good = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
        for (request, expected) in &cases {
            // Alone, and behind a good request on the same connection.
            for prefix in ["", good.as_str()] {
                let mut s = connect(server.addr()).await;
                send(&mut s, format!("{prefix}{request}").as_bytes()).await;
                let got = recv_to_end(&mut s).await;
                let text = String::from_utf8_lossy(&got);
                let last = text.rfind("HTTP/1.1 ").map_or(&*text, |i| &text[i..]);
                assert_eq!(status(last.as_bytes()), *expected, "{request:.80?} after {prefix:?}:\n{text}");
                if !prefix.is_empty() {
                    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
                }
            }
        }
        // Nothing bad was forwarded: the origin saw the good requests only.
        let seen = http.requests();
        assert!(
            seen.iter().all(|r| r.starts_with("GET / HTTP/1.1")),
            "{seen:#?}"
        );
        // And the server still serves.
        let out = curl_http(&server, &[], &target).await.expect("curl");
        out.assert_success();
        assert_eq!(out.stdout_str(), HTTP_ROOT_BODY);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_path_with_a_query_reaches_the_origin_as_slash_query() {
    within(TEST_DEADLINE, "http://host?query", async {
        let server = serve(&[]).await;
        let http = HttpServer::start().await;
        let mut s = connect(server.addr()).await;
        let request = format!(
            "GET http://{}?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            http.addr()
        );
        send(&mut s, request.as_bytes()).await;
        let got = recv_to_end(&mut s).await;
        // The origin serves only `/`: its 404 for `/?x=1` came back.
        assert_eq!(status(&got), 404, "{}", String::from_utf8_lossy(&got));
        let seen = http.requests();
        assert!(seen[0].starts_with("GET /?x=1 HTTP/1.1"), "{seen:#?}");
    })
    .await;
}

/// An origin that takes one connection, reads the request, writes `answer` (possibly
/// nothing) and then neither sends nor closes: its address and task (abort it when done).
async fn stalling_origin(
    answer: &'static [u8],
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let origin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = origin.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let (mut conn, _) = origin.accept().await.expect("accept");
        let mut head = [0u8; 4096];
        let _ = conn.read(&mut head).await;
        conn.write_all(answer).await.expect("write");
        tokio::time::sleep(TEST_DEADLINE).await;
        drop(conn);
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_that_stops_moving_is_closed_at_the_idle_timeout() {
    within(TEST_DEADLINE, "stalled response body", async {
        let server = serve(&["--idle-timeout", "1s"]).await;
        // An origin that promises 1000 bytes, sends 7 and then neither sends nor closes.
        let (origin_addr, stalled) =
            stalling_origin(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n1234567").await;
        let mut s = connect(server.addr()).await;
        let request = format!("GET http://{origin_addr}/ HTTP/1.1\r\nHost: x\r\n\r\n");
        send(&mut s, request.as_bytes()).await;
        // Ends (within recv_to_end's bound) instead of waiting for the origin forever.
        let got = recv_to_end(&mut s).await;
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("1234567"), "the 7 bytes, no more: {text}");
        stalled.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_never_answers_gets_the_client_a_504_not_a_silent_close() {
    within(TEST_DEADLINE, "silent origin", async {
        let server = serve(&["--idle-timeout", "1s"]).await;
        // An origin that reads the request and never answers.
        let (origin_addr, silent) = stalling_origin(b"").await;
        let mut s = connect(server.addr()).await;
        let request =
            format!("GET http://{origin_addr}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        send(&mut s, request.as_bytes()).await;
        let got = recv_to_end(&mut s).await;
        assert_eq!(status(&got), 504, "{}", String::from_utf8_lossy(&got));
        log_with(&server, "session finished", 1).await;
        silent.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_lines_before_the_first_request_are_ignored() {
    within(TEST_DEADLINE, "leading empty lines", async {
        let server = serve(&[]).await;
        let http = HttpServer::start().await;
        let mut s = connect(server.addr()).await;
        // Sent a line at a time (each one read on its own), then the request.
        for _ in 0..200 {
            send(&mut s, b"\r\n").await;
        }
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            http.url("/")
        );
        send(&mut s, request.as_bytes()).await;
        let got = recv_to_end(&mut s).await;
        assert_eq!(status(&got), 200, "{}", String::from_utf8_lossy(&got));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trailer_that_never_ends_closes_the_connection() {
    within(TEST_DEADLINE, "endless chunked trailer", async {
        let server = serve(&[]).await;
        let http = HttpServer::start().await;
        let mut s = connect(server.addr()).await;
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
            http.url("/")
        );
        send(&mut s, head.as_bytes()).await;
        // A trailer line with no end, far past the 64 KiB a head may hold: refused, and the
        // connection ends (it used to be read and kept for as long as the client sent).
        let line = vec![b'A'; 16 * 1024];
        for _ in 0..16 {
            if tokio::io::AsyncWriteExt::write_all(&mut s, &line)
                .await
                .is_err()
            {
                break; // already closed
            }
        }
        recv_to_end(&mut s).await;
        let out = curl_http(&server, &[], &http.url("/")).await.expect("curl");
        out.assert_success();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_http_closes_http_clients_without_a_byte_and_serves_socks() {
    within(TEST_DEADLINE, "--no-http", async {
        let server = serve(&["--no-http"]).await;
        let http = HttpServer::start().await;
        for _ in 0..3 {
            let mut s = connect(server.addr()).await;
            send(
                &mut s,
                format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", http.url("/")).as_bytes(),
            )
            .await;
            assert!(recv_to_end(&mut s).await.is_empty());
        }
        let out = curl(&server.proxy(ProxyKind::Socks5), &http.url("/"), &[])
            .await
            .expect("curl");
        out.assert_success();
        let log = log_with(&server, "session finished", 1).await;
        assert_eq!(
            log.matches("HTTP proxying is turned off").count(),
            1,
            "one warning for several clients:\n{log}"
        );
        assert_eq!(
            http.accepted(),
            1,
            "only the SOCKS request reached the target"
        );
        let mut s = connect(server.addr()).await;
        let mut byte = [0u8; 1];
        send(&mut s, b"G").await;
        assert_eq!(
            tokio::time::timeout(STEP, s.read(&mut byte))
                .await
                .ok()
                .and_then(Result::ok),
            Some(0)
        );
    })
    .await;
}
