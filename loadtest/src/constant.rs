//! The ceiling reference of `strata-load compare`: an HTTP/2 server that answers every call with the same
//! pre-encoded gRPC reply (the sample backend's `item-1`, status OK in the trailers) and does nothing else — no
//! routing, no decoding, no allocation beyond hyper's own. No gRPC answer on this box can come faster.

use std::convert::Infallible;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use strata_gateway::one_write::OneWrite;
use tokio::net::TcpListener;

/// The reply, framed: the message the sample backend sends for `item-1`, behind gRPC's 5-byte prefix.
pub fn framed_reply() -> Bytes {
    let item = strata_proto::demo::v1::Item {
        id: "item-1".into(),
        name: "Item number 1".into(),
        price_cents: 106,
        payload: Bytes::from(vec![
            b'x';
            crate::backend::BackendOptions::default().payload_bytes
        ]),
    };
    let message = item.encode_to_vec();
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    framed.put_slice(&message);
    framed.freeze()
}

/// Serves the constant reply on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let reply = framed_reply();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let (reply, trailers) = (reply.clone(), trailers.clone());
        let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let (reply, trailers) = (reply.clone(), trailers.clone());
            async move {
                // Read the call to its end, as any server must, then answer.
                let _ = request.into_body().collect().await;
                let frames = [
                    Ok::<_, Infallible>(Frame::data(reply)),
                    Ok(Frame::trailers(trailers)),
                ];
                http::Response::builder()
                    .header("content-type", "application/grpc")
                    .body(StreamBody::new(futures::stream::iter(frames)))
            }
        });
        // The gateway's single-write connection too: a ceiling must not be beaten by a trick it lacks.
        let stream = TokioIo::new(OneWrite(stream));
        tokio::spawn(async move {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(stream, service)
                .await;
        });
    }
}
