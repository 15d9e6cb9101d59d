//! The wire checks of an HTTP proxy request head, done by us before anything is forwarded:
//! the first head of a connection (to tell CONNECT, which we tunnel ourselves, from requests
//! hyper forwards), the framing rules against request smuggling, the target of CONNECT and of
//! absolute-form requests, and `Proxy-Authorization: Basic`.
//!
//! Pure functions over bytes, like the SOCKS codec: "incomplete" is `Ok(None)`, and nothing
//! here reads a socket. Parsing is `httparse`'s (the parser hyper itself uses).

use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use socksmith_proto::{Credentials, TargetAddr};

use crate::server::http::HttpError;

/// The longest request head served (request line and header fields with their CRLFs). A
/// longer one gets `431` and is never forwarded.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// At most this many header fields in a head; more gets `431`.
const MAX_HEADERS: usize = 128;

/// The first request head of a connection, as far as the proxy needs it.
#[derive(Debug)]
pub(crate) struct Head {
    /// The method is CONNECT.
    pub(crate) connect: bool,
    /// The request-target as sent (`host:port` for CONNECT).
    pub(crate) target: String,
    /// `Proxy-Authorization`, if sent.
    pub(crate) proxy_authorization: Option<Vec<u8>>,
    /// How the message's body is delimited.
    pub(crate) body: BodyLength,
    /// Bytes the head takes, its final CRLF included; what follows belongs to the client's
    /// next bytes (a CONNECT tunnel's first payload, a body, a pipelined request).
    pub(crate) len: usize,
}

/// How a request's body is delimited (RFC 9112 §6.3), once [`check_framing`] has refused the
/// ambiguous cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyLength {
    /// `Content-Length: n` (no field: 0).
    Length(u64),
    /// `Transfer-Encoding` (hyper accepts only `chunked` last, and answers others with 400).
    Chunked,
}

/// Decodes the request head at the start of `buf`: `Ok(None)` while it is incomplete.
///
/// Refused (RFC 9112): a malformed request line or field (httparse rejects whitespace
/// between a field name and its colon, which §5.1 says a server MUST answer with 400), a head
/// over [`MAX_HEAD`], an HTTP/1.1 request without exactly one `Host` (§3.2: "A server MUST
/// respond with a 400 (Bad Request) status code to any HTTP/1.1 request message that lacks a
/// Host header field and to any request message that contains more than one Host header
/// field"; HTTP/1.0 may omit it), and ambiguous framing ([`check_framing`]).
pub(crate) fn parse(buf: &[u8]) -> Result<Option<Head>, HttpError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(HttpError::HeadTooLarge(MAX_HEAD))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyFields(MAX_HEADERS)),
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    };
    if len > MAX_HEAD {
        return Err(HttpError::HeadTooLarge(MAX_HEAD));
    }
    let method = request.method.expect("a complete head has a method");
    let target = request.path.expect("a complete head has a target");
    let minor = request.version.expect("a complete head has a version");
    let headers = &*request.headers;
    let body = check_framing(headers.iter().map(|h| (h.name, h.value)))?;
    let hosts = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .count();
    if hosts > 1 || (hosts == 0 && minor >= 1) {
        return Err(HttpError::HostHeader(hosts));
    }
    let proxy_authorization = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("proxy-authorization"))
        .map(|h| h.value.to_vec());
    Ok(Some(Head {
        connect: method == "CONNECT",
        target: target.to_owned(),
        proxy_authorization,
        body,
        len,
    }))
}

/// Refuses a message whose body length two parsers could read differently (RFC 9112 §6.1,
/// request smuggling): `Content-Length` beside `Transfer-Encoding` ("A server MAY reject a
/// request that contains both Content-Length and Transfer-Encoding ... Regardless, the
/// server MUST close the connection after responding"; we reject), several
/// `Content-Length`s that differ or a value that is not a number (§6.3: "the recipient MUST
/// treat it as an unrecoverable error").
pub(crate) fn check_framing<'h>(
    fields: impl IntoIterator<Item = (&'h str, &'h [u8])>,
) -> Result<BodyLength, HttpError> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for (name, value) in fields {
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            // A list of equal values ("5, 5") is one length (§6.3 allows taking it).
            for item in value.split(|&b| b == b',') {
                let item = item.trim_ascii();
                if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
                    return Err(HttpError::InvalidContentLength);
                }
                let n = std::str::from_utf8(item)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or(HttpError::InvalidContentLength)?;
                match length {
                    Some(seen) if seen != n => return Err(HttpError::ConflictingContentLength),
                    _ => length = Some(n),
                }
            }
        }
    }
    match (chunked, length) {
        (true, Some(_)) => Err(HttpError::LengthAndTransferEncoding),
        (true, None) => Ok(BodyLength::Chunked),
        (false, length) => Ok(BodyLength::Length(length.unwrap_or(0))),
    }
}

/// The target of a CONNECT's authority-form request-target: `host:port`, `[v6]:port`
/// (RFC 9110 §9.3.6: the port is required).
pub(crate) fn authority_target(authority: &str) -> Result<TargetAddr, HttpError> {
    let bad = || HttpError::BadTarget(authority.escape_default().to_string());
    let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    host_target(host, port).map_err(|_| bad())
}

