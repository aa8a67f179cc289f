//! Errors of the cache crate. None of them fails a request by itself: L2 errors become misses, decode errors become
//! misses, and only a loader's own error reaches the caller.

use std::sync::Arc;

/// Why bytes read from L2 could not be turned into an entry. Counted, treated as a miss, and overwritten.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a protobuf `strata.cache.v1.Entry`.
    #[error("L2 entry is not a valid strata.cache.v1.Entry: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The bytes are an entry of an encoding version this build does not read.
    #[error("L2 entry has encoding version {found}, this build reads version {expected}")]
    Version { found: u32, expected: u32 },
}

/// A failed L2 (Redis) operation. The caller counts it and carries on without L2.
#[derive(Debug, thiserror::Error)]
pub enum L2Error {
    /// No connection to Redis has been established yet (it was absent at startup and is still being retried).
    #[error("L2 not connected yet")]
    NotConnected,
    /// The operation did not finish within the configured L2 timeout.
    #[error("L2 {op} timed out after {timeout_ms} ms")]
    Timeout { op: &'static str, timeout_ms: u64 },
    /// Redis answered with an error, or the connection broke.
    #[error("L2 {op} failed: {source}")]
    Redis {
        op: &'static str,
        #[source]
        source: redis::RedisError,
    },
}

/// A loader's failure. Shared with every follower of the flight that ran it (hence `Arc` and `Clone`), unless it
/// belongs to the caller whose request was fetched ([`LoadError::callers_own`]).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{source}")]
pub struct LoadError {
    source: Arc<dyn std::error::Error + Send + Sync>,
    callers_own: bool,
}

impl LoadError {
    /// Wraps the loader's own error so that every waiter of the flight receives it (the backend failed).
    pub fn new(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            source: Arc::new(err),
            callers_own: false,
        }
    }

    /// An error that belongs to the caller whose request the loader sent (its rate limit, say): never given to the
    /// other callers of the flight, who fetch for themselves instead.
    pub fn callers_own(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            source: Arc::new(err),
            callers_own: true,
        }
    }

    /// Whether the error belongs to one caller only.
    pub fn is_callers_own(&self) -> bool {
        self.callers_own
    }

    /// The loader's error, for the caller to downcast to its own type.
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }
}
