//! Counters of the data path that the cache cannot know about (relaxed atomics, no locks).

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of the proxy.
#[derive(Debug, Default)]
pub struct ProxyStats {
    bypassed: AtomicU64,
    too_large: AtomicU64,
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

    /// Calls that bypassed the cache.
    pub fn bypassed(&self) -> u64 {
        self.bypassed.load(Ordering::Relaxed)
    }

    /// Answers not stored because of their size.
    pub fn too_large(&self) -> u64 {
        self.too_large.load(Ordering::Relaxed)
    }
}
