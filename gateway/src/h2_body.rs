//! A body arriving on an HTTP/2 stream (h2's `RecvStream`), for both sides of the gateway: a client's request on
//! the data listener, a backend's answer on the gateway's own backend connections.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::RecvStream;
use http_body::Frame;

/// A body read from an HTTP/2 stream, its flow-control capacity released as it is read (the peer may send more
/// once the gateway has taken what came). Dropped early, the stream is reset, so the peer stops sending.
pub(crate) struct RecvBody {
    recv: RecvStream,
    data_done: bool,
}

impl RecvBody {
    /// The body arriving on `recv`.
    pub(crate) fn new(recv: RecvStream) -> Self {
        Self {
            recv,
            data_done: false,
        }
    }
}

impl http_body::Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                None => self.data_done = true,
            }
        }
        Poll::Ready(match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Some(Ok(Frame::trailers(trailers))),
            Ok(None) => None,
            Err(err) => Some(Err(err)),
        })
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}
