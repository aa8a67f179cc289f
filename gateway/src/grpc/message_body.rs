//! A response or request body of at most one gRPC message and optional trailers, made from bytes at hand (a cached
//! answer replayed, a request message sent to the backend).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};

use super::frame;

/// Messages shorter than this go out as one DATA frame with their prefix, as gRPC servers send them: one frame
/// less for both ends to handle, and h2 copies frames this small into its write buffer anyway.
const ONE_FRAME_BELOW: usize = 1024;

/// A response body of at most one message followed by optional trailers. A message of 1 KiB or more goes out as the
/// shared bytes it is stored in (no copy); a smaller one is copied once behind its prefix, into one DATA frame.
#[derive(Debug)]
pub struct MessageBody {
    prefix: Option<Bytes>,
    message: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl MessageBody {
    /// One framed message, then `trailers` if given.
    pub fn new(message: Bytes, trailers: Option<HeaderMap>) -> Self {
        if message.len() < ONE_FRAME_BELOW {
            return Self {
                prefix: None,
                message: Some(frame::framed(&message)),
                trailers,
            };
        }
        Self {
            prefix: Some(frame::header(message.len())),
            message: Some(message),
            trailers,
        }
    }
}

impl http_body::Body for MessageBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        let next = if let Some(prefix) = this.prefix.take() {
            Some(Frame::data(prefix))
        } else if let Some(message) = this.message.take() {
            Some(Frame::data(message))
        } else {
            this.trailers.take().map(Frame::trailers)
        };
        Poll::Ready(next.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.message.is_none() && self.trailers.is_none()
    }

    /// At least the bytes left, with no upper bound: an exact hint makes a hyper server add a `content-length` to the
    /// answer, which gRPC servers do not send (and the gateway does not store), at the cost of an allocation and one
    /// more header to encode per call. (The data listener is served by h2 itself now, which adds nothing either way.)
    fn size_hint(&self) -> SizeHint {
        let len = self.prefix.as_ref().map_or(0, Bytes::len)
            + self.message.as_ref().map_or(0, Bytes::len);
        let mut hint = SizeHint::new();
        hint.set_lower(len as u64);
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// The DATA frames of `body`, in order.
    async fn data_frames(mut body: MessageBody) -> Vec<Bytes> {
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("infallible").into_data() {
                frames.push(data);
            }
        }
        frames
    }

    #[test]
    fn the_size_is_not_announced_so_no_content_length_is_added() {
        let body = MessageBody::new(Bytes::from_static(b"\x0a\x06item-1"), None);
        assert_eq!(http_body::Body::size_hint(&body).exact(), None);
        assert_eq!(http_body::Body::size_hint(&body).lower(), 13);
    }

    #[tokio::test]
    async fn a_small_message_is_one_data_frame_a_large_one_is_shared_not_copied() {
        let small = Bytes::from(vec![7; 545]);
        let frames = data_frames(MessageBody::new(small.clone(), None)).await;
        assert_eq!(frames.len(), 1, "prefix and message in one frame");
        assert_eq!(&frames[0][..5], &[0, 0, 0, 2, 33]);
        assert_eq!(frames[0][5..], small[..]);

        let large = Bytes::from(vec![7; 4096]);
        let frames = data_frames(MessageBody::new(large.clone(), None)).await;
        assert_eq!(frames.len(), 2, "prefix, then the message itself");
        assert_eq!(&frames[0][..], &[0, 0, 0, 16, 0]);
        assert_eq!(
            frames[1].as_ptr(),
            large.as_ptr(),
            "the cached bytes, not a copy"
        );
    }
}
