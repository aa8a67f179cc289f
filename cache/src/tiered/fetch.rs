//! Fetching a key past both levels: under the cross-replica lease when there is one, storing what may be stored,
//! withdrawing what the backend's latest answer no longer allows, and never writing back over an invalidation.
//! Background refreshes (stale-while-revalidate, early refresh) fetch the same way.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::Instrument;

use super::lease::{self, HeldLease, Waited};
use super::{RefreshReason, Tiered};
use crate::entry::Entry;
use crate::entry::Lifetime;
use crate::error::{L2Error, LoadError};
use crate::flight::{Answer, LeaderPermit, Outcome, Role, Shared};
use crate::key::Key;
use crate::l2::{L2Write, is_tombstone};
use crate::loader::{Fetched, LoadMode, Loader};
use crate::lookup::Source;
use crate::stats::bump;

/// What a fetch must respect, and what it replaces.
#[derive(Debug, Default)]
pub(super) struct Fill {
    /// The tombstone the L2 read before the fetch found under the key: the L2 write is skipped if another one is
    /// there by then (the key was invalidated while the fetch ran).
    pub seen_tombstone: Option<Bytes>,
    /// Something was stored under the key: an answer that may not be stored withdraws it.
    pub replaces: bool,
}

/// What an L2 read found under a key.
#[derive(Debug, Default)]
pub(super) struct L2Read {
    /// The entry, if there is one and it decodes.
    pub entry: Option<Arc<Entry>>,
    /// The tombstone, if the key was invalidated a short while ago.
    pub tombstone: Option<Bytes>,
}

