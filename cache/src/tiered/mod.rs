//! `Tiered`: L1 → single-flight → L2 → loader, write-back to both levels, and the stale-serving rules
//! (stale-while-revalidate, stale-if-error, early refresh).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::Instrument;

use crate::clock::Clock;
use crate::coherence::Coherence;
use crate::entry::{Entry, EntryState};
use crate::error::LoadError;
use crate::flight::{Flights, Followed, LeaderPermit, Outcome, Role, Shared};
use crate::key::Key;
use crate::l1::L1;
use crate::l2::{L2, WriteBack};
use crate::loader::{LoadMode, Loader};
use crate::lookup::{Lookup, Source};
use crate::stats::{Stats, bump};

mod fetch;
mod invalidate;
mod lease;
#[cfg(test)]
mod tests;

use fetch::Fill;
pub use lease::LeaseConfig;

/// Settings of a [`Tiered`] cache.
#[derive(Debug, Clone)]
pub struct TieredConfig {
    /// L1 budget in bytes (0 disables L1).
    pub l1_max_bytes: u64,
    /// How long past the time a flight should be over (the loader's time limit, twice that with the lease) a
    /// caller keeps waiting for it before fetching on its own: a guard against a fetch that is stuck, never a limit
    /// on a healthy one (callers stop waiting at their own deadlines).
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
pub(super) enum RefreshReason {
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

    /// How many invalidation scopes this replica holds a generation of (each is kept in memory and re-read from
    /// Redis after a reconnect, so callers must name scopes from a bounded set).
    pub fn scopes_known(&self) -> usize {
        self.coherence.len()
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

    /// The answer for `key`: from L1, else from an in-flight fetch, else from L2, else from `loader`.
    ///
    /// A cached answer past its freshness is served at once (`Stale`) while one background refresh per key runs, for
    /// as long as its stale-while-revalidate window lasts; after that, only if fetching fails and its stale-if-error
    /// window lasts. L2 failures are misses (counted in [`Stats`]); a loader failure is returned only when no stale
    /// answer may stand in for it.
    ///
    /// A fetch runs in a task of its own under the loader's time limit: a caller that stops waiting (its deadline,
    /// its client gone) does not stop it, and what it fetched still fills the cache for the next caller. Callers of
    /// the same key wait for it and get what is theirs to have: a stored answer, a backend failure, a stale entry.
    /// An answer that may not be stored, and an error that is the leader's own, go to the leader's caller only; the
    /// others then fetch for themselves.
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
                        self.refresh_unless_in_flight(key, loader, RefreshReason::Early, &entry);
                    }
                    return Ok(Lookup {
                        entry,
                        source: Source::L1,
                    });
                }
                EntryState::Revalidate => {
                    bump(&self.stats.stale_served);
                    self.refresh_unless_in_flight(key, loader, RefreshReason::Stale, &entry);
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
        mut fallback: Option<Arc<Entry>>,
    ) -> Result<Lookup, LoadError> {
        loop {
            let mut flight = match self.flights.join(key) {
                Role::Leader(permit) => return self.lead(key, loader, permit, fallback).await,
                Role::Follower(flight) => flight,
            };
            let started = Instant::now();
            let followed = flight
                .follow(self.flight_wait)
                .instrument(tracing::info_span!("strata.flight.wait"))
                .await;
            self.stats.flight_wait_seconds.observe(started.elapsed());
            match followed {
                Followed::Published(Shared::Outcome {
                    outcome,
                    fallback: found,
                }) => {
                    bump(&self.stats.coalesced);
                    fallback = newest(fallback, found);
                    return self.answer(outcome, fallback, Source::Coalesced);
                }
                Followed::Published(Shared::Stale(entry)) => {
                    bump(&self.stats.stale_served);
                    return Ok(Lookup {
                        entry,
                        source: Source::Stale,
                    });
                }
                // The answer was the leader caller's alone: join again, to fetch for this caller.
                Followed::Published(Shared::LeadersOwn) => bump(&self.stats.not_shared),
                // The leader's task is gone: join again, one of the waiting callers leads now.
                Followed::Abandoned => bump(&self.stats.leader_takeovers),
                Followed::Overdue => {
                    // The flight ran past its own time limit and the grace: answer this caller on its own rather
                    // than hang, storing nothing.
                    bump(&self.stats.flight_wait_timeouts);
                    let outcome = self.load_unstored(loader, LoadMode::Foreground).await;
                    return self.answer(outcome, fallback, Source::Miss);
                }
            }
        }
    }

    /// The leader's work: look again in L1 (a previous leader may just have filled it), then in L2, then fetch in a
    /// task of its own and wait for it.
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
                permit.finish(Shared::found(entry.clone()));
                return Ok(Lookup {
                    entry,
                    source: Source::L1,
                });
            }
        }
        let read = self.read_l2(&key).await;
        if let Some(entry) = read.entry.clone() {
            match entry.state(self.clock.now()) {
                EntryState::Fresh => {
                    bump(&self.stats.l2_hits);
                    // Fill L1 before the flight ends, so a caller arriving after it finds L1 filled.
                    self.l1.insert(key, entry.clone()).await;
                    permit.finish(Shared::found(entry.clone()));
                    return Ok(Lookup {
                        entry,
                        source: Source::L2,
                    });
                }
                EntryState::Revalidate => {
                    bump(&self.stats.stale_served);
                    self.l1.insert(key, entry.clone()).await;
                    // Every caller waiting, or arriving while the refresh runs, is served this entry at once.
                    permit.publish_stale(entry.clone());
                    self.spawn_refresh(
                        key,
                        loader,
                        permit,
                        RefreshReason::Stale,
                        entry.clone(),
                        Some(read),
                    );
                    return Ok(Lookup {
                        entry,
                        source: Source::Stale,
                    });
                }
                EntryState::ErrorFallback => fallback = newest(fallback, Some(entry)),
                EntryState::Expired => {}
            }
        }

        let fill = Fill {
            seen_tombstone: read.tombstone,
            replaces: read.entry.is_some() || fallback.is_some(),
        };
        let (answered, answer) = oneshot::channel();
        let cache = self.clone();
        let shared_fallback = fallback.clone();
        tokio::spawn(
            async move {
                let (outcome, source) = cache
                    .fetch(key, loader, LoadMode::Foreground, &permit, fill)
                    .await;
                let shared = Shared::of(&outcome, shared_fallback);
                // This caller may have stopped waiting; the answer still fills the cache and the followers.
                let _ = answered.send((outcome, source));
                permit.finish(shared);
            }
            .in_current_span(),
        );
        match answer.await {
            Ok((outcome, source)) => self.answer(outcome, fallback, source),
            Err(_gone) => Err(LoadError::new(std::io::Error::other(
                "the fetch ended without an answer",
            ))),
        }
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

    /// The L1 entry for `key`, unless this replica is out of step with invalidations and the entry is too old to
    /// trust.
    async fn read_l1(&self, key: &Key) -> Option<Arc<Entry>> {
        let entry = self.l1.get(key).await?;
        self.coherence
            .may_serve_l1(entry.created, self.clock.now())
            .then_some(entry)
    }
}

/// The newer of two stale entries that may stand in for a failure.
fn newest(a: Option<Arc<Entry>>, b: Option<Arc<Entry>>) -> Option<Arc<Entry>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.created > a.created { b } else { a }),
        (a, b) => a.or(b),
    }
}
