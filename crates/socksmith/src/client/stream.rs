//! [`ProxyStream`]: a transport on which the SOCKS handshakes (and HTTP CONNECT exchanges)
//! are done, now a tunnel to the target. It implements tokio's `AsyncRead` and `AsyncWrite` and reports the proxy's bound
//! address.
//!
//! The handshake reads the proxy's replies into a small buffer; the machine never consumes a
//! byte past the final reply, so whatever the target sent early (a server banner arriving
//! together with the reply) stays in that buffer and is read first. After that, reads and
//! writes go straight to the transport: the stream adds no copy. [`ProxyStream::into_parts`]
//! hands back the transport and those early bytes, to relay them with zero-copy.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use socksmith_proto::TargetAddr;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A tunnel through one proxy or a chain of them. See the [client module](crate::client).
#[derive(Debug)]
pub struct ProxyStream<S> {
    io: S,
    /// Bytes read from `io` but not yet consumed: during the handshake the proxies' replies,
    /// afterwards the target's first bytes. `buf[pos..]` is unread.
    buf: Vec<u8>,
    pos: usize,
    bound: TargetAddr,
}

/// The pieces of a [`ProxyStream`]: the transport, the bytes already read from it that belong
/// to the tunnel, and the bound address.
#[derive(Debug)]
#[non_exhaustive]
pub struct ProxyParts<S> {
    /// The transport, positioned after the handshake.
    pub io: S,
    /// Bytes the target sent that were read together with the last reply: deliver them
    /// before anything read from `io`. Usually empty.
    pub read_buf: Vec<u8>,
    /// The proxy's bound address (BND.ADDR and BND.PORT).
    pub bound: TargetAddr,
}

impl<S> ProxyStream<S> {
    /// A stream before any handshake: empty buffer, unspecified bound address.
    pub(crate) fn new(io: S) -> Self {
        ProxyStream {
            io,
            buf: Vec::new(),
            pos: 0,
            bound: TargetAddr::UNSPECIFIED,
        }
    }

    /// The address the proxy reports for the tunnel (BND.ADDR/BND.PORT): for CONNECT the
    /// address the last proxy connects from, for an accepted BIND the peer's address. Many
    /// servers answer `0.0.0.0:0`; SOCKS4 servers often do.
    pub fn bound_addr(&self) -> &TargetAddr {
        &self.bound
    }

    pub(crate) fn set_bound(&mut self, bound: TargetAddr) {
        self.bound = bound;
    }

    /// The transport.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The transport. Reading from it directly skips [`Self::read_buffer`].
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// The bytes already read from the transport and not yet returned by a read (during the
    /// handshake: the proxy's answers, for the machine to consume; then early tunnel bytes).
    pub fn read_buffer(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// The transport, the early bytes and the bound address, for a caller that relays with
    /// the transport itself (see [`crate::relay`]).
    pub fn into_parts(mut self) -> ProxyParts<S> {
        self.buf.drain(..self.pos);
        ProxyParts {
            io: self.io,
            read_buf: self.buf,
            bound: self.bound,
        }
    }

    /// The transport alone. Bytes in [`Self::read_buffer`] are dropped: use
    /// [`Self::into_parts`] when the target may speak first.
    pub fn into_inner(self) -> S {
        self.io
    }

    /// Handshake side: the machine consumed `n` of the pending bytes.
    pub(crate) fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Handshake side: the buffer to read more of the proxy's answer into, and the transport.
    pub(crate) fn buf_and_io(&mut self) -> (&mut Vec<u8>, &mut S) {
        (&mut self.buf, &mut self.io)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ProxyStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let pending = this.read_buffer();
        if !pending.is_empty() {
            let n = pending.len().min(out.remaining());
            out.put_slice(pending.get(..n).unwrap_or_default());
            this.consume(n);
            if this.buf.is_empty() {
                // Early bytes are rare; give their memory back once they are delivered.
                this.buf = Vec::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, out)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ProxyStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn early_bytes_are_read_before_the_transport() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut s = ProxyStream::new(a);
        s.buf.extend_from_slice(b"xxEARLY");
        s.consume(2);
        b.write_all(b" later").await.expect("write");
        drop(b);
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"EARLY later");
    }

    #[tokio::test]
    async fn into_parts_keeps_the_unread_early_bytes() {
        let (a, _b) = tokio::io::duplex(64);
        let mut s = ProxyStream::new(a);
        s.buf.extend_from_slice(b"replyDATA");
        s.consume(5);
        let parts = s.into_parts();
        assert_eq!(parts.read_buf, b"DATA");
    }
}
