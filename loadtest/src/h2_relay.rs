//! The h2 floor of `scripts/cost-per-call`: the least work a gRPC proxy built on the `h2` crate — as Strata is — can
//! do per forwarded call. Each client connection is one h2 server connection; every call goes to the backend on one
//! shared h2 client connection, as it came (headers, messages, trailers), and nothing else happens: no routing, no
//! deadline, no limits, no metrics, no hyper. What Strata costs above this row is its own; what this row costs above
//! nginx is HTTP/2 as h2 does it.
//!
//! A reference for measurements, not a proxy to deploy: a call the backend fails is reset, not answered with a
//! status.

use bytes::Bytes;
use h2::RecvStream;
use h2::client::SendRequest;
use h2::server::SendResponse;
use tokio::net::{TcpListener, TcpStream};

/// Relays every call accepted on `listener` to the gRPC server at `backend` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    backend: std::net::SocketAddr,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let tcp = TcpStream::connect(backend).await?;
    tcp.set_nodelay(true)?;
    let (to_backend, connection) = h2::client::handshake(tcp).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(error = %err, "backend connection ended");
        }
    });
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let to_backend = to_backend.clone();
        tokio::spawn(async move {
            let Ok(mut connection) = h2::server::handshake(stream).await else {
                return;
            };
            while let Some(Ok((request, respond))) = connection.accept().await {
                // A task per call, as h2's own server examples have it.
                let to_backend = to_backend.clone();
                tokio::spawn(async move {
                    if let Err(err) = relay(to_backend, request, respond).await {
                        tracing::debug!(error = %err, "call not relayed");
                    }
                });
            }
        });
    }
}

/// Sends one call to the backend and its answer back.
async fn relay(
    to_backend: SendRequest<Bytes>,
    request: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) -> Result<(), h2::Error> {
    let (mut parts, request_body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(http::uri::Scheme::HTTP);
    uri.authority = Some(http::uri::Authority::from_static("backend"));
    uri.path_and_query = Some(path);
    parts.uri = http::Uri::from_parts(uri).unwrap_or_default();
    let mut to_backend = to_backend.ready().await?;
    let (response, mut request_stream) =
        to_backend.send_request(http::Request::from_parts(parts, ()), false)?;
    pipe(request_body, &mut request_stream).await?;
    let (parts, response_body) = response.await?.into_parts();
    let mut response_stream =
        respond.send_response(http::Response::from_parts(parts, ()), false)?;
    pipe(response_body, &mut response_stream).await
}

/// Sends what `from` receives — data, then trailers or the end — on `to`.
async fn pipe(mut from: RecvStream, to: &mut h2::SendStream<Bytes>) -> Result<(), h2::Error> {
    while let Some(data) = from.data().await {
        let data = data?;
        let _ = from.flow_control().release_capacity(data.len());
        to.send_data(data, false)?;
    }
    match from.trailers().await? {
        Some(trailers) => to.send_trailers(trailers),
        None => to.send_data(Bytes::new(), true),
    }
}
