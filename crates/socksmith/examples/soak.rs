//! The load driver of `scripts/soak`: a long mixed load against release `socksmith serve`
//! processes, driven through this crate's client library, with every byte checked.
//!
//! ```sh
//! scripts/soak 30        # builds in release mode and runs this for 30 minutes
//! cargo run --release -p socksmith --example soak -- --seconds 120 --socksmith target/release/socksmith
//! ```
//!
//! It starts three servers on 127.0.0.1:0 and [::1]:0 (one open, one with a user, one with a
//! blocklist and first-flight sniffing), plus its own targets on loopback (TCP echo, a
//! pseudo-random stream source that can also reset, UDP echo, an HTTP origin, and a trap that
//! no byte may ever reach), and runs `--workers` tasks that each repeat a weighted mix of
//! operations until the time is up: echo tunnels of 1 byte to 4 MiB with half-close over IPv4,
//! IPv6 and names, through SOCKS4, 4a, 5, 5h and HTTP CONNECT (on the SOCKS port); short
//! connect-close cycles; UDP round trips; the client resetting mid-download; the target
//! resetting mid-download; garbage handshakes; refused ports; wrong passwords; absolute-form
//! HTTP requests on keep-alive connections; and listed names, asked for by name or hidden
//! behind an address in an HTTP `Host` header or a TLS ClientHello, which must be refused.
//!
//! Every few seconds it prints a line with the operations, bytes, unexpected errors and each
//! server's descriptors and RSS; at the end a summary. It exits non-zero on any unexpected error
//! (lost or altered bytes, a wrong refusal, an operation stuck for a minute, a server that
//! died or logged a panic, a byte that reached the trap), when a server's descriptors do not come back to its idle count plus
//! [`FD_SLACK`] once the load stops, or when its RSS grew by more than [`RSS_GROWTH_LIMIT`]
//! between the end of the warm-up and the end. Nothing leaves loopback.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socksmith::client::{Client, MAX_UDP_HEADER_LEN};
use socksmith_proto::{ReplyCode, TargetAddr};
use socksmith_testkit::raw::{socks5_auth, Credentials, RawError};
use socksmith_testkit::socksmith::SocksmithServer;
use socksmith_testkit::{EchoServer, UdpEchoServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Descriptors a server may hold above its idle count once the load has stopped: the splice
/// relay keeps up to 16 idle pipes (two descriptors each) for reuse.
const FD_SLACK: usize = 32;
/// How much a server's RSS may grow from the end of the warm-up to the end of the run.
const RSS_GROWTH_LIMIT: u64 = 32 << 20;
/// An operation taking longer than this is stuck: an unexpected error.
const OP_DEADLINE: Duration = Duration::from_secs(60);
/// How often a status line is printed.
const REPORT_EVERY: Duration = Duration::from_secs(5);
/// The handshake deadline given to the servers (garbage that looks like a prefix waits for it).
const HANDSHAKE_TIMEOUT: &str = "5s";
const USER: &str = "soak";
/// Where wrong passwords come from: other loopback addresses than every other client's, so
/// that the login back-off (per address, by design) shows it spares the others. One address
/// guesses persistently and is soon throttled past the handshake deadline; the rest take
/// turns and stay within the free failures, so that most guesses are answered at once.
const GUESSER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const TYPO_ADDRESSES: u8 = 200;
const PASSWORD: &str = "soak-password";

/// The operations of the mix, with their weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Echo,
    ConnectClose,
    Udp,
    ClientReset,
    TargetReset,
    Garbage,
    Refused,
    WrongPassword,
    HttpRequest,
    Blocked,
}

const MIX: [(Op, u32); 10] = [
    (Op::Echo, 30),
    (Op::ConnectClose, 20),
    (Op::Udp, 10),
    (Op::ClientReset, 8),
    (Op::TargetReset, 8),
    (Op::Garbage, 10),
    (Op::Refused, 8),
    (Op::WrongPassword, 6),
    (Op::HttpRequest, 8),
    (Op::Blocked, 8),
];

/// The blocklist server's list: the names the captured requests below carry, plus filler
/// so that lookups walk a list of a realistic size.
/// One line in each format the lists come in: hosts, adblock, a bare domain.
const LISTED: [&str; 3] = [
    "0.0.0.0 ads.example.com",
    "||www.blocked.test^",
    "ads.soak.test",
];
const FILLER_NAMES: usize = 100_000;
/// Captured first flights naming listed hosts: curl's request head, Python's and OpenSSL's
/// ClientHellos.
const LISTED_FIRST_FLIGHTS: [&[u8]; 3] = [
    include_bytes!("../../socksmith-proto/tests/vectors/curl-get-ads.example.com.http"),
    include_bytes!("../../socksmith-proto/tests/vectors/python-ssl-sni-ads.example.com.bin"),
    include_bytes!("../../socksmith-proto/tests/vectors/openssl-s_client-sni-www.blocked.test.bin"),
];

/// Echo sizes, from one byte to 4 MiB, with weights (big transfers are rarer).
const ECHO_SIZES: [(usize, u32); 8] = [
    (1, 10),
    (17, 10),
    (512, 10),
    (4096, 10),
    (65_536, 8),
    (300_000, 4),
    (1 << 20, 2),
    (4 << 20, 1),
];

/// A small, seedable pseudo-random generator (xorshift64*): for picking operations and for
/// payloads that are different in every tunnel, so that no misplaced chunk can match.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<T: Copy>(&mut self, weighted: &[(T, u32)]) -> T {
        let total: u32 = weighted.iter().map(|(_, w)| w).sum();
        let mut at = self.below(u64::from(total)) as u32;
        for &(item, weight) in weighted {
            if at < weight {
                return item;
            }
            at -= weight;
        }
        weighted[0].0
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.fill(&mut v);
        v
    }
}

