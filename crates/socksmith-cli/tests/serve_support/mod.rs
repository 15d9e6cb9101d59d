//! Shared by the CLI integration tests (the `serve_*` ones above all): the binary under test,
//! starting the real `socksmith serve`, and speaking raw SOCKS bytes to it with bounded waits.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use socksmith_testkit::socksmith::SocksmithServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Bound on any single wait for the server in these tests.
pub const STEP: Duration = Duration::from_secs(10);

/// The binary under test.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_socksmith"))
}

/// `socksmith serve --listen 127.0.0.1:0 ARGS...`, running once this returns.
pub async fn serve(args: &[&str]) -> SocksmithServer {
    SocksmithServer::start(bin(), args).await
}

/// Connects to the proxy.
pub async fn connect(proxy: SocketAddr) -> TcpStream {
    tokio::time::timeout(STEP, TcpStream::connect(proxy))
        .await
        .expect("connect to the proxy in time")
        .expect("connect to the proxy")
}

/// Writes `bytes`.
pub async fn send(s: &mut TcpStream, bytes: &[u8]) {
    tokio::time::timeout(STEP, s.write_all(bytes))
        .await
        .expect("write in time")
        .expect("write to the proxy");
}

/// Reads exactly `n` bytes.
pub async fn recv(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    tokio::time::timeout(STEP, s.read_exact(&mut buf))
        .await
        .expect("read in time")
        .unwrap_or_else(|e| panic!("read {n} bytes from the proxy: {e}"));
    buf
}

/// Reads until the proxy closes; everything it sent.
pub async fn recv_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    match tokio::time::timeout(STEP, s.read_to_end(&mut buf)).await {
        Ok(Ok(_)) => {}
        // A reset after the last bytes still counts as closed.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(Err(e)) => panic!("read to end: {e}"),
        Err(_) => panic!("the proxy did not close within {STEP:?}"),
    }
    buf
}

/// A SOCKS5 UDP ASSOCIATE from `proxy` for datagrams that `client` will send: the control
/// connection (the association lasts as long as it is open) and the relay address the reply
/// names. Asserts the association was granted.
pub async fn udp_associate(proxy: SocketAddr, client: &UdpSocket) -> (TcpStream, SocketAddr) {
    let mut control = connect(proxy).await;
    // The client announces the address it will send from.
    let from = client.local_addr().expect("the client's address");
    let (rep, addr) = v5_exchange(&mut control, 3, &v5_addr(from)).await;
    assert_eq!(rep, 0, "UDP ASSOCIATE granted");
    (control, reply_addr(&addr))
}

