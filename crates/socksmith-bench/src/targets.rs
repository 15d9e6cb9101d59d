//! Loopback targets for a proxy to reach, written once for the bench, the testkit's tests and
//! `socksmith check`: the accept loop, a TCP echo, a UDP echo (batched), the bench's own set of
//! them ([`Targets`]: a checking sink, a pattern source, a TCP echo and a UDP echo), and
//! `check`'s ([`LoopbackEchoes`]).
//!
//! Everything binds where its caller says (the bench refuses anything but loopback), runs as
//! tokio tasks of the caller's runtime and stops when its handle is dropped, connections too.
//! This module knows nothing of SOCKS; the load side is in `phases`.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use socksmith::client::probe::LoopbackTargets;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

use crate::batch::{self, RecvBatch, ANY_DATAGRAM, BATCH};
use crate::payload::{self, StreamCheck};

/// The size of one bulk read or write: large enough that syscalls are not what we measure.
pub const BULK_CHUNK: usize = payload::MAX_SLICE;

/// Accept backlog of the bench's listeners: connection-rate and idle bursts arrive fast.
const BACKLOG: u32 = 4096;

/// Echo listeners of the connection-rate phase: its cycles go to them in turn, so that the
/// 4-tuples of a proxy's connections to the targets spread over this many destination ports
/// (a closed connection's tuple stays in TIME_WAIT for a minute; see
/// [`crate::route::connect_from`]).
pub const ECHO_POOL: usize = 16;

/// A running target's task: aborted when dropped. The accept loop owns its connections' tasks
/// in a `JoinSet`, so they go with it.
#[derive(Debug)]
pub struct TargetTask(JoinHandle<()>);

impl Drop for TargetTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Accepts on `listener` until dropped: calls `on_accept` with each peer's address, then runs
/// `handle` for the connection in a task of its own.
pub fn serve_tcp<A, F, Fut>(listener: TcpListener, mut on_accept: A, handle: F) -> TargetTask
where
    A: FnMut(SocketAddr) + Send + 'static,
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    TargetTask(tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        on_accept(peer);
                        conns.spawn(handle(stream));
                    }
                    // EMFILE, or a connection reset before accept: keep serving the others.
                    Err(_) => tokio::task::yield_now().await,
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    }))
}

/// Echoes a TCP connection: sends back what it reads; on EOF shuts down its write half.
pub async fn echo(stream: TcpStream) {
    // Small on purpose: the bench's idle phase parks 10,000 of these in its own process.
    echo_with::<2048>(stream).await;
}

/// [`echo`] for the connection-rate phase's short cycles: the task (and its buffer) is
/// allocated once per connection, and a small one comes from the allocator's per-thread
/// cache (glibc's ends at 1,032 bytes) instead of its shared bins.
pub async fn short_echo(stream: TcpStream) {
    echo_with::<256>(stream).await;
}

async fn echo_with<const BUF: usize>(mut stream: TcpStream) {
    let mut buf = [0u8; BUF];
    while let Ok(n) = stream.read(&mut buf).await {
        let Some(data) = buf.get(..n).filter(|d| !d.is_empty()) else {
            let _ = stream.shutdown().await;
            return;
        };
        if stream.write_all(data).await.is_err() {
            return;
        }
    }
}

/// Echoes every datagram (of any size) to its sender until dropped, calling `on_datagram` with
/// each sender. Batched: one syscall moves up to 32 datagrams each way. A full socket buffer
/// drops the echo, as a network would.
pub fn serve_udp_echo<A>(socket: UdpSocket, mut on_datagram: A) -> TargetTask
where
    A: FnMut(SocketAddr) + Send + 'static,
{
    TargetTask(tokio::spawn(async move {
        let mut batch = RecvBatch::with_slot(ANY_DATAGRAM);
        let mut gso = true;
        let mut contiguous = vec![0u8; batch::GSO_MAX_BYTES];
        loop {
            if batch.recv(&socket).await.is_err() {
                tokio::task::yield_now().await;
                continue;
            }
            for (_, from) in batch.iter() {
                if let Some(from) = from {
                    on_datagram(from);
                }
            }
            if gso && echo_with_gso(&socket, &batch, &mut contiguous).await == Some(false) {
                gso = false;
            } else if gso {
                continue;
            }
            let mut replies: [(&[u8], Option<SocketAddr>); BATCH] = [(&[], None); BATCH];
            let mut count = 0;
            for (data, from) in batch.iter() {
                if let (Some(from), Some(reply)) = (from, replies.get_mut(count)) {
                    *reply = (data, Some(from));
                    count += 1;
                }
            }
            let _ = batch::send_all(&socket, replies.get(..count).unwrap_or_default()).await;
        }
    }))
}

