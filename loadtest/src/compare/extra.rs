//! The figures measured beside the rotated rounds, each from [`Setup::runs`] runs alternated between the things compared
//! (so that a slow minute of the box falls on all of them), in an order rotated from run to run, reported as medians
//! with every run kept: the L2-hit p50 against Redis GET, the proxies' p50s, the open-loop p99s at half the L1-hit
//! rate, and the Zipf load's open-loop mean latency.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::fleet::Pinning;
use super::targets::{Extra, ProxyP50};
use super::{ZIPF_ITEMS, h2load, scenario};
use crate::load::{Keys, LoadSpec};

/// Runs of each side measurement by default: the issue asks for medians of at least five. With five, "lower in every
/// run" is a verdict a tie reaches one time in 32.
pub const RUNS: usize = 5;

/// Rounds of the one-call-in-flight p50s per side run: three, so fifteen with the default five runs. Each round is
/// short (3 000 calls of ~0.15 ms), and its p50 sits between two modes — whether the scheduler let the backend finish
/// its answer before the proxy ran, or the proxy forwarded it in two parts — so one round can swing by ~15 µs with the
/// box; fifteen, judged at the same one-in-32 bar as five of five ([`super::targets::rounds_needed`]), outlast a
/// disturbed round or three without letting a tie through.
const ONE_IN_FLIGHT_ROUNDS_PER_RUN: usize = 3;

/// Calls per h2load p50 with the default 3 s rounds, for each call in flight (up to 8 in flight: more calls, not
/// longer runs); shorter rounds (`--quick`) make fewer.
const P50_CALLS: u64 = 3000;

/// redis-benchmark's SETs and GETs per run with the default 3 s rounds.
const REDIS_BENCHMARK_REQUESTS: u64 = 20_000;

/// The open-loop rate at which the Zipf load's mean latency is compared with the backend's.
pub const ZIPF_PACED_RPS: f64 = 1000.0;

/// What the side measurements point at, and how they run.
#[derive(Debug)]
pub struct Setup<'a> {
    /// The Strata gateway without L1 (its answers come from Redis).
    pub l2_only: SocketAddr,
    /// The Redis server behind it.
    pub redis_port: u16,
    /// The 0 ms sample backend.
    pub direct: SocketAddr,
    /// nginx `grpc_pass` in front of it, if installed.
    pub nginx: Option<SocketAddr>,
    /// Strata's uncached gateway in front of it.
    pub passthrough: SocketAddr,
    /// The gateway answering from L1.
    pub l1: SocketAddr,
    /// The constant-answer ceilings: a plain tonic server, bare hyper.
    pub ceilings: [SocketAddr; 2],
    /// The Zipf scenario's gateway.
    pub zipf: SocketAddr,
    /// The 2 ms sample backend, called directly.
    pub direct_2ms: SocketAddr,
    /// h2load's request body (GetItem item-1), if h2load is installed.
    pub h2load_body: Option<&'a Path>,
    /// The sample service's descriptors, for the open-loop runs.
    pub protoset: &'a Path,
    /// Where the clients run.
    pub pinning: &'a Pinning,
    /// The rounds' length: one strata-load L2 run lasts this long, an open-loop run twice as long.
    pub round_duration: Duration,
    /// Runs of each side measurement ([`RUNS`], fewer for a smoke test).
    pub runs: usize,
    /// The rounds' calls in flight (the loaded proxy p50s use as many).
    pub concurrency: usize,
}

impl Setup<'_> {
    /// `calls` scaled to the rounds' length (3 s by default), never under a tenth of it.
    fn scaled(&self, calls: u64) -> u64 {
        let share = (self.round_duration.as_secs_f64() / 3.0).clamp(0.1, 1.0);
        (calls as f64 * share) as u64
    }
}

/// Measures everything beside the rounds into `extra`; `l1_rps` is the L1 hit's median throughput as strata-load
/// drove it.
pub async fn measure(setup: &Setup<'_>, l1_rps: f64, extra: &mut Extra) -> anyhow::Result<()> {
    l2_p50s(setup, extra).await?;
    if let (Some(body), Some(nginx)) = (setup.h2load_body, setup.nginx) {
        let proxies = [setup.direct, nginx, setup.passthrough];
        extra.proxy_p50 = vec![
            proxy_p50(1, proxies, body, setup).await?,
            proxy_p50(setup.concurrency, proxies, body, setup).await?,
        ];
    }
    paced_p99s(setup, 0.5 * l1_rps, extra).await?;
    zipf_means(setup, extra).await
}

