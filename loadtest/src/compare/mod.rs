//! `strata-load compare`: the benchmark suite. One run starts every server it measures — sample backends, nginx
//! `grpc_pass`, a constant-answer ceiling, Strata gateways — as processes of their own (pinned away from the load
//! clients where there are CPUs to spare), drives each scenario in rotated rounds with strata-load and h2load, and
//! reports medians, ratios to a reference measured in the same run, and the targets.

mod extra;
pub mod fleet;
mod h2load;
mod report;
mod scenario;
mod targets;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::Context;

pub use self::extra::RUNS;
pub use self::fleet::Pinning;
use self::fleet::Process;
use self::scenario::{Drive, Medians, Round, Scenario};
use self::targets::Extra;
use crate::load::{Keys, LoadSpec};
use crate::redis_child::RedisChild;
use crate::zipf::Zipf;

/// Settings of the benchmark.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Rounds; each runs every scenario once, in a rotated order.
    pub rounds: usize,
    /// Length of one driver's run of one scenario in one round.
    pub round_duration: Duration,
    /// Runs of each measurement beside the rounds (p50s, open-loop p99s, Zipf means).
    pub side_runs: usize,
    /// strata-load's calls in flight.
    pub concurrency: usize,
    /// Where to write every round's raw figures, the medians and the targets as JSON, if anywhere.
    pub json: Option<PathBuf>,
    /// A Markdown file whose `<!-- compare:begin/end -->` block receives the tables (docs/BENCHMARKS.md).
    pub markdown: Option<PathBuf>,
    /// Where servers and load clients run (this process already pinned to the client CPUs).
    pub pinning: Pinning,
    /// Calls of the Zipf scenario's warm-up. Zipf(1.0) over 100 000 ids has a long tail: after n calls, the ids
    /// never asked for yet still draw about ln(100 000 · 12.1 / n) / 12.1 of the calls (15 % after 200 000, 3 %
    /// after a million), and each of those is a backend call however good the cache.
    pub zipf_warmup_calls: u64,
}

/// Keys stored in Redis for the L2 scenario.
const L2_KEYS: u64 = 2000;
/// Ids of the Zipf scenario.
const ZIPF_ITEMS: usize = 100_000;

/// A temporary directory for configs and request files, removed at the end.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the benchmark, prints the tables, and writes the files asked for. Ctrl-C or SIGTERM end it early, after
/// stopping every process it started.
pub async fn run(options: CompareOptions) -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        done = benchmark(options) => done,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; every server it started is stopped"),
        _ = terminate.recv() => anyhow::bail!("terminated; every server it started is stopped"),
    }
}

