//! The admin HTTP server (hyper, HTTP/1.1): the routes, the bearer-token check, and the
//! accept loop.
//!
//! Routes, all `GET`:
//! - `/`: the status page (`page.html`, self-contained: its script fetches `/api/summary`);
//! - `/metrics`: OpenMetrics text when `Accept` asks for it, else the Prometheus text
//!   format 0.0.4;
//! - `/api/sessions`: `{"sessions": [{"client", "user", "command", "target", "started",
//!   "bytes_up", "bytes_down"}]}`;
//! - `/api/summary`: what the page shows (totals, live and finished tunnels, refusals,
//!   throughput samples).
//!
//! With a token every request needs `Authorization: Bearer TOKEN`, else 401. `/` without it
//! is a 401 too, but its body is the page, which asks for the token and sends it on its own
//! requests: a browser cannot put a bearer header on the page's own address.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::accounting::AdminAccounting;
use super::live::SAMPLE_EVERY;
use super::metrics::{CONTENT_TYPE as METRICS_CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE};
use super::TokenSlot;

/// The status page: one file, nothing loaded from elsewhere.
const PAGE: &str = include_str!("page.html");

/// The page may run its own inline script and style and fetch from this server, nothing
/// else: no outside resource can be loaded even if the page were changed to ask.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
                           style-src 'unsafe-inline'; connect-src 'self'; img-src data:; \
                           base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Admin connections served at once; more wait in the kernel's queue.
const MAX_CONNECTIONS: usize = 64;

/// Time a client has to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an admin connection is served.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lifetime {
    /// The longest a connection is served (keep-alive included): a client that stops
    /// reading its answers, or trickles requests, would otherwise hold one of the
    /// [`MAX_CONNECTIONS`] slots for good, and 64 of them would lock everyone out, token or
    /// not. Scrapers and the page simply open a new connection.
    pub(super) serve: Duration,
    /// Then, time left to finish the answer being written.
    pub(super) closing: Duration,
}

impl Lifetime {
    pub(super) const DEFAULT: Lifetime = Lifetime {
        serve: Duration::from_secs(60),
        closing: Duration::from_secs(5),
    };
}

/// What every request reads.
#[derive(Debug)]
pub(super) struct State {
    pub(super) accounting: AdminAccounting,
    pub(super) token: TokenSlot,
    pub(super) started: Instant,
}

type Reply = Response<Full<Bytes>>;

