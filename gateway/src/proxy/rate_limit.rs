//! Per-route rate limits: token buckets, one per value of a metadata key (per tenant, say) or one for the route.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::{DefaultKeyedRateLimiter, Quota};
use http::{HeaderMap, HeaderName};

use crate::config::{ApplyTo, RateLimitConfig};
use crate::status::GatewayError;

/// Buckets not touched for a while are dropped every this many checks (clients choose the keys: without this, the
/// limiter would keep every key it ever saw).
const EVICT_EVERY: u64 = 4096;

/// A route's rate limit.
#[derive(Debug)]
pub struct RateLimit {
    limiter: DefaultKeyedRateLimiter<String>,
    key: Option<HeaderName>,
    /// Which calls count.
    pub apply_to: ApplyTo,
    rps: u32,
    checks: AtomicU64,
}

impl RateLimit {
    /// The limit a route's `rate_limit` block describes.
    pub fn new(config: &RateLimitConfig) -> Self {
        let rps = NonZeroU32::new(config.rps).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.burst).unwrap_or(rps);
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_second(rps).allow_burst(burst)),
            key: config
                .key
                .as_deref()
                .and_then(|k| HeaderName::from_bytes(k.as_bytes()).ok()),
            apply_to: config.apply_to,
            rps: config.rps,
            checks: AtomicU64::new(0),
        }
    }

    /// Takes a token for a call with `headers`, or says why not.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), GatewayError> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % EVICT_EVERY == EVICT_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        let bucket = match &self.key {
            Some(name) => headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default(),
            None => String::new(),
        };
        self.limiter
            .check_key(&bucket)
            .map_err(|_| GatewayError::RateLimited {
                rps: self.rps,
                per: self.key.as_ref().map(|k| k.as_str().to_owned()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_own_bucket() {
        let limit = RateLimit::new(&RateLimitConfig {
            rps: 2,
            burst: 2,
            key: Some("x-tenant-id".into()),
            apply_to: ApplyTo::All,
        });
        let tenant = |t: &str| {
            let mut h = HeaderMap::new();
            h.insert("x-tenant-id", t.parse().expect("ascii"));
            h
        };
        assert!(limit.check(&tenant("a")).is_ok() && limit.check(&tenant("a")).is_ok());
        let refused = limit.check(&tenant("a")).expect_err("over the burst");
        assert!(refused.to_string().contains("x-tenant-id"), "{refused}");
        assert!(
            limit.check(&tenant("b")).is_ok(),
            "another tenant is unaffected"
        );
    }
}
