//! The `options` object of ghz's JSON report: what the run was told, under ghz's names and with its defaults
//! (durations in nanoseconds, `total` 2147483647 when a duration replaces it), as ghz's tools read it back.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::calls::{CallSpec, Payload};
use super::config::RunConfig;
use super::transport::Transport;

/// The run's options as ghz's JSON report writes them (`options`): its names, its defaults, durations in
/// nanoseconds, `total` 2147483647 when a duration replaces it.
/// `calls` and the other arguments are what the plan resolved from `config` (its data files already read, its
/// defaults applied).
pub fn ghz_options(
    config: &RunConfig,
    calls: &[CallSpec],
    transport: &Transport,
    total: Option<u64>,
    concurrency: u64,
    timeout: Option<Duration>,
    cpus: Option<usize>,
) -> Value {
    let ns =
        |d: Option<Duration>| u64::try_from(d.unwrap_or_default().as_nanos()).unwrap_or(u64::MAX);
    let mut options = serde_json::Map::new();
    let mut put = |key: &str, value: Value| {
        options.insert(key.to_owned(), value);
    };
    let text = |v: &Option<String>| v.clone().filter(|t| !t.is_empty());
    let path = |v: &Option<PathBuf>| v.as_ref().map(|p| p.display().to_string());
    let omit_empty = |put: &mut dyn FnMut(&str, Value), key: &str, value: Option<String>| {
        if let Some(value) = value {
            put(key, Value::String(value));
        }
    };
    omit_empty(&mut put, "call", text(&config.call));
    omit_empty(&mut put, "host", Some(transport.host.clone()));
    omit_empty(&mut put, "proto", path(&config.proto));
    omit_empty(&mut put, "protoset", path(&config.protoset));
    if !config.import_paths.is_empty() {
        put(
            "import-paths",
            config
                .import_paths
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        );
    }
    if config.enable_compression {
        put("enable-compression", Value::Bool(true));
    }
    omit_empty(&mut put, "cacert", path(&config.cacert));
    omit_empty(&mut put, "cert", path(&config.cert));
    omit_empty(&mut put, "key", path(&config.key));
    omit_empty(&mut put, "cname", text(&config.cname));
    if config.skip_tls {
        put("skipTLS", Value::Bool(true));
    }
    put("insecure", Value::Bool(config.insecure));
    omit_empty(&mut put, "authority", text(&config.authority));
    if let Some(rps) = config.rps.filter(|r| *r > 0.0) {
        put("rps", rate(rps));
    }
    put(
        "load-schedule",
        Value::String(
            config
                .load_schedule
                .clone()
                .unwrap_or_else(|| "const".into()),
        ),
    );
    put("load-start", rate(config.load_start.unwrap_or(0.0)));
    put("load-end", rate(config.load_end.unwrap_or(0.0)));
    put("load-step", rate(config.load_step.unwrap_or(0.0)));
    put(
        "load-step-duration",
        Value::from(ns(config.load_step_duration)),
    );
    put(
        "load-max-duration",
        Value::from(ns(config.load_max_duration)),
    );
    put("concurrency", Value::from(concurrency));
    put(
        "concurrency-schedule",
        Value::String(
            config
                .concurrency_schedule
                .clone()
                .unwrap_or_else(|| "const".into()),
        ),
    );
    put(
        "concurrency-start",
        Value::from(config.concurrency_start.unwrap_or(1)),
    );
    put(
        "concurrency-end",
        Value::from(config.concurrency_end.unwrap_or(0)),
    );
    put(
        "concurrency-step",
        Value::from(config.concurrency_step.unwrap_or(0)),
    );
    put(
        "concurrency-step-duration",
        Value::from(ns(config.concurrency_step_duration)),
    );
    put(
        "concurrency-max-duration",
        Value::from(ns(config.concurrency_max_duration)),
    );
    put("total", Value::from(total.unwrap_or(2_147_483_647)));
    // The names ghz wrote before its options took their flags' names (ghz-web's stored reports use them).
    put("n", Value::from(total.unwrap_or(2_147_483_647)));
    put("c", Value::from(concurrency));
    if config.r#async {
        put("async", Value::Bool(true));
    }
    put("connections", Value::from(transport.connections));
    let duration = config
        .max_duration
        .filter(|d| !d.is_zero())
        .or(config.duration);
    if duration.is_some_and(|d| !d.is_zero()) {
        put("duration", Value::from(ns(duration)));
    }
    put("timeout", Value::from(ns(timeout)));
    let dial_timeout = Value::from(ns(Some(transport.connect_timeout)));
    put("dial-timeout", dial_timeout.clone());
    put("dialTimeout", dial_timeout);
    if let Some(keepalive) = transport.keepalive {
        put("keepalive", Value::from(ns(Some(keepalive))));
    }
    // ghz records the data and metadata it read, from the command line or a file; a mix of calls has neither.
    let single = calls.first().filter(|_| config.call.is_some());
    if let Some(Payload::Json(text)) = single.map(|c| &c.payload)
        && let Ok(data) = serde_json::from_str::<Value>(text)
    {
        put("data", data);
    }
    put("binary", Value::Bool(config.binary_file.is_some()));
    match single.map(|c| c.metadata.as_slice()) {
        Some([]) | None => {}
        Some([one]) => put("metadata", serde_json::json!(one)),
        Some(many) => put("metadata", serde_json::json!(many)),
    }
    put(
        "CPUs",
        Value::from(
            cpus.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        ),
    );
    omit_empty(&mut put, "name", text(&config.name));
    if let Some(skip) = config.skip_first.filter(|s| *s > 0) {
        put("skipFirst", Value::from(skip));
    }
    if config.count_errors {
        put("count-errors", Value::Bool(true));
    }
    Value::Object(options)
}

/// A rate as ghz writes it: an integer (ghz's rates are integers), unless it was given with a fraction.
fn rate(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 9e15 {
        Value::from(value as i64)
    } else {
        serde_json::json!(value)
    }
}
