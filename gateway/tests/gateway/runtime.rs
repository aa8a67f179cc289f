//! The runtime `strata serve` runs on: the current-thread scheduler for one worker thread (configured, or the CPUs
//! the process may use), a pool of worker threads otherwise — and either serves every kind of call.

use std::time::Duration;

use crate::support::backend::TestBackend;
use crate::support::gateway::config;
use crate::support::process::GatewayProcess;
use crate::{chat_interleaved, get, key};

/// Starts `strata serve` with `worker_threads` (absent: `None`), checks what its `serving` line says it runs on,
/// then makes a cached call twice (a miss, then an L1 hit) and a streaming passthrough call through it.
async fn serves_on(worker_threads: Option<usize>, scheduler: &str, workers: usize) {
    let backend = TestBackend::start().await;
    let top = worker_threads.map_or(String::new(), |n| format!("worker_threads: {n}"));
    let gateway = GatewayProcess::start(&config(&backend.url(), "", &top)).await;
    let serving = gateway
        .log_line("strata gateway serving", Duration::from_secs(5))
        .await;
    assert!(
        serving.contains(&format!("scheduler=\"{scheduler}\""))
            && serving.contains(&format!("worker_threads={workers}")),
        "expected {scheduler} with {workers} worker threads: {serving}"
    );

    let mut client = gateway.client().await;
    let first = get(&mut client, key("runtime"), None).await.expect("miss");
    let second = get(&mut client, key("runtime"), None).await.expect("hit");
    assert_eq!(
        (first.cache.as_str(), second.cache.as_str()),
        ("miss", "l1")
    );
    assert_eq!(second.reply, first.reply);
    assert_eq!(backend.get_calls(), 1);
    chat_interleaved(&mut client).await;
}

#[tokio::test]
async fn one_worker_thread_runs_the_current_thread_scheduler() {
    serves_on(Some(1), "current_thread", 1).await;
}

#[tokio::test]
async fn more_worker_threads_run_a_pool_of_that_many() {
    serves_on(Some(3), "multi_thread", 3).await;
}

#[tokio::test]
async fn by_default_one_worker_thread_per_cpu_the_process_may_use() {
    // The child inherits this process's CPU affinity and cgroup, so it counts the same CPUs.
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let scheduler = if cpus == 1 {
        "current_thread"
    } else {
        "multi_thread"
    };
    serves_on(None, scheduler, cpus).await;
}

/// On a pool of workers (where each call used to be a task of its own), many calls of every kind on two connections
/// at once all complete, each with its own answer, and a drain lets the slow ones finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_of_workers_serves_many_calls_on_few_connections_and_drains() {
    let (_backend, mut gateway) =
        crate::support::gateway::start(&crate::support::gateway::config_for).await;
    let connections = [gateway.client().await, gateway.client().await];
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..600 {
        let mut client = connections[i % 2].clone();
        calls.spawn(async move {
            let name = format!("k{}", i % 40);
            if i % 3 == 0 {
                // Passthrough (the route "*"), unary.
                let reply = client.peek(key(&name)).await.expect("peek").into_inner();
                assert_eq!(reply.key, name);
            } else if i % 50 == 1 {
                chat_interleaved(&mut client).await;
            } else {
                // Cached: misses, coalesced calls and L1 hits, for 40 keys.
                let answer = get(&mut client, key(&name), None).await.expect("get");
                assert_eq!(answer.reply.key, name);
            }
        });
    }
    let all = async {
        while let Some(call) = calls.join_next().await {
            call.expect("a call's task");
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("every call completes (none waits on a wake that never comes)");

    let slow: Vec<_> = (0..20)
        .map(|i| {
            let mut client = connections[i % 2].clone();
            let mut request = key(&format!("slow{i}"));
            request.delay_ms = 300;
            tokio::spawn(async move { client.peek(request).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    gateway.begin_stop();
    for call in slow {
        let reply = call
            .await
            .expect("task")
            .expect("a call in flight finishes in the drain");
        assert!(reply.into_inner().key.starts_with("slow"));
    }
    gateway.stop().await;
}
