//! The host an HTTP/1 request is for, read from its request head.
//!
//! ```text
//! request-line = method SP request-target SP HTTP-version CRLF     (RFC 9112 §3)
//! field-line   = field-name ":" OWS field-value OWS CRLF           (RFC 9112 §5)
//! head         = request-line *( field-line ) CRLF
//! ```
//!
//! [`sniff_http`] waits for the whole head (at most [`MAX_HEAD_BYTES`]) because a second
//! `Host` line further down would change the answer, then gives the host the origin server
//! will use: the authority of an absolute-form or CONNECT request target (RFC 9112 §3.2.2:
//! "the server MUST ignore the received Host header field"), otherwise the `Host` field,
//! without its port, an IPv6 literal without its brackets. The start of the head is judged
//! at once, so a stream in another protocol (TLS, SSH) is [`HttpSniff::NotHttp`] after a
//! byte or a line.

use super::is_host_name;

/// The most bytes of a request head [`sniff_http`] looks at; a head that has not ended by
/// then is [`HttpSniff::TooLarge`]. Browsers' heads are well under 8 KiB unless cookies are
/// huge.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The longest method token accepted; longer is not HTTP.
const MAX_METHOD: usize = 32;

/// The methods a request is recognised by: RFC 9110's and the common extensions (PATCH,
/// WebDAV). Waiting for more bytes only makes sense while the first ones can still become one
/// of these: a client whose short first message merely starts with a letter (a binary
/// protocol, a one-byte ping) is not held back for the sniff window.
const KNOWN_METHODS: &[&[u8]] = &[
    b"GET",
    b"HEAD",
    b"POST",
    b"PUT",
    b"DELETE",
    b"CONNECT",
    b"OPTIONS",
    b"TRACE",
    b"PATCH",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
    b"REPORT",
    b"SEARCH",
];

/// Whether `method` is a known method (`whole`) or the start of one.
fn known_method(method: &[u8], whole: bool) -> bool {
    KNOWN_METHODS.iter().any(|known| {
        if whole {
            *known == method
        } else {
            known.starts_with(method)
        }
    })
}

/// What the first bytes of a stream say about an HTTP/1 request's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpSniff {
    /// The bytes so far are the start of a request head; ask again with more.
    NeedMore,
    /// The request is for this host (without port; an IPv6 literal without brackets).
    Found(String),
    /// A whole HTTP/1 request head that names no host (HTTP/1.0 without `Host`, or an
    /// empty `Host`).
    NoHost,
    /// The stream does not start with an HTTP/1 request line.
    NotHttp,
    /// An HTTP/1 request head a server must reject (RFC 9112: several `Host` lines,
    /// whitespace before a colon, line folding, a host that is not one).
    Malformed,
    /// The head has not ended within [`MAX_HEAD_BYTES`].
    TooLarge,
}

