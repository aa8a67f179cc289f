//! Behaviours that must hold over one redis-server and over a Redis Cluster alike: each scenario runs against both.

use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_cache::l2::{L2, RedisNodes};
use strata_cache::testing::{RedisCluster, RedisServer};
use strata_cache::{LeaseConfig, Lifetime, Source};

use crate::common::{Backend, POLICY, cache, in_step, key, l2_for, replica, scoped_key, stored};

const LEASE: LeaseConfig = LeaseConfig {
    ttl: Duration::from_secs(5),
};

/// An entry written through one cache is read by another, many keys over (in a cluster) every slot's master.
async fn entries_written_by_one_replica_are_read_by_another(nodes: RedisNodes) {
    let l2 = l2_for(nodes, Duration::from_millis(200)).await;
    let backend = Backend::default();
    let (first, second) = (cache(&l2, 64), cache(&l2, 64));
    for i in 0..50 {
        let miss = first
            .get(key(&format!("k{i}")), &POLICY, backend.clone())
            .await
            .expect("loads");
        assert_eq!(miss.source, Source::Miss);
    }
    assert!(first.flush_writes(Duration::from_secs(5)).await);
    for i in 0..50 {
        let hit = second
            .get(key(&format!("k{i}")), &POLICY, backend.clone())
            .await
            .expect("hits");
        assert_eq!(hit.source, Source::L2, "key k{i}");
    }
    assert_eq!(backend.calls(), 50);
}

/// Three replicas, 300 concurrent calls on one cold key: one backend call.
async fn three_replicas_make_one_backend_call(nodes: RedisNodes) {
    let l2 = l2_for(nodes, Duration::from_millis(200)).await;
    let replicas: Vec<_> = (0..3).map(|_| replica(&l2, LEASE)).collect();
    let backend = Backend::slow(Duration::from_millis(200));
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..300 {
        let (cache, backend) = (replicas[i % 3].clone(), backend.clone());
        calls.spawn(async move { cache.get(key("cold"), &POLICY, backend).await });
    }
    while let Some(done) = calls.join_next().await {
        let lookup = done.expect("task").expect("answer");
        assert_eq!(lookup.entry.message, Bytes::from_static(b"answer 0"));
    }
    assert_eq!(backend.calls(), 1, "one backend call across three replicas");
    let leases: u64 = replicas
        .iter()
        .map(|r| r.stats().snapshot().lease_acquired)
        .sum();
    let waited: u64 = replicas
        .iter()
        .map(|r| r.stats().snapshot().lease_waited_hit)
        .sum();
    assert_eq!(
        (leases, waited),
        (1, 2),
        "one replica held the lease, the two others found its answer in L2"
    );
    let taken_again = l2
        .try_lease(&key("cold"), "probe", Duration::from_secs(1))
        .await
        .expect("lease");
    assert!(taken_again, "the holder released the lease");
}

/// A lease whose holder died (it never renews nor releases it) delays the others until it lapses; then one takes
/// it over, and the key fills.
async fn a_crashed_holders_lease_is_taken_over_when_it_lapses(nodes: RedisNodes) {
    let l2 = l2_for(nodes, Duration::from_millis(200)).await;
    let lease = LeaseConfig {
        ttl: Duration::from_millis(800),
    };
    assert!(
        l2.try_lease(&key("k"), "dead-replica", lease.ttl)
            .await
            .expect("planted"),
        "a replica took it and died"
    );
    let cache = replica(&l2, lease);
    let backend = Backend::default();

    let started = Instant::now();
    let lookup = cache
        .get(key("k"), &POLICY, backend.clone())
        .await
        .expect("answered, not failed");
    let waited = started.elapsed();
    assert_eq!(lookup.source, Source::Miss);
    assert!(
        waited >= Duration::from_millis(500),
        "waited for the lease to lapse: {waited:?}"
    );
    let stats = cache.stats().snapshot();
    assert_eq!((stats.lease_gave_up, stats.lease_acquired), (0, 1));
    assert!(
        stored(&l2, &key("k")).await,
        "the replica that took the lease over stored its answer"
    );
}

