//! One call of a data connection, served on its HTTP/2 stream: the stack's answer sent back — its head, its body as
//! it comes within the client's flow-control windows, its trailers — and the call dropped (cancelled) as soon as the
//! client resets the stream.

use std::convert::Infallible;
use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::task::Poll;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, SendStream};
use http_body::Body as _;
use tonic::body::Body;

/// What is left of a call once its answer is sent: its answer's body, which records the call's metrics and access
/// log line when dropped. The connection drops it once the answer has been written, so that this work does not hold
/// the answer back.
pub struct Answered {
    _body: Option<Body>,
}

/// Serves one call: waits for `call` (the stack's answer), then sends it on `respond`. A client that resets the
/// stream meanwhile cancels the call: it is dropped where it stands.
pub async fn serve(
    call: impl Future<Output = Result<http::Response<Body>, Infallible>>,
    mut respond: SendResponse<Bytes>,
) -> Answered {
    let mut call = pin!(call);
    // The call first: with the answer ready, there is no need to ask about a reset (the send would see it anyway).
    let answer = poll_fn(|cx| match call.as_mut().poll(cx) {
        Poll::Ready(Ok(answer)) => Poll::Ready(Some(answer)),
        Poll::Ready(Err(never)) => match never {},
        Poll::Pending => respond.poll_reset(cx).map(|_| None),
    })
    .await;
    let Some(answer) = answer else {
        return Answered { _body: None };
    };
    let (head, body) = answer.into_parts();
    let end = body.is_end_stream();
    let stream = match respond.send_response(http::Response::from_parts(head, ()), end) {
        Ok(stream) => stream,
        Err(err) => {
            // A head HTTP/2 cannot carry (a connection-specific header), or a stream the client reset just now.
            tracing::debug!(error = %err, "an answer's head could not be sent; the stream is reset");
            respond.send_reset(Reason::INTERNAL_ERROR);
            return Answered { _body: Some(body) };
        }
    };
    if end {
        return Answered { _body: Some(body) };
    }
    Answered {
        _body: Some(send_body(body, stream).await),
    }
}

/// Sends `body` on `stream` as it comes: data within the client's flow control, then its trailers (or an empty last
/// DATA frame). Stops early if the client resets the stream; a body that fails resets it. Hands the body back.
async fn send_body(mut body: Body, mut stream: SendStream<Bytes>) -> Body {
    loop {
        let next = poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
            Poll::Ready(next) => Poll::Ready(Some(next)),
            Poll::Pending => stream.poll_reset(cx).map(|_| None),
        })
        .await;
        let Some(next) = next else {
            // The client reset the stream: nothing more to send.
            return body;
        };
        match next.map(|frame| frame.map(http_body::Frame::into_data)) {
            Some(Ok(Ok(data))) => {
                let end = body.is_end_stream();
                if !send_data(&mut stream, data, end).await || end {
                    return body;
                }
            }
            Some(Ok(Err(frame))) => {
                match frame.into_trailers() {
                    Ok(trailers) => {
                        let _ = stream.send_trailers(trailers);
                    }
                    // Neither data nor trailers: nothing HTTP/2 can carry.
                    Err(_) => stream.send_reset(Reason::INTERNAL_ERROR),
                }
                return body;
            }
            None => {
                let _ = stream.send_data(Bytes::new(), true);
                return body;
            }
            Some(Err(status)) => {
                tracing::debug!(error = %status, "an answer's body failed; the stream is reset");
                stream.send_reset(reset_reason(&status));
                return body;
            }
        }
    }
}

/// Sends `data` once the stream has any send capacity; false if the stream is gone. h2 queues what goes beyond the
/// client's window (up to its send buffer's limit, past which it grants no capacity): a slow reader holds back its own
/// answer, and a stream waiting for capacity claims one byte of the connection's window, not the whole message.
async fn send_data(stream: &mut SendStream<Bytes>, data: Bytes, end: bool) -> bool {
    if !data.is_empty() {
        stream.reserve_capacity(1);
        while stream.capacity() == 0 {
            match poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return false,
            }
        }
    }
    stream.send_data(data, end).is_ok()
}

