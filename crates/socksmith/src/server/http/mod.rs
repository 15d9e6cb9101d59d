//! HTTP/1.1 proxy requests on the SOCKS listeners: a connection whose first byte is not a
//! SOCKS version (0x04, 0x05) is an HTTP client.
//!
//! - `CONNECT host:port` is read here (`head`, with `httparse`), checked like a SOCKS
//!   CONNECT (credentials, policy, accounting, egress), answered `200` and handed back to the
//!   session as a [`Tunnel`]: the same relay as SOCKS, with splice when both ends are TCP,
//!   and the bytes the client sent behind the head as the tunnel's first payload.
//! - Any other request is an absolute-form request to forward (`GET http://host/path`):
//!   `forward` hands the connection to hyper, which serves it with keep-alive and
//!   pipelining; each request is checked on its own and has its own log line.
//!
//! Refusals are HTTP statuses with a one-line reason: `400` for a malformed or ambiguously
//! framed request, `407` for missing or wrong credentials, `403` for a denial, `431` for a
//! head over 64 KiB, `502` for a target that cannot be reached, `504` for a timeout. This
//! module does not speak SOCKS and does not relay.

mod body;
mod forward;
mod framing;
mod guarded;
mod head;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant as StdInstant;

use socksmith_proto::{Command, ReplyCode, TargetAddr, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tracing::field;

use crate::relay::TunnelStream;
use crate::server::accounting::{Event, TunnelGuard};
use crate::server::connect::{self, Tunnel};
use crate::server::connection::{claimed_user_hash, linger, printable_user};
use crate::server::error::SessionError;
use crate::server::log::End;
use crate::server::stats::inc;
use crate::server::Shared;
use crate::session::Session;

/// The sans-IO wire checks of HTTP proxy requests, public only so that the fuzz targets in
/// `fuzz/` can reach them (the session is their only other caller): not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    use socksmith_proto::{Credentials, TargetAddr};

    use super::framing::Framer;
    use super::head::{self, BodyLength};
    use super::HttpError;

    /// What the head checks made of a complete request head.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct RequestHead {
        /// The method is CONNECT.
        pub connect: bool,
        /// The request-target as sent.
        pub target: String,
        /// `Proxy-Authorization`, if sent.
        pub proxy_authorization: Option<Vec<u8>>,
        /// The body's `Content-Length` (0 without one); `None` for a chunked body.
        pub content_length: Option<u64>,
        /// Bytes the head takes, its final CRLF included.
        pub len: usize,
    }

    /// The checks of the first request head of a connection: `Ok(None)` while incomplete.
    pub fn parse_head(buf: &[u8]) -> Result<Option<RequestHead>, HttpError> {
        Ok(head::parse(buf)?.map(|h| RequestHead {
            connect: h.connect,
            target: h.target,
            proxy_authorization: h.proxy_authorization,
            content_length: match h.body {
                BodyLength::Length(n) => Some(n),
                BodyLength::Chunked => None,
            },
            len: h.len,
        }))
    }

    /// The target of a CONNECT request-target (`host:port`, `[v6]:port`).
    pub fn authority_target(authority: &str) -> Result<TargetAddr, HttpError> {
        head::authority_target(authority)
    }

    /// The credentials of a `Proxy-Authorization: Basic` value.
    pub fn basic_credentials(value: &[u8]) -> Option<Credentials> {
        head::basic_credentials(value)
    }

    /// The guard that holds every request head of a connection back until it is checked.
    #[derive(Debug)]
    pub struct RequestFramer(Framer);

    impl RequestFramer {
        /// A framer that puts `marker` in place of a refused head.
        pub fn new(marker: Vec<u8>) -> Self {
            RequestFramer(Framer::new(marker))
        }

        /// Takes the client's next bytes and appends what may go on to hyper to `out`.
        pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), HttpError> {
            self.0.feed(input, out)
        }
    }
}

