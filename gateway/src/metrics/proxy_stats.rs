//! Counters of the data path that the cache cannot know about (relaxed atomics, no locks).

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of the proxy.
#[derive(Debug, Default)]
pub struct ProxyStats {
    bypassed: AtomicU64,
    too_large: AtomicU64,
    retries: AtomicU64,
    retry_budget_exhausted: AtomicU64,
    rate_limited: AtomicU64,
    shed: AtomicU64,
}

impl ProxyStats {
    /// Counts a call on a cached route that was forwarded without the cache (`x-strata-cache: bypass`).
    pub fn count_bypass(&self) {
        self.bypassed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an answer relayed but not stored because it is larger than `max_entry_bytes`.
    pub fn count_too_large(&self) {
        self.too_large.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a retry sent to a backend.
    pub fn count_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a retry not sent because the retry budget was spent.
    pub fn count_retry_budget_exhausted(&self) {
        self.retry_budget_exhausted.fetch_add(1, Ordering::Relaxed);
    }

    /// Retries sent.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Retries refused by the budget.
    pub fn retry_budget_exhausted(&self) -> u64 {
        self.retry_budget_exhausted.load(Ordering::Relaxed)
    }

    /// Counts a call refused by a route's rate limit.
    pub fn count_rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a call refused by global load shedding.
    pub fn count_shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
    }

    /// Calls refused by rate limits.
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    /// Calls refused by load shedding.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// Calls that bypassed the cache.
    pub fn bypassed(&self) -> u64 {
        self.bypassed.load(Ordering::Relaxed)
    }

    /// Answers not stored because of their size.
    pub fn too_large(&self) -> u64 {
        self.too_large.load(Ordering::Relaxed)
    }
}
