//! The client stream as hyper reads it in the forwarding path: every byte goes through the
//! [`Framer`] first, so that no request head reaches hyper unchecked. Knows nothing of
//! forwarding; the framer decides, this moves bytes, and notes when the last one moved
//! ([`Activity`]) for the idle deadline.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::relay::TunnelStream;
use crate::server::http::framing::Framer;
use crate::server::http::HttpError;

/// The client stream as hyper reads it: every byte through the [`Framer`], which holds
/// each request head back until it is checked (the bytes the caller already read first).
pub(super) struct Guarded {
    pub(super) inner: TunnelStream,
    framer: Framer,
    /// Checked bytes hyper has not read yet, from `read` on.
    out: Vec<u8>,
    read: usize,
    /// The client closed. (After a refused head the stream stays open, the framer dropping
    /// what comes: hyper takes an end of stream right behind the marker for a message cut
    /// short, and would not answer it.)
    done: bool,
    /// Where a refusal waits for the service that reads the marker.
    refused: Arc<Mutex<Option<HttpError>>>,
    /// When a byte last moved either way.
    activity: Activity,
}

/// When the client connection last moved a byte either way: a forwarded request's bodies
/// cross it, so a connection where nothing moves for the idle timeout (an origin that stalls
/// mid-body, a client that stops reading or sending) can be closed as an idle tunnel is.
#[derive(Debug, Clone)]
pub(super) struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last byte moved.
    last: Arc<AtomicU64>,
    /// Requests being handled ([`Activity::busy`]).
    handling: Arc<AtomicUsize>,
}

/// A request being handled; see [`Activity::busy`].
pub(super) struct Busy(Activity);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.handling.fetch_sub(1, Ordering::Relaxed);
        // The idle time starts over from the answer.
        self.0.moved();
    }
}

impl Activity {
    pub(super) fn new() -> Self {
        Activity {
            start: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
            handling: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Marks a request as being handled until the guard drops: the connection is not idle
    /// meanwhile, whatever its bytes do.
    pub(super) fn busy(&self) -> Busy {
        self.handling.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// Whether a request is being handled.
    pub(super) fn is_busy(&self) -> bool {
        self.handling.load(Ordering::Relaxed) > 0
    }

    fn moved(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    /// When the last byte moved (or the connection began).
    pub(super) fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }
}

impl Guarded {
    pub(super) fn new(
        inner: TunnelStream,
        already_read: &[u8],
        marker: Vec<u8>,
        refused: Arc<Mutex<Option<HttpError>>>,
        activity: Activity,
    ) -> Self {
        let mut guarded = Guarded {
            inner,
            framer: Framer::new(marker),
            out: Vec::new(),
            read: 0,
            done: false,
            refused,
            activity,
        };
        guarded.check(already_read);
        guarded
    }

    fn check(&mut self, bytes: &[u8]) {
        if let Err(e) = self.framer.feed(bytes, &mut self.out) {
            *self.refused.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
        }
    }

    /// What hyper has not read yet.
    pub(super) fn unread(&self) -> &[u8] {
        self.out.get(self.read..).unwrap_or_default()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let unread = this.unread();
            if !unread.is_empty() {
                let n = unread.len().min(buf.remaining());
                buf.put_slice(&unread[..n]);
                this.read += n;
                if this.read == this.out.len() {
                    this.out.clear();
                    this.read = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.done {
                return Poll::Ready(Ok(()));
            }
            let mut scratch = [0u8; 8192];
            let mut raw = ReadBuf::new(&mut scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut raw))?;
            if raw.filled().is_empty() {
                this.done = true;
                return Poll::Ready(Ok(()));
            }
            this.activity.moved();
            let filled = raw.filled().to_vec();
            this.check(&filled);
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        if written > 0 {
            this.activity.moved();
        }
        Poll::Ready(Ok(written))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
