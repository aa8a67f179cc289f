//! The passthrough path: the call goes to the backend as it came, body streaming both ways, trailers intact.

use http::HeaderValue;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use tokio::time::Instant;
use tonic::body::Body;

use crate::backend::{Backend, RetryPolicy};
use crate::error::GatewayError;
use crate::grpc::deadline::Deadline;
use crate::grpc::timeout;

/// Forwards a call untouched except for its deadline, which is replaced by the time the client has left.
pub(super) async fn forward(
    backend: &Backend,
    request: http::Request<Body>,
    deadline: Deadline,
) -> http::Response<Body> {
    forward_raw(backend, request, deadline)
        .await
        .unwrap_or_else(|err| err.to_response(None))
}

/// Forwards a call on a passthrough route that has `retry`: the request is read whole first (at most
/// `max_request_bytes`), so it can be sent again. An attempt is retried when the backend could not be reached or
/// answered with a retryable status before sending any message; once an answer streams, it is the answer.
pub(super) async fn forward_with_retries(
    backend: &Backend,
    policy: &RetryPolicy,
    request: http::Request<Body>,
    deadline: Deadline,
    max_request_bytes: u64,
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
    policy.record_call();
    let mut attempt = 1;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let mut request = http::Request::new(Body::new(Full::new(bytes.clone())));
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = parts.uri.clone();
        *request.version_mut() = parts.version;
        *request.headers_mut() = parts.headers.clone();
        let attempt_deadline = Deadline::after(policy.per_try_timeout.min(left));
        let per_try = attempt_deadline.requested().unwrap_or(left);
        let result =
            match tokio::time::timeout(per_try, forward_raw(backend, request, attempt_deadline))
                .await
            {
                Ok(result) => result,
                Err(_) => Err(GatewayError::BackendDeadline {
                    backend: backend.name().to_owned(),
                }),
            };
        let retryable = match &result {
            Ok(response) => {
                trailers_only_code(response).is_some_and(|code| policy.retries_code(code))
            }
            Err(GatewayError::BackendUnavailable { .. } | GatewayError::BackendDeadline { .. }) => {
                true
            }
            Err(_) => false,
        };
        let pause = policy.pause_after(attempt);
        if !retryable
            || attempt >= policy.attempts
            || Instant::now() + pause >= until
            || !policy.try_retry()
        {
            return result.unwrap_or_else(|err| err.to_response(None));
        }
        tokio::time::sleep(pause).await;
        attempt += 1;
    }
}

/// Sends `request` with the time left as its `grpc-timeout`.
async fn forward_raw(
    backend: &Backend,
    mut request: http::Request<Body>,
    deadline: Deadline,
) -> Result<http::Response<Body>, GatewayError> {
    if let Some(left) = deadline.remaining() {
        if let Ok(value) = HeaderValue::from_str(&timeout::format(left)) {
            request.headers_mut().insert(timeout::HEADER, value);
        }
    }
    backend.call(request).await
}

/// The status of a Trailers-Only answer (no message sent yet), if the answer is one.
fn trailers_only_code(response: &http::Response<Body>) -> Option<tonic::Code> {
    crate::grpc::code::status_in(response.headers()).map(tonic::Code::from)
}
