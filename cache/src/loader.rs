//! What the cache asks for what it lacks: the [`Loader`] trait and what a load returns.

use std::future::Future;

use crate::entry::{Entry, Lifetime};
use crate::error::LoadError;

/// Why a load runs, which decides whose deadline bounds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// A caller is waiting for this answer: its deadline applies.
    Foreground,
    /// A refresh nobody waits for (stale-while-revalidate, early refresh): only the loader's own timeout applies.
    Background,
}

/// What a [`Loader`] fetched.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The answer. Its times are set by the cache from `lifetime`; what the loader put there is ignored.
    pub entry: Entry,
    /// How long the answer may be used; `None`: relay it, never store it.
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

    /// An answer to relay but not store.
    pub fn relay(entry: Entry) -> Self {
        Self {
            entry,
            lifetime: None,
            failed: false,
        }
    }

    /// A backend failure, relayed unless a stale entry may be served instead.
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
    /// Fetches the answer. Called at most once, and only by the one caller (or refresh) that leads the key's flight.
    /// An `Err` is treated as a backend failure.
    fn load(self, mode: LoadMode) -> impl Future<Output = Result<Fetched, LoadError>> + Send;
}
