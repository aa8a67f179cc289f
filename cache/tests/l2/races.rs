//! Interleavings between replicas that timing alone produces only now and then, forced: one replica's operation on
//! the real Redis (a lease request, a write, a read's answer) is held back until another replica has acted.
//!
//! The hold is a wrapper around the real [`RedisL2`], not a stand-in for it: every command still goes to
//! `redis-server`, only one of them later than it would.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use strata_cache::l2::{
    Invalidation, InvalidationStream, L2, L2Future, L2Write, RedisL2, RedisNodes,
};
use strata_cache::testing::RedisServer;
use strata_cache::{Key, LeaseConfig, Source, Tiered, TieredConfig};
use tokio::sync::{Notify, Semaphore};

use crate::common::{Backend, POLICY, in_step, key, l2_for, replica, scoped_key};

/// A replica over `l2` (with L1, and the lease if given).
fn over(l2: Arc<dyn L2>, lease: Option<LeaseConfig>) -> Arc<Tiered> {
    Arc::new(Tiered::new(
        &TieredConfig {
            l1_max_bytes: 1 << 20,
            flight_wait: Duration::from_secs(5),
            write_queue: 16,
            lease,
            l1_max_age_out_of_step: Duration::from_secs(60),
        },
        Some(l2),
    ))
}

/// Which operation [`HeldBack`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// `try_lease`, before it is sent.
    Lease,
    /// `set_many`, before it is sent.
    Write,
    /// `generations`, after Redis answered and before the answer is handed back.
    GenerationsAnswer,
}

/// The real L2, except that the operation `hold` waits for a permit (after saying it was reached), the first time.
#[derive(Debug)]
struct HeldBack {
    inner: RedisL2,
    hold: Hold,
    held: AtomicBool,
    reached: Arc<Notify>,
    go: Arc<Semaphore>,
}

impl HeldBack {
    /// Wraps `inner`, holding `hold`; returns it with its "reached" signal and its permits.
    fn wrap(inner: &RedisL2, hold: Hold) -> (Arc<dyn L2>, Arc<Notify>, Arc<Semaphore>) {
        let (reached, go) = (Arc::new(Notify::new()), Arc::new(Semaphore::new(0)));
        let l2 = Arc::new(Self {
            inner: inner.clone(),
            hold,
            held: AtomicBool::new(false),
            reached: reached.clone(),
            go: go.clone(),
        });
        (l2, reached, go)
    }

    async fn pause(&self, at: Hold) {
        if self.hold == at && !self.held.swap(true, Ordering::SeqCst) {
            self.reached.notify_one();
            let _permit = self.go.acquire().await.expect("semaphore open");
        }
    }
}

impl L2 for HeldBack {
    fn get<'a>(&'a self, key: &'a Key) -> L2Future<'a, Option<Bytes>> {
        self.inner.get(key)
    }

    fn set_many<'a>(&'a self, writes: &'a [L2Write]) -> L2Future<'a, ()> {
        Box::pin(async move {
            self.pause(Hold::Write).await;
            self.inner.set_many(writes).await
        })
    }

    fn try_lease<'a>(&'a self, key: &'a Key, token: &'a str, ttl: Duration) -> L2Future<'a, bool> {
        Box::pin(async move {
            self.pause(Hold::Lease).await;
            self.inner.try_lease(key, token, ttl).await
        })
    }

    fn renew_lease<'a>(
        &'a self,
        key: &'a Key,
        token: &'a str,
        ttl: Duration,
    ) -> L2Future<'a, bool> {
        self.inner.renew_lease(key, token, ttl)
    }

    fn release_lease<'a>(&'a self, key: &'a Key, token: &'a str) -> L2Future<'a, ()> {
        self.inner.release_lease(key, token)
    }

    fn generations<'a>(&'a self, scopes: &'a [&'a str]) -> L2Future<'a, Vec<u64>> {
        Box::pin(async move {
            let answer = self.inner.generations(scopes).await;
            // A resubscription's catch-up with nothing known yet reads nothing: not the read to hold.
            if !scopes.is_empty() {
                self.pause(Hold::GenerationsAnswer).await;
            }
            answer
        })
    }

    fn bump_generation<'a>(&'a self, scope: &'a str) -> L2Future<'a, u64> {
        self.inner.bump_generation(scope)
    }

    fn delete<'a>(&'a self, key: &'a Key) -> L2Future<'a, ()> {
        self.inner.delete(key)
    }

    fn publish<'a>(&'a self, message: &'a Invalidation) -> L2Future<'a, ()> {
        self.inner.publish(message)
    }

    fn subscribe(&self) -> L2Future<'_, InvalidationStream> {
        self.inner.subscribe()
    }
}

