//! A run configuration checked and resolved into what the run does: defaults applied (ghz's), every inconsistency
//! reported with the key it concerns, before any connection is made.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::calls;
pub use super::calls::{CallSpec, Payload};
use super::config::{KeysConfig, RunConfig, XStrata};
use super::keys::KeyDistribution;
use super::options;
use super::schedule::Schedule;
use super::template::Templating;
use super::transport::{self, Transport};
use super::workers::{self, Workers};

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
    /// Ask the server (reflection v1, else v1alpha), sending this metadata with the question.
    Reflection(BTreeMap<String, String>),
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

/// Report formats, ghz's eight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A human table.
    Summary,
    /// Every answer: `duration (ms),status,error`.
    Csv,
    /// ghz's JSON report, one line.
    Json,
    /// ghz's JSON report, indented.
    Pretty,
    /// One self-contained HTML page.
    Html,
    /// One InfluxDB line for the run (`ghz_run`).
    InfluxSummary,
    /// One InfluxDB line per answer (`ghz_detail`).
    InfluxDetails,
    /// Prometheus text exposition of the run's figures.
    Prometheus,
}

impl Format {
    /// Every format, with its name.
    pub const ALL: [(&'static str, Format); 8] = [
        ("summary", Format::Summary),
        ("csv", Format::Csv),
        ("json", Format::Json),
        ("pretty", Format::Pretty),
        ("html", Format::Html),
        ("influx-summary", Format::InfluxSummary),
        ("influx-details", Format::InfluxDetails),
        ("prometheus", Format::Prometheus),
    ];
}

/// What becomes of the calls in flight when the run's duration ends (`duration-stop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationStop {
    /// Cancel them; they are reported, as errors.
    Close,
    /// Wait for their answers and report them.
    Wait,
    /// Cancel them and leave them out of the report.
    Ignore,
}

/// How streaming calls are shaped (`stream-*`).
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamShape {
    /// Pause between the messages a client stream sends.
    pub interval: Option<Duration>,
    /// Close each streaming call after this long.
    pub call_duration: Option<Duration>,
    /// Close each streaming call after this many messages.
    pub call_count: Option<u64>,
    /// Render each message of a client stream when it is sent.
    pub dynamic_messages: bool,
}

