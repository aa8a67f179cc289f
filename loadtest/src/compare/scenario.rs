//! One line of the benchmark table: a target, the keys it is asked for, the drivers that measure it, and its
//! figures over the rounds (medians reported).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::fleet::Pinning;
use super::h2load::{self, H2loadReport};
use crate::load::{Keys, LoadReport, LoadSpec};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Short name (table and JSON).
    pub name: &'static str,
    /// What it is.
    pub what: String,
    /// Where the calls go.
    pub target: SocketAddr,
    /// Which ids are asked for.
    pub keys: Keys,
    /// The `x-strata-cache` value most answers should carry (`-` for none).
    pub level: &'static str,
    /// The framed request h2load sends too, when the scenario asks for one fixed id.
    pub h2load_body: Option<PathBuf>,
    /// The reference its ratios are taken against (a scenario name).
    pub reference: &'static str,
    /// A sample backend whose GetItem calls are counted during each round.
    pub backend_counted: Option<SocketAddr>,
}

/// One round of one scenario.
#[derive(Debug)]
pub struct Round {
    /// strata-load's figures.
    pub load: LoadReport,
    /// h2load's, when it ran.
    pub h2load: Option<H2loadReport>,
    /// GetItem calls the counted backend received during the strata-load run.
    pub backend_calls: Option<u64>,
}

/// How the rounds are driven.
#[derive(Debug, Clone)]
pub struct Drive {
    /// strata-load's calls in flight.
    pub concurrency: usize,
    /// Length of each driver's run.
    pub duration: Duration,
    /// Run h2load as well where a scenario allows it.
    pub h2load: bool,
    /// CPU pinning.
    pub pinning: Pinning,
}

impl Scenario {
    /// Runs one round: strata-load, then h2load where it applies.
    pub async fn round(&self, drive: &Drive) -> anyhow::Result<Round> {
        let before = match self.backend_counted {
            Some(addr) => Some(get_item_calls(addr).await?),
            None => None,
        };
        let load = crate::load::run(&LoadSpec {
            target: self.target,
            concurrency: drive.concurrency,
            connections: 2,
            duration: drive.duration,
            max_requests: 100_000_000,
            keys: self.keys.clone(),
            timeout: Duration::from_secs(5),
        })
        .await?;
        let backend_calls = match (self.backend_counted, before) {
            (Some(addr), Some(before)) => Some(get_item_calls(addr).await? - before),
            _ => None,
        };
        let h2load = match (&self.h2load_body, drive.h2load) {
            (Some(body), true) => {
                Some(h2load::run(self.target, body, drive.duration, 2, 32, &drive.pinning).await?)
            }
            _ => None,
        };
        Ok(Round {
            load,
            h2load,
            backend_calls,
        })
    }
}

/// GetItem calls a sample backend has answered, from its `CatalogStats` service.
pub async fn get_item_calls(addr: SocketAddr) -> anyhow::Result<u64> {
    let mut client = strata_proto::demo::v1::catalog_stats_client::CatalogStatsClient::connect(
        format!("http://{addr}"),
    )
    .await?;
    let stats = client
        .get_stats(strata_proto::demo::v1::GetStatsRequest {})
        .await?
        .into_inner();
    Ok(stats.get_item_calls)
}

/// A scenario's medians over its rounds.
#[derive(Debug, Clone)]
pub struct Medians {
    /// strata-load calls/s.
    pub rps: f64,
    /// strata-load p50, ms.
    pub p50_ms: f64,
    /// strata-load p99, ms.
    pub p99_ms: f64,
    /// strata-load mean, ms.
    pub mean_ms: f64,
    /// h2load calls/s, when it ran.
    pub h2load_rps: Option<f64>,
    /// Share of calls that reached the counted backend.
    pub backend_share: Option<f64>,
    /// Calls that did not end OK, over all rounds (both drivers).
    pub errors: u64,
}

impl Medians {
    /// The medians of `rounds`.
    pub fn of(rounds: &[Round]) -> Self {
        let h2: Vec<&H2loadReport> = rounds.iter().filter_map(|r| r.h2load.as_ref()).collect();
        let shares: Vec<f64> = rounds
            .iter()
            .filter_map(|r| {
                r.backend_calls
                    .map(|calls| calls as f64 / r.load.requests.max(1) as f64)
            })
            .collect();
        Self {
            rps: median(rounds.iter().map(|r| r.load.rps())),
            p50_ms: median(rounds.iter().map(|r| r.load.percentile_ms(0.5))),
            p99_ms: median(rounds.iter().map(|r| r.load.percentile_ms(0.99))),
            mean_ms: median(rounds.iter().map(|r| r.load.latency_us.mean() / 1000.0)),
            h2load_rps: (!h2.is_empty()).then(|| median(h2.iter().map(|r| r.rps))),
            backend_share: (!shares.is_empty()).then(|| median(shares.into_iter())),
            errors: rounds
                .iter()
                .map(|r| r.load.errors() + r.h2load.map_or(0, |h| h.failed))
                .sum(),
        }
    }

    /// The best throughput measured: h2load's where it ran (the faster client), else strata-load's.
    pub fn best_rps(&self) -> f64 {
        self.h2load_rps.unwrap_or(0.0).max(self.rps)
    }
}

/// The median of `values` (the upper one of an even count).
pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