/// The byte stream the source target sends for `seed`; the reader regenerates it to check.
/// Its chunks are whole 8-byte words, so reading and writing must agree on word boundaries:
/// both sides generate it in chunks of [`STREAM_CHUNK`].
const STREAM_CHUNK: usize = 16 * 1024;

/// Checks bytes read from a seeded stream as they arrive, whatever the read sizes.
struct StreamCheck {
    rng: Rng,
    chunk: Vec<u8>,
    used: usize,
    checked: u64,
}

impl StreamCheck {
    fn new(seed: u64) -> Self {
        StreamCheck {
            rng: Rng::new(seed),
            chunk: vec![0; STREAM_CHUNK],
            used: STREAM_CHUNK,
            checked: 0,
        }
    }

    fn check(&mut self, mut got: &[u8]) -> Result<(), String> {
        while !got.is_empty() {
            if self.used == STREAM_CHUNK {
                self.rng.fill(&mut self.chunk);
                self.used = 0;
            }
            let n = got.len().min(STREAM_CHUNK - self.used);
            if got[..n] != self.chunk[self.used..self.used + n] {
                return Err(format!(
                    "stream bytes differ after {} good ones",
                    self.checked
                ));
            }
            self.used += n;
            self.checked += n as u64;
            got = &got[n..];
        }
        Ok(())
    }
}

/// The loopback targets.
struct Targets {
    /// The TCP echo server's port, on 127.0.0.1 and on ::1 (so `localhost` reaches it on both).
    echo_port: u16,
    _echo: (EchoServer, EchoServer),
    udp4: UdpEchoServer,
    udp6: UdpEchoServer,
    /// The source: after a 17-byte request (mode, seed, length), mode 0 streams the seed's
    /// bytes until the reader goes; mode 1 sends `length` of them and resets the connection.
    source: SocketAddr,
    /// An HTTP/1.1 origin: `GET /SEED/LENGTH` answers LENGTH bytes of SEED's stream, with
    /// keep-alive.
    origin: SocketAddr,
    /// A target that only requests the blocklist refuses are sent to: it counts every byte it
    /// receives, and any is an error.
    trap: SocketAddr,
    trap_bytes: Arc<AtomicU64>,
}

async fn start_targets() -> Result<Targets, String> {
    let mut echo = None;
    for _ in 0..50 {
        let v4 = EchoServer::bind((Ipv4Addr::LOCALHOST, 0).into())
            .await
            .map_err(|e| format!("bind the echo server: {e}"))?;
        let port = v4.addr().port();
        if let Ok(v6) = EchoServer::bind((Ipv6Addr::LOCALHOST, port).into()).await {
            echo = Some((port, v4, v6));
            break;
        }
    }
    let (echo_port, echo4, echo6) =
        echo.ok_or("no port free on both 127.0.0.1 and ::1 for the echo server")?;
    let udp4 = UdpEchoServer::bind((Ipv4Addr::LOCALHOST, 0).into())
        .await
        .map_err(|e| format!("bind UDP echo: {e}"))?;
    let udp6 = UdpEchoServer::bind((Ipv6Addr::LOCALHOST, 0).into())
        .await
        .map_err(|e| format!("bind UDP echo on ::1: {e}"))?;
    let source = serve_tcp("the source", serve_source).await?;
    let origin = serve_tcp("the HTTP origin", serve_origin).await?;
    let trap_bytes = Arc::new(AtomicU64::new(0));
    let counter = trap_bytes.clone();
    let trap = serve_tcp("the trap", move |mut stream| {
        let counter = counter.clone();
        async move {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stream.read(&mut buf).await {
                counter.fetch_add(n as u64, Relaxed);
            }
        }
    })
    .await?;
    Ok(Targets {
        echo_port,
        _echo: (echo4, echo6),
        udp4,
        udp6,
        source,
        origin,
        trap,
        trap_bytes,
    })
}

/// A loopback TCP target (`what`, for the error) that runs `handle` for every connection.
async fn serve_tcp<F, Fut>(what: &str, handle: F) -> Result<SocketAddr, String>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(|e| format!("bind {what}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream));
        }
    });
    Ok(addr)
}

/// Writes `len` bytes of `seed`'s stream, in the chunks [`StreamCheck`] expects.
async fn write_stream(stream: &mut TcpStream, seed: u64, mut len: u64) -> std::io::Result<()> {
    let mut rng = Rng::new(seed);
    let mut chunk = vec![0; STREAM_CHUNK];
    while len > 0 {
        rng.fill(&mut chunk);
        let n = (len as usize).min(STREAM_CHUNK);
        stream.write_all(&chunk[..n]).await?;
        len -= n as u64;
    }
    Ok(())
}

/// Serves `GET /SEED/LENGTH` requests, one after another, until the client goes.
async fn serve_origin(mut stream: TcpStream) {
    let mut head = Vec::new();
    loop {
        head.clear();
        if read_head(&mut stream, &mut head).await.is_err() {
            return;
        }
        let text = String::from_utf8_lossy(&head);
        let path = text.split(' ').nth(1).unwrap_or_default();
        let mut parts = path.trim_start_matches('/').split('/');
        let (Some(Ok(seed)), Some(Ok(len))) = (
            parts.next().map(str::parse::<u64>),
            parts.next().map(str::parse::<u64>),
        ) else {
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
            return;
        };
        let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
        if stream.write_all(answer.as_bytes()).await.is_err()
            || write_stream(&mut stream, seed, len).await.is_err()
        {
            return;
        }
    }
}