/// A holder whose fetch takes many times the lease's ttl keeps its lease alive: the others wait for it, however
/// slow the machine, and the backend is called once.
async fn a_slow_holder_keeps_its_lease_and_the_others_wait(nodes: RedisNodes) {
    let l2 = l2_for(nodes, Duration::from_millis(200)).await;
    let lease = LeaseConfig {
        ttl: Duration::from_millis(300),
    };
    let (a, b) = (replica(&l2, lease), replica(&l2, lease));
    let backend = Backend::slow(Duration::from_millis(1500));
    let on_a = tokio::spawn({
        let (a, backend) = (a.clone(), backend.clone());
        async move { a.get(key("slow"), &POLICY, backend).await }
    });
    // A holds the lease (its fetch is under way) before B asks.
    let called = tokio::time::timeout(Duration::from_secs(5), async {
        while backend.calls() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(called.is_ok(), "A fetches");
    let on_b = b
        .get(key("slow"), &POLICY, backend.clone())
        .await
        .expect("B answers");
    let on_a = on_a.await.expect("task").expect("A answers");
    assert_eq!(
        (on_a.source, on_b.source),
        (Source::Miss, Source::Coalesced)
    );
    assert_eq!(on_b.entry.message, Bytes::from_static(b"answer 0"));
    assert_eq!(
        backend.calls(),
        1,
        "B waited for A's fetch past five lease ttls"
    );
}

/// A replica with a cold L1 finds a stale-while-revalidate entry in L2: every caller waiting on that key is served
/// it at once (not only the one that read it), while one refresh runs.
async fn a_stale_entry_found_in_l2_reaches_every_waiter(nodes: RedisNodes) {
    let l2 = l2_for(nodes, Duration::from_millis(200)).await;
    let (a, b) = (replica(&l2, LEASE), replica(&l2, LEASE));
    let mut backend = Backend::slow(Duration::ZERO);
    backend.lifetime = Some(Lifetime {
        fresh: Duration::from_millis(200),
        stale_while_revalidate: Duration::from_secs(60),
        stale_if_error: Duration::ZERO,
    });
    a.get(key("k"), &POLICY, backend.clone())
        .await
        .expect("A fills");
    assert!(stored(&l2, &key("k")).await);
    tokio::time::sleep(Duration::from_millis(300)).await;

    backend.delay = Duration::from_secs(3);
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (b, backend) = (b.clone(), backend.clone());
        calls.spawn(async move { b.get(key("k"), &POLICY, backend).await });
    }
    while let Some(done) = calls.join_next().await {
        let lookup = done.expect("task").expect("answer");
        assert_eq!(
            (lookup.source, lookup.entry.message.clone()),
            (Source::Stale, Bytes::from_static(b"answer 0"))
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "nobody waited for the 3 s refresh"
    );
    let refreshing = tokio::time::timeout(Duration::from_secs(2), async {
        while backend.calls() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(refreshing.is_ok(), "one refresh runs");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(backend.calls(), 2, "the fill, then one refresh");
}

/// Entry and scope invalidation through one replica reach another's L1 within 100 ms.
async fn invalidation_reaches_every_replica(nodes: RedisNodes) {
    let l2 = l2_for(nodes, Duration::from_millis(200)).await;
    let (a, b) = (replica(&l2, LEASE), replica(&l2, LEASE));
    let tasks = [a.keep_in_step(), b.keep_in_step()];
    in_step(&[&a, &b]).await;
    let backend = Backend::default();

    for r in [&a, &b] {
        r.get(scoped_key(r, "x").await, &POLICY, backend.clone())
            .await
            .expect("answer");
        assert!(r.flush_writes(Duration::from_secs(2)).await);
    }
    let on_b = b
        .get(scoped_key(&b, "x").await, &POLICY, backend.clone())
        .await
        .expect("hit");
    assert_eq!(on_b.source, Source::L1);

    a.invalidate_key(scoped_key(&a, "x").await)
        .await
        .expect("invalidated");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = b
        .get(scoped_key(&b, "x").await, &POLICY, backend.clone())
        .await
        .expect("answer");
    assert_eq!(
        after.source,
        Source::Miss,
        "B's L1 entry was dropped and Redis's deleted"
    );
    assert!(b.flush_writes(Duration::from_secs(2)).await);

    let before = scoped_key(&b, "x").await;
    a.invalidate_scope("/t.S/M").await.expect("bumped");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_ne!(
        scoped_key(&b, "x").await,
        before,
        "B knows the new generation"
    );
    let fresh = b
        .get(scoped_key(&b, "x").await, &POLICY, backend.clone())
        .await
        .expect("answer");
    assert_eq!(fresh.source, Source::Miss);
    for t in tasks.into_iter().flatten() {
        t.abort();
    }
}

fn single(server: &RedisServer) -> RedisNodes {
    RedisNodes::Single(server.url())
}

fn cluster(cluster: &RedisCluster) -> RedisNodes {
    RedisNodes::Cluster(cluster.urls())
}

/// Runs a scenario against one server and against a cluster.
macro_rules! on_server_and_cluster {
    ($($scenario:ident),* $(,)?) => {
        mod on_server {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let server = super::RedisServer::start();
                    super::$scenario(super::single(&server)).await;
                }
            )*
        }
        mod on_cluster {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let cluster = super::RedisCluster::start();
                    super::$scenario(super::cluster(&cluster)).await;
                }
            )*
        }
    };
}

on_server_and_cluster!(
    entries_written_by_one_replica_are_read_by_another,
    three_replicas_make_one_backend_call,
    a_crashed_holders_lease_is_taken_over_when_it_lapses,
    a_slow_holder_keeps_its_lease_and_the_others_wait,
    a_stale_entry_found_in_l2_reaches_every_waiter,
    invalidation_reaches_every_replica,
);
