//! Per-route rate limits: token buckets, one per value of a metadata key (per tenant, say) or one for the route.

use std::hash::BuildHasher;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use governor::{DefaultKeyedRateLimiter, Quota};
use http::{HeaderMap, HeaderName};

use crate::config::{ApplyTo, RateLimitConfig};
use crate::error::GatewayError;

/// Buckets not touched for a while are dropped every this many checks (clients choose the keys: without this, the
/// limiter would keep every key it ever saw).
const EVICT_EVERY: u64 = 4096;
/// Buckets a limit keeps at most, whatever clients send (a bucket is a few dozen bytes: keys are hashed).
const MAX_BUCKETS: usize = 100_000;
/// While the limit is full, keys share this many buckets (hashed into them): new tenants are limited together rather
/// than growing the map.
const OVERFLOW_BUCKETS: u64 = 1024;
/// How often, in checks, a full limit looks again whether it has room.
const FULL_CHECK_EVERY: u64 = 256;

/// A route's rate limit.
#[derive(Debug)]
pub struct RateLimit {
    /// Buckets by a hash of the key's value (with a per-process random seed: clients cannot aim at a collision).
    limiter: DefaultKeyedRateLimiter<u64>,
    hasher: std::collections::hash_map::RandomState,
    key: Option<HeaderName>,
    /// Which calls count.
    pub apply_to: ApplyTo,
    rps: u32,
    checks: AtomicU64,
    max_buckets: usize,
    /// More than `max_buckets` keys were seen within a refill time: keys go to the overflow buckets.
    full: AtomicBool,
}

impl RateLimit {
    /// The limit a route's `rate_limit` block describes.
    pub fn new(config: &RateLimitConfig) -> Self {
        Self::with_max_buckets(config, MAX_BUCKETS)
    }

    fn with_max_buckets(config: &RateLimitConfig, max_buckets: usize) -> Self {
        let rps = NonZeroU32::new(config.rps).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.burst).unwrap_or(rps);
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_second(rps).allow_burst(burst)),
            hasher: std::collections::hash_map::RandomState::new(),
            key: config.key.clone(),
            apply_to: config.apply_to,
            rps: config.rps,
            checks: AtomicU64::new(0),
            max_buckets,
            full: AtomicBool::new(false),
        }
    }

    /// Takes a token for a call with `headers`, or says why not.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), GatewayError> {
        let checks = self.checks.fetch_add(1, Ordering::Relaxed);
        let full = self.full.load(Ordering::Relaxed);
        if checks % EVICT_EVERY == EVICT_EVERY - 1
            || (checks % FULL_CHECK_EVERY == 0 && (full || self.limiter.len() >= self.max_buckets))
        {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
            self.full
                .store(self.limiter.len() >= self.max_buckets, Ordering::Relaxed);
        }
        let mut bucket = match &self.key {
            Some(name) => self
                .hasher
                .hash_one(headers.get(name).map(http::HeaderValue::as_bytes)),
            None => 0,
        };
        if self.full.load(Ordering::Relaxed) {
            // The top of the hash range; a key hashing there anyway shares a bucket by chance, harmlessly.
            bucket = u64::MAX - bucket % OVERFLOW_BUCKETS;
        }
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
            key: Some(HeaderName::from_static("x-tenant-id")),
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

    /// However many distinct keys clients send, the limit keeps a bounded number of buckets.
    #[test]
    fn made_up_keys_grow_no_more_than_the_bound() {
        let limit = RateLimit::with_max_buckets(
            &RateLimitConfig {
                rps: 1,
                burst: 1,
                key: Some(HeaderName::from_static("x-tenant-id")),
                apply_to: ApplyTo::All,
            },
            500,
        );
        for i in 0..20_000 {
            let mut h = HeaderMap::new();
            h.insert(
                "x-tenant-id",
                format!("made-up-{i}").parse().expect("ascii"),
            );
            let _ = limit.check(&h);
        }
        let buckets = limit.limiter.len();
        assert!(
            buckets <= 500 + FULL_CHECK_EVERY as usize + OVERFLOW_BUCKETS as usize,
            "{buckets} buckets"
        );
    }
}
