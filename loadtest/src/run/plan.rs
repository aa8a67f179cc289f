//! A run configuration checked and resolved into what the run does: defaults applied (ghz's), every inconsistency
//! reported with the key it concerns, before any connection is made.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::config::{KeysConfig, RunConfig, XStrata};
use super::keys::KeyDistribution;
use super::schedule::Schedule;

/// How requests are spaced in time.
#[derive(Debug, Clone)]
pub enum Pacing {
    /// Each worker sends its next request as soon as its answer arrives (closed loop).
    AsFastAsAnswered,
    /// Requests are due at times the schedule sets.
    Scheduled {
        schedule: Schedule,
        /// Latency counts from the due time (open loop: a stall shows as latency) rather than from the send
        /// (closed loop with a rate cap, as ghz measures).
        open_loop: bool,
    },
}

/// Where the method descriptors come from.
#[derive(Debug, Clone)]
pub enum Descriptors {
    /// Compile this `.proto` with these import paths.
    Proto {
        file: PathBuf,
        import_paths: Vec<PathBuf>,
    },
    /// Read this `FileDescriptorSet`.
    Protoset(PathBuf),
    /// Ask the server (reflection v1).
    Reflection,
}

/// One call of the run, before its messages are built.
#[derive(Debug, Clone)]
pub struct CallSpec {
    /// `package.Service/Method`.
    pub method: String,
    /// Relative frequency.
    pub weight: u32,
    /// The request message(s) as JSON.
    pub data: Value,
    /// Request metadata.
    pub metadata: BTreeMap<String, String>,
}

/// The key space requests draw from.
#[derive(Debug, Clone)]
pub struct KeySpace {
    /// Popularity of the keys.
    pub distribution: KeyDistribution,
    /// The text replaced by the key.
    pub placeholder: String,
    /// Seed of the sequence.
    pub seed: u64,
}

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A human table.
    Summary,
    /// ghz's JSON report, one line.
    Json,
    /// ghz's JSON report, indented.
    Pretty,
    /// One self-contained HTML page.
    Html,
}

/// What a run does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `host:port`.
    pub host: String,
    /// TLS, unless `insecure`.
    pub tls: Option<Tls>,
    /// Where the descriptors come from.
    pub descriptors: Descriptors,
    /// The calls and their weights.
    pub calls: Vec<CallSpec>,
    /// Stop after this many requests (when no `duration`).
    pub total: Option<u64>,
    /// Stop sending after this long.
    pub duration: Option<Duration>,
    /// Workers.
    pub concurrency: usize,
    /// Connections.
    pub connections: usize,
    /// Deadline of each call.
    pub timeout: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How requests are spaced.
    pub pacing: Pacing,
    /// Keys inserted into requests, if any.
    pub keys: Option<KeySpace>,
    /// Report format.
    pub format: Format,
    /// Report destination (standard output if none).
    pub output: Option<PathBuf>,
    /// Answers left out of the report.
    pub skip_first: u64,
    /// Keep every answer for the report's `details`.
    pub details: bool,
    /// The run's name.
    pub name: Option<String>,
    /// Labels carried into the report.
    pub tags: BTreeMap<String, String>,
}

/// TLS settings.
#[derive(Debug, Clone)]
pub struct Tls {
    /// CA certificate (PEM), or the system roots.
    pub cacert: Option<PathBuf>,
    /// Name to verify.
    pub cname: Option<String>,
}

