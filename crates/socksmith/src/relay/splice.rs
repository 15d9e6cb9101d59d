//! Linux: the zero-copy relay of two TCP streams, `splice(2)` socket -> pipe -> socket, with
//! pipes lent by a process-wide pool only while a direction has bytes to move.
//!
//! A direction starts out copying: small reads (a request, a reply, a keystroke) go through a
//! buffer on the stack, a `read` and a `write`, which is cheaper than a splice in, a splice
//! out and a pipe from the pool. The first read that fills a whole chunk marks the direction as
//! bulk, and from then on it splices.
//!
//! A splicing direction waits for its source to become readable holding nothing; then it takes
//! a pipe from the pool, fills it from the source, drains it into the destination, and repeats. When
//! the pipe is empty and the source would block, the pipe goes back to the pool, so an idle
//! tunnel holds only its two sockets. The pipe is only refilled once empty, so a `WouldBlock`
//! from the source can only mean the socket has nothing to read (never "pipe full"), and a
//! `WouldBlock` from the destination only that its send buffer is full: readiness stays exact.
//!
//! Readiness comes from tokio's reactor (`poll_read_ready`/`poll_write_ready` + `try_io`): no
//! extra threads, and tokio's cooperative budget keeps a busy tunnel from starving others.

use std::borrow::Cow;
use std::io;
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, Interest, ReadBuf};
use tokio::net::TcpStream;

use super::half::{ignore_not_connected, Half, HalfError};
use super::{side_error, RelayError, RelayOutcome, Side, Tunnel};
use crate::sys::splice::{splice_in, splice_out, Pipe};

/// Most pipes the pool keeps (two file descriptors each); more are closed when returned. Idle
/// pipes hold no data pages, but their capacity counts against the user's pipe quota
/// (`/proc/sys/fs/pipe-user-pages-soft`, 64 MiB by default): 16 pipes of 1 MiB use a quarter.
const POOL_MAX: usize = 16;

/// Idle pipes, empty, ready for the next direction that becomes readable.
///
/// One pool for the process rather than one per thread: tasks move between worker threads, and
/// a single pool keeps the number of idle pipes (and descriptors) bounded and observable. The
/// lock is taken once per burst of traffic, when a direction wakes up or goes idle, never per
/// chunk, and is held only to push or pop.
static POOL: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

/// How many idle pipes the zero-copy relay keeps for reuse (each holds two file descriptors).
/// For diagnostics and tests: a process's descriptor count is its sockets plus twice this.
pub fn pooled_pipes() -> usize {
    POOL.lock().unwrap_or_else(PoisonError::into_inner).len()
}

