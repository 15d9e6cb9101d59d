//! The byte pump of a tunnel: moves bytes both ways between two connected streams until both
//! directions have ended, and reports how many bytes went each way and why it stopped.
//!
//! This module owns the data phase only. It knows nothing of SOCKS: whoever set the tunnel up
//! (handshake, reply, `TCP_NODELAY`, logging) hands over two connected streams and gets back a
//! [`RelayOutcome`].
//!
//! # Semantics
//!
//! * **Half-close.** End of stream from one side shuts down the write half of the other side,
//!   and the opposite direction keeps flowing until it ends too. The relay returns when both
//!   directions have ended, and closes both streams.
//! * **Errors.** A read or write error on either side (a reset, most often) ends the tunnel at
//!   once: both streams are closed and [`RelayError::Io`] says which side failed. With
//!   [`relay`], a reset from one side is passed on as a reset to the other side, so that a
//!   truncated stream never looks like a complete one.
//! * **Idle timeout.** With [`RelayOptions::idle_timeout`], a tunnel that moves no byte in
//!   either direction for that long ends with [`RelayError::IdleTimeout`].
//! * **Pipelined bytes.** A server often holds bytes the client sent right after its request,
//!   read together with it. Pass them as `client_pending`: the relay writes them to the target
//!   before anything else, and counts them in [`RelayOutcome::client_to_target`].
//! * **Looking before forwarding.** To inspect the client's first bytes (a TLS SNI or an HTTP
//!   `Host`), read them from the client yourself into a small buffer, decide, then call the
//!   relay with those bytes as `client_pending`: nothing is lost and zero-copy starts after.
//!   (Or look without taking them, with `TcpStream::peek`, and pass no pending bytes.)
//!
//! # Memory
//!
//! An idle tunnel holds no buffer and no pipe, only its two streams and the task's state.
//! * [`relay`] on Linux copies small reads through a buffer on the stack (a read and a write:
//!   fewer system calls than splicing a few bytes), and once a read fills a whole chunk that
//!   direction moves bytes with `splice(2)` through a kernel pipe, never through user space. A
//!   splicing direction borrows a pipe from a small process-wide pool when its source becomes
//!   readable and gives it back once the pipe is drained and the source would block. If no pipe
//!   can be had (out of file descriptors), that direction falls back to copying.
//! * [`relay_generic`] (any `AsyncRead + AsyncWrite`) reads into a buffer on the stack and writes
//!   straight from it; only when the destination cannot take everything does it move the rest
//!   into a heap buffer, freed again once it is drained and the source would block.
//!
//! No allocation, lock or log line happens per chunk.

mod half;
mod rate;
#[cfg(target_os = "linux")]
mod splice;

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use half::{Half, HalfError};

pub use rate::RateLimited;
#[cfg(target_os = "linux")]
pub use splice::pooled_pipes;

/// How a tunnel is relayed. `Default` gives no idle timeout, zero-copy where available and
/// 1 MiB pipes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayOptions {
    /// End the tunnel when no byte has moved in either direction for this long.
    pub idle_timeout: Option<Duration>,
    /// Use `splice(2)` in [`relay`] for a direction once it carries bulk data (Linux only;
    /// ignored elsewhere and by [`relay_generic`]).
    pub zero_copy: bool,
    /// Capacity asked of the kernel for each pipe `splice(2)` uses; 0 keeps the kernel's
    /// default (64 KiB). A pipe is held only while its direction moves bytes. On loopback 1 MiB
    /// pipes cost half the CPU per byte of 64 KiB ones (`examples/relay_throughput.rs`).
    ///
    /// The kernel caps the size at `/proc/sys/fs/pipe-max-size`, and a user without
    /// `CAP_SYS_RESOURCE` whose pipes together pass `/proc/sys/fs/pipe-user-pages-soft` (64 MiB
    /// by default, about 64 busy directions at 1 MiB) gets small pipes instead: the relay then
    /// keeps working, with more system calls per byte. Raise the sysctl for many busy tunnels.
    pub pipe_size: usize,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            idle_timeout: None,
            zero_copy: true,
            pipe_size: 1 << 20,
        }
    }
}

impl RelayOptions {
    /// The default options with an idle timeout.
    pub fn with_idle_timeout(timeout: Duration) -> Self {
        RelayOptions {
            idle_timeout: Some(timeout),
            ..RelayOptions::default()
        }
    }
}