impl Tiered {
    /// Fetches the key for this replica: under the cross-replica lease when one is configured (another replica's
    /// answer, found in L2, is `Coalesced`), else straight from the loader. Tells the flight when it will be over.
    pub(super) async fn fetch<L: Loader>(
        &self,
        key: Key,
        loader: L,
        mode: LoadMode,
        permit: &LeaderPermit,
        mut fill: Fill,
    ) -> (Outcome, Source) {
        let limit = loader.time_limit();
        let (Some(l2), Some(config)) = (&self.l2, &self.lease) else {
            permit.expect_end_within(limit);
            let outcome = self
                .load_and_store(key, loader, mode, (permit, fill), None)
                .await;
            return (outcome, Source::Miss);
        };
        // Waiting for another replica's fetch (as long as its own may take), then maybe fetching here.
        permit.expect_end_within(limit.saturating_mul(2));
        let taken = HeldLease::try_take(l2, key, config.ttl)
            .instrument(tracing::info_span!("strata.lease.take"))
            .await;
        let held = match taken {
            // Another replica may have stored its answer and released its lease since this one read L2 (on a busy
            // replica that can take a while): look once more before calling the backend.
            Ok(Some(held)) => match self.stored_meanwhile(key, held).await {
                Ok(answered) => return answered,
                Err((held, tombstone)) => {
                    fill.seen_tombstone = tombstone;
                    held
                }
            },
            Ok(None) => {
                let usable = |e: &Entry| e.is_fresh(self.clock.now());
                let waited =
                    lease::wait_for_holder(l2, key, config, Instant::now() + limit, usable)
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
                        Err((held, tombstone)) => {
                            fill.seen_tombstone = tombstone;
                            held
                        }
                    },
                    Waited::GaveUp => {
                        // Never an error because of the lease: answer from the backend, and store nothing.
                        bump(&self.stats.lease_gave_up);
                        return (self.load_unstored(loader, mode).await, Source::Miss);
                    }
                }
            }
            Err(err) => {
                bump(&self.stats.l2_errors);
                tracing::debug!(error = %err, "lease unavailable; fetching without it");
                let outcome = self
                    .load_and_store(key, loader, mode, (permit, fill), None)
                    .await;
                return (outcome, Source::Miss);
            }
        };
        bump(&self.stats.lease_acquired);
        let outcome = self
            .load_and_store(key, loader, mode, (permit, fill), Some(held))
            .await;
        (outcome, Source::Miss)
    }

    /// Just after this replica took the lease: the fresh answer another replica stored in L2 before releasing its
    /// own lease, if there is one (then the lease is let go, and the backend is not called), else the lease back
    /// with the tombstone found.
    async fn stored_meanwhile(
        &self,
        key: Key,
        held: HeldLease,
    ) -> Result<(Outcome, Source), (HeldLease, Option<Bytes>)> {
        let read = self.read_l2(&key).await;
        match read.entry.filter(|e| e.is_fresh(self.clock.now())) {
            Some(entry) => {
                drop(held);
                bump(&self.stats.lease_waited_hit);
                Ok((
                    self.adopt_other_replicas(key, entry).await,
                    Source::Coalesced,
                ))
            }
            None => Err((held, read.tombstone)),
        }
    }

    async fn adopt_other_replicas(&self, key: Key, entry: Arc<Entry>) -> Outcome {
        self.l1.insert(key, entry.clone()).await;
        Ok(Answer::found(entry))
    }

    /// Calls the loader and stores nothing (this call does not lead the key's flight, or the lease was given up).
    pub(super) async fn load_unstored<L: Loader>(&self, loader: L, mode: LoadMode) -> Outcome {
        bump(&self.stats.misses);
        let (fetched, _) = self.call_loader(loader, mode).await?;
        let storable = storable_lifetime(&fetched).is_some();
        Ok(Answer::fetched(
            Arc::new(fetched.entry),
            fetched.failed,
            storable,
        ))
    }

    /// Calls the loader and, when the answer's lifetime allows, stores it: in L1 at once, in L2 through the
    /// write-back queue or, when this replica holds the lease, directly and then releases the lease. An answer that
    /// may not be stored withdraws what was stored under the key. An invalidation that arrived meanwhile wins: the
    /// answer goes to the callers waiting for it, but is not stored.
    async fn load_and_store<L: Loader>(
        &self,
        key: Key,
        loader: L,
        mode: LoadMode,
        (permit, fill): (&LeaderPermit, Fill),
        lease: Option<HeldLease>,
    ) -> Outcome {
        bump(&self.stats.misses);
        let (fetched, fetch_time) = self.call_loader(loader, mode).await?;
        let lifetime = storable_lifetime(&fetched);
        let mut entry = fetched.entry;
        entry.fetch_time = fetch_time;
        let Some(lifetime) = lifetime else {
            if !fetched.failed && fill.replaces {
                // The backend's latest answer may not be stored: nothing stored may stand for it any longer.
                self.withdraw(key).await;
            }
            return Ok(Answer::fetched(Arc::new(entry), fetched.failed, false));
        };
        let now = self.clock.now();
        entry.stamp(now, &lifetime);
        let entry = Arc::new(entry);
        let answer = Answer::fetched(entry.clone(), fetched.failed, true);
        self.l1.insert(key, entry.clone()).await;
        // Inserted first, checked second: an invalidation marks the flight before it clears L1, so either it clears
        // this insert or this check sees its mark.
        if permit.was_invalidated() {
            self.l1.remove(&key).await;
            bump(&self.stats.fills_overtaken);
            return Ok(answer);
        }
        let write = L2Write {
            key,
            bytes: entry.encode(),
            ttl: entry.remaining_life(now),
            seen_tombstone: fill.seen_tombstone,
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
        Ok(answer)
    }

    async fn call_loader<L: Loader>(
        &self,
        loader: L,
        mode: LoadMode,
    ) -> Result<(Fetched, Duration), LoadError> {
        let started = Instant::now();
        let fetched = loader
            .load(mode)
            .instrument(tracing::info_span!(
                "strata.load",
                background = mode == LoadMode::Background
            ))
            .await?;
        Ok((fetched, started.elapsed()))
    }

    /// Removes the entry under `key` from this replica's L1 at once, and from L2 and the other replicas' L1 in the
    /// background.
    async fn withdraw(&self, key: Key) {
        bump(&self.stats.withdrawn);
        self.l1.remove(&key).await;
        if let Some(l2) = self.l2.clone() {
            let stats = self.stats.clone();
            tokio::spawn(async move {
                if let Err(err) = l2.delete(&key).await {
                    bump(&stats.l2_errors);
                    tracing::debug!(error = %err, "could not withdraw an entry from L2");
                }
            });
        }
    }

    /// Starts a background refresh of `key`, unless a fetch of it is already under way (which will refresh it).
    pub(super) fn refresh_unless_in_flight<L: Loader>(
        self: &Arc<Self>,
        key: Key,
        loader: L,
        reason: RefreshReason,
        current: &Arc<Entry>,
    ) {
        if let Role::Leader(permit) = self.flights.join(key) {
            if let RefreshReason::Stale = reason {
                // A caller of this key without it in L1 is served the same stale entry while the refresh runs.
                permit.publish_stale(current.clone());
            }
            self.spawn_refresh(key, loader, permit, reason, current.clone(), None);
        }
    }

    /// Refreshes `key` in a task of its own, holding the key's flight so it is the only one. `current`: the entry
    /// being refreshed; `read`: what L2 held, if the caller has just read it.
    pub(super) fn spawn_refresh<L: Loader>(
        self: &Arc<Self>,
        key: Key,
        loader: L,
        permit: LeaderPermit,
        reason: RefreshReason,
        current: Arc<Entry>,
        read: Option<L2Read>,
    ) {
        match reason {
            RefreshReason::Stale => bump(&self.stats.refreshes_stale),
            RefreshReason::Early => bump(&self.stats.refreshes_early),
        }
        let cache = self.clone();
        tokio::spawn(async move {
            let read = match read {
                Some(read) => read,
                None => cache.read_l2(&key).await,
            };
            // Another replica may have refreshed the key already: adopt its newer answer rather than fetch again.
            let newer = read
                .entry
                .filter(|e| e.is_fresh(cache.clock.now()) && e.created > current.created);
            if let Some(entry) = newer {
                let outcome = cache.adopt_other_replicas(key, entry).await;
                permit.finish(Shared::of(&outcome, None));
                return;
            }
            let fill = Fill {
                seen_tombstone: read.tombstone,
                replaces: true,
            };
            // A failed refresh stores nothing: the entry keeps being served within its windows.
            let (outcome, _) = cache
                .fetch(key, loader, LoadMode::Background, &permit, fill)
                .await;
            permit.finish(Shared::of(&outcome, Some(current)));
        });
    }

    /// What L2 holds under `key`. A failed read is a miss (counted), and so is an entry that does not decode.
    pub(super) async fn read_l2(&self, key: &Key) -> L2Read {
        let Some(l2) = self.l2.as_ref() else {
            return L2Read::default();
        };
        let started = Instant::now();
        let read = l2
            .get(key)
            .instrument(tracing::info_span!("strata.l2.get"))
            .await;
        self.stats.l2_read_seconds.observe(started.elapsed());
        let bytes = match read {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return L2Read::default(),
            Err(err) => {
                match err {
                    L2Error::Timeout { .. } => bump(&self.stats.l2_timeouts),
                    _ => bump(&self.stats.l2_errors),
                }
                tracing::debug!(error = %err, "L2 read failed; treating as a miss");
                return L2Read::default();
            }
        };
        if is_tombstone(&bytes) {
            return L2Read {
                entry: None,
                tombstone: Some(bytes),
            };
        }
        match Entry::decode(bytes) {
            Ok(entry) => L2Read {
                entry: Some(Arc::new(entry)),
                tombstone: None,
            },
            Err(err) => {
                // Counted and treated as a miss; the loader's answer overwrites it.
                bump(&self.stats.l2_undecodable);
                tracing::warn!(error = %err, key = ?key, "undecodable L2 entry; treating as a miss");
                L2Read::default()
            }
        }
    }
}

/// How long a fetched answer may be stored: its lifetime, unless there is none or it is fresh for no time at all.
fn storable_lifetime(fetched: &Fetched) -> Option<Lifetime> {
    fetched.lifetime.filter(|l| !l.fresh.is_zero())
}