/// What a run does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where and how to connect.
    pub transport: Transport,
    /// Where the descriptors come from.
    pub descriptors: Descriptors,
    /// The calls and their weights.
    pub calls: Vec<CallSpec>,
    /// How data and metadata are templated.
    pub templating: Templating,
    /// Stop after this many requests.
    pub total: Option<u64>,
    /// Stop sending after this long.
    pub duration: Option<Duration>,
    /// What becomes of the calls in flight at the end of `duration`.
    pub duration_stop: DurationStop,
    /// Workers.
    pub workers: Workers,
    /// A worker does not wait for an answer before its next request.
    pub asynchronous: bool,
    /// Deadline of each call (none if `timeout` is 0).
    pub timeout: Option<Duration>,
    /// How requests are spaced.
    pub pacing: Pacing,
    /// How streaming calls are shaped.
    pub streams: StreamShape,
    /// Keys inserted into requests, if any.
    pub keys: Option<KeySpace>,
    /// Report format.
    pub format: Format,
    /// Report destination (standard output if none).
    pub output: Option<PathBuf>,
    /// Answers left out of the report.
    pub skip_first: u64,
    /// Non-OK answers count in the latency figures.
    pub count_errors: bool,
    /// Keep every answer for the report's `details`.
    pub details: bool,
    /// Threads of the client runtime (every CPU if none).
    pub cpus: Option<usize>,
    /// Where the debug log goes.
    pub debug: Option<PathBuf>,
    /// The run's name.
    pub name: Option<String>,
    /// Labels carried into the report.
    pub tags: BTreeMap<String, String>,
    /// The run's options as ghz's report records them.
    pub options: Value,
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
        let calls = calls::resolve(&config, &x, &mut problems);

        let descriptors = descriptors(&config);

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
        let workers = workers::resolve(&config, concurrency, &mut problems);
        if let Workers::Fixed(c) = workers
            && connections > c as u64
        {
            problems.push(format!(
                "connections: {connections} is more than the {c} workers (concurrency)"
            ));
        }
        // ghz: max-duration bounds a run of `total` requests; duration alone replaces `total`.
        let nonzero = |d: Option<Duration>| d.filter(|d| !d.is_zero());
        let (total, duration) = match (nonzero(config.max_duration), nonzero(config.duration)) {
            (Some(max), _) => (Some(total), Some(max)),
            (None, Some(duration)) => (None, Some(duration)),
            (None, None) => (Some(total), None),
        };
        if let (Some(total), Some(skip)) = (total, config.skip_first)
            && skip > total
        {
            problems.push(format!(
                "skipFirst: {skip} is more than the {total} requests run"
            ));
        }
        // ghz reads it case-insensitively.
        let duration_stop = match config
            .duration_stop
            .as_deref()
            .unwrap_or("close")
            .to_ascii_lowercase()
            .as_str()
        {
            "close" => DurationStop::Close,
            "wait" => DurationStop::Wait,
            "ignore" => DurationStop::Ignore,
            other => {
                problems.push(format!(
                    "duration-stop: `{other}` is not one of close, wait, ignore"
                ));
                DurationStop::Close
            }
        };

        let pacing = pacing(&config, &x, &mut problems);
        let keys = keys(&x, &calls, &mut problems);
        let format = format(&config, &mut problems);
        let transport = transport::resolve(&config, host, connections, &mut problems);
        let streams = StreamShape {
            interval: nonzero(config.stream_interval),
            call_duration: nonzero(config.stream_call_duration),
            call_count: config.stream_call_count.filter(|n| *n > 0),
            dynamic_messages: config.stream_dynamic_messages,
        };
        if streams.dynamic_messages && config.binary_file.is_some() {
            problems.push("stream-dynamic-messages: cannot be used with binary data".to_owned());
        }
        let cpus = match config.cpus {
            Some(0) => {
                problems.push("cpus: must be at least 1".to_owned());
                None
            }
            other => other.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        };
        if !problems.is_empty() {
            anyhow::bail!("the run config has problems:\n  {}", problems.join("\n  "));
        }
        let timeout = match config.timeout {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => Some(Duration::from_secs(20)),
        };
        let options = options::ghz_options(
            &config,
            &calls,
            &transport,
            total,
            concurrency,
            timeout,
            cpus,
        );
        Ok(Self {
            transport,
            descriptors,
            calls,
            templating: Templating {
                data: !config.disable_template_data,
                functions: !config.disable_template_functions,
            },
            total,
            duration,
            duration_stop,
            workers,
            asynchronous: config.r#async,
            timeout,
            pacing,
            streams,
            keys,
            format,
            output: config.output.clone(),
            skip_first: config.skip_first.unwrap_or(0),
            count_errors: config.count_errors,
            details: x.details.unwrap_or(true),
            cpus,
            debug: config.debug.clone(),
            name: config.name.clone(),
            tags: config.tags.clone().unwrap_or_default(),
            options,
        })
    }
}

