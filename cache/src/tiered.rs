//! `Tiered`: L1 → single-flight → L2 → loader, and write-back to both levels.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::Clock;
use crate::entry::Entry;
use crate::error::{L2Error, LoadError};
use crate::flight::{Flights, Outcome, Role};
use crate::key::Key;
use crate::l1::L1;
use crate::l2::{L2, L2Write, WriteBack};
use crate::stats::{Stats, bump};

/// Settings of a [`Tiered`] cache.
#[derive(Debug, Clone)]
pub struct TieredConfig {
    /// L1 budget in bytes (0 disables L1).
    pub l1_max_bytes: u64,
    /// The longest a follower waits for a leader's load before loading on its own.
    pub flight_wait: Duration,
    /// Capacity of the L2 write-back queue; writes beyond it are dropped and counted.
    pub write_queue: usize,
}

/// How one route caches.
#[derive(Debug, Clone)]
pub struct Policy {
    /// How long a fetched answer is fresh.
    pub ttl: Duration,
}

/// What a [`Loader`] fetched.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The answer. Its times are set by [`Tiered`] from the [`Policy`]; what the loader put there is ignored.
    pub entry: Entry,
    /// Whether the answer may be stored. Uncacheable answers are still shared with the flight's current followers.
    pub cacheable: bool,
}

/// Fetches what the cache lacks (for Strata: calls the backend).
pub trait Loader: Send {
    /// Fetches the answer. Called at most once, and only by the leader of a flight.
    fn load(self) -> impl Future<Output = Result<Fetched, LoadError>> + Send;
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The in-process cache.
    L1,
    /// The shared cache.
    L2,
    /// The loader, called by this caller.
    Miss,
    /// The loader, called by another caller of the same key at the same time.
    Coalesced,
}

impl Source {
    /// The name used in `x-strata-cache` and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::L1 => "l1",
            Source::L2 => "l2",
            Source::Miss => "miss",
            Source::Coalesced => "coalesced",
        }
    }
}

/// An answer and where it came from.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The answer (shared, never copied).
    pub entry: Arc<Entry>,
    /// Which level answered.
    pub source: Source,
}

/// The two-level cache with single-flight loads.
#[derive(Debug)]
pub struct Tiered {
    l1: L1,
    l2: Option<Arc<dyn L2>>,
    write_back: Option<WriteBack>,
    flights: Flights,
    flight_wait: Duration,
    clock: Clock,
    stats: Arc<Stats>,
}

impl Tiered {
    /// A cache with L1 and, if given, L2. Spawns the write-back worker, so it needs a tokio runtime.
    pub fn new(config: &TieredConfig, l2: Option<Arc<dyn L2>>) -> Self {
        let clock = Clock::new();
        let stats = Arc::new(Stats::default());
        let write_back = l2
            .as_ref()
            .map(|l2| WriteBack::spawn(l2.clone(), config.write_queue, stats.clone()));
        Self {
            l1: L1::new(config.l1_max_bytes, clock),
            l2,
            write_back,
            flights: Flights::default(),
            flight_wait: config.flight_wait,
            clock,
            stats,
        }
    }

    /// The counters of this cache.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The in-process level.
    pub fn l1(&self) -> &L1 {
        &self.l1
    }

    /// The clock entries are stamped and judged with.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Waits (at most `within`) until every queued L2 write has been attempted. For graceful shutdown.
    pub async fn flush_writes(&self, within: Duration) -> bool {
        match &self.write_back {
            Some(wb) => wb.flush(within).await,
            None => true,
        }
    }

    /// The answer for `key`: from L1, else from an in-flight load, else from L2, else from `loader`.
    ///
    /// Only the loader's error is returned; L2 failures are misses (counted in [`Stats`]).
    pub async fn get<L: Loader>(
        &self,
        key: Key,
        policy: &Policy,
        loader: L,
    ) -> Result<Lookup, LoadError> {
        if let Some(entry) = self.fresh_in_l1(&key).await {
            bump(&self.stats.l1_hits);
            return Ok(Lookup {
                entry,
                source: Source::L1,
            });
        }

        let wait_until = Instant::now() + self.flight_wait;
        loop {
            match self.flights.join(key) {
                Role::Leader(permit) => {
                    let (outcome, source) = self.lead(key, policy, loader).await;
                    permit.finish(outcome.clone());
                    return outcome.map(|entry| Lookup { entry, source });
                }
                Role::Follower(mut flight) => {
                    // Clone the outcome out of the watch guard at once: the guard must not live across an await.
                    let waited =
                        tokio::time::timeout_at(wait_until, flight.wait_for(Option::is_some))
                            .await
                            .map(|published| published.map(|outcome| outcome.clone()));
                    match waited {
                        Ok(Ok(outcome)) => {
                            let outcome = outcome.unwrap_or_else(unreachable_outcome);
                            bump(&self.stats.coalesced);
                            return outcome.map(|entry| Lookup {
                                entry,
                                source: Source::Coalesced,
                            });
                        }
                        // The leader was cancelled before it finished: join again, one of us leads now.
                        Ok(Err(_closed)) => bump(&self.stats.leader_takeovers),
                        Err(_elapsed) => {
                            // The leader is taking too long: answer this caller on its own rather than hang.
                            bump(&self.stats.flight_wait_timeouts);
                            let (outcome, source) = self.lead(key, policy, loader).await;
                            return outcome.map(|entry| Lookup { entry, source });
                        }
                    }
                }
            }
        }
    }