/// The reset a failed body ends its stream with: the HTTP/2 reason that failed it upstream (a backend that reset its
/// own stream, say), else `INTERNAL_ERROR`.
fn reset_reason(status: &tonic::Status) -> Reason {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if let Some(reason) = err.downcast_ref::<h2::Error>().and_then(h2::Error::reason) {
            return reason;
        }
        source = err.source();
    }
    Reason::INTERNAL_ERROR
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use futures::StreamExt;
    use http_body::Frame;
    use http_body_util::StreamBody;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::*;

    /// Serves the first call of an HTTP/2 connection with `serve(call, …)`; the client end of the connection and the
    /// task serving the call.
    async fn one_call<F>(call: F) -> (h2::client::SendRequest<Bytes>, JoinHandle<Answered>)
    where
        F: Future<Output = Result<http::Response<Body>, Infallible>> + Send + 'static,
    {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let (started, respond) = oneshot::channel();
        tokio::spawn(async move {
            let mut connection = h2::server::handshake(server_io).await.expect("handshake");
            if let Some(Ok((_, respond))) = connection.accept().await {
                let _ = started.send(respond);
            }
            // The connection's reads and writes, for as long as the client keeps it.
            while connection.accept().await.is_some() {}
        });
        let (client, connection) = h2::client::handshake(client_io).await.expect("handshake");
        tokio::spawn(connection);
        let served = tokio::spawn(async move {
            let respond = respond.await.expect("a call came");
            serve(call, respond).await
        });
        (client, served)
    }

    fn request() -> http::Request<()> {
        http::Request::post("http://gateway/pkg.Service/Method")
            .body(())
            .expect("request")
    }

    fn answer(body: Body) -> Result<http::Response<Body>, Infallible> {
        Ok(http::Response::builder()
            .header("content-type", "application/grpc")
            .body(body)
            .expect("answer"))
    }

    /// A body of `frames`, then waiting for ever.
    fn body_of(frames: Vec<Result<Frame<Bytes>, tonic::Status>>, ends: bool) -> Body {
        let frames = futures::stream::iter(frames);
        if ends {
            Body::new(StreamBody::new(frames))
        } else {
            Body::new(StreamBody::new(frames.chain(futures::stream::pending())))
        }
    }

    async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), future)
            .await
            .unwrap_or_else(|_| panic!("{what} took longer than 5 s"))
    }

    /// Sets its flag when dropped.
    struct NotesDrop(Arc<AtomicBool>);

    impl Drop for NotesDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_call_the_client_resets_before_it_answers_is_dropped() {
        let dropped = Arc::new(AtomicBool::new(false));
        let held = NotesDrop(dropped.clone());
        let call = async move {
            let _held = held;
            std::future::pending::<Result<http::Response<Body>, Infallible>>().await
        };
        let (mut client, served) = one_call(call).await;
        let (_, mut stream) = client.send_request(request(), false).expect("sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!dropped.load(Ordering::SeqCst), "the call runs");
        stream.send_reset(Reason::CANCEL);
        within("the call's end", served).await.expect("served");
        assert!(dropped.load(Ordering::SeqCst), "the call was dropped");
    }

    #[tokio::test]
    async fn a_client_reset_while_the_answer_streams_ends_the_call() {
        let first = Ok(Frame::data(Bytes::from_static(b"first")));
        let call = std::future::ready(answer(body_of(vec![first], false)));
        let (mut client, served) = one_call(call).await;
        let (response, mut stream) = client.send_request(request(), false).expect("sent");
        let mut body = within("the answer", response)
            .await
            .expect("answered")
            .into_body();
        let data = within("the first message", body.data()).await;
        assert_eq!(data.expect("data").expect("data"), "first");
        stream.send_reset(Reason::CANCEL);
        within("the call's end", served).await.expect("served");
    }

    #[tokio::test]
    async fn a_body_that_fails_resets_the_stream_with_the_reason_upstream() {
        for (failure, reason) in [
            (
                tonic::Status::from_error(Box::new(h2::Error::from(Reason::CANCEL))),
                Reason::CANCEL,
            ),
            (tonic::Status::internal("a bug"), Reason::INTERNAL_ERROR),
        ] {
            let frames = vec![Ok(Frame::data(Bytes::from_static(b"first"))), Err(failure)];
            let call = std::future::ready(answer(body_of(frames, false)));
            let (mut client, served) = one_call(call).await;
            let (response, _stream) = client.send_request(request(), true).expect("sent");
            // The reset may reach the client before it has read the head: then the answer itself fails.
            let failed = match within("the answer", response).await {
                Err(err) => err,
                Ok(answer) => {
                    let mut body = answer.into_body();
                    loop {
                        match within("the body", body.data()).await {
                            Some(Ok(_)) => {}
                            Some(Err(err)) => break err,
                            None => panic!("the body ended without a reset"),
                        }
                    }
                }
            };
            assert_eq!(failed.reason(), Some(reason), "{failed}");
            within("the call's end", served).await.expect("served");
        }
    }

    #[tokio::test]
    async fn an_answer_larger_than_the_clients_window_arrives_whole_with_its_trailers() {
        // 3 MiB in 64 KiB messages: far past the client's 64 KiB window and h2's send buffer.
        let message = Bytes::from((0..64 * 1024).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        let mut frames: Vec<_> = (0..48).map(|_| Ok(Frame::data(message.clone()))).collect();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        frames.push(Ok(Frame::trailers(trailers)));
        let call = std::future::ready(answer(body_of(frames, true)));
        let (mut client, served) = one_call(call).await;
        let (response, _stream) = client.send_request(request(), true).expect("sent");
        let mut body = within("the answer", response)
            .await
            .expect("answered")
            .into_body();
        let mut received = Vec::new();
        while let Some(data) = within("the body", body.data()).await {
            let data = data.expect("data");
            let _ = body.flow_control().release_capacity(data.len());
            received.extend_from_slice(&data);
        }
        assert_eq!(received.len(), 48 * message.len());
        assert!(received.chunks(message.len()).all(|m| m == message));
        let trailers = within("the trailers", body.trailers())
            .await
            .expect("trailers");
        assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
        within("the call's end", served).await.expect("served");
    }

    #[tokio::test]
    async fn a_head_http2_cannot_carry_resets_the_stream() {
        let call = std::future::ready(Ok(http::Response::builder()
            .header("connection", "keep-alive")
            .body(Body::empty())
            .expect("answer")));
        let (mut client, served) = one_call(call).await;
        let (response, _stream) = client.send_request(request(), true).expect("sent");
        let failed = within("the answer", response).await.expect_err("reset");
        assert_eq!(failed.reason(), Some(Reason::INTERNAL_ERROR), "{failed}");
        within("the call's end", served).await.expect("served");
    }
}
