//! The parts of the gRPC wire protocol the gateway handles itself: message framing, `grpc-timeout`, reading a
//! bounded unary body, and decoding a compressed answer.

pub mod body;
pub mod code;
pub mod compression;
pub mod deadline;
pub mod frame;
pub mod message_body;
pub mod timeout;

/// Response metadata saying which level answered: `l1`, `l2`, `miss`, `coalesced`, `stale`, `bypass`.
pub const CACHE_STATUS_HEADER: &str = "x-strata-cache";

/// [`CACHE_STATUS_HEADER`] as a header name (a name given as a string is copied on every use).
pub const CACHE_STATUS: http::HeaderName = http::HeaderName::from_static(CACHE_STATUS_HEADER);

/// Path prefix of the gRPC health service, served by the gateway itself.
pub const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";
