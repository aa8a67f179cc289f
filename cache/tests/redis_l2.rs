//! The tiered cache over a real `redis-server`: L2 round trips, garbage, a frozen Redis, a full write queue.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_cache::l2::{L2, RedisL2, RedisL2Config, RedisNodes};
use strata_cache::testing::RedisServer;
use strata_cache::{
    Entry, Fetched, Key, KeyBuilder, LeaseConfig, Lifetime, LoadError, LoadMode, Loader, Policy,
    Source, Tiered, TieredConfig,
};

#[derive(Clone, Default)]
struct Backend {
    calls: Arc<AtomicUsize>,
}

impl Loader for Backend {
    async fn load(self, _mode: LoadMode) -> Result<Fetched, LoadError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(Fetched::store(
            Entry::unstamped(Bytes::from(format!("answer {n}")), 0, String::new()),
            Lifetime::fresh_for(Duration::from_secs(60)),
        ))
    }
}

const POLICY: Policy = Policy {
    early_refresh_beta: 0.0,
};

fn redis_l2(redis: &RedisServer, timeout: Duration) -> RedisL2 {
    RedisL2::new(&RedisL2Config {
        nodes: RedisNodes::Single(redis.url()),
        timeout,
        key_prefix: "test".into(),
    })
    .expect("valid url")
}

/// A cache over `redis` with L1 off, so every lookup shows what L2 did.
fn cache(l2: &RedisL2, write_queue: usize) -> Arc<Tiered> {
    let l2: Arc<dyn L2> = Arc::new(l2.clone());
    Arc::new(Tiered::new(
        &TieredConfig {
            l1_max_bytes: 0,
            flight_wait: Duration::from_secs(5),
            write_queue,
            lease: None,
            l1_max_age_out_of_step: Duration::from_secs(60),
        },
        Some(l2),
    ))
}

fn key(s: &str) -> Key {
    KeyBuilder::new("test", "/t.S/M").finish(s.as_bytes())
}

