//! What a lookup returns: the answer and which level gave it.

use std::sync::Arc;

use crate::entry::Entry;

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The in-process cache, fresh.
    L1,
    /// The shared cache, fresh.
    L2,
    /// The loader, called for this caller.
    Miss,
    /// The loader, called by another caller of the same key at the same time.
    Coalesced,
    /// A cached answer past its freshness: served while a refresh runs, or instead of a backend failure.
    Stale,
}

impl Source {
    /// The name used in `x-strata-cache` and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::L1 => "l1",
            Source::L2 => "l2",
            Source::Miss => "miss",
            Source::Coalesced => "coalesced",
            Source::Stale => "stale",
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
