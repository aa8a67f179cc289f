//! Interleavings between replicas that timing alone produces only now and then, forced: one replica's lease request
//! to the real Redis is held back until another replica has acted.
//!
//! The hold is a wrapper around the real [`RedisL2`], not a stand-in for it: every command still goes to
//! `redis-server`, only one of them later than it would.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_cache::l2::{
    Invalidation, InvalidationStream, L2, L2Future, L2Write, RedisL2, RedisNodes,
};
use strata_cache::testing::RedisServer;
use strata_cache::{Key, LeaseConfig, Source, Tiered, TieredConfig};
use tokio::sync::{Notify, Semaphore};

use crate::common::{Backend, POLICY, key, l2_for, replica};

/// The real L2, except that `try_lease` waits for a permit (after saying it was reached).
#[derive(Debug)]
struct LeaseHeldBack {
    inner: RedisL2,
    reached: Arc<Notify>,
    go: Arc<Semaphore>,
}

impl L2 for LeaseHeldBack {
    fn get<'a>(&'a self, key: &'a Key) -> L2Future<'a, Option<Bytes>> {
        self.inner.get(key)
    }

    fn set_many<'a>(&'a self, writes: &'a [L2Write]) -> L2Future<'a, ()> {
        self.inner.set_many(writes)
    }

    fn try_lease<'a>(&'a self, key: &'a Key, token: &'a str, ttl: Duration) -> L2Future<'a, bool> {
        Box::pin(async move {
            self.reached.notify_one();
            let _permit = self.go.acquire().await.expect("semaphore open");
            self.inner.try_lease(key, token, ttl).await
        })
    }

    fn release_lease<'a>(&'a self, key: &'a Key, token: &'a str) -> L2Future<'a, ()> {
        self.inner.release_lease(key, token)
    }

    fn generations<'a>(&'a self, scopes: &'a [&'a str]) -> L2Future<'a, Vec<u64>> {
        self.inner.generations(scopes)
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
        wait: Duration::from_secs(2),
    };
    let a = replica(&l2, lease);
    let (reached, go) = (Arc::new(Notify::new()), Arc::new(Semaphore::new(0)));
    let held_back: Arc<dyn L2> = Arc::new(LeaseHeldBack {
        inner: l2.clone(),
        reached: reached.clone(),
        go: go.clone(),
    });
    let b = Arc::new(Tiered::new(
        &TieredConfig {
            l1_max_bytes: 1 << 20,
            flight_wait: Duration::from_secs(5),
            write_queue: 16,
            lease: Some(lease),
            l1_max_age_out_of_step: Duration::from_secs(60),
        },
        Some(held_back),
    ));
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