/// Where the services' descriptors come from: a `.proto`, a protoset, or the server's reflection.
fn descriptors(config: &RunConfig) -> Descriptors {
    // ghz: "-proto takes precedence" over -protoset.
    match (&config.proto, &config.protoset) {
        (Some(file), _) => Descriptors::Proto {
            file: file.clone(),
            import_paths: config.import_paths.clone(),
        },
        (None, Some(set)) => Descriptors::Protoset(set.clone()),
        (None, None) => {
            Descriptors::Reflection(config.reflect_metadata.clone().unwrap_or_default())
        }
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
            matches!(&c.payload, Payload::Json(text) if text.contains(&space.placeholder))
                || c.metadata
                    .iter()
                    .flat_map(|m| m.values())
                    .any(|v| v.contains(&space.placeholder))
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
    let name = config.format.as_deref().unwrap_or("summary");
    match Format::ALL.iter().find(|(n, _)| *n == name) {
        Some((_, format)) => *format,
        None => {
            let names: Vec<&str> = Format::ALL.iter().map(|(n, _)| *n).collect();
            problems.push(format!(
                "format: `{name}` is not one of {}",
                names.join(", ")
            ));
            Format::Summary
        }
    }
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
        assert_eq!(p.total, Some(200));
        assert_eq!(p.workers, Workers::Fixed(50));
        assert_eq!(p.transport.connections, 1);
        assert_eq!(p.timeout, Some(Duration::from_secs(20)));
        assert_eq!(p.duration_stop, DurationStop::Close);
        assert_eq!(p.calls[0].method, "demo.v1.Catalog/GetItem");
        assert!(matches!(p.pacing, Pacing::AsFastAsAnswered));
        assert!(matches!(p.descriptors, Descriptors::Reflection(_)));
        assert!(p.details);
        assert_eq!(p.options["total"], 200);
        assert_eq!(p.options["dial-timeout"], 10_000_000_000u64);
        assert_eq!(p.options["load-schedule"], "const");
        // ghz's rates are integers, and written as such.
        assert_eq!(p.options["load-start"].to_string(), "0");
    }

    #[test]
    fn every_problem_is_named() {
        let err = plan(serde_json::json!({
            "call": "nomethod", "concurrency": 0, "load-schedule": "step", "load-start": 5,
            "x-strata": {"arrival": "open", "keys": {"distribution": "pareto", "count": 3}},
            "format": "xml", "duration-stop": "later", "lb-strategy": "random",
            "max-recv-message-size": "lots", "concurrency-schedule": "step", "cert": "c.pem"
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
            "duration-stop:",
            "lb-strategy:",
            "max-recv-message-size:",
            "concurrency-step-duration:",
            "cert, key:",
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

    #[test]
    fn skip_tls_cannot_balance() {
        let err = plan(
            serde_json::json!({"call": "a.B/C", "host": "h:1", "skipTLS": true,
                                          "lb-strategy": "round_robin"}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("lb-strategy: round_robin with skipTLS"),
            "{err}"
        );
    }

    #[test]
    fn max_duration_bounds_total_and_duration_replaces_it() {
        // As ghz's own testdata/config.json: both given, max-duration wins and total still counts.
        let p = plan(
            serde_json::json!({"call": "a.B/C", "host": "h:1", "total": 5000,
                                        "max-duration": "7s", "duration": "12s"}),
        )
        .unwrap();
        assert_eq!(
            (p.total, p.duration),
            (Some(5000), Some(Duration::from_secs(7)))
        );
        let p = plan(
            serde_json::json!({"call": "a.B/C", "host": "h:1", "total": 5000, "duration": "12s"}),
        )
        .unwrap();
        assert_eq!((p.total, p.duration), (None, Some(Duration::from_secs(12))));
        assert_eq!(p.options["total"], 2_147_483_647u64);
        assert_eq!(p.options["duration"], 12_000_000_000u64);
    }

    #[test]
    fn concurrency_schedules_as_ghz_defines_them() {
        let p = plan(
            serde_json::json!({"call": "a.B/C", "host": "h:1", "concurrency-schedule": "step",
            "concurrency-start": 2, "concurrency-step": 3, "concurrency-step-duration": "1s",
            "concurrency-end": 10}),
        )
        .unwrap();
        let at = |s: f64| p.workers.at(Duration::from_secs_f64(s));
        assert_eq!(
            (at(0.0), at(0.9), at(1.5), at(2.0), at(60.0)),
            (2, 2, 5, 8, 10)
        );
        assert_eq!(p.workers.most(None), 10);
        let p = plan(
            serde_json::json!({"call": "a.B/C", "host": "h:1", "concurrency-schedule": "line",
            "concurrency-start": 5, "concurrency-step": -1, "concurrency-end": 2}),
        )
        .unwrap();
        let at = |s: f64| p.workers.at(Duration::from_secs_f64(s));
        assert_eq!((at(0.0), at(2.0), at(30.0)), (5, 3, 2));
        assert_eq!(p.workers.most(None), 5);
    }
}
