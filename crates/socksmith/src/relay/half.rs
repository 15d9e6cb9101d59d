//! One direction of a tunnel copied through user space: pending bytes first, then read, write,
//! and at end of stream shut down the destination's write half.
//!
//! Buffers are lazy. Each read goes into a buffer on the stack and is written straight on; only
//! the part the destination cannot take yet is kept, in a heap buffer that is freed again as
//! soon as it is drained and the source would block. A direction with nothing to do holds no
//! buffer at all.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read at a time. On loopback (`examples/relay_throughput.rs`) 32 KiB costs a third less
/// CPU per byte than 16 KiB and the same as 64 KiB; it sits on the stack only during a poll.
const CHUNK: usize = 32 * 1024;

/// Chunks one direction moves per poll before letting other tasks run, for streams that do not
/// take part in tokio's cooperative budget.
const ROUNDS_PER_POLL: usize = 32;

/// A direction failed reading its source or writing its destination.
#[derive(Debug)]
pub(super) enum HalfError {
    Read(io::Error),
    Write(io::Error),
}

/// The state of one direction.
///
/// Every idle tunnel keeps two of these in its task, so the fields are packed: offsets into
/// the held buffer are `u32` (it holds one chunk), and how much of the caller's pending bytes
/// went out needs no field of its own (they go before anything else, so it is `bytes` until
/// they are all written).
#[derive(Debug, Default)]
pub(super) struct Half {
    /// Bytes written to the destination, the caller's pending bytes first.
    pub(super) bytes: u64,
    /// The source reached end of stream.
    pub(super) read_eof: bool,
    /// End of stream was passed on: nothing more to do.
    pub(super) done: bool,
    /// Bytes were written since the last flush.
    need_flush: bool,
    /// The destination is closed as soon as this direction ends (the other direction has
    /// ended already): end of stream needs no `shutdown` of its own, the close sends the FIN.
    /// Only for TCP: a TLS stream must still be shut down to send its close_notify.
    pub(super) close_sends_fin: bool,
    /// Bytes read but not written yet, at `held[start..end]`; `None` when there are none.
    held: Option<Box<[u8]>>,
    start: u32,
    end: u32,
}

