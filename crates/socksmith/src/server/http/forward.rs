//! Absolute-form requests (`GET http://host/path HTTP/1.1`), forwarded with hyper.
//!
//! hyper serves the client connection (keep-alive, pipelined requests answered in order, a
//! head over 64 KiB answered `431`, malformed heads `400`) and, for each request, this module
//! checks framing, credentials, policy and accounting, then sends it on in origin-form over a
//! hyper client connection from the egress. Origin connections are kept for the next request
//! to the same origin (by the same user), so one client connection may reach one origin or
//! several. Hop-by-hop fields are removed both ways (RFC 9110 §7.6.1), `Proxy-Authorization`
//! and `Proxy-Connection` never leave, `Host` comes from the URI, and `Via` is added.
//!
//! Every byte of the client reaches hyper through `guarded` (the framer's checks); the
//! bodies that count bytes and write each request's log line are in `body`.
//!
//! A CONNECT that comes after a forwarded request on the same connection is answered through
//! hyper's upgrade, then the original stream is taken back from hyper (`downcast`), so the
//! tunnel is relayed like any other (splice for TCP).

use std::collections::hash_map::RandomState;
use std::convert::Infallible;
use std::hash::BuildHasher as _;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version as HttpVersion};
use hyper_util::rt::{TokioIo, TokioTimer};
use socksmith_proto::TargetAddr;
use tokio::time::Instant;

use crate::relay::{RelayError, TunnelStream};
use crate::server::accounting::TunnelGuard;
use crate::server::connect::{self, Tunnel};
use crate::server::error::SessionError;
use crate::server::http::body::{Counted, Finish, Logged};
use crate::server::http::guarded::{Activity, Guarded};
use crate::server::http::{
    admit, authenticate, head, http_session, reason_line, status_of, HttpError,
};
use crate::server::log::End;
use crate::server::stats::inc;
use crate::server::{Connected, Shared};
use crate::session::Session;

/// A body as it crosses the proxy either way.
type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Origin connections kept per client connection; the oldest goes first.
const MAX_ORIGINS: usize = 4;

/// Serves forwarded requests on `client` until it closes; `already_read` holds the first head
/// (read by the caller to tell it from CONNECT), replayed to hyper. Returns a tunnel when a
/// later request was a CONNECT.
pub(super) async fn serve(
    shared: Arc<Shared>,
    client: TunnelStream,
    peer: SocketAddr,
    local: SocketAddr,
    already_read: Vec<u8>,
    end: &mut End,
) -> Result<Option<Tunnel>, SessionError> {
    // Each request writes its own log line; the connection writes one only if it fails.
    end.silent = true;
    let activity = Activity::new();
    let state = Arc::new(ConnectionState {
        shared: Arc::clone(&shared),
        peer,
        local,
        origins: Mutex::new(Vec::new()),
        upgrade: Mutex::new(None),
        refused: Arc::new(Mutex::new(None)),
        token: format!("{:016x}", RandomState::new().hash_one(peer)),
        activity: activity.clone(),
    });
    let service = {
        let state = Arc::clone(&state);
        hyper::service::service_fn(move |request| Arc::clone(&state).handle(request))
    };
    let io = TokioIo::new(Guarded::new(
        client,
        &already_read,
        marker(&state.token),
        Arc::clone(&state.refused),
        activity.clone(),
    ));
    drop(already_read);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.handshake_timeout)
        // Bounds the request head (hyper's default is about 400 KiB); its smallest
        // allowed value is 8 KiB, ours is far above.
        .max_buf_size(head::MAX_HEAD)
        .keep_alive(true)
        // A client that sends its last requests and shuts down its write half still gets
        // every answer (hyper's default closes at the end of the client's stream).
        .half_close(true);
    let connection = builder.serve_connection(io, service).with_upgrades();
    let served = match shared.config.idle_timeout {
        None => connection.await,
        Some(idle) => match until_idle(connection, &activity, idle).await {
            Some(served) => served,
            None => return Err(SessionError::Relay(RelayError::IdleTimeout(idle))),
        },
    };
    let pending = state
        .upgrade
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Err(e) = served {
        // hyper has answered a bad head itself (400, 431) and closed.
        if e.is_parse() || e.is_parse_too_large() {
            inc(&shared.stats.handshake_protocol_errors);
            return Err(SessionError::Http(HttpError::Malformed(e.to_string())));
        }
        if e.is_timeout() {
            // An idle keep-alive connection, or a client too slow with its head.
            return Ok(None);
        }
        if pending.is_none() {
            tracing::debug!(error = %e, "HTTP client connection ended");
            return Ok(None);
        }
    }
    let Some(pending) = pending else {
        return Ok(None);
    };
    // A CONNECT was answered 200: take the stream back from hyper and relay it ourselves.
    let upgraded = pending
        .upgrade
        .await
        .map_err(|e| SessionError::Http(HttpError::Malformed(e.to_string())))?;
    let parts = upgraded
        .downcast::<TokioIo<Guarded>>()
        .map_err(|_| SessionError::Http(HttpError::Malformed("upgrade lost its stream".into())))?;
    let guarded = parts.io.into_inner();
    // hyper read its buffer from the stream before what the guard still holds.
    let mut first_bytes = parts.read_buf.to_vec();
    first_bytes.extend_from_slice(guarded.unread());
    let client = guarded.inner;
    end.silent = false;
    let (session, meter) = end.begin(pending.session);
    meter.guard = pending.guard;
    connect::granted(&shared, session, client, pending.target.stream, first_bytes)
        .await
        .map(Some)
}