/// A pipe for one burst: from the pool if it has one, else a new one. `size` is the capacity
/// wanted (0: the kernel default); a pipe the kernel refuses to resize is used as it is.
fn take_pipe(size: usize) -> io::Result<Pipe> {
    #[cfg(test)]
    {
        if tests::NO_PIPES.get() {
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        tests::PIPES_TAKEN.set(tests::PIPES_TAKEN.get() + 1);
    }
    let pooled = POOL.lock().unwrap_or_else(PoisonError::into_inner).pop();
    let mut pipe = match pooled {
        Some(pipe) => pipe,
        None => Pipe::new()?,
    };
    if size != 0 && pipe.capacity() != size && resize_allowed() {
        // EPERM past pipe-max-size or the user's pipe quota: a smaller pipe still works.
        if pipe.set_capacity(size).is_err() {
            refuse_resizes();
        }
    }
    Ok(pipe)
}

/// When the kernel last refused to resize a pipe, in milliseconds since [`epoch`] plus one (0:
/// never). A refusal (the user's pipe quota is used up, most often) lasts a while: until
/// [`RESIZE_RETRY`] has passed, pipes are used at the size they have rather than asking the
/// kernel again for every burst.
static RESIZE_REFUSED_AT: AtomicU64 = AtomicU64::new(0);

/// How long after a refused resize pipes are not resized.
const RESIZE_RETRY: Duration = Duration::from_secs(1);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn millis_since_epoch() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn refuse_resizes() {
    RESIZE_REFUSED_AT.store(millis_since_epoch().saturating_add(1), Ordering::Relaxed);
}

fn resize_allowed() -> bool {
    retry_due(
        RESIZE_REFUSED_AT.load(Ordering::Relaxed),
        millis_since_epoch(),
    )
}

/// Whether a resize may be tried at `now` (ms since [`epoch`]), given [`RESIZE_REFUSED_AT`].
fn retry_due(refused_at: u64, now: u64) -> bool {
    let retry = u64::try_from(RESIZE_RETRY.as_millis()).unwrap_or(u64::MAX);
    refused_at == 0 || now.saturating_add(1) >= refused_at.saturating_add(retry)
}

/// Returns an empty pipe to the pool, or closes it when the pool is full.
fn give_pipe(pipe: Pipe) {
    let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    if pool.len() < POOL_MAX {
        pool.push(pipe);
    }
}

/// A TCP stream read for the copying paths of the relay, without tokio's short-read shortcut.
///
/// `TcpStream::poll_read` takes a read that returns less than asked for as proof that the
/// socket is drained and clears its readiness. At the TCP urgent mark that proof is wrong: the
/// read stops in front of the mark with the bytes after it still queued, and with edge-triggered
/// readiness nothing wakes the direction again until the sender sends more or closes. Here
/// readiness is cleared only by a read that would block, which costs one more `read` per burst
/// (as the splicing path already pays) and never strands bytes.
struct TcpSource<'a>(&'a TcpStream);

