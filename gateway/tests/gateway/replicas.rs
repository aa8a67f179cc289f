//! Several gateways sharing one Redis: one backend call per cold key across all of them, even when a replica dies
//! holding the lease.

use std::time::{Duration, Instant};

use crate::support::backend::TestBackend;
use crate::support::gateway::{TestGateway, cluster_nodes, config_with_route};
use crate::support::lease_hold::LeaseHold;
use crate::support::process::GatewayProcess;
use crate::support::{RedisServer, eventually};
use crate::{get, key};

/// The `cache:` lines for a shared Redis with the lease on.
fn shared_redis(url: &str, lease_ttl: &str) -> String {
    format!("  l2: {{ url: \"{url}\", timeout: 100ms }}\n  lease: {{ ttl: {lease_ttl} }}\n")
}

#[tokio::test]
async fn three_gateways_make_one_backend_call_for_300_cold_calls() {
    let redis = RedisServer::start();
    let backend = TestBackend::start().await;
    let yaml = config_with_route(
        &backend.url(),
        "ttl: 30s",
        &shared_redis(&redis.url(), "5s"),
        "",
    );
    let mut gateways = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let gateway = TestGateway::start(&yaml).await;
        clients.push(gateway.client().await);
        gateways.push(gateway);
    }
    let mut req = key("cold");
    req.delay_ms = 300;
    let calls: Vec<_> = (0..300)
        .map(|i| {
            let (mut client, req) = (clients[i % 3].clone(), req.clone());
            tokio::spawn(async move { get(&mut client, req, None).await })
        })
        .collect();
    for call in calls {
        let answer = call.await.expect("task").expect("every call succeeds");
        assert_eq!(
            answer.reply.serial, 1,
            "everyone got the one backend answer"
        );
    }
    assert_eq!(
        backend.get_calls(),
        1,
        "one backend call across three gateways"
    );
    for gateway in gateways {
        gateway.stop().await;
    }
}

#[tokio::test]
async fn a_replica_killed_holding_the_lease_delays_the_others_until_its_lease_lapses() {
    let redis = RedisServer::start();
    let backend = TestBackend::start().await;
    let yaml = config_with_route(
        &backend.url(),
        "ttl: 30s",
        &shared_redis(&redis.url(), "900ms"),
        "",
    );
    let mut doomed = GatewayProcess::start(&yaml).await;
    let survivor = TestGateway::start(&yaml).await;

    let mut req = key("orphan");
    req.delay_ms = 1000;
    let doomed_call = {
        let req = req.clone();
        let addr = doomed.addr;
        tokio::spawn(async move {
            let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .expect("uri")
                .connect()
                .await;
            match channel {
                Ok(channel) => get(
                    &mut crate::support::pb::lookup_client::LookupClient::new(channel),
                    req,
                    None,
                )
                .await
                .map(drop),
                Err(err) => Err(tonic::Status::unavailable(err.to_string())),
            }
        })
    };
    // Let the doomed replica take the lease and call the backend, then kill it mid-call.
    assert!(
        eventually(Duration::from_secs(5), || async {
            backend.get_calls() == 1
        })
        .await,
        "the doomed replica called the backend"
    );
    doomed.kill();
    assert!(
        doomed_call.await.expect("task").is_err(),
        "the killed replica's caller gets an error"
    );

    let mut client = survivor.client().await;
    let started = Instant::now();
    let answer = get(&mut client, req.clone(), None)
        .await
        .expect("answered despite the orphaned lease");
    let took = started.elapsed();
    assert_eq!(answer.cache, "miss");
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_millis(3000),
        "waited for the dead holder's lease to lapse (900 ms after its last renewal), then the 1 s backend: {took:?}"
    );
    assert_eq!(backend.get_calls(), 2);
    let hit = get(&mut client, req, None).await.expect("cached now");
    assert_eq!(
        hit.cache, "l1",
        "the replica that took the lease over stored its answer"
    );
    assert_eq!(backend.get_calls(), 2);
    survivor.stop().await;
}

