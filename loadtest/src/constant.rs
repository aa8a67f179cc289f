//! The ceiling references of `strata-load compare`: servers that answer every `GetItem` with the sample backend's
//! `item-1` and do nothing else.
//!
//! - [`serve`]: bare hyper sending a pre-encoded reply (status OK in the trailers) — no routing, no decoding, no
//!   allocation beyond hyper's own. No gRPC answer on this box can come faster.
//! - [`serve_tonic`]: the leanest tonic handler — a generated `Catalog` service whose `GetItem` returns a pre-built
//!   message — served by a plain tonic server with its default settings: the ceiling the performance issue names,
//!   what a team would otherwise deploy.
//!
//! Bare hyper, and the tonic handler when asked (`one_write`), serve over the gateway's one-write connection, so that
//! a stricter reference is not beaten by a trick it lacks.

use std::convert::Infallible;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use strata_gateway::one_write::OneWrite;
use strata_proto::demo::v1::catalog_server::{Catalog, CatalogServer};
use strata_proto::demo::v1::{GetItemRequest, Item, ListItemsRequest, PutItemsReply};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// The message the sample backend sends for `item-1`.
fn item() -> Item {
    Item {
        id: "item-1".into(),
        name: "Item number 1".into(),
        price_cents: 106,
        payload: Bytes::from(vec![
            b'x';
            crate::backend::BackendOptions::default().payload_bytes
        ]),
    }
}

/// The reply, framed: the message the sample backend sends for `item-1`, behind gRPC's 5-byte prefix.
pub fn framed_reply() -> Bytes {
    let message = item().encode_to_vec();
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
    accept_until(listener, shutdown, |stream| {
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
        let stream = TokioIo::new(OneWrite(stream));
        tokio::spawn(async move {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(stream, service)
                .await;
        });
    })
    .await
}

/// Hands every connection accepted on `listener` (with `TCP_NODELAY`: small answers leave at once) to `serve`, until
/// `shutdown` completes.
pub async fn accept_until(
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
    mut serve: impl FnMut(tokio::net::TcpStream),
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        serve(stream);
    }
}

/// Serves `demo.v1.Catalog` through tonic on `listener` until `shutdown` completes: `GetItem` answers the pre-built
/// `item-1` whatever the id; the other methods are UNIMPLEMENTED. The server has tonic's default settings (which set
/// `TCP_NODELAY`); with `one_write`, its connections also go through the gateway's one-write wrapper.
pub async fn serve_tonic(
    listener: TcpListener,
    one_write: bool,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let service = CatalogServer::new(ConstantCatalog { item: item() });
    let server = tonic::transport::Server::builder().add_service(service);
    if one_write {
        let incoming = incoming.map(|accepted| accepted.map(OneWrite));
        server
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await?;
    } else {
        server
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await?;
    }
    Ok(())
}

/// `demo.v1.Catalog` answering every `GetItem` with the same message (its payload shared, not copied).
struct ConstantCatalog {
    item: Item,
}

type ItemStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Item, Status>> + Send>>;

#[tonic::async_trait]
impl Catalog for ConstantCatalog {
    async fn get_item(&self, _request: Request<GetItemRequest>) -> Result<Response<Item>, Status> {
        Ok(Response::new(self.item.clone()))
    }

    type ListItemsStream = ItemStream;

    async fn list_items(
        &self,
        _request: Request<ListItemsRequest>,
    ) -> Result<Response<ItemStream>, Status> {
        Err(Status::unimplemented(
            "the constant server answers GetItem only",
        ))
    }

    async fn put_items(
        &self,
        _request: Request<Streaming<Item>>,
    ) -> Result<Response<PutItemsReply>, Status> {
        Err(Status::unimplemented(
            "the constant server answers GetItem only",
        ))
    }

    type LookupItemsStream = ItemStream;

    async fn lookup_items(
        &self,
        _request: Request<Streaming<GetItemRequest>>,
    ) -> Result<Response<ItemStream>, Status> {
        Err(Status::unimplemented(
            "the constant server answers GetItem only",
        ))
    }
}