/// The L2-hit p50 with one call in flight (strata-load, and h2load where installed) and redis-benchmark's GET p50,
/// alternated.
async fn l2_p50s(setup: &Setup<'_>, extra: &mut Extra) -> anyhow::Result<()> {
    let mut runs: [Vec<f64>; 3] = Default::default();
    let mut redis_missing = false;
    for _ in 0..setup.runs {
        let report = crate::load::run(&LoadSpec {
            target: setup.l2_only,
            concurrency: 1,
            connections: 1,
            duration: setup.round_duration,
            max_requests: u64::MAX,
            keys: Keys::Uniform(super::L2_KEYS),
            timeout: Duration::from_secs(5),
        })
        .await?;
        anyhow::ensure!(
            report.errors() == 0 && report.by_cache.keys().all(|level| level == "l2"),
            "the L2 p50 run was not answered from L2 alone: {:?} {:?}",
            report.by_status,
            report.by_cache
        );
        runs[0].push(report.percentile_ms(0.5));
        let requests = setup.scaled(REDIS_BENCHMARK_REQUESTS);
        match redis_get_p50(setup.redis_port, requests, setup.pinning).await {
            Some(p50) => runs[1].push(p50),
            None => redis_missing = true,
        }
        if let Some(body) = setup.h2load_body {
            runs[2].push(l2_p50_h2load(setup.l2_only, body, setup).await?);
        }
    }
    extra.l2_p50_ms = scenario::median(runs[0].iter().copied());
    extra.redis_get_p50_ms = (!redis_missing).then(|| scenario::median(runs[1].iter().copied()));
    extra.l2_p50_h2load_ms =
        (!runs[2].is_empty()).then(|| scenario::median(runs[2].iter().copied()));
    let [strata_load, redis, h2load] = runs;
    extra.runs.insert("l2_p50_ms", strata_load);
    extra.runs.insert("redis_get_p50_ms", redis);
    extra.runs.insert("l2_p50_ms_h2load", h2load);
    Ok(())
}

/// The L2-hit p50 with one call in flight, by h2load (its fixed request, `item-1`, must be answered from L2: the
/// gateway has no L1, and the first call stores it if the warm-up did not).
async fn l2_p50_h2load(target: SocketAddr, body: &Path, setup: &Setup<'_>) -> anyhow::Result<f64> {
    let one = LoadSpec {
        target,
        concurrency: 1,
        connections: 1,
        duration: Duration::from_secs(5),
        max_requests: 1,
        keys: Keys::Fixed("item-1".into()),
        timeout: Duration::from_secs(5),
    };
    let mut answered = crate::load::run(&one).await?;
    if !answered.by_cache.contains_key("l2") {
        // Stored by that call: give the write-back a moment to reach Redis.
        tokio::time::sleep(Duration::from_millis(500)).await;
        answered = crate::load::run(&one).await?;
    }
    anyhow::ensure!(
        answered.by_cache.contains_key("l2"),
        "item-1 is not answered from L2: {:?}",
        answered.by_cache
    );
    let calls = setup.scaled(P50_CALLS);
    h2load::p50_ms(target, body, calls, (1, 1), setup.pinning).await
}

/// redis-benchmark's GET p50 with one connection over `requests` SETs and GETs, in ms; None when it is not installed
/// or says nothing usable.
async fn redis_get_p50(port: u16, requests: u64, pinning: &Pinning) -> Option<f64> {
    let size = crate::constant::framed_reply().len().to_string();
    let mut command = pinning.client_command("redis-benchmark");
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-t",
            "set,get",
            "-n",
            &requests.to_string(),
            "-c",
            "1",
            "-d",
            &size,
            "--csv",
        ]);
    let output = tokio::process::Command::from(command).output().await.ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let row = text.lines().find(|l| l.starts_with("\"GET\""))?;
    row.split(',').nth(4)?.trim_matches('"').parse().ok()
}

/// The p50 of the backend, nginx and Strata's passthrough with `in_flight` calls in flight (h2load; over two
/// connections like strata-load's rounds when more than one), alternated over [`Setup::runs`] rounds in a rotated order
/// (three times as many with one in flight); medians, and every round kept.
async fn proxy_p50(
    in_flight: usize,
    [direct, nginx, passthrough]: [SocketAddr; 3],
    body: &Path,
    setup: &Setup<'_>,
) -> anyhow::Result<ProxyP50> {
    let load = if in_flight > 1 {
        (2, in_flight.div_ceil(2))
    } else {
        (1, 1)
    };
    let calls = setup.scaled(P50_CALLS) * in_flight.min(8) as u64;
    let runs = if in_flight == 1 {
        setup.runs * ONE_IN_FLIGHT_ROUNDS_PER_RUN
    } else {
        setup.runs
    };
    let mut rounds = Vec::with_capacity(runs);
    let targets = [direct, nginx, passthrough];
    for run in 0..runs {
        let mut round = [0.0; 3];
        for i in rotated(run, targets.len()) {
            round[i] = h2load::p50_ms(targets[i], body, calls, load, setup.pinning).await?;
        }
        rounds.push(round);
    }
    Ok(ProxyP50 {
        in_flight: load.0 * load.1,
        rounds,
    })
}

