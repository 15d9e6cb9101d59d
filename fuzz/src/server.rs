//! Checks for the server library's own parsers: the PROXY protocol header, the HTTP proxy
//! request head and its framer, and the users file. Each feeds arbitrary bytes, in arbitrary
//! splits where the parser is a stream one, and checks what it accepts by re-encoding it.

use socksmith::server::http_fuzzing::{
    authority_target, basic_credentials, parse_head, RequestFramer, RequestHead,
};
use socksmith::server::proxy_protocol::{
    decode, read_header, ProxiedAddr, ProxyHeader, ProxyHeaderError, ProxyVersion, MAX_HEADER_LEN,
};
use socksmith::server::UsersFile;
use socksmith_proto::TargetAddr;
use std::io;
use std::mem::discriminant;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};

/// The first byte of a fuzz input picks a chunk size (1..=255); the rest is the data.
fn chunked(data: &[u8]) -> Option<(usize, &[u8])> {
    let (&chunk, rest) = data.split_first()?;
    Some((usize::from(chunk.max(1)), rest))
}

/// An in-memory stream that hands out its bytes `chunk` at a time, then end of stream.
struct ChunkedReader<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl AsyncRead for ChunkedReader<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.chunk.min(self.data.len()).min(buf.remaining());
        let (now, later) = self.data.split_at(n);
        buf.put_slice(now);
        self.data = later;
        Poll::Ready(Ok(()))
    }
}

thread_local! {
    /// One current-thread runtime per fuzzing thread: building one per input would cost more
    /// than the header check itself.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime builds");
}

/// The PROXY protocol header (`proxy_protocol::decode`, and `read_header` on an in-memory
/// stream split into chunks):
/// - a prefix is "need more" or the whole input's answer (errors: the same kind);
/// - the streaming reader finds the same header, and the bytes it read past it are the ones
///   that follow it; where `decode` needs more, the reader reports the stream closed;
/// - a decoded header, written again by hand in its version, decodes to the same header.
pub fn check_proxy_header(data: &[u8]) {
    let Some((chunk, data)) = chunked(data) else {
        return;
    };
    let whole = decode(data);
    for end in 0..data.len() {
        match (decode(&data[..end]), &whole) {
            (Ok(None), _) => {}
            (Ok(Some(prefix)), Ok(Some(whole))) => {
                assert_eq!(
                    &prefix, whole,
                    "a prefix of {end} bytes decoded differently"
                );
                break;
            }
            (Err(e), Err(w)) => {
                assert_eq!(discriminant(&e), discriminant(w), "{e} / whole: {w}");
                break;
            }
            (prefix, whole) => panic!("prefix of {end} bytes gave {prefix:?}, whole {whole:?}"),
        }
    }

    let mut stream = ChunkedReader { data, chunk };
    let read = RUNTIME.with(|rt| rt.block_on(read_header(&mut stream, Duration::from_secs(60))));
    match (&whole, read) {
        (Ok(Some((header, len))), Ok(read)) => {
            assert_eq!(&read.header, header);
            assert!(
                data[*len..].starts_with(&read.rest),
                "rest is not what follows the header"
            );
        }
        (Ok(None), Err(ProxyHeaderError::Closed(n))) => assert_eq!(n, data.len()),
        (Ok(None), Err(ProxyHeaderError::TooLong { .. })) => {
            assert!(data.len() >= MAX_HEADER_LEN)
        }
        (Err(e), Err(r)) => assert_eq!(discriminant(e), discriminant(&r), "{e} / read: {r}"),
        (whole, read) => panic!("all at once {whole:?}, read in {chunk}-byte chunks {read:?}"),
    }

    if let Ok(Some((header, _))) = whole {
        let again = encode_proxy_header(&header);
        assert_eq!(
            decode(&again).expect("a re-encoded header decodes"),
            Some((header, again.len())),
            "re-encoded as {again:02x?}"
        );
    }
}

/// A header written the way a balancer writes it.
fn encode_proxy_header(header: &ProxyHeader) -> Vec<u8> {
    const SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
    match (header.version, header.addr) {
        (
            ProxyVersion::V1,
            ProxiedAddr::Proxied {
                source,
                destination,
            },
        ) => {
            let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            )
            .into_bytes()
        }
        (ProxyVersion::V1, _) => b"PROXY UNKNOWN\r\n".to_vec(),
        (
            _,
            ProxiedAddr::Proxied {
                source,
                destination,
            },
        ) => {
            let mut out = SIGNATURE.to_vec();
            out.push(0x21);
            match (source, destination) {
                (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                    out.extend_from_slice(&[0x11, 0, 12]);
                    out.extend_from_slice(&s.ip().octets());
                    out.extend_from_slice(&d.ip().octets());
                }
                (SocketAddr::V6(s), SocketAddr::V6(d)) => {
                    out.extend_from_slice(&[0x21, 0, 36]);
                    out.extend_from_slice(&s.ip().octets());
                    out.extend_from_slice(&d.ip().octets());
                }
                (s, d) => panic!("a v2 header with mixed families: {s} {d}"),
            }
            out.extend_from_slice(&source.port().to_be_bytes());
            out.extend_from_slice(&destination.port().to_be_bytes());
            out
        }
        (_, ProxiedAddr::Local) => [SIGNATURE, &[0x20, 0x00, 0, 0]].concat(),
        (_, _) => [SIGNATURE, &[0x21, 0x00, 0, 0]].concat(),
    }
}

