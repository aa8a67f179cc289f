//! `Tiered`: L1 → single-flight → L2 → loader, write-back to both levels, and the stale-serving rules
//! (stale-while-revalidate, stale-if-error, early refresh).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use crate::clock::Clock;
use crate::coherence::Coherence;
use crate::entry::{Entry, EntryState};
use crate::error::{L2Error, LoadError};
use crate::flight::{Answer, Flights, LeaderPermit, Outcome, Role};
use crate::key::Key;
use crate::l1::L1;
use crate::l2::{L2, L2Write, WriteBack};
use crate::loader::{LoadMode, Loader};
use crate::lookup::{Lookup, Source};
use crate::stats::{Stats, bump};

mod invalidate;
mod lease;
#[cfg(test)]
mod tests;

pub use lease::LeaseConfig;
use lease::{HeldLease, Waited};

/// Settings of a [`Tiered`] cache.
#[derive(Debug, Clone)]
pub struct TieredConfig {
    /// L1 budget in bytes (0 disables L1).
    pub l1_max_bytes: u64,
    /// The longest a follower waits for a leader's load before loading on its own.
    pub flight_wait: Duration,
    /// Capacity of the L2 write-back queue; writes beyond it are dropped and counted.
    pub write_queue: usize,
    /// The cross-replica stampede guard (needs L2); `None`: each replica fetches on its own.
    pub lease: Option<LeaseConfig>,
    /// While this replica is out of step with the invalidation channel, L1 entries older than this are not served.
    pub l1_max_age_out_of_step: Duration,
}

/// How one route's lookups behave (how long answers live is the loader's to say, per answer).
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// XFetch early refresh: 0 disables, 1 is the classic setting, larger refreshes earlier.
    pub early_refresh_beta: f64,
}

/// The two-level cache with single-flight loads.
#[derive(Debug)]
pub struct Tiered {
    l1: L1,
    l2: Option<Arc<dyn L2>>,
    write_back: Option<WriteBack>,
    flights: Arc<Flights>,
    flight_wait: Duration,
    lease: Option<LeaseConfig>,
    coherence: Arc<Coherence>,
    clock: Clock,
    stats: Arc<Stats>,
}

/// Why a refresh runs without a caller waiting for it.
#[derive(Debug, Clone, Copy)]
enum RefreshReason {
    /// The entry is past its freshness and was served stale.
    Stale,
    /// The entry is fresh, and XFetch chose to refresh it early.
    Early,
}