#[tokio::test]
async fn an_entry_written_by_one_cache_is_read_by_another() {
    let redis = RedisServer::start();
    let l2 = redis_l2(&redis, Duration::from_millis(200));
    let backend = Backend::default();

    let first = cache(&l2, 16);
    let miss = first
        .get(key("a"), &POLICY, backend.clone())
        .await
        .expect("loads");
    assert_eq!(miss.source, Source::Miss);
    assert!(first.flush_writes(Duration::from_secs(5)).await);
    assert_eq!(first.stats().snapshot().l2_writes, 1);

    let ttl: i64 = redis::cmd("PTTL")
        .arg(l2.redis_key(&key("a")))
        .query(&mut redis.client())
        .expect("pttl");
    assert!(
        ttl > 55_000 && ttl <= 60_000,
        "Redis expires the entry with it: {ttl} ms"
    );

    let second = cache(&l2, 16);
    let hit = second
        .get(key("a"), &POLICY, backend.clone())
        .await
        .expect("hits");
    assert_eq!(hit.source, Source::L2);
    assert_eq!(hit.entry.message, miss.entry.message);
    assert_eq!(backend.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn garbage_is_counted_as_a_miss_and_overwritten() {
    let redis = RedisServer::start();
    let l2 = redis_l2(&redis, Duration::from_millis(200));
    let cache = cache(&l2, 16);
    let redis_key = l2.redis_key(&key("a"));
    let _: () = redis::cmd("SET")
        .arg(&redis_key)
        .arg(&b"\x08\x01garbage\xff"[..])
        .query(&mut redis.client())
        .expect("set");

    let lookup = cache
        .get(key("a"), &POLICY, Backend::default())
        .await
        .expect("loads");
    assert_eq!(lookup.source, Source::Miss);
    assert_eq!(cache.stats().snapshot().l2_undecodable, 1);
    assert!(cache.flush_writes(Duration::from_secs(5)).await);

    let stored: Vec<u8> = redis::cmd("GET")
        .arg(&redis_key)
        .query(&mut redis.client())
        .expect("get");
    assert_eq!(
        Entry::decode(Bytes::from(stored))
            .expect("a good entry now")
            .message,
        lookup.entry.message
    );
}

#[tokio::test]
async fn a_frozen_redis_costs_one_timeout_and_never_a_failure() {
    let redis = RedisServer::start();
    let timeout = Duration::from_millis(50);
    let l2 = redis_l2(&redis, timeout);
    // Capacity 1: with Redis frozen the worker is stuck on its first batch and further writes are dropped.
    let cache = cache(&l2, 1);
    cache
        .get(key("warm"), &POLICY, Backend::default())
        .await
        .expect("connects");

    let pid = redis.pid().expect("running").to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    // Twenty lookups at once: twenty writes arrive while the worker is stuck on its first batch.
    let mut lookups = tokio::task::JoinSet::new();
    for i in 0..20 {
        let cache = cache.clone();
        lookups.spawn(async move {
            let started = Instant::now();
            let lookup = cache
                .get(key(&format!("k{i}")), &POLICY, Backend::default())
                .await;
            (lookup.map(|l| l.source), started.elapsed())
        });
    }
    let mut slowest = Duration::ZERO;
    while let Some(done) = lookups.join_next().await {
        let (source, took) = done.expect("task");
        assert_eq!(source.expect("answers without Redis"), Source::Miss);
        slowest = slowest.max(took);
    }
    signal("-CONT");

    let stats = cache.stats().snapshot();
    // One L2 timeout (50 ms) per lookup, with slack for a loaded CI machine; without the timeout a lookup would
    // wait as long as Redis stays frozen.
    assert!(
        slowest < Duration::from_millis(500),
        "each lookup waits about one L2 timeout, slowest {slowest:?}"
    );
    assert!(stats.l2_timeouts >= 20, "{stats:?}");
    assert!(
        stats.l2_write_drops > 0,
        "a full write queue drops and counts: {stats:?}"
    );

    // Redis is back: reads work again without any reconnect dance by the caller.
    assert!(cache.flush_writes(Duration::from_secs(5)).await);
    let back = cache
        .get(key("k0"), &POLICY, Backend::default())
        .await
        .expect("answers");
    assert!(matches!(back.source, Source::L2 | Source::Miss));
    let after = cache
        .get(key("after"), &POLICY, Backend::default())
        .await
        .expect("loads");
    assert_eq!(after.source, Source::Miss);
    assert!(cache.flush_writes(Duration::from_secs(5)).await);
    let again = cache
        .get(key("after"), &POLICY, Backend::default())
        .await
        .expect("hits");
    assert_eq!(again.source, Source::L2);
}

/// A loader that takes `delay`, counting its calls across every replica that shares it.
#[derive(Clone)]
struct SlowBackend {
    calls: Arc<AtomicUsize>,
    delay: Duration,
}

impl Loader for SlowBackend {
    async fn load(self, _mode: LoadMode) -> Result<Fetched, LoadError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let entry = Entry::unstamped(Bytes::from(format!("answer {n}")), 0, String::new());
        Ok(Fetched::store(
            entry,
            Lifetime::fresh_for(Duration::from_secs(60)),
        ))
    }
}

/// A replica: its own L1 and flights, the shared Redis, and the lease.
fn replica(l2: &RedisL2, lease: LeaseConfig) -> Arc<Tiered> {
    let l2: Arc<dyn L2> = Arc::new(l2.clone());
    Arc::new(Tiered::new(
        &TieredConfig {
            l1_max_bytes: 1 << 20,
            flight_wait: Duration::from_secs(5),
            write_queue: 16,
            lease: Some(lease),
            l1_max_age_out_of_step: Duration::from_secs(60),
        },
        Some(l2),
    ))
}

#[tokio::test]
async fn three_replicas_make_one_backend_call_for_a_cold_key() {
    let redis = RedisServer::start();
    let l2 = redis_l2(&redis, Duration::from_millis(200));
    let lease = LeaseConfig {
        ttl: Duration::from_secs(5),
        wait: Duration::from_secs(2),
    };
    let replicas: Vec<_> = (0..3).map(|_| replica(&l2, lease)).collect();
    let backend = SlowBackend {
        calls: Arc::default(),
        delay: Duration::from_millis(200),
    };
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..300 {
        let (cache, backend) = (replicas[i % 3].clone(), backend.clone());
        calls.spawn(async move { cache.get(key("cold"), &POLICY, backend).await });
    }
    while let Some(done) = calls.join_next().await {
        let lookup = done.expect("task").expect("answer");
        assert_eq!(lookup.entry.message, Bytes::from_static(b"answer 0"));
    }
    assert_eq!(
        backend.calls.load(Ordering::SeqCst),
        1,
        "one backend call across three replicas"
    );
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
    let lease_left: Option<String> = redis::cmd("GET")
        .arg(l2.lease_key(&key("cold")))
        .query(&mut redis.client())
        .expect("get");
    assert_eq!(lease_left, None, "the holder released the lease");
}

#[tokio::test]
async fn a_crashed_holders_lease_delays_by_wait_then_expires() {
    let redis = RedisServer::start();
    let l2 = redis_l2(&redis, Duration::from_millis(200));
    let lease = LeaseConfig {
        ttl: Duration::from_millis(800),
        wait: Duration::from_millis(300),
    };
    // A replica took the lease and died: nobody will release it.
    let _: () = redis::cmd("SET")
        .arg(l2.lease_key(&key("k")))
        .arg("dead-replica")
        .arg("PX")
        .arg(800)
        .query(&mut redis.client())
        .expect("plant lease");
    let cache = replica(&l2, lease);
    let backend = SlowBackend {
        calls: Arc::default(),
        delay: Duration::ZERO,
    };

    let started = Instant::now();
    let lookup = cache
        .get(key("k"), &POLICY, backend.clone())
        .await
        .expect("answered, not failed");
    let waited = started.elapsed();
    assert_eq!(lookup.source, Source::Miss);
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(800),
        "waited {waited:?}"
    );
    assert_eq!(cache.stats().snapshot().lease_gave_up, 1);
    assert!(cache.flush_writes(Duration::from_secs(2)).await);
    assert_eq!(
        redis.keys().len(),
        1,
        "only the dead lease: an answer fetched past the wait is not stored"
    );

    tokio::time::sleep(Duration::from_millis(600)).await;
    let next = cache
        .get(key("k"), &POLICY, backend.clone())
        .await
        .expect("answered");
    assert_eq!(next.source, Source::Miss);
    assert_eq!(
        cache.stats().snapshot().lease_acquired,
        1,
        "the expired lease was taken"
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(2), async {
            while redis::cmd("GET")
                .arg(l2.redis_key(&key("k")))
                .query::<Option<Vec<u8>>>(&mut redis.client())
                .ok()
                .flatten()
                .is_none()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .is_ok(),
        "the key fills on the next call"
    );
}

/// A key of scope `/t.S/M`, built with the generation `replica` currently knows.
async fn scoped_key(replica: &Tiered, name: &str) -> Key {
    let generation = replica.generations(&["/t.S/M"]).await[0];
    KeyBuilder::new("test", "/t.S/M")
        .generation("/t.S/M", generation)
        .finish(name.as_bytes())
}

async fn in_step(replicas: &[&Arc<Tiered>]) {
    let ok = tokio::time::timeout(Duration::from_secs(5), async {
        while replicas
            .iter()
            .any(|r| r.stats().snapshot().channel_connects == 0)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        ok.is_ok(),
        "replicas subscribed to the invalidation channel"
    );
}

#[tokio::test]
async fn invalidation_through_one_replica_reaches_the_others_l1_within_100ms() {
    let redis = RedisServer::start();
    let l2 = redis_l2(&redis, Duration::from_millis(200));
    let lease = LeaseConfig {
        ttl: Duration::from_secs(5),
        wait: Duration::from_secs(2),
    };
    let (a, b) = (replica(&l2, lease), replica(&l2, lease));
    let tasks = [a.keep_in_step(), b.keep_in_step()];
    in_step(&[&a, &b]).await;
    let backend = SlowBackend {
        calls: Arc::default(),
        delay: Duration::ZERO,
    };

    // Both replicas hold the answer in L1.
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

    // One entry, through A: gone from B's L1 within 100 ms.
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

    // The whole scope, through A: B builds new keys within 100 ms, without any scan.
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

#[tokio::test]
async fn a_replica_out_of_step_stops_trusting_old_l1_entries() {
    let mut redis = RedisServer::start();
    let l2 = redis_l2(&redis, Duration::from_millis(50));
    let cache = Arc::new(Tiered::new(
        &TieredConfig {
            l1_max_bytes: 1 << 20,
            flight_wait: Duration::from_secs(5),
            write_queue: 16,
            lease: None,
            l1_max_age_out_of_step: Duration::from_millis(300),
        },
        Some(Arc::new(l2.clone()) as Arc<dyn L2>),
    ));
    let task = cache.keep_in_step();
    in_step(&[&cache]).await;
    let backend = SlowBackend {
        calls: Arc::default(),
        delay: Duration::ZERO,
    };
    cache
        .get(key("old"), &POLICY, backend.clone())
        .await
        .expect("answer");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        cache
            .get(key("old"), &POLICY, backend.clone())
            .await
            .expect("hit")
            .source,
        Source::L1,
        "in step: trusted"
    );

    // The channel breaks (Redis gone): old L1 entries are no longer served, young ones still are.
    redis.kill();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let old = cache
        .get(key("old"), &POLICY, backend.clone())
        .await
        .expect("answered by the backend");
    assert_eq!(
        old.source,
        Source::Miss,
        "an entry older than l1_max_age_out_of_step is not trusted"
    );
    let young = cache
        .get(key("old"), &POLICY, backend.clone())
        .await
        .expect("hit");
    assert_eq!(
        young.source,
        Source::L1,
        "the entry just fetched is young enough"
    );

    // Redis back: the replica resubscribes and is in step again.
    redis.restart();
    let back = tokio::time::timeout(Duration::from_secs(5), async {
        while cache.stats().snapshot().channel_connects < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(back.is_ok(), "resubscribed after Redis came back");
    if let Some(t) = task {
        t.abort();
    }
}
