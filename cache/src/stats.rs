//! Counters of what the cache did, cheap enough for the hot path (relaxed atomics, no locks).

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the latency buckets, in seconds (the same as the gateway's call histograms).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram of relaxed atomics (no lock, so safe on any path).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl LatencyHistogram {
    /// Records one observation.
    pub fn observe(&self, took: std::time::Duration) {
        let seconds = took.as_secs_f64();
        let i = LATENCY_BUCKETS.partition_point(|upper| *upper < seconds);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Sum (seconds), count, and per-bucket counts with their upper bounds (the last one unbounded).
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(self.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (sum, self.count.load(Ordering::Relaxed), buckets)
    }
}

/// Live counters of a [`crate::Tiered`] cache.
#[derive(Debug, Default)]
pub struct Stats {
    /// How long L2 reads take.
    pub l2_read_seconds: LatencyHistogram,
    /// How long single-flight followers wait for the leader's answer.
    pub flight_wait_seconds: LatencyHistogram,
    pub(crate) l1_hits: AtomicU64,
    pub(crate) l2_hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) stale_served: AtomicU64,
    pub(crate) stale_if_error_served: AtomicU64,
    pub(crate) refreshes_stale: AtomicU64,
    pub(crate) refreshes_early: AtomicU64,
    pub(crate) lease_acquired: AtomicU64,
    pub(crate) lease_waited_hit: AtomicU64,
    pub(crate) lease_gave_up: AtomicU64,
    pub(crate) invalidations: AtomicU64,
    pub(crate) l1_evicted_size: AtomicU64,
    pub(crate) l1_evicted_expired: AtomicU64,
    pub(crate) l1_evicted_invalidated: AtomicU64,
    pub(crate) channel_connects: AtomicU64,
    pub(crate) flight_wait_timeouts: AtomicU64,
    pub(crate) leader_takeovers: AtomicU64,
    pub(crate) not_shared: AtomicU64,
    pub(crate) withdrawn: AtomicU64,
    pub(crate) fills_overtaken: AtomicU64,
    pub(crate) l2_errors: AtomicU64,
    pub(crate) l2_timeouts: AtomicU64,
    pub(crate) l2_undecodable: AtomicU64,
    pub(crate) l2_writes: AtomicU64,
    pub(crate) l2_write_errors: AtomicU64,
    pub(crate) l2_write_drops: AtomicU64,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Answers served from L1.
    pub l1_hits: u64,
    /// Answers served from L2.
    pub l2_hits: u64,
    /// Answers that needed the loader.
    pub misses: u64,
    /// Answers shared from another caller's in-flight load.
    pub coalesced: u64,
    /// Stale answers served while a background refresh runs (stale-while-revalidate).
    pub stale_served: u64,
    /// Stale answers served instead of a backend failure (stale-if-error).
    pub stale_if_error_served: u64,
    /// Background refreshes of entries served stale.
    pub refreshes_stale: u64,
    /// Early refreshes of fresh entries (XFetch).
    pub refreshes_early: u64,
    /// Fetches made holding the cross-replica lease.
    pub lease_acquired: u64,
    /// Fetches answered by another replica's lease holder, found in L2 while waiting.
    pub lease_waited_hit: u64,
    /// Waits for another replica's lease holder that ran out (the caller fetched without storing).
    pub lease_gave_up: u64,
    /// Invalidations made through this replica.
    pub invalidations: u64,
    /// L1 entries evicted to stay within the byte budget.
    pub l1_evicted_size: u64,
    /// L1 entries evicted past their `stale_until`.
    pub l1_evicted_expired: u64,
    /// L1 entries removed by an invalidation (or a resubscription clearing L1).
    pub l1_evicted_invalidated: u64,
    /// Times the invalidation channel was (re)subscribed and L1 brought in step.
    pub channel_connects: u64,
    /// Followers that stopped waiting for a leader and loaded on their own.
    pub flight_wait_timeouts: u64,
    /// Followers that became the leader after the previous leader's fetch was gone.
    pub leader_takeovers: u64,
    /// Followers that fetched for themselves because the leader's outcome was its caller's alone (an answer that may
    /// not be stored, the leader's own rate limit).
    pub not_shared: u64,
    /// Entries removed because the backend's latest answer for them may not be stored (`NOT_FOUND` uncached,
    /// `no-store`, too large, …).
    pub withdrawn: u64,
    /// Fetched answers not stored because their key was invalidated while they were fetched.
    pub fills_overtaken: u64,
    /// L2 reads or writes that failed (not counting timeouts).
    pub l2_errors: u64,
    /// L2 reads or writes that timed out.
    pub l2_timeouts: u64,
    /// L2 entries that could not be decoded (treated as misses and overwritten).
    pub l2_undecodable: u64,
    /// Entries written to L2.
    pub l2_writes: u64,
    /// L2 writes that failed or timed out.
    pub l2_write_errors: u64,
    /// L2 writes dropped because the write-back queue was full.
    pub l2_write_drops: u64,
}

impl Stats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            l1_hits: r(&self.l1_hits),
            l2_hits: r(&self.l2_hits),
            misses: r(&self.misses),
            coalesced: r(&self.coalesced),
            stale_served: r(&self.stale_served),
            stale_if_error_served: r(&self.stale_if_error_served),
            refreshes_stale: r(&self.refreshes_stale),
            refreshes_early: r(&self.refreshes_early),
            lease_acquired: r(&self.lease_acquired),
            lease_waited_hit: r(&self.lease_waited_hit),
            lease_gave_up: r(&self.lease_gave_up),
            invalidations: r(&self.invalidations),
            l1_evicted_size: r(&self.l1_evicted_size),
            l1_evicted_expired: r(&self.l1_evicted_expired),
            l1_evicted_invalidated: r(&self.l1_evicted_invalidated),
            channel_connects: r(&self.channel_connects),
            flight_wait_timeouts: r(&self.flight_wait_timeouts),
            leader_takeovers: r(&self.leader_takeovers),
            not_shared: r(&self.not_shared),
            withdrawn: r(&self.withdrawn),
            fills_overtaken: r(&self.fills_overtaken),
            l2_errors: r(&self.l2_errors),
            l2_timeouts: r(&self.l2_timeouts),
            l2_undecodable: r(&self.l2_undecodable),
            l2_writes: r(&self.l2_writes),
            l2_write_errors: r(&self.l2_write_errors),
            l2_write_drops: r(&self.l2_write_drops),
        }
    }
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn latencies_land_in_their_buckets() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 60.0033).abs() < 1e-6, "{sum}");
        assert_eq!(buckets[0], (0.0005, 1));
        assert_eq!(buckets[3], (0.005, 1), "3 ms is in the 5 ms bucket");
        assert_eq!(
            buckets.last(),
            Some(&(f64::MAX, 1)),
            "a minute is beyond the last bound"
        );
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 3);
    }
}
