//! Reading whole gRPC bodies on the cached path: exactly one bounded request message, or a backend's whole answer.

use bytes::Bytes;
use http::HeaderMap;
use http_body::Body;
use http_body_util::BodyExt;

use super::frame::{Decoder, FrameError, Message};

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The bytes are not valid gRPC framing, or a message is over the limit.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer's stream failed (reset, connection lost).
    #[error("stream failed: {0}")]
    Stream(String),
    /// A unary body carried no message.
    #[error("expected exactly one message, got none")]
    NoMessage,
    /// A unary body carried a second message (refused there, without reading on).
    #[error("expected exactly one message, got more")]
    SecondMessage,
    /// The whole body is larger than allowed.
    #[error("body exceeds {limit} bytes")]
    TooLarge { limit: u64 },
}

/// A unary body as the peer sent it: at most one message, and the trailers.
#[derive(Debug, Default)]
pub struct Unary {
    /// The message, if one was sent.
    pub message: Option<Message>,
    /// The trailers, if any were sent.
    pub trailers: Option<HeaderMap>,
}

/// Reads a unary body (a request, or a backend's answer): its one message of at most `limit` bytes, if sent, and its
/// trailers. A second message is refused as soon as its prefix arrives, whatever its size (empty ones included).
pub async fn read_unary_body<B>(mut body: B, limit: u64) -> Result<Unary, ReadError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut decoder = Decoder::new(limit);
    let mut unary = Unary::default();
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ReadError::Stream(e.to_string()))?;
        match frame.into_data() {
            Ok(data) => {
                total += data.len() as u64;
                if total > limit.saturating_add(1024) {
                    return Err(ReadError::TooLarge { limit });
                }
                decoder.push(data);
                if unary.message.is_some() && decoder.has_started_a_message() {
                    return Err(ReadError::SecondMessage);
                }
                if let Some(message) = decoder.next_message()? {
                    unary.message = Some(message);
                    if decoder.has_started_a_message() {
                        return Err(ReadError::SecondMessage);
                    }
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    unary.trailers = Some(trailers);
                }
            }
        }
    }
    decoder.finish()?;
    Ok(unary)
}

/// Reads a unary request: exactly one message of at most `limit` bytes.
pub async fn read_unary<B>(body: B, limit: u64) -> Result<Message, ReadError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    read_unary_body(body, limit)
        .await?
        .message
        .ok_or(ReadError::NoMessage)
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;

    fn framed(msg: &[u8]) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        v.extend_from_slice(msg);
        v
    }

    #[tokio::test]
    async fn reads_one_message() {
        let body = Full::new(Bytes::from(framed(b"abc")));
        let m = read_unary(body, 10).await.expect("one message");
        assert_eq!(m.bytes, Bytes::from_static(b"abc"));
    }

    #[tokio::test]
    async fn refuses_two_messages_none_and_oversized() {
        let two = Full::new(Bytes::from([framed(b"a"), framed(b"b")].concat()));
        assert!(matches!(
            read_unary(two, 10).await,
            Err(ReadError::SecondMessage)
        ));
        let none = Full::new(Bytes::new());
        assert!(matches!(
            read_unary(none, 10).await,
            Err(ReadError::NoMessage)
        ));
        let big = Full::new(Bytes::from(framed(&[0; 11])));
        assert!(matches!(
            read_unary(big, 10).await,
            Err(ReadError::Frame(FrameError::TooLarge { .. }))
        ));
    }

    #[tokio::test]
    async fn keeps_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames = vec![
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(framed(b"x")))),
            Ok(http_body::Frame::trailers(trailers)),
        ];
        let body = StreamBody::new(futures::stream::iter(frames)).boxed_unsync();
        let c = read_unary_body(body, 10).await.expect("valid");
        assert!(c.message.is_some());
        assert_eq!(
            c.trailers.and_then(|t| t.get("grpc-status").cloned()),
            Some(http::HeaderValue::from_static("0"))
        );
    }

    /// A peer streaming empty messages is stopped at the second one, not read on: the stream below never ends.
    #[tokio::test]
    async fn stops_at_the_second_message_without_reading_on() {
        let empties = futures::stream::repeat_with(|| {
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(framed(b""))))
        });
        let body = StreamBody::new(empties).boxed_unsync();
        assert!(matches!(
            read_unary_body(body, 10).await,
            Err(ReadError::SecondMessage)
        ));
        // A second message whose prefix arrives in the same chunk as the first.
        let body = Full::new(Bytes::from([framed(b"a"), vec![0, 0]].concat()));
        assert!(matches!(
            read_unary_body(body, 10).await,
            Err(ReadError::SecondMessage)
        ));
    }
}
