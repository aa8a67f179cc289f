//! What the cache asks for what it lacks: the [`Loader`] trait and what a load returns.

use std::future::Future;
use std::time::Duration;

use crate::entry::{Entry, Lifetime};
use crate::error::LoadError;

/// Why a load runs. Neither bounds it by a caller's deadline: a load runs in a task of its own, under the loader's
/// own time limit, so that what it fetches fills the cache even when the caller that started it stops waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// A caller is waiting for this answer (what only it may see goes to it).
    Foreground,
    /// A refresh nobody waits for (stale-while-revalidate, early refresh).
    Background,
}

/// What a [`Loader`] fetched.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The answer. Its times are set by the cache from `lifetime`; what the loader put there is ignored.
    pub entry: Entry,
    /// How long the answer may be used; `None`: the answer may not be stored, so it goes to the caller whose request
    /// was sent only (the other callers of the flight fetch for themselves), and it replaces what was stored.
    pub lifetime: Option<Lifetime>,
    /// The backend failed (unreachable, overloaded, timed out): a stale entry may be served instead.
    pub failed: bool,
}

impl Fetched {
    /// An answer to store for `lifetime`.
    pub fn store(entry: Entry, lifetime: Lifetime) -> Self {
        Self {
            entry,
            lifetime: Some(lifetime),
            failed: false,
        }
    }

    /// An answer to relay to its own caller, never store, never share.
    pub fn relay(entry: Entry) -> Self {
        Self {
            entry,
            lifetime: None,
            failed: false,
        }
    }

    /// A backend failure, given to every caller of the flight unless a stale entry may be served instead.
    pub fn failure(entry: Entry) -> Self {
        Self {
            entry,
            lifetime: None,
            failed: true,
        }
    }
}

/// Fetches what the cache lacks (for Strata: calls the backend).
pub trait Loader: Send + 'static {
    /// The longest [`Loader::load`] may take, retries included. A flight that runs the load ends within it (the
    /// callers that wait for a flight stop waiting at their own deadlines, or when a flight overruns this).
    fn time_limit(&self) -> Duration;

    /// Fetches the answer. Called at most once, and only by the one caller (or refresh) that leads the key's flight.
    /// An `Err` is treated as a backend failure.
    fn load(self, mode: LoadMode) -> impl Future<Output = Result<Fetched, LoadError>> + Send;
}
