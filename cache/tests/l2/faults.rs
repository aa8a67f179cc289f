//! Faults of a single redis-server: garbage under a key, a frozen server, a full write queue, a lost channel.

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_cache::l2::RedisNodes;
use strata_cache::testing::RedisServer;
use strata_cache::{Entry, Source};

use crate::common::{Backend, POLICY, cache, in_step, key, l2_for, replica_trusting_l1_for};

async fn redis_l2(redis: &RedisServer, timeout: Duration) -> strata_cache::l2::RedisL2 {
    l2_for(RedisNodes::Single(redis.url()), timeout).await
}

#[tokio::test]
async fn garbage_is_counted_as_a_miss_and_overwritten() {
    let redis = RedisServer::start();
    let l2 = redis_l2(&redis, Duration::from_millis(200)).await;
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
    let l2 = redis_l2(&redis, timeout).await;
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

#[tokio::test]
async fn a_replica_out_of_step_stops_trusting_old_l1_entries() {
    let mut redis = RedisServer::start();
    let l2 = redis_l2(&redis, Duration::from_millis(50)).await;
    let cache = replica_trusting_l1_for(&l2, Duration::from_millis(300));
    let task = cache.keep_in_step();
    in_step(&[&cache]).await;
    let backend = Backend::default();
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
