//! Isolation: answers never cross tenants. 100 tenants send byte-identical requests at the same moment to two
//! replicas sharing Redis, with the route varying on `x-tenant-id` — L1, L2, the single-flight and the lease all in
//! play — and every answer is checked against the tenant that asked.

use std::sync::Arc;

use crate::get;
use crate::support::RedisServer;
use crate::support::backend::TestBackend;
use crate::support::gateway::{TestGateway, config};

const TENANTS: usize = 100;
/// Calls per tenant and round, all in flight together.
const CALLS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_never_cross_tenants_under_concurrency() {
    let redis = RedisServer::start();
    let backend = TestBackend::start().await;
    // A slow backend: the calls of one round overlap, so followers wait on leaders (in-process and across replicas).
    backend.slow_down(20);
    let shared = format!(
        "  l2: {{ url: \"{}\", timeout: 200ms }}\n  lease: {{ ttl: 5s, wait: 2s }}\n",
        redis.url()
    );
    let yaml = config(&backend.url(), &shared, "");
    let replicas = Arc::new([
        TestGateway::start(&yaml).await,
        TestGateway::start(&yaml).await,
    ]);

    // Round 1 finds nothing cached (misses, coalesced); round 2 finds L1 or L2 (the other replica's answer).
    let mut by_level = std::collections::BTreeMap::<String, usize>::new();
    for round in 0..2 {
        let mut calls = Vec::new();
        for t in 0..TENANTS {
            for c in 0..CALLS {
                let replicas = replicas.clone();
                calls.push(tokio::spawn(async move {
                    let tenant = format!("tenant-{t}");
                    let mut client = replicas[(t + c + round) % 2].client().await;
                    // The same bytes for everybody: only the tenant's metadata differs.
                    let answer = get(&mut client, crate::key("same-request"), Some(&tenant))
                        .await
                        .unwrap_or_else(|e| panic!("{tenant}: {e}"));
                    (tenant, answer)
                }));
            }
        }
        for call in calls {
            let (tenant, answer) = call.await.expect("call task");
            assert_eq!(
                answer.reply.tenant, tenant,
                "{tenant} got another tenant's answer (x-strata-cache: {})",
                answer.cache
            );
            *by_level.entry(answer.cache).or_default() += 1;
        }
    }
    // Every tenant's entry was fetched once: 100 backend calls for 600 answers.
    assert_eq!(
        backend.get_calls(),
        TENANTS as u64,
        "one backend call per tenant: {by_level:?}"
    );
    assert_eq!(by_level.values().sum::<usize>(), 2 * TENANTS * CALLS);
    let [first, second] =
        Arc::try_unwrap(replicas).unwrap_or_else(|_| panic!("calls still hold the replicas"));
    first.stop().await;
    second.stop().await;
}