#[tokio::test]
async fn gateways_over_a_redis_cluster_share_answers_leases_and_invalidations() {
    let cluster = strata_cache::testing::RedisCluster::start();
    let backend = TestBackend::start().await;
    let nodes = cluster_nodes(&cluster);
    let cache = format!(
        "  l2: {{ cluster: [{nodes}], timeout: 200ms }}\n  lease: {{ ttl: 5s, wait: 3s }}\n"
    );
    let yaml = config_with_route(&backend.url(), "ttl: 30s", &cache, "").replace(
        "admin: { listen: 127.0.0.1:0 }",
        "admin: { listen: 127.0.0.1:0, token: t }",
    );
    let (a, b) = (
        TestGateway::start(&yaml).await,
        TestGateway::start(&yaml).await,
    );
    let clients = [a.client().await, b.client().await];
    // The cluster connection is made in the background: wait until L2 answers on both.
    for (i, client) in clients.iter().enumerate() {
        let name = format!("probe{i}");
        let ready = eventually(Duration::from_secs(10), || {
            let (mut client, name) = (client.clone(), name.clone());
            async move {
                let _ = get(&mut client, key(&name), None).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                get(&mut client.clone(), key(&name), None)
                    .await
                    .is_ok_and(|a| a.cache != "miss")
            }
        })
        .await;
        assert!(ready, "gateway {i} uses the cluster");
    }
    let before = backend.get_calls();

    let mut req = key("cold");
    req.delay_ms = 300;
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let (mut client, req) = (clients[i % 2].clone(), req.clone());
            tokio::spawn(async move { get(&mut client, req, None).await })
        })
        .collect();
    for call in calls {
        call.await.expect("task").expect("every call succeeds");
    }
    assert_eq!(
        backend.get_calls() - before,
        1,
        "one backend call across both gateways"
    );

    let admin = tonic::transport::Channel::from_shared(format!("http://{}", a.admin))
        .expect("uri")
        .connect()
        .await
        .expect("admin");
    let mut request = tonic::Request::new(strata_proto::admin::v1::InvalidateRequest {
        target: Some(strata_proto::admin::v1::invalidate_request::Target::Method(
            "/testing.v1.Lookup/Get".into(),
        )),
    });
    request
        .metadata_mut()
        .insert("authorization", "Bearer t".parse().expect("ascii"));
    strata_proto::admin::v1::cache_admin_client::CacheAdminClient::new(admin)
        .invalidate(request)
        .await
        .expect("invalidated");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut on_b = clients[1].clone();
    let after = get(&mut on_b, req, None).await.expect("answer");
    assert_ne!(
        after.cache, "l1",
        "the invalidation reached the other gateway"
    );
    a.stop().await;
    b.stop().await;
}