/// What one client connection's requests share.
struct ConnectionState {
    shared: Arc<Shared>,
    peer: SocketAddr,
    local: SocketAddr,
    origins: Mutex<Vec<Origin>>,
    /// A CONNECT answered 200, waiting for hyper to hand the stream back.
    upgrade: Mutex<Option<PendingConnect>>,
    /// A head the [`Framer`](super::framing::Framer) refused, for the service that reads its marker request.
    refused: Arc<Mutex<Option<HttpError>>>,
    /// Marks the marker request as ours (a client cannot guess it).
    token: String,
    /// When the client connection last moved a byte, and whether a request is being handled.
    activity: Activity,
}

/// The request hyper reads in place of a refused head.
fn marker(token: &str) -> Vec<u8> {
    format!(
        "GET http://socksmith.invalid/ HTTP/1.1\r\nHost: socksmith.invalid\r\n\
         {REFUSED_FIELD}: {token}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// The field that carries the marker's token.
const REFUSED_FIELD: &str = "x-socksmith-refused";

/// A kept connection to an origin.
struct Origin {
    target: TargetAddr,
    user: Option<String>,
    sender: hyper::client::conn::http1::SendRequest<ProxyBody>,
}

struct PendingConnect {
    upgrade: hyper::upgrade::OnUpgrade,
    session: Session,
    guard: Option<Box<dyn TunnelGuard>>,
    target: Connected,
}

impl ConnectionState {
    async fn handle(
        self: Arc<Self>,
        mut request: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        // Not idle while a request is handled: authentication, the origin's connection and its
        // answer have deadlines of their own (a late answer gets its 504).
        let _handling = self.activity.busy();
        let started = Instant::now();
        let mut end = End::http(self.peer);
        let connect = request.method() == Method::CONNECT;
        let result = if let Some(refused) = self.refusal_marked(&request) {
            inc(&self.shared.stats.handshake_protocol_errors);
            Err(SessionError::Http(refused))
        } else if connect {
            self.connect(&mut request).await
        } else {
            self.forward(request, &mut end, started).await
        };
        let mut response = match result {
            Ok(response) => response,
            Err(e) => {
                let response = refusal(&e);
                end.finish(&self.shared, started.elapsed(), Some(&e));
                response
            }
        };
        if connect && !response.status().is_success() {
            // The framer took what follows a CONNECT for tunnel bytes and checks no more
            // heads: after a refused one, the connection must end.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        Ok(response)
    }

    /// The refusal a marker request stands for.
    fn refusal_marked(&self, request: &Request<Incoming>) -> Option<HttpError> {
        let value = request.headers().get(REFUSED_FIELD)?;
        if value.as_bytes() != self.token.as_bytes() {
            return None;
        }
        // The marker is never forwarded, whatever happens to the slot.
        let refused = self
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        Some(refused.unwrap_or_else(|| HttpError::Malformed("request refused".into())))
    }

    /// Checks a request and sends it to its origin; the answer's body carries the log line
    /// to the end of the response.
    async fn forward(
        self: &Arc<Self>,
        request: Request<Incoming>,
        end: &mut End,
        started: Instant,
    ) -> Result<Response<ProxyBody>, SessionError> {
        let shared = &*self.shared;
        let (mut parts, body) = request.into_parts();
        let (target, authority) = absolute_target(&parts.uri)?;
        let user = authenticate(
            shared,
            self.peer,
            parts
                .headers
                .get(header::PROXY_AUTHORIZATION)
                .map(HeaderValue::as_bytes),
        )
        .await?;
        let (session, meter) = end.begin(http_session(self.peer, self.local, user, target));
        meter.guard = admit(shared, session)?;
        let origin_form = origin_form(&parts.uri)?;

        let mut sender = self.origin(session).await?;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.insert(header::HOST, authority);
        parts
            .headers
            .append(header::VIA, HeaderValue::from_static("1.1 socksmith"));
        parts.uri = origin_form;
        parts.version = HttpVersion::HTTP_11;
        let up = Arc::new(AtomicU64::new(0));
        let body = Counted {
            inner: body,
            count: Arc::clone(&up),
        };
        let outbound = Request::from_parts(parts, body.boxed());
        let sent = match shared.config.idle_timeout {
            Some(limit) => tokio::time::timeout(limit, sender.send_request(outbound))
                .await
                .map_err(|_| SessionError::Http(HttpError::OriginTimeout(limit)))?,
            None => sender.send_request(outbound).await,
        };
        let response = sent.map_err(|e| SessionError::Http(HttpError::Origin(error_chain(&e))))?;
        self.keep_origin(session, sender);

        let (mut parts, body) = response.into_parts();
        // The client connection's version is hyper's business, not the origin's: an HTTP/1.0
        // origin must not end the client's keep-alive.
        parts.version = HttpVersion::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        parts
            .headers
            .append(header::VIA, HeaderValue::from_static("1.1 socksmith"));
        let logged = Logged {
            inner: body,
            down: 0,
            up,
            finish: Some(Box::new(Finish {
                shared: Arc::clone(&self.shared),
                started,
                end: std::mem::replace(end, End::http(self.peer)),
            })),
        };
        Ok(Response::from_parts(parts, logged.boxed()))
    }

    /// A kept connection to the session's origin that can take a request, or a new one.
    async fn origin(
        &self,
        session: &Session,
    ) -> Result<hyper::client::conn::http1::SendRequest<ProxyBody>, SessionError> {
        let kept = {
            let mut origins = self.origins.lock().unwrap_or_else(PoisonError::into_inner);
            origins.retain(|o| !o.sender.is_closed());
            origins
                .iter()
                .position(|o| o.target == session.target && o.user == session.user)
                .map(|i| origins.remove(i))
        };
        if let Some(mut origin) = kept {
            if origin.sender.ready().await.is_ok() {
                return Ok(origin.sender);
            }
        }
        let connected = connect::dial(&self.shared, session)
            .await
            .map_err(SessionError::Egress)?;
        // Paced by the user's rate here: the client connection may carry other users'
        // requests, an origin connection only this user's.
        let stream = connect::rate_limited_target(&self.shared, session, connected.stream);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SessionError::Http(HttpError::Origin(error_chain(&e))))?;
        // Ends when the origin closes or the last sender (this client connection's) is gone.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "origin connection ended");
            }
        });
        Ok(sender)
    }

    fn keep_origin(
        &self,
        session: &Session,
        sender: hyper::client::conn::http1::SendRequest<ProxyBody>,
    ) {
        let mut origins = self.origins.lock().unwrap_or_else(PoisonError::into_inner);
        if origins.len() >= MAX_ORIGINS {
            origins.remove(0);
        }
        origins.push(Origin {
            target: session.target.clone(),
            user: session.user.clone(),
            sender,
        });
    }

    /// A CONNECT after other requests on this connection: checked and dialed here, answered
    /// 200, then relayed by the session once hyper hands the stream back.
    async fn connect(
        self: &Arc<Self>,
        request: &mut Request<Incoming>,
    ) -> Result<Response<ProxyBody>, SessionError> {
        let shared = &*self.shared;
        let authority = request
            .uri()
            .authority()
            .ok_or_else(|| SessionError::Http(HttpError::BadTarget(request.uri().to_string())))?;
        let target = head::authority_target(authority.as_str()).map_err(SessionError::Http)?;
        let user = authenticate(
            shared,
            self.peer,
            request
                .headers()
                .get(header::PROXY_AUTHORIZATION)
                .map(HeaderValue::as_bytes),
        )
        .await?;
        let session = http_session(self.peer, self.local, user, target);
        let guard = admit(shared, &session)?;
        let connected = match connect::dial(shared, &session).await {
            Ok(c) => c,
            Err(e) => {
                let e = SessionError::Egress(e);
                // This session never reaches the relay: its log line is written here.
                let mut end = End::http(self.peer);
                end.begin(session).1.guard = guard;
                end.finish(shared, std::time::Duration::ZERO, Some(&e));
                return Ok(refusal(&e));
            }
        };
        *self.upgrade.lock().unwrap_or_else(PoisonError::into_inner) = Some(PendingConnect {
            upgrade: hyper::upgrade::on(request),
            session,
            guard,
            target: connected,
        });
        Ok(Response::new(empty()))
    }
}

