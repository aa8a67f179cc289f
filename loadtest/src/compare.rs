//! `strata-load compare`: requests/s and latency of an L1 hit, an L2 hit and a miss through Strata, against the
//! sample backend called directly — one run, alternating scenarios, medians of several rounds, ratios to direct —
//! then the stampede (see [`crate::stampede`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use crate::backend::{BackendOptions, LocalBackend};
use crate::load::{Keys, LoadReport, LoadSpec};
use crate::local_gateway::{L2, LocalGateway, catalog_config};
use crate::redis_child::RedisChild;

/// Settings of the benchmark.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Rounds; each runs every scenario once, in a rotated order.
    pub rounds: usize,
    /// Length of one scenario in one round.
    pub round_duration: Duration,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// Where to write every round's raw figures and the medians as JSON, if anywhere.
    pub json: Option<PathBuf>,
}

/// Keys stored in Redis for the L2 scenario.
const L2_KEYS: u64 = 2000;

struct Scenario {
    name: &'static str,
    what: &'static str,
    target: std::net::SocketAddr,
    keys: Keys,
}

/// Runs the benchmark and prints a Markdown table.
pub async fn run(options: CompareOptions) -> anyhow::Result<()> {
    // Zero backend latency: the figures show what the gateway itself costs.
    let backend = LocalBackend::start(BackendOptions {
        size: u64::MAX,
        latency: Duration::ZERO,
        ..BackendOptions::default()
    })
    .await?;
    let Some(redis) = RedisChild::start_if_installed()? else {
        anyhow::bail!(
            "redis-server is not on PATH; the L2 scenario needs it (apt install redis-server)"
        );
    };
    let redis_url = redis.url();
    let tiered = LocalGateway::start(&catalog_config(
        &backend.url(),
        "256MiB",
        Some(L2::at(&redis_url)),
        "1h",
    ))
    .await?;
    let l2_only = LocalGateway::start(&catalog_config(
        &backend.url(),
        "0",
        Some(L2::at(&redis_url)),
        "1h",
    ))
    .await?;

    // Warm the hit scenarios: item-1 into L1 of `tiered` (and Redis); item-0 … item-<L2_KEYS-1> into Redis through
    // `l2_only`. The L2 scenario spreads its calls over many keys so that concurrent calls rarely share a key (which
    // would coalesce them into one Redis read and measure the single-flight instead of L2).
    let warm = |target, keys, max_requests| LoadSpec {
        target,
        concurrency: 8,
        connections: 1,
        duration: Duration::from_secs(60),
        max_requests,
        keys,
        timeout: Duration::from_secs(5),
    };
    crate::load::run(&warm(tiered.addr, Keys::Fixed("item-1".into()), 3)).await?;
    crate::load::run(&warm(
        l2_only.addr,
        Keys::Unique(Arc::new(AtomicU64::new(0))),
        L2_KEYS,
    ))
    .await?;
    // Let the write-back queue reach Redis.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let scenarios = [
        Scenario {
            name: "direct",
            what: "sample backend, no gateway",
            target: backend.addr,
            keys: Keys::Fixed("item-1".into()),
        },
        Scenario {
            name: "l1-hit",
            what: "Strata, answer in L1",
            target: tiered.addr,
            keys: Keys::Fixed("item-1".into()),
        },
        Scenario {
            name: "l2-hit",
            what: "Strata with L1 off, answer in Redis (uniform over 2000 keys)",
            target: l2_only.addr,
            keys: Keys::Uniform(L2_KEYS),
        },
        Scenario {
            name: "miss",
            what: "Strata, new key every call (L1+L2 miss, backend call, write-back)",
            target: tiered.addr,
            keys: Keys::Unique(Arc::new(AtomicU64::new(1_000_000))),
        },
    ];

    let mut results: Vec<Vec<LoadReport>> = scenarios.iter().map(|_| Vec::new()).collect();
    for round in 0..options.rounds {
        for k in 0..scenarios.len() {
            let i = (round + k) % scenarios.len();
            let s = &scenarios[i];
            let report = crate::load::run(&LoadSpec {
                target: s.target,
                concurrency: options.concurrency,
                connections: 2,
                duration: options.round_duration,
                max_requests: 10_000_000,
                keys: s.keys.clone(),
                timeout: Duration::from_secs(5),
            })
            .await?;
            eprintln!(
                "round {}/{} {:<7} {:>8.0} req/s  p50 {:.3} ms  p99 {:.3} ms  errors {}  {:?}",
                round + 1,
                options.rounds,
                s.name,
                report.rps(),
                report.percentile_ms(0.5),
                report.percentile_ms(0.99),
                report.errors(),
                report.by_cache
            );
            results[i].push(report);
        }
    }

    let summaries: Vec<Summary> = scenarios
        .iter()
        .zip(&results)
        .map(|(s, reports)| Summary::of(s, reports))
        .collect();
    let direct = &summaries[0];
    println!(
        "| scenario | what | req/s (median) | × direct | p50 ms | p99 ms | p50 × direct | errors |\n|---|---|---:|---:|---:|---:|---:|---:|"
    );
    for s in &summaries {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.3} | {:.3} | {:.2} | {} |",
            s.name,
            s.what,
            s.rps,
            s.rps / direct.rps.max(1e-9),
            s.p50_ms,
            s.p99_ms,
            s.p50_ms / direct.p50_ms.max(1e-9),
            s.errors
        );
    }
    let stampede = crate::stampede::run(&redis_url).await?;
    println!(
        "\nstampede: {} concurrent calls for one cold key over {} replicas sharing Redis → {} backend call(s) \
         (target 1); errors {}; p50 {:.1} ms, slowest {:.1} ms; answers {:?}",
        stampede.calls,
        crate::stampede::REPLICAS,
        stampede.backend_calls,
        stampede.errors,
        stampede.p50_ms,
        stampede.max_ms,
        stampede.by_cache
    );
    if let Some(path) = &options.json {
        let mut figures = raw_figures(&options, &summaries, &results);
        figures["stampede"] = serde_json::json!({
            "replicas": crate::stampede::REPLICAS,
            "calls": stampede.calls,
            "errors": stampede.errors,
            "backend_calls": stampede.backend_calls,
            "p50_ms": stampede.p50_ms,
            "max_ms": stampede.max_ms,
            "by_cache": stampede.by_cache,
        });
        std::fs::write(path, serde_json::to_string_pretty(&figures)?)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        eprintln!("raw figures written to {}", path.display());
    }
    tiered.stop().await?;
    l2_only.stop().await?;
    backend.stop();
    drop(redis);
    Ok(())
}

