//! Strata's tiered cache.
//!
//! A lookup goes L1 (in-process, moka) → single-flight (one leader per key in this process) → L2 (shared, Redis) →
//! the caller's [`Loader`], and what the loader fetched is written back to both levels. The crate stores bytes with
//! metadata; it knows nothing of gRPC, tonic or hyper.

mod clock;
mod coherence;
mod entry;
mod error;
mod flight;
mod key;
mod l1;
pub mod l2;
mod loader;
mod lookup;
mod stats;
#[cfg(feature = "test-support")]
pub mod testing;
mod tiered;
mod xfetch;

pub use clock::{Clock, UnixMs};
pub use entry::{ENTRY_VERSION, Entry, EntryState, Lifetime, Metadata};
pub use error::{DecodeError, L2Error, LoadError};
pub use key::{Key, KeyBuilder};
pub use l1::L1;
pub use loader::{Fetched, LoadMode, Loader};
pub use lookup::{Lookup, Source};
pub use stats::{LATENCY_BUCKETS, LatencyHistogram, Stats, StatsSnapshot};
pub use tiered::{LeaseConfig, Policy, Tiered, TieredConfig};
