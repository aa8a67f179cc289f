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
