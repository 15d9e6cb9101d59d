//! Loopback targets for a proxy to reach: TCP echo, UDP echo, a sink, a source and a tiny HTTP
//! server. Each binds port 0, runs as a tokio task of the test's runtime and stops when dropped.
//!
//! Deterministic payloads come from [`pattern`]; the HTTP server's `/bytes/N` serves exactly that,
//! so a test can check bytes that crossed a proxy without shipping fixtures.
//!
//! The accept loop, the TCP and UDP echoes and the pattern are `socksmith_bench::targets` and
//! `socksmith_bench::payload`, written once for the bench, the tests and `check`; this module adds
//! what tests need on top (peer records, per-connection totals, fixed-length sources, HTTP).
//! It knows nothing of SOCKS.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

pub use socksmith_bench::payload::pattern;
use socksmith_bench::targets::{self as shared, TargetTask};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::tools::peer_missing;

/// `127.0.0.1:0`.
pub const LOCALHOST_V4: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
/// `[::1]:0`.
pub const LOCALHOST_V6: SocketAddr = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0);

/// `[::1]:0` if this host has IPv6 loopback, else [`peer_missing`].
#[track_caller]
pub fn localhost_v6() -> Option<SocketAddr> {
    if crate::process::can_bind(LOCALHOST_V6.ip()) {
        Some(LOCALHOST_V6)
    } else {
        peer_missing("IPv6 loopback ::1 is not available on this host")
    }
}

/// `bind(127.0.0.1:0)` for a target's `start`; panics, naming `what`, if it cannot bind.
async fn start_v4<T, Fut>(bind: impl FnOnce(SocketAddr) -> Fut, what: &str) -> T
where
    Fut: std::future::Future<Output = io::Result<T>>,
{
    match bind(LOCALHOST_V4).await {
        Ok(target) => target,
        Err(e) => panic!("bind {what} on 127.0.0.1:0: {e:?}"),
    }
}

/// `bind([::1]:0)` for a target's `start_v6`: `None` (by [`peer_missing`]) where IPv6
/// loopback is unavailable; panics, naming `what`, if it cannot bind.
async fn start_v6<T, Fut>(bind: impl FnOnce(SocketAddr) -> Fut, what: &str) -> Option<T>
where
    Fut: std::future::Future<Output = io::Result<T>>,
{
    let addr = localhost_v6()?;
    match bind(addr).await {
        Ok(target) => Some(target),
        Err(e) => panic!("bind {what} on [::1]:0: {e:?}"),
    }
}

/// Accepts on `listener` until dropped, recording each peer address, with `handle` running each
/// connection in a task the accept loop owns.
fn serve_tcp<F, Fut>(
    listener: TcpListener,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    handle: F,
) -> TargetTask
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let record = move |peer| {
        peers
            .lock()
            .expect("peers lock is never poisoned")
            .push(peer)
    };
    shared::serve_tcp(listener, record, handle)
}

/// A TCP echo server: sends back what it reads; on EOF it shuts down its write half.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    _task: TargetTask,
}

impl EchoServer {
    /// Starts on `127.0.0.1:0`.
    pub async fn start() -> Self {
        start_v4(Self::bind, "a TCP echo server").await
    }

    /// Starts on `[::1]:0`; `None` (by [`peer_missing`]) where IPv6 loopback is unavailable.
    pub async fn start_v6() -> Option<Self> {
        start_v6(Self::bind, "a TCP echo server").await
    }