/// Open-loop p99s of the L1 hit and of both ceilings at `rate`, alternated in a rotated order. A tail from one run of each is mostly
/// the neighbours' on a shared box.
async fn paced_p99s(setup: &Setup<'_>, rate: f64, extra: &mut Extra) -> anyhow::Result<()> {
    extra.paced_rps = rate;
    let [tonic, hyper] = setup.ceilings;
    let targets = [setup.l1, tonic, hyper];
    let mut p99s: [Vec<f64>; 3] = Default::default();
    for run in 0..setup.runs {
        for i in rotated(run, targets.len()) {
            let report = paced(targets[i], rate, setup, false).await?;
            p99s[i].push(millis(report.percentile(99.0)));
        }
    }
    let median = |runs: &Vec<f64>| scenario::median(runs.iter().copied());
    extra.l1_paced_p99_ms = median(&p99s[0]);
    extra.ceiling_paced_p99_ms = median(&p99s[1]);
    extra.ceiling_hyper_paced_p99_ms = median(&p99s[2]);
    let [l1, ceiling, ceiling_hyper] = p99s;
    extra.runs.insert("l1_paced_p99_ms", l1);
    extra.runs.insert("ceiling_paced_p99_ms", ceiling);
    extra
        .runs
        .insert("ceiling_hyper_paced_p99_ms", ceiling_hyper);
    Ok(())
}

/// The Zipf load's mean latency through Strata and against the 2 ms backend directly, alternated, at a rate both
/// sustain with room to spare (closed-loop means at 16 in flight measure throughput, not latency).
async fn zipf_means(setup: &Setup<'_>, extra: &mut Extra) -> anyhow::Result<()> {
    extra.zipf_paced_rps = ZIPF_PACED_RPS;
    let targets = [setup.zipf, setup.direct_2ms];
    let mut means: [Vec<f64>; 2] = Default::default();
    for run in 0..setup.runs {
        for i in rotated(run, targets.len()) {
            let report = paced(targets[i], ZIPF_PACED_RPS, setup, true).await?;
            means[i].push(millis(report.average()));
        }
    }
    extra.zipf_paced_mean_ms = scenario::median(means[0].iter().copied());
    extra.direct_paced_mean_ms = scenario::median(means[1].iter().copied());
    let [through, direct] = means;
    extra.runs.insert("zipf_paced_mean_ms", through);
    extra.runs.insert("direct_2ms_paced_mean_ms", direct);
    Ok(())
}

/// An open-loop run of GetItem at `rps` against `target` for twice the rounds' length (latency from each call's due
/// time): for `item-1`, or for Zipf(1.0)-distributed ids over the Zipf scenario's 100 000 when `zipf`.
async fn paced(
    target: SocketAddr,
    rps: f64,
    setup: &Setup<'_>,
    zipf: bool,
) -> anyhow::Result<crate::run::report::Report> {
    let (data, keys) = if zipf {
        (
            json!({"id": "item-{{.Key}}"}),
            json!({"distribution": "zipf", "count": ZIPF_ITEMS, "exponent": 1.0}),
        )
    } else {
        (json!({"id": "item-1"}), serde_json::Value::Null)
    };
    let mut x_strata = json!({"arrival": "open"});
    if !keys.is_null() {
        x_strata["keys"] = keys;
    }
    let duration = setup.round_duration * 2;
    let serde_json::Value::Object(map) = json!({
        "call": "demo.v1.Catalog/GetItem", "host": target.to_string(), "insecure": true,
        "protoset": setup.protoset, "rps": rps.max(1.0), "duration": format!("{}ms", duration.as_millis()),
        "concurrency": 64, "connections": 2, "timeout": "5s", "duration-stop": "wait", "data": data,
        "x-strata": x_strata,
    }) else {
        unreachable!("a JSON object literal")
    };
    let plan = crate::run::plan::Plan::resolve(crate::run::config::from_map(map.clone())?)?;
    let report = crate::run::execute(&plan, std::future::pending()).await?;
    anyhow::ensure!(
        report.tally.errors() == 0,
        "paced run against {target}: {:?}",
        report.tally.by_error
    );
    Ok(report)
}

/// The order of `n` things compared in run `run`: each run starts with the next one, so that none is always measured
/// right after another (an order effect would otherwise favour one of them every time).
fn rotated(run: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |k| (run + k) % n)
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Every run of every side measurement, by the JSON key of its median.
pub type Runs = BTreeMap<&'static str, Vec<f64>>;

#[cfg(test)]
mod tests {
    use super::rotated;

    #[test]
    fn each_run_starts_with_the_next_and_measures_every_one_once() {
        let orders: Vec<Vec<usize>> = (0..4).map(|run| rotated(run, 3).collect()).collect();
        assert_eq!(orders, [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]);
    }
}