/// What a finished tunnel did: the bytes moved each way, counted even when it ended in error,
/// and how it ended.
#[derive(Debug)]
#[non_exhaustive]
pub struct RelayOutcome {
    /// Bytes written to the target, `client_pending` included.
    pub client_to_target: u64,
    /// Bytes written to the client.
    pub target_to_client: u64,
    /// `Ok` when both directions reached end of stream.
    pub result: Result<(), RelayError>,
}

/// One end of a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The stream handed over as `client`.
    Client,
    /// The stream handed over as `target`.
    Target,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Target => "target",
        })
    }
}

/// Why a tunnel ended before both directions reached end of stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// Reading from or writing to one side failed (most often: it reset the connection).
    #[error("{side} connection failed: {source}")]
    Io {
        /// The side whose stream failed.
        side: Side,
        /// The error its read or write returned.
        source: io::Error,
    },
    /// No byte moved in either direction for the configured idle timeout.
    #[error("tunnel idle for {0:?}")]
    IdleTimeout(Duration),
}

impl RelayError {
    /// The side whose stream failed, if a stream failed.
    pub fn side(&self) -> Option<Side> {
        match self {
            RelayError::Io { side, .. } => Some(*side),
            RelayError::IdleTimeout(_) => None,
        }
    }

    /// Whether a side dropped the connection abruptly (reset, abort or broken pipe) rather than
    /// something else going wrong.
    pub fn is_reset(&self) -> bool {
        match self {
            RelayError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            ),
            RelayError::IdleTimeout(_) => false,
        }
    }
}

/// Relays between two TCP connections until both directions have ended; closes both.
///
/// `client_pending` holds bytes already read from the client (pipelined after its request, or
/// read to look at them first); they reach the target before anything else. On Linux with
/// [`RelayOptions::zero_copy`] a direction's bulk data moves with `splice(2)` and never enters
/// user space (small reads before its first full chunk are copied, which costs fewer system
/// calls); elsewhere this is [`relay_generic`].
///
/// The relay owns both sockets: when the second direction ends it leaves the FIN to the
/// close, so a duplicate of either descriptor kept elsewhere (`try_clone` before the
/// conversion to tokio) would hold that FIN back.
///
/// ```no_run
/// # async fn example(client: tokio::net::TcpStream, target: tokio::net::TcpStream) {
/// use socksmith::relay::{relay, RelayOptions};
/// use std::time::Duration;
///
/// let opts = RelayOptions::with_idle_timeout(Duration::from_secs(300));
/// let outcome = relay(client, target, b"", &opts).await;
/// println!(
///     "up {} down {} result {:?}",
///     outcome.client_to_target, outcome.target_to_client, outcome.result
/// );
/// # }
/// ```
pub fn relay<'p>(
    client: TcpStream,
    target: TcpStream,
    client_pending: &'p [u8],
    opts: &RelayOptions,
) -> impl Future<Output = RelayOutcome> + Send + 'p {
    #[cfg(target_os = "linux")]
    let tunnel = splice::TcpTunnel::new(
        client,
        target,
        client_pending,
        opts.pipe_size,
        opts.zero_copy,
    );
    #[cfg(not(target_os = "linux"))]
    let tunnel = GenericTunnel::new(client, target, client_pending);
    Drive::new(tunnel, opts.idle_timeout)
}

/// Relays between any two byte streams (TLS, a tunnel through another proxy, in-memory pipes)
/// with the same semantics as [`relay`], copying through user space; closes both (drops them)
/// when done.
///
/// `client_pending` is written to the target first. End of stream from one side calls
/// `poll_shutdown` on the other. Writes are flushed whenever the source has nothing more to
/// read, so buffering writers (TLS) never hold bytes back.
pub fn relay_generic<'p, C, T>(
    client: C,
    target: T,
    client_pending: &'p [u8],
    opts: &RelayOptions,
) -> impl Future<Output = RelayOutcome> + 'p
where
    C: AsyncRead + AsyncWrite + Unpin + 'p,
    T: AsyncRead + AsyncWrite + Unpin + 'p,
{
    Drive::new(
        GenericTunnel::new(client, target, client_pending),
        opts.idle_timeout,
    )
}

/// Any byte stream a tunnel can carry (TLS, a connection through another proxy, a Unix
/// socket, an in-memory pipe).
pub trait AsyncStream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> AsyncStream for T {}

/// One end of a tunnel: a TCP connection, relayed with `splice(2)` when the other end is one
/// too, or any other stream, relayed by copying.
pub enum TunnelStream {
    /// A bare TCP connection.
    Tcp(TcpStream),
    /// Any other stream.
    Other(Box<dyn AsyncStream>),
}