    /// The leader's work: look again in L1 (a previous leader may just have filled it), then L2, then load.
    async fn lead<L: Loader>(&self, key: Key, policy: &Policy, loader: L) -> (Outcome, Source) {
        if let Some(entry) = self.fresh_in_l1(&key).await {
            bump(&self.stats.l1_hits);
            return (Ok(entry), Source::L1);
        }
        if let Some(entry) = self.fresh_in_l2(&key).await {
            bump(&self.stats.l2_hits);
            // Fill L1 before the flight ends, so a caller arriving after it finds L1 filled.
            self.l1.insert(key, entry.clone()).await;
            return (Ok(entry), Source::L2);
        }

        bump(&self.stats.misses);
        let started = Instant::now();
        let fetched = match loader.load().await {
            Ok(fetched) => fetched,
            Err(err) => return (Err(err), Source::Miss),
        };
        let mut entry = fetched.entry;
        let now = self.clock.now();
        entry.fetch_time = started.elapsed();
        entry.created = now;
        entry.fresh_until = self.clock.after(policy.ttl);
        entry.stale_until = entry.fresh_until;
        let entry = Arc::new(entry);
        if fetched.cacheable && !policy.ttl.is_zero() {
            self.l1.insert(key, entry.clone()).await;
            if let Some(wb) = &self.write_back {
                wb.enqueue(L2Write {
                    key,
                    bytes: entry.encode(),
                    ttl: entry.remaining_life(now),
                });
            }
        }
        (Ok(entry), Source::Miss)
    }

    async fn fresh_in_l1(&self, key: &Key) -> Option<Arc<Entry>> {
        self.l1
            .get(key)
            .await
            .filter(|entry| entry.is_fresh(self.clock.now()))
    }

    async fn fresh_in_l2(&self, key: &Key) -> Option<Arc<Entry>> {
        let l2 = self.l2.as_ref()?;
        let bytes = match l2.get(key).await {
            Ok(found) => found?,
            Err(err) => {
                match err {
                    L2Error::Timeout { .. } => bump(&self.stats.l2_timeouts),
                    _ => bump(&self.stats.l2_errors),
                }
                tracing::debug!(error = %err, "L2 read failed; treating as a miss");
                return None;
            }
        };
        match Entry::decode(bytes) {
            Ok(entry) if entry.is_fresh(self.clock.now()) => Some(Arc::new(entry)),
            Ok(_) => None,
            Err(err) => {
                // Counted and treated as a miss; the loader's answer overwrites it.
                bump(&self.stats.l2_undecodable);
                tracing::warn!(error = %err, key = ?key, "undecodable L2 entry; treating as a miss");
                None
            }
        }
    }
}