async fn benchmark(options: CompareOptions) -> anyhow::Result<()> {
    let machine = targets::machine();
    let pinning = options.pinning.clone();
    let dir = WorkDir(std::env::temp_dir().join(format!("strata-compare-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;

    let fleet = start_fleet(&dir.0, &pinning)?;
    let h2load = h2load::installed();
    let body = h2load::request_file(&dir.0, "item-1")?;
    let zipf = Keys::Zipf(Arc::new(Zipf::new(ZIPF_ITEMS, 1.0)));
    let fixed = || Keys::Fixed("item-1".into());
    let scenarios = scenarios(&fleet, &body, &zipf);

    // Warm the hit scenarios: item-1 in the tiered gateway's L1; 2000 ids in Redis through the L1-less gateway;
    // the Zipf gateway's L1 and L2 by a Zipf load of its own.
    warm(fleet.tiered.addr, fixed(), Duration::from_secs(1), 3).await?;
    warm(fleet.quiet.addr, fixed(), Duration::from_secs(1), 3).await?;
    warm(
        fleet.l2_only.addr,
        Keys::Unique(Arc::new(AtomicU64::new(0))),
        Duration::from_secs(60),
        L2_KEYS,
    )
    .await?;
    warm(
        fleet.zipf_gateway.addr,
        zipf.clone(),
        Duration::from_secs(180),
        options.zipf_warmup_calls,
    )
    .await?;
    // Let the write-back queue reach Redis.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for s in scenarios.iter().filter(|s| s.h2load_body.is_some()) {
        check_status(s).await?;
    }

    let drive = Drive {
        concurrency: options.concurrency,
        duration: options.round_duration,
        h2load,
        pinning: pinning.clone(),
    };
    let mut rounds: Vec<Vec<Round>> = scenarios.iter().map(|_| Vec::new()).collect();
    for round in 0..options.rounds {
        for k in 0..scenarios.len() {
            let i = (round + k) % scenarios.len();
            let s = &scenarios[i];
            let r = s
                .round(&drive)
                .await
                .with_context(|| format!("scenario {}", s.name))?;
            eprintln!(
                "round {}/{} {:<13} {:>8.0} calls/s  h2load {:>8}  p50 {:.3} ms  p99 {:.3} ms  errors {}  {:?}",
                round + 1,
                options.rounds,
                s.name,
                r.load.rps(),
                r.h2load.map_or("-".into(), |h| format!("{:.0}", h.rps)),
                r.load.percentile_ms(0.5),
                r.load.percentile_ms(0.99),
                r.load.errors(),
                r.load.by_cache
            );
            rounds[i].push(r);
        }
    }
    let medians: BTreeMap<&str, Medians> = scenarios
        .iter()
        .zip(&rounds)
        .map(|(s, r)| (s.name, Medians::of(r)))
        .collect();

    let mut extra = Extra {
        zipf_rss_bytes: fleet.zipf_gateway.rss_bytes(),
        zipf_l1_bytes: fleet.zipf_l1_bytes,
        concurrency: options.concurrency,
        ..Extra::default()
    };
    let protoset = dir.0.join("catalog.protoset");
    std::fs::write(&protoset, strata_proto::FILE_DESCRIPTOR_SET)?;
    let side = extra::Setup {
        l2_only: fleet.l2_only.addr,
        redis_port: fleet.redis.port(),
        direct: fleet.fast.addr,
        nginx: fleet.nginx.as_ref().map(|n| n.addr),
        passthrough: fleet.passthrough.addr,
        l1: fleet.tiered.addr,
        ceilings: [fleet.ceiling.addr, fleet.ceiling_hyper.addr],
        zipf: fleet.zipf_gateway.addr,
        direct_2ms: fleet.slow.addr,
        h2load_body: h2load.then_some(body.as_path()),
        protoset: &protoset,
        pinning: &pinning,
        round_duration: options.round_duration,
        runs: options.side_runs,
        concurrency: options.concurrency,
    };
    // The open-loop p99s are paced by strata-load: at half of what strata-load itself reached on the L1 hit, not of
    // h2load's faster figure, which on a slow box is more than strata-load's one CPU can pace (every call then queues
    // in the client, and the p99s measure the client).
    let l1_rps = medians.get("l1-hit").map_or(0.0, |m| m.rps);
    extra::measure(&side, l1_rps, &mut extra).await?;
    let stampede = crate::stampede::run(&fleet.redis_url).await?;
    extra.stampede_backend_calls = stampede.backend_calls;

    let targets = targets::check(&medians, &extra);
    let tables = targets::markdown(&scenarios, &medians, &targets);
    let stampede_line = format!(
        "stampede: {} concurrent calls for one cold key over {} replicas sharing Redis → {} backend call(s) \
         (target 1); errors {}; p50 {:.1} ms, slowest {:.1} ms; answers {:?}",
        stampede.calls,
        crate::stampede::REPLICAS,
        stampede.backend_calls,
        stampede.errors,
        stampede.p50_ms,
        stampede.max_ms,
        stampede.by_cache
    );
    // The machine's absolute speed, so that a reader can tell a slow box from a slow gateway: the ratios travel
    // across boxes, the rates do not.
    let ceiling_rps = medians.get("ceiling").map_or(0.0, Medians::best_rps);
    let setup = format!(
        "Machine: {machine}; its ceiling (a plain tonic server, constant answer) made {ceiling_rps:.0} calls/s. {}. \
         {} rounds × {:.1} s per driver and scenario, strata-load with {} calls in flight \
         over 2 connections, h2load with 2 connections × 32 streams{}; medians.",
        capitalized(&pinning.describe()),
        options.rounds,
        options.round_duration.as_secs_f64(),
        options.concurrency,
        if h2load {
            ""
        } else {
            " (h2load not installed: not run)"
        },
    );
    println!("{tables}\n{stampede_line}\n\n{setup}");

    let results = report::Results {
        machine: &machine,
        pinning: &pinning,
        options: &options,
        scenarios: &scenarios,
        rounds: &rounds,
        medians: &medians,
        extra: &extra,
        targets: &targets,
        stampede: &stampede,
    };
    if let Some(path) = &options.markdown {
        report::write_markdown(path, &setup, &tables, &stampede_line)?;
        eprintln!("tables written into {}", path.display());
    }
    if let Some(path) = &options.json {
        report::write_json(path, &results)?;
        eprintln!("raw figures written to {}", path.display());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
/// Everything the suite starts and measures; each process is stopped when the fleet is dropped.
struct Fleet {
    redis: RedisChild,
    redis_url: String,
    /// The sample backend, answering at once.
    fast: Process,
    /// The sample backend with 2 ms lookups.
    slow: Process,
    ceiling: Process,
    ceiling_hyper: Process,
    nginx: Option<Process>,
    /// Gateways: L1 and L2; the same with the access log off; L2 only; uncached; misses; Zipf.
    tiered: Process,
    quiet: Process,
    l2_only: Process,
    passthrough: Process,
    miss: Process,
    zipf_gateway: Process,
    zipf_l1_bytes: u64,
}

/// Starts Redis, the backends, the references and the gateways the scenarios drive.
fn start_fleet(dir: &std::path::Path, pinning: &Pinning) -> anyhow::Result<Fleet> {
    let Some(redis) = RedisChild::start_if_installed()? else {
        anyhow::bail!(
            "redis-server is not on PATH; the L2 scenarios need it (apt install redis-server)"
        );
    };
    pinning.pin_server(redis.pid())?;
    let redis_url = redis.url();
    let fast = fleet::backend("0ms", pinning)?;
    let slow = fleet::backend("2ms", pinning)?;
    let ceiling = fleet::constant(fleet::Constant::Tonic, pinning)?;
    let ceiling_hyper = fleet::constant(fleet::Constant::Hyper, pinning)?;
    let nginx = fleet::nginx(fast.addr, dir, pinning)?;
    // The Zipf gateway's L1 holds 10 % of the working set: 100 000 answers of the sample backend's size, plus
    // about 100 bytes of entry and key each.
    let zipf_l1_bytes = (ZIPF_ITEMS * (crate::constant::framed_reply().len() + 100) / 10) as u64;
    // Every gateway runs with the default log settings (access log on), as users get it; one more runs with the
    // access log off, to show what it costs.
    let gateway = |name: &str, backend: &Process, l1: &str, l2: bool, cached: bool| {
        let yaml = gateway_yaml(name, backend, l1, l2.then_some(redis_url.as_str()), cached);
        fleet::gateway(name, &yaml, dir, pinning)
    };
    let tiered = gateway("tiered", &fast, "256MiB", true, true)?;
    let quiet = fleet::gateway(
        "quiet",
        &format!(
            "{}log: {{ access: false }}\n",
            gateway_yaml("quiet", &fast, "256MiB", Some(&redis_url), true)
        ),
        dir,
        pinning,
    )?;
    let l2_only = gateway("l2-only", &fast, "0", true, true)?;
    let passthrough = gateway("passthrough", &fast, "0", false, false)?;
    let miss = gateway("miss", &slow, "256MiB", true, true)?;
    let zipf_gateway = gateway("zipf", &slow, &format!("{zipf_l1_bytes}"), true, true)?;
    Ok(Fleet {
        redis,
        redis_url,
        fast,
        slow,
        ceiling,
        ceiling_hyper,
        nginx,
        tiered,
        quiet,
        l2_only,
        passthrough,
        miss,
        zipf_gateway,
        zipf_l1_bytes,
    })
}

/// The scenarios, in the order the tables list them.
fn scenarios(fleet: &Fleet, body: &PathBuf, zipf: &Keys) -> Vec<Scenario> {
    let fixed = || Keys::Fixed("item-1".into());
    let mut scenarios = vec![scenario(
        "direct",
        "sample backend, no gateway",
        fleet.fast.addr,
        fixed(),
        "-",
        Some(body),
        "direct",
    )];
    if let Some(nginx) = &fleet.nginx {
        scenarios.push(scenario(
            "nginx",
            "nginx grpc_pass → backend",
            nginx.addr,
            fixed(),
            "-",
            Some(body),
            "direct",
        ));
    }
    scenarios.extend([
        scenario(
            "ceiling",
            "constant answer: a plain tonic server, default settings, pre-built message",
            fleet.ceiling.addr,
            fixed(),
            "-",
            Some(body),
            "ceiling",
        ),
        scenario(
            "ceiling-hyper",
            "constant answer: bare hyper, pre-encoded reply (stricter)",
            fleet.ceiling_hyper.addr,
            fixed(),
            "-",
            Some(body),
            "ceiling",
        ),
        scenario(
            "l1-hit",
            "Strata, answer in L1",
            fleet.tiered.addr,
            fixed(),
            "l1",
            Some(body),
            "ceiling",
        ),
        scenario(
            "l1-hit-quiet",
            "Strata, answer in L1, access log off",
            fleet.quiet.addr,
            fixed(),
            "l1",
            Some(body),
            "l1-hit",
        ),
        scenario(
            "passthrough",
            "Strata, uncached route → backend",
            fleet.passthrough.addr,
            fixed(),
            "-",
            Some(body),
            if fleet.nginx.is_some() {
                "nginx"
            } else {
                "direct"
            },
        ),
        scenario(
            "l2-hit",
            "Strata with L1 off, answer in Redis (uniform over 2000 keys)",
            fleet.l2_only.addr,
            Keys::Uniform(L2_KEYS),
            "l2",
            None,
            "direct",
        ),
        scenario(
            "direct-2ms",
            "sample backend with 2 ms lookups, no gateway",
            fleet.slow.addr,
            Keys::Unique(Arc::new(AtomicU64::new(0))),
            "-",
            None,
            "direct-2ms",
        ),
        scenario(
            "miss",
            "Strata, new key every call (2 ms backend, write-back to L1 and L2)",
            fleet.miss.addr,
            Keys::Unique(Arc::new(AtomicU64::new(1_000_000))),
            "miss",
            None,
            "direct-2ms",
        ),
    ]);
    let mut zipf_scenario = scenario(
        "zipf",
        "Strata, Zipf(1.0) over 100 000 ids, L1 = 10 % of them, Redis L2, 2 ms backend",
        fleet.zipf_gateway.addr,
        zipf.clone(),
        "l1",
        None,
        "direct-2ms",
    );
    zipf_scenario.backend_counted = Some(fleet.slow.addr);
    scenarios.push(zipf_scenario);
    scenarios
}

fn scenario(
    name: &'static str,
    what: &str,
    target: std::net::SocketAddr,
    keys: Keys,
    level: &'static str,
    h2load_body: Option<&PathBuf>,
    reference: &'static str,
) -> Scenario {
    Scenario {
        name,
        what: what.to_owned(),
        target,
        keys,
        level,
        h2load_body: h2load_body.cloned(),
        reference,
        backend_counted: None,
    }
}

/// A gateway config for the sample backend `backend`: GetItem cached for an hour (or not at all), the rest proxied.
fn gateway_yaml(
    name: &str,
    backend: &Process,
    l1: &str,
    redis: Option<&str>,
    cached: bool,
) -> String {
    let l2 = redis.map_or(String::new(), |url| {
        format!("  l2: {{ url: \"{url}\", timeout: 25ms }}\n")
    });
    let cache = if cached {
        "\n    cache: { ttl: 1h }"
    } else {
        ""
    };
    format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\n\
         cache:\n  namespace: bench-{name}\n  l1: {{ max_bytes: {l1} }}\n{l2}\
         backends:\n  catalog: {{ endpoints: [\"http://{}\"], timeout: 2s }}\n\
         routes:\n  - match: /demo.v1.Catalog/GetItem\n    backend: catalog{cache}\n  - match: \"*\"\n    backend: catalog\n",
        backend.addr
    )
}

async fn warm(
    target: std::net::SocketAddr,
    keys: Keys,
    duration: Duration,
    max_requests: u64,
) -> anyhow::Result<()> {
    let report = crate::load::run(&LoadSpec {
        target,
        concurrency: 16,
        connections: 2,
        duration,
        max_requests,
        keys,
        timeout: Duration::from_secs(5),
    })
    .await?;
    anyhow::ensure!(
        report.errors() == 0,
        "warming {target}: {:?}",
        report.by_status
    );
    Ok(())
}

/// h2load counts HTTP statuses only: one call of the same request, checked for gRPC OK, before it is trusted.
async fn check_status(s: &Scenario) -> anyhow::Result<()> {
    let report = crate::load::run(&LoadSpec {
        target: s.target,
        concurrency: 1,
        connections: 1,
        duration: Duration::from_secs(5),
        max_requests: 1,
        keys: s.keys.clone(),
        timeout: Duration::from_secs(5),
    })
    .await?;
    anyhow::ensure!(
        report.errors() == 0 && report.requests == 1,
        "{}: the request h2load sends does not end OK: {:?}",
        s.name,
        report.by_status
    );
    Ok(())
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map_or(String::new(), |c| c.to_uppercase().chain(chars).collect())
}