impl AsyncRead for TcpSource<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read_buf(buf) {
                Ok(_) => return Poll::Ready(Ok(())),
                // Readiness was cleared: the next poll_read_ready waits for the socket.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// A count of bytes in a pipe, which never holds more than its capacity, an `int`.
fn pipe_bytes(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// What one `splice(2)` from a socket into an (empty) pipe did.
enum SpliceIn {
    /// Moved this many bytes.
    Moved(usize),
    /// Moved nothing although the socket holds bytes or its end: splice stopped in front of
    /// the TCP urgent mark, or the stream ended.
    Stopped,
}

/// Splices from `src` into `pipe`; `WouldBlock` only when the socket really holds nothing.
///
/// Runs inside `try_io`, so it must tell "nothing to read" (`WouldBlock`: tokio clears the
/// readiness and waits for the next edge) from "splice will not move what is there"
/// (`Stopped`): the socket is asked directly with a non-blocking one-byte peek, since a peek
/// through tokio would wait for a readiness the `EAGAIN` has just cleared and, with edge
/// triggering, no new edge comes until the sender sends more or closes. A byte arriving after
/// the peek is not lost either: it sets a new readiness tick that try_io's clearing leaves alone.
fn splice_in_or_stop(src: &TcpStream, pipe: &Pipe) -> io::Result<SpliceIn> {
    match splice_in(src.as_fd(), pipe, pipe.capacity()) {
        Ok(0) => Ok(SpliceIn::Stopped),
        Ok(n) => Ok(SpliceIn::Moved(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            let mut probe = [MaybeUninit::<u8>::uninit(); 1];
            // The socket is non-blocking (tokio made it so): the peek never waits.
            socket2::SockRef::from(src).peek(&mut probe)?;
            Ok(SpliceIn::Stopped)
        }
        Err(e) => Err(e),
    }
}

/// One direction of a spliced tunnel.
#[derive(Debug, Default)]
struct SpliceHalf {
    /// Byte count, end-of-stream state, and the copying fallback.
    half: Half,
    /// The pipe lent for the current burst.
    pipe: Option<Pipe>,
    /// Bytes in `pipe` not yet written to the destination (a pipe's capacity is an `int`).
    in_pipe: u32,
    /// Zero-copy is off, or no pipe could be had: this direction copies through user space.
    copying: bool,
    /// A read filled a whole chunk: this direction carries bulk data and splices from now on.
    /// Until then it copies, since a small read and write is two system calls where splicing
    /// is two plus a pipe from the pool.
    bulk: bool,
}

impl SpliceHalf {
    fn poll_splice(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut TcpStream,
        dst: &mut TcpStream,
        pending: &[u8],
        pipe_size: usize,
    ) -> Poll<Result<(), HalfError>> {
        if self.copying {
            return self
                .half
                .poll_copy(cx, Pin::new(&mut TcpSource(src)), Pin::new(dst), pending);
        }
        if !self.bulk {
            ready!(self.half.poll_copy_until(
                cx,
                Pin::new(&mut TcpSource(src)),
                Pin::new(&mut *dst),
                pending,
                true
            ))?;
            if self.half.is_done() {
                return Poll::Ready(Ok(()));
            }
            self.bulk = true;
        }
        // Bytes copied but not yet written go first.
        ready!(self.half.poll_drain_held(cx, Pin::new(&mut *dst)))?;
        // No loop bound of our own: every round polls readiness, which spends tokio's budget.
        loop {
            while self.in_pipe > 0 {
                let pipe = self.pipe.as_ref().expect("bytes in the pipe imply a pipe");
                ready!(dst.poll_write_ready(cx)).map_err(HalfError::Write)?;
                let out = dst.try_io(Interest::WRITABLE, || {
                    splice_out(pipe, dst.as_fd(), self.in_pipe as usize)
                });
                match out {
                    Ok(0) => {
                        return Poll::Ready(Err(HalfError::Write(io::Error::new(
                            io::ErrorKind::WriteZero,
                            "destination accepted no bytes",
                        ))))
                    }
                    Ok(n) => {
                        self.in_pipe -= pipe_bytes(n);
                        self.half.bytes += n as u64;
                    }
                    // Readiness was cleared: the next poll_write_ready waits for the socket.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(HalfError::Write(e))),
                }
            }
            if self.half.read_eof {
                self.release_pipe();
                if !self.half.close_sends_fin {
                    socket2::SockRef::from(&*dst)
                        .shutdown(Shutdown::Write)
                        .or_else(ignore_not_connected)
                        .map_err(HalfError::Write)?;
                }
                self.half.done = true;
                return Poll::Ready(Ok(()));
            }
            match src.poll_read_ready(cx) {
                Poll::Pending => {
                    self.release_pipe();
                    return Poll::Pending;
                }
                Poll::Ready(result) => result.map_err(HalfError::Read)?,
            }
            if self.pipe.is_none() {
                match take_pipe(pipe_size) {
                    Ok(pipe) => self.pipe = Some(pipe),
                    Err(_) => {
                        // Out of descriptors (EMFILE/ENFILE): keep the tunnel alive by copying.
                        self.copying = true;
                        return self.half.poll_copy(
                            cx,
                            Pin::new(&mut TcpSource(src)),
                            Pin::new(dst),
                            pending,
                        );
                    }
                }
            }
            let pipe = self.pipe.as_ref().expect("a pipe was just taken");
            let read = src.try_io(Interest::READABLE, || splice_in_or_stop(src, pipe));
            match read {
                Ok(SpliceIn::Moved(n)) => self.in_pipe = pipe_bytes(n),
                // splice(2) stops in front of TCP urgent data: it moves nothing and says 0 (when
                // a FIN follows) or EAGAIN, where read(2) steps over the mark. Either way the
                // socket's readiness is still set (try_io only clears it on WouldBlock), so a
                // plain read in the copying mode takes over from here and decides.
                Ok(SpliceIn::Stopped) => return self.copy_from_now_on(cx, src, dst, pending),
                // Nothing to read: readiness was cleared, the next poll_read_ready waits.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(HalfError::Read(e))),
            }
        }
    }

    /// Leaves splicing for good (the pipe is empty here): this direction copies from now on.
    fn copy_from_now_on(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut TcpStream,
        dst: &mut TcpStream,
        pending: &[u8],
    ) -> Poll<Result<(), HalfError>> {
        self.release_pipe();
        self.copying = true;
        self.half
            .poll_copy(cx, Pin::new(&mut TcpSource(src)), Pin::new(dst), pending)
    }

    /// Gives the pipe back to the pool; only ever called with the pipe empty.
    fn release_pipe(&mut self) {
        debug_assert_eq!(self.in_pipe, 0);
        if let Some(pipe) = self.pipe.take() {
            give_pipe(pipe);
        }
    }
}

impl Drop for SpliceHalf {
    fn drop(&mut self) {
        // A pipe still holding bytes of a failed tunnel is closed, never reused.
        if self.in_pipe == 0 {
            self.release_pipe();
        }
    }
}

/// Two TCP streams relayed with `splice(2)`.
pub(super) struct TcpTunnel<'p> {
    client: TcpStream,
    target: TcpStream,
    client_pending: Cow<'p, [u8]>,
    pipe_size: usize,
    c2t: SpliceHalf,
    t2c: SpliceHalf,
}

impl<'p> TcpTunnel<'p> {
    pub(super) fn new(
        client: TcpStream,
        target: TcpStream,
        client_pending: impl Into<Cow<'p, [u8]>>,
        pipe_size: usize,
        zero_copy: bool,
    ) -> Self {
        let half = || {
            let mut half = SpliceHalf::default();
            half.copying = !zero_copy;
            half
        };
        TcpTunnel {
            client,
            target,
            client_pending: client_pending.into(),
            pipe_size,
            c2t: half(),
            t2c: half(),
        }
    }

    /// When one side reset, makes closing the other side a reset too (`SO_LINGER` 0), so that
    /// it never mistakes a truncated stream for a complete one.
    fn pass_on_reset(&self, err: &RelayError) {
        if !err.is_reset() {
            return;
        }
        let other = match err.side() {
            Some(Side::Client) => &self.target,
            Some(Side::Target) => &self.client,
            None => return,
        };
        // Best effort: if it fails, the other side sees an ordinary close.
        let _ = socket2::SockRef::from(other).set_linger(Some(Duration::ZERO));
    }
}

impl Tunnel for TcpTunnel<'_> {
    fn poll_both(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RelayError>> {
        // Once one direction has ended, the other one's end closes both sockets at once: the
        // close sends the FIN a shutdown would (nothing is left unread on a socket whose
        // reading side reached end of stream), one system call fewer per tunnel.
        self.c2t.half.close_sends_fin = self.t2c.half.is_done();
        self.t2c.half.close_sends_fin = self.c2t.half.is_done();
        if !self.c2t.half.is_done() {
            let step = self.c2t.poll_splice(
                cx,
                &mut self.client,
                &mut self.target,
                &self.client_pending,
                self.pipe_size,
            );
            if let Poll::Ready(Err(e)) = step {
                return Poll::Ready(Err(side_error(e, Side::Client, Side::Target)));
            }
        }
        if !self.t2c.half.is_done() {
            let step =
                self.t2c
                    .poll_splice(cx, &mut self.target, &mut self.client, &[], self.pipe_size);
            if let Poll::Ready(Err(e)) = step {
                return Poll::Ready(Err(side_error(e, Side::Target, Side::Client)));
            }
        }
        if self.c2t.half.is_done() && self.t2c.half.is_done() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn moved(&self) -> (u64, u64) {
        (self.c2t.half.bytes(), self.t2c.half.bytes())
    }

    fn finish(self, result: Result<(), RelayError>) -> RelayOutcome {
        if let Err(err) = &result {
            self.pass_on_reset(err);
        }
        RelayOutcome {
            client_to_target: self.c2t.half.bytes(),
            target_to_client: self.t2c.half.bytes(),
            result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    thread_local! {
        /// Makes `take_pipe` fail on this thread, as it would with no descriptor left.
        pub(super) static NO_PIPES: Cell<bool> = const { Cell::new(false) };
        /// Pipes `take_pipe` handed out on this thread.
        pub(super) static PIPES_TAKEN: Cell<usize> = const { Cell::new(0) };
    }

    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.expect("connect"), b.expect("accept").0)
    }

    #[test]
    fn a_refused_resize_is_not_retried_for_a_while() {
        assert!(retry_due(0, 0), "never refused");
        // Refused at 5 ms (stored as 6): not again before 1,005 ms.
        assert!(!retry_due(6, 5));
        assert!(!retry_due(6, 1004));
        assert!(retry_due(6, 1005));
        refuse_resizes();
        assert!(!resize_allowed());
    }

    /// Runs on the test's own thread (current-thread runtime), where `PIPES_TAKEN` counts.
    #[tokio::test]
    async fn small_exchanges_are_copied_and_bulk_transfers_spliced() {
        let (mut client, client_inner) = tcp_pair().await;
        let (target_inner, mut target) = tcp_pair().await;
        let relay = tokio::spawn(async move {
            super::super::relay(client_inner, target_inner, b"", &Default::default()).await
        });
        let taken = PIPES_TAKEN.get();
        let mut small = [0u8; 64];
        for round in 0..100u8 {
            client.write_all(&[round; 64]).await.expect("write");
            target.read_exact(&mut small).await.expect("read");
            assert_eq!(small, [round; 64]);
            target.write_all(&[!round; 64]).await.expect("write");
            client.read_exact(&mut small).await.expect("read");
            assert_eq!(small, [!round; 64]);
        }
        assert_eq!(PIPES_TAKEN.get(), taken, "small exchanges took no pipe");

        let block: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
        let mut got = vec![0u8; block.len()];
        let (w, r) = tokio::join!(client.write_all(&block), target.read_exact(&mut got));
        w.expect("write");
        r.expect("read");
        assert!(got == block, "bulk bytes arrive intact and in order");
        assert!(PIPES_TAKEN.get() > taken, "a bulk transfer is spliced");

        drop((client, target));
        let out = relay.await.expect("relay task");
        out.result.expect("clean end");
        assert_eq!(out.client_to_target, 6400 + (4 << 20));
        assert_eq!(out.target_to_client, 6400);
    }

    /// Runs on the test's own thread (current-thread runtime), where `NO_PIPES` is set.
    #[tokio::test]
    async fn without_pipes_a_direction_copies_instead_of_failing() {
        NO_PIPES.set(true);
        let (mut client, client_inner) = tcp_pair().await;
        let (target_inner, mut target) = tcp_pair().await;
        let relay = tokio::spawn(async move {
            super::super::relay(client_inner, target_inner, b"hi ", &Default::default()).await
        });
        let block = vec![3u8; 1 << 20];
        let mut got = vec![0u8; 3 + block.len()];
        let (w, r) = tokio::join!(client.write_all(&block), target.read_exact(&mut got));
        w.expect("write");
        r.expect("read");
        assert!(got[..3] == *b"hi " && got[3..] == block[..]);
        let mut got = vec![0u8; block.len()];
        let (w, r) = tokio::join!(target.write_all(&block), client.read_exact(&mut got));
        w.expect("write");
        r.expect("read");
        assert!(got == block);
        drop((client, target));
        let out = relay.await.expect("relay task");
        out.result.expect("clean end");
        assert_eq!(out.client_to_target, 3 + (1 << 20));
        assert_eq!(out.target_to_client, 1 << 20);
        NO_PIPES.set(false);
    }
}
