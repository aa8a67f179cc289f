//! A deadline the gateway set (`default_timeout`, `max_timeout`) on a streamed answer: when it passes mid-stream,
//! the stream ends with DEADLINE_EXCEEDED trailers and the backend's stream is reset, as the client's own deadline
//! would end it. A backend need not enforce the `grpc-timeout` it was sent on its stream (tonic does not), so the
//! gateway does.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tonic::body::Body;

use crate::error::GatewayError;

/// Bounds `response`'s body by `at` (a deadline of `requested`), unless the answer is already complete
/// (Trailers-Only).
pub(super) fn bound(
    response: http::Response<Body>,
    at: Instant,
    requested: Duration,
) -> http::Response<Body> {
    if response.body().is_end_stream() {
        return response;
    }
    response.map(|inner| {
        Body::new(UntilDeadline {
            inner: Some(inner),
            timer: Box::pin(tokio::time::sleep_until(at)),
            requested,
        })
    })
}

/// A response body that ends with DEADLINE_EXCEEDED trailers when its timer fires first.
struct UntilDeadline {
    /// The backend's body; dropped (resetting its stream) when the deadline passes.
    inner: Option<Body>,
    timer: Pin<Box<Sleep>>,
    requested: Duration,
}

impl http_body::Body for UntilDeadline {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(frame) = Pin::new(inner).poll_frame(cx) {
            if frame.is_none() {
                self.inner = None;
            }
            return Poll::Ready(frame);
        }
        if self.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.inner = None;
        let status = GatewayError::Deadline(self.requested).to_status();
        let mut trailers = http::HeaderMap::new();
        // Only fails for a message that cannot be a header value; the code alone still ends the call right.
        let _ = status.add_header(&mut trailers);
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::sync::mpsc;

    /// A streamed answer whose frames the test sends.
    fn streamed() -> (mpsc::Sender<Frame<Bytes>>, http::Response<Body>) {
        let (sender, receiver) = mpsc::channel(4);
        let frames = futures::stream::unfold(receiver, |mut receiver| async move {
            let frame = receiver.recv().await?;
            Some((Ok::<_, tonic::Status>(frame), receiver))
        });
        let body = Body::new(http_body_util::StreamBody::new(frames));
        (sender, http::Response::new(body))
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_past_the_deadline_ends_with_deadline_exceeded() {
        let (sender, response) = streamed();
        let at = Instant::now() + Duration::from_millis(200);
        let mut body = bound(response, at, Duration::from_millis(200)).into_body();
        sender
            .send(Frame::data(Bytes::from_static(b"one")))
            .await
            .expect("open");
        let first = body.frame().await.expect("a frame").expect("ok");
        assert_eq!(first.into_data().expect("data"), "one");
        // Nothing more comes: at the deadline the stream ends with trailers saying so.
        let last = body.frame().await.expect("a frame").expect("ok");
        let trailers = last.into_trailers().expect("trailers");
        assert_eq!(trailers.get("grpc-status").expect("status"), "4");
        assert!(body.frame().await.is_none());
        assert!(
            sender
                .send(Frame::data(Bytes::from_static(b"late")))
                .await
                .is_err(),
            "the backend's stream was dropped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_ends_in_time_is_relayed_as_it_came() {
        let (sender, response) = streamed();
        let at = Instant::now() + Duration::from_millis(200);
        let body = bound(response, at, Duration::from_millis(200)).into_body();
        sender
            .send(Frame::data(Bytes::from_static(b"one")))
            .await
            .expect("open");
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        sender.send(Frame::trailers(trailers)).await.expect("open");
        drop(sender);
        let collected = body.collect().await.expect("ok");
        assert_eq!(
            collected.trailers().and_then(|t| t.get("grpc-status")),
            Some(&http::HeaderValue::from_static("0"))
        );
        assert_eq!(collected.to_bytes(), "one");
    }
}