/// The target and `Host` value of an absolute-form `http://` request.
fn absolute_target(uri: &Uri) -> Result<(TargetAddr, HeaderValue), SessionError> {
    let http = |e| SessionError::Http(e);
    let Some(scheme) = uri.scheme_str() else {
        return Err(http(HttpError::NotProxyRequest));
    };
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(http(HttpError::UnsupportedScheme(
            scheme.escape_default().to_string(),
        )));
    }
    let host = uri.host().ok_or(http(HttpError::NotProxyRequest))?;
    let target = head::host_target(host, uri.port_u16().unwrap_or(80)).map_err(http)?;
    // RFC 9112 §3.2.2: Host is the URI's authority without userinfo.
    let authority = match uri.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let authority = HeaderValue::from_str(&authority)
        .map_err(|_| http(HttpError::BadTarget(authority.escape_default().to_string())))?;
    Ok((target, authority))
}

/// Runs `connection` until it ends (`Some`) or, with no request being handled, no byte has
/// crossed the client connection for `idle` (`None`, and the connection is dropped). hyper's
/// own timeouts cover a request head only: a body that stops moving either way would hold the
/// connection forever.
async fn until_idle<F: std::future::Future>(
    connection: F,
    activity: &Activity,
    idle: Duration,
) -> Option<F::Output> {
    tokio::pin!(connection);
    loop {
        let deadline = activity.last() + idle;
        tokio::select! {
            served = &mut connection => return Some(served),
            () = tokio::time::sleep_until(deadline) => {
                if !activity.is_busy() && activity.last() + idle <= Instant::now() {
                    return None;
                }
            }
        }
    }
}