/// Reads one HTTP head (through the blank line) into `head`, byte by byte: the bytes after it
/// belong to the next message.
async fn read_head(stream: &mut TcpStream, head: &mut Vec<u8>) -> Result<(), String> {
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err("a head of over 16 KiB".to_owned());
        }
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            Ok(_) => return Err(format!("the end after {} bytes of a head", head.len())),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

async fn serve_source(mut stream: TcpStream) {
    let mut request = [0u8; 17];
    if stream.read_exact(&mut request).await.is_err() {
        return;
    }
    let seed = u64::from_le_bytes(request[1..9].try_into().expect("8 bytes"));
    if request[0] == 1 {
        let left = u64::from_le_bytes(request[9..17].try_into().expect("8 bytes"));
        if write_stream(&mut stream, seed, left).await.is_ok() {
            // A reset, not a FIN.
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        }
        return;
    }
    let mut rng = Rng::new(seed);
    let mut chunk = vec![0; STREAM_CHUNK];
    loop {
        rng.fill(&mut chunk);
        if stream.write_all(&chunk).await.is_err() {
            return;
        }
    }
}

/// A `socksmith serve` under load, and what was measured of it.
struct Server {
    name: &'static str,
    process: SocksmithServer,
    v4: SocketAddr,
    v6: SocketAddr,
    pid: u32,
    idle_fds: usize,
    start_rss: u64,
    warm_rss: Option<u64>,
    peak_fds: usize,
    peak_rss: u64,
}

async fn start_server(bin: &Path, name: &'static str, extra: &[&str]) -> Result<Server, String> {
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "[::1]:0",
        "--handshake-timeout",
        HANDSHAKE_TIMEOUT,
    ];
    args.extend_from_slice(extra);
    // One log line per session at INFO would be gigabytes in half an hour: warnings only.
    let mut process = SocksmithServer::try_start(bin, &args, &[("RUST_LOG", "warn")], 2)
        .await
        .map_err(|e| e.to_string())?;
    let v4 = *process
        .addrs()
        .iter()
        .find(|a| a.is_ipv4())
        .ok_or("no IPv4 listener")?;
    let v6 = *process
        .addrs()
        .iter()
        .find(|a| a.is_ipv6())
        .ok_or("no IPv6 listener")?;
    let pid = process.process_mut().pid();
    let idle_fds = count_fds(pid).ok_or("cannot read the server's /proc/PID/fd")?;
    let start_rss = rss(pid).ok_or("cannot read the server's /proc/PID/status")?;
    Ok(Server {
        name,
        process,
        v4,
        v6,
        pid,
        idle_fds,
        start_rss,
        warm_rss: None,
        peak_fds: idle_fds,
        peak_rss: start_rss,
    })
}

/// Writes the blocklist server's hosts file: [`LISTED`] and [`FILLER_NAMES`] more.
fn write_blocklist(path: &Path) -> Result<(), String> {
    let mut text = String::from("# socksmith soak\n127.0.0.1 localhost\n");
    for line in LISTED {
        text += line;
        text.push('\n');
    }
    for i in 0..FILLER_NAMES {
        text += &format!("0.0.0.0 filler-{i}.ads.invalid\n");
    }
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}

fn count_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// Everything the workers share.
struct Load {
    targets: Targets,
    /// Clients that log in where needed: (through the open server's v4 and v6 listeners, the
    /// user server's v4 listener) × protocols.
    clients: Vec<(String, Client, bool)>,
    udp_clients: Vec<(Client, bool)>,
    /// The user server's IPv4 listener, where [`GUESSER`] tries wrong passwords.
    password_server: SocketAddr,
    /// Clients of the blocklist server that send names (socks5h, socks4a, HTTP CONNECT).
    blocking_by_name: Vec<(String, Client)>,
    /// Clients of the blocklist server that send addresses (socks5, socks4): sniffed.
    blocking_by_address: Vec<(String, Client)>,
    /// Listeners that take absolute-form HTTP requests (every one: HTTP shares the port).
    http_proxies: Vec<SocketAddr>,
    proxies: Vec<SocketAddr>,
    ops: Mutex<BTreeMap<Op, (u64, u64)>>,
    bytes: AtomicU64,
    unexpected: AtomicU64,
    udp_resends: AtomicU64,
    messages: Mutex<Vec<String>>,
}

/// What an operation ended with, when it went as it should.
enum Done {
    /// Completed, with this many bytes checked.
    Ok(u64),
    /// Refused or reset as intended, with this many bytes checked before.
    Expected(u64),
}

impl Load {
    fn client(&self, rng: &mut Rng, need_v6_target: bool) -> (&str, &Client, bool) {
        loop {
            let (name, client, v6_proxy) =
                &self.clients[rng.below(self.clients.len() as u64) as usize];
            // SOCKS4/4a cannot carry an IPv6 target.
            if need_v6_target && name.starts_with("socks4") {
                continue;
            }
            return (name, client, *v6_proxy);
        }
    }

    async fn run(&self, op: Op, rng: &mut Rng) -> Result<Done, String> {
        match op {
            Op::Echo => self.echo(rng).await,
            Op::ConnectClose => self.connect_close(rng).await,
            Op::Udp => self.udp(rng).await,
            Op::ClientReset => self.client_reset(rng).await,
            Op::TargetReset => self.target_reset(rng).await,
            Op::Garbage => self.garbage(rng).await,
            Op::Refused => self.refused(rng).await,
            Op::WrongPassword => self.wrong_password(rng).await,
            Op::HttpRequest => self.http_request(rng).await,
            Op::Blocked => self.blocked(rng).await,
        }
    }

