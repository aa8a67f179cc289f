//! Which metadata crosses the gateway on the cached path, in each direction.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use strata_cache::Metadata;

/// Headers that describe a single HTTP/2 exchange or its encoding, never replayed from the cache.
const NOT_REPLAYED: &[&str] = &[
    "content-length",
    "date",
    "grpc-encoding",
    "grpc-accept-encoding",
    "grpc-status",
    "grpc-message",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    crate::grpc::CACHE_STATUS_HEADER,
];

/// Metadata only the caller whose own request fetched the answer may see (never stored, never shared).
#[derive(Debug, Default)]
pub struct PrivateMetadata {
    /// Private response headers.
    pub headers: Vec<Metadata>,
    /// Private response trailers.
    pub trailers: Vec<Metadata>,
}

impl PrivateMetadata {
    /// Whether the answer sets a cookie.
    pub fn sets_cookie(&self) -> bool {
        self.headers
            .iter()
            .chain(&self.trailers)
            .any(|m| m.name == "set-cookie")
    }
}

/// Where a loader leaves the private metadata for its own caller.
pub type PrivateSink = Arc<Mutex<Option<PrivateMetadata>>>;

/// The metadata of a backend answer worth relaying, split into what may be stored and replayed to any caller, and
/// what only the caller whose request fetched it may see (`is_private`: `set-cookie` and the configured list).
pub fn replayable(
    headers: &HeaderMap,
    is_private: impl Fn(&str) -> bool,
) -> (Vec<Metadata>, Vec<Metadata>) {
    let mut shared = Vec::new();
    let mut private = Vec::new();
    for (name, value) in headers {
        if NOT_REPLAYED.contains(&name.as_str()) {
            continue;
        }
        let pair = Metadata {
            name: name.as_str().to_owned(),
            value: Bytes::copy_from_slice(value.as_bytes()),
        };
        if is_private(name.as_str()) {
            private.push(pair);
        } else {
            shared.push(pair);
        }
    }
    (shared, private)
}

/// Appends stored metadata to a response header map, skipping any pair that is not a valid header.
pub fn append(target: &mut HeaderMap, metadata: &[Metadata]) {
    for m in metadata {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(m.name.as_bytes()),
            HeaderValue::from_maybe_shared(m.value.clone()),
        ) {
            target.append(name, value);
        }
    }
}

/// The client's request headers, prepared for the backend call on the cached path: no compression negotiation
/// (answers are stored uncompressed). The fetch's own deadline replaces the client's (`Backend::call`).
pub fn for_backend(mut headers: HeaderMap) -> HeaderMap {
    headers.remove("grpc-accept-encoding");
    headers.remove("grpc-encoding");
    headers.remove(http::header::CONTENT_LENGTH);
    headers
}
