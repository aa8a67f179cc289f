//! Reading whole gRPC bodies on the cached path: exactly one bounded request message, or a backend's whole answer.

use std::time::Duration;

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
pub async fn read_unary_body<B>(body: B, limit: u64) -> Result<Unary, ReadError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    match read_shape(body, limit, None).await? {
        Shape::Unary(unary) => Ok(unary),
        Shape::Stream(_) => Err(ReadError::SecondMessage),
    }
}

/// What a body read up to its first message turned out to be.
#[derive(Debug)]
pub enum Shape<B> {
    /// At most one message, then the end of the body: what a unary call sends (and a unary backend answers).
    Unary(Unary),
    /// A stream: a second message began, or the first was not followed by the end of the body within the wait.
    /// Holds every byte read so far, then the rest of the body, to be sent on exactly as it came.
    Stream(Replay<B>),
}

/// Reads a body whose method may be unary or streaming (the gateway has no descriptor for it) up to what tells the
/// two apart: the end of the body after one message (at most `limit` bytes) is [`Shape::Unary`]; a second message,
/// no first byte within `end_wait` (a bidirectional client waiting for the answer's headers before it sends), or no
/// end within `end_wait` after the first message (a client waiting for an answer, a server stream that has sent one
/// message so far), is [`Shape::Stream`], replayable from its first byte.
pub async fn read_unary_or_stream<B>(
    body: B,
    limit: u64,
    end_wait: Duration,
) -> Result<Shape<B>, ReadError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    read_shape(body, limit, Some(end_wait)).await
}

