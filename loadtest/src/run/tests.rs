//! `strata-load run` against the real sample backend (in this process, on a random loopback port): key
//! frequencies per distribution, the ghz report's fields, and what a stalled backend does to open-loop latency.

use std::time::Duration;

use serde_json::{Value, json};

use super::keys::KeyDistribution;
use super::plan::Plan;
use super::report::Report;
use super::{config, execute};
use crate::backend::{BackendOptions, Counters, LocalBackend};

async fn backend(latency: Duration) -> LocalBackend {
    LocalBackend::start_with(
        BackendOptions {
            latency,
            ..BackendOptions::default()
        },
        Counters::recording_ids(),
    )
    .await
    .unwrap()
}

async fn run(json: Value) -> (Plan, Report) {
    let Value::Object(map) = json else {
        unreachable!()
    };
    let plan = Plan::resolve(config::from_map(map).unwrap()).unwrap();
    let report = execute(&plan, std::future::pending()).await.unwrap();
    (plan, report)
}

/// The chi-square statistic's value that a true fit exceeds with probability 1e-4 (Wilson–Hilferty).
fn chi_square_critical(degrees: f64) -> f64 {
    let z = 3.719;
    let a = 2.0 / (9.0 * degrees);
    degrees * (1.0 - a + z * a.sqrt()).powi(3)
}

