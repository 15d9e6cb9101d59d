//! `socksmith check` against real servers: each report must match what the server is known to
//! support (as the testkit's own tests establish for Dante, microsocks and ssh -D), and the
//! exit status must say whether CONNECT works.

mod serve_support;

use serde_json::Value;
use serve_support::bin;
use socksmith_testkit::dante::{Dante, DanteOptions};
use socksmith_testkit::microsocks::{dante_and_microsocks, Microsocks, MicrosocksOptions};
use socksmith_testkit::socksmith::{run, SocksmithServer};
use socksmith_testkit::ssh::SshDynamic;
use socksmith_testkit::{within, CmdOutput, EchoServer, Proxy, ProxyKind, TEST_DEADLINE};

/// What a report must say: each capability's support, and the methods accepted.
struct Expected {
    yes: &'static [&'static str],
    no: &'static [&'static str],
    methods: &'static [&'static str],
}

const ALL: [&str; 8] = [
    "socks5",
    "socks4",
    "socks4a",
    "remote_dns",
    "ipv6_target",
    "bind",
    "udp_associate",
    "resolve",
];

async fn check_json(urls: &[String], extra: &[&str]) -> (CmdOutput, Value) {
    let mut args = vec!["check", "--json", "--timeout", "5"];
    for u in urls {
        args.extend(["--proxy", u.as_str()]);
    }
    args.extend_from_slice(extra);
    let out = run(bin(), &args, b"").await;
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{}: not JSON ({e}):\n{}\n{}",
            out.command,
            out.stdout_str(),
            out.stderr_str()
        )
    });
    (out, json)
}

fn assert_report(json: &Value, expected: &Expected, ipv6: bool) {
    let caps = &json["capabilities"];
    for name in ALL {
        let want = if expected.yes.contains(&name) {
            "yes"
        } else if expected.no.contains(&name) {
            "no"
        } else {
            continue;
        };
        // Without ::1 on this host, the IPv6 probe cannot run.
        let want = if name == "ipv6_target" && !ipv6 && want == "yes" {
            "untested"
        } else {
            want
        };
        assert_eq!(
            caps[name]["support"], want,
            "{name}: {}\nwhole report: {json:#}",
            caps[name]["detail"]
        );
        if want == "yes" {
            assert!(
                caps[name]["latency_ms"]
                    .as_f64()
                    .is_some_and(|ms| ms >= 0.0),
                "{name} has a latency: {json:#}"
            );
        }
    }
    let accepted: Vec<&str> = json["accepted_methods"]
        .as_array()
        .expect("accepted_methods")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(accepted, expected.methods, "{json:#}");
}

fn has_ipv6() -> bool {
    socksmith_testkit::process::can_bind("::1".parse().expect("ip"))
}

#[tokio::test]
async fn dante_reports_socks4_socks5_bind_and_udp_but_not_socks4a() {
    within(TEST_DEADLINE, "check dante", async {
        let Some(dante) = Dante::start(DanteOptions::default()).await else {
            return;
        };
        let (out, json) = check_json(&[dante.proxy(ProxyKind::Socks5).url()], &[]).await;
        out.assert_success();
        assert_report(
            &json,
            &Expected {
                yes: &[
                    "socks5",
                    "socks4",
                    "remote_dns",
                    "ipv6_target",
                    "bind",
                    "udp_associate",
                ],
                no: &["socks4a", "resolve"],
                methods: &["no authentication"],
            },
            has_ipv6(),
        );
        assert_eq!(json["connect_works"], true);
    })
    .await;
}

#[tokio::test]
async fn dante_with_username_auth_reports_the_method_and_no_socks4() {
    within(TEST_DEADLINE, "check dante username", async {
        let Some(dante) = Dante::start(DanteOptions::with_username()).await else {
            return;
        };
        let (out, json) = check_json(&[dante.proxy(ProxyKind::Socks5).url()], &[]).await;
        out.assert_success();
        assert_report(
            &json,
            &Expected {
                yes: &[
                    "socks5",
                    "remote_dns",
                    "ipv6_target",
                    "bind",
                    "udp_associate",
                ],
                no: &["socks4", "socks4a", "resolve"],
                methods: &["username/password"],
            },
            has_ipv6(),
        );
    })
    .await;
}

#[tokio::test]
async fn microsocks_reports_socks5_connect_only_with_and_without_auth() {
    within(TEST_DEADLINE, "check microsocks", async {
        let (Some(open), Some(auth)) = (
            Microsocks::start(MicrosocksOptions::default()).await,
            Microsocks::start(MicrosocksOptions::with_auth()).await,
        ) else {
            return;
        };
        for (ms, method) in [
            (&open, &["no authentication"]),
            (&auth, &["username/password"]),
        ] {
            let (out, json) = check_json(&[ms.proxy(ProxyKind::Socks5).url()], &[]).await;
            out.assert_success();
            assert_report(
                &json,
                &Expected {
                    yes: &["socks5", "remote_dns", "ipv6_target"],
                    no: &["socks4", "socks4a", "bind", "udp_associate", "resolve"],
                    methods: method,
                },
                has_ipv6(),
            );
        }
        // Without the password, CONNECT does not work: exit status 1, and the table says why.
        let no_creds = Proxy::new(ProxyKind::Socks5, auth.addr()).url();
        let out = run(bin(), &["check", "--proxy", &no_creds], b"").await;
        out.assert_failure();
        let table = out.stdout_str();
        assert!(table.contains("CONNECT does not work"), "{table}");
        assert!(
            table.contains("accepted: username/password"),
            "the table lists the accepted method: {table}"
        );
    })
    .await;
}