/// The HTTP proxy's request head checks (`parse_head`, the CONNECT target, Basic
/// credentials): a prefix is "need more" or the whole input's answer; a complete head ends
/// with its empty line and parses the same alone; a CONNECT target that is accepted is one a
/// session can dial; accepted credentials encode back to the same credentials.
pub fn check_http_head(data: &[u8]) {
    let whole = parse_head(data).map_err(|e| e.to_string());
    for end in 0..data.len() {
        match (parse_head(&data[..end]).map_err(|e| e.to_string()), &whole) {
            (Ok(None), _) => {}
            (Ok(Some(prefix)), Ok(Some(whole))) => {
                assert_eq!(&prefix, whole, "a prefix of {end} bytes parsed differently");
                break;
            }
            (Err(e), Err(w)) => {
                assert_eq!(&e, w, "a prefix failed differently from the whole");
                break;
            }
            (prefix, whole) => panic!("prefix of {end} bytes gave {prefix:?}, whole {whole:?}"),
        }
    }
    let Ok(Some(head)) = whole else {
        return;
    };
    check_head(data, &head);
}

fn check_head(data: &[u8], head: &RequestHead) {
    assert!(head.len <= data.len());
    assert!(data[..head.len].ends_with(b"\n"), "a head ends with a line");
    let alone = parse_head(&data[..head.len]).map_err(|e| e.to_string());
    assert_eq!(
        alone,
        Ok(Some(head.clone())),
        "the head alone parses differently"
    );

    if head.connect {
        if let Ok(target) = authority_target(&head.target) {
            match target {
                TargetAddr::Ip(addr) => assert_ne!(addr.port(), 0),
                TargetAddr::Domain(name, port) => {
                    assert_ne!(port, 0);
                    assert!(name
                        .as_bytes()
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(b)));
                }
            }
        }
    }
    if let Some(credentials) = head
        .proxy_authorization
        .as_deref()
        .and_then(basic_credentials)
    {
        use base64::Engine as _;
        let pair = [credentials.username(), b":", credentials.password()].concat();
        let value = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        );
        assert_eq!(
            basic_credentials(value.as_bytes()),
            Some(credentials),
            "credentials changed on re-encoding"
        );
    }
}

/// What a framer passed on and the refusal it reported, for one way of splitting the input.
fn frame(data: &[u8], chunk: usize) -> (Vec<u8>, Option<String>) {
    let mut framer = RequestFramer::new(MARKER.to_vec());
    let mut out = Vec::new();
    let mut error = None;
    for piece in data.chunks(chunk.max(1)) {
        if let Err(e) = framer.feed(piece, &mut out) {
            assert!(error.is_none(), "a second refusal: {e}");
            error = Some(e.to_string());
        }
    }
    (out, error)
}

const MARKER: &[u8] = b"MARKER /refused HTTP/1.1\r\n\r\n";

/// The HTTP request framer (the guard in front of hyper) on a client's byte stream: all at
/// once, one byte at a time and in chunks give the same bytes and refusal; what it passes on
/// is a prefix of the input (followed by the marker after a refusal).
pub fn check_http_framer(data: &[u8]) {
    let Some((chunk, data)) = chunked(data) else {
        return;
    };
    let whole = frame(data, data.len());
    assert_eq!(frame(data, 1), whole, "one byte at a time differs");
    assert_eq!(frame(data, chunk), whole, "{chunk}-byte chunks differ");
    let (out, error) = whole;
    let passed = match error {
        Some(_) => out
            .strip_suffix(MARKER)
            .expect("a refusal ends with the marker"),
        None => &out[..],
    };
    assert!(
        data.starts_with(passed),
        "passed on bytes that were not sent"
    );
}

/// The users file parser: what it accepts renders to text that parses to the same file, and
/// rendering is stable.
pub fn check_users_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.users");
    let Ok(file) = UsersFile::parse(text, path) else {
        return;
    };
    let rendered = file.render();
    let again = UsersFile::parse(&rendered, path).expect("a rendered users file parses");
    assert!(
        again.names().eq(file.names()),
        "render → parse changed the users"
    );
    if text.contains('\r') {
        // A comment line that itself ends in a CR (CR CR LF, or a CR at the end of the file)
        // is written back with an LF, and its last CR then reads as part of a CRLF: each
        // round may drop one such CR from a comment, never a user, and the text settles.
        let mut previous = rendered;
        let mut settled = false;
        for _ in 0..=text.matches('\r').count() {
            let next = UsersFile::parse(&previous, path).expect("a rendered users file parses");
            assert!(
                next.names().eq(file.names()),
                "render → parse changed the users"
            );
            let next = next.render();
            if next == previous {
                settled = true;
                break;
            }
            previous = next;
        }
        assert!(settled, "rendering never settles");
    } else {
        assert_eq!(again, file, "render → parse changed the file");
        assert_eq!(again.render(), rendered, "rendering is not stable");
    }
    for name in file.names() {
        assert!(file.contains(name));
    }
}