/// `/path?query` of an absolute URI, with `/` for an empty path (`http://host?x` asks for
/// `/?x`: RFC 9112 §3.2.1).
fn origin_form(uri: &Uri) -> Result<Uri, SessionError> {
    let path = match uri.path() {
        "" => "/",
        path => path,
    };
    let origin_form = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    origin_form.parse().map_err(|_| {
        SessionError::Http(HttpError::BadTarget(
            uri.to_string().escape_default().to_string(),
        ))
    })
}

/// Removes the fields that concern one connection only (RFC 9110 §7.6.1: "a proxy or gateway
/// MUST parse a received Connection header field before a message is forwarded and, for each
/// connection-option in this field, remove any header or trailer field(s) from the message
/// with the same name as the connection-option, and then remove the Connection header field
/// itself"), the fields the section lists as hop-by-hop, and the proxy's own credentials
/// and challenge, which never leave this hop.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

fn empty() -> ProxyBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

/// The answer to a refused request: its status, the one-line reason, and a close after it
/// when the connection cannot be trusted any more (RFC 9112 §6.1: a request framed both ways
/// MUST be followed by a close; any 400 is treated alike).
fn refusal(error: &SessionError) -> Response<ProxyBody> {
    let status = status_of(error);
    let body = reason_line(error);
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == 407 {
        headers.insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"socksmith\""),
        );
    }
    if status == 400 || status == 431 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// An error and its sources on one line.
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        line.push_str(": ");
        line.push_str(&e.to_string());
        source = e.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_form_keeps_path_and_query_and_never_leaves_the_path_empty() {
        for (absolute, origin) in [
            ("http://h", "/"),
            ("http://h?x", "/?x"),
            ("http://h:8080?a=1&b", "/?a=1&b"),
            ("http://h/p/q?x=1", "/p/q?x=1"),
            ("http://h:81/p/", "/p/"),
        ] {
            let uri: Uri = absolute.parse().expect("a valid URI");
            assert_eq!(
                origin_form(&uri).expect("an origin-form").to_string(),
                origin,
                "{absolute}"
            );
        }
    }
}
