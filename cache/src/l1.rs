//! L1: the in-process cache (moka), weighed in bytes, each entry evicted when its `stale_until` passes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use moka::notification::RemovalCause;

use crate::clock::Clock;
use crate::entry::Entry;
use crate::key::Key;
use crate::stats::{Stats, bump};

/// The in-process cache level. Cloning is cheap and shares the same cache.
///
/// Values are `Arc<Entry>`: a hit hands out a pointer, never a copy of the message. moka's expiry is only the
/// eviction bound; freshness is decided by the entry's own times (see [`Entry::is_fresh`]).
#[derive(Debug, Clone)]
pub struct L1 {
    cache: Cache<Key, Arc<Entry>>,
}

impl L1 {
    /// An L1 holding at most `max_bytes` of encoded entries. `max_bytes == 0` disables it (nothing is kept).
    /// Evictions are counted in `stats` by cause.
    pub fn new(max_bytes: u64, clock: Clock, stats: Arc<Stats>) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &Key, entry: &Arc<Entry>| entry.weight().saturating_add(KEY_OVERHEAD))
            .expire_after(EvictAtStaleUntil { clock })
            .eviction_listener(move |_key, _entry, cause| match cause {
                RemovalCause::Size => bump(&stats.l1_evicted_size),
                RemovalCause::Expired => bump(&stats.l1_evicted_expired),
                RemovalCause::Explicit => bump(&stats.l1_evicted_invalidated),
                RemovalCause::Replaced => {}
            })
            .build();
        Self { cache }
    }

    /// The entry stored under `key`, fresh or not.
    pub async fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        self.cache.get(key).await
    }

    /// Stores `entry` under `key`, replacing what was there.
    pub async fn insert(&self, key: Key, entry: Arc<Entry>) {
        self.cache.insert(key, entry).await;
    }

    /// Removes the entry under `key`.
    pub async fn remove(&self, key: &Key) {
        self.cache.invalidate(key).await;
    }

    /// Removes every entry (after this replica may have missed invalidations).
    pub fn clear(&self) {
        self.cache.invalidate_all();
    }

    /// The number of entries (approximate until pending maintenance has run).
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// The total weight in bytes (approximate until pending maintenance has run).
    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// Runs moka's pending maintenance (evictions, counters); for tests and shutdown.
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }
}

/// Bytes charged per entry on top of its encoding: the key, the `Arc` and moka's own bookkeeping.
const KEY_OVERHEAD: u32 = 128;

/// moka expiry policy: an entry lives until its `stale_until`, read from the entry, measured on the cache [`Clock`].
struct EvictAtStaleUntil {
    clock: Clock,
}

impl Expiry<Key, Arc<Entry>> for EvictAtStaleUntil {
    fn expire_after_create(
        &self,
        _key: &Key,
        entry: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(entry.remaining_life(self.clock.now()))
    }

    fn expire_after_update(
        &self,
        _key: &Key,
        entry: &Arc<Entry>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.remaining_life(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::key::KeyBuilder;

    fn entry(size: usize, clock: &Clock, life: Duration) -> Arc<Entry> {
        let mut entry = Entry::unstamped(Bytes::from(vec![7u8; size]), 0, String::new());
        entry.stamp(clock.now(), &crate::entry::Lifetime::fresh_for(life));
        Arc::new(entry)
    }

    fn key(i: u32) -> Key {
        KeyBuilder::new("t", "/m").finish(&i.to_le_bytes())
    }

    #[tokio::test]
    async fn keeps_within_its_byte_budget() {
        let clock = Clock::new();
        let stats = Arc::new(Stats::default());
        let l1 = L1::new(64 * 1024, clock, stats.clone());
        for i in 0..200 {
            l1.insert(key(i), entry(1024, &clock, Duration::from_secs(60)))
                .await;
        }
        l1.run_pending_tasks().await;
        assert!(
            l1.weighted_size() <= 64 * 1024,
            "weighted size {}",
            l1.weighted_size()
        );
        assert!(l1.entry_count() < 200);
        assert_eq!(
            stats.snapshot().l1_evicted_size,
            200 - l1.entry_count(),
            "every eviction counted, by cause"
        );
    }

    #[tokio::test]
    async fn hit_returns_the_same_allocation() {
        let clock = Clock::new();
        let l1 = L1::new(1 << 20, clock, Arc::default());
        let e = entry(10, &clock, Duration::from_secs(60));
        l1.insert(key(1), e.clone()).await;
        let got = l1.get(&key(1)).await.expect("hit");
        assert!(Arc::ptr_eq(&got, &e));
        assert_eq!(got.message.as_ptr(), e.message.as_ptr());
    }

    #[tokio::test]
    async fn zero_budget_keeps_nothing() {
        let clock = Clock::new();
        let l1 = L1::new(0, clock, Arc::default());
        l1.insert(key(1), entry(10, &clock, Duration::from_secs(60)))
            .await;
        l1.run_pending_tasks().await;
        assert!(l1.get(&key(1)).await.is_none());
    }
}