/// Why an HTTP proxy request was refused before it reached its target.
/// [`HttpError::status`] is the status the client got.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// HTTP is turned off (`ServerConfig::http`); the connection was closed, nothing sent.
    #[error("HTTP proxy requests are turned off")]
    Disabled,
    /// The request line or a header field is malformed.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The request head is longer than the limit.
    #[error("request head longer than {0} bytes")]
    HeadTooLarge(usize),
    /// The request head has more header fields than the limit.
    #[error("more than {0} header fields")]
    TooManyFields(usize),
    /// `Content-Length` and `Transfer-Encoding` together (a request smuggling shape).
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndTransferEncoding,
    /// Several `Content-Length`s that differ.
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    /// A `Content-Length` that is not a number.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// An HTTP/1.1 request without `Host`, or any with several (the count).
    #[error("{0} Host header fields (HTTP/1.1 needs exactly one)")]
    HostHeader(usize),
    /// The target is not a `host:port` the proxy can reach.
    #[error("invalid target {0}")]
    BadTarget(String),
    /// An origin-form request (`GET /path`): this server is a proxy, not a web server.
    #[error("not a proxy request (the target must be absolute, http://host/path)")]
    NotProxyRequest,
    /// An absolute-form request for a scheme other than `http`.
    #[error("scheme {0} is not forwarded (use CONNECT for https)")]
    UnsupportedScheme(String),
    /// The origin's answer failed (closed before a response, an invalid response).
    #[error("origin server: {0}")]
    Origin(String),
    /// The origin did not answer in time.
    #[error("origin server did not answer within {0:?}")]
    OriginTimeout(std::time::Duration),
}

impl HttpError {
    /// The status the client gets: `431` for a head too large, `502` and `504` for an origin
    /// that failed, `400` for the rest; `None` when HTTP is off (nothing is sent).
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Disabled => None,
            HttpError::HeadTooLarge(_) | HttpError::TooManyFields(_) => Some(431),
            HttpError::Origin(_) => Some(502),
            HttpError::OriginTimeout(_) => Some(504),
            _ => Some(400),
        }
    }
}

/// The status a failed request gets: `403` for a denial, `407` for credentials, `502` for a
/// target that cannot be reached (no such name, refused), `504` for a timeout.
pub(crate) fn status_of(error: &SessionError) -> u16 {
    match error {
        SessionError::Denied(_) => 403,
        SessionError::ProxyAuthRequired | SessionError::AuthenticationFailed(_) => 407,
        SessionError::Http(e) => e.status().unwrap_or(400),
        SessionError::Egress(e) => match e.reply_code() {
            ReplyCode::NotAllowed => 403,
            ReplyCode::TtlExpired => 504,
            _ => 502,
        },
        _ => 500,
    }
}

/// What the first bytes of a connection say.
pub(crate) enum Sniffed {
    /// A SOCKS client: the bytes read so far.
    Socks(Vec<u8>),
    /// An HTTP client (HTTP is on): the bytes read so far.
    Http(Vec<u8>),
}

/// Reads the first byte if the caller has not (under the handshake deadline) and tells SOCKS
/// from HTTP. With HTTP off, a non-SOCKS client is closed at once, nothing sent, with one
/// warning a minute at most in the log (a misconfigured client retries in a loop).
pub(crate) async fn sniff(
    shared: &Shared,
    client: &mut TunnelStream,
    mut buf: Vec<u8>,
    deadline: Instant,
    end: &mut End,
) -> Result<Sniffed, SessionError> {
    if buf.is_empty() {
        buf.reserve(512);
        match tokio::time::timeout_at(deadline, client.read_buf(&mut buf)).await {
            Ok(Ok(0)) => {
                inc(&shared.stats.handshake_client_gone);
                return Err(SessionError::ClientClosed);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                inc(&shared.stats.handshake_client_gone);
                return Err(SessionError::ClientIo(e));
            }
            Err(_) => {
                inc(&shared.stats.handshake_timeouts);
                return Err(SessionError::HandshakeTimeout(
                    shared.config.handshake_timeout,
                ));
            }
        }
    }
    match buf.first() {
        Some(4 | 5) | None => Ok(Sniffed::Socks(buf)),
        Some(_) if shared.config.http => {
            end.http = true;
            Ok(Sniffed::Http(buf))
        }
        Some(_) => {
            end.http = true;
            inc(&shared.stats.handshake_protocol_errors);
            if warning_due() {
                tracing::warn!(
                    "a client sent an HTTP (or other non-SOCKS) request and HTTP proxying is \
                     turned off (--no-http): closed without an answer; further ones are \
                     logged at debug level for a minute"
                );
            }
            Err(SessionError::Http(HttpError::Disabled))
        }
    }
}

