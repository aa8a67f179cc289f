//! The parts of the gRPC wire protocol the gateway handles itself: message framing, `grpc-timeout`, reading a
//! bounded unary body, and decoding a compressed answer.

pub mod body;
pub mod code;
pub mod compression;
pub mod deadline;
pub mod frame;
pub mod message_body;
pub mod message_count;
pub mod timeout;

/// Response metadata saying which level answered: `l1`, `l2`, `miss`, `coalesced`, `stale`, `bypass`.
pub const CACHE_STATUS_HEADER: &str = "x-strata-cache";

/// Where a call on a cached route was answered from: the value of [`CACHE_STATUS_HEADER`], the `cache` label of
/// the call metrics and the access log (`none` there for calls off the cached path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// A fresh answer in this replica's L1.
    L1,
    /// A fresh answer in Redis.
    L2,
    /// Fetched from the backend for this call.
    Miss,
    /// Shared another call's backend fetch (in this replica, or through the lease in another).
    Coalesced,
    /// Past its freshness, served while a refresh runs or instead of a backend failure.
    Stale,
    /// Not looked up: forwarded to the backend (a compressed request, or credentials the key does not vary on).
    Bypass,
}

impl CacheResult {
    /// Every result, in the order of their numbers.
    pub const ALL: [Self; 6] = [
        Self::L1,
        Self::L2,
        Self::Miss,
        Self::Coalesced,
        Self::Stale,
        Self::Bypass,
    ];

    /// Its name in `x-strata-cache`, the metrics and the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::L1 => "l1",
            Self::L2 => "l2",
            Self::Miss => "miss",
            Self::Coalesced => "coalesced",
            Self::Stale => "stale",
            Self::Bypass => "bypass",
        }
    }

    /// Its name, or `none` for a call off the cached path.
    pub fn name_of(result: Option<Self>) -> &'static str {
        result.map_or("none", Self::as_str)
    }
}

impl From<strata_cache::Source> for CacheResult {
    fn from(source: strata_cache::Source) -> Self {
        match source {
            strata_cache::Source::L1 => Self::L1,
            strata_cache::Source::L2 => Self::L2,
            strata_cache::Source::Miss => Self::Miss,
            strata_cache::Source::Coalesced => Self::Coalesced,
            strata_cache::Source::Stale => Self::Stale,
        }
    }
}

/// [`CACHE_STATUS_HEADER`] as a header name (a name given as a string is copied on every use).
pub const CACHE_STATUS: http::HeaderName = http::HeaderName::from_static(CACHE_STATUS_HEADER);

/// Path prefix of the gRPC health service, served by the gateway itself.
pub const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";