/// `wait_for(Option::is_some)` only returns once the value is `Some`.
fn unreachable_outcome() -> Outcome {
    Err(LoadError::new(std::io::Error::other(
        "flight finished without an outcome",
    )))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;

    use super::*;
    use crate::key::KeyBuilder;

    /// Counts its calls, waits `delay`, then answers `message` (or fails when `fail`).
    #[derive(Clone)]
    struct CountingLoader {
        calls: Arc<AtomicUsize>,
        delay: Duration,
        message: &'static [u8],
        fail: bool,
    }

    impl CountingLoader {
        fn new(delay: Duration) -> Self {
            Self {
                calls: Arc::new(AtomicUsize::new(0)),
                delay,
                message: b"answer",
                fail: false,
            }
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Loader for CountingLoader {
        async fn load(self) -> Result<Fetched, LoadError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            if self.fail {
                return Err(LoadError::new(std::io::Error::other("backend down")));
            }
            Ok(Fetched {
                entry: Entry::unstamped(Bytes::from_static(self.message), 0, String::new()),
                cacheable: true,
            })
        }
    }

    fn tiered(flight_wait: Duration) -> Arc<Tiered> {
        Arc::new(Tiered::new(
            &TieredConfig {
                l1_max_bytes: 1 << 20,
                flight_wait,
                write_queue: 16,
            },
            None,
        ))
    }

    fn key(s: &str) -> Key {
        KeyBuilder::new("t", "/m").finish(s.as_bytes())
    }

    const POLICY: Policy = Policy {
        ttl: Duration::from_secs(30),
    };

    #[tokio::test(start_paused = true)]
    async fn miss_then_l1_then_expiry() {
        let cache = tiered(Duration::from_secs(5));
        let loader = CountingLoader::new(Duration::from_millis(10));
        let first = cache
            .get(key("a"), &POLICY, loader.clone())
            .await
            .expect("loads");
        assert_eq!(first.source, Source::Miss);
        let second = cache
            .get(key("a"), &POLICY, loader.clone())
            .await
            .expect("hits");
        assert_eq!(second.source, Source::L1);
        assert!(Arc::ptr_eq(&first.entry, &second.entry));
        assert_eq!(loader.calls(), 1);

        tokio::time::advance(Duration::from_secs(31)).await;
        let third = cache
            .get(key("a"), &POLICY, loader.clone())
            .await
            .expect("reloads");
        assert_eq!(
            third.source,
            Source::Miss,
            "past its ttl the entry is not fresh"
        );
        assert_eq!(loader.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_load() {
        let cache = tiered(Duration::from_secs(5));
        let loader = CountingLoader::new(Duration::from_millis(100));
        let calls: Vec<_> = (0..100)
            .map(|_| {
                let (cache, loader) = (cache.clone(), loader.clone());
                tokio::spawn(async move { cache.get(key("a"), &POLICY, loader).await })
            })
            .collect();
        let mut sources = Vec::new();
        for call in calls {
            let lookup = call.await.expect("task").expect("answer");
            assert_eq!(lookup.entry.message, Bytes::from_static(b"answer"));
            sources.push(lookup.source);
        }
        assert_eq!(loader.calls(), 1);
        assert_eq!(sources.iter().filter(|s| **s == Source::Miss).count(), 1);
        assert_eq!(cache.flights.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_are_shared_but_not_cached() {
        let cache = tiered(Duration::from_secs(5));
        let mut failing = CountingLoader::new(Duration::from_millis(50));
        failing.fail = true;
        let (a, b) = tokio::join!(
            cache.get(key("a"), &POLICY, failing.clone()),
            cache.get(key("a"), &POLICY, failing.clone())
        );
        assert!(a.is_err() && b.is_err());
        assert_eq!(failing.calls(), 1, "the follower shared the leader's error");

        let healthy = CountingLoader::new(Duration::from_millis(1));
        let next = cache
            .get(key("a"), &POLICY, healthy.clone())
            .await
            .expect("loads");
        assert_eq!(next.source, Source::Miss, "the error was not cached");
        assert_eq!(healthy.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_leader_hands_over_to_a_follower() {
        let cache = tiered(Duration::from_secs(5));
        let loader = CountingLoader::new(Duration::from_millis(100));
        let leader = {
            let (cache, loader) = (cache.clone(), loader.clone());
            tokio::spawn(async move { cache.get(key("a"), &POLICY, loader).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let followers: Vec<_> = (0..5)
            .map(|_| {
                let (cache, loader) = (cache.clone(), loader.clone());
                tokio::spawn(async move { cache.get(key("a"), &POLICY, loader).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        leader.abort();
        for f in followers {
            let lookup = f.await.expect("task").expect("answer");
            assert_eq!(lookup.entry.message, Bytes::from_static(b"answer"));
        }
        assert_eq!(
            loader.calls(),
            2,
            "the cancelled leader's load, then one follower's"
        );
        assert_eq!(cache.stats().snapshot().leader_takeovers, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_leader_does_not_hold_followers_past_the_wait() {
        let cache = tiered(Duration::from_millis(200));
        let slow = CountingLoader::new(Duration::from_secs(10));
        let leader = {
            let (cache, slow) = (cache.clone(), slow.clone());
            tokio::spawn(async move { cache.get(key("a"), &POLICY, slow).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let fast = CountingLoader::new(Duration::from_millis(1));
        let started = Instant::now();
        let lookup = cache
            .get(key("a"), &POLICY, fast.clone())
            .await
            .expect("answers");
        assert_eq!(lookup.source, Source::Miss);
        assert!(started.elapsed() < Duration::from_millis(300));
        assert_eq!(cache.stats().snapshot().flight_wait_timeouts, 1);
        leader.abort();
    }
}
