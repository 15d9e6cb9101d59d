//! `http://` hops: one HTTP/1.1 `CONNECT` exchange over a [`ProxyStream`], after which the
//! stream is a tunnel through the proxy exactly as after a SOCKS handshake.
//!
//! ```text
//! CONNECT host:port HTTP/1.1\r\n         the target's name as given (the proxy resolves it),
//! Host: host:port\r\n                    an IPv6 address in brackets: [::1]:443
//! Proxy-Authorization: Basic b64\r\n     only with user information in the URL
//! \r\n
//!                                     <- HTTP/1.1 200 Connection established\r\n ... \r\n
//! ```
//!
//! The proxy's response head is parsed with `httparse`, bounded in size
//! ([`MAX_RESPONSE_HEAD`]) and in time (the hop's handshake deadline, for the whole answer, so a
//! proxy that trickles bytes cannot stretch it). Bytes after the head belong to the tunnel and
//! stay in the stream's buffer, as they do after a SOCKS reply. A `407` (or `401`, which
//! tinyproxy sends for wrong credentials) and every other refusal become an [`HttpError`]; the
//! caller adds the hop and the step. Interim `1xx` answers are skipped (within the same
//! deadline). This module owns the HTTP exchange only: which hop gets which target is the
//! chain's business.

use std::net::SocketAddr;
use std::time::Duration;

use socksmith_proto::TargetAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::error::{HopErrorKind, HttpError};
use super::stream::ProxyStream;

/// The largest response head accepted (status line and headers). A CONNECT answer is a line
/// or two; an error page's head rarely passes a few hundred bytes.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// The most header fields a response head may have.
const MAX_HEADERS: usize = 64;

/// How much more to read at a time while the head is incomplete.
const READ_CHUNK: usize = 1024;

/// The longest reason phrase quoted in an error (a hostile proxy's text goes into logs).
const MAX_REASON: usize = 120;

/// The request for `target`: `CONNECT authority HTTP/1.1`, `Host`, and `Proxy-Authorization`
/// when `authorization` is given.
pub(crate) fn connect_request(
    target: &TargetAddr,
    authorization: Option<&str>,
) -> Result<Vec<u8>, HttpError> {
    let authority = authority(target)?;
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(value) = authorization {
        request.push_str("Proxy-Authorization: ");
        request.push_str(value);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    Ok(request.into_bytes())
}

/// `host:port` as RFC 9110's CONNECT wants it (authority-form): an IPv6 address in brackets
/// and without a zone (`%eth0` has no place in an authority), a name only if every byte is
/// one a host name has, so nothing the caller passes can break the request line.
fn authority(target: &TargetAddr) -> Result<String, HttpError> {
    match target {
        TargetAddr::Ip(SocketAddr::V4(addr)) => Ok(addr.to_string()),
        TargetAddr::Ip(SocketAddr::V6(addr)) => Ok(format!("[{}]:{}", addr.ip(), addr.port())),
        TargetAddr::Domain(name, port) => {
            let bytes = name.as_bytes();
            let valid = bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
            if !valid {
                return Err(HttpError::InvalidTargetName(name.to_string()));
            }
            Ok(format!("{}:{port}", String::from_utf8_lossy(bytes)))
        }
    }
}

/// One response head, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// The reason phrase, control characters escaped and cut to [`MAX_REASON`].
    pub reason: String,
    /// The head's length in bytes, up to and including the empty line.
    pub len: usize,
}

/// Parses the response head at the start of `buf`: `Ok(None)` while it is incomplete (and
/// within [`MAX_RESPONSE_HEAD`]); what follows the head is not looked at.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<ResponseHead>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > MAX_RESPONSE_HEAD => {
            Err(HttpError::HeadTooLarge {
                limit: MAX_RESPONSE_HEAD,
            })
        }
        Ok(httparse::Status::Complete(len)) => {
            let status = response
                .code
                .ok_or_else(|| HttpError::Malformed("no status code".into()))?;
            Ok(Some(ResponseHead {
                status,
                reason: printable(response.reason.unwrap_or_default()),
                len,
            }))
        }
        Ok(httparse::Status::Partial) if buf.len() >= MAX_RESPONSE_HEAD => {
            Err(HttpError::HeadTooLarge {
                limit: MAX_RESPONSE_HEAD,
            })
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(HttpError::Malformed(e.to_string())),
    }
}