impl Plan {
    /// Checks `config` and resolves it; the error lists every problem, each naming its key.
    pub fn resolve(config: RunConfig) -> anyhow::Result<Self> {
        let mut problems = Vec::new();
        let x = config.x_strata.clone().unwrap_or_default();

        let host = config.host.clone().unwrap_or_default();
        if host.is_empty() {
            problems.push("host: required (host:port of the server)".to_owned());
        }
        let data = data(&config, &mut problems);
        let calls = calls(&config, &x, data, &mut problems);

        let descriptors = descriptors(&config, &mut problems);

        let positive =
            |key: &str, value: Option<u64>, default: u64, problems: &mut Vec<String>| match value {
                Some(0) => {
                    problems.push(format!("{key}: must be at least 1"));
                    default
                }
                Some(v) => v,
                None => default,
            };
        let concurrency = positive("concurrency", config.concurrency, 50, &mut problems);
        let connections = positive("connections", config.connections, 1, &mut problems);
        let total = positive("total", config.total, 200, &mut problems);
        if config.duration.is_some_and(|d| d.is_zero()) {
            problems.push("duration: must be more than 0".to_owned());
        }

        let pacing = pacing(&config, &x, &mut problems);

        let keys = keys(&x, &calls, &mut problems);

        let format = format(&config, &mut problems);
        if config.insecure && (config.cname.is_some() || config.cacert.is_some()) {
            problems.push("cacert, cname: only apply with TLS; leave insecure out".to_owned());
        }
        if !problems.is_empty() {
            anyhow::bail!("the run config has problems:\n  {}", problems.join("\n  "));
        }
        Ok(Self {
            host,
            tls: (!config.insecure).then(|| Tls {
                cacert: config.cacert.clone(),
                cname: config.cname.clone(),
            }),
            descriptors,
            calls,
            total: config.duration.is_none().then_some(total),
            duration: config.duration,
            concurrency: usize::try_from(concurrency).unwrap_or(usize::MAX),
            connections: usize::try_from(connections).unwrap_or(usize::MAX),
            timeout: config.timeout.unwrap_or(Duration::from_secs(20)),
            connect_timeout: config.connect_timeout.unwrap_or(Duration::from_secs(10)),
            pacing,
            keys,
            format,
            output: config.output.clone(),
            skip_first: config.skip_first.unwrap_or(0),
            details: x.details,
            name: config.name.clone(),
            tags: config.tags.clone().unwrap_or_default(),
        })
    }
}

/// The request data: inline, or read from `data-file`.
fn data(config: &RunConfig, problems: &mut Vec<String>) -> Option<Value> {
    match (&config.data, &config.data_file) {
        (Some(_), Some(_)) => {
            problems.push("data, data-file: give one, not both".to_owned());
            None
        }
        (Some(data), None) => Some(data.clone()),
        (None, Some(path)) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        {
            Ok(data) => Some(data),
            Err(e) => {
                problems.push(format!("data-file: {}: {e}", path.display()));
                None
            }
        },
        (None, None) => None,
    }
}

/// The calls to make: `call` with `data`, or the weighted `x-strata.calls`; each method normalized and its data checked.
fn calls(
    config: &RunConfig,
    x: &XStrata,
    data: Option<Value>,
    problems: &mut Vec<String>,
) -> Vec<CallSpec> {
    let metadata = config.metadata.clone().unwrap_or_default();
    let mut calls = if x.calls.is_empty() {
        match &config.call {
            Some(call) => vec![CallSpec {
                method: call.clone(),
                weight: 1,
                data: data.unwrap_or_else(|| Value::Object(Default::default())),
                metadata: metadata.clone(),
            }],
            None => {
                problems.push("call: required (package.Service/Method)".to_owned());
                Vec::new()
            }
        }
    } else {
        if config.call.is_some() || data.is_some() {
            problems.push(
            "x-strata.calls: replaces call and data; leave those out (metadata applies to every call)"
                .to_owned(),
        );
        }
        x.calls
            .iter()
            .map(|c| CallSpec {
                method: c.call.clone(),
                weight: c.weight.unwrap_or(1),
                data: c
                    .data
                    .clone()
                    .unwrap_or_else(|| Value::Object(Default::default())),
                metadata: metadata
                    .iter()
                    .chain(c.metadata.iter().flatten())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            })
            .collect()
    };
    for (i, call) in calls.iter_mut().enumerate() {
        let at = if x.calls.is_empty() {
            "call".to_owned()
        } else {
            format!("x-strata.calls[{i}]")
        };
        match normalize_method(&call.method) {
            Some(method) => call.method = method,
            None => problems.push(format!(
                "{at}: `{}` is not package.Service/Method",
                call.method
            )),
        }
        if !matches!(&call.data, Value::Object(_))
            && !matches!(&call.data, Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object))
        {
            problems.push(format!(
                "{at}: data must be an object or a non-empty array of objects"
            ));
        }
    }
    if !x.calls.is_empty() && x.calls.iter().all(|c| c.weight == Some(0)) {
        problems.push("x-strata.calls: every weight is 0".to_owned());
    }
    calls
}