/// Serves `listener` until the process ends, each connection for at most `lifetime`.
pub(super) async fn serve(listener: TcpListener, state: Arc<State>, lifetime: Lifetime) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return; // never closed
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "admin: accept failed; retrying shortly");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(respond(&state, &request)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let served = match tokio::time::timeout(lifetime.serve, connection.as_mut()).await {
                Ok(served) => served,
                Err(_) => {
                    connection.as_mut().graceful_shutdown();
                    match tokio::time::timeout(lifetime.closing, connection).await {
                        Ok(served) => served,
                        Err(_) => {
                            tracing::debug!(client = %peer, "admin: connection closed: it did not take its answers in time");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(client = %peer, error = %e, "admin: connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// Whether the request's `Accept` names OpenMetrics.
fn accepts_openmetrics(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .any(|accept| {
            accept.to_str().is_ok_and(|a| {
                a.to_ascii_lowercase()
                    .contains("application/openmetrics-text")
            })
        })
}

fn respond(state: &State, request: &Request<Incoming>) -> Reply {
    let path = request.uri().path();
    let authorized = state.token.admits(bearer(request));
    if !authorized {
        let mut reply = if path == "/" {
            page(StatusCode::UNAUTHORIZED)
        } else {
            text(
                StatusCode::UNAUTHORIZED,
                "this admin server needs `Authorization: Bearer TOKEN` (the --admin-token)\n",
            )
        };
        reply.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"socksmith admin\""),
        );
        return reply;
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut reply = text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here\n");
        reply
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return reply;
    }
    match path {
        "/" => page(StatusCode::OK),
        // OpenMetrics for a scraper that asks for it (Prometheus does), the Prometheus text
        // format 0.0.4 for everyone else, as the official client libraries do.
        "/metrics" if accepts_openmetrics(request) => {
            let body = state.accounting.metrics.encode();
            with_type(StatusCode::OK, body, METRICS_CONTENT_TYPE)
        }
        "/metrics" => {
            let body = state.accounting.metrics.encode_prometheus_text();
            with_type(StatusCode::OK, body, PROMETHEUS_TEXT_CONTENT_TYPE)
        }
        "/api/sessions" => json_reply(&json!({ "sessions": state.accounting.live.sessions() })),
        "/api/summary" => json_reply(&summary(state)),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /, /metrics, /api/sessions or /api/summary\n",
        ),
    }
}

/// The token after `Bearer ` in the Authorization header.
fn bearer(request: &Request<Incoming>) -> Option<&[u8]> {
    let value = request.headers().get(header::AUTHORIZATION)?.as_bytes();
    let scheme = value.get(..7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| value.get(7..))
        .flatten()
}

fn summary(state: &State) -> serde_json::Value {
    let metrics = &state.accounting.metrics;
    let stats = metrics.server_stats();
    let live = &state.accounting.live;
    let bytes = metrics.bytes_total();
    json!({
        "uptime_seconds": state.started.elapsed().as_secs(),
        "sessions_active": stats.sessions_active,
        "tunnels_active": stats.tunnels_active,
        "connections_accepted": stats.sessions_accepted,
        "bytes_up": bytes.up,
        "bytes_down": bytes.down,
        "auth_failures": metrics.auth_failures_total(),
        "denied": metrics.denied_total(),
        "sample_seconds": SAMPLE_EVERY.as_secs(),
        "throughput": live.throughput(),
        "sessions": live.sessions(),
        "finished": live.finished(),
        "refusals": live.refusals(),
    })
}

fn page(status: StatusCode) -> Reply {
    let mut reply = with_type(status, PAGE, "text/html; charset=utf-8");
    reply.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    reply
}

fn json_reply(value: &serde_json::Value) -> Reply {
    with_type(StatusCode::OK, value.to_string(), "application/json")
}

fn text(status: StatusCode, body: &'static str) -> Reply {
    with_type(status, body, "text/plain; charset=utf-8")
}

fn with_type(status: StatusCode, body: impl Into<Bytes>, content_type: &'static str) -> Reply {
    let mut reply = Response::new(Full::new(body.into()));
    *reply.status_mut() = status;
    let headers = reply.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    reply
}

/// The address the admin server answers on, for the log.
pub(super) fn describe(addr: SocketAddr) -> String {
    format!("http://{addr}/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::AdminToken;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    #[tokio::test]
    async fn a_client_that_never_reads_its_answers_loses_its_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            accounting: AdminAccounting::new(),
            token: TokenSlot::new(Some(AdminToken::parse("s3cret").expect("a token"))),
            started: Instant::now(),
        });
        let lifetime = Lifetime {
            serve: Duration::from_millis(300),
            closing: Duration::from_millis(200),
        };
        tokio::spawn(serve(listener, state, lifetime));
        // Pipelined requests (401s without the token), never read, until the answers fill
        // the socket buffers and the server can write no more.
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let requests = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
        for _ in 0..200 {
            let write = client.write_all(requests.as_bytes());
            match tokio::time::timeout(Duration::from_millis(200), write).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => break, // full, or already closed
            }
        }
        // Past both bounds the server has let go: draining what it wrote ends in its close,
        // not in a connection kept waiting for more requests.
        tokio::time::sleep(Duration::from_millis(800)).await;
        let mut answers = Vec::new();
        let drained =
            tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answers)).await;
        assert!(
            drained.is_ok(),
            "still open after {} bytes of answers",
            answers.len()
        );
    }
}
