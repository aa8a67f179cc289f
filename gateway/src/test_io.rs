//! Test helpers for what the gateway writes to a socket.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// A write half with vectored writes, like a TCP socket's, that counts the writes which carried bytes.
pub(crate) struct CountedWrites<T> {
    inner: T,
    writes: Arc<AtomicUsize>,
}

impl<T> CountedWrites<T> {
    /// `inner`, counting its writes into `writes`.
    pub(crate) fn new(inner: T, writes: Arc<AtomicUsize>) -> Self {
        Self { inner, writes }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CountedWrites<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        // All slices in one write, as writev does (the in-memory pipe takes them one by one).
        let mut written = 0;
        for buf in bufs {
            match Pin::new(&mut self.inner).poll_write(cx, buf) {
                Poll::Ready(Ok(n)) => {
                    written += n;
                    if n < buf.len() {
                        break;
                    }
                }
                Poll::Ready(Err(e)) if written == 0 => return Poll::Ready(Err(e)),
                Poll::Pending if written == 0 => return Poll::Pending,
                _ => break,
            }
        }
        if written > 0 {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
