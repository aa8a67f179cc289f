//! The passthrough path: the call goes to the backend as it came, body streaming both ways, trailers intact.

use futures::FutureExt;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tonic::body::Body;

use crate::backend::{Backend, RetryPolicy, retry};
use crate::error::GatewayError;
use crate::grpc::deadline::Deadline;
use crate::metrics::ProxyStats;

/// Forwards a call untouched except for its deadline, which is replaced by the time the client has left. The
/// backend call's own future, mapped: an async wrapper would copy it into a state of its own.
pub(super) fn forward(
    backend: &Arc<Backend>,
    request: http::Request<Body>,
    deadline: Deadline,
) -> impl Future<Output = http::Response<Body>> + use<> {
    backend
        .call(request, deadline)
        .map(|answer| answer.unwrap_or_else(|err| err.to_response(None)))
}

/// Forwards a call on a passthrough route that has `retry`: the request is read whole first (at most
/// `max_request_bytes`), so it can be sent again. An attempt is retried when the backend could not be reached or
/// answered with a retryable status before sending any message; once an answer streams, it is the answer.
pub(super) async fn forward_with_retries(
    backend: &Arc<Backend>,
    policy: &RetryPolicy,
    request: http::Request<Body>,
    deadline: Deadline,
    max_request_bytes: u64,
    stats: &ProxyStats,
) -> http::Response<Body> {
    let budget = deadline.remaining_within(backend.timeout);
    let until = Instant::now() + budget;
    let (parts, body) = request.into_parts();
    let limit = usize::try_from(max_request_bytes).unwrap_or(usize::MAX);
    let bytes = match tokio::time::timeout(budget, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(err)) if err.is::<LengthLimitError>() => {
            return GatewayError::RequestTooLarge {
                len: max_request_bytes + 1,
                limit: max_request_bytes,
            }
            .to_response(None);
        }
        Ok(Err(err)) => return GatewayError::ClientStream(err.to_string()).to_response(None),
        Err(_) if deadline.at().is_some_and(|at| Instant::now() >= at) => {
            return GatewayError::Deadline(deadline.requested().unwrap_or_default())
                .to_response(None);
        }
        Err(_) => return GatewayError::RequestTimeout(budget).to_response(None),
    };
    let attempt = |time_left: Duration| {
        let mut request = http::Request::new(Body::new(Full::new(bytes.clone())));
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = parts.uri.clone();
        *request.version_mut() = parts.version;
        *request.headers_mut() = parts.headers.clone();
        backend.call(request, Deadline::after(time_left))
    };
    let left = until.saturating_duration_since(Instant::now());
    retry::with_retries(
        backend.name(),
        Some(policy),
        left,
        stats,
        trailers_only_code,
        attempt,
    )
    .await
    .unwrap_or_else(|err| err.to_response(None))
}

/// The status of a Trailers-Only answer (no message sent yet), if the answer is one.
fn trailers_only_code(response: &http::Response<Body>) -> Option<tonic::Code> {
    crate::grpc::code::status_in(response.headers()).map(tonic::Code::from)
}