/// Where the services' descriptors come from: a `.proto`, a protoset, or the server's reflection.
fn descriptors(config: &RunConfig, problems: &mut Vec<String>) -> Descriptors {
    match (&config.proto, &config.protoset) {
        (Some(_), Some(_)) => {
            problems.push("proto, protoset: give one, not both".to_owned());
            Descriptors::Reflection
        }
        (Some(file), None) => Descriptors::Proto {
            file: file.clone(),
            import_paths: config.import_paths.clone(),
        },
        (None, Some(set)) => Descriptors::Protoset(set.clone()),
        (None, None) => Descriptors::Reflection,
    }
}

/// How calls are paced: as fast as answered, or on a schedule (closed or open loop).
fn pacing(config: &RunConfig, x: &XStrata, problems: &mut Vec<String>) -> Pacing {
    let open_loop = match x.arrival.as_deref() {
        None | Some("closed") => false,
        Some("open") => true,
        Some(other) => {
            problems.push(format!(
                "x-strata.arrival: `{other}` is neither closed nor open"
            ));
            false
        }
    };
    let schedule = schedule(config, problems);
    match schedule {
        Some(schedule) => Pacing::Scheduled {
            schedule,
            open_loop,
        },
        None => {
            if open_loop {
                problems.push(
                    "x-strata.arrival: open needs a rate (rps, or a step/line load-schedule)"
                        .to_owned(),
                );
            }
            Pacing::AsFastAsAnswered
        }
    }
}

/// The key space `x-strata.keys` draws from, which some data string or metadata value must use.
fn keys(x: &XStrata, calls: &[CallSpec], problems: &mut Vec<String>) -> Option<KeySpace> {
    let keys = x.keys.as_ref().and_then(|k| match key_space(k) {
        Ok(space) => Some(space),
        Err(e) => {
            problems.push(format!("x-strata.keys.{e}"));
            None
        }
    });
    if let Some(space) = &keys {
        let used = calls.iter().any(|c| {
            c.data.to_string().contains(&space.placeholder)
                || c.metadata.values().any(|v| v.contains(&space.placeholder))
        });
        if !used {
            problems.push(format!(
                "x-strata.keys: no data string or metadata value contains the placeholder `{}`",
                space.placeholder
            ));
        }
    }
    keys
}

/// The report format.
fn format(config: &RunConfig, problems: &mut Vec<String>) -> Format {
    match config.format.as_deref().unwrap_or("summary") {
        "summary" => Format::Summary,
        "json" => Format::Json,
        "pretty" => Format::Pretty,
        "html" => Format::Html,
        other => {
            problems.push(format!(
                "format: `{other}` is not one of summary, json, pretty, html"
            ));
            Format::Summary
        }
    }
}

/// `package.Service/Method` or `package.Service.Method` as `package.Service/Method`.
pub fn normalize_method(call: &str) -> Option<String> {
    let call = call.trim_start_matches('/');
    let (service, method) = call.split_once('/').or_else(|| call.rsplit_once('.'))?;
    (!service.is_empty() && !method.is_empty() && !method.contains(['/', '.']))
        .then(|| format!("{service}/{method}"))
}

fn schedule(config: &RunConfig, problems: &mut Vec<String>) -> Option<Schedule> {
    let rate = |key: &str, value: Option<f64>, problems: &mut Vec<String>| match value {
        Some(v) if !v.is_finite() || v < 0.0 => {
            problems.push(format!("{key}: must be a rate ≥ 0, got {v}"));
            None
        }
        other => other,
    };
    let rps = rate("rps", config.rps, problems).filter(|r| *r > 0.0);
    let start = rate("load-start", config.load_start, problems);
    let end = rate("load-end", config.load_end, problems);
    match config.load_schedule.as_deref().unwrap_or("const") {
        "const" => rps.map(Schedule::constant),
        kind @ ("step" | "line") => {
            let Some(start) = start else {
                problems.push(format!("load-start: required by load-schedule {kind}"));
                return None;
            };
            let Some(step) = config.load_step.filter(|s| s.is_finite()) else {
                problems.push(format!("load-step: required by load-schedule {kind}"));
                return None;
            };
            if kind == "line" {
                return Some(Schedule::line(start, step, end, config.load_max_duration));
            }
            let Some(width) = config.load_step_duration.filter(|d| !d.is_zero()) else {
                problems.push("load-step-duration: required by load-schedule step".to_owned());
                return None;
            };
            Some(Schedule::step(
                start,
                step,
                width,
                end,
                config.load_max_duration,
            ))
        }
        other => {
            problems.push(format!(
                "load-schedule: `{other}` is not one of const, step, line"
            ));
            None
        }
    }
}