    /// An echo of 1 byte to 4 MiB with half-close: everything comes back, then the end.
    async fn echo(&self, rng: &mut Rng) -> Result<Done, String> {
        let size = rng.pick(&ECHO_SIZES);
        let port = self.targets.echo_port;
        let target = match rng.below(3) {
            0 => TargetAddr::Ip((Ipv4Addr::LOCALHOST, port).into()),
            1 => TargetAddr::Ip((Ipv6Addr::LOCALHOST, port).into()),
            _ => TargetAddr::domain("localhost", port).map_err(|e| e.to_string())?,
        };
        let v6_target = matches!(&target, TargetAddr::Ip(a) if a.is_ipv6());
        let (name, client, _) = self.client(rng, v6_target);
        let data = rng.bytes(size);
        let stream = client
            .connect(target.clone())
            .await
            .map_err(|e| format!("echo via {name} to {target}: connect: {e}"))?;
        let (mut r, mut w) = tokio::io::split(stream);
        let write = async {
            w.write_all(&data).await?;
            w.shutdown().await
        };
        let mut back = Vec::with_capacity(size);
        let read = r.read_to_end(&mut back);
        let (wrote, read) = tokio::join!(write, read);
        wrote.map_err(|e| format!("echo via {name} to {target}: write: {e}"))?;
        read.map_err(|e| format!("echo via {name} to {target}: read: {e}"))?;
        if back != data {
            return Err(format!(
                "echo via {name} to {target}: sent {size} bytes, got {} back{}",
                back.len(),
                if back.len() == size { ", altered" } else { "" }
            ));
        }
        Ok(Done::Ok(2 * size as u64))
    }

    /// A short cycle: connect, one byte each way (or none), close.
    async fn connect_close(&self, rng: &mut Rng) -> Result<Done, String> {
        let (name, client, v6_proxy) = self.client(rng, false);
        // IPv6 targets through the IPv6 listener, except for SOCKS4, which cannot carry them.
        let ip: IpAddr = if v6_proxy && !name.starts_with("socks4") {
            Ipv6Addr::LOCALHOST.into()
        } else {
            Ipv4Addr::LOCALHOST.into()
        };
        let target = SocketAddr::new(ip, self.targets.echo_port);
        let mut stream = client
            .connect(target)
            .await
            .map_err(|e| format!("cycle via {name}: connect: {e}"))?;
        if rng.below(2) == 0 {
            return Ok(Done::Ok(0));
        }
        let byte = [rng.next() as u8];
        stream
            .write_all(&byte)
            .await
            .map_err(|e| format!("cycle via {name}: write: {e}"))?;
        let mut back = [0u8];
        stream
            .read_exact(&mut back)
            .await
            .map_err(|e| format!("cycle via {name}: read: {e}"))?;
        if back != byte {
            return Err(format!("cycle via {name}: sent {byte:?}, got {back:?}"));
        }
        Ok(Done::Ok(2))
    }