/// Replica B reads L2 (empty), then A stores its answer and releases its lease, then B takes the now free lease:
/// B must find A's answer in L2 rather than call the backend a second time.
#[tokio::test]
async fn a_lease_taken_just_after_another_replica_answered_finds_that_answer() {
    let redis = RedisServer::start();
    let l2 = l2_for(RedisNodes::Single(redis.url()), Duration::from_millis(200)).await;
    let lease = LeaseConfig {
        ttl: Duration::from_secs(5),
    };
    let a = replica(&l2, lease);
    let (held_back, reached, go) = HeldBack::wrap(&l2, Hold::Lease);
    let b = over(held_back, Some(lease));
    let backend = Backend::slow(Duration::from_millis(100));

    // B misses L1 and L2 and stops just before asking for the lease.
    let b_call = tokio::spawn({
        let (b, backend) = (b.clone(), backend.clone());
        async move { b.get(key("raced"), &POLICY, backend).await }
    });
    tokio::time::timeout(Duration::from_secs(5), reached.notified())
        .await
        .expect("B asks for the lease");

    // Meanwhile A takes the lease, calls the backend, stores the answer and releases the lease.
    let from_a = a
        .get(key("raced"), &POLICY, backend.clone())
        .await
        .expect("A answers");
    assert_eq!(from_a.source, Source::Miss);
    let lease_key = l2.lease_key(&key("raced"));
    let released = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let held: bool = redis::cmd("EXISTS")
                .arg(&lease_key)
                .query(&mut redis.client())
                .expect("exists");
            if !held {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(released.is_ok(), "A released its lease");
    assert!(
        matches!(l2.get(&key("raced")).await, Ok(Some(_))),
        "A's answer is in L2 before its lease is free"
    );

    // Now B's lease request goes through, and B takes the free lease.
    go.add_permits(1);
    let from_b = tokio::time::timeout(Duration::from_secs(5), b_call)
        .await
        .expect("B answers in time")
        .expect("task")
        .expect("B answers");
    assert_eq!(from_b.entry.message, Bytes::from_static(b"answer 0"));
    assert_eq!(from_b.source, Source::Coalesced);
    assert_eq!(backend.calls(), 1, "B used A's answer, not the backend");
}

/// A fetches the key (the L2 read before it found nothing), and its write to L2 is held back; B invalidates the key
/// meanwhile. A's write, sent after the invalidation, must not bring the old answer back: the invalidation wins.
#[tokio::test]
async fn a_write_begun_before_an_invalidation_does_not_undo_it() {
    let redis = RedisServer::start();
    let l2 = l2_for(RedisNodes::Single(redis.url()), Duration::from_millis(200)).await;
    let (held_back, reached, go) = HeldBack::wrap(&l2, Hold::Write);
    let a = over(held_back, None);
    let b = replica(
        &l2,
        LeaseConfig {
            ttl: Duration::from_secs(5),
        },
    );
    let backend = Backend::default();

    let fetched = a
        .get(key("k"), &POLICY, backend.clone())
        .await
        .expect("A answers");
    assert_eq!(fetched.source, Source::Miss);
    tokio::time::timeout(Duration::from_secs(5), reached.notified())
        .await
        .expect("A's write-back reaches Redis's door");
    b.invalidate_key(key("k")).await.expect("B invalidates");
    go.add_permits(1);
    assert!(a.flush_writes(Duration::from_secs(5)).await);

    let after = b
        .get(key("k"), &POLICY, backend.clone())
        .await
        .expect("B answers");
    assert_eq!(
        (after.source, after.entry.message.clone()),
        (Source::Miss, Bytes::from_static(b"answer 1")),
        "the pre-invalidation answer was not written back"
    );
    // A fetch that began after the invalidation (it saw the tombstone) stores its answer as usual.
    assert!(b.flush_writes(Duration::from_secs(5)).await);
    let c = replica(
        &l2,
        LeaseConfig {
            ttl: Duration::from_secs(5),
        },
    );
    let from_c = c
        .get(key("k"), &POLICY, backend.clone())
        .await
        .expect("C answers");
    assert_eq!(
        (from_c.source, from_c.entry.message.clone()),
        (Source::L2, Bytes::from_static(b"answer 1"))
    );
}

/// A reads a scope's generation (it is not known yet); Redis answers, and the answer is held back while B bumps the
/// generation and A's channel applies it. The late answer must not lower what A knows.
#[tokio::test]
async fn a_late_generations_answer_never_lowers_a_known_generation() {
    let redis = RedisServer::start();
    let l2 = l2_for(RedisNodes::Single(redis.url()), Duration::from_millis(200)).await;
    let (held_back, reached, go) = HeldBack::wrap(&l2, Hold::GenerationsAnswer);
    let a = over(held_back, None);
    let b = replica(
        &l2,
        LeaseConfig {
            ttl: Duration::from_secs(5),
        },
    );
    // A subscribes first (its catch-up read of no scopes is not held: nothing is known yet, no MGET is sent).
    let following = a.keep_in_step();
    in_step(&[&a]).await;

    let reading = tokio::spawn({
        let a = a.clone();
        async move { a.generations(&["/t.S/M"]).await }
    });
    tokio::time::timeout(Duration::from_secs(5), reached.notified())
        .await
        .expect("A's read was answered (generation 0) and is held");
    let bumped = b.invalidate_scope("/t.S/M").await.expect("B invalidates");
    assert_eq!(bumped, 1);
    let learned = tokio::time::timeout(Duration::from_secs(5), async {
        while scoped_key(&a, "x").await != scoped_key(&b, "x").await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(learned.is_ok(), "A's channel applied generation 1");
    go.add_permits(1);
    let late = reading.await.expect("task");
    assert_eq!(
        late,
        [1],
        "the late read answers what is known, not what it read"
    );
    assert_eq!(
        scoped_key(&a, "x").await,
        scoped_key(&b, "x").await,
        "A still builds keys with generation 1"
    );
    if let Some(task) = following {
        task.abort();
    }
}