    /// Starts on `addr`.
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let peers = Arc::new(Mutex::new(Vec::new()));
        let task = serve_tcp(listener, peers.clone(), shared::echo);
        Ok(Self {
            addr,
            peers,
            _task: task,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections it has accepted.
    pub fn accepted(&self) -> usize {
        self.peers
            .lock()
            .expect("peers lock is never poisoned")
            .len()
    }

    /// The source addresses of the connections it accepted (the proxy's outgoing side).
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers
            .lock()
            .expect("peers lock is never poisoned")
            .clone()
    }
}

/// A TCP server that reads each connection to EOF, then writes the byte count as text (`"N\n"`)
/// and closes. The answer only arrives if the client's half-close reached the server while the
/// other direction stayed open, so through a proxy this is a half-close test.
#[derive(Debug)]
pub struct SinkServer {
    addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    totals: tokio::sync::Mutex<mpsc::UnboundedReceiver<u64>>,
    _task: TargetTask,
}

impl SinkServer {
    /// Starts on `addr` (e.g. [`LOCALHOST_V4`]).
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::unbounded_channel();
        let task = serve_tcp(listener, peers.clone(), move |mut stream| {
            let tx = tx.clone();
            async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut total = 0u64;
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                }
                let _ = tx.send(total);
                let _ = stream.write_all(format!("{total}\n").as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        Ok(Self {
            addr,
            peers,
            totals: tokio::sync::Mutex::new(rx),
            _task: task,
        })
    }

    /// Starts on `127.0.0.1:0`.
    pub async fn start() -> Self {
        start_v4(Self::bind, "a TCP sink").await
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections it has accepted.
    pub fn accepted(&self) -> usize {
        self.peers
            .lock()
            .expect("peers lock is never poisoned")
            .len()
    }

    /// Waits for the next connection to end (EOF or error) and returns the bytes it received.
    /// Bound the wait with [`crate::process::within`].
    pub async fn next_total(&self) -> u64 {
        self.totals
            .lock()
            .await
            .recv()
            .await
            .expect("the sink task lives as long as the SinkServer")
    }
}

/// A TCP server that writes [`pattern`]`(len)` to each connection, then shuts down its write half
/// and drains the connection until the client closes.
#[derive(Debug)]
pub struct SourceServer {
    addr: SocketAddr,
    len: usize,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    _task: TargetTask,
}

impl SourceServer {
    /// Starts on `addr`, serving `len` bytes per connection.
    pub async fn bind(addr: SocketAddr, len: usize) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let peers = Arc::new(Mutex::new(Vec::new()));
        let data: Arc<[u8]> = pattern(len).into();
        let task = serve_tcp(listener, peers.clone(), move |mut stream| {
            let data = data.clone();
            async move {
                if stream.write_all(&data).await.is_ok() {
                    let _ = stream.shutdown().await;
                    let mut sink = [0u8; 4096];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                }
            }
        });
        Ok(Self {
            addr,
            len,
            peers,
            _task: task,
        })
    }

    /// Starts on `127.0.0.1:0`.
    pub async fn start(len: usize) -> Self {
        start_v4(|addr| Self::bind(addr, len), "a TCP source").await
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bytes it sends per connection ([`pattern`] of this length).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it sends nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many connections it has accepted.
    pub fn accepted(&self) -> usize {
        self.peers
            .lock()
            .expect("peers lock is never poisoned")
            .len()
    }
}

/// A UDP echo server: sends each datagram back to its sender.
#[derive(Debug)]
pub struct UdpEchoServer {
    addr: SocketAddr,
    senders: Arc<Mutex<Vec<SocketAddr>>>,
    _task: TargetTask,
}

impl UdpEchoServer {
    /// Starts on `127.0.0.1:0`.
    pub async fn start() -> Self {
        start_v4(Self::bind, "a UDP echo server").await
    }

    /// Starts on `[::1]:0`; `None` (by [`peer_missing`]) where IPv6 loopback is unavailable.
    pub async fn start_v6() -> Option<Self> {
        start_v6(Self::bind, "a UDP echo server").await
    }

    /// Starts on `addr`.
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        let socket = UdpSocket::bind(addr).await?;
        let addr = socket.local_addr()?;
        let senders = Arc::new(Mutex::new(Vec::new()));
        let seen = senders.clone();
        let task = shared::serve_udp_echo(socket, move |from| {
            seen.lock()
                .expect("senders lock is never poisoned")
                .push(from)
        });
        Ok(Self {
            addr,
            senders,
            _task: task,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many datagrams it has echoed.
    pub fn received(&self) -> usize {
        self.senders
            .lock()
            .expect("senders lock is never poisoned")
            .len()
    }

    /// The source address of each datagram it got (the proxy's UDP relay side).
    pub fn senders(&self) -> Vec<SocketAddr> {
        self.senders
            .lock()
            .expect("senders lock is never poisoned")
            .clone()
    }
}

/// The body of `GET /` on [`HttpServer`].
pub const HTTP_ROOT_BODY: &str = "hello from socksmith-testkit\n";

/// Largest `N` that `/bytes/N` serves.
pub const HTTP_MAX_BYTES: usize = 64 * 1024 * 1024;

/// A tiny HTTP/1.1 server: `GET /` answers [`HTTP_ROOT_BODY`], `GET /bytes/N` answers
/// [`pattern`]`(N)`, anything else 404. One request per connection (`Connection: close`).
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    requests: Arc<Mutex<Vec<String>>>,
    _task: TargetTask,
}

impl HttpServer {
    /// Starts on `127.0.0.1:0`.
    pub async fn start() -> Self {
        start_v4(Self::bind, "an HTTP server").await
    }

    /// Starts on `[::1]:0`; `None` (by [`peer_missing`]) where IPv6 loopback is unavailable.
    pub async fn start_v6() -> Option<Self> {
        start_v6(Self::bind, "an HTTP server").await
    }

    /// Starts on `addr`.
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let peers = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let task = serve_tcp(listener, peers.clone(), move |stream| {
            let log = log.clone();
            async move {
                let _ = serve_http(stream, log).await;
            }
        });
        Ok(Self {
            addr,
            peers,
            requests,
            _task: task,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/PATH` with the numeric address (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `http://HOST:PORT/PATH`, for a name the proxy resolves (e.g. `localhost`).
    pub fn url_with_host(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{}", self.addr.port(), path)
    }

    /// How many connections it has accepted.
    pub fn accepted(&self) -> usize {
        self.peers
            .lock()
            .expect("peers lock is never poisoned")
            .len()
    }

    /// The request heads it received, one string each (request line and headers).
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .expect("requests lock is never poisoned")
            .clone()
    }
}

async fn serve_http(mut stream: TcpStream, log: Arc<Mutex<Vec<String>>>) -> io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let request_line = head.lines().next().unwrap_or_default().to_owned();
    log.lock()
        .expect("requests lock is never poisoned")
        .push(head.trim_end().to_owned());
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, body) = match (method, path) {
        ("GET", "/") => ("200 OK", HTTP_ROOT_BODY.as_bytes().to_vec()),
        ("GET", p) => match p
            .strip_prefix("/bytes/")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) if n <= HTTP_MAX_BYTES => ("200 OK", pattern(n)),
            _ => ("404 Not Found", b"not found\n".to_vec()),
        },
        _ => ("405 Method Not Allowed", b"only GET\n".to_vec()),
    };
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_has_a_prime_period() {
        let p = pattern(600);
        assert_eq!(p[0], 0);
        assert_eq!(p[250], 250);
        assert_eq!(p[251], 0);
        assert_eq!(p.len(), 600);
    }