impl TunnelStream {
    /// `stream` as a tunnel end: a [`TcpStream`] is recognised and kept bare (so the relay can
    /// splice it), anything else is boxed.
    pub fn new<S: AsyncStream + 'static>(stream: S) -> Self {
        let any: Box<dyn std::any::Any> = Box::new(stream);
        match any.downcast::<TcpStream>() {
            Ok(tcp) => TunnelStream::Tcp(*tcp),
            Err(other) => {
                let stream = other
                    .downcast::<S>()
                    .expect("the box holds the stream it was made from");
                TunnelStream::Other(stream)
            }
        }
    }

    /// The TCP connection, if this end is one.
    pub fn as_tcp(&self) -> Option<&TcpStream> {
        match self {
            TunnelStream::Tcp(tcp) => Some(tcp),
            TunnelStream::Other(_) => None,
        }
    }
}

impl fmt::Debug for TunnelStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TunnelStream::Tcp(s) => f.debug_tuple("Tcp").field(s).finish(),
            TunnelStream::Other(_) => f.write_str("Other(..)"),
        }
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TunnelStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            TunnelStream::Other(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TunnelStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            TunnelStream::Other(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TunnelStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            TunnelStream::Other(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TunnelStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            TunnelStream::Other(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TunnelStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            TunnelStream::Other(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            TunnelStream::Tcp(s) => s.is_write_vectored(),
            TunnelStream::Other(s) => s.is_write_vectored(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future [`relay_streams`] returns: a tunnel being relayed, which can say how many
    /// bytes it has moved so far (for a caller that is cut off before the end, at shutdown).
    pub struct Relay<'p> {
        #[pin]
        drive: Drive<EitherTunnel<'p>>,
    }
}

impl Relay<'_> {
    /// Bytes moved so far: client to target, target to client. Zero once it has finished
    /// (the outcome then has the totals).
    pub fn moved(&self) -> (u64, u64) {
        self.drive.moved()
    }
}

impl Future for Relay<'_> {
    type Output = RelayOutcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<RelayOutcome> {
        self.project().drive.poll(cx)
    }
}

/// [`relay`] when both ends are TCP, [`relay_generic`] otherwise, as one future type: built
/// before it is awaited, so the caller's frame holds the streams only inside it.
pub fn relay_streams<'p>(
    client: TunnelStream,
    target: TunnelStream,
    client_pending: Cow<'p, [u8]>,
    opts: &RelayOptions,
) -> Relay<'p> {
    let tunnel = match (client, target) {
        #[cfg(target_os = "linux")]
        (TunnelStream::Tcp(client), TunnelStream::Tcp(target)) => {
            EitherTunnel::Tcp(splice::TcpTunnel::new(
                client,
                target,
                client_pending,
                opts.pipe_size,
                opts.zero_copy,
            ))
        }
        (client, target) => EitherTunnel::Other(GenericTunnel::new(client, target, client_pending)),
    };
    Relay {
        drive: Drive::new(tunnel, opts.idle_timeout),
    }
}

#[cfg(target_os = "linux")]
type TcpTunnel<'p> = splice::TcpTunnel<'p>;
#[cfg(not(target_os = "linux"))]
type TcpTunnel<'p> = GenericTunnel<'p, TcpStream, TcpStream>;

enum EitherTunnel<'p> {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Tcp(TcpTunnel<'p>),
    Other(GenericTunnel<'p, TunnelStream, TunnelStream>),
}

impl Tunnel for EitherTunnel<'_> {
    fn poll_both(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RelayError>> {
        match self {
            EitherTunnel::Tcp(t) => t.poll_both(cx),
            EitherTunnel::Other(t) => t.poll_both(cx),
        }
    }

    fn moved(&self) -> (u64, u64) {
        match self {
            EitherTunnel::Tcp(t) => t.moved(),
            EitherTunnel::Other(t) => t.moved(),
        }
    }

    fn finish(self, result: Result<(), RelayError>) -> RelayOutcome {
        match self {
            EitherTunnel::Tcp(t) => t.finish(result),
            EitherTunnel::Other(t) => t.finish(result),
        }
    }
}

