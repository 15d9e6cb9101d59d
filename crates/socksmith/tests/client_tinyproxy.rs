//! The client library through tinyproxy (1.11), a real HTTP proxy started on loopback by the
//! testkit, as an `http://` hop: alone (IPv4, IPv6 and name targets, a target that speaks first),
//! with Basic auth (right, percent-encoded, wrong, missing), its refusals (403, 500) as errors
//! naming the hop and the status, in mixed chains with microsocks and Dante (HTTP first and
//! SOCKS first, BIND through an HTTP hop to Dante), and the commands an HTTP last hop cannot
//! carry refused before anything is sent, with the reply a server passes on (0x07).
//!
//! tinyproxy only ever reaches loopback targets (its filter denies everything else).

mod client_support;

use client_support::{bind_round_trip, client, connect_echo, dead_addr, hop_kind, TIMEOUTS};
use socksmith::client::{Client, ClientError, HopErrorKind, HttpError, Step};
use socksmith_proto::{Command, ReplyCode};
use socksmith_testkit::dante::{Dante, DanteOptions};
use socksmith_testkit::microsocks::{Microsocks, MicrosocksOptions};
use socksmith_testkit::tinyproxy::{Tinyproxy, TinyproxyOptions, TINYPROXY_PASSWORD};
use socksmith_testkit::{pattern, within, EchoServer, ProxyKind, SourceServer, TEST_DEADLINE};
use tokio::io::AsyncReadExt;

/// A client for a chain given as URLs.
fn chain(urls: &[String]) -> Client {
    Client::builder()
        .timeouts(TIMEOUTS)
        .proxies(
            urls.iter()
                .map(|u| u.parse().unwrap_or_else(|e| panic!("testkit URL {u}: {e}"))),
        )
        .build()
        .expect("at least one proxy")
}

/// The HTTP error of a failed hop, with the error's text on mismatch.
fn http_error(err: &ClientError) -> &HttpError {
    match hop_kind(err).1 {
        HopErrorKind::Http(e) => e,
        other => panic!("not an HTTP error: {other:?} ({err})"),
    }
}

