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
    crate::constant::accept_until(listener, shutdown, |stream| {
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
    })
    .await
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use strata_proto::demo::v1::catalog_client::CatalogClient;
    use strata_proto::demo::v1::{GetItemRequest, ListItemsRequest};
    use tokio_stream::StreamExt;

    use super::*;
    use crate::backend::{BackendOptions, LocalBackend};

    #[tokio::test]
    async fn calls_answers_and_statuses_pass_through_untouched() {
        let backend = LocalBackend::start(BackendOptions {
            latency: Duration::ZERO,
            size: 10,
            ..BackendOptions::default()
        })
        .await
        .expect("backend");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let relay = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let relaying = tokio::spawn(serve(listener, backend.addr, async {
            let _ = stopped.await;
        }));
        let mut client = CatalogClient::connect(format!("http://{relay}"))
            .await
            .expect("connect");
        let mut direct = CatalogClient::connect(backend.url())
            .await
            .expect("connect");

        let asked = || GetItemRequest {
            id: "item-3".into(),
            ..Default::default()
        };
        let relayed = client.get_item(asked()).await.expect("answered");
        let expected = direct.get_item(asked()).await.expect("answered");
        assert_eq!(relayed.into_inner(), expected.into_inner());

        // A status in the trailers (an unknown id is NOT_FOUND) arrives as the backend sent it.
        let missing = client
            .get_item(GetItemRequest {
                id: "item-99".into(),
                ..Default::default()
            })
            .await
            .expect_err("no such item");
        assert_eq!(missing.code(), tonic::Code::NotFound);

        // A stream of several messages, then its trailers.
        let listed: Vec<_> = client
            .list_items(ListItemsRequest {
                prefix: "item-".into(),
                limit: 5,
            })
            .await
            .expect("stream")
            .into_inner()
            .collect::<Result<_, _>>()
            .await
            .expect("every message");
        assert_eq!(listed.len(), 5);
        // Each relayed call reached the backend once (two relayed, one direct).
        assert_eq!(backend.counters.snapshot().get_item_calls, 3);

        let _ = stop.send(());
        relaying.await.expect("task").expect("stopped cleanly");
        backend.stop();
    }
}