/// SOCKS5 `ATYP | ADDR | PORT` for an address.
pub fn v5_addr(addr: SocketAddr) -> Vec<u8> {
    let mut out = Vec::new();
    match addr {
        SocketAddr::V4(a) => {
            out.push(1);
            out.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
    out
}

/// SOCKS5 `ATYP=3 | LEN | NAME | PORT`.
pub fn v5_name(name: &str, port: u16) -> Vec<u8> {
    let mut out = vec![3, u8::try_from(name.len()).expect("short test name")];
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&port.to_be_bytes());
    out
}

/// A whole no-auth SOCKS5 exchange prefix: greeting and a request for `cmd` with `addr_bytes`.
pub fn v5_greeting_and_request(cmd: u8, addr_bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![5, 1, 0, 5, cmd, 0];
    out.extend_from_slice(addr_bytes);
    out
}

/// Sends a no-auth greeting and a request; returns the reply code and the reply's address
/// bytes (ATYP included), after checking the method choice.
pub async fn v5_exchange(s: &mut TcpStream, cmd: u8, addr_bytes: &[u8]) -> (u8, Vec<u8>) {
    send(s, &v5_greeting_and_request(cmd, addr_bytes)).await;
    assert_eq!(recv(s, 2).await, [5, 0], "method choice: no authentication");
    v5_reply(s).await
}

/// Reads one SOCKS5 reply: (REP, ATYP|ADDR|PORT).
pub async fn v5_reply(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let head = recv(s, 4).await;
    assert_eq!((head[0], head[2]), (5, 0), "reply VER and RSV: {head:?}");
    let rest = match head[3] {
        1 => recv(s, 6).await,
        4 => recv(s, 18).await,
        3 => {
            let len = recv(s, 1).await;
            let mut name = len.clone();
            name.extend(recv(s, usize::from(len[0]) + 2).await);
            name
        }
        other => panic!("reply with ATYP {other:#04x}"),
    };
    let mut addr = vec![head[3]];
    addr.extend(rest);
    (head[1], addr)
}

/// The socket address in reply address bytes (ATYP 1 or 4).
pub fn reply_addr(bytes: &[u8]) -> SocketAddr {
    match bytes[0] {
        1 => SocketAddr::from((
            <[u8; 4]>::try_from(&bytes[1..5]).expect("4 bytes"),
            u16::from_be_bytes([bytes[5], bytes[6]]),
        )),
        4 => SocketAddr::from((
            <[u8; 16]>::try_from(&bytes[1..17]).expect("16 bytes"),
            u16::from_be_bytes([bytes[17], bytes[18]]),
        )),
        other => panic!("not an IP reply address (ATYP {other:#04x})"),
    }
}

/// A SOCKS4 request: `VN=4 | CD | DSTPORT | DSTIP | USERID NUL`.
pub fn v4_request(cd: u8, target: SocketAddr, user_id: &str) -> Vec<u8> {
    let SocketAddr::V4(t) = target else {
        panic!("SOCKS4 targets are IPv4")
    };
    let mut out = vec![4, cd];
    out.extend_from_slice(&t.port().to_be_bytes());
    out.extend_from_slice(&t.ip().octets());
    out.extend_from_slice(user_id.as_bytes());
    out.push(0);
    out
}

/// A SOCKS4a request for a name: DSTIP 0.0.0.1, the name after the user id.
pub fn v4a_request(cd: u8, name: &str, port: u16, user_id: &str) -> Vec<u8> {
    let mut out = vec![4, cd];
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 1]);
    out.extend_from_slice(user_id.as_bytes());
    out.push(0);
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out
}

/// The address in an 8-byte SOCKS4 reply.
pub fn v4_reply_addr(reply: &[u8]) -> SocketAddr {
    SocketAddr::from((
        [reply[4], reply[5], reply[6], reply[7]],
        u16::from_be_bytes([reply[2], reply[3]]),
    ))
}

/// The server's log once it holds `count` lines containing `needle`. A session logs after it
/// closed its sockets, so a client sees the end before the line is written: this polls the
/// log file (bounded by [`STEP`]) instead of assuming.
pub async fn log_with(server: &SocksmithServer, needle: &str, count: usize) -> String {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let log = server.stderr();
        if log.matches(needle).count() >= count {
            return log;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{count} log lines with {needle:?} not written within {STEP:?}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A directory for one test's files, removed on drop.
pub struct TestDir(std::path::PathBuf);

impl TestDir {
    /// A fresh directory under the system's temporary directory.
    pub fn new(name: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("socksmith-{name}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a test directory");
        TestDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic pseudo-random bytes, chunk by chunk (xorshift64).
pub struct Stream64(pub u64);

impl Stream64 {
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Through `tunnel` to an echo target, uploads `total` bytes of [`Stream64`] from `seed`
/// (then half-closes) while downloading what comes back, and checks that exactly `total`
/// bytes came back with the checksum of what was sent.
pub async fn echo_integrity(tunnel: TcpStream, total: usize, seed: u64) {
    let (mut r, mut w) = tunnel.into_split();
    // Upload and download at the same time: `total` bytes go to the target and come back.
    let writer = tokio::spawn(async move {
        let mut gen = Stream64(seed);
        let mut hash = DefaultHasher::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            gen.fill(&mut buf);
            w.write_all(&buf).await.expect("upload");
            hash.write(&buf);
            sent += buf.len();
        }
        w.shutdown().await.expect("half-close");
        hash.finish()
    });
    let mut hash = DefaultHasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut received = 0;
    loop {
        let n = r.read(&mut buf).await.expect("download");
        if n == 0 {
            break;
        }
        hash.write(&buf[..n]);
        received += n;
    }
    let sent_hash = writer.await.expect("writer task");
    assert_eq!(received, total, "bytes back");
    // Chunk boundaries differ between the sides; DefaultHasher's `write` is a byte stream,
    // so equal content gives an equal hash whatever the chunking.
    assert_eq!(hash.finish(), sent_hash, "checksum of what came back");
}