/// One scenario's medians over the rounds.
struct Summary {
    name: &'static str,
    what: &'static str,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

impl Summary {
    fn of(scenario: &Scenario, reports: &[LoadReport]) -> Self {
        Self {
            name: scenario.name,
            what: scenario.what,
            rps: median(reports, LoadReport::rps),
            p50_ms: median(reports, |r| r.percentile_ms(0.5)),
            p99_ms: median(reports, |r| r.percentile_ms(0.99)),
            errors: reports.iter().map(LoadReport::errors).sum(),
        }
    }
}

/// The median of one figure over the rounds (the upper one of an even count).
fn median(reports: &[LoadReport], figure: impl Fn(&LoadReport) -> f64) -> f64 {
    let mut v: Vec<f64> = reports.iter().map(figure).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Every round of every scenario, with the medians and their ratios to the direct call.
fn raw_figures(
    options: &CompareOptions,
    summaries: &[Summary],
    results: &[Vec<LoadReport>],
) -> serde_json::Value {
    let direct = &summaries[0];
    let scenarios: Vec<serde_json::Value> = summaries
        .iter()
        .zip(results)
        .map(|(s, reports)| {
            let rounds: Vec<serde_json::Value> = reports
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "requests": r.requests,
                        "seconds": r.elapsed.as_secs_f64(),
                        "rps": r.rps(),
                        "p50_ms": r.percentile_ms(0.5),
                        "p99_ms": r.percentile_ms(0.99),
                        "errors": r.errors(),
                        "by_status": r.by_status,
                        "by_cache": r.by_cache,
                    })
                })
                .collect();
            serde_json::json!({
                "name": s.name,
                "what": s.what,
                "median": {
                    "rps": s.rps,
                    "p50_ms": s.p50_ms,
                    "p99_ms": s.p99_ms,
                    "rps_ratio_to_direct": s.rps / direct.rps.max(1e-9),
                    "p50_ratio_to_direct": s.p50_ms / direct.p50_ms.max(1e-9),
                },
                "errors": s.errors,
                "rounds": rounds,
            })
        })
        .collect();
    serde_json::json!({
        "rounds": options.rounds,
        "round_seconds": options.round_duration.as_secs_f64(),
        "concurrency": options.concurrency,
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
        "scenarios": scenarios,
    })
}