    /// A UDP association and three datagrams (1 to 1400 bytes) echoed through it.
    async fn udp(&self, rng: &mut Rng) -> Result<Done, String> {
        let (client, v6) = &self.udp_clients[rng.below(self.udp_clients.len() as u64) as usize];
        let target = if *v6 {
            self.targets.udp6.addr()
        } else {
            self.targets.udp4.addr()
        };
        let udp = client
            .udp_associate()
            .await
            .map_err(|e| format!("UDP ASSOCIATE: {e}"))?;
        let mut buf = vec![0u8; 1400 + MAX_UDP_HEADER_LEN];
        let mut checked = 0;
        for size in [1usize, 512, 1400] {
            let payload = rng.bytes(size);
            let mut echoed = false;
            'tries: for attempt in 0..3 {
                if attempt > 0 {
                    self.udp_resends.fetch_add(1, Relaxed);
                }
                udp.send_to(&payload, target)
                    .await
                    .map_err(|e| format!("UDP send to {target}: {e}"))?;
                let deadline = Instant::now() + Duration::from_secs(2);
                while let Ok(got) = tokio::time::timeout_at(deadline, udp.recv_from(&mut buf)).await
                {
                    let (n, from) = got.map_err(|e| format!("UDP receive: {e}"))?;
                    if from != TargetAddr::Ip(target) {
                        return Err(format!("UDP answer from {from}, expected {target}"));
                    }
                    if buf[..n] == payload[..] {
                        echoed = true;
                        break 'tries;
                    }
                    // A late echo of an earlier try or datagram is not an error; anything else is.
                    if n != 1 && n != 512 && n != 1400 {
                        return Err(format!("UDP echo of {size} bytes came back as {n} bytes"));
                    }
                }
            }
            if !echoed {
                return Err(format!(
                    "UDP datagram of {size} bytes to {target}: no echo in 3 tries"
                ));
            }
            checked += 2 * size as u64;
        }
        Ok(Done::Ok(checked))
    }

    /// Downloads part of a stream, checking it, then resets the tunnel.
    async fn client_reset(&self, rng: &mut Rng) -> Result<Done, String> {
        let (name, client, _) = self.client(rng, false);
        let seed = rng.next();
        let want = 1 + rng.below(2 << 20);
        let mut stream = client
            .connect(self.targets.source)
            .await
            .map_err(|e| format!("download via {name}: connect: {e}"))?;
        let mut request = [0u8; 17];
        request[1..9].copy_from_slice(&seed.to_le_bytes());
        stream
            .write_all(&request)
            .await
            .map_err(|e| format!("download via {name}: request: {e}"))?;
        let mut check = StreamCheck::new(seed);
        let mut buf = vec![0u8; 64 * 1024];
        while check.checked < want {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("download via {name}: read: {e}"))?;
            if n == 0 {
                return Err(format!(
                    "download via {name}: ended after {} bytes",
                    check.checked
                ));
            }
            check
                .check(&buf[..n])
                .map_err(|e| format!("download via {name}: {e}"))?;
        }
        socket2::SockRef::from(stream.get_ref())
            .set_linger(Some(Duration::ZERO))
            .map_err(|e| format!("SO_LINGER: {e}"))?;
        drop(stream);
        Ok(Done::Expected(check.checked))
    }

    /// The target resets after sending some bytes: the client gets a prefix of them, checked,
    /// then a reset (never a clean end, which would pass a truncated stream off as whole).
    async fn target_reset(&self, rng: &mut Rng) -> Result<Done, String> {
        let (name, client, _) = self.client(rng, false);
        let seed = rng.next();
        let len = 1 + rng.below(1 << 20);
        let mut stream = client
            .connect(self.targets.source)
            .await
            .map_err(|e| format!("reset download via {name}: connect: {e}"))?;
        let mut request = [1u8; 17];
        request[1..9].copy_from_slice(&seed.to_le_bytes());
        request[9..17].copy_from_slice(&len.to_le_bytes());
        stream
            .write_all(&request)
            .await
            .map_err(|e| format!("reset download via {name}: request: {e}"))?;
        let mut check = StreamCheck::new(seed);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => {
                    return Err(format!(
                        "reset download via {name}: a clean end after {} of {len} bytes, \
                         where the target reset",
                        check.checked
                    ))
                }
                Ok(n) => check
                    .check(&buf[..n])
                    .map_err(|e| format!("reset download via {name}: {e}"))?,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => return Err(format!("reset download via {name}: read: {e}")),
            }
        }
        if check.checked > len {
            return Err(format!(
                "reset download via {name}: {} bytes of {len}",
                check.checked
            ));
        }
        Ok(Done::Expected(check.checked))
    }

    /// Random bytes instead of a handshake, then the end of the stream: the server must close.
    async fn garbage(&self, rng: &mut Rng) -> Result<Done, String> {
        let proxy = self.proxies[rng.below(self.proxies.len() as u64) as usize];
        let junk_len = 1 + rng.below(64) as usize;
        let junk = rng.bytes(junk_len);
        let mut stream = TcpStream::connect(proxy)
            .await
            .map_err(|e| format!("garbage to {proxy}: connect: {e}"))?;
        // Either a peer that sends junk and says it is done, or one that stays silent after a
        // first byte no SOCKS version starts with: both must be closed by the server.
        let half_close = rng.below(2) == 0;
        let junk = if half_close {
            junk
        } else {
            let mut j = junk;
            j[0] = 0x06 + (j[0] % 0xF0);
            j
        };
        stream
            .write_all(&junk)
            .await
            .map_err(|e| format!("garbage to {proxy}: write: {e}"))?;
        if half_close {
            stream
                .shutdown()
                .await
                .map_err(|e| format!("garbage to {proxy}: shutdown: {e}"))?;
        }
        let mut sink = Vec::new();
        let limit = Duration::from_secs(15);
        match tokio::time::timeout(limit, stream.read_to_end(&mut sink)).await {
            Ok(_) => Ok(Done::Expected(junk.len() as u64)),
            Err(_) => Err(format!(
                "garbage to {proxy} ({:02x?}): still open after {limit:?}",
                &junk[..junk.len().min(8)]
            )),
        }
    }

    /// A port nothing listens on: reply "connection refused".
    async fn refused(&self, rng: &mut Rng) -> Result<Done, String> {
        let (name, client, _) = self.client(rng, false);
        let dead = {
            let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .map_err(|e| format!("bind a port to free: {e}"))?;
            l.local_addr().map_err(|e| e.to_string())?
        };
        match client.connect(dead).await {
            Ok(_) => Err(format!("refused port via {name}: {dead} accepted")),
            // SOCKS4 has one failure code, and HTTP says 502.
            Err(e)
                if matches!(e.reply_code(), Some(ReplyCode::ConnectionRefused))
                    || (!name.starts_with("socks5") && e.reply_code().is_some()) =>
            {
                Ok(Done::Expected(0))
            }
            Err(e) => Err(format!("refused port via {name}: {e}")),
        }
    }

    /// A wrong password from [`GUESSER`] (one time in ten) or one of the addresses after it:
    /// refused by the RFC 1929 status, or, once the address is throttled past the handshake
    /// deadline, by closing the connection. The clients on 127.0.0.1 log in to the same server
    /// meanwhile and must not be slowed.
    async fn wrong_password(&self, rng: &mut Rng) -> Result<Done, String> {
        let from = match rng.below(10) {
            0 => GUESSER,
            _ => {
                let [a, b, c, d] = GUESSER.octets();
                Ipv4Addr::new(a, b, c, d + 1 + rng.below(TYPO_ADDRESSES.into()) as u8)
            }
        };
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket
            .bind((from, 0).into())
            .map_err(|e| format!("wrong password: bind {from}: {e}"))?;
        let mut stream = socket
            .connect(self.password_server)
            .await
            .map_err(|e| format!("wrong password: connect: {e}"))?;
        let wrong = Credentials::new(USER, "not-the-password");
        match socks5_auth(&mut stream, Some(&wrong)).await {
            Ok(()) => Err("a wrong password was accepted".to_owned()),
            Err(RawError::AuthFailed(_) | RawError::Closed) => Ok(Done::Expected(0)),
            Err(RawError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                Ok(Done::Expected(0))
            }
            Err(e) => Err(format!("wrong password: {e}")),
        }
    }

    /// One to three absolute-form `GET http://origin/...` requests on one keep-alive
    /// connection to a proxy port; every body byte checked.
    async fn http_request(&self, rng: &mut Rng) -> Result<Done, String> {
        let proxy = self.http_proxies[rng.below(self.http_proxies.len() as u64) as usize];
        let origin = self.targets.origin;
        let mut stream = TcpStream::connect(proxy)
            .await
            .map_err(|e| format!("HTTP via {proxy}: connect: {e}"))?;
        let mut checked = 0;
        let mut buf = vec![0u8; 64 * 1024];
        for _ in 0..1 + rng.below(3) {
            let seed = rng.next();
            let len = rng.below(300_000);
            let request =
                format!("GET http://{origin}/{seed}/{len} HTTP/1.1\r\nHost: {origin}\r\n\r\n");
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| format!("HTTP via {proxy}: write: {e}"))?;
            let mut head = Vec::new();
            read_head(&mut stream, &mut head)
                .await
                .map_err(|e| format!("HTTP via {proxy}: response head: {e}"))?;
            let head = String::from_utf8_lossy(&head);
            let length = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<u64>().ok())?
            });
            if !head.starts_with("HTTP/1.1 200 ") || length != Some(len) {
                return Err(format!(
                    "HTTP via {proxy}: GET of {len} bytes answered {:?}",
                    head.lines().take(8).collect::<Vec<_>>()
                ));
            }
            let mut check = StreamCheck::new(seed);
            while check.checked < len {
                let want = ((len - check.checked) as usize).min(buf.len());
                let n = stream
                    .read(&mut buf[..want])
                    .await
                    .map_err(|e| format!("HTTP via {proxy}: body: {e}"))?;
                if n == 0 {
                    return Err(format!(
                        "HTTP via {proxy}: the body ended after {} of {len} bytes",
                        check.checked
                    ));
                }
                check
                    .check(&buf[..n])
                    .map_err(|e| format!("HTTP via {proxy}: body: {e}"))?;
            }
            checked += len;
        }
        Ok(Done::Ok(checked))
    }

    /// A listed name, asked for by name (refused with 0x02, 0x5B or 403) or hidden behind an
    /// address in a captured HTTP head or ClientHello (the tunnel closes, and the trap target
    /// must never see a byte).
    async fn blocked(&self, rng: &mut Rng) -> Result<Done, String> {
        let trap = self.targets.trap;
        if rng.below(2) == 0 {
            let (name, client) =
                &self.blocking_by_name[rng.below(self.blocking_by_name.len() as u64) as usize];
            let host =
                ["ads.soak.test", "x.ads.example.com", "WWW.Blocked.Test."][rng.below(3) as usize];
            let target = TargetAddr::domain(host, trap.port()).map_err(|e| e.to_string())?;
            return match client.connect(target).await {
                Ok(_) => Err(format!("{host} via {name}: a listed name was let through")),
                Err(e)
                    if matches!(e.reply_code(), Some(ReplyCode::NotAllowed))
                        || (name.starts_with("socks4") && e.reply_code().is_some()) =>
                {
                    Ok(Done::Expected(0))
                }
                Err(e) => Err(format!("{host} via {name}: {e}")),
            };
        }
        let (name, client) =
            &self.blocking_by_address[rng.below(self.blocking_by_address.len() as u64) as usize];
        let flight = LISTED_FIRST_FLIGHTS[rng.below(LISTED_FIRST_FLIGHTS.len() as u64) as usize];
        let mut stream = client
            .connect(trap)
            .await
            .map_err(|e| format!("sniffed via {name}: connect: {e}"))?;
        stream
            .write_all(flight)
            .await
            .map_err(|e| format!("sniffed via {name}: write: {e}"))?;
        let mut back = Vec::new();
        match stream.read_to_end(&mut back).await {
            Ok(_) if back.is_empty() => Ok(Done::Expected(flight.len() as u64)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                Ok(Done::Expected(flight.len() as u64))
            }
            Ok(_) => Err(format!(
                "sniffed via {name}: {} bytes came back from the trap",
                back.len()
            )),
            Err(e) => Err(format!("sniffed via {name}: read: {e}")),
        }
    }

    fn record(&self, op: Op, outcome: Result<Done, String>) {
        let mut ops = self.ops.lock().expect("no panic holds the lock");
        let entry = ops.entry(op).or_default();
        entry.0 += 1;
        match outcome {
            Ok(Done::Ok(bytes)) => {
                self.bytes.fetch_add(bytes, Relaxed);
            }
            Ok(Done::Expected(bytes)) => {
                entry.1 += 1;
                self.bytes.fetch_add(bytes, Relaxed);
            }
            Err(message) => {
                let n = self.unexpected.fetch_add(1, Relaxed) + 1;
                if n <= 50 {
                    println!("UNEXPECTED [{op:?}] {message}");
                    self.messages
                        .lock()
                        .expect("no panic holds the lock")
                        .push(message);
                }
            }
        }
    }

    fn total_ops(&self) -> u64 {
        self.ops
            .lock()
            .expect("no panic holds the lock")
            .values()
            .map(|v| v.0)
            .sum()
    }
}