/// `text` with control characters escaped, at most [`MAX_REASON`] characters.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_REASON));
    for c in text.chars().take(MAX_REASON) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Sends CONNECT for `target` over `stream` and reads the answer, all within `limit`. On
/// success the stream is the tunnel; bytes after the head (the target's first bytes) are in
/// its read buffer.
pub(crate) async fn connect<S>(
    stream: &mut ProxyStream<S>,
    target: &TargetAddr,
    authorization: Option<&str>,
    limit: Duration,
) -> Result<(), HopErrorKind>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = connect_request(target, authorization).map_err(HopErrorKind::Http)?;
    let deadline = Instant::now() + limit;
    let timeout = |_| HopErrorKind::Timeout(limit);
    tokio::time::timeout_at(deadline, async {
        stream.get_mut().write_all(&request).await?;
        stream.get_mut().flush().await
    })
    .await
    .map_err(timeout)?
    .map_err(HopErrorKind::from_io)?;
    loop {
        let Some(head) = parse_head(stream.read_buffer()).map_err(HopErrorKind::Http)? else {
            let (buf, io) = stream.buf_and_io();
            buf.reserve(READ_CHUNK);
            let read = tokio::time::timeout_at(deadline, io.read_buf(buf))
                .await
                .map_err(timeout)?
                .map_err(HopErrorKind::from_io)?;
            if read == 0 {
                return Err(HopErrorKind::Closed);
            }
            continue;
        };
        stream.consume(head.len);
        match head.status {
            // RFC 9110 §15.2: "A client MUST be able to parse one or more 1xx responses
            // received prior to a final response". 101 would switch protocols: not an answer
            // to CONNECT.
            100..=199 if head.status != 101 => continue,
            // RFC 9110 §9.3.6: "Any 2xx (Successful) response indicates that the sender (and
            // all inbound proxies) will switch to tunnel mode immediately after the response
            // header section" and "A client MUST ignore any Content-Length or
            // Transfer-Encoding header fields received in a successful response to CONNECT."
            200..=299 => return Ok(()),
            // 407 is the status for a missing or wrong `Proxy-Authorization` (RFC 9110
            // §15.5.8); some proxies (tinyproxy) answer wrong credentials with 401.
            401 | 407 => {
                return Err(HopErrorKind::Http(HttpError::AuthenticationRequired {
                    status: head.status,
                    reason: head.reason,
                    offered_credentials: authorization.is_some(),
                }))
            }
            status => {
                return Err(HopErrorKind::Http(HttpError::Refused {
                    status,
                    reason: head.reason,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socksmith_proto::ReplyCode;
    use tokio::io::{duplex, DuplexStream};

    const LIMIT: Duration = Duration::from_secs(5);

    fn target(text: &str) -> TargetAddr {
        crate::client::parse_target(text).expect("valid target")
    }

    /// A scripted proxy: reads one request head, checks it, then writes `answer` in the
    /// given pieces and keeps the connection open until the client is done.
    async fn proxy(mut io: DuplexStream, expect: Vec<u8>, answer: Vec<Vec<u8>>) {
        let mut got = vec![0; expect.len()];
        io.read_exact(&mut got).await.expect("read request");
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expect)
        );
        for piece in answer {
            if io.write_all(&piece).await.is_err() {
                return;
            }
        }
        let mut rest = Vec::new();
        let _ = io.read_to_end(&mut rest).await;
    }

    /// Runs the exchange against [`proxy`]. The proxy answers only a request it expected, so
    /// a wrong request shows up as the proxy's failed assertion (raised here, on the error
    /// path), never as a passing test.
    async fn exchange(
        target: &TargetAddr,
        authorization: Option<&str>,
        expect: &str,
        answer: Vec<Vec<u8>>,
    ) -> Result<ProxyStream<DuplexStream>, HopErrorKind> {
        let (ours, theirs) = duplex(64 * 1024);
        let peer = tokio::spawn(proxy(theirs, expect.as_bytes().to_vec(), answer));
        let mut stream = ProxyStream::new(ours);
        match connect(&mut stream, target, authorization, LIMIT).await {
            Ok(()) => Ok(stream),
            Err(e) => {
                drop(stream);
                peer.await
                    .expect("the scripted proxy saw the expected request");
                Err(e)
            }
        }
    }

    #[tokio::test]
    async fn bytes_sent_with_the_200_are_kept_for_the_tunnel() {
        let t = target("example.com:22");
        let result = exchange(
            &t,
            None,
            "CONNECT example.com:22 HTTP/1.1\r\nHost: example.com:22\r\n\r\n",
            vec![
                b"HTTP/1.1 200 Connection established\r\nContent-Length: 99\r\n\r\nSSH-2.0-banner\r\n"
                    .to_vec(),
            ],
        )
        .await;
        let mut stream = result.expect("tunnel");
        assert_eq!(stream.read_buffer(), b"SSH-2.0-banner\r\n");
        let mut banner = [0; 16];
        stream.read_exact(&mut banner).await.expect("banner");
        assert_eq!(&banner, b"SSH-2.0-banner\r\n");
    }

    #[tokio::test]
    async fn an_answer_one_byte_at_a_time_after_an_interim_100() {
        let t = target("[::1]:8080");
        let answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\nx";
        let result = exchange(
            &t,
            Some("Basic dTpw"),
            "CONNECT [::1]:8080 HTTP/1.1\r\nHost: [::1]:8080\r\nProxy-Authorization: Basic dTpw\r\n\r\n",
            answer.iter().map(|b| vec![*b]).collect(),
        )
        .await;
        let mut stream = result.expect("tunnel");
        let mut x = [0; 1];
        stream.read_exact(&mut x).await.expect("early byte");
        assert_eq!(&x, b"x");
    }

    #[tokio::test]
    async fn a_407_names_the_status_and_whether_credentials_were_sent() {
        let t = target("10.0.0.1:80");
        let answer = b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\n\r\n";
        let unauthorized = b"HTTP/1.0 401 Unauthorized\r\n\r\n";
        let result = exchange(
            &t,
            Some("Basic dTpw"),
            "CONNECT 10.0.0.1:80 HTTP/1.1\r\nHost: 10.0.0.1:80\r\nProxy-Authorization: Basic dTpw\r\n\r\n",
            vec![unauthorized.to_vec()],
        )
        .await;
        assert_eq!(
            result.expect_err("401").to_string(),
            "HTTP 401 Unauthorized: wrong username or password"
        );
        for (authorization, expect, hint) in [
            (
                None,
                "CONNECT 10.0.0.1:80 HTTP/1.1\r\nHost: 10.0.0.1:80\r\n\r\n",
                "requires a username and password",
            ),
            (
                Some("Basic dTpw"),
                "CONNECT 10.0.0.1:80 HTTP/1.1\r\nHost: 10.0.0.1:80\r\nProxy-Authorization: Basic dTpw\r\n\r\n",
                "wrong username or password",
            ),
        ] {
            let result = exchange(&t, authorization, expect, vec![answer.to_vec()]).await;
            let err = result.expect_err("407");
            assert!(
                matches!(
                    &err,
                    HopErrorKind::Http(HttpError::AuthenticationRequired { status: 407, offered_credentials, .. })
                        if *offered_credentials == authorization.is_some()
                ),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(
                text.starts_with("HTTP 407 Proxy Authentication Required: "),
                "{text}"
            );
            assert!(text.contains(hint), "{text}");
        }
    }

    #[tokio::test]
    async fn other_refusals_carry_the_status_and_the_closest_socks_reply() {
        let t = target("10.0.0.1:25");
        let expect = "CONNECT 10.0.0.1:25 HTTP/1.1\r\nHost: 10.0.0.1:25\r\n\r\n";
        for (status, code) in [
            ("403 Forbidden", ReplyCode::NotAllowed),
            ("502 Bad Gateway", ReplyCode::HostUnreachable),
            ("504 Gateway Timeout", ReplyCode::TtlExpired),
            ("500 Unable to connect", ReplyCode::GeneralFailure),
        ] {
            let answer = format!("HTTP/1.0 {status}\r\nContent-Type: text/html\r\n\r\n<html>");
            let result = exchange(&t, None, expect, vec![answer.into_bytes()]).await;
            let HopErrorKind::Http(err) = result.expect_err(status) else {
                panic!("{status}: not an HTTP error");
            };
            assert_eq!(err.to_string(), format!("refused with HTTP {status}"));
            assert_eq!(err.reply_code(), Some(code), "{status}");
        }
    }

    #[tokio::test]
    async fn a_malformed_head_is_an_error_not_a_tunnel() {
        let t = target("10.0.0.1:80");
        let expect = "CONNECT 10.0.0.1:80 HTTP/1.1\r\nHost: 10.0.0.1:80\r\n\r\n";
        for answer in [
            &b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00"[..],
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
        ] {
            let result = exchange(&t, None, expect, vec![answer.to_vec()]).await;
            let err = result.expect_err("malformed");
            assert!(
                matches!(err, HopErrorKind::Http(HttpError::Malformed(_))),
                "{:?}: {err:?}",
                String::from_utf8_lossy(answer)
            );
        }
    }

    #[test]
    fn more_header_fields_than_the_limit_are_malformed() {
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            head.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        assert!(
            matches!(parse_head(&head), Err(HttpError::Malformed(_))),
            "{:?}",
            parse_head(&head)
        );
    }

    #[tokio::test]
    async fn an_oversized_head_is_refused_without_reading_on() {
        let t = target("10.0.0.1:80");
        let expect = "CONNECT 10.0.0.1:80 HTTP/1.1\r\nHost: 10.0.0.1:80\r\n\r\n";
        // A header line without end, four times the limit: the client stops at the limit.
        let mut answer = b"HTTP/1.1 200 OK\r\nX-Padding: ".to_vec();
        answer.resize(4 * MAX_RESPONSE_HEAD, b'a');
        let result = exchange(&t, None, expect, vec![answer]).await;
        let err = result.expect_err("too large");
        assert!(
            matches!(
                err,
                HopErrorKind::Http(HttpError::HeadTooLarge {
                    limit: MAX_RESPONSE_HEAD
                })
            ),
            "{err:?}"
        );
        // A complete head just over the limit is refused too.
        let mut big = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
        big.resize(MAX_RESPONSE_HEAD + 10, b'a');
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            parse_head(&big),
            Err(HttpError::HeadTooLarge {
                limit: MAX_RESPONSE_HEAD
            })
        );
    }

    #[tokio::test]
    async fn a_proxy_that_hangs_up_is_reported_as_closed() {
        let t = target("10.0.0.1:80");
        let expect = "CONNECT 10.0.0.1:80 HTTP/1.1\r\nHost: 10.0.0.1:80\r\n\r\n";
        let (ours, mut theirs) = duplex(1024);
        let peer = tokio::spawn(async move {
            let mut got = vec![0; expect.len()];
            theirs.read_exact(&mut got).await.expect("request");
            theirs.write_all(b"HTTP/1.1 200").await.expect("partial");
        });
        let mut stream = ProxyStream::new(ours);
        let result = connect(&mut stream, &t, None, LIMIT).await;
        peer.await.expect("peer");
        assert!(matches!(result, Err(HopErrorKind::Closed)), "{result:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_proxy_times_out() {
        let t = target("10.0.0.1:80");
        let (ours, _theirs) = duplex(1024);
        let mut stream = ProxyStream::new(ours);
        let result = connect(&mut stream, &t, None, LIMIT).await;
        assert!(
            matches!(result, Err(HopErrorKind::Timeout(d)) if d == LIMIT),
            "{result:?}"
        );
    }

    #[test]
    fn names_that_would_break_the_request_line_are_refused() {
        for name in ["a b", "a\r\nX-Injected: 1", "a/b", "a@b"] {
            let t = TargetAddr::domain(name, 80).expect("a SOCKS name");
            let err = connect_request(&t, None).expect_err(name);
            assert!(matches!(err, HttpError::InvalidTargetName(_)), "{err:?}");
            assert!(!err.to_string().contains('\r'), "{err}");
        }
        let scoped: SocketAddr = "[fe80::1%2]:443".parse().expect("scoped address");
        let request = connect_request(&TargetAddr::Ip(scoped), None).expect("valid");
        assert!(request.starts_with(b"CONNECT [fe80::1]:443 HTTP/1.1\r\n"));
    }

    #[test]
    fn reason_phrases_are_escaped_and_cut() {
        let head = parse_head(b"HTTP/1.1 403 No\tentry\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(head.reason, "No\\tentry");
        let long = format!("HTTP/1.1 403 {}\r\n\r\n", "x".repeat(500));
        let head = parse_head(long.as_bytes())
            .expect("valid")
            .expect("complete");
        assert_eq!(head.reason.len(), MAX_REASON);
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n"), Ok(None));
    }
}
