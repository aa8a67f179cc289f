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
    /// A unary request carried no message, or more than one.
    #[error("expected exactly one request message, got {0}")]
    MessageCount(usize),
    /// The whole body is larger than allowed.
    #[error("body exceeds {limit} bytes")]
    TooLarge { limit: u64 },
}

/// Everything a peer sent on one stream.
#[derive(Debug, Default)]
pub struct Collected {
    /// The messages, in order.
    pub messages: Vec<Message>,
    /// The trailers, if any were sent.
    pub trailers: Option<HeaderMap>,
}

/// Reads the whole body: its messages (each at most `limit` bytes, all together at most `limit` plus framing) and
/// its trailers.
pub async fn collect<B>(mut body: B, limit: u64) -> Result<Collected, ReadError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut decoder = Decoder::new(limit);
    let mut collected = Collected::default();
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
                while let Some(message) = decoder.next_message()? {
                    collected.messages.push(message);
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    collected.trailers = Some(trailers);
                }
            }
        }
    }
    decoder.finish()?;
    Ok(collected)
}

/// Reads a unary request: exactly one message of at most `limit` bytes.
pub async fn read_unary<B>(body: B, limit: u64) -> Result<Message, ReadError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    // Like `collect`, but keeping only the first message: no list to allocate on the cached path.
    let mut body = body;
    let mut decoder = Decoder::new(limit);
    let (mut first, mut count, mut total) = (None, 0, 0u64);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ReadError::Stream(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len() as u64;
        if total > limit.saturating_add(1024) {
            return Err(ReadError::TooLarge { limit });
        }
        decoder.push(data);
        while let Some(message) = decoder.next_message()? {
            count += 1;
            first.get_or_insert(message);
        }
    }
    decoder.finish()?;
    match (first, count) {
        (Some(message), 1) => Ok(message),
        (_, n) => Err(ReadError::MessageCount(n)),
    }
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
            Err(ReadError::MessageCount(2))
        ));
        let none = Full::new(Bytes::new());
        assert!(matches!(
            read_unary(none, 10).await,
            Err(ReadError::MessageCount(0))
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
        let c = collect(body, 10).await.expect("valid");
        assert_eq!(c.messages.len(), 1);
        assert_eq!(
            c.trailers.and_then(|t| t.get("grpc-status").cloned()),
            Some(http::HeaderValue::from_static("0"))
        );
    }
}
