//! A connection that tells HTTP/2 it has no vectored writes, so that a small answer leaves in one write.
//!
//! h2 writes a DATA frame of 256 bytes or more straight from the message's buffer (no copy) when the connection can
//! write vectored, and must then flush before it can queue anything behind it: a 545-byte gRPC answer leaves as
//! HEADERS + DATA in one `writev` and its trailers in a second, each a TCP segment that wakes the client. Without
//! vectored writes h2 copies DATA frames under 1 KiB into its buffer instead, and the trailers join them: one write
//! per answer. Copying a few hundred bytes costs far less than a system call and a wake-up; larger frames are still
//! sent without a copy.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream whose writes are never vectored (see the module docs for why).
#[derive(Debug)]
pub struct OneWrite<T>(pub T);

impl<T: AsyncRead + Unpin> AsyncRead for OneWrite<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for OneWrite<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        // Callers that ask anyway get the first non-empty slice, as from any stream without vectored writes.
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        Pin::new(&mut self.0).poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// tonic's server can take these connections too (the benchmark's tonic ceiling does).
impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for OneWrite<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, StreamBody};
    use hyper::body::{Frame, Incoming};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    use super::*;
    use crate::test_io::CountedWrites;

    /// The server's writes for the second of two calls answered with a 545-byte message and trailers, as a gRPC
    /// answer from the cache is (the first call settles the connection's settings).
    async fn writes_for_an_answer(one_write: bool) -> usize {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let writes = Arc::new(AtomicUsize::new(0));
        let (server_reads, server_writes) = tokio::io::split(server_io);
        let counted = tokio::io::join(
            server_reads,
            CountedWrites::new(server_writes, writes.clone()),
        );
        let service = hyper::service::service_fn(|request: http::Request<Incoming>| async move {
            let _ = request.into_body().collect().await;
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            let frames = [
                Ok::<_, Infallible>(Frame::data(Bytes::from(vec![0; 545]))),
                Ok(Frame::trailers(trailers)),
            ];
            Ok::<_, Infallible>(http::Response::new(StreamBody::new(futures::stream::iter(
                frames,
            ))))
        });
        let server = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        if one_write {
            tokio::spawn(server.serve_connection(TokioIo::new(OneWrite(counted)), service));
        } else {
            tokio::spawn(server.serve_connection(TokioIo::new(counted), service));
        }
        let (mut client, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client_io))
                .await
                .expect("handshake");
        tokio::spawn(connection);
        let mut before = 0;
        for _ in 0..2 {
            before = writes.load(Ordering::Relaxed);
            let request = http::Request::post("http://gateway/demo.v1.Catalog/GetItem")
                .body(Empty::<Bytes>::new())
                .expect("request");
            let answer = client.send_request(request).await.expect("answer");
            let collected = answer.into_body().collect().await.expect("body");
            assert_eq!(collected.trailers().expect("trailers")["grpc-status"], "0");
        }
        writes.load(Ordering::Relaxed) - before
    }

    #[tokio::test]
    async fn a_small_answer_leaves_in_one_write() {
        assert_eq!(writes_for_an_answer(true).await, 1);
        // What it is for: over a stream with vectored writes, h2 sends the trailers in a write of their own.
        assert_eq!(writes_for_an_answer(false).await, 2);
    }
}