#[tokio::test]
async fn connects_to_ipv4_ipv6_and_name_targets_through_tinyproxy() {
    within(TEST_DEADLINE, "tinyproxy connect", async {
        let Some(tp) = Tinyproxy::start(TinyproxyOptions::default()).await else {
            return;
        };
        let echo = EchoServer::start().await;
        let c = chain(&[tp.url()]);
        connect_echo(&c, echo.addr()).await;
        connect_echo(&c, ("localhost", echo.addr().port())).await;
        if let Some(echo6) = EchoServer::start_v6().await {
            // Sent as `CONNECT [::1]:PORT`.
            connect_echo(&c, echo6.addr()).await;
        }
        let log = tp.log();
        assert!(
            log.contains(&format!("CONNECT localhost:{}", echo.addr().port())),
            "tinyproxy got the name, not an address:\n{log}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_target_that_speaks_first_loses_no_byte() {
    within(TEST_DEADLINE, "tinyproxy source", async {
        let Some(tp) = Tinyproxy::start(TinyproxyOptions::default()).await else {
            return;
        };
        let c = chain(&[tp.url()]);
        // The target writes at once, so its first bytes may share a segment with the 200.
        for len in [1, 100, 256 * 1024] {
            let source = SourceServer::start(len).await;
            let mut stream = c
                .connect(source.addr())
                .await
                .expect("tunnel to the source");
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.expect("read the source");
            assert!(got == pattern(len), "{len} bytes: got {} back", got.len());
        }
    })
    .await;
}

#[tokio::test]
async fn basic_auth_right_encoded_wrong_and_missing() {
    within(TEST_DEADLINE, "tinyproxy auth", async {
        let Some(tp) = Tinyproxy::start(TinyproxyOptions::with_auth()).await else {
            return;
        };
        let echo = EchoServer::start().await;
        connect_echo(&chain(&[tp.url()]), echo.addr()).await;
        // Every byte of user and password percent-encoded: decoded before Base64.
        connect_echo(&chain(&[tp.url_encoded()]), echo.addr()).await;

        let err = chain(&[tp.url_with_wrong_password()])
            .connect(echo.addr())
            .await
            .expect_err("wrong password");
        assert!(
            matches!(
                http_error(&err),
                // tinyproxy answers wrong credentials with 401, missing ones with 407.
                HttpError::AuthenticationRequired {
                    status: 401 | 407,
                    offered_credentials: true,
                    ..
                }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "hop 1 (http://tp-user:***@{}): CONNECT ",
                tp.addr()
            )),
            "{text}"
        );
        assert!(text.contains("wrong username or password"), "{text}");
        assert!(!text.contains("wrong-password"), "{text}");
        assert!(!text.contains(TINYPROXY_PASSWORD), "{text}");

        let err = chain(&[tp.url_without_auth()])
            .connect(echo.addr())
            .await
            .expect_err("no credentials");
        assert!(
            matches!(
                http_error(&err),
                HttpError::AuthenticationRequired {
                    offered_credentials: false,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("HTTP 407 Proxy Authentication Required: the proxy requires a username"),
            "{err}"
        );
    })
    .await;
}

#[tokio::test]
async fn refusals_name_the_hop_and_the_status() {
    within(TEST_DEADLINE, "tinyproxy refusals", async {
        let Some(tp) = Tinyproxy::start(TinyproxyOptions::default()).await else {
            return;
        };
        let c = chain(&[tp.url()]);
        // Nothing listens there: tinyproxy answers 500.
        let dead = dead_addr();
        let err = c.connect(dead).await.expect_err("refused target");
        assert!(
            matches!(http_error(&err), HttpError::Refused { status: 500, .. }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "hop 1 (http://{}): CONNECT {dead}: refused with HTTP 500 Unable to connect",
                tp.addr()
            )
        );
        assert_eq!(c.downstream_reply(&err), ReplyCode::GeneralFailure);
        // A name its filter does not admit: 403, refused before any lookup.
        let err = c
            .connect("not-loopback.invalid:80")
            .await
            .expect_err("filtered");
        assert!(
            matches!(http_error(&err), HttpError::Refused { status: 403, .. }),
            "{err}"
        );
        assert!(err.to_string().ends_with("HTTP 403 Filtered"), "{err}");
        assert_eq!(err.reply_code(), Some(ReplyCode::NotAllowed));
        assert_eq!(c.downstream_reply(&err), ReplyCode::NotAllowed);
    })
    .await;
}

#[tokio::test]
async fn mixed_chains_with_socks_hops_in_either_order() {
    within(TEST_DEADLINE, "tinyproxy chains", async {
        let (Some(tp), Some(ms)) = (
            Tinyproxy::start(TinyproxyOptions::with_auth()).await,
            Microsocks::start(MicrosocksOptions::default()).await,
        ) else {
            return;
        };
        let echo = EchoServer::start().await;
        let by_name = ("localhost", echo.addr().port());
        // HTTP first (the corporate proxy), then SOCKS: `-x http://corp -x socks5h://far`.
        let http_then_socks = chain(&[tp.url(), ms.proxy(ProxyKind::Socks5h).url()]);
        connect_echo(&http_then_socks, echo.addr()).await;
        connect_echo(&http_then_socks, by_name).await;
        let log = tp.log();
        assert!(
            log.contains(&format!("CONNECT {}", ms.addr())),
            "tinyproxy carried the hop to microsocks:\n{log}"
        );
        // SOCKS first, then HTTP.
        let socks_then_http = chain(&[ms.proxy(ProxyKind::Socks5).url(), tp.url()]);
        connect_echo(&socks_then_http, echo.addr()).await;
        connect_echo(&socks_then_http, by_name).await;
        // A refusal at the second hop names that hop.
        let err = chain(&[ms.proxy(ProxyKind::Socks5).url(), tp.url_without_auth()])
            .connect(echo.addr())
            .await
            .expect_err("407 at hop 2");
        assert_eq!(err.hop(), Some(2), "{err}");
        assert!(err.to_string().contains("HTTP 407"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn bind_works_through_an_http_hop_in_front_of_dante() {
    within(TEST_DEADLINE, "tinyproxy + dante bind", async {
        let (Some(tp), Some(dante)) = (
            Tinyproxy::start(TinyproxyOptions::default()).await,
            Dante::start(DanteOptions::default()).await,
        ) else {
            return;
        };
        // Only the control connection passes tinyproxy; Dante listens for the peer.
        let c = client(&[&dante.proxy(ProxyKind::Socks5)]);
        let through_http = Client::builder()
            .timeouts(TIMEOUTS)
            .proxy(tp.url().parse().expect("tinyproxy URL"))
            .proxies(c.hops().iter().cloned())
            .build()
            .expect("two hops");
        bind_round_trip(&through_http).await;
    })
    .await;
}

#[tokio::test]
async fn bind_udp_and_resolve_through_an_http_last_hop_are_refused_unsent() {
    within(TEST_DEADLINE, "tinyproxy unsupported", async {
        let Some(tp) = Tinyproxy::start(TinyproxyOptions::default()).await else {
            return;
        };
        let c = chain(&[tp.url()]);
        // tinyproxy logs `Request (file descriptor N): CONNECT ...` for each request it reads
        // (its log also gets lines about the testkit's readiness probe, at any time).
        let requests = || tp.log().matches("Request (file descriptor").count();
        let before = requests();
        let unsupported = |err: ClientError, command: Command| {
            assert!(
                matches!(
                    &err,
                    ClientError::Unsupported { command: c, protocol: "http", .. } if *c == command
                ),
                "{err}"
            );
            assert_eq!(c.downstream_reply(&err), ReplyCode::CommandNotSupported);
            assert_eq!(
                err.to_string(),
                format!("{command} is not possible over http (http://{})", tp.addr())
            );
        };
        unsupported(
            c.bind("127.0.0.1:0").await.expect_err("BIND"),
            Command::Bind,
        );
        unsupported(
            c.udp_associate().await.expect_err("UDP ASSOCIATE"),
            Command::UdpAssociate,
        );
        unsupported(
            c.resolve("localhost").await.expect_err("RESOLVE"),
            Command::Resolve,
        );
        // Refused before connecting: tinyproxy got no request.
        assert_eq!(requests(), before, "{}", tp.log());
        // A SOCKS step through tinyproxy is reported with the step, too.
        let err = c.connect(dead_addr()).await.expect_err("refused");
        // ... while a CONNECT is a request (so the count above can see one).
        assert_eq!(requests(), before + 1, "{}", tp.log());
        assert!(
            matches!(
                err.step(),
                Some(Step::Request {
                    command: Command::Connect,
                    ..
                })
            ),
            "{err}"
        );
    })
    .await;
}