    #[tokio::test]
    async fn echo_server_echoes_and_half_closes() {
        let echo = EchoServer::start().await;
        let mut s = TcpStream::connect(echo.addr()).await.expect("connect");
        s.write_all(b"ping").await.expect("write");
        s.shutdown().await.expect("shutdown");
        let mut back = Vec::new();
        s.read_to_end(&mut back).await.expect("read");
        assert_eq!(back, b"ping");
        assert_eq!(echo.accepted(), 1);
    }

    #[tokio::test]
    async fn udp_echo_server_echoes() {
        let echo = UdpEchoServer::start().await;
        let s = UdpSocket::bind(LOCALHOST_V4).await.expect("bind");
        s.send_to(b"dgram", echo.addr()).await.expect("send");
        let mut buf = [0u8; 16];
        let (n, from) = s.recv_from(&mut buf).await.expect("recv");
        assert_eq!((&buf[..n], from), (&b"dgram"[..], echo.addr()));
    }

    #[tokio::test]
    async fn http_server_serves_root_bytes_and_404() {
        let http = HttpServer::start().await;
        for (path, want_status, want_body) in [
            ("/", "200", HTTP_ROOT_BODY.as_bytes().to_vec()),
            ("/bytes/1000", "200", pattern(1000)),
            ("/nope", "404", b"not found\n".to_vec()),
        ] {
            let mut s = TcpStream::connect(http.addr()).await.expect("connect");
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .expect("write");
            let mut resp = Vec::new();
            s.read_to_end(&mut resp).await.expect("read");
            let split = resp
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("a head")
                + 4;
            let head = String::from_utf8_lossy(&resp[..split]);
            assert!(
                head.starts_with(&format!("HTTP/1.1 {want_status}")),
                "{head}"
            );
            assert_eq!(resp[split..], want_body[..]);
        }
        assert_eq!(http.requests().len(), 3);
    }

    #[tokio::test]
    async fn sink_counts_and_source_sends_the_pattern() {
        let sink = SinkServer::start().await;
        let mut s = TcpStream::connect(sink.addr()).await.expect("connect");
        s.write_all(&pattern(10_000)).await.expect("write");
        s.shutdown().await.expect("half-close");
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.expect("read the count");
        assert_eq!(answer, "10000\n");
        assert_eq!(sink.next_total().await, 10_000);

        let source = SourceServer::start(5000).await;
        let mut s = TcpStream::connect(source.addr()).await.expect("connect");
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, pattern(5000));
    }
}
