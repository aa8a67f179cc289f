//! A closed-loop load driver for `demo.v1.Catalog/GetItem`: N workers over M connections, each sending the next
//! call when the previous answer arrives, bounded by a duration and a request count.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use strata_proto::demo::v1::GetItemRequest;
use strata_proto::demo::v1::catalog_client::CatalogClient;
use tonic::transport::Channel;

use crate::zipf::Zipf;

/// Which item ids the load asks for.
#[derive(Debug, Clone)]
pub enum Keys {
    /// Zipf-distributed over `item-0` … `item-<n-1>`.
    Zipf(Arc<Zipf>),
    /// Always the same id.
    Fixed(String),
    /// Uniformly over `item-0` … `item-<n-1>`.
    Uniform(u64),
    /// A new id on every call (every call a cache miss).
    Unique(Arc<AtomicU64>),
}

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Where to send calls (the backend directly, or a gateway).
    pub target: SocketAddr,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// HTTP/2 connections the workers share.
    pub connections: usize,
    /// How long to run.
    pub duration: Duration,
    /// Stop after this many calls even if time remains.
    pub max_requests: u64,
    /// Which ids to ask for.
    pub keys: Keys,
    /// Per-call deadline.
    pub timeout: Duration,
}

/// What a run measured.
#[derive(Debug)]
pub struct LoadReport {
    /// Calls completed (any status).
    pub requests: u64,
    /// Calls by gRPC status code name.
    pub by_status: BTreeMap<String, u64>,
    /// OK calls by `x-strata-cache` value (`-` when absent: a direct call).
    pub by_cache: BTreeMap<String, u64>,
    /// Latency of every call, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl LoadReport {
    /// A report of no calls.
    pub fn empty() -> Self {
        Self {
            requests: 0,
            by_status: BTreeMap::new(),
            by_cache: BTreeMap::new(),
            latency_us: new_histogram(),
            elapsed: Duration::ZERO,
        }
    }

    /// Adds the calls of a report that ran at the same time as this one.
    pub fn absorb(&mut self, other: LoadReport) {
        self.requests += other.requests;
        for (k, v) in other.by_status {
            *self.by_status.entry(k).or_default() += v;
        }
        for (k, v) in other.by_cache {
            *self.by_cache.entry(k).or_default() += v;
        }
        // Both histograms share the same bounds, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        self.elapsed = self.elapsed.max(other.elapsed);
    }

    /// Completed calls per second.
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A latency percentile in milliseconds.
    pub fn percentile_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    /// Calls that did not end OK.
    pub fn errors(&self) -> u64 {
        self.requests - self.by_status.get("Ok").copied().unwrap_or(0)
    }
}

/// Connects `n` HTTP/2 channels to `target`.
pub async fn connect(target: SocketAddr, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        channels.push(
            Channel::from_shared(format!("http://{target}"))?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    Ok(channels)
}

/// Runs started in this process so far: each run's workers draw keys from sequences no earlier run used, so a
/// warm-up does not replay the very keys the measured run will ask for (and flatter the hit ratio).
static RUNS: AtomicU64 = AtomicU64::new(0);

/// Runs the load and returns what it measured.
pub async fn run(spec: &LoadSpec) -> anyhow::Result<LoadReport> {
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let channels = connect(spec.target, spec.connections).await?;
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let until = started + spec.duration;
    let mut workers = Vec::with_capacity(spec.concurrency);
    for w in 0..spec.concurrency.max(1) {
        let client = CatalogClient::new(channels[w % channels.len()].clone());
        let (spec, issued) = (spec.clone(), issued.clone());
        let seed = (run << 32) ^ w as u64;
        workers.push(tokio::spawn(async move {
            worker(seed, client, spec, issued, until).await
        }));
    }
    let mut report = LoadReport::empty();
    for worker in workers {
        report.absorb(worker.await?);
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    // 1 µs to 60 s at 3 significant digits; cannot fail for these bounds.
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

async fn worker(
    seed: u64,
    mut client: CatalogClient<Channel>,
    spec: LoadSpec,
    issued: Arc<AtomicU64>,
    until: Instant,
) -> LoadReport {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed ^ seed);
    let mut report = LoadReport::empty();
    while Instant::now() < until && issued.fetch_add(1, Ordering::Relaxed) < spec.max_requests {
        let id = match &spec.keys {
            Keys::Zipf(zipf) => format!("item-{}", zipf.sample(&mut rng)),
            Keys::Fixed(id) => id.clone(),
            Keys::Uniform(n) => format!("item-{}", rng.random_range(0..(*n).max(1))),
            Keys::Unique(next) => format!("item-{}", next.fetch_add(1, Ordering::Relaxed)),
        };
        let mut request = tonic::Request::new(GetItemRequest {
            id,
            ..Default::default()
        });
        request.set_timeout(spec.timeout);
        let sent = Instant::now();
        let result = client.get_item(request).await;
        let took = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
        report.latency_us.saturating_record(took.max(1));
        report.requests += 1;
        let code = match &result {
            Ok(response) => {
                let level = response
                    .metadata()
                    .get("x-strata-cache")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                *report.by_cache.entry(level.to_owned()).or_default() += 1;
                tonic::Code::Ok
            }
            Err(status) => status.code(),
        };
        *report.by_status.entry(format!("{code:?}")).or_default() += 1;
    }
    report
}
