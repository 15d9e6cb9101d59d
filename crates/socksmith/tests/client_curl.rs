//! The client's bytes on the wire against curl's: for the same proxy URL, the SOCKS4/4a request
//! the library sends is byte for byte the one curl sends (the URL's user as the user id, an
//! empty id without one, never the password). A capturing listener on loopback records each
//! request and rejects it, so no target is ever contacted.
//!
//! Also: a user id SOCKS4 cannot carry is refused at the request step, before anything is sent.

use std::net::SocketAddr;

use socksmith::client::{Client, HopErrorKind, Step};
use socksmith_proto::{InvalidInput, ProtocolError};
use socksmith_testkit::process::{run_command, CLIENT_DEADLINE};
use socksmith_testkit::{require_tool, within, TEST_DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Accepts one connection on 127.0.0.1:0, reads one SOCKS4/4a request, answers "rejected"
/// (0x5B) and returns the request's bytes.
async fn capture_one() -> (SocketAddr, JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.expect("accept");
        let mut request = Vec::new();
        while !is_whole_v4_request(&request) {
            let mut chunk = [0u8; 512];
            let n = conn.read(&mut chunk).await.expect("read the request");
            assert!(n > 0, "the client closed mid-request after {request:?}");
            request.extend_from_slice(&chunk[..n]);
        }
        conn.write_all(&[0, 0x5B, 0, 0, 0, 0, 0, 0])
            .await
            .expect("reply");
        request
    });
    (addr, task)
}

/// VN CD DSTPORT DSTIP USERID NUL, and for SOCKS4a (DSTIP 0.0.0.x, x != 0) a name and NUL.
fn is_whole_v4_request(bytes: &[u8]) -> bool {
    let Some(rest) = bytes.get(8..) else {
        return false;
    };
    let nuls_needed = if bytes[4..7] == [0, 0, 0] && bytes[7] != 0 {
        2
    } else {
        1
    };
    rest.iter().filter(|&&b| b == 0).count() >= nuls_needed
}

/// The request curl sends for `-x URL_PREFIX{proxy}` to `http://{target}/`.
async fn curl_request(curl: &std::path::Path, url_prefix: &str, target: &str) -> Vec<u8> {
    let (proxy, captured) = capture_one().await;
    let mut cmd = tokio::process::Command::new(curl);
    cmd.args(["-sS", "--max-time", "10", "-x"])
        .arg(format!("{url_prefix}{proxy}"))
        .arg(format!("http://{target}/"));
    let out = run_command(cmd, b"", CLIENT_DEADLINE).await;
    assert!(!out.status.success(), "the proxy rejected curl: {out:?}");
    captured.await.expect("capture")
}

/// The request the library sends for `URL_PREFIX{proxy}` to `target`.
async fn our_request(url_prefix: &str, target: &str) -> Vec<u8> {
    let (proxy, captured) = capture_one().await;
    let url = format!("{url_prefix}{proxy}");
    let client = Client::from_url(&url).expect("URL");
    let err = client.connect(target).await.expect_err("rejected");
    assert!(err.to_string().ends_with("(reply 0x5b)"), "{err}");
    captured.await.expect("capture")
}

#[tokio::test]
async fn socks4_requests_match_curls_for_every_form_of_user() {
    within(TEST_DEADLINE, "socks4 requests like curl", async {
        let Some(curl) = require_tool("curl") else {
            return;
        };
        // Port 9 (discard) on loopback: never contacted, the proxy rejects first.
        for (prefix, target, user_id) in [
            ("socks4://", "127.0.0.1:9", &b""[..]),
            ("socks4://@", "127.0.0.1:9", b""),
            ("socks4://alice@", "127.0.0.1:9", b"alice"),
            ("socks4://alice:secret@", "127.0.0.1:9", b"alice"),
            ("socks4://alice:@", "127.0.0.1:9", b"alice"),
            ("socks4://%61l%3Aice:pw@", "127.0.0.1:9", b"al:ice"),
            ("socks4a://bob:pw@", "localhost:9", b"bob"),
            ("socks4a://@", "localhost:9", b""),
        ] {
            let theirs = curl_request(&curl, prefix, target).await;
            let ours = our_request(prefix, target).await;
            assert_eq!(ours, theirs, "{prefix} to {target}: ours vs curl's");
            assert_eq!(&ours[8..8 + user_id.len() + 1], [user_id, b"\0"].concat());
            assert!(
                !ours.windows(6).any(|w| w == b"secret"),
                "the password is never sent"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_user_id_socks4_cannot_carry_fails_at_the_request_step() {
    within(TEST_DEADLINE, "socks4 user id too long", async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let proxy = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut got = Vec::new();
            conn.read_to_end(&mut got).await.expect("read");
            got
        });
        let url = format!("socks4://{}@{proxy}", "u".repeat(256));
        let err = Client::from_url(&url)
            .expect("URL")
            .connect("127.0.0.1:9")
            .await
            .expect_err("too long");
        assert!(matches!(err.step(), Some(Step::Request { .. })), "{err}");
        assert!(
            matches!(
                err.kind(),
                Some(HopErrorKind::Protocol(ProtocolError::InvalidInput(
                    InvalidInput::V4UserIdTooLong(256)
                )))
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("SOCKS4 user id of 256 bytes, longer than 255"),
            "{err}"
        );
        drop(err);
        assert_eq!(server.await.expect("server"), b"", "nothing was sent");
    })
    .await;
}
