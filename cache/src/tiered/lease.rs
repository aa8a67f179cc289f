//! The cross-replica stampede guard: on an L1+L2 miss, one replica takes a Redis lease for the key and fetches; the
//! others wait for its answer to appear in L2 for as long as the holder keeps its lease alive.
//!
//! The holder renews its lease while its fetch runs, so the guarantee does not depend on how fast a machine is: a
//! slow fetch keeps its lease, and only a holder that is gone (it crashed, or lost Redis) loses it, `ttl` after its
//! last renewal; a waiting replica then takes the lease over.

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
    /// How long a lease outlives its holder's last renewal (the holder renews it every third of this while its
    /// fetch runs): how soon the other replicas notice a holder that is gone.
    pub ttl: Duration,
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
    /// The task renewing the lease while it is held.
    keepalive: tokio::task::AbortHandle,
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
            keepalive: tokio::spawn(keep_alive(l2.clone(), key, token.clone(), ttl)).abort_handle(),
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
        let keepalive = self.keepalive.clone();
        tokio::spawn(async move {
            let written = l2.set_many(std::slice::from_ref(&write)).await.is_ok();
            on_write(written);
            keepalive.abort();
            let _ = l2.release_lease(&key, &token).await;
        });
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.keepalive.abort();
        let (l2, key, token) = (self.l2.clone(), self.key, std::mem::take(&mut self.token));
        // Drop may run outside a runtime only if the whole runtime is going away; then the lease's ttl frees it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = l2.release_lease(&key, &token).await;
            });
        }
    }
}

/// Renews the lease every third of its ttl until aborted, or until it is found lost (expired and maybe taken since:
/// the holder's answer is then written all the same, and its release leaves the new holder's lease alone).
async fn keep_alive(l2: Arc<dyn L2>, key: Key, token: String, ttl: Duration) {
    let every = (ttl / 3).max(Duration::from_millis(1));
    loop {
        tokio::time::sleep(every).await;
        match l2.renew_lease(&key, &token, ttl).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(key = ?key, "lease lost while fetching (expired before it was renewed)");
                return;
            }
            // Redis may be back before the lease expires: keep trying.
            Err(err) => tracing::debug!(error = %err, "lease renewal failed"),
        }
    }
}

/// What a replica that found the lease taken ends up with.
pub(super) enum Waited {
    /// The holder's answer appeared in L2.
    Answer(Arc<Entry>),
    /// The lease was released (or lapsed) without an answer: this replica holds it now and fetches.
    Took(HeldLease),
    /// The holder kept its lease past `until`: fetch without storing.
    GaveUp,
}

/// Waits for the holder's answer in L2 while the lease is held, until `until` at the latest, taking the lease over
/// if it is released or lapses without an answer.
pub(super) async fn wait_for_holder(
    l2: &Arc<dyn L2>,
    key: Key,
    config: &LeaseConfig,
    until: Instant,
    is_usable: impl Fn(&Entry) -> bool,
) -> Waited {
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