/// Reads the host from the start of a client's stream.
///
/// `input` is everything the client has sent so far; call again with the grown buffer while
/// the answer is [`HttpSniff::NeedMore`]. The answer never changes once it is something
/// else, whatever follows (a request body, pipelined requests).
///
/// ```
/// use socksmith_proto::sniff::{sniff_http, HttpSniff};
///
/// let head = b"GET / HTTP/1.1\r\nHOST: Ads.Example.com:8080\r\n\r\n";
/// assert_eq!(sniff_http(head), HttpSniff::Found("Ads.Example.com".into()));
/// assert_eq!(sniff_http(&head[..20]), HttpSniff::NeedMore);
/// assert_eq!(sniff_http(b"\x16\x03\x01"), HttpSniff::NotHttp);
/// ```
pub fn sniff_http(input: &[u8]) -> HttpSniff {
    let window = input.get(..MAX_HEAD_BYTES).unwrap_or(input);
    let out_of_input = if input.len() > MAX_HEAD_BYTES {
        HttpSniff::TooLarge
    } else {
        HttpSniff::NeedMore
    };
    // RFC 9112 §2.2: a server "SHOULD ignore at least one empty line (CRLF) received prior
    // to the request-line", and servers do: so must the sniff.
    let leading = window
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let window = window.get(leading..).unwrap_or_default();
    let mut lines = Lines { rest: window };
    let Some(request_line) = lines.next() else {
        return match judge_partial_request_line(window) {
            Some(verdict) => verdict,
            None => out_of_input,
        };
    };
    let Some(target) = request_target(request_line) else {
        return HttpSniff::NotHttp;
    };
    let mut host_field: Option<&[u8]> = None;
    loop {
        let Some(line) = lines.next() else {
            return out_of_input;
        };
        if line.is_empty() {
            break;
        }
        // RFC 9112 §5.2: a server "MUST either reject the message by sending a 400 (Bad
        // Request) ... or replace each received obs-fold"; a name on a folded line would
        // be read differently by different servers, so it is not guessed at.
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            return HttpSniff::Malformed;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return HttpSniff::Malformed;
        };
        let (name, value) = line.split_at(colon);
        // RFC 9112 §5.1: "A server MUST reject, with a response status code of 400 (Bad
        // Request), any received request message that contains whitespace between a header
        // field name and colon."
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return HttpSniff::Malformed;
        }
        if name.eq_ignore_ascii_case(b"host") {
            // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to
            // any HTTP/1.1 request message that lacks a Host header field and to any
            // request message that contains more than one Host header field line".
            if host_field.is_some() {
                return HttpSniff::Malformed;
            }
            host_field = Some(trim_ows(value.get(1..).unwrap_or_default()));
        }
    }
    let authority = match target {
        Target::Authority(authority) => Some(authority),
        Target::Origin => host_field,
    };
    match authority {
        None | Some([]) => HttpSniff::NoHost,
        Some(authority) => match host_of(authority) {
            Some(host) => HttpSniff::Found(host),
            None => HttpSniff::Malformed,
        },
    }
}

/// The head's lines, each without its line ending; a line not yet ended is not returned.
/// A bare LF ends a line too (RFC 9112 §2.2 lets a recipient accept it).
struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Lines<'a> {
    fn next(&mut self) -> Option<&'a [u8]> {
        let end = self.rest.iter().position(|&b| b == b'\n')?;
        let (line, rest) = self.rest.split_at(end);
        self.rest = rest.get(1..).unwrap_or_default();
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

/// Where the request's host is to be read from.
enum Target<'a> {
    /// The request target carries it (absolute-form or authority-form).
    Authority(&'a [u8]),
    /// The `Host` field does.
    Origin,
}

/// A request line not yet ended: `Some(NotHttp)` once it cannot be the start of one.
fn judge_partial_request_line(partial: &[u8]) -> Option<HttpSniff> {
    let method_len = partial.iter().take_while(|&&b| is_tchar(b)).count();
    if method_len > MAX_METHOD {
        return Some(HttpSniff::NotHttp);
    }
    let method = partial.get(..method_len).unwrap_or_default();
    let complete = partial.get(method_len) == Some(&b' ');
    if !known_method(method, complete) {
        return Some(HttpSniff::NotHttp);
    }
    match partial.get(method_len) {
        None => None,
        Some(b' ') if method_len > 0 => {
            // The target and version are visible ASCII and spaces.
            let rest = partial.get(method_len..).unwrap_or_default();
            if rest
                .iter()
                .all(|&b| (0x20..0x7f).contains(&b) || b == b'\r')
            {
                None
            } else {
                Some(HttpSniff::NotHttp)
            }
        }
        Some(_) => Some(HttpSniff::NotHttp),
    }
}

/// The request target of a whole request line, or `None` when the line is not HTTP/1.
fn request_target(line: &[u8]) -> Option<Target<'_>> {
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    if parts.next().is_some()
        || method.is_empty()
        || method.len() > MAX_METHOD
        || !method.iter().all(|&b| is_tchar(b))
        || !known_method(method, true)
        || target.is_empty()
        || !target.iter().all(|&b| b.is_ascii_graphic())
    {
        return None;
    }
    let minor = version.strip_prefix(b"HTTP/1.")?;
    if minor.len() != 1 || !minor[0].is_ascii_digit() {
        return None;
    }
    if method == b"CONNECT" {
        return Some(Target::Authority(target));
    }
    // absolute-form: scheme "://" authority path-abempty [ "?" query ]
    if let Some(scheme_end) = target.windows(3).position(|w| w == b"://") {
        let scheme = target.get(..scheme_end).unwrap_or_default();
        if !scheme.is_empty()
            && scheme[0].is_ascii_alphabetic()
            && scheme
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            let after = target.get(scheme_end + 3..).unwrap_or_default();
            let end = after
                .iter()
                .position(|&b| matches!(b, b'/' | b'?' | b'#'))
                .unwrap_or(after.len());
            let authority = after.get(..end).unwrap_or_default();
            // userinfo "@" host: the host is after the last "@".
            let host_port = match authority.iter().rposition(|&b| b == b'@') {
                Some(at) => authority.get(at + 1..).unwrap_or_default(),
                None => authority,
            };
            return Some(Target::Authority(host_port));
        }
    }
    Some(Target::Origin)
}

