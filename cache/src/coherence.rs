//! What every replica must agree on for invalidation to reach all of them: the generation of each scope (part of
//! every key), and whether this replica's L1 is still in step with the invalidation channel.
//!
//! *In step* means: subscribed to the invalidation channel, with the generations re-read from Redis and L1 cleared
//! since the subscription began — so every invalidation made through any replica has reached this one. Out of step
//! (the channel down, or not yet subscribed), an invalidation may have been missed: L1 serves only entries younger
//! than `l1_max_age_out_of_step`, and generations are read from Redis.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::clock::{Clock, UnixMs};

/// How long after a failed Redis read of generations this replica uses what it knows instead of asking again (so a
/// Redis outage costs one timeout per second, not one per call).
const RETRY_AFTER_FAILURE_MS: u64 = 1000;

/// The generations this replica knows, and whether it can trust them and its L1.
#[derive(Debug)]
pub(crate) struct Coherence {
    /// Generations by scope. Read on every lookup without a lock; replaced whole on the rare change.
    known: ArcSwap<HashMap<String, u64>>,
    /// The invalidation channel is up and everything known was re-read since it (re)connected.
    in_step: AtomicBool,
    /// When a Redis read of generations last failed.
    last_failure: AtomicU64,
    /// Attempts to get in step so far (successful or not).
    attempts: AtomicU64,
    /// How old an L1 entry may be and still be served while not in step.
    max_age_out_of_step: Duration,
}

impl Coherence {
    /// `in_step` from the start when there is nothing to be in step with (no shared level).
    pub(crate) fn new(shared: bool, max_age_out_of_step: Duration) -> Self {
        Self {
            known: ArcSwap::from_pointee(HashMap::new()),
            in_step: AtomicBool::new(!shared),
            last_failure: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            max_age_out_of_step,
        }
    }

    /// Whether the generations known here and this replica's L1 reflect every invalidation so far.
    pub(crate) fn in_step(&self) -> bool {
        self.in_step.load(Ordering::Acquire)
    }

    pub(crate) fn set_in_step(&self, in_step: bool) {
        self.in_step.store(in_step, Ordering::Release);
    }

    /// Records that an attempt to get in step has ended (in step or not).
    pub(crate) fn attempted(&self) {
        self.attempts.fetch_add(1, Ordering::Release);
    }

    /// Attempts to get in step so far.
    pub(crate) fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Acquire)
    }

    /// The known generations of `scopes`, if every one is known and can be trusted without asking Redis.
    pub(crate) fn trusted<const N: usize>(&self, scopes: &[&str; N]) -> Option<[u64; N]> {
        if !self.in_step() {
            return None;
        }
        let known = self.known.load();
        let mut generations = [0; N];
        for (generation, scope) in generations.iter_mut().zip(scopes) {
            *generation = *known.get(*scope)?;
        }
        Some(generations)
    }

    /// The known generations of `scopes`, 0 where unknown (for when Redis cannot be asked).
    pub(crate) fn best_known<const N: usize>(&self, scopes: &[&str; N]) -> [u64; N] {
        let known = self.known.load();
        scopes.map(|s| known.get(s).copied().unwrap_or(0))
    }

    /// Records generations as read from Redis right after (re)subscribing: Redis is the truth, even where it went
    /// back (it lost its data).
    pub(crate) fn learn<'a>(&self, updates: impl IntoIterator<Item = (&'a str, u64)> + Clone) {
        self.update(updates, |_, read| read);
    }

    /// Records generations received from the channel or read while in step, never lowering one: a read that was
    /// answered before an invalidation but lands after its message must not revive the entries it killed.
    pub(crate) fn learn_newer<'a>(
        &self,
        updates: impl IntoIterator<Item = (&'a str, u64)> + Clone,
    ) {
        self.update(updates, |known, read| known.map_or(read, |k| k.max(read)));
    }

    fn update<'a>(
        &self,
        updates: impl IntoIterator<Item = (&'a str, u64)> + Clone,
        merge: impl Fn(Option<u64>, u64) -> u64,
    ) {
        // Most reads confirm what is known: copy the map only when something changes.
        let known = self.known.load();
        if updates.clone().into_iter().all(|(scope, g)| {
            known.get(scope).copied() == Some(merge(known.get(scope).copied(), g))
        }) {
            return;
        }
        drop(known);
        self.known.rcu(|current| {
            let mut next = HashMap::clone(current);
            for (scope, generation) in updates.clone() {
                let merged = merge(next.get(scope).copied(), generation);
                next.insert(scope.to_owned(), merged);
            }
            next
        });
    }

    /// How many scopes are known here.
    pub(crate) fn len(&self) -> usize {
        self.known.load().len()
    }

    /// Every scope known here (to re-read after a reconnect).
    pub(crate) fn scopes(&self) -> Vec<String> {
        self.known.load().keys().cloned().collect()
    }

    /// Whether Redis may be asked again (no failure in the last second).
    pub(crate) fn may_ask(&self, clock: &Clock) -> bool {
        clock
            .now()
            .saturating_sub(self.last_failure.load(Ordering::Relaxed))
            >= RETRY_AFTER_FAILURE_MS
    }

    pub(crate) fn asking_failed(&self, clock: &Clock) {
        self.last_failure.store(clock.now(), Ordering::Relaxed);
    }

    /// Whether an L1 entry created at `created` may be served now: always when in step; otherwise only while young.
    pub(crate) fn may_serve_l1(&self, created: UnixMs, now: UnixMs) -> bool {
        self.in_step()
            || now.saturating_sub(created)
                <= u64::try_from(self.max_age_out_of_step.as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_needs_the_channel_and_every_scope() {
        let c = Coherence::new(true, Duration::from_secs(1));
        c.learn([("/a.S/", 1), ("/a.S/M", 2)]);
        assert_eq!(c.trusted(&["/a.S/", "/a.S/M"]), None, "not in step yet");
        c.set_in_step(true);
        assert_eq!(c.trusted(&["/a.S/", "/a.S/M"]), Some([1, 2]));
        assert_eq!(
            c.trusted(&["/a.S/", "/b.S/M"]),
            None,
            "an unknown scope must be asked for"
        );
        assert_eq!(c.best_known(&["/a.S/", "/b.S/M"]), [1, 0]);
        c.learn_newer([("/a.S/", 0)]);
        assert_eq!(
            c.best_known(&["/a.S/"]),
            [1],
            "a late read never lowers a generation"
        );
        c.learn_newer([("/a.S/", 3)]);
        assert_eq!(c.best_known(&["/a.S/"]), [3]);
        c.learn([("/a.S/", 0)]);
        assert_eq!(
            c.best_known(&["/a.S/"]),
            [0],
            "after a resubscription, Redis is the truth"
        );
    }

    #[test]
    fn out_of_step_l1_is_served_only_while_young() {
        let c = Coherence::new(true, Duration::from_secs(1));
        assert!(c.may_serve_l1(10_000, 10_900));
        assert!(!c.may_serve_l1(10_000, 11_001));
        c.set_in_step(true);
        assert!(c.may_serve_l1(10_000, 99_000));
        assert!(
            Coherence::new(false, Duration::ZERO).may_serve_l1(0, 99_000),
            "a lone replica is always in step"
        );
    }
}
