//! The bodies of forwarded requests and responses: a request body that counts its bytes,
//! and a response body that writes the request's log line (bytes both ways, outcome) when
//! the response ends or is dropped.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Instant;

use crate::server::error::SessionError;
use crate::server::http::forward::error_chain;
use crate::server::http::HttpError;
use crate::server::log::End;
use crate::server::stats::add;
use crate::server::Shared;

/// A request body that counts its bytes.
pub(super) struct Counted {
    pub(super) inner: Incoming,
    pub(super) count: Arc<AtomicU64>,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame {
            if let Some(data) = frame.data_ref() {
                this.count.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that writes the request's log line when it ends (or is dropped).
pub(super) struct Logged {
    pub(super) inner: Incoming,
    pub(super) down: u64,
    pub(super) up: Arc<AtomicU64>,
    pub(super) finish: Option<Box<Finish>>,
}

pub(super) struct Finish {
    pub(super) shared: Arc<Shared>,
    pub(super) started: Instant,
    pub(super) end: End,
}

impl Logged {
    fn finish(&mut self, error: Option<SessionError>) {
        let Some(mut finish) = self.finish.take() else {
            return;
        };
        let up = self.up.load(Ordering::Relaxed);
        let stats = &finish.shared.stats;
        add(&stats.bytes_client_to_target, up);
        add(&stats.bytes_target_to_client, self.down);
        finish.end.meter.traffic.up = up;
        finish.end.meter.traffic.down = self.down;
        let Finish {
            shared,
            started,
            end,
        } = &mut *finish;
        end.finish(shared, started.elapsed(), error.as_ref());
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    this.down += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish(None);
                }
            }
            Some(Err(e)) => {
                this.finish(Some(SessionError::Http(HttpError::Origin(error_chain(e)))));
            }
            None => this.finish(None),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let error = (!self.inner.is_end_stream()).then(|| {
            SessionError::Http(HttpError::Origin(
                "the response was cut short (the client or the origin closed)".into(),
            ))
        });
        self.finish(error);
    }
}