async fn worker(load: Arc<Load>, seed: u64, end: Instant) {
    let mut rng = Rng::new(seed);
    while Instant::now() < end {
        let op = rng.pick(&MIX);
        let outcome = match tokio::time::timeout(OP_DEADLINE, load.run(op, &mut rng)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("stuck for {OP_DEADLINE:?}")),
        };
        load.record(op, outcome);
    }
}

struct Args {
    seconds: u64,
    socksmith: PathBuf,
    workers: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 1800,
        socksmith: PathBuf::from("target/release/socksmith"),
        workers: 8,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => args.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--socksmith" => args.socksmith = PathBuf::from(value()?),
            "--workers" => args.workers = value()?.parse().map_err(|e| format!("--workers: {e}"))?,
            _ => {
                return Err(format!(
                    "unknown argument {flag}\nusage: soak [--seconds N] [--socksmith PATH] [--workers N]"
                ))
            }
        }
    }
    if args.seconds == 0 || args.workers == 0 {
        return Err("--seconds and --workers must be at least 1".to_owned());
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    match soak(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the whole soak; `Ok(false)` when a check failed.
async fn soak(args: Args) -> Result<bool, String> {
    if !args.socksmith.exists() {
        return Err(format!(
            "{} not found: build it with cargo build --release",
            args.socksmith.display()
        ));
    }
    let targets = start_targets().await?;
    let user = format!("{USER}:{PASSWORD}");
    let list_dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
    let list = list_dir.path().join("soak.hosts");
    write_blocklist(&list)?;
    let list = list.to_str().ok_or("a temporary path that is not UTF-8")?;
    let mut servers = vec![
        start_server(&args.socksmith, "open", &[]).await?,
        start_server(&args.socksmith, "users", &["--user", &user]).await?,
        // A sniff window as long as the handshake deadline: on a starved machine a client can
        // take longer than the default 300 ms between the reply and its first bytes, and then
        // (by design, as for a server-first protocol) its tunnel flows unsniffed. The soak
        // checks sniffing, not how a window ends (tests/server_blocking.rs does that).
        start_server(
            &args.socksmith,
            "blocklist",
            &["--blocklist", list, "--sniff-timeout", HANDSHAKE_TIMEOUT],
        )
        .await?,
    ];
    let (open, users, blocking) = (&servers[0], &servers[1], &servers[2]);
    let url = |s: &str| Client::from_url(s).map_err(|e| format!("{s}: {e}"));
    let mut clients = Vec::new();
    for (addr, v6) in [(open.v4, false), (open.v6, true)] {
        for scheme in ["socks5h", "socks5", "socks4a", "socks4", "http"] {
            clients.push((scheme.to_owned(), url(&format!("{scheme}://{addr}"))?, v6));
        }
    }
    // Allowed traffic through the blocklist server: names are looked up, and the first bytes
    // behind an address are sniffed before they flow.
    for (addr, v6) in [(blocking.v4, false), (blocking.v6, true)] {
        for scheme in ["socks5h", "socks5", "socks4a", "socks4", "http"] {
            let client = url(&format!("{scheme}://{addr}"))?;
            clients.push((format!("{scheme} via the blocklist"), client, v6));
        }
    }
    let mut blocking_by_name = Vec::new();
    let mut blocking_by_address = Vec::new();
    for scheme in ["socks5h", "socks4a", "http"] {
        let client = url(&format!("{scheme}://{}", blocking.v4))?;
        blocking_by_name.push((scheme.to_owned(), client));
    }
    for scheme in ["socks5", "socks4"] {
        let client = url(&format!("{scheme}://{}", blocking.v6))?;
        blocking_by_address.push((scheme.to_owned(), client));
    }
    for (addr, v6) in [(users.v4, false), (users.v6, true)] {
        for scheme in ["socks5h", "socks5"] {
            let with_user = format!("{scheme}://{USER}:{PASSWORD}@{addr}");
            clients.push((format!("{scheme} with a user"), url(&with_user)?, v6));
        }
    }
    let udp_clients = vec![
        (url(&format!("socks5://{}", open.v4))?, false),
        (url(&format!("socks5://{}", open.v6))?, true),
        (
            url(&format!("socks5://{USER}:{PASSWORD}@{}", users.v4))?,
            false,
        ),
    ];
    let password_server = users.v4;
    let proxies = vec![
        open.v4,
        open.v6,
        users.v4,
        users.v6,
        blocking.v4,
        blocking.v6,
    ];
    let http_proxies = vec![open.v4, open.v6, blocking.v4];
    for s in &servers {
        println!(
            "soak: {} server pid {} on {} and {}: idle {} descriptors, RSS {}",
            s.name,
            s.pid,
            s.v4,
            s.v6,
            s.idle_fds,
            mib(s.start_rss)
        );
    }
    println!(
        "soak: {} workers for {} s; bounds: descriptors back to idle + {FD_SLACK} after the \
         load, RSS growth from the end of warm-up to the end at most {}",
        args.workers,
        args.seconds,
        mib(RSS_GROWTH_LIMIT)
    );
    let load = Arc::new(Load {
        targets,
        clients,
        udp_clients,
        password_server,
        blocking_by_name,
        blocking_by_address,
        http_proxies,
        proxies,
        ops: Mutex::new(BTreeMap::new()),
        bytes: AtomicU64::new(0),
        unexpected: AtomicU64::new(0),
        udp_resends: AtomicU64::new(0),
        messages: Mutex::new(Vec::new()),
    });

    let started = Instant::now();
    let run_for = Duration::from_secs(args.seconds);
    let end = started + run_for;
    // Warm-up: the first fifth of the run, at least 10 s (allocator arenas and the pipe pool
    // fill up); RSS growth is measured from its end.
    let warm_at = started + (run_for / 5).max(Duration::from_secs(10)).min(run_for);
    let tasks: Vec<_> = (0..args.workers)
        .map(|i| tokio::spawn(worker(load.clone(), 0x50A4 + i as u64, end)))
        .collect();
    let mut ticker = tokio::time::interval_at(started + REPORT_EVERY, REPORT_EVERY);
    let mut last_ops = 0;
    let mut died = Vec::new();
    while Instant::now() < end {
        ticker.tick().await;
        let ops = load.total_ops();
        let mut line = format!(
            "t={:>5}s ops {:>8} (+{:>6}) bytes {:>11} unexpected {}",
            started.elapsed().as_secs(),
            ops,
            ops - last_ops,
            mib(load.bytes.load(Relaxed)),
            load.unexpected.load(Relaxed)
        );
        last_ops = ops;
        for s in servers.iter_mut() {
            match (count_fds(s.pid), rss(s.pid)) {
                (Some(fds), Some(rss)) => {
                    s.peak_fds = s.peak_fds.max(fds);
                    s.peak_rss = s.peak_rss.max(rss);
                    if s.warm_rss.is_none() && Instant::now() >= warm_at {
                        s.warm_rss = Some(rss);
                    }
                    line += &format!(
                        " | {}: fds {fds} (idle {}) rss {}",
                        s.name,
                        s.idle_fds,
                        mib(rss)
                    );
                }
                _ => {
                    line += &format!(" | {}: GONE", s.name);
                    if !died.contains(&s.name) {
                        died.push(s.name);
                    }
                }
            }
        }
        println!("{line}");
    }
    for t in tasks {
        t.await.map_err(|e| format!("a worker failed: {e}"))?;
    }
    let load_time = started.elapsed();

    // The load has stopped: descriptors must come back to the idle count (plus the pipe pool).
    let mut ok = true;
    let settle = Instant::now() + Duration::from_secs(20);
    let mut end_fds: Vec<Option<usize>>;
    loop {
        end_fds = servers.iter().map(|s| count_fds(s.pid)).collect();
        let settled = servers
            .iter()
            .zip(&end_fds)
            .all(|(s, fds)| fds.is_some_and(|n| n <= s.idle_fds + FD_SLACK));
        if settled || Instant::now() >= settle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    println!(
        "\n== soak summary: {} s of load, {} workers",
        load_time.as_secs(),
        args.workers
    );
    let ops = load.ops.lock().expect("no panic holds the lock").clone();
    for (op, (count, expected)) in &ops {
        println!(
            "  {:<14} {count:>9} operations ({expected} ended by the intended refusal or reset)",
            format!("{op:?}")
        );
    }
    println!(
        "  total          {:>9} operations, {} checked, {} UDP resends, {} unexpected errors",
        ops.values().map(|v| v.0).sum::<u64>(),
        mib(load.bytes.load(Relaxed)),
        load.udp_resends.load(Relaxed),
        load.unexpected.load(Relaxed)
    );
    let trapped = load.targets.trap_bytes.load(Relaxed);
    println!("  blocked requests let {trapped} bytes reach their target");
    if trapped > 0 {
        ok = false;
        println!("  FAIL: bytes of refused requests reached the trap target");
    }
    if load.unexpected.load(Relaxed) > 0 {
        ok = false;
        println!("  FAIL: unexpected errors (the first ones):");
        for m in load
            .messages
            .lock()
            .expect("no panic holds the lock")
            .iter()
            .take(10)
        {
            println!("    {m}");
        }
    }
    for (s, fds) in servers.iter_mut().zip(end_fds) {
        let end_rss = rss(s.pid);
        println!(
            "  {:<5} server: descriptors idle {} peak {} end {}; RSS start {} warm {} peak {} end {}",
            s.name,
            s.idle_fds,
            s.peak_fds,
            fds.map_or("gone".to_owned(), |n| n.to_string()),
            mib(s.start_rss),
            s.warm_rss.map_or("-".to_owned(), mib),
            mib(s.peak_rss),
            end_rss.map_or("gone".to_owned(), mib),
        );
        match fds {
            Some(n) if n <= s.idle_fds + FD_SLACK => {}
            Some(n) => {
                ok = false;
                println!(
                    "  FAIL: {} server holds {n} descriptors after the load, idle was {} (+{FD_SLACK} allowed)",
                    s.name, s.idle_fds
                );
            }
            None => {
                ok = false;
                println!("  FAIL: {} server died", s.name);
            }
        }
        if let (Some(warm), Some(end)) = (s.warm_rss, end_rss) {
            if end > warm + RSS_GROWTH_LIMIT {
                ok = false;
                println!(
                    "  FAIL: {} server RSS grew from {} after warm-up to {} (limit +{})",
                    s.name,
                    mib(warm),
                    mib(end),
                    mib(RSS_GROWTH_LIMIT)
                );
            }
        }
        if let Some(status) = s.process.process_mut().exited() {
            ok = false;
            println!("  FAIL: {} server exited: {status}", s.name);
        }
        let stderr = s.process.stderr();
        let bad: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("panicked") || l.contains("ERROR"))
            .take(5)
            .collect();
        if !bad.is_empty() {
            ok = false;
            println!("  FAIL: {} server logged errors:", s.name);
            for l in bad {
                println!("    {l}");
            }
        }
    }
    if !died.is_empty() {
        ok = false;
    }
    println!("soak: {}", if ok { "PASS" } else { "FAIL" });
    Ok(ok)
}