/// Calls keys `load-0` … `load-199` on the gateway at `addr` until `stop`; returns (calls, failed).
async fn load_on(
    addr: std::net::SocketAddr,
    worker: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (u64, u64) {
    let Ok(channel) = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
    else {
        return (0, 1);
    };
    let mut client = crate::support::pb::lookup_client::LookupClient::new(channel);
    let (mut calls, mut failed) = (0u64, 0u64);
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let name = format!("load-{}", (worker * 37 + calls * 7) % 200);
        if get(&mut client, key(&name), None).await.is_err() {
            failed += 1;
        }
        calls += 1;
    }
    (calls, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_load_leaves_the_others_serving_and_no_lease_past_its_ttl() {
    let redis = RedisServer::start();
    let backend = TestBackend::start().await;
    // Slow lookups, so that leases are held while the doomed replica dies.
    backend.slow_down(50);
    let yaml = config_with_route(
        &backend.url(),
        "ttl: 30s",
        &shared_redis(&redis.url(), "900ms"),
        "",
    );
    let mut doomed = GatewayProcess::start(&yaml).await;
    let survivors = [
        TestGateway::start(&yaml).await,
        TestGateway::start(&yaml).await,
    ];

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let on_doomed: Vec<_> = (0..4)
        .map(|w| tokio::spawn(load_on(doomed.addr, w, stop.clone())))
        .collect();
    let on_survivors: Vec<_> = (0..8)
        .map(|w| {
            tokio::spawn(load_on(
                survivors[(w % 2) as usize].addr,
                100 + w,
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    doomed.kill(); // SIGKILL: no cleanup, its leases stay behind in Redis
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);

    for worker in on_doomed {
        let _ = worker.await.expect("worker"); // the killed replica's callers fail; that is expected
    }
    let (mut calls, mut failed) = (0, 0);
    for worker in on_survivors {
        let (c, f) = worker.await.expect("worker");
        calls += c;
        failed += f;
    }
    assert!(calls > 50, "the survivors were under load: {calls} calls");
    eprintln!("replica killed -9 among three: survivors {calls} calls, {failed} failed");
    assert_eq!(failed, 0, "the other replicas keep serving ({calls} calls)");

    // Whatever leases the killed replica held lapse with their ttl (900 ms after their last renewal): none is left behind.
    let leases = || {
        redis
            .keys()
            .into_iter()
            .filter(|k| k.contains(":lease:"))
            .count()
    };
    assert!(
        eventually(Duration::from_secs(3), || async { leases() == 0 }).await,
        "{} leases outlived their ttl",
        leases()
    );
    for survivor in survivors {
        survivor.stop().await;
    }
}

/// On the wire, the interleaving the lease re-read exists for: replica B has read L2 (nothing there) and its lease
/// request is held back in front of Redis while replica A takes the lease, calls the backend, writes its answer and
/// releases the lease. When B's request goes on, B holds a free lease — and must find A's answer rather than call the
/// backend a second time.
#[tokio::test]
async fn a_lease_taken_just_after_another_replica_answered_finds_that_answer() {
    let redis = RedisServer::start();
    let redis_addr: std::net::SocketAddr = redis
        .url()
        .trim_start_matches("redis://")
        .parse()
        .expect("redis address");
    let hold = LeaseHold::start(redis_addr).await;
    let backend = TestBackend::start().await;
    // B's Redis timeout is long enough that its held lease request is answered, not timed out (a timed-out lease
    // request fails open: that replica would call the backend itself, by design).
    let config = |url: &str| {
        config_with_route(
            &backend.url(),
            "ttl: 30s",
            &format!("  l2: {{ url: \"{url}\", timeout: 5s }}\n  lease: {{ ttl: 5s }}\n"),
            "",
        )
    };
    let a = TestGateway::start(&config(&redis.url())).await;
    let b = TestGateway::start(&config(&hold.url())).await;
    let mut req = key("raced");
    req.delay_ms = 100;

    let on_b = {
        let mut client = b.client().await;
        let req = req.clone();
        tokio::spawn(async move { get(&mut client, req, None).await })
    };
    tokio::time::timeout(Duration::from_secs(5), hold.reached())
        .await
        .expect("B asks for the lease");
    let from_a = get(&mut a.client().await, req, None)
        .await
        .expect("A answers");
    assert_eq!(from_a.cache, "miss");
    assert!(
        eventually(Duration::from_secs(5), || async {
            let keys = redis.keys();
            !keys.iter().any(|k| k.contains(":lease:"))
                && keys.iter().filter(|k| k.starts_with("strata:")).count() == 1
        })
        .await,
        "A stored its answer and released its lease: {:?}",
        redis.keys()
    );
    hold.release();
    let from_b = tokio::time::timeout(Duration::from_secs(10), on_b)
        .await
        .expect("B answers in time")
        .expect("task")
        .expect("B answers");
    assert_eq!(from_b.cache, "coalesced");
    assert_eq!(from_b.reply.serial, 1, "A's answer");
    assert_eq!(backend.get_calls(), 1, "B did not call the backend");
    a.stop().await;
    b.stop().await;
}
