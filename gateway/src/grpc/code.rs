//! gRPC status codes by their canonical names (`NOT_FOUND`), and which codes mean what to the cache.

use tonic::Code;

/// Every code with its canonical name.
const NAMES: [(Code, &str); 17] = [
    (Code::Ok, "OK"),
    (Code::Cancelled, "CANCELLED"),
    (Code::Unknown, "UNKNOWN"),
    (Code::InvalidArgument, "INVALID_ARGUMENT"),
    (Code::DeadlineExceeded, "DEADLINE_EXCEEDED"),
    (Code::NotFound, "NOT_FOUND"),
    (Code::AlreadyExists, "ALREADY_EXISTS"),
    (Code::PermissionDenied, "PERMISSION_DENIED"),
    (Code::ResourceExhausted, "RESOURCE_EXHAUSTED"),
    (Code::FailedPrecondition, "FAILED_PRECONDITION"),
    (Code::Aborted, "ABORTED"),
    (Code::OutOfRange, "OUT_OF_RANGE"),
    (Code::Unimplemented, "UNIMPLEMENTED"),
    (Code::Internal, "INTERNAL"),
    (Code::Unavailable, "UNAVAILABLE"),
    (Code::DataLoss, "DATA_LOSS"),
    (Code::Unauthenticated, "UNAUTHENTICATED"),
];

/// The `grpc-status` header (a named constant: a header name given as a string is copied on every use).
pub const STATUS_HEADER: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// The numeric `grpc-status` in `headers` (trailers, or the headers of a Trailers-Only answer), if there is one.
pub fn status_in(headers: &http::HeaderMap) -> Option<i32> {
    headers.get(STATUS_HEADER)?.to_str().ok()?.parse().ok()
}

/// The `grpc-message` header.
pub const MESSAGE_HEADER: http::HeaderName = http::HeaderName::from_static("grpc-message");

/// `code` as a `grpc-status` value; the 17 defined codes without allocating.
pub fn status_value(code: i32) -> http::HeaderValue {
    const DIGITS: [&str; 17] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| DIGITS.get(i))
        .map_or_else(
            || http::HeaderValue::from(code),
            |d| http::HeaderValue::from_static(d),
        )
}

/// Codes that are never cached, whatever the config says: they describe the backend's state at one moment, not an
/// answer to the request.
pub const NEVER_CACHED: [Code; 5] = [
    Code::Unavailable,
    Code::DeadlineExceeded,
    Code::ResourceExhausted,
    Code::Internal,
    Code::Unknown,
];

/// Codes that mean the backend failed, for which a stale answer may stand in (stale-if-error).
pub const BACKEND_FAILURE: [Code; 3] = [
    Code::Unavailable,
    Code::DeadlineExceeded,
    Code::ResourceExhausted,
];

/// The code named `name` (case-insensitive, e.g. `NOT_FOUND` or `not_found`).
pub fn from_name(name: &str) -> Option<Code> {
    NAMES
        .iter()
        .find(|(_, n)| n.eq_ignore_ascii_case(name))
        .map(|(code, _)| *code)
}

/// The canonical name of `code`.
pub fn name(code: Code) -> &'static str {
    NAMES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or("UNKNOWN", |(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_in_reads_a_numeric_grpc_status_only() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(status_in(&headers), None);
        headers.insert(STATUS_HEADER, status_value(5));
        assert_eq!(status_in(&headers), Some(5));
        headers.insert(STATUS_HEADER, http::HeaderValue::from_static("five"));
        assert_eq!(status_in(&headers), None);
    }

    #[test]
    fn names_round_trip() {
        for (code, n) in NAMES {
            assert_eq!(from_name(n), Some(code));
            assert_eq!(name(code), n);
            assert_eq!(
                Code::from(code as i32),
                code,
                "the table matches tonic's numbering"
            );
        }
        assert_eq!(from_name("not_found"), Some(Code::NotFound));
        assert_eq!(from_name("NOTFOUND"), None);
    }
}
