//! The cached path for a unary call: one bounded request message → key → [`strata_cache::Tiered::get`] → replay.

use tonic::body::Body;

use super::loader::BackendLoader;
use super::{Proxy, passthrough, replay};
use crate::grpc::body;
use crate::grpc::frame;
use crate::layers::deadline::Deadline;
use crate::router::{CacheRule, Route};
use crate::status::GatewayError;

/// Answers a call on a cached route.
pub(super) async fn answer(
    proxy: &Proxy,
    route: &Route,
    rule: &CacheRule,
    request: http::Request<Body>,
    deadline: Deadline,
) -> http::Response<Body> {
    let limit = proxy.options.max_request_bytes;
    let (parts, request_body) = request.into_parts();
    // Bounded by the client's deadline (in `Proxy::handle`) and, for clients that send none, by the backend timeout:
    // a client that never finishes its request cannot hold the call open forever.
    let read =
        tokio::time::timeout(route.backend.timeout, body::read_unary(request_body, limit)).await;
    let message = match read {
        Ok(Ok(message)) => message,
        Ok(Err(err)) => return GatewayError::from_request_read(err, limit).to_response(None),
        Err(_) => {
            return GatewayError::ClientStream(format!(
                "request not received within {:?}",
                route.backend.timeout
            ))
            .to_response(None);
        }
    };

    if message.compressed {
        // Compressed bytes depend on the client's encoder, so they make no stable key: forward without caching.
        let mut bytes = Vec::with_capacity(frame::HEADER_LEN + message.bytes.len());
        bytes.push(1);
        bytes.extend_from_slice(
            &u32::try_from(message.bytes.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        bytes.extend_from_slice(&message.bytes);
        let request = http::Request::from_parts(
            parts,
            Body::new(http_body_util::Full::new(bytes::Bytes::from(bytes))),
        );
        let mut response = passthrough::forward(&route.backend, request, deadline).await;
        if let Some(value) = proxy.cache_status("bypass") {
            response.headers_mut().insert(
                super::CACHE_STATUS_HEADER,
                http::HeaderValue::from_static(value),
            );
        }
        return response;
    }

    let path = parts.uri.path();
    let mut key = strata_cache::KeyBuilder::new(&proxy.options.namespace, path);
    for name in &rule.vary {
        key = key.vary(
            name.as_str(),
            parts.headers.get_all(name).iter().map(|v| v.as_bytes()),
        );
    }
    let key = key.finish(&message.bytes);

    let loader = BackendLoader {
        backend: route.backend.clone(),
        path: parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        headers: parts.headers,
        message: message.bytes,
        deadline,
        max_response_bytes: proxy.options.max_response_bytes,
    };
    match proxy.cache.get(key, &rule.policy, loader).await {
        Ok(lookup) => replay::response(&lookup.entry, proxy.cache_status(lookup.source.as_str())),
        Err(err) => GatewayError::from(&err).to_response(proxy.cache_status("miss")),
    }
}
