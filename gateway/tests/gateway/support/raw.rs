//! A bare HTTP/2 gRPC client: sends exactly the bytes and headers given, enforces no deadline of its own, and
//! reports the status the gateway answered with. tonic's client would time a `grpc-timeout` out by itself and hide
//! what the gateway did.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What came back.
#[derive(Debug)]
pub struct RawAnswer {
    /// The `grpc-status` (from the headers or the trailers), `<none>` if absent.
    pub grpc_status: String,
    /// The `grpc-message`, if any.
    pub grpc_message: String,
    /// The `x-strata-cache` header, `<none>` if absent.
    pub cache: String,
    /// The message bytes of the answer (after its 5-byte prefix), if any.
    pub message: Bytes,
}

/// Sends `body` as-is to `path` with `headers` (`content-type: application/grpc` unless they name one) and waits for
/// the whole answer.
pub async fn call(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> RawAnswer {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("te", "trailers");
    if !headers.iter().any(|(name, _)| *name == "content-type") {
        request = request.header("content-type", "application/grpc");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body))).expect("request");
    let response = sender.send_request(request).await.expect("an HTTP answer");
    let head = response.headers().clone();
    let collected = response.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let data = collected.to_bytes();
    let field = |name: &str| {
        head.get(name)
            .or_else(|| trailers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    RawAnswer {
        grpc_status: field("grpc-status").unwrap_or_else(|| "<none>".into()),
        grpc_message: field("grpc-message").unwrap_or_default(),
        cache: field("x-strata-cache").unwrap_or_else(|| "<none>".into()),
        message: data.slice(data.len().min(5)..),
    }
}

/// A protobuf message framed for gRPC (uncompressed).
pub fn framed(message: &impl prost::Message) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&u32::try_from(bytes.len()).expect("small").to_be_bytes());
    out.extend_from_slice(&bytes);
    out
}
