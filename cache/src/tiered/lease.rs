//! The cross-replica stampede guard: on an L1+L2 miss, one replica takes a Redis lease for the key and fetches; the
//! others wait (bounded) for its answer to appear in L2.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::entry::Entry;
use crate::key::Key;
use crate::l2::{L2, L2Write};

/// Settings of the lease.
#[derive(Debug, Clone, Copy)]
pub struct LeaseConfig {
    /// How long a lease lives if its holder never releases it (it crashed): longer than a backend call takes.
    pub ttl: Duration,
    /// How long a replica that found the lease taken waits for the holder's answer in L2 before fetching itself.
    pub wait: Duration,
}

/// How often a waiting replica looks for the holder's answer (or a released lease).
pub(super) const POLL: Duration = Duration::from_millis(10);

/// A lease this replica holds. Dropped without [`HeldLease::store_then_release`] (the fetch was cancelled or its
/// answer is not stored), it releases the lease in the background so other replicas need not wait for its ttl.
pub(super) struct HeldLease {
    l2: Arc<dyn L2>,
    key: Key,
    token: String,
    released: bool,
}

impl HeldLease {
    /// Takes the lease on `key`: `Ok(Some)` if taken, `Ok(None)` if another replica holds it, `Err` if L2 failed
    /// (the caller then fetches without a lease: the lease never fails a call).
    pub(super) async fn try_take(
        l2: &Arc<dyn L2>,
        key: Key,
        ttl: Duration,
    ) -> Result<Option<Self>, crate::error::L2Error> {
        let token = format!("{:032x}", rand::rng().random::<u128>());
        let taken = l2.try_lease(&key, &token, ttl).await?;
        Ok(taken.then(|| Self {
            l2: l2.clone(),
            key,
            token,
            released: false,
        }))
    }

    /// Writes the answer to L2 and only then releases the lease, in the background (so replicas waiting on the lease
    /// find the answer the moment it is free, and the caller's answer does not wait for Redis).
    pub(super) fn store_then_release(
        mut self,
        write: L2Write,
        on_write: impl FnOnce(bool) + Send + 'static,
    ) {
        self.released = true;
        let (l2, key, token) = (self.l2.clone(), self.key, std::mem::take(&mut self.token));
        tokio::spawn(async move {
            let written = l2.set_many(std::slice::from_ref(&write)).await.is_ok();
            on_write(written);
            let _ = l2.release_lease(&key, &token).await;
        });
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (l2, key, token) = (self.l2.clone(), self.key, std::mem::take(&mut self.token));
        // Drop may run outside a runtime only if the whole runtime is going away; then the lease's ttl frees it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = l2.release_lease(&key, &token).await;
            });
        }
    }
}

/// What a replica that found the lease taken ends up with.
pub(super) enum Waited {
    /// The holder's answer appeared in L2.
    Answer(Arc<Entry>),
    /// The lease was released without an answer: this replica holds it now and fetches.
    Took(HeldLease),
    /// Neither within the wait: fetch without storing.
    GaveUp,
}

/// Waits up to `config.wait` for the holder's answer in L2, taking the lease over if it is released without one.
pub(super) async fn wait_for_holder(
    l2: &Arc<dyn L2>,
    key: Key,
    config: &LeaseConfig,
    is_usable: impl Fn(&Entry) -> bool,
) -> Waited {
    let until = Instant::now() + config.wait;
    while Instant::now() < until {
        tokio::time::sleep(POLL.min(until.saturating_duration_since(Instant::now()))).await;
        if let Ok(Some(bytes)) = l2.get(&key).await {
            if let Ok(entry) = Entry::decode(bytes) {
                if is_usable(&entry) {
                    return Waited::Answer(Arc::new(entry));
                }
            }
        }
        if let Ok(Some(lease)) = HeldLease::try_take(l2, key, config.ttl).await {
            return Waited::Took(lease);
        }
    }
    Waited::GaveUp
}
