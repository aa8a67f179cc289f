//! Every error the gateway itself answers with, and the one place where errors become gRPC statuses.

use std::time::Duration;

use http::HeaderValue;
use tonic::Code;
use tonic::body::Body;

use crate::grpc::CacheResult;
use crate::grpc::body::ReadError;
use crate::grpc::frame::FrameError;

/// An error the gateway answers a call with (as opposed to a status the backend sent, which is relayed as is).
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// No route matches the call's path.
    #[error("no route for {path}")]
    NoRoute { path: String },
    /// The request message is larger than `max_request_bytes`.
    #[error("request message of {len} bytes exceeds max_request_bytes ({limit})")]
    RequestTooLarge { len: u64, limit: u64 },
    /// The client's request is not valid gRPC on a cached (unary) route.
    #[error("malformed gRPC request: {0}")]
    MalformedRequest(String),
    /// The client's stream failed while the gateway read it.
    #[error("client stream failed: {0}")]
    ClientStream(String),
    /// The call's deadline passed: the client's, or the one the gateway set (`default_timeout`, `max_timeout`).
    #[error("deadline of {0:?} exceeded at the gateway")]
    Deadline(Duration),
    /// A client without a deadline did not finish sending its request within the backend's `timeout`.
    #[error("request not received within {0:?} (the backend's timeout)")]
    RequestTimeout(Duration),
    /// The backend could not be reached or its connection failed.
    #[error("backend {backend} unavailable: {reason}")]
    BackendUnavailable { backend: String, reason: String },
    /// The call's deadline passed while the backend was working on it.
    #[error("deadline exceeded waiting for backend {backend}")]
    BackendDeadline { backend: String },
    /// A route's rate limit refused the call.
    #[error("rate limit of {rps} calls/s exceeded{}", per.as_ref().map(|k| format!(" for this {k}")).unwrap_or_default())]
    RateLimited { rps: u32, per: Option<String> },
    /// The gateway already has `max_concurrent_requests` calls in flight.
    #[error("gateway overloaded: {limit} calls in flight (max_concurrent_requests); retry later")]
    Shedding { limit: usize },
    /// The backend already has `max_concurrent_requests` calls in flight.
    #[error(
        "backend {backend} has {limit} calls in flight (max_concurrent_requests); refused at once"
    )]
    BackendOverloaded { backend: String, limit: usize },
    /// The backend did not answer within its `timeout`.
    #[error("backend {backend} did not answer within {timeout:?}")]
    BackendTimeout { backend: String, timeout: Duration },
    /// The backend's answer breaks the gRPC protocol for a unary call.
    #[error("backend {backend} sent an invalid answer: {reason}")]
    BackendProtocol { backend: String, reason: String },
    /// A bug or an impossible state inside the gateway.
    #[error("internal gateway error: {0}")]
    Internal(String),
    /// An admin call without the right bearer token.
    #[error("admin call refused: {0}")]
    AdminUnauthenticated(&'static str),
    /// An admin mutation while no `admin.token` is configured.
    #[error(
        "admin mutations are disabled: set admin.token (or STRATA_ADMIN__TOKEN) to enable them"
    )]
    AdminDisabled,
    /// An admin request that does not say what to do.
    #[error("invalid admin request: {0}")]
    AdminInvalid(String),
    /// An admin request about a method no cached route covers.
    #[error("{0} is not cached by any route")]
    NotCached(String),
    /// The shared cache could not be reached to carry out an admin request.
    #[error("shared cache unavailable, nothing invalidated: {0}")]
    CacheUnavailable(String),
}

impl GatewayError {
    /// The gRPC code a client sees for this error.
    pub fn code(&self) -> Code {
        match self {
            Self::NoRoute { .. } => Code::Unimplemented,
            Self::RequestTooLarge { .. } | Self::Shedding { .. } | Self::RateLimited { .. } => {
                Code::ResourceExhausted
            }
            Self::MalformedRequest(_) => Code::Internal,
            Self::ClientStream(_) => Code::Cancelled,
            Self::Deadline(_)
            | Self::RequestTimeout(_)
            | Self::BackendDeadline { .. }
            | Self::BackendTimeout { .. } => Code::DeadlineExceeded,
            Self::BackendUnavailable { .. } | Self::BackendOverloaded { .. } => Code::Unavailable,
            Self::BackendProtocol { .. } | Self::Internal(_) => Code::Internal,
            Self::AdminUnauthenticated(_) => Code::Unauthenticated,
            Self::AdminDisabled => Code::PermissionDenied,
            Self::AdminInvalid(_) => Code::InvalidArgument,
            Self::NotCached(_) => Code::FailedPrecondition,
            Self::CacheUnavailable(_) => Code::Unavailable,
        }
    }

    /// The error as a gRPC status.
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::new(self.code(), self.to_string())
    }

    /// The error as a complete HTTP/2 response (Trailers-Only), with `x-strata-cache` when given.
    pub fn to_response(&self, cache_status: Option<CacheResult>) -> http::Response<Body> {
        let mut response = self.to_status().into_http::<Body>();
        if let Some(result) = cache_status {
            response.headers_mut().insert(
                crate::grpc::CACHE_STATUS,
                HeaderValue::from_static(result.as_str()),
            );
        }
        response
    }

    /// Maps a failure to read the client's unary request.
    pub fn from_request_read(err: ReadError, limit: u64) -> Self {
        match err {
            ReadError::Frame(FrameError::TooLarge { len, .. }) => {
                Self::RequestTooLarge { len, limit }
            }
            ReadError::TooLarge { .. } => Self::RequestTooLarge {
                len: limit + 1,
                limit,
            },
            ReadError::Stream(reason) => Self::ClientStream(reason),
            other => Self::MalformedRequest(other.to_string()),
        }
    }
}

impl From<&strata_cache::LoadError> for GatewayError {
    fn from(err: &strata_cache::LoadError) -> Self {
        err.inner()
            .downcast_ref::<GatewayError>()
            .cloned()
            .unwrap_or_else(|| Self::Internal(err.to_string()))
    }
}

/// The gRPC code for an HTTP status the backend answered with instead of gRPC (per the gRPC HTTP/2 spec).
pub fn code_for_http_status(status: http::StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_carry_code_and_message() {
        let err = GatewayError::RequestTooLarge { len: 10, limit: 4 };
        let resp = err.to_response(Some(CacheResult::Bypass));
        assert_eq!(
            resp.headers().get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"8"[..])
        );
        assert!(resp.headers().get("grpc-message").is_some());
        assert_eq!(
            resp.headers().get("x-strata-cache").map(|v| v.as_bytes()),
            Some(&b"bypass"[..])
        );
    }

    #[test]
    fn load_errors_round_trip_through_the_cache() {
        let err = GatewayError::BackendUnavailable {
            backend: "b".into(),
            reason: "refused".into(),
        };
        let through = GatewayError::from(&strata_cache::LoadError::new(err));
        assert_eq!(through.code(), Code::Unavailable);
    }
}