impl Tiered {
    /// A cache with L1 and, if given, L2. Spawns the write-back worker, so it needs a tokio runtime.
    pub fn new(config: &TieredConfig, l2: Option<Arc<dyn L2>>) -> Self {
        let clock = Clock::new();
        let stats = Arc::new(Stats::default());
        let write_back = l2
            .as_ref()
            .map(|l2| WriteBack::spawn(l2.clone(), config.write_queue, stats.clone()));
        let coherence = Arc::new(Coherence::new(l2.is_some(), config.l1_max_age_out_of_step));
        Self {
            l1: L1::new(config.l1_max_bytes, clock, stats.clone()),
            l2,
            write_back,
            flights: Arc::new(Flights::default()),
            flight_wait: config.flight_wait,
            lease: config.lease,
            coherence,
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
    /// A cached answer past its freshness is served at once (`Stale`) while one background refresh per key runs, for
    /// as long as its stale-while-revalidate window lasts; after that, only if fetching fails and its stale-if-error
    /// window lasts. L2 failures are misses (counted in [`Stats`]); a loader failure is returned only when no stale
    /// answer may stand in for it.
    pub async fn get<L: Loader>(
        self: &Arc<Self>,
        key: Key,
        policy: &Policy,
        loader: L,
    ) -> Result<Lookup, LoadError> {
        let mut fallback = None;
        if let Some(entry) = self.read_l1(&key).await {
            match entry.state(self.clock.now()) {
                EntryState::Fresh => {
                    bump(&self.stats.l1_hits);
                    if self.should_refresh_early(&entry, policy) {
                        self.refresh_unless_in_flight(key, loader, RefreshReason::Early);
                    }
                    return Ok(Lookup {
                        entry,
                        source: Source::L1,
                    });
                }
                EntryState::Revalidate => {
                    bump(&self.stats.stale_served);
                    self.refresh_unless_in_flight(key, loader, RefreshReason::Stale);
                    return Ok(Lookup {
                        entry,
                        source: Source::Stale,
                    });
                }
                EntryState::ErrorFallback => fallback = Some(entry),
                EntryState::Expired => {}
            }
        }
        // Boxed: the flight, L2, lease and loader steps make a future of several KiB, and an L1 hit — the common
        // case — would otherwise pay for moving all of it with every call.
        Box::pin(self.join_flight(key, loader, fallback)).await
    }

    /// Past L1: waits for the key's flight if one is under way, else leads it.
    async fn join_flight<L: Loader>(
        self: &Arc<Self>,
        key: Key,
        loader: L,
        fallback: Option<Arc<Entry>>,
    ) -> Result<Lookup, LoadError> {
        let wait_until = Instant::now() + self.flight_wait;
        loop {
            match self.flights.join(key) {
                Role::Leader(permit) => return self.lead(key, loader, permit, fallback).await,
                Role::Follower(mut flight) => {
                    // Clone the outcome out of the watch guard at once: the guard must not live across an await.
                    let started = Instant::now();
                    let waited =
                        tokio::time::timeout_at(wait_until, flight.wait_for(Option::is_some))
                            .instrument(tracing::info_span!("strata.flight.wait"))
                            .await
                            .map(|published| published.map(|outcome| outcome.clone()));
                    self.stats.flight_wait_seconds.observe(started.elapsed());
                    match waited {
                        Ok(Ok(outcome)) => {
                            let outcome = outcome.unwrap_or_else(unreachable_outcome);
                            bump(&self.stats.coalesced);
                            return self.answer(outcome, fallback, Source::Coalesced);
                        }
                        // The leader was cancelled before it finished: join again, one of us leads now.
                        Ok(Err(_closed)) => bump(&self.stats.leader_takeovers),
                        Err(_elapsed) => {
                            // The leader is taking too long: answer this caller on its own rather than hang.
                            bump(&self.stats.flight_wait_timeouts);
                            let (outcome, source) =
                                self.fetch(key, loader, LoadMode::Foreground).await;
                            return self.answer(outcome, fallback, source);
                        }
                    }
                }
            }
        }
    }

    /// The leader's work: look again in L1 (a previous leader may just have filled it), then in L2, then fetch.
    async fn lead<L: Loader>(
        self: &Arc<Self>,
        key: Key,
        loader: L,
        permit: LeaderPermit,
        mut fallback: Option<Arc<Entry>>,
    ) -> Result<Lookup, LoadError> {
        if let Some(entry) = self.read_l1(&key).await {
            if entry.is_fresh(self.clock.now()) {
                bump(&self.stats.l1_hits);
                permit.finish(Ok(Answer {
                    entry: entry.clone(),
                    failed: false,
                }));
                return Ok(Lookup {
                    entry,
                    source: Source::L1,
                });
            }
        }
        if let Some(entry) = self.read_l2(&key).await {
            match entry.state(self.clock.now()) {
                EntryState::Fresh => {
                    bump(&self.stats.l2_hits);
                    // Fill L1 before the flight ends, so a caller arriving after it finds L1 filled.
                    self.l1.insert(key, entry.clone()).await;
                    permit.finish(Ok(Answer {
                        entry: entry.clone(),
                        failed: false,
                    }));
                    return Ok(Lookup {
                        entry,
                        source: Source::L2,
                    });
                }
                EntryState::Revalidate => {
                    bump(&self.stats.stale_served);
                    self.l1.insert(key, entry.clone()).await;
                    // This caller holds the flight: it hands it to the refresh.
                    self.spawn_refresh(key, loader, permit, RefreshReason::Stale);
                    return Ok(Lookup {
                        entry,
                        source: Source::Stale,
                    });
                }
                EntryState::ErrorFallback => {
                    if fallback.as_ref().is_none_or(|f| f.created < entry.created) {
                        fallback = Some(entry);
                    }
                }
                EntryState::Expired => {}
            }
        }

        let (outcome, source) = self.fetch(key, loader, LoadMode::Foreground).await;
        permit.finish(outcome.clone());
        self.answer(outcome, fallback, source)
    }

    /// Fetches the key for this replica: under the cross-replica lease when one is configured (another replica's
    /// answer, found in L2, is `Coalesced`), else straight from the loader.
    async fn fetch<L: Loader>(&self, key: Key, loader: L, mode: LoadMode) -> (Outcome, Source) {
        let (Some(l2), Some(config)) = (&self.l2, &self.lease) else {
            return (self.load(key, loader, mode, None, true).await, Source::Miss);
        };
        let held = match HeldLease::try_take(l2, key, config.ttl)
            .instrument(tracing::info_span!("strata.lease.take"))
            .await
        {
            // Another replica may have stored its answer and released its lease since this one read L2 (on a busy
            // replica that can take a while): look once more before calling the backend.
            Ok(Some(held)) => match self.stored_meanwhile(key, held).await {
                Ok(answered) => return answered,
                Err(held) => held,
            },
            Ok(None) => {
                let usable = |e: &Entry| e.is_fresh(self.clock.now());
                let waited = lease::wait_for_holder(l2, key, config, usable)
                    .instrument(tracing::info_span!("strata.lease.wait"))
                    .await;
                match waited {
                    Waited::Answer(entry) => {
                        bump(&self.stats.lease_waited_hit);
                        return (
                            self.adopt_other_replicas(key, entry).await,
                            Source::Coalesced,
                        );
                    }
                    // The holder may have stored its answer just before releasing: look once more.
                    Waited::Took(held) => match self.stored_meanwhile(key, held).await {
                        Ok(answered) => return answered,
                        Err(held) => held,
                    },
                    Waited::GaveUp => {
                        // Never an error because of the lease: answer from the backend, and store nothing.
                        bump(&self.stats.lease_gave_up);
                        return (
                            self.load(key, loader, mode, None, false).await,
                            Source::Miss,
                        );
                    }
                }
            }
            Err(err) => {
                bump(&self.stats.l2_errors);
                tracing::debug!(error = %err, "lease unavailable; fetching without it");
                return (self.load(key, loader, mode, None, true).await, Source::Miss);
            }
        };
        bump(&self.stats.lease_acquired);
        (
            self.load(key, loader, mode, Some(held), true).await,
            Source::Miss,
        )
    }

    /// Just after this replica took the lease: the fresh answer another replica stored in L2 before releasing its
    /// own lease, if there is one (then the lease is let go, and the backend is not called), else the lease back.
    async fn stored_meanwhile(
        &self,
        key: Key,
        held: HeldLease,
    ) -> Result<(Outcome, Source), HeldLease> {
        match self
            .read_l2(&key)
            .await
            .filter(|e| e.is_fresh(self.clock.now()))
        {
            Some(entry) => {
                drop(held);
                bump(&self.stats.lease_waited_hit);
                Ok((
                    self.adopt_other_replicas(key, entry).await,
                    Source::Coalesced,
                ))
            }
            None => Err(held),
        }
    }

    async fn adopt_other_replicas(&self, key: Key, entry: Arc<Entry>) -> Outcome {
        self.l1.insert(key, entry.clone()).await;
        Ok(Answer {
            entry,
            failed: false,
        })
    }

    /// Calls the loader and, when `may_store` and the answer's lifetime allow, stores the answer: in L1 at once, in L2
    /// through the write-back queue, or, when this replica holds the lease, directly and then releases the lease.
    async fn load<L: Loader>(
        &self,
        key: Key,
        loader: L,
        mode: LoadMode,
        lease: Option<HeldLease>,
        may_store: bool,
    ) -> Outcome {
        bump(&self.stats.misses);
        let started = Instant::now();
        let fetched = loader
            .load(mode)
            .instrument(tracing::info_span!(
                "strata.load",
                background = mode == LoadMode::Background
            ))
            .await?;
        let mut entry = fetched.entry;
        entry.fetch_time = started.elapsed();
        let now = self.clock.now();
        let Some(lifetime) = fetched.lifetime.filter(|l| may_store && !l.fresh.is_zero()) else {
            return Ok(Answer {
                entry: Arc::new(entry),
                failed: fetched.failed,
            });
        };
        entry.stamp(now, &lifetime);
        let entry = Arc::new(entry);
        self.l1.insert(key, entry.clone()).await;
        let write = L2Write {
            key,
            bytes: entry.encode(),
            ttl: entry.remaining_life(now),
        };
        match (lease, &self.write_back) {
            (Some(held), _) => {
                let stats = self.stats.clone();
                held.store_then_release(write, move |written| {
                    bump(if written {
                        &stats.l2_writes
                    } else {
                        &stats.l2_write_errors
                    });
                });
            }
            (None, Some(wb)) => {
                tracing::debug!("queued for the L2 write-back");
                wb.enqueue(write);
            }
            (None, None) => {}
        }
        Ok(Answer {
            entry,
            failed: fetched.failed,
        })
    }

    /// The caller's answer: the outcome, unless it is a failure and a stale answer may stand in for it.
    fn answer(
        &self,
        outcome: Outcome,
        fallback: Option<Arc<Entry>>,
        source: Source,
    ) -> Result<Lookup, LoadError> {
        let failed = outcome.as_ref().map_or(true, |a| a.failed);
        if failed {
            let now = self.clock.now();
            if let Some(entry) = fallback.filter(|e| now < e.stale_if_error_until) {
                bump(&self.stats.stale_if_error_served);
                return Ok(Lookup {
                    entry,
                    source: Source::Stale,
                });
            }
        }
        outcome.map(|a| Lookup {
            entry: a.entry,
            source,
        })
    }

    fn should_refresh_early(&self, entry: &Entry, policy: &Policy) -> bool {
        policy.early_refresh_beta > 0.0
            && crate::xfetch::should_refresh(
                entry,
                self.clock.now(),
                policy.early_refresh_beta,
                &mut rand::rng(),
            )
    }

    /// Starts a background refresh of `key`, unless a load of it is already in flight (which will refresh it).
    fn refresh_unless_in_flight<L: Loader>(
        self: &Arc<Self>,
        key: Key,
        loader: L,
        reason: RefreshReason,
    ) {
        if let Role::Leader(permit) = self.flights.join(key) {
            self.spawn_refresh(key, loader, permit, reason);
        }
    }

    /// Refreshes `key` in a task of its own, holding the key's flight so it is the only one.
    fn spawn_refresh<L: Loader>(
        self: &Arc<Self>,
        key: Key,
        loader: L,
        permit: LeaderPermit,
        reason: RefreshReason,
    ) {
        match reason {
            RefreshReason::Stale => bump(&self.stats.refreshes_stale),
            RefreshReason::Early => bump(&self.stats.refreshes_early),
        }
        let cache = self.clone();
        tokio::spawn(async move {
            // A failed refresh stores nothing: the stale entry keeps being served within its windows.
            let (outcome, _) = cache.fetch(key, loader, LoadMode::Background).await;
            permit.finish(outcome);
        });
    }

    /// The L1 entry for `key`, unless this replica is out of step with invalidations and the entry is too old to
    /// trust.
    async fn read_l1(&self, key: &Key) -> Option<Arc<Entry>> {
        let entry = self.l1.get(key).await?;
        self.coherence
            .may_serve_l1(entry.created, self.clock.now())
            .then_some(entry)
    }

    async fn read_l2(&self, key: &Key) -> Option<Arc<Entry>> {
        let l2 = self.l2.as_ref()?;
        let started = Instant::now();
        let read = l2
            .get(key)
            .instrument(tracing::info_span!("strata.l2.get"))
            .await;
        self.stats.l2_read_seconds.observe(started.elapsed());
        let bytes = match read {
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
            Ok(entry) => Some(Arc::new(entry)),
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
