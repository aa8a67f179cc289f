//! The stampede scenario of `strata-load compare`: many concurrent calls for one key nobody has cached, spread over
//! several replicas sharing one Redis. The single-flight and the cross-replica lease should let exactly one of them
//! reach the backend.

use std::time::Duration;

use crate::backend::{BackendOptions, LocalBackend};
use crate::load::{Keys, LoadReport, LoadSpec};
use crate::local_gateway::{L2, LocalGateway, catalog_config};

/// Replicas the calls are spread over.
pub const REPLICAS: usize = 3;
/// Concurrent cold calls per replica.
pub const CALLS_PER_REPLICA: u64 = 1000;
/// The backend's latency: a slow lookup, so that most calls arrive while the first is still being answered (any
/// that arrive later are cache hits, which does not change the count that matters: backend calls).
const BACKEND_LATENCY: Duration = Duration::from_millis(200);

/// What the stampede measured.
#[derive(Debug)]
pub struct StampedeReport {
    /// Calls sent, over all replicas.
    pub calls: u64,
    /// Calls that did not end OK.
    pub errors: u64,
    /// Calls the backend received.
    pub backend_calls: u64,
    /// The median call, in milliseconds.
    pub p50_ms: f64,
    /// The slowest call, in milliseconds.
    pub max_ms: f64,
    /// Answers by `x-strata-cache` value, over all replicas.
    pub by_cache: std::collections::BTreeMap<String, u64>,
}

/// Runs the stampede against `REPLICAS` fresh gateways over the Redis at `redis_url`.
pub async fn run(redis_url: &str) -> anyhow::Result<StampedeReport> {
    let backend = LocalBackend::start(BackendOptions {
        size: u64::MAX,
        latency: BACKEND_LATENCY,
        ..BackendOptions::default()
    })
    .await?;
    let mut replicas = Vec::with_capacity(REPLICAS);
    for _ in 0..REPLICAS {
        replicas.push(
            LocalGateway::start(&catalog_config(
                &backend.url(),
                "64MiB",
                Some(L2 {
                    url: redis_url,
                    // Generous: the load here saturates the machine, and a lease operation that times out lets
                    // its replica call the backend itself (failing open, by design) — see docs/BENCHMARKS.md.
                    timeout: "1s",
                    lease: true,
                }),
                "1h",
            ))
            .await?,
        );
    }
    // An item no other scenario asks for (they count up from 0 and from 1 000 000), new in every run.
    let key = format!(
        "item-{}",
        4_000_000_000_000_u64
            + u64::from(std::process::id()) * 1000
            + u64::from(rand::random::<u16>() % 1000)
    );
    let specs: Vec<LoadSpec> = replicas
        .iter()
        .map(|replica| LoadSpec {
            target: replica.addr,
            concurrency: CALLS_PER_REPLICA as usize,
            // Enough connections that the server's per-connection stream limit does not queue calls.
            connections: 8,
            duration: Duration::from_secs(30),
            max_requests: CALLS_PER_REPLICA,
            keys: Keys::Fixed(key.clone()),
            timeout: Duration::from_secs(10),
        })
        .collect();
    let reports = futures::future::try_join_all(specs.iter().map(crate::load::run)).await?;
    let mut total = LoadReport::empty();
    for report in reports {
        total.absorb(report);
    }
    let report = StampedeReport {
        calls: total.requests,
        errors: total.errors(),
        backend_calls: backend.counters.snapshot().get_item_calls,
        p50_ms: total.percentile_ms(0.5),
        max_ms: total.latency_us.max() as f64 / 1000.0,
        by_cache: total.by_cache,
    };
    for replica in replicas {
        replica.stop().await?;
    }
    backend.stop();
    Ok(report)
}
