//! Single-flight: at most one fetch per key in this process at a time; the other callers wait for what it may share.
//!
//! The leader holds a [`LeaderPermit`]. What a flight ends with is given to its followers only if it is theirs to
//! have ([`Shared`]): a stored answer, a backend failure, or a stale entry to serve meanwhile. An answer that may not
//! be stored, or an outcome that belongs to the leader's caller alone (its rate limit, say), is [`Shared::LeadersOwn`]:
//! the followers fetch for themselves, one at a time. Dropping the permit without finishing (its task is gone) wakes
//! the followers so that one of them becomes the new leader.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::entry::Entry;
use crate::error::LoadError;
use crate::key::Key;

/// A fetch's answer.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// The answer.
    pub entry: Arc<Entry>,
    /// Whether it is a backend failure (a caller may serve a stale entry of its own instead).
    pub failed: bool,
    /// Whether only the caller whose request was fetched may have it (it may not be stored for others).
    pub fetchers_only: bool,
}

impl Answer {
    /// An entry found stored (in a cache level, or another replica's): any caller may have it.
    pub(crate) fn found(entry: Arc<Entry>) -> Self {
        Self::fetched(entry, false, true)
    }

    /// A loader's answer. One that may not be stored (`storable` false), unless it is a backend failure, is for the
    /// caller it was fetched for only.
    pub(crate) fn fetched(entry: Arc<Entry>, failed: bool, storable: bool) -> Self {
        Self {
            entry,
            failed,
            fetchers_only: !storable && !failed,
        }
    }
}

/// What a fetch ends with.
pub(crate) type Outcome = Result<Answer, LoadError>;

/// What a flight gives the callers that wait for it.
#[derive(Debug, Clone)]
pub(crate) enum Shared {
    /// An outcome any caller may have, and the stale entry the fetch found that a caller may serve instead of a
    /// failure (stale-if-error).
    Outcome {
        outcome: Outcome,
        fallback: Option<Arc<Entry>>,
    },
    /// A stale entry to serve at once while the flight refreshes it (stale-while-revalidate).
    Stale(Arc<Entry>),
    /// The outcome belonged to the leader's caller: fetch again, for yourself.
    LeadersOwn,
}

impl Shared {
    /// An entry found stored, for every follower.
    pub(crate) fn found(entry: Arc<Entry>) -> Self {
        Self::Outcome {
            outcome: Ok(Answer::found(entry)),
            fallback: None,
        }
    }

    /// The part of `outcome` the followers may have.
    pub(crate) fn of(outcome: &Outcome, fallback: Option<Arc<Entry>>) -> Self {
        match outcome {
            Ok(answer) if answer.fetchers_only => Self::LeadersOwn,
            Err(err) if err.is_callers_own() => Self::LeadersOwn,
            _ => Self::Outcome {
                outcome: outcome.clone(),
                fallback,
            },
        }
    }
}

/// One key's flight, as its leader and followers see it.
#[derive(Debug)]
struct Flight {
    /// `None` while the flight runs; then what it published, or that it was abandoned.
    published: watch::Sender<Option<Followed>>,
    /// An invalidation of the key arrived while the flight ran: what it fetched must not be stored.
    invalidated: AtomicBool,
    /// When the flight's fetch should be over at the latest (a follower waiting past it may stop waiting).
    ends_by: Mutex<Option<Instant>>,
}

/// The flights under way in this process, by key.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    // A plain mutex: held only to look up, insert or remove one map entry, never across an `.await`.
    inflight: Mutex<HashMap<Key, Arc<Flight>>>,
}

/// The caller's role in the flight for a key.
pub(crate) enum Role {
    /// No flight was under way: the caller leads, and must [`LeaderPermit::finish`].
    Leader(LeaderPermit),
    /// Another caller leads: wait on this.
    Follower(FlightWatch),
}

impl Flights {
    /// Joins the flight for `key`, leading it if none is under way.
    pub(crate) fn join(self: &Arc<Self>, key: Key) -> Role {
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = inflight.get(&key) {
            return Role::Follower(FlightWatch {
                published: flight.published.subscribe(),
                flight: flight.clone(),
            });
        }
        let flight = Arc::new(Flight {
            published: watch::channel(None).0,
            invalidated: AtomicBool::new(false),
            ends_by: Mutex::new(None),
        });
        inflight.insert(key, flight.clone());
        Role::Leader(LeaderPermit {
            flights: self.clone(),
            key,
            flight,
            finished: false,
        })
    }