/// A target from a URI's host (an IPv6 literal in brackets) and port.
pub(crate) fn host_target(host: &str, port: u16) -> Result<TargetAddr, HttpError> {
    let bad = || HttpError::BadTarget(format!("{}:{port}", host.escape_default()));
    if port == 0 || host.is_empty() {
        return Err(bad());
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ip: std::net::Ipv6Addr = v6.parse().map_err(|_| bad())?;
        return Ok(TargetAddr::Ip(SocketAddr::new(IpAddr::V6(ip), port)));
    }
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return Ok(TargetAddr::Ip(SocketAddr::new(IpAddr::V4(ip), port)));
    }
    // A reg-name: letters, digits and the few punctuation marks names use; nothing that
    // could end a log field or a line.
    let name_char = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
    if !host.as_bytes().iter().all(name_char) {
        return Err(bad());
    }
    TargetAddr::domain(host.as_bytes(), port).map_err(|_| bad())
}

/// The credentials of a `Proxy-Authorization: Basic <base64(user:password)>` field (RFC
/// 7617); `None` for another scheme or a value that does not decode.
pub(crate) fn basic_credentials(value: &[u8]) -> Option<Credentials> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Credentials::new(&decoded[..colon], &decoded[colon + 1..]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(head: &[u8]) -> Result<Option<Head>, HttpError> {
        parse(head)
    }

    #[test]
    fn a_connect_head_and_what_follows_it() {
        let bytes = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03";
        let head = parsed(bytes).expect("valid").expect("complete");
        assert!(head.connect);
        assert_eq!(head.target, "example.com:443");
        assert_eq!(&bytes[head.len..], b"\x16\x03");
    }

    #[test]
    fn one_byte_at_a_time_is_incomplete_until_the_last() {
        let bytes = b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n";
        for end in 0..bytes.len() {
            assert!(
                parsed(&bytes[..end]).expect("valid prefix").is_none(),
                "{end}"
            );
        }
        assert_eq!(
            parsed(bytes).expect("valid").expect("complete").len,
            bytes.len()
        );
    }

    #[test]
    fn http_1_0_connect_needs_no_host_but_1_1_does() {
        assert!(parsed(b"CONNECT a:1 HTTP/1.0\r\n\r\n")
            .expect("valid")
            .is_some());
        assert!(matches!(
            parsed(b"CONNECT a:1 HTTP/1.1\r\n\r\n"),
            Err(HttpError::HostHeader(0))
        ));
        assert!(matches!(
            parsed(b"GET http://a/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Err(HttpError::HostHeader(2))
        ));
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        type Expected = fn(&HttpError) -> bool;
        let cases: [(&[u8], Expected); 4] = [
            (
                b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                |e| matches!(e, HttpError::LengthAndTransferEncoding),
            ),
            (
                b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
                |e| matches!(e, HttpError::ConflictingContentLength),
            ),
            (
                b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n",
                |e| matches!(e, HttpError::InvalidContentLength),
            ),
            (
                b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\n",
                |e| matches!(e, HttpError::Malformed(_)),
            ),
        ];
        for (bytes, expected) in cases {
            let error = parsed(bytes).expect_err("refused");
            assert!(expected(&error), "{error:?}");
            assert_eq!(error.status(), Some(400), "{error}");
        }
        // Equal lengths, repeated or listed, are one length.
        let same = b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3, 3\r\n\r\n";
        assert!(parsed(same).expect("valid").is_some());
    }

    #[test]
    fn a_head_over_the_limit_is_refused_with_431() {
        let mut bytes = b"GET http://a/ HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
        bytes.resize(MAX_HEAD + 10, b'x');
        let error = parsed(&bytes).expect_err("too large");
        assert_eq!(error.status(), Some(431), "{error}");
    }

    #[test]
    fn connect_targets() {
        assert_eq!(
            authority_target("[::1]:8080").expect("v6"),
            TargetAddr::Ip("[::1]:8080".parse().expect("literal"))
        );
        assert_eq!(
            authority_target("127.0.0.1:80").expect("v4"),
            TargetAddr::Ip("127.0.0.1:80".parse().expect("literal"))
        );
        assert_eq!(
            authority_target("example.com:443").expect("name"),
            TargetAddr::domain("example.com", 443).expect("valid")
        );
        for bad in [
            "example.com",
            "example.com:0",
            ":80",
            "a b:80",
            "[::1:80",
            "x:99999",
        ] {
            assert!(authority_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn basic_credentials_decode() {
        // "alice:s3:cret": the password may hold colons, the name may not.
        let c = basic_credentials(b"Basic YWxpY2U6czM6Y3JldA==").expect("decodes");
        assert_eq!(
            (c.username(), c.password()),
            (&b"alice"[..], &b"s3:cret"[..])
        );
        assert!(basic_credentials(b"basic   YWxpY2U6cHc=").is_some());
        for bad in [
            &b"Bearer abc"[..],
            b"Basic !!!",
            b"Basic YWxpY2U=",
            b"Basic",
        ] {
            assert!(basic_credentials(bad).is_none(), "{bad:?}");
        }
    }
}
