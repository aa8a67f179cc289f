//! `strata-load demo`: the sample backend, Strata in front of it (two replicas sharing a Redis of the demo's own when
//! `redis-server` is installed), a Zipf load against the backend directly and then through Strata, and a table.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::{BackendOptions, LocalBackend};
use crate::load::{Keys, LoadReport, LoadSpec};
use crate::local_gateway::{L2, LocalGateway, catalog_config};
use crate::redis_child::RedisChild;
use crate::zipf::Zipf;

/// Settings of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Total load time, split 30 % direct / 70 % through Strata.
    pub duration: Duration,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// Items in the catalog.
    pub items: usize,
    /// Zipf exponent of item popularity.
    pub zipf_s: f64,
    /// Latency of the sample backend.
    pub backend_latency: Duration,
}

/// Runs the demo and prints its table.
pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let backend = LocalBackend::start(BackendOptions {
        size: options.items as u64,
        latency: options.backend_latency,
        ..BackendOptions::default()
    })
    .await?;
    let redis = RedisChild::start_if_installed()?;
    let replicas = if redis.is_some() { 2 } else { 1 };
    let redis_url = redis.as_ref().map(RedisChild::url);
    let yaml = catalog_config(
        &backend.url(),
        "64MiB",
        redis_url.as_deref().map(L2::at),
        "60s",
    );
    let mut gateways = Vec::new();
    for _ in 0..replicas {
        gateways.push(LocalGateway::start(&yaml).await?);
    }

    println!("Strata demo");
    println!(
        "  backend: sample demo.v1.Catalog, {} items, {:?} per lookup",
        options.items, options.backend_latency
    );
    match &redis {
        Some(r) => println!(
            "  Strata:  {replicas} gateway replicas, L1 64MiB each + shared L2 ({})",
            r.url()
        ),
        None => println!(
            "  Strata:  1 gateway, L1 only — redis-server is not on PATH, so no L2 (apt install redis-server)"
        ),
    }
    println!(
        "  load:    GetItem, Zipf(s={}) popularity, {} calls in flight, {:?} in all\n",
        options.zipf_s, options.concurrency, options.duration
    );

    let zipf = Arc::new(Zipf::new(options.items, options.zipf_s));
    let spec = |target, duration| LoadSpec {
        target,
        concurrency: options.concurrency,
        connections: 4,
        duration,
        max_requests: 50_000_000,
        keys: Keys::Zipf(zipf.clone()),
        timeout: Duration::from_secs(5),
    };
    let direct_time = options.duration.mul_f64(0.3);
    let strata_time = options.duration.saturating_sub(direct_time);

    let calls_before = backend.counters.snapshot().get_item_calls;
    let direct = crate::load::run(&spec(backend.addr, direct_time)).await?;
    let direct_backend_calls = backend.counters.snapshot().get_item_calls - calls_before;

    // Through Strata: the replicas share the load, as behind a load balancer.
    let calls_before = backend.counters.snapshot().get_item_calls;
    let runs = gateways
        .iter()
        .map(|g| {
            let mut s = spec(g.addr, strata_time);
            s.concurrency = (options.concurrency / replicas).max(1);
            s
        })
        .collect::<Vec<_>>();
    let results = futures::future::join_all(runs.iter().map(crate::load::run)).await;
    let mut through = Vec::new();
    for r in results {
        through.push(r?);
    }
    let strata_backend_calls = backend.counters.snapshot().get_item_calls - calls_before;
    let strata = merge(through);

    print_table(&direct, direct_backend_calls, &strata, strata_backend_calls);
    for g in gateways {
        g.stop().await?;
    }
    backend.stop();
    drop(redis);
    Ok(())
}

/// Sums the reports of loads that ran at the same time.
fn merge(reports: Vec<LoadReport>) -> LoadReport {
    let mut total = LoadReport::empty();
    for r in reports {
        total.absorb(r);
    }
    total
}

fn print_table(direct: &LoadReport, direct_calls: u64, strata: &LoadReport, strata_calls: u64) {
    let row = |name: &str, a: String, b: String| println!("  {name:<22}{a:>18}{b:>18}");
    row("", "direct".into(), "through Strata".into());
    row(
        "requests",
        direct.requests.to_string(),
        strata.requests.to_string(),
    );
    row(
        "requests/s",
        format!("{:.0}", direct.rps()),
        format!("{:.0}", strata.rps()),
    );
    row(
        "p50 latency",
        format!("{:.2} ms", direct.percentile_ms(0.5)),
        format!("{:.2} ms", strata.percentile_ms(0.5)),
    );
    row(
        "p99 latency",
        format!("{:.2} ms", direct.percentile_ms(0.99)),
        format!("{:.2} ms", strata.percentile_ms(0.99)),
    );
    row(
        "errors",
        direct.errors().to_string(),
        strata.errors().to_string(),
    );
    row(
        "backend calls",
        direct_calls.to_string(),
        strata_calls.to_string(),
    );
    let saved = 100.0 * (1.0 - strata_calls as f64 / strata.requests.max(1) as f64);
    println!("\n  Strata answered {saved:.1} % of calls without the backend. Answers by level:");
    let ok: u64 = strata.by_cache.values().sum();
    for level in ["l1", "l2", "coalesced", "miss", "stale", "bypass"] {
        if let Some(n) = strata.by_cache.get(level) {
            println!(
                "    {level:<10}{n:>12}  {:>5.1} %",
                100.0 * *n as f64 / ok.max(1) as f64
            );
        }
    }
}
