//! A request body on an HTTP/2 stream to a backend, sent as it comes within flow control. (The answer's body is a
//! [`crate::h2_body::RecvBody`].)

use std::future::poll_fn;

use bytes::Bytes;
use futures::FutureExt;
use h2::SendStream;
use http_body::{Body as _, Frame};
use http_body_util::BodyExt;
use tonic::body::Body;

/// Bytes of a request body sent at once, before flow control applies: a unary request is far smaller.
const EAGER_BYTES: usize = 64 * 1024;

/// Sends a request body on `stream`: what is ready now at once, queued behind the HEADERS without waiting for
/// flow-control capacity (so a unary request leaves in one write); the rest from a task of its own, under flow
/// control.
pub(super) fn send_body(mut body: Body, mut stream: SendStream<Bytes>) {
    let mut queued = 0;
    while queued < EAGER_BYTES {
        let Some(next) = body.frame().now_or_never() else {
            break;
        };
        let Some(data) = data_or_finish(&mut stream, next) else {
            return;
        };
        queued += data.len();
        let end = body.is_end_stream();
        if stream.send_data(data, end).is_err() || end {
            return;
        }
    }
    tokio::spawn(pump(body, stream));
}

/// Sends the rest of a request body as it comes, within the backend's flow-control windows; stops early if the
/// backend resets the stream.
async fn pump(mut body: Body, mut stream: SendStream<Bytes>) {
    loop {
        let next = tokio::select! {
            next = body.frame() => next,
            _ = poll_fn(|cx| stream.poll_reset(cx)) => return,
        };
        let Some(data) = data_or_finish(&mut stream, next) else {
            return;
        };
        let end = body.is_end_stream();
        if !send_flow_controlled(&mut stream, data, end).await || end {
            return;
        }
    }
}

/// The data of a request body's next frame; anything else ends the stream — trailers are sent with their end of
/// stream, the body's end as an empty last DATA frame, and a failed body as a reset.
fn data_or_finish(
    stream: &mut SendStream<Bytes>,
    next: Option<Result<Frame<Bytes>, tonic::Status>>,
) -> Option<Bytes> {
    match next {
        Some(Ok(frame)) => match frame.into_data() {
            Ok(data) => Some(data),
            Err(frame) => {
                match frame.into_trailers() {
                    Ok(trailers) => {
                        let _ = stream.send_trailers(trailers);
                    }
                    // Neither data nor trailers: nothing HTTP/2 can carry.
                    Err(_) => stream.send_reset(h2::Reason::INTERNAL_ERROR),
                }
                None
            }
        },
        None => {
            let _ = stream.send_data(Bytes::new(), true);
            None
        }
        Some(Err(_)) => {
            stream.send_reset(h2::Reason::CANCEL);
            None
        }
    }
}

/// Sends `data` in pieces as the windows allow; false if the stream is gone.
async fn send_flow_controlled(stream: &mut SendStream<Bytes>, mut data: Bytes, end: bool) -> bool {
    if data.is_empty() {
        return stream.send_data(data, end).is_ok();
    }
    stream.reserve_capacity(data.len());
    while !data.is_empty() {
        let mut available = stream.capacity();
        while available == 0 {
            match poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(Ok(_)) => available = stream.capacity(),
                Some(Err(_)) | None => return false,
            }
        }
        let piece = data.split_to(available.min(data.len()));
        if stream.send_data(piece, end && data.is_empty()).is_err() {
            return false;
        }
    }
    true
}