/// Both directions of a tunnel, as the driver sees them.
trait Tunnel {
    /// Moves bytes both ways as far as possible. `Ready(Ok)` once both directions have ended,
    /// `Ready(Err)` on the first failure.
    fn poll_both(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RelayError>>;
    /// Bytes moved so far: client to target, target to client.
    fn moved(&self) -> (u64, u64);
    /// Closes both streams and reports.
    fn finish(self, result: Result<(), RelayError>) -> RelayOutcome;
}

pin_project_lite::pin_project! {
    /// Runs a tunnel to its end, with the idle timeout: the future [`relay`] and
    /// [`relay_generic`] return. Written by hand rather than as nested `async fn`s so that an
    /// idle tunnel's task stores the tunnel once, and the timer only when there is a timeout.
    ///
    /// The idle timer is lazy: it is set on the first poll, activity only records the time
    /// (once per wake-up that moved bytes, never per chunk), and when the timer fires early it
    /// is re-armed for the real deadline.
    struct Drive<T> {
        // `None` once finished: the streams are closed as soon as the outcome is known.
        tunnel: Option<T>,
        idle: Option<Duration>,
        seen: u64,
        last_activity: Option<Instant>,
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl<T: Tunnel> Drive<T> {
    /// Bytes moved so far (client to target, target to client); zero once finished, when
    /// the outcome has them.
    fn moved(&self) -> (u64, u64) {
        self.tunnel.as_ref().map_or((0, 0), Tunnel::moved)
    }

    fn new(tunnel: T, idle: Option<Duration>) -> Self {
        Drive {
            tunnel: Some(tunnel),
            idle,
            seen: 0,
            last_activity: None,
            sleep: None,
        }
    }
}

impl<T: Tunnel> Future for Drive<T> {
    type Output = RelayOutcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<RelayOutcome> {
        let mut this = self.project();
        let tunnel = this
            .tunnel
            .as_mut()
            .expect("a relay is not polled after it finished");
        let result = match tunnel.poll_both(cx) {
            Poll::Ready(result) => result,
            Poll::Pending => {
                let Some(idle) = *this.idle else {
                    return Poll::Pending;
                };
                let (up, down) = tunnel.moved();
                let moved = up + down;
                let last = match *this.last_activity {
                    Some(last) if moved == *this.seen => last,
                    _ => {
                        *this.seen = moved;
                        *this.last_activity.insert(Instant::now())
                    }
                };
                if this.sleep.is_none() {
                    this.sleep.set(Some(tokio::time::sleep(idle)));
                }
                let mut sleep = this
                    .sleep
                    .as_mut()
                    .as_pin_mut()
                    .expect("the timer was just set");
                loop {
                    ready!(sleep.as_mut().poll(cx));
                    let deadline = last + idle;
                    if Instant::now() >= deadline {
                        break Err(RelayError::IdleTimeout(idle));
                    }
                    sleep.as_mut().reset(deadline);
                }
            }
        };
        let tunnel = this.tunnel.take().expect("checked above");
        this.sleep.set(None);
        Poll::Ready(tunnel.finish(result))
    }
}

/// Turns a direction's failure into a tunnel error naming the side that failed.
fn side_error(err: HalfError, from: Side, to: Side) -> RelayError {
    match err {
        HalfError::Read(source) => RelayError::Io { side: from, source },
        HalfError::Write(source) => RelayError::Io { side: to, source },
    }
}

struct GenericTunnel<'p, C, T> {
    client: C,
    target: T,
    client_pending: Cow<'p, [u8]>,
    c2t: Half,
    t2c: Half,
}

impl<'p, C, T> GenericTunnel<'p, C, T> {
    fn new(client: C, target: T, client_pending: impl Into<Cow<'p, [u8]>>) -> Self {
        GenericTunnel {
            client,
            target,
            client_pending: client_pending.into(),
            c2t: Half::default(),
            t2c: Half::default(),
        }
    }
}

impl<C, T> Tunnel for GenericTunnel<'_, C, T>
where
    C: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_both(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RelayError>> {
        if !self.c2t.is_done() {
            let step = self.c2t.poll_copy(
                cx,
                Pin::new(&mut self.client),
                Pin::new(&mut self.target),
                &self.client_pending,
            );
            if let Poll::Ready(Err(e)) = step {
                return Poll::Ready(Err(side_error(e, Side::Client, Side::Target)));
            }
        }
        if !self.t2c.is_done() {
            let step = self.t2c.poll_copy(
                cx,
                Pin::new(&mut self.target),
                Pin::new(&mut self.client),
                &[],
            );
            if let Poll::Ready(Err(e)) = step {
                return Poll::Ready(Err(side_error(e, Side::Target, Side::Client)));
            }
        }
        if self.c2t.is_done() && self.t2c.is_done() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn moved(&self) -> (u64, u64) {
        (self.c2t.bytes(), self.t2c.bytes())
    }

    fn finish(self, result: Result<(), RelayError>) -> RelayOutcome {
        RelayOutcome {
            client_to_target: self.c2t.bytes(),
            target_to_client: self.t2c.bytes(),
            result,
        }
    }
}