/// Echoes a batch with GSO: each run of datagrams from one sender, all of one size but the
/// last, goes back in one send. `Some(false)` when the kernel refuses GSO (nothing was sent
/// then; the caller echoes the batch another way), `None` on a send error (the echoes are
/// dropped, as a network would), `Some(true)` when all went back.
async fn echo_with_gso(
    socket: &UdpSocket,
    batch: &RecvBatch,
    contiguous: &mut [u8],
) -> Option<bool> {
    let mut items = batch.iter().peekable();
    let mut first_send = true;
    while let Some((data, Some(to))) = items.next() {
        let segment = data.len();
        let mut len = 0;
        let mut push = |d: &[u8], len: &mut usize| {
            let dst = contiguous.get_mut(*len..*len + d.len())?;
            dst.copy_from_slice(d);
            *len += d.len();
            Some(())
        };
        push(data, &mut len)?;
        while let Some((next, next_from)) = items.peek() {
            let fits = *next_from == Some(to)
                && next.len() <= segment
                && len + next.len() <= batch::GSO_MAX_BYTES
                && (len / segment.max(1)) < batch::GSO_MAX_SEGMENTS;
            if !fits {
                break;
            }
            push(next, &mut len)?;
            let shorter = next.len() < segment;
            items.next();
            if shorter {
                break; // only the last segment may be shorter
            }
        }
        let run = contiguous.get(..len)?;
        match batch::send_segments(socket, run, segment, Some(to)).await {
            Ok(true) => first_send = false,
            Ok(false) if first_send => return Some(false),
            Ok(false) => {
                for datagram in run.chunks(segment.max(1)) {
                    let _ = socket.send_to(datagram, to).await;
                }
            }
            Err(_) => return None,
        }
    }
    Some(true)
}

/// The echo servers `socksmith check` probes a proxy on this machine with: a TCP echo on
/// 127.0.0.1 and, when this host has ::1, on ::1 with the same port (so that `localhost`
/// reaches one whichever address the proxy picks), and a UDP echo on 127.0.0.1. They stop
/// when dropped.
#[derive(Debug)]
pub struct LoopbackEchoes {
    /// Where they are.
    pub targets: LoopbackTargets,
    _tasks: Vec<TargetTask>,
}

impl LoopbackEchoes {
    /// Starts them on free ports.
    pub async fn start() -> io::Result<Self> {
        let (v4, v6) = listen_pair().await?;
        let tcp_v4 = v4.local_addr()?;
        let tcp_v6 = v6.as_ref().map(TcpListener::local_addr).transpose()?;
        let udp = UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let udp_v4 = udp.local_addr()?;
        let mut tasks = vec![serve_tcp(v4, |_| {}, echo), serve_udp_echo(udp, |_| {})];
        if let Some(v6) = v6 {
            tasks.push(serve_tcp(v6, |_| {}, echo));
        }
        Ok(LoopbackEchoes {
            targets: LoopbackTargets {
                tcp_v4,
                tcp_v6,
                udp_v4,
            },
            _tasks: tasks,
        })
    }
}

/// TCP listeners on 127.0.0.1 and ::1 with one port. The IPv6 one is `None` when this host
/// has no ::1; a port taken on ::1 is retried a few times with another one.
async fn listen_pair() -> io::Result<(TcpListener, Option<TcpListener>)> {
    let v4_any = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
    let mut last_v4 = None;
    for _ in 0..16 {
        let v4 = listen(v4_any)?;
        let port = v4.local_addr()?.port();
        match listen(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))) {
            Ok(v6) => return Ok((v4, Some(v6))),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_v4 = Some(v4),
            Err(_) => return Ok((v4, None)),
        }
    }
    let v4 = last_v4.ok_or_else(|| io::Error::other("no free port pair on loopback"))?;
    Ok((v4, None))
}

/// A TCP listener on `addr` with a deep backlog and `TCP_NODELAY` set once, for every
/// accepted socket to inherit (one `setsockopt` per listener instead of per connection).
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr.ip() {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// What the bench's checking sink saw, over all its connections.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Bytes received that matched the pattern.
    pub verified: AtomicU64,
    /// Connections on which a byte differed from the pattern.
    pub mismatched: AtomicU64,
}

/// The bench's targets. Dropping this stops them (every accepted connection too).
#[derive(Debug)]
pub struct Targets {
    /// Reads, checks every byte against the pattern and discards; counts into [`Self::sunk`].
    pub sink: SocketAddr,
    /// Writes the pattern until the peer goes away.
    pub source: SocketAddr,
    /// Sends back whatever arrives (TCP).
    pub echo: SocketAddr,
    /// [`ECHO_POOL`] more TCP echoes, for the connection-rate phase.
    pub echo_pool: Vec<SocketAddr>,
    /// Sends every datagram back to its sender (UDP).
    pub udp_echo: SocketAddr,
    /// The sink's counts.
    pub sunk: Arc<SinkCounters>,
    _tasks: Vec<TargetTask>,
}

