//! End-to-end tests of the gateway: the real gateway, a real gRPC backend and a real `redis-server`, all on random
//! loopback ports. The backend speaks `testing.v1.Lookup`, a protocol the gateway is never compiled against.

mod support;

mod backend_faults;
mod backends;
mod bounds;
mod caching;
mod cli;
mod coalescing;
mod content_types;
mod deadlines;
mod health;
mod hostile;
mod hostile_backend;
mod invalidation;
mod isolation;
mod limits;
mod method_kinds;
mod metrics;
mod passthrough;
mod proto_keys;
mod redis_faults;
mod reload;
mod replicas;
mod runtime;
mod semantics;
mod sharing;
mod tls;
mod traces;

use support::pb::lookup_client::LookupClient;
use support::pb::{GetReply, GetRequest};
use tonic::transport::Channel;

/// One answer through the gateway: the reply, the `x-strata-cache` value, and the response headers.
#[derive(Debug)]
pub struct Answer {
    pub reply: GetReply,
    pub cache: String,
    pub headers: tonic::metadata::MetadataMap,
}

/// Calls `Get` for `key`, as `tenant` when given.
pub async fn get(
    client: &mut LookupClient<Channel>,
    req: GetRequest,
    tenant: Option<&str>,
) -> Result<Answer, tonic::Status> {
    let mut request = tonic::Request::new(req);
    if let Some(t) = tenant {
        request
            .metadata_mut()
            .insert("x-tenant-id", t.parse().expect("ascii tenant"));
    }
    let response = client.get(request).await?;
    let headers = response.metadata().clone();
    let cache = headers
        .get("x-strata-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<none>")
        .to_owned();
    Ok(Answer {
        reply: response.into_inner(),
        cache,
        headers,
    })
}

/// The value of metadata `name` as text, `<none>` when absent (for readable assertions).
pub fn metadata(map: &tonic::metadata::MetadataMap, name: &str) -> String {
    map.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<none>")
        .to_owned()
}

/// A request for `key` with default behaviour.
pub fn key(key: &str) -> GetRequest {
    GetRequest {
        key: key.to_owned(),
        ..Default::default()
    }
}

/// A bidirectional `Chat` of three requests, truly interleaved: each reply is produced only after its request went
/// through, so a gateway that waited for the whole request stream would hang here.
pub async fn chat_interleaved(client: &mut LookupClient<Channel>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<GetRequest>(1);
    let mut replies = client
        .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("chat")
        .into_inner();
    for (i, name) in ["x", "y", "z"].into_iter().enumerate() {
        tx.send(key(name)).await.expect("send");
        let reply = replies
            .message()
            .await
            .expect("ok")
            .expect("a reply per request");
        assert_eq!((reply.key.as_str(), reply.serial), (name, i as u64 + 1));
    }
    drop(tx);
    assert!(replies.message().await.expect("clean end").is_none());
}
