//! The loopback targets the bench brings along: a byte sink, a byte source, a TCP echo and a
//! UDP echo, each on its own port of a loopback address, all in the bench process.
//!
//! Owns only the target side of the traffic; what the client side does is in `phases`.
//! Targets never look at the bytes: the sink counts them, the source sends zeros, the echoes
//! send back what arrived.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// The size of one bulk read or write: large enough that syscalls are not what we measure.
pub const BULK_CHUNK: usize = 256 * 1024;

/// Zeros the bulk writers send, shared so that no tunnel allocates its own.
pub static ZEROS: [u8; BULK_CHUNK] = [0; BULK_CHUNK];

/// Accept backlog of every target listener: connection-rate and idle bursts arrive fast.
const BACKLOG: u32 = 4096;

/// The running targets. Dropping this stops them (every accepted connection too).
pub struct Targets {
    /// Reads and discards; counts the bytes in [`Targets::sunk`].
    pub sink: SocketAddr,
    /// Writes zeros until the peer goes away.
    pub source: SocketAddr,
    /// Sends back whatever arrives (TCP).
    pub echo: SocketAddr,
    /// Sends every datagram back to its sender (UDP).
    pub udp_echo: SocketAddr,
    /// Bytes the sink received so far, over all its connections.
    pub sunk: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Targets {
    /// Binds all four targets on `ip` (a loopback address), port 0 each, and starts serving.
    pub async fn start(ip: IpAddr) -> io::Result<Targets> {
        let sunk = Arc::new(AtomicU64::new(0));
        let sink = listen(ip)?;
        let source = listen(ip)?;
        let echo = listen(ip)?;
        let udp = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let addrs = (
            sink.local_addr()?,
            source.local_addr()?,
            echo.local_addr()?,
            udp.local_addr()?,
        );
        let counter = Arc::clone(&sunk);
        let tasks = vec![
            tokio::spawn(serve(sink, move |s| sink_conn(s, Arc::clone(&counter)))),
            tokio::spawn(serve(source, source_conn)),
            tokio::spawn(serve(echo, echo_conn)),
            tokio::spawn(udp_echo(udp)),
        ];
        Ok(Targets {
            sink: addrs.0,
            source: addrs.1,
            echo: addrs.2,
            udp_echo: addrs.3,
            sunk,
            tasks,
        })
    }
}

impl Drop for Targets {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn listen(ip: IpAddr) -> io::Result<TcpListener> {
    let socket = match ip {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.listen(BACKLOG)
}

/// Accepts forever, one task per connection; the connection tasks die with the runtime or
/// when their peer goes away, and the accept loop when `Targets` is dropped.
async fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // Best effort: a socket that refuses NODELAY still carries bytes.
                let _ = stream.set_nodelay(true);
                tokio::spawn(handler(stream));
            }
            // Out of descriptors or a connection reset before accept: keep serving.
            Err(_) => tokio::task::yield_now().await,
        }
    }
}

async fn sink_conn(mut stream: TcpStream, sunk: Arc<AtomicU64>) {
    let mut buf = vec![0u8; BULK_CHUNK];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        sunk.fetch_add(n as u64, Ordering::Relaxed);
    }
}

async fn source_conn(mut stream: TcpStream) {
    while stream.write_all(&ZEROS).await.is_ok() {}
}

async fn echo_conn(mut stream: TcpStream) {
    // Small on purpose: the idle phase parks 10,000 of these in the bench process.
    let mut buf = [0u8; 2048];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

async fn udp_echo(socket: UdpSocket) {
    let mut buf = vec![0u8; 65536];
    loop {
        if let Ok((n, from)) = socket.recv_from(&mut buf).await {
            // A full socket buffer drops the datagram, as a network would.
            let _ = socket.send_to(&buf[..n], from).await;
        }
    }
}
