//! The cache's [`Loader`] for a gRPC call: send the one request message to the backend and collect its whole answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http::uri::PathAndQuery;
use strata_cache::{Entry, Fetched, LoadError, Loader};
use tonic::Code;
use tonic::body::Body;

use super::metadata;
use super::replay::MessageBody;
use crate::backend::Backend;
use crate::grpc::body::{self, ReadError};
use crate::grpc::frame::FrameError;
use crate::layers::deadline::Deadline;
use crate::status::{GatewayError, code_for_http_status};

/// Fetches one unary answer from a backend on behalf of the cache.
#[derive(Debug)]
pub struct BackendLoader {
    /// Where to send the call.
    pub backend: Arc<Backend>,
    /// The method path.
    pub path: PathAndQuery,
    /// The client's request headers (prepared for the backend in [`Loader::load`]).
    pub headers: HeaderMap,
    /// The request message.
    pub message: Bytes,
    /// The client's deadline.
    pub deadline: Deadline,
    /// Largest answer to collect.
    pub max_response_bytes: u64,
}

impl Loader for BackendLoader {
    async fn load(self) -> Result<Fetched, LoadError> {
        let budget = self.deadline.remaining_within(self.backend.timeout);
        let backend = self.backend.clone();
        let fetch = async {
            let mut request = http::Request::new(Body::new(MessageBody::new(self.message, None)));
            *request.method_mut() = http::Method::POST;
            *request.uri_mut() = http::Uri::from(self.path);
            *request.headers_mut() = metadata::for_backend(self.headers, budget);
            let response = backend.call(request).await?;
            collect_answer(&backend, response, self.max_response_bytes).await
        };
        match tokio::time::timeout(budget, fetch).await {
            Ok(Ok(fetched)) => Ok(fetched),
            // The channel's own deadline timer fired first: report it the same way as ours.
            Ok(Err(GatewayError::BackendDeadline { .. })) => Err(LoadError::new(timed_out(
                &self.backend,
                budget,
                self.deadline,
            ))),
            Ok(Err(err)) => Err(LoadError::new(err)),
            Err(_) => Err(LoadError::new(timed_out(
                &self.backend,
                budget,
                self.deadline,
            ))),
        }
    }
}

fn timed_out(backend: &Backend, budget: Duration, deadline: Deadline) -> GatewayError {
    match deadline.requested() {
        // The client's own deadline ran out first.
        Some(requested) if budget < backend.timeout => GatewayError::Deadline(requested),
        _ => GatewayError::BackendTimeout {
            backend: backend.name().to_owned(),
            timeout: backend.timeout,
        },
    }
}

/// Reads the backend's whole answer. OK with exactly one uncompressed message is cacheable; any other status is an
/// answer relayed as is but never stored; a broken answer is an error.
async fn collect_answer(
    backend: &Backend,
    response: http::Response<Body>,
    max_response_bytes: u64,
) -> Result<Fetched, GatewayError> {
    let protocol = |reason: String| GatewayError::BackendProtocol {
        backend: backend.name().to_owned(),
        reason,
    };
    let (parts, body) = response.into_parts();
    if parts.status != http::StatusCode::OK {
        let code = code_for_http_status(parts.status);
        return Ok(uncacheable(status_only(
            code as i32,
            format!("backend answered HTTP {}", parts.status),
        )));
    }
    // Trailers-Only: the status came with the headers and there is no body.
    if let Some(code) = parts.headers.get("grpc-status") {
        let code =
            parse_code(code.as_bytes()).ok_or_else(|| protocol("invalid grpc-status".into()))?;
        let mut entry = status_only(code, header_text(&parts.headers, "grpc-message"));
        entry.headers = metadata::replayable(&parts.headers);
        return Ok(uncacheable(entry));
    }

    let collected = body::collect(body, max_response_bytes)
        .await
        .map_err(|err| match err {
            ReadError::Stream(reason) => GatewayError::BackendUnavailable {
                backend: backend.name().to_owned(),
                reason,
            },
            ReadError::Frame(FrameError::TooLarge { .. }) | ReadError::TooLarge { .. } => protocol(
                format!("answer exceeds max_response_bytes ({max_response_bytes})"),
            ),
            other => protocol(other.to_string()),
        })?;
    let trailers = collected.trailers.unwrap_or_default();
    let code = trailers
        .get("grpc-status")
        .ok_or_else(|| protocol("answer ended without grpc-status".into()))
        .and_then(|c| {
            parse_code(c.as_bytes()).ok_or_else(|| protocol("invalid grpc-status".into()))
        })?;

    let mut entry = status_only(code, header_text(&trailers, "grpc-message"));
    entry.headers = metadata::replayable(&parts.headers);
    entry.trailers = metadata::replayable(&trailers);
    if code != Code::Ok as i32 {
        return Ok(uncacheable(entry));
    }
    let mut messages = collected.messages;
    if messages.len() != 1 {
        return Err(protocol(format!(
            "unary answer with {} messages",
            messages.len()
        )));
    }
    let message = messages.remove(0);
    if message.compressed {
        return Err(protocol(
            "compressed answer although the gateway asked for none".into(),
        ));
    }
    entry.message = message.bytes;
    Ok(Fetched {
        entry,
        cacheable: true,
    })
}

fn status_only(code: i32, message: String) -> Entry {
    Entry::unstamped(Bytes::new(), code, message)
}

fn uncacheable(entry: Entry) -> Fetched {
    Fetched {
        entry,
        cacheable: false,
    }
}

fn parse_code(value: &[u8]) -> Option<i32> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A header's value as sent (for `grpc-message`: still percent-encoded, replayed as is).
fn header_text(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}