/// Reads a body up to what tells a unary one from a stream. With `end_wait`, the waits before the first byte and
/// after the first message are bounded by it, and the bytes read are kept to be replayed; without, nothing is kept
/// (the caller refuses a stream) and only the body's end bounds a wait.
async fn read_shape<B>(
    mut body: B,
    limit: u64,
    end_wait: Option<Duration>,
) -> Result<Shape<B>, ReadError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut decoder = Decoder::new(limit);
    let mut unary = Unary::default();
    let mut read = Vec::new();
    let mut total: u64 = 0;
    loop {
        // Bounded while nothing was sent yet and once one message is whole; a message on its way is waited for.
        let between_messages = total == 0 || unary.message.is_some();
        let next = match end_wait {
            Some(wait) if between_messages && !body.is_end_stream() => {
                match tokio::time::timeout(wait, body.frame()).await {
                    Ok(next) => next,
                    Err(_) => return Ok(Shape::Stream(Replay::new(read, body))),
                }
            }
            _ => body.frame().await,
        };
        let Some(frame) = next else { break };
        let frame = frame.map_err(|e| ReadError::Stream(e.to_string()))?;
        match frame.into_data() {
            Ok(data) => {
                total += data.len() as u64;
                if total > limit.saturating_add(1024) {
                    return Err(ReadError::TooLarge { limit });
                }
                if end_wait.is_some() {
                    read.push(data.clone());
                }
                decoder.push(data);
                if unary.message.is_some() && decoder.has_started_a_message() {
                    return Ok(Shape::Stream(Replay::new(read, body)));
                }
                if let Some(message) = decoder.next_message()? {
                    unary.message = Some(message);
                    if decoder.has_started_a_message() {
                        return Ok(Shape::Stream(Replay::new(read, body)));
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
    Ok(Shape::Unary(unary))
}

/// A body of which some data was already read: that data first, as it came, then the rest of the body.
#[derive(Debug)]
pub struct Replay<B> {
    read: std::collections::VecDeque<Bytes>,
    rest: B,
}

impl<B> Replay<B> {
    fn new(read: Vec<Bytes>, rest: B) -> Self {
        Self {
            read: read.into(),
            rest,
        }
    }
}

impl<B> Body for Replay<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        if let Some(data) = self.read.pop_front() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(data))));
        }
        std::pin::Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.rest.is_end_stream()
    }
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

    /// Collects a replayed body's data and trailers.
    async fn replayed<B>(replay: Replay<B>) -> (Bytes, Option<HeaderMap>)
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Debug,
    {
        let collected = replay.collect().await.expect("replays");
        let trailers = collected.trailers().cloned();
        (collected.to_bytes(), trailers)
    }

    #[tokio::test]
    async fn one_message_then_the_end_is_unary_whatever_the_wait() {
        let body = Full::new(Bytes::from(framed(b"abc")));
        let shape = read_unary_or_stream(body, 10, Duration::ZERO)
            .await
            .expect("valid");
        let Shape::Unary(unary) = shape else {
            panic!("a unary body read as a stream")
        };
        assert_eq!(
            unary.message.map(|m| m.bytes),
            Some(Bytes::from_static(b"abc"))
        );
    }

    /// A second message makes a stream, replayed byte for byte with what follows it and the trailers.
    #[tokio::test]
    async fn a_second_message_makes_a_stream_replayed_as_it_came() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let chunks = [
            framed(b"one"),
            framed(b"two")[..3].to_vec(),
            framed(b"two")[3..].to_vec(),
            framed(b"three"),
        ];
        let mut frames: Vec<Result<_, std::convert::Infallible>> = chunks
            .iter()
            .map(|c| Ok(http_body::Frame::data(Bytes::from(c.clone()))))
            .collect();
        frames.push(Ok(http_body::Frame::trailers(trailers)));
        let body = StreamBody::new(futures::stream::iter(frames)).boxed_unsync();
        let shape = read_unary_or_stream(body, 10, Duration::from_secs(3600))
            .await
            .expect("valid");
        let Shape::Stream(replay) = shape else {
            panic!("two messages read as unary")
        };
        let (bytes, trailers) = replayed(replay).await;
        assert_eq!(bytes, Bytes::from(chunks.concat()));
        assert!(trailers.is_some_and(|t| t.contains_key("grpc-status")));
    }

    /// One message and no end: after the wait it is a stream (a bidirectional client waiting for its first answer),
    /// and what the peer sends later still follows. Time is paused: the wait is exact, not raced.
    #[tokio::test(start_paused = true)]
    async fn no_end_after_the_first_message_within_the_wait_makes_a_stream() {
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        sender
            .send(Ok::<_, std::convert::Infallible>(http_body::Frame::data(
                Bytes::from(framed(b"hello")),
            )))
            .await
            .expect("open");
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(receiver));
        let started = tokio::time::Instant::now();
        let shape = read_unary_or_stream(body, 10, Duration::from_millis(100))
            .await
            .expect("valid");
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        let Shape::Stream(replay) = shape else {
            panic!("an open body read as unary")
        };
        sender
            .send(Ok(http_body::Frame::data(Bytes::from(framed(b"later")))))
            .await
            .expect("open");
        drop(sender);
        let (bytes, _) = replayed(replay).await;
        assert_eq!(
            bytes,
            Bytes::from([framed(b"hello"), framed(b"later")].concat())
        );
    }

    /// Nothing sent within the wait: a stream (a client waiting for the answer's headers before it sends).
    #[tokio::test(start_paused = true)]
    async fn nothing_within_the_wait_makes_a_stream() {
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(receiver));
        let shape = read_unary_or_stream(body, 10, Duration::from_millis(100))
            .await
            .expect("valid");
        let Shape::Stream(replay) = shape else {
            panic!("an open body read as unary")
        };
        sender
            .send(Ok::<_, std::convert::Infallible>(http_body::Frame::data(
                Bytes::from(framed(b"late")),
            )))
            .await
            .expect("open");
        drop(sender);
        assert_eq!(replayed(replay).await.0, Bytes::from(framed(b"late")));
    }

    /// A message on its way is waited for however long it takes (a large request on a slow link).
    #[tokio::test(start_paused = true)]
    async fn a_message_on_its_way_is_waited_for() {
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(receiver));
        let whole = framed(b"slowly");
        sender
            .send(Ok::<_, std::convert::Infallible>(http_body::Frame::data(
                Bytes::copy_from_slice(&whole[..4]),
            )))
            .await
            .expect("open");
        let rest = Bytes::copy_from_slice(&whole[4..]);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let _ = sender.send(Ok(http_body::Frame::data(rest))).await;
        });
        let shape = read_unary_or_stream(body, 10, Duration::from_millis(100))
            .await
            .expect("valid");
        assert!(matches!(
            shape,
            Shape::Unary(Unary {
                message: Some(_),
                ..
            })
        ));
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
