//! Invalidation: by scope (a generation bump, no scan), by key, and the background task that keeps this replica in
//! step with what the other replicas invalidate.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::Tiered;
use crate::error::L2Error;
use crate::key::Key;
use crate::l2::Invalidation;
use crate::stats::bump;

/// How often a replica publishes a heartbeat on the channel.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);
/// A subscription that delivered nothing (not even a heartbeat) for this long is considered broken.
const SILENT_FOR: Duration = Duration::from_millis(2000);
/// Wait between attempts to (re)subscribe.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(200);

impl Tiered {
    /// The generations of `scopes` to build a key with: from memory while this replica is in step with the
    /// invalidation channel; else from Redis (at most one failed attempt a second), else the best known.
    pub async fn generations<const N: usize>(&self, scopes: &[&str; N]) -> [u64; N] {
        if let Some(known) = self.coherence.trusted(scopes) {
            return known;
        }
        let Some(l2) = self
            .l2
            .as_ref()
            .filter(|_| self.coherence.may_ask(&self.clock))
        else {
            return self.coherence.best_known(scopes);
        };
        match l2.generations(scopes).await {
            Ok(read) if read.len() == N => {
                // A read that raced a newer invalidation (its message applied first) must not lower what is known.
                self.coherence
                    .learn_newer(scopes.iter().copied().zip(read.iter().copied()));
                self.coherence.best_known(scopes)
            }
            Ok(read) => {
                tracing::debug!(
                    asked = N,
                    got = read.len(),
                    "Redis answered the wrong number of generations"
                );
                self.coherence.best_known(scopes)
            }
            Err(err) => {
                self.coherence.asking_failed(&self.clock);
                tracing::debug!(error = %err, "cannot read generations; using the ones known");
                self.coherence.best_known(scopes)
            }
        }
    }

    /// Invalidates every entry of `scope` on every replica by bumping its generation; returns the new generation.
    pub async fn invalidate_scope(&self, scope: &str) -> Result<u64, L2Error> {
        let generation = match &self.l2 {
            Some(l2) => l2.bump_generation(scope).await?,
            None => self.coherence.best_known(&[scope])[0] + 1,
        };
        self.coherence.learn_newer([(scope, generation)]);
        bump(&self.stats.invalidations);
        Ok(generation)
    }

    /// Invalidates the entry under `key` on every replica. A fetch of the key under way anywhere does not write its
    /// answer back afterwards.
    pub async fn invalidate_key(&self, key: Key) -> Result<(), L2Error> {
        self.drop_from_l1(key).await;
        if let Some(l2) = &self.l2 {
            l2.delete(&key).await?;
        }
        bump(&self.stats.invalidations);
        Ok(())
    }

    /// Drops `key` from L1, after marking its flight (if one is under way here) so that it stores nothing.
    async fn drop_from_l1(&self, key: Key) {
        self.flights.invalidate(&key);
        self.l1.remove(&key).await;
    }

    /// Starts the task that keeps this replica in step with the invalidations of every replica (when there is a
    /// shared level). It runs until aborted (the gateway aborts it on shutdown).
    pub fn keep_in_step(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        self.l2.as_ref()?;
        let cache = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            while let Some(cache) = cache.upgrade() {
                cache.follow_channel().await;
                drop(cache);
                tokio::time::sleep(RESUBSCRIBE_AFTER).await;
            }
        }))
    }

    /// Waits (at most `within`) until the first attempt to get in step with the invalidation channel has ended, so a
    /// starting gateway does not fill L1 only to clear it a moment later. True if in step.
    pub async fn wait_in_step(&self, within: Duration) -> bool {
        let until = tokio::time::Instant::now() + within;
        while !self.coherence.in_step()
            && self.coherence.attempts() == 0
            && tokio::time::Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.coherence.in_step()
    }

    /// One subscription: re-read what may have been missed, then apply invalidations until the channel breaks or
    /// goes silent. In step only in between.
    async fn follow_channel(&self) {
        self.follow_channel_once().await;
        self.coherence.attempted();
    }

    async fn follow_channel_once(&self) {
        let Some(l2) = &self.l2 else { return };
        let mut stream = match l2.subscribe().await {
            Ok(stream) => stream,
            Err(err) => {
                tracing::debug!(error = %err, "invalidation channel unavailable; L1 trusted only for young entries");
                return;
            }
        };
        // Subscribed first, so nothing published from here on is missed; now catch up with what may have been. Redis is
        // the truth here, even where it went back (it lost its data): L1 is cleared below.
        let scopes = self.coherence.scopes();
        let scope_refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
        match l2.generations(&scope_refs).await {
            Ok(generations) => self
                .coherence
                .learn(scope_refs.iter().copied().zip(generations)),
            Err(_) => return,
        }
        self.l1.clear();
        self.coherence.set_in_step(true);
        self.coherence.attempted();
        bump(&self.stats.channel_connects);
        tracing::info!("invalidation channel subscribed; L1 in step");

        let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
        loop {
            tokio::select! {
                message = tokio::time::timeout(SILENT_FOR, stream.next()) => match message {
                    Ok(Some(Invalidation::Scope { scope, generation })) => self.coherence.learn_newer([(scope.as_str(), generation)]),
                    Ok(Some(Invalidation::Entry { key })) => self.drop_from_l1(key).await,
                    Ok(Some(Invalidation::Heartbeat)) => {}
                    Ok(None) | Err(_) => break,
                },
                _ = heartbeat.tick() => {
                    let _ = l2.publish(&Invalidation::Heartbeat).await;
                }
            }
        }
        self.coherence.set_in_step(false);
        tracing::warn!(
            "invalidation channel lost; L1 trusted only for young entries until it is back"
        );
    }
}