#[tokio::test]
async fn ssh_dynamic_reports_every_version_and_no_bind_or_udp() {
    within(TEST_DEADLINE, "check ssh -D", async {
        let Some(ssh) = SshDynamic::start().await else {
            return;
        };
        let (out, json) = check_json(&[ssh.proxy(ProxyKind::Socks5).url()], &[]).await;
        out.assert_success();
        assert_report(
            &json,
            &Expected {
                yes: &["socks5", "socks4", "socks4a", "remote_dns", "ipv6_target"],
                no: &["bind", "udp_associate", "resolve"],
                methods: &["no authentication"],
            },
            has_ipv6(),
        );
    })
    .await;
}

#[tokio::test]
async fn a_chain_probes_its_last_hop_and_a_given_target_is_used_as_is() {
    within(TEST_DEADLINE, "check chain and --target", async {
        let Some((dante, ms)) =
            dante_and_microsocks(DanteOptions::default(), MicrosocksOptions::default()).await
        else {
            return;
        };
        // microsocks reached through Dante: microsocks' capabilities.
        let (out, json) = check_json(
            &[
                dante.proxy(ProxyKind::Socks5).url(),
                ms.proxy(ProxyKind::Socks5).url(),
            ],
            &[],
        )
        .await;
        out.assert_success();
        assert_report(
            &json,
            &Expected {
                yes: &["socks5", "remote_dns"],
                no: &["socks4", "bind", "udp_associate"],
                methods: &["no authentication"],
            },
            has_ipv6(),
        );
        // With --target, only the CONNECT probes that fit its kind run, and only the
        // proxy's answers are checked.
        let echo = EchoServer::start().await;
        let target = echo.addr().to_string();
        let (out, json) = check_json(
            &[dante.proxy(ProxyKind::Socks5).url()],
            &["--target", &target],
        )
        .await;
        out.assert_success();
        let caps = &json["capabilities"];
        assert_eq!(caps["socks5"]["support"], "yes", "{json:#}");
        assert_eq!(caps["socks4"]["support"], "yes", "{json:#}");
        assert_eq!(caps["remote_dns"]["support"], "untested", "{json:#}");
        assert_eq!(caps["ipv6_target"]["support"], "untested", "{json:#}");
        assert_eq!(caps["udp_associate"]["support"], "yes", "{json:#}");
    })
    .await;
}

#[tokio::test]
async fn a_remote_proxy_needs_a_target_and_an_unreachable_one_fails() {
    within(TEST_DEADLINE, "check refusals", async {
        let out = run(bin(), &["check", "--proxy", "socks5://192.0.2.1:1080"], b"").await;
        out.assert_failure();
        assert!(
            out.stderr_str()
                .contains("is not on loopback: give --target"),
            "{}",
            out.stderr_str()
        );
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let out = run(
            bin(),
            &["check", "--proxy", &format!("socks5://{dead}")],
            b"",
        )
        .await;
        out.assert_failure();
        assert!(
            out.stderr_str().contains("cannot reach the proxy"),
            "{}",
            out.stderr_str()
        );
    })
    .await;
}

#[tokio::test]
async fn socksmith_serve_reports_every_capability() {
    within(TEST_DEADLINE, "check socksmith serve", async {
        let server = SocksmithServer::start(bin(), &[]).await;
        let (out, json) = check_json(&[server.proxy(ProxyKind::Socks5).url()], &[]).await;
        out.assert_success();
        assert_report(
            &json,
            &Expected {
                yes: &ALL,
                no: &[],
                methods: &["no authentication"],
            },
            has_ipv6(),
        );
        let with_users = SocksmithServer::start(bin(), &["--user", "u:p"]).await;
        let url = format!("socks5://u:p@{}", with_users.addr());
        let (out, json) = check_json(&[url], &[]).await;
        out.assert_success();
        assert_report(
            &json,
            &Expected {
                yes: &["socks5", "remote_dns", "bind", "udp_associate", "resolve"],
                no: &["socks4", "socks4a"],
                methods: &["username/password"],
            },
            has_ipv6(),
        );
    })
    .await;
}

#[tokio::test]
async fn the_exit_status_judges_the_urls_own_version() {
    within(TEST_DEADLINE, "check: the URL's version", async {
        // SOCKS5 needs a password; SOCKS4 (allowed here) carries no password at all.
        let server =
            SocksmithServer::start(bin(), &["--user", "alice:s3cret", "--allow-socks4"]).await;
        let addr = server.addr();
        // socks5:// without the password: SOCKS4 works, but not what the URL asks for.
        let out = run(
            bin(),
            &["check", "--proxy", &format!("socks5://{addr}")],
            b"",
        )
        .await;
        assert_eq!(out.status.code(), Some(4), "credentials wanted: {out}");
        let table = out.stdout_str();
        assert!(
            table.contains("CONNECT as socks5:// does not work (another version does"),
            "{table}"
        );
        // With the password, and as socks4:// (also with a user id, which the SOCKS5 probes
        // cannot use as a password: they go without it): all work.
        for url in [
            format!("socks5://alice:s3cret@{addr}"),
            format!("socks4://{addr}"),
            format!("socks4a://alice@{addr}"),
        ] {
            let out = run(bin(), &["check", "--json", "--proxy", &url], b"").await;
            out.assert_success();
            let json: Value = serde_json::from_str(&out.stdout_str()).expect("JSON");
            assert_eq!(json["url_connect_works"], true, "{url}: {json}");
        }
    })
    .await;
}
