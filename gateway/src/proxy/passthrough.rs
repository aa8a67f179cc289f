//! The passthrough path: the call goes to the backend as it came, body streaming both ways, trailers intact.

use http::HeaderValue;
use tonic::body::Body;

use crate::backend::Backend;
use crate::grpc::timeout;
use crate::layers::deadline::Deadline;

/// Forwards a call untouched except for its deadline, which is replaced by the time the client has left.
pub(super) async fn forward(
    backend: &Backend,
    mut request: http::Request<Body>,
    deadline: Deadline,
) -> http::Response<Body> {
    if let Some(left) = deadline.remaining() {
        if let Ok(value) = HeaderValue::from_str(&timeout::format(left)) {
            request.headers_mut().insert(timeout::HEADER, value);
        }
    }
    match backend.call(request).await {
        Ok(response) => response,
        Err(err) => err.to_response(None),
    }
}