    /// Marks the flight of `key`, if one is under way, as overtaken by an invalidation.
    pub(crate) fn invalidate(&self, key: &Key) {
        let inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = inflight.get(key) {
            flight.invalidated.store(true, Ordering::SeqCst);
        }
    }

    /// How many keys are being fetched right now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn end(&self, key: &Key, flight: &Arc<Flight>, shared: Option<Shared>) {
        // Only the leader's permit removes its key, and a key has one leader at a time, so the entry is ours.
        self.inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
        // No receivers is fine: nobody was waiting.
        flight.published.send_replace(Some(match shared {
            Some(shared) => Followed::Published(shared),
            None => Followed::Abandoned,
        }));
    }
}

/// A follower's view of a flight.
pub(crate) struct FlightWatch {
    published: watch::Receiver<Option<Followed>>,
    flight: Arc<Flight>,
}

/// How a follower's wait ended.
#[derive(Debug, Clone)]
pub(crate) enum Followed {
    /// The flight published this.
    Published(Shared),
    /// The flight ended without publishing (its task is gone): join again, one of the followers leads now.
    Abandoned,
    /// The flight ran past the time it should have ended by, and then by `grace` more.
    Overdue,
}

impl FlightWatch {
    /// Waits for what the flight publishes, for as long as it is alive and within its time (the caller's own
    /// deadline cancels the wait from outside). `grace`: how long past its expected end a flight is waited for.
    pub(crate) async fn follow(&mut self, grace: Duration) -> Followed {
        loop {
            let until = self.expected_end().unwrap_or_else(Instant::now) + grace;
            let waited = tokio::time::timeout_at(until, self.published.wait_for(Option::is_some))
                .await
                // Cloned out of the watch guard at once: the guard must not live across an await.
                .map(|published| published.map(|p| p.clone()));
            match waited {
                Ok(Ok(published)) => return published.unwrap_or(Followed::Abandoned),
                Ok(Err(_closed)) => return Followed::Abandoned,
                // A healthy flight tells when it will be over; wait on while that has not passed.
                Err(_elapsed) => {
                    if self
                        .expected_end()
                        .is_none_or(|end| Instant::now() >= end + grace)
                    {
                        return Followed::Overdue;
                    }
                }
            }
        }
    }

