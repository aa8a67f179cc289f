//! Single-flight: at most one load per key in this process at a time; the others wait for its outcome.
//!
//! The leader holds a [`LeaderPermit`]. Finishing it publishes the outcome to every follower; dropping it without
//! finishing (the leader's caller was cancelled) wakes the followers so that one of them becomes the new leader.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use crate::entry::Entry;
use crate::error::LoadError;
use crate::key::Key;

/// A load's answer as the flight shares it.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// The answer.
    pub entry: Arc<Entry>,
    /// Whether it is a backend failure (a follower may serve a stale entry of its own instead).
    pub failed: bool,
}

/// What a flight ends with, shared with every follower.
pub(crate) type Outcome = Result<Answer, LoadError>;

/// A follower's view of a flight: `None` while the leader works, then its outcome.
pub(crate) type FlightWatch = watch::Receiver<Option<Outcome>>;

/// The loads in flight in this process, by key.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    // A plain mutex: held only to look up, insert or remove one map entry, never across an `.await`.
    inflight: Mutex<HashMap<Key, watch::Sender<Option<Outcome>>>>,
}

/// The caller's role in the flight for a key.
pub(crate) enum Role {
    /// No load was in flight: the caller must load and then [`LeaderPermit::finish`].
    Leader(LeaderPermit),
    /// Another caller is loading: wait on this for its outcome.
    Follower(FlightWatch),
}

impl Flights {
    /// Joins the flight for `key`, leading it if none is in flight.
    pub(crate) fn join(self: &Arc<Self>, key: Key) -> Role {
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = inflight.get(&key) {
            return Role::Follower(tx.subscribe());
        }
        let (tx, _) = watch::channel(None);
        inflight.insert(key, tx);
        Role::Leader(LeaderPermit {
            flights: self.clone(),
            key,
            finished: false,
        })
    }

    /// How many keys are being loaded right now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn end(&self, key: &Key, outcome: Option<Outcome>) {
        // Only the leader's permit removes its key, and a key has one leader at a time, so the entry is ours.
        let tx = self
            .inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
        if let (Some(tx), Some(outcome)) = (tx, outcome) {
            // No receivers is fine: nobody was waiting.
            let _ = tx.send(Some(outcome));
        }
        // A sender dropped without a value closes the channel: followers see that and elect a new leader.
    }
}

/// The right, and the duty, to load a key. Dropped unfinished, it hands the flight over to the followers. It owns
/// its share of the flights, so a background refresh can carry it into a task of its own.
pub(crate) struct LeaderPermit {
    flights: Arc<Flights>,
    key: Key,
    finished: bool,
}

impl LeaderPermit {
    /// Publishes the outcome to every follower and ends the flight.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.finished = true;
        self.flights.end(&self.key, Some(outcome));
    }
}

impl Drop for LeaderPermit {
    fn drop(&mut self) {
        if !self.finished {
            self.flights.end(&self.key, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::key::KeyBuilder;

    fn answer() -> Answer {
        Answer {
            entry: Arc::new(Entry::unstamped(
                Bytes::from_static(b"answer"),
                0,
                String::new(),
            )),
            failed: false,
        }
    }

    #[tokio::test]
    async fn followers_share_the_leaders_outcome() {
        let flights = Arc::new(Flights::default());
        let key = KeyBuilder::new("t", "/m").finish(b"1");
        let Role::Leader(permit) = flights.join(key) else {
            panic!("first caller leads")
        };
        let Role::Follower(mut rx) = flights.join(key) else {
            panic!("second caller follows")
        };
        permit.finish(Ok(answer()));
        let got = rx
            .wait_for(Option::is_some)
            .await
            .expect("outcome published");
        assert_eq!(
            got.as_ref()
                .and_then(|o| o.as_ref().ok())
                .map(|a| a.entry.message.clone()),
            Some(Bytes::from_static(b"answer"))
        );
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn dropped_leader_hands_over() {
        let flights = Arc::new(Flights::default());
        let key = KeyBuilder::new("t", "/m").finish(b"1");
        let leader = flights.join(key);
        let Role::Follower(mut rx) = flights.join(key) else {
            panic!("follows")
        };
        drop(leader);
        assert!(
            rx.wait_for(Option::is_some).await.is_err(),
            "closed without an outcome"
        );
        assert!(
            matches!(flights.join(key), Role::Leader(_)),
            "a follower can lead now"
        );
    }
}