fn chi_square(counts: &[u64], distribution: &KeyDistribution) -> f64 {
    let n: u64 = counts.iter().sum();
    counts
        .iter()
        .enumerate()
        .map(|(k, observed)| {
            let expected = n as f64 * distribution.probability(k as u64);
            (*observed as f64 - expected).powi(2) / expected
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observed_key_frequencies_follow_each_distribution() {
    const KEYS: u64 = 40;
    const CALLS: u64 = 4000;
    for keys in [
        json!({"distribution": "uniform", "count": KEYS}),
        json!({"distribution": "zipf", "count": KEYS, "exponent": 1.1}),
        json!({"distribution": "hotset", "count": KEYS, "hot-fraction": 0.1, "hot-share": 0.8}),
    ] {
        let backend = backend(Duration::ZERO).await;
        let (plan, report) = run(json!({
            "call": "demo.v1.Catalog/GetItem", "host": backend.addr.to_string(), "insecure": true,
            "total": CALLS, "concurrency": 8, "data": {"id": "item-{{.Key}}"},
            "x-strata": {"keys": keys},
        }))
        .await;
        assert_eq!(report.tally.count, CALLS);
        assert_eq!(report.tally.errors(), 0, "{:?}", report.tally.by_error);
        let seen = backend.counters.ids_seen();
        let counts: Vec<u64> = (0..KEYS)
            .map(|k| seen.get(&format!("item-{k}")).copied().unwrap_or(0))
            .collect();
        assert_eq!(
            counts.iter().sum::<u64>(),
            CALLS,
            "only ids of the key space: {seen:?}"
        );
        let distribution = &plan.keys.as_ref().unwrap().distribution;
        let statistic = chi_square(&counts, distribution);
        let critical = chi_square_critical((KEYS - 1) as f64);
        assert!(
            statistic < critical,
            "{keys}: χ² = {statistic:.1} ≥ {critical:.1}; counts {counts:?}"
        );
        // The check has power: skewed counts do not pass for uniform ones.
        if !matches!(distribution, KeyDistribution::Uniform { .. }) {
            let against_uniform = chi_square(&counts, &KeyDistribution::uniform(KEYS));
            assert!(
                against_uniform > 10.0 * critical,
                "{keys}: χ² vs uniform only {against_uniform:.1}"
            );
        }
        backend.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_report_has_ghz_fields_and_the_cache_counts() {
    let backend = backend(Duration::ZERO).await;
    let (_, report) = run(json!({
        "host": backend.addr.to_string(), "insecure": true, "total": 300, "concurrency": 4, "name": "ghz-shape",
        "x-strata": {
            "details": true,
            "calls": [
                {"call": "demo.v1.Catalog.GetItem", "weight": 3, "data": {"id": "item-{{.RequestNumber}}"}},
                {"call": "demo.v1.Catalog/GetItem", "weight": 1, "data": {"id": "missing"}},
                {"call": "demo.v1.Catalog/ListItems", "weight": 1, "data": {"prefix": "item-1", "limit": 3}},
            ],
        },
    }))
    .await;
    let json: Value = serde_json::from_str(&report.json_text(false)).unwrap();
    for (field, is_type) in [
        ("name", Value::is_string as fn(&Value) -> bool),
        ("endReason", Value::is_string),
        ("options", Value::is_object),
        ("date", Value::is_string),
        ("count", Value::is_u64),
        ("total", Value::is_u64),
        ("average", Value::is_u64),
        ("fastest", Value::is_u64),
        ("slowest", Value::is_u64),
        ("rps", Value::is_number),
        ("errorDistribution", Value::is_object),
        ("statusCodeDistribution", Value::is_object),
        ("latencyDistribution", Value::is_array),
        ("histogram", Value::is_array),
        ("details", Value::is_array),
    ] {
        assert!(
            json.get(field).is_some_and(is_type),
            "{field}: {:?}",
            json.get(field)
        );
    }
    assert_eq!(json["count"], 300);
    assert_eq!(json["endReason"], "normal");
    assert!(json["total"].as_u64().unwrap() > json["fastest"].as_u64().unwrap());
    for entry in json["latencyDistribution"].as_array().unwrap() {
        assert!(
            entry["percentage"].is_u64() && entry["latency"].is_u64(),
            "{entry}"
        );
    }
    let histogram = json["histogram"].as_array().unwrap();
    assert_eq!(histogram.len(), 11);
    let counted: u64 = histogram.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    let ok = json["statusCodeDistribution"]["OK"].as_u64().unwrap();
    assert_eq!(counted, ok);
    for bucket in histogram {
        assert!(
            bucket["mark"].is_f64() && bucket["frequency"].is_number(),
            "{bucket}"
        );
    }
    // The NOT_FOUND share of the mix, spelled as ghz spells it.
    let not_found = json["statusCodeDistribution"]["NotFound"].as_u64().unwrap();
    assert!((30..=95).contains(&not_found), "{not_found}");
    assert_eq!(ok + not_found, 300);
    let error = json["errorDistribution"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    assert!(
        error.starts_with("rpc error: code = NotFound desc = "),
        "{error}"
    );
    assert_eq!(json["details"].as_array().unwrap().len(), 300);
    // Beyond ghz: the answers' cache results (no gateway here: none) and the mix.
    assert_eq!(json["x-strata"]["cache"]["none"], ok);
    let calls = json["x-strata"]["calls"].as_object().unwrap();
    assert!(
        calls["demo.v1.Catalog/ListItems"]["count"]
            .as_u64()
            .unwrap()
            > 20,
        "{calls:?}"
    );
    assert!(super::html::render(&report).contains("<svg"));
    backend.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_latency_includes_a_backend_stall() {
    // 200 requests/s for 3 s; the backend stalls for 1 s after 1 s. Open loop: the ~200 requests due during the
    // stall wait up to 1 s, counted from when they were due. Closed loop (ghz's model, same rate cap): the same
    // number of requests, but only the few in flight at the stall see it.
    let mut p80 = Vec::new();
    for arrival in ["open", "closed"] {
        let backend = backend(Duration::ZERO).await;
        let counters = backend.counters.clone();
        let stall = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            counters.freeze_for(Duration::from_secs(1));
        });
        let (_, report) = run(json!({
            "call": "demo.v1.Catalog/GetItem", "host": backend.addr.to_string(), "insecure": true,
            "duration": "3s", "rps": 200, "concurrency": 20, "data": {"id": "item-{{.RequestNumber}}"},
            "x-strata": {"arrival": arrival},
        }))
        .await;
        stall.await.unwrap();
        assert_eq!(
            report.tally.errors(),
            0,
            "{arrival}: {:?}",
            report.tally.by_error
        );
        assert!(
            (590..=600).contains(&report.tally.count),
            "{arrival}: {} requests",
            report.tally.count
        );
        let p99 = report.percentile(99.0);
        assert!(
            p99 >= Duration::from_millis(900),
            "{arrival}: p99 {p99:?} hides the 1 s stall"
        );
        p80.push(report.percentile(80.0));
        backend.stop();
    }
    assert!(
        p80[0] >= Duration::from_millis(250),
        "open loop p80 {:?}",
        p80[0]
    );
    assert!(
        p80[1] < Duration::from_millis(50),
        "closed loop p80 {:?}",
        p80[1]
    );
}