    fn expected_end(&self) -> Option<Instant> {
        *self
            .flight
            .ends_by
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The right, and the duty, to fetch a key. Dropped unfinished, it hands the flight over to the followers. It owns
/// its share of the flights, so a fetch can carry it into a task of its own.
pub(crate) struct LeaderPermit {
    flights: Arc<Flights>,
    key: Key,
    flight: Arc<Flight>,
    finished: bool,
}

impl LeaderPermit {
    /// Says when the flight will be over at the latest (followers wait that long, and a grace, before giving up).
    pub(crate) fn expect_end_within(&self, within: Duration) {
        *self
            .flight
            .ends_by
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + within);
    }

    /// Gives every follower, present and arriving, this stale entry while the flight goes on refreshing it.
    pub(crate) fn publish_stale(&self, entry: Arc<Entry>) {
        self.flight
            .published
            .send_replace(Some(Followed::Published(Shared::Stale(entry))));
    }

    /// Whether an invalidation of the key arrived since the flight began.
    pub(crate) fn was_invalidated(&self) -> bool {
        self.flight.invalidated.load(Ordering::SeqCst)
    }

    /// Publishes what the followers may have and ends the flight.
    pub(crate) fn finish(mut self, shared: Shared) {
        self.finished = true;
        self.flights.end(&self.key, &self.flight, Some(shared));
    }
}

impl Drop for LeaderPermit {
    fn drop(&mut self) {
        if !self.finished {
            self.flights.end(&self.key, &self.flight, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::key::KeyBuilder;

    fn answer(fetchers_only: bool) -> Answer {
        Answer {
            entry: Arc::new(Entry::unstamped(
                Bytes::from_static(b"answer"),
                0,
                String::new(),
            )),
            failed: false,
            fetchers_only,
        }
    }

    fn key() -> Key {
        KeyBuilder::new("t", "/m").finish(b"1")
    }

    fn follower(flights: &Arc<Flights>) -> FlightWatch {
        match flights.join(key()) {
            Role::Follower(watch) => watch,
            Role::Leader(_) => panic!("a flight is under way: the caller follows"),
        }
    }

    fn leader(flights: &Arc<Flights>) -> LeaderPermit {
        match flights.join(key()) {
            Role::Leader(permit) => permit,
            Role::Follower(_) => panic!("no flight under way: the caller leads"),
        }
    }

    #[tokio::test]
    async fn followers_get_what_is_theirs_to_have() {
        let flights = Arc::new(Flights::default());
        let permit = leader(&flights);
        let mut rx = follower(&flights);
        let outcome = Ok(answer(false));
        permit.finish(Shared::of(&outcome, None));
        match rx.follow(Duration::from_secs(1)).await {
            Followed::Published(Shared::Outcome {
                outcome: Ok(got), ..
            }) => assert_eq!(got.entry.message, Bytes::from_static(b"answer")),
            _ => panic!("the stored answer is shared"),
        }
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn an_answer_for_the_fetcher_only_or_its_own_error_is_not_shared() {
        let flights = Arc::new(Flights::default());
        let permit = leader(&flights);
        let mut rx = follower(&flights);
        permit.finish(Shared::of(&Ok(answer(true)), None));
        assert!(matches!(
            rx.follow(Duration::from_secs(1)).await,
            Followed::Published(Shared::LeadersOwn)
        ));
        let own = Err(LoadError::callers_own(std::io::Error::other(
            "rate limited",
        )));
        assert!(matches!(Shared::of(&own, None), Shared::LeadersOwn));
        let backend = Err(LoadError::new(std::io::Error::other("unreachable")));
        assert!(matches!(Shared::of(&backend, None), Shared::Outcome { .. }));
    }

    #[tokio::test]
    async fn a_dropped_leader_hands_over() {
        let flights = Arc::new(Flights::default());
        let permit = leader(&flights);
        let mut rx = follower(&flights);
        drop(permit);
        assert!(matches!(
            rx.follow(Duration::from_secs(1)).await,
            Followed::Abandoned
        ));
        let _next = leader(&flights);
    }

    #[tokio::test]
    async fn stale_reaches_every_follower_while_the_flight_goes_on() {
        let flights = Arc::new(Flights::default());
        let permit = leader(&flights);
        let mut early = follower(&flights);
        let stale = answer(false).entry;
        permit.publish_stale(stale.clone());
        let mut late = follower(&flights);
        for rx in [&mut early, &mut late] {
            match rx.follow(Duration::from_secs(1)).await {
                Followed::Published(Shared::Stale(entry)) => assert!(Arc::ptr_eq(&entry, &stale)),
                _ => panic!("the stale entry is shared"),
            }
        }
        assert_eq!(flights.len(), 1, "the refresh still holds the flight");
        drop(permit);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flight_is_waited_for_until_its_expected_end_and_the_grace() {
        let flights = Arc::new(Flights::default());
        let permit = leader(&flights);
        permit.expect_end_within(Duration::from_secs(10));
        let mut rx = follower(&flights);
        let started = Instant::now();
        assert!(matches!(
            rx.follow(Duration::from_secs(1)).await,
            Followed::Overdue
        ));
        assert_eq!(
            started.elapsed().as_secs(),
            11,
            "a healthy flight is waited for past the grace alone"
        );
        drop(permit);
    }

    #[tokio::test]
    async fn an_invalidation_marks_the_flight_under_way() {
        let flights = Arc::new(Flights::default());
        let permit = leader(&flights);
        assert!(!permit.was_invalidated());
        flights.invalidate(&key());
        assert!(permit.was_invalidated());
        drop(permit);
        flights.invalidate(&key());
        assert!(
            !leader(&flights).was_invalidated(),
            "a later flight starts clean"
        );
    }
}