/// A position in a held buffer, which is at most one [`CHUNK`] long.
fn offset(n: usize) -> u32 {
    const _: () = assert!(CHUNK <= u32::MAX as usize);
    debug_assert!(n <= CHUNK);
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Half {
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(super) fn is_done(&self) -> bool {
        self.done
    }

    /// Writes what is left of `pending`, the bytes the caller read before the relay started.
    pub(super) fn poll_pending<W>(
        &mut self,
        cx: &mut Context<'_>,
        mut dst: Pin<&mut W>,
        pending: &[u8],
    ) -> Poll<Result<(), HalfError>>
    where
        W: AsyncWrite + ?Sized,
    {
        // Nothing else is written before the pending bytes, so `bytes` counts how many of them
        // are through.
        let written = |half: &Half| usize::try_from(half.bytes).unwrap_or(usize::MAX);
        while let Some(rest) = pending.get(written(self)..).filter(|r| !r.is_empty()) {
            let n = ready!(dst.as_mut().poll_write(cx, rest)).map_err(HalfError::Write)?;
            if n == 0 {
                return Poll::Ready(Err(write_zero()));
            }
            self.bytes += n as u64;
            self.need_flush = true;
        }
        Poll::Ready(Ok(()))
    }

    /// Copies from `src` to `dst` until `src` would block (`Pending`), the direction has ended
    /// (`Ready(Ok)`) or failed.
    pub(super) fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        src: Pin<&mut R>,
        dst: Pin<&mut W>,
        pending: &[u8],
    ) -> Poll<Result<(), HalfError>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        self.poll_copy_until(cx, src, dst, pending, false)
    }

    /// Like [`Half::poll_copy`], but with `stop_when_full` it also returns `Ready(Ok)` as soon
    /// as a read fills a whole chunk (the bytes are written through or held), with
    /// [`Half::is_done`] still false: the source has bulk data, which the caller may rather
    /// move another way (zero-copy) after draining the held bytes with
    /// [`Half::poll_drain_held`].
    pub(super) fn poll_copy_until<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut src: Pin<&mut R>,
        mut dst: Pin<&mut W>,
        pending: &[u8],
        stop_when_full: bool,
    ) -> Poll<Result<(), HalfError>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        ready!(self.poll_pending(cx, dst.as_mut(), pending))?;
        let mut stack = [const { MaybeUninit::<u8>::uninit() }; CHUNK];
        for _ in 0..ROUNDS_PER_POLL {
            ready!(self.poll_write_held(cx, dst.as_mut()))?;
            if self.read_eof {
                return self.poll_finish(cx, dst);
            }
            let read = if let Some(buf) = self.held.as_deref_mut() {
                let mut buf = ReadBuf::new(buf);
                match src.as_mut().poll_read(cx, &mut buf) {
                    Poll::Pending => false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(HalfError::Read(e))),
                    Poll::Ready(Ok(())) => {
                        let n = buf.filled().len();
                        self.read_eof = n == 0;
                        self.start = 0;
                        self.end = offset(n);
                        if stop_when_full && n == buf.capacity() {
                            return Poll::Ready(Ok(()));
                        }
                        true
                    }
                }
            } else {
                let mut buf = ReadBuf::uninit(&mut stack);
                match src.as_mut().poll_read(cx, &mut buf) {
                    Poll::Pending => false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(HalfError::Read(e))),
                    Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                        self.read_eof = true;
                        true
                    }
                    Poll::Ready(Ok(())) => {
                        let full = buf.remaining() == 0;
                        self.write_through(cx, dst.as_mut(), buf.filled())?;
                        if stop_when_full && full {
                            return Poll::Ready(Ok(()));
                        }
                        true
                    }
                }
            };
            if !read {
                // The source would block and nothing is held: go idle with no buffer, after
                // pushing out what a buffering writer may still hold.
                self.held = None;
                if self.need_flush {
                    if let Poll::Ready(flushed) = dst.as_mut().poll_flush(cx) {
                        flushed.map_err(HalfError::Write)?;
                        self.need_flush = false;
                    }
                }
                return Poll::Pending;
            }
        }
        // Still busy: let other tasks run and come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Writes a chunk that sits on the stack; what the destination does not take now moves to
    /// the heap buffer.
    fn write_through<W>(
        &mut self,
        cx: &mut Context<'_>,
        mut dst: Pin<&mut W>,
        data: &[u8],
    ) -> Result<(), HalfError>
    where
        W: AsyncWrite + ?Sized,
    {
        let mut written = 0;
        while written < data.len() {
            match dst.as_mut().poll_write(cx, &data[written..]) {
                Poll::Ready(Ok(0)) => return Err(write_zero()),
                Poll::Ready(Ok(n)) => {
                    written += n;
                    self.bytes += n as u64;
                    self.need_flush = true;
                }
                Poll::Ready(Err(e)) => return Err(HalfError::Write(e)),
                Poll::Pending => break,
            }
        }
        let rest = &data[written..];
        if !rest.is_empty() {
            let mut buf = Vec::with_capacity(CHUNK.max(rest.len()));
            buf.extend_from_slice(rest);
            buf.resize(buf.capacity(), 0);
            self.held = Some(buf.into_boxed_slice());
            self.start = 0;
            self.end = offset(rest.len());
        }
        Ok(())
    }

    /// Writes the bytes held in the heap buffer, if any, then frees it.
    pub(super) fn poll_drain_held<W>(
        &mut self,
        cx: &mut Context<'_>,
        dst: Pin<&mut W>,
    ) -> Poll<Result<(), HalfError>>
    where
        W: AsyncWrite + ?Sized,
    {
        ready!(self.poll_write_held(cx, dst))?;
        self.held = None;
        Poll::Ready(Ok(()))
    }

    /// Writes the bytes held in the heap buffer, if any.
    fn poll_write_held<W>(
        &mut self,
        cx: &mut Context<'_>,
        mut dst: Pin<&mut W>,
    ) -> Poll<Result<(), HalfError>>
    where
        W: AsyncWrite + ?Sized,
    {
        if let Some(buf) = self.held.as_deref() {
            while self.start < self.end {
                let held = &buf[self.start as usize..self.end as usize];
                let n = ready!(dst.as_mut().poll_write(cx, held)).map_err(HalfError::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(write_zero()));
                }
                self.start += offset(n);
                self.bytes += n as u64;
                self.need_flush = true;
            }
        }
        Poll::Ready(Ok(()))
    }

    /// The source ended and everything was written: pass the end of stream on.
    fn poll_finish<W>(
        &mut self,
        cx: &mut Context<'_>,
        dst: Pin<&mut W>,
    ) -> Poll<Result<(), HalfError>>
    where
        W: AsyncWrite + ?Sized,
    {
        self.held = None;
        if !self.close_sends_fin {
            ready!(dst.poll_shutdown(cx))
                .or_else(ignore_not_connected)
                .map_err(HalfError::Write)?;
        }
        self.done = true;
        Poll::Ready(Ok(()))
    }
}

