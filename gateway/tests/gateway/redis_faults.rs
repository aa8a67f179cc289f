//! Redis absent, killed, frozen, back again, or holding garbage — alone or under steady load: calls never fail because
//! of it, and none waits on Redis past its timeouts.

use std::time::Duration;

use crate::support::RedisServer;
use tonic::transport::Channel;

use crate::support::backend::TestBackend;
use crate::support::eventually;
use crate::support::gateway::{TestGateway, cluster_nodes, config, l2_block};
use crate::support::pb::lookup_client::LookupClient;
use crate::{get, key};

/// Whether a call for `name` is answered from L2 within `within` (polling; each call may also fill L2).
async fn answered_from_l2_within(
    client: &LookupClient<Channel>,
    name: &str,
    within: Duration,
) -> bool {
    eventually(within, || {
        let mut client = client.clone();
        async move {
            get(&mut client, key(name), None)
                .await
                .is_ok_and(|a| a.cache == "l2")
        }
    })
    .await
}

#[tokio::test]
async fn redis_absent_at_startup_then_used_once_it_appears() {
    // Held (bound, not listening) until Redis listens on it: refused meanwhile, and given to no other test.
    let hold = crate::support::backend::PortHold::any();
    let port = hold.port();
    let backend = TestBackend::start().await;
    // L1 off, so every second call shows whether L2 answered.
    let yaml = config(
        &backend.url(),
        &l2_block(&format!("redis://127.0.0.1:{port}"), true),
        "",
    );
    let gateway = TestGateway::start(&yaml).await;
    let mut client = gateway.client().await;

    for i in 0..3 {
        let answer = get(&mut client, key("a"), None)
            .await
            .expect("calls succeed without Redis");
        assert_eq!(answer.cache, "miss", "call {i}");
    }
    assert_eq!(backend.get_calls(), 3);

    let _redis = RedisServer::start_on(hold);
    let l2_back = answered_from_l2_within(&client, "a", Duration::from_secs(10)).await;
    assert!(
        l2_back,
        "L2 answers again once Redis is up, without a restart"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn redis_killed_mid_run_then_restarted() {
    let mut redis = RedisServer::start();
    let backend = TestBackend::start().await;
    let gateway =
        TestGateway::start(&config(&backend.url(), &l2_block(&redis.url(), true), "")).await;
    let mut client = gateway.client().await;

    assert_eq!(
        get(&mut client, key("a"), None).await.expect("miss").cache,
        "miss"
    );
    let written = answered_from_l2_within(&client, "a", Duration::from_secs(5)).await;
    assert!(written, "the entry reached L2");

    redis.kill();
    for i in 0..20 {
        let answer = get(&mut client, key(&format!("k{}", i % 4)), None)
            .await
            .expect("every call succeeds while Redis is down");
        assert_eq!(answer.cache, "miss");
    }

    redis.restart();
    let l2_back = answered_from_l2_within(&client, "after", Duration::from_secs(10)).await;
    assert!(
        l2_back,
        "L2 is used again after Redis comes back, without a restart"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn garbage_in_redis_is_a_miss_and_gets_replaced() {
    let redis = RedisServer::start();
    let backend = TestBackend::start().await;
    let gateway =
        TestGateway::start(&config(&backend.url(), &l2_block(&redis.url(), true), "")).await;
    let mut client = gateway.client().await;

    get(&mut client, key("a"), None).await.expect("miss");
    assert!(
        eventually(Duration::from_secs(5), || async { redis.keys().len() == 1 }).await,
        "entry written"
    );
    let redis_key = redis.keys().remove(0);
    assert!(redis_key.starts_with("strata:"), "{redis_key}");

    let garbage = b"\xff\xfe not a cache entry \x00".to_vec();
    let mut conn = redis.client();
    let _: () = redis::cmd("SET")
        .arg(&redis_key)
        .arg(&garbage)
        .query(&mut conn)
        .expect("plant garbage");

    let answer = get(&mut client, key("a"), None)
        .await
        .expect("garbage does not fail the call");
    assert_eq!(answer.cache, "miss");
    assert_eq!(answer.reply.key, "a");
    assert_eq!(backend.get_calls(), 2);

    let replaced = eventually(Duration::from_secs(5), || {
        let mut conn = redis.client();
        let redis_key = redis_key.clone();
        let garbage = garbage.clone();
        async move {
            let now: Option<Vec<u8>> = redis::cmd("GET")
                .arg(&redis_key)
                .query(&mut conn)
                .unwrap_or(None);
            now.is_some_and(|v| v != garbage)
        }
    })
    .await;
    assert!(replaced, "the garbage was overwritten with a good entry");
    let answer = get(&mut client, key("a"), None).await.expect("l2");
    assert_eq!(answer.cache, "l2");
    gateway.stop().await;
}

/// Sends `signal` (`STOP`, `CONT`) to process `pid`.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// What steady load saw while a fault happened.
struct LoadSeen {
    calls: u64,
    failed: u64,
    slowest: Duration,
}

impl LoadSeen {
    /// Prints what the load saw (visible with `--nocapture`; docs/RELIABILITY.md quotes it).
    fn report(&self, fault: &str) {
        eprintln!(
            "{fault}: {} calls, {} failed, slowest {:?}",
            self.calls, self.failed, self.slowest
        );
    }

    /// Reports, then asserts that no call failed during `fault` and none took `limit` or longer.
    fn assert_all_answered_within(&self, fault: &str, limit: Duration) {
        self.report(fault);
        assert_eq!(
            self.failed, 0,
            "no call fails during: {fault} ({} calls)",
            self.calls
        );
        assert!(
            self.slowest < limit,
            "{fault}: slowest call {:?}, limit {limit:?}",
            self.slowest
        );
    }
}

/// 8 workers calling keys k0…k9 in a loop while `fault` runs (plus 0.5 s before and after).
async fn steady_load_during(
    client: &LookupClient<Channel>,
    fault: impl std::future::Future<Output = ()>,
) -> LoadSeen {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (mut client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut calls, mut failed, mut slowest) = (0u64, 0u64, Duration::ZERO);
                while !stop.load(Ordering::SeqCst) {
                    let started = std::time::Instant::now();
                    if get(&mut client, key(&format!("k{}", (w + calls) % 10)), None)
                        .await
                        .is_err()
                    {
                        failed += 1;
                    }
                    slowest = slowest.max(started.elapsed());
                    calls += 1;
                }
                (calls, failed, slowest)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    fault.await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut seen = LoadSeen {
        calls: 0,
        failed: 0,
        slowest: Duration::ZERO,
    };
    for worker in workers {
        let (c, f, s) = worker.await.expect("worker");
        seen.calls += c;
        seen.failed += f;
        seen.slowest = seen.slowest.max(s);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_during_steady_load_fails_no_call_and_delays_none_past_its_timeouts() {
    // The nastiest Redis fault: the TCP connection stays up and nothing answers (kill -STOP). L1 is off, so every
    // call goes through L2 (timeout 50 ms).
    let redis = RedisServer::start();
    let pid = redis.pid().expect("redis pid");
    let backend = TestBackend::start().await;
    let gateway =
        TestGateway::start(&config(&backend.url(), &l2_block(&redis.url(), true), "")).await;
    let client = gateway.client().await;
    assert!(answered_from_l2_within(&client, "k0", Duration::from_secs(5)).await);

    let seen = steady_load_during(&client, async {
        signal(pid, "STOP");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        signal(pid, "CONT");
    })
    .await;
    // A call waiting on the frozen Redis would take the whole 1.5 s; each Redis operation on the way (generations,
    // the GET) gives up after its 50 ms timeout instead. 1 s leaves room for a debug build on a busy machine.
    seen.assert_all_answered_within("Redis frozen for 1.5 s", Duration::from_secs(1));
    assert!(
        answered_from_l2_within(&client, "k1", Duration::from_secs(10)).await,
        "L2 serves again after kill -CONT"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_during_steady_load_fails_no_call_and_fills_again() {
    let mut redis = RedisServer::start();
    let backend = TestBackend::start().await;
    let gateway =
        TestGateway::start(&config(&backend.url(), &l2_block(&redis.url(), true), "")).await;
    let client = gateway.client().await;
    assert!(answered_from_l2_within(&client, "k0", Duration::from_secs(5)).await);

    let seen = steady_load_during(&client, async {
        redis.kill();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        // Back on the same port, empty (no persistence): the gateway reconnects and refills it.
        redis.restart();
    })
    .await;
    seen.assert_all_answered_within("Redis killed for 1 s, restarted", Duration::from_secs(1));
    assert!(
        answered_from_l2_within(&client, "k2", Duration::from_secs(10)).await,
        "the restarted Redis is filled and read again"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_master_down_during_steady_load_fails_no_call() {
    let mut cluster = strata_cache::testing::RedisCluster::start();
    let backend = TestBackend::start().await;
    let nodes = cluster_nodes(&cluster);
    // L1 off: every call goes through the cluster.
    let cache =
        format!("  l1: {{ max_bytes: 0 }}\n  l2: {{ cluster: [{nodes}], timeout: 200ms }}\n");
    let gateway = TestGateway::start(&config(&backend.url(), &cache, "")).await;
    let client = gateway.client().await;
    // The cluster connection is made in the background: wait until L2 answers.
    assert!(
        answered_from_l2_within(&client, "k3", Duration::from_secs(10)).await,
        "the cluster serves"
    );

    // One master of three gone for good (no replicas: a third of the slots have no server).
    let seen = steady_load_during(&client, async {
        cluster.kill_master(0);
        tokio::time::sleep(Duration::from_millis(2000)).await;
    })
    .await;
    seen.assert_all_answered_within("Redis Cluster master killed", Duration::from_secs(2));
    gateway.stop().await;
}