/// Whether the rate-limited "HTTP is off" warning may be written now: once a minute.
fn warning_due() -> bool {
    static START: OnceLock<StdInstant> = OnceLock::new();
    static LAST: AtomicU64 = AtomicU64::new(u64::MAX);
    let now = START.get_or_init(StdInstant::now).elapsed().as_secs();
    let last = LAST.load(Ordering::Relaxed);
    (last == u64::MAX || now >= last.saturating_add(60))
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// The connection an HTTP client opened.
pub(crate) struct Connection {
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// The server's address it reached.
    pub(crate) local: SocketAddr,
    /// What was read from it so far (at least the first byte).
    pub(crate) already_read: Vec<u8>,
    /// When the first head (and a CONNECT's credentials check) must be done.
    pub(crate) deadline: Instant,
}

/// Serves an HTTP client: a CONNECT tunnel (handed back to relay, like a SOCKS one) or
/// forwarded requests until the client closes.
pub(crate) async fn serve(
    shared: &Arc<Shared>,
    mut client: TunnelStream,
    connection: Connection,
    end: &mut End,
) -> Result<Option<Tunnel>, SessionError> {
    let Connection {
        peer,
        local,
        mut already_read,
        deadline,
    } = connection;
    let first =
        tokio::time::timeout_at(deadline, read_head(shared, &mut client, &mut already_read)).await;
    let head = match first {
        Ok(Ok(head)) => head,
        Ok(Err(e)) => return Err(refuse(&mut client, e).await),
        Err(_) => {
            inc(&shared.stats.handshake_timeouts);
            return Err(SessionError::HandshakeTimeout(
                shared.config.handshake_timeout,
            ));
        }
    };
    if !head.connect {
        return forward::serve(Arc::clone(shared), client, peer, local, already_read, end).await;
    }

    let pending = already_read.split_off(head.len);
    drop(already_read);
    let opened = open_connect(shared, peer, local, head, deadline, end).await;
    let target = match opened {
        Ok(connected) => connected.stream,
        Err(e) => return Err(refuse(&mut client, e).await),
    };
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .map_err(SessionError::ClientIo)?;
    let session = end.session().expect("open_connect began the session");
    connect::granted(shared, session, client, target, pending)
        .await
        .map(Some)
}

/// Reads until the first request head is complete.
async fn read_head(
    shared: &Shared,
    client: &mut TunnelStream,
    buf: &mut Vec<u8>,
) -> Result<head::Head, SessionError> {
    // A head ends with a line: parsing only when a line has ended (or the buffer is full)
    // keeps a head trickled in byte by byte linear to read, not quadratic. The lines are
    // bounded too: a head of more than 128 fields is refused.
    let mut unparsed: usize = 0;
    loop {
        // Empty lines before the request line are ignored (RFC 9112 §2.2): dropped, not
        // parsed again with every line that follows.
        let empty_lines = buf
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        if empty_lines > 0 {
            buf.drain(..empty_lines);
            unparsed = unparsed.saturating_sub(empty_lines);
        }
        let line_ended = buf.get(unparsed..).is_some_and(|new| new.contains(&b'\n'));
        if line_ended || buf.len() >= head::MAX_HEAD {
            match head::parse(buf) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(e) => {
                    inc(&shared.stats.handshake_protocol_errors);
                    return Err(SessionError::Http(e));
                }
            }
        }
        unparsed = buf.len();
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity().clamp(512, head::MAX_HEAD));
        }
        match client.read_buf(buf).await {
            Ok(0) => {
                inc(&shared.stats.handshake_client_gone);
                return Err(SessionError::ClientClosed);
            }
            Ok(_) => {}
            Err(e) => {
                inc(&shared.stats.handshake_client_gone);
                return Err(SessionError::ClientIo(e));
            }
        }
    }
}