/// A shutdown that finds the peer already gone has nothing left to do: the other direction
/// reports the failure if it matters.
pub(super) fn ignore_not_connected(err: io::Error) -> io::Result<()> {
    if err.kind() == io::ErrorKind::NotConnected {
        Ok(())
    } else {
        Err(err)
    }
}

fn write_zero() -> HalfError {
    HalfError::Write(io::Error::new(
        io::ErrorKind::WriteZero,
        "destination accepted no bytes",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Polls the half once.
    async fn poll_once<R, W>(
        half: &mut Half,
        src: &mut R,
        dst: &mut W,
    ) -> Poll<Result<(), HalfError>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        poll_fn(|cx| Poll::Ready(half.poll_copy(cx, Pin::new(&mut *src), Pin::new(&mut *dst), &[])))
            .await
    }

    #[tokio::test]
    async fn a_direction_holds_a_buffer_only_while_its_destination_lags() {
        let (mut peer, mut src) = tokio::io::duplex(1 << 16);
        let (mut dst, mut sink) = tokio::io::duplex(100);
        let mut half = Half::default();

        // Nothing to read: no buffer.
        assert!(poll_once(&mut half, &mut src, &mut dst).await.is_pending());
        assert!(half.held.is_none());

        // 1000 bytes, of which the destination takes 100: the rest is held on the heap.
        peer.write_all(&[9; 1000]).await.expect("write");
        assert!(poll_once(&mut half, &mut src, &mut dst).await.is_pending());
        assert_eq!(half.bytes(), 100);
        assert!(half.held.is_some());

        // As the destination drains, the held bytes follow; once all are through and the
        // source is empty, the buffer is freed.
        let mut got = vec![0u8; 1000];
        let mut read = 0;
        for _ in 0..100 {
            if read == got.len() {
                break;
            }
            read += sink.read(&mut got[read..]).await.expect("read");
            let _ = poll_once(&mut half, &mut src, &mut dst).await;
        }
        assert_eq!(read, 1000);
        assert_eq!(half.bytes(), 1000);
        assert!(half.held.is_none());

        // End of stream is passed on as a shutdown of the destination.
        drop(peer);
        assert!(matches!(
            poll_once(&mut half, &mut src, &mut dst).await,
            Poll::Ready(Ok(()))
        ));
        assert!(half.is_done());
        assert_eq!(sink.read(&mut got).await.expect("EOF"), 0);
    }
}