impl Targets {
    /// Binds all four targets on `ip` (a loopback address), port 0 each, and starts serving.
    pub async fn start(ip: IpAddr) -> io::Result<Targets> {
        let any = SocketAddr::new(ip, 0);
        let (sink, source, echo_listener) = (listen(any)?, listen(any)?, listen(any)?);
        let udp = UdpSocket::bind(any).await?;
        let sunk = Arc::new(SinkCounters::default());
        let addrs = (
            sink.local_addr()?,
            source.local_addr()?,
            echo_listener.local_addr()?,
            udp.local_addr()?,
        );
        let counters = Arc::clone(&sunk);
        let mut tasks = vec![
            serve_tcp(
                sink,
                |_| {},
                move |s| checking_sink(s, Arc::clone(&counters)),
            ),
            serve_tcp(source, |_| {}, pattern_source),
            serve_tcp(echo_listener, |_| {}, echo),
            serve_udp_echo(udp, |_| {}),
        ];
        let mut echo_pool = Vec::with_capacity(ECHO_POOL);
        for _ in 0..ECHO_POOL {
            let listener = listen(any)?;
            echo_pool.push(listener.local_addr()?);
            tasks.push(serve_tcp(listener, |_| {}, short_echo));
        }
        Ok(Targets {
            sink: addrs.0,
            source: addrs.1,
            echo: addrs.2,
            echo_pool,
            udp_echo: addrs.3,
            sunk,
            _tasks: tasks,
        })
    }
}

async fn checking_sink(mut stream: TcpStream, counters: Arc<SinkCounters>) {
    let mut buf = vec![0u8; BULK_CHUNK];
    let mut check = StreamCheck::default();
    while let Ok(n) = stream.read(&mut buf).await {
        let Some(data) = buf.get(..n).filter(|d| !d.is_empty()) else {
            break;
        };
        if !check.feed(data) {
            counters.mismatched.fetch_add(1, Ordering::Relaxed);
            break;
        }
        counters.verified.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Writes the pattern from offset 0 until the peer goes away.
pub async fn pattern_source(mut stream: TcpStream) {
    let mut offset = 0u64;
    while let Ok(n) = stream.write(payload::at(offset, BULK_CHUNK)).await {
        if n == 0 {
            break;
        }
        offset += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn echo_echoes_and_half_closes() {
        let listener = listen("127.0.0.1:0".parse().expect("an address")).expect("listen");
        let addr = listener.local_addr().expect("bound");
        let _task = serve_tcp(listener, |_| {}, echo);
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"ping").await.expect("write");
        s.shutdown().await.expect("shutdown");
        let mut back = Vec::new();
        s.read_to_end(&mut back).await.expect("read");
        assert_eq!(back, b"ping");
    }

    #[tokio::test]
    async fn sink_counts_the_pattern_and_flags_anything_else() {
        let targets = Targets::start("127.0.0.1".parse().expect("an address"))
            .await
            .expect("targets");
        let mut good = TcpStream::connect(targets.sink).await.expect("connect");
        good.write_all(&payload::pattern(100_000))
            .await
            .expect("write");
        drop(good);
        let mut bad = TcpStream::connect(targets.sink).await.expect("connect");
        bad.write_all(&[0u8; 1000]).await.expect("write");
        drop(bad);
        for _ in 0..500 {
            if targets.sunk.verified.load(Ordering::Relaxed) == 100_000
                && targets.sunk.mismatched.load(Ordering::Relaxed) == 1
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("sink counters: {:?}", targets.sunk);
    }

    #[tokio::test]
    async fn source_sends_the_pattern_and_udp_echo_echoes() {
        let targets = Targets::start("127.0.0.1".parse().expect("an address"))
            .await
            .expect("targets");
        let mut s = TcpStream::connect(targets.source).await.expect("connect");
        let mut got = vec![0u8; 700_000];
        s.read_exact(&mut got).await.expect("read");
        assert_eq!(got, payload::pattern(700_000));

        let u = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        u.send_to(b"dgram", targets.udp_echo).await.expect("send");
        let mut buf = [0u8; 16];
        let (n, from) = u.recv_from(&mut buf).await.expect("recv");
        assert_eq!((&buf[..n], from), (&b"dgram"[..], targets.udp_echo));
        let big = payload::pattern(60_000);
        u.send_to(&big, targets.udp_echo)
            .await
            .expect("send a large one");
        let mut back = vec![0u8; 65_536];
        let (n, _) = u.recv_from(&mut back).await.expect("recv a large one");
        assert_eq!(&back[..n], &big[..], "large datagrams come back whole");
    }
}