/// A CONNECT from the connection's first head: credentials (under the handshake deadline),
/// policy, accounting, then the egress.
async fn open_connect(
    shared: &Shared,
    peer: SocketAddr,
    local: SocketAddr,
    head: head::Head,
    deadline: Instant,
    end: &mut End,
) -> Result<crate::server::Connected, SessionError> {
    let target = head::authority_target(&head.target).map_err(SessionError::Http)?;
    let user = tokio::time::timeout_at(
        deadline,
        authenticate(shared, peer, head.proxy_authorization.as_deref()),
    )
    .await
    .map_err(|_| SessionError::HandshakeTimeout(shared.config.handshake_timeout))??;
    let (session, meter) = end.begin(http_session(peer, local, user, target));
    record_span(session);
    meter.guard = admit(shared, session)?;
    connect::dial(shared, session)
        .await
        .map_err(SessionError::Egress)
}

/// The session an HTTP request is: a CONNECT to its target, marked as HTTP.
fn http_session(
    peer: SocketAddr,
    local: SocketAddr,
    user: Option<String>,
    target: TargetAddr,
) -> Session {
    Session {
        client: peer,
        local,
        user,
        version: Version::V5,
        http: true,
        command: Command::Connect,
        target,
    }
}

fn record_span(session: &Session) {
    let span = tracing::Span::current();
    if let Some(user) = &session.user {
        span.record("user", user.as_str());
    }
    span.record("target", field::display(&session.target));
}

/// The policy's and the accounting's verdict on a session: the accounting's guard, or the
/// denial (counted and heard by the accounting).
fn admit(shared: &Shared, session: &Session) -> Result<Option<Box<dyn TunnelGuard>>, SessionError> {
    crate::server::admission::admit(shared, session).map_err(SessionError::Denied)
}

/// Checks `Proxy-Authorization` when the server has users: the user's name, `None` without
/// users (the field is then ignored, and never forwarded).
async fn authenticate(
    shared: &Shared,
    peer: SocketAddr,
    proxy_authorization: Option<&[u8]>,
) -> Result<Option<String>, SessionError> {
    let Some(auth) = &shared.config.auth else {
        return Ok(None);
    };
    let Some(value) = proxy_authorization else {
        return Err(SessionError::ProxyAuthRequired);
    };
    let failed = |claimed: &[u8]| {
        inc(&shared.stats.auth_failures);
        if let Some(accounting) = &shared.config.accounting {
            accounting.record(&Event::AuthFailed { client: peer });
        }
        // As for SOCKS: what a client typed as its name may be a password typed in the
        // wrong field, so the log gets a keyed hash.
        SessionError::AuthenticationFailed(claimed_user_hash(claimed))
    };
    let Some(credentials) = head::basic_credentials(value) else {
        return Err(failed(value));
    };
    match auth.authenticate(&credentials).await {
        Some(name) => Ok(Some(printable_user(name.as_bytes()))),
        None => Err(failed(credentials.username())),
    }
}

/// The reason phrase of the statuses this module sends.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        407 => "Proxy Authentication Required",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        504 => "Gateway Timeout",
        _ => "Internal Server Error",
    }
}

/// The one-line body of a refusal: the error, for the user reading curl's output.
fn reason_line(error: &SessionError) -> String {
    let mut line = error.to_string().replace(['\r', '\n'], " ");
    line.push('\n');
    line
}

/// Answers a refused request on the raw connection (no hyper there yet) and closes it
/// without a reset; hands the error back.
async fn refuse(client: &mut TunnelStream, error: SessionError) -> SessionError {
    let status = match &error {
        SessionError::Http(HttpError::Disabled)
        | SessionError::ClientClosed
        | SessionError::ClientIo(_) => return error,
        e => status_of(e),
    };
    let body = reason_line(&error);
    let challenge = if status == 407 {
        "Proxy-Authenticate: Basic realm=\"socksmith\"\r\n"
    } else {
        ""
    };
    let response = format!(
        "HTTP/1.1 {status} {}\r\n{challenge}Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason_phrase(status),
        body.len(),
    );
    if client.write_all(response.as_bytes()).await.is_ok() {
        linger(client).await;
    }
    error
}