/// The host of `host [ ":" port ]`: a name, an IPv4 address or a bracketed IPv6 literal
/// (returned without brackets). `None` when it is none of those.
fn host_of(authority: &[u8]) -> Option<String> {
    let (host, port) = if let Some(inner) = authority.strip_prefix(b"[") {
        let close = inner.iter().position(|&b| b == b']')?;
        let (literal, after) = inner.split_at(close);
        let after = after.get(1..).unwrap_or_default();
        let port = match after {
            [] => &[][..],
            [b':', port @ ..] => port,
            _ => return None,
        };
        let is_ipv6 = !literal.is_empty()
            && literal.contains(&b':')
            && literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !is_ipv6 {
            return None;
        }
        (literal, port)
    } else {
        match authority.iter().position(|&b| b == b':') {
            Some(colon) => (
                authority.get(..colon).unwrap_or_default(),
                authority.get(colon + 1..).unwrap_or_default(),
            ),
            None => (authority, &[][..]),
        }
    };
    // RFC 3986: port = *DIGIT (empty allowed).
    if port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let valid = host.contains(&b':') || is_host_name(host);
    valid.then(|| String::from_utf8_lossy(host).into_owned())
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Strips optional whitespace (SP, HTAB) at both ends.
fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    value.get(start..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {

    #[test]
    fn only_the_start_of_a_known_method_waits_for_more() {
        // A one-byte ping, a binary protocol that starts with a letter: decided at once.
        assert_eq!(sniff_http(b"A"), HttpSniff::NotHttp);
        assert_eq!(sniff_http(b"x"), HttpSniff::NotHttp);
        assert_eq!(sniff_http(b"GETX"), HttpSniff::NotHttp);
        assert_eq!(
            sniff_http(b"BREW / HTTP/1.1\r\nHost: a\r\n\r\n"),
            HttpSniff::NotHttp
        );
        // The start of a real method is worth waiting for.
        assert_eq!(sniff_http(b"G"), HttpSniff::NeedMore);
        // Empty lines before the request line are skipped, as servers skip them.
        assert_eq!(sniff_http(b"\r\n"), HttpSniff::NeedMore);
        assert_eq!(
            sniff_http(b"\r\n\r\nGET / HTTP/1.1\r\nHost: ads.example\r\n\r\n"),
            HttpSniff::Found("ads.example".into())
        );
        assert_eq!(sniff_http(b"\n\nSSH-2.0-x\r\n"), HttpSniff::NotHttp);
        assert_eq!(sniff_http(b"PROP"), HttpSniff::NeedMore);
        assert_eq!(sniff_http(b"PATCH /x HTTP/1.1\r\n"), HttpSniff::NeedMore);
    }

    use super::*;

    /// What curl 7.88 sent for `curl http://ads.example.com:8080/path` (captured on
    /// loopback through `--connect-to`).
    const CURL_HEAD: &[u8] = include_bytes!("../../tests/vectors/curl-get-ads.example.com.http");
    /// What Python's `urllib.request` sent for `http://[::1]:8000/`.
    const PYTHON_HEAD: &[u8] = include_bytes!("../../tests/vectors/python-urllib-ipv6.http");

    fn found(s: &str) -> HttpSniff {
        HttpSniff::Found(s.to_owned())
    }

    #[test]
    fn captured_requests_give_their_hosts() {
        assert_eq!(sniff_http(CURL_HEAD), found("ads.example.com"));
        assert_eq!(sniff_http(PYTHON_HEAD), found("::1"));
        for head in [CURL_HEAD, PYTHON_HEAD] {
            for end in 0..head.len() {
                assert_eq!(
                    sniff_http(&head[..end]),
                    HttpSniff::NeedMore,
                    "prefix {end}"
                );
            }
        }
    }

    #[test]
    fn host_forms_and_header_case() {
        let cases: &[(&[u8], HttpSniff)] = &[
            (
                b"GET / HTTP/1.1\r\nhost: a.example\r\n\r\n",
                found("a.example"),
            ),
            (
                b"GET / HTTP/1.1\r\nHoSt:a.example:443 \r\n\r\n",
                found("a.example"),
            ),
            (
                b"GET / HTTP/1.1\r\nHost:\t[2001:db8::1]:80\r\n\r\n",
                found("2001:db8::1"),
            ),
            (b"GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n", found("::1")),
            (
                b"GET / HTTP/1.1\r\nHost: 192.0.2.1:80\r\n\r\n",
                found("192.0.2.1"),
            ),
            (
                b"GET / HTTP/1.1\r\nHost: trailing.dot.\r\n\r\n",
                found("trailing.dot."),
            ),
            (
                b"GET / HTTP/1.1\nX-A: 1\nHost: lf.example\n\n",
                found("lf.example"),
            ),
            (
                b"POST /x HTTP/1.1\r\nContent-Length: 3\r\nHost: b.example\r\nX: y\r\n\r\nabc",
                found("b.example"),
            ),
            (
                b"GET / HTTP/1.0\r\nUser-Agent: x\r\n\r\n",
                HttpSniff::NoHost,
            ),
            (b"GET / HTTP/1.1\r\nHost:\r\n\r\n", HttpSniff::NoHost),
        ];
        for (head, expected) in cases {
            assert_eq!(
                &sniff_http(head),
                expected,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn the_request_target_wins_over_the_host_field() {
        let absolute =
            b"GET http://user@Target.example:8080/p?q HTTP/1.1\r\nHost: other.example\r\n\r\n";
        assert_eq!(sniff_http(absolute), found("Target.example"));
        let connect = b"CONNECT tunnel.example:443 HTTP/1.1\r\nHost: other.example\r\n\r\n";
        assert_eq!(sniff_http(connect), found("tunnel.example"));
        // A path that merely contains "://" later on is origin-form.
        let origin = b"GET /redirect?to=http://x.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n";
        assert_eq!(sniff_http(origin), found("a.example"));
    }

    #[test]
    fn heads_a_server_must_reject_are_malformed() {
        for head in [
            &b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost : a.example\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: 1\r\n folded\r\nHost: a.example\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: bad name\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a.example:80x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: [not-ipv6]\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n",
        ] {
            assert_eq!(
                sniff_http(head),
                HttpSniff::Malformed,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn other_protocols_are_not_http_early() {
        assert_eq!(sniff_http(b"\x16\x03\x01\x02\x00"), HttpSniff::NotHttp);
        assert_eq!(sniff_http(b"\x05"), HttpSniff::NotHttp);
        assert_eq!(sniff_http(b" GET"), HttpSniff::NotHttp);
        assert_eq!(sniff_http(b"GET \x00"), HttpSniff::NotHttp);
        assert_eq!(
            sniff_http(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"),
            HttpSniff::NotHttp
        );
        assert_eq!(
            sniff_http(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            HttpSniff::NotHttp
        );
        assert_eq!(sniff_http(b"GET / HTTP/1.1 extra\r\n"), HttpSniff::NotHttp);
        assert_eq!(sniff_http(&[b'A'; MAX_METHOD + 1]), HttpSniff::NotHttp);
        assert_eq!(sniff_http(b"GET"), HttpSniff::NeedMore);
        assert_eq!(sniff_http(b""), HttpSniff::NeedMore);
    }

    #[test]
    fn heads_that_never_end_are_given_up_on() {
        let mut head = b"GET / HTTP/1.1\r\nCookie: ".to_vec();
        head.resize(MAX_HEAD_BYTES, b'a');
        assert_eq!(sniff_http(&head), HttpSniff::NeedMore);
        head.push(b'a');
        assert_eq!(sniff_http(&head), HttpSniff::TooLarge);
        head.extend_from_slice(b"\r\nHost: a.example\r\n\r\n");
        assert_eq!(sniff_http(&head), HttpSniff::TooLarge);
    }
}