fn key_space(k: &KeysConfig) -> Result<KeySpace, String> {
    if k.count == 0 {
        return Err("count: must be at least 1".to_owned());
    }
    let fraction = |key: &str, v: Option<f64>, default: f64| {
        let v = v.unwrap_or(default);
        if (0.0..=1.0).contains(&v) {
            Ok(v)
        } else {
            Err(format!("{key}: must be between 0 and 1, got {v}"))
        }
    };
    let distribution = match k.distribution.as_str() {
        "uniform" => KeyDistribution::uniform(k.count),
        "zipf" => {
            let exponent = k.exponent.unwrap_or(1.0);
            if !(exponent.is_finite() && exponent > 0.0) {
                return Err(format!("exponent: must be more than 0, got {exponent}"));
            }
            if k.count > 50_000_000 {
                return Err(
                    "count: at most 50 000 000 for zipf (its table is held in memory)".to_owned(),
                );
            }
            KeyDistribution::zipf(k.count, exponent)
        }
        "hotset" => KeyDistribution::hotset(
            k.count,
            fraction("hot-fraction", k.hot_fraction, 0.1)?,
            fraction("hot-share", k.hot_share, 0.9)?,
        ),
        other => {
            return Err(format!(
                "distribution: `{other}` is not one of uniform, zipf, hotset"
            ));
        }
    };
    let placeholder = k
        .placeholder
        .clone()
        .unwrap_or_else(|| "{{.Key}}".to_owned());
    if placeholder.is_empty() {
        return Err("placeholder: must not be empty".to_owned());
    }
    Ok(KeySpace {
        distribution,
        placeholder,
        seed: k.seed.unwrap_or(0x5eed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::config::from_map;

    fn plan(json: serde_json::Value) -> anyhow::Result<Plan> {
        let Value::Object(map) = json else {
            unreachable!()
        };
        Plan::resolve(from_map(map)?)
    }

    #[test]
    fn ghz_defaults() {
        let p = plan(
            serde_json::json!({"call": "demo.v1.Catalog.GetItem", "host": "h:1", "insecure": true}),
        )
        .unwrap();
        assert_eq!((p.total, p.concurrency, p.connections), (Some(200), 50, 1));
        assert_eq!(p.timeout, Duration::from_secs(20));
        assert_eq!(p.calls[0].method, "demo.v1.Catalog/GetItem");
        assert!(matches!(p.pacing, Pacing::AsFastAsAnswered));
        assert!(matches!(p.descriptors, Descriptors::Reflection));
    }

    #[test]
    fn every_problem_is_named() {
        let err = plan(serde_json::json!({
            "call": "nomethod", "concurrency": 0, "load-schedule": "step", "load-start": 5,
            "x-strata": {"arrival": "open", "keys": {"distribution": "pareto", "count": 3}},
            "format": "csv"
        }))
        .unwrap_err()
        .to_string();
        for needle in [
            "host:",
            "call: `nomethod`",
            "concurrency:",
            "load-step:",
            "x-strata.arrival:",
            "x-strata.keys.distribution:",
            "format:",
        ] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
    }

    #[test]
    fn keys_need_their_placeholder() {
        let err = plan(serde_json::json!({
            "call": "a.B/C", "host": "h:1", "data": {"id": "item-1"},
            "x-strata": {"keys": {"distribution": "uniform", "count": 3}}
        }))
        .unwrap_err()
        .to_string();
        assert!(err.contains("placeholder `{{.Key}}`"), "{err}");
    }
}
