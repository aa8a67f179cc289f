//! The ghz-compatible run configuration: a JSON or TOML file whose keys are ghz's long flag names, overlaid with the
//! same names given as command-line flags, plus Strata's own `x-strata` section.
//!
//! Both sources become one JSON object before it is read, so a key is checked the same way wherever it came from and
//! every error names the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::go_units;

/// Everything a run is told, before it is checked (see [`crate::run::plan`]): every key of ghz's config, under
/// ghz's names, plus `x-strata`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RunConfig {
    /// Fully qualified method: `package.Service/Method` or `package.Service.Method`.
    pub call: Option<String>,
    /// `host:port` of the server.
    pub host: Option<String>,
    /// A `.proto` file describing the call.
    pub proto: Option<PathBuf>,
    /// Directories `proto` imports are looked up in (the proto's own directory is always searched).
    #[serde(default)]
    pub import_paths: Vec<PathBuf>,
    /// A compiled `FileDescriptorSet` describing the call.
    pub protoset: Option<PathBuf>,
    /// Plaintext HTTP/2 (no TLS).
    #[serde(default)]
    pub insecure: bool,
    /// PEM file of the certificate authority for TLS (otherwise the system's roots).
    pub cacert: Option<PathBuf>,
    /// PEM file of the client's certificate, presented to the server (with `key`).
    pub cert: Option<PathBuf>,
    /// PEM file of the client's private key (with `cert`).
    pub key: Option<PathBuf>,
    /// Server name to verify in the certificate (otherwise the host's).
    pub cname: Option<String>,
    /// Do not verify the server's certificate chain and name.
    #[serde(default, rename = "skipTLS")]
    pub skip_tls: bool,
    /// The `:authority` pseudo-header to send (otherwise `host`).
    pub authority: Option<String>,
    /// Requests to send (ignored when `duration` is set without `max-duration`).
    pub total: Option<u64>,
    /// Send each worker's next request without waiting for the answer to the last (with `rps`: at the rate).
    #[serde(default)]
    pub r#async: bool,
    /// Workers: calls in flight at once (`const` concurrency schedule).
    pub concurrency: Option<u64>,
    /// `const`, `step` or `line`: how the number of workers changes over the run.
    pub concurrency_schedule: Option<String>,
    /// Workers at the start of a `step` or `line` concurrency schedule.
    pub concurrency_start: Option<u64>,
    /// Workers at which a `step` or `line` concurrency schedule stops changing (0: no end).
    pub concurrency_end: Option<u64>,
    /// Workers added per step (`step`) or per second (`line`); negative removes.
    pub concurrency_step: Option<i64>,
    /// Length of one step of a `step` concurrency schedule.
    #[serde(default, deserialize_with = "duration")]
    pub concurrency_step_duration: Option<Duration>,
    /// After this long the concurrency schedule holds the number of workers.
    #[serde(default, deserialize_with = "duration")]
    pub concurrency_max_duration: Option<Duration>,
    /// HTTP/2 connections the workers share.
    pub connections: Option<u64>,
    /// How long to send requests (`total` is then ignored, unless `max-duration` is set).
    #[serde(default, deserialize_with = "duration")]
    pub duration: Option<Duration>,
    /// `close`, `wait` or `ignore`: what becomes of calls in flight when the duration ends.
    pub duration_stop: Option<String>,
    /// The run stops at `total` requests or after this long, whichever comes first.
    #[serde(default, deserialize_with = "duration")]
    pub max_duration: Option<Duration>,
    /// Requests per second, all workers together (0 or absent: as fast as answers come).
    pub rps: Option<f64>,
    /// Deadline of each call (`0`: none).
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    /// How long connecting may take.
    #[serde(default, deserialize_with = "duration")]
    pub connect_timeout: Option<Duration>,
    /// HTTP/2 keepalive ping interval (0 or absent: none).
    #[serde(default, deserialize_with = "duration")]
    pub keepalive: Option<Duration>,
    /// The request message as JSON: an object, or an array used round-robin (a client stream sends the array).
    pub data: Option<Value>,
    /// A file holding `data` (a template: it need only be JSON once rendered).
    pub data_file: Option<PathBuf>,
    /// A file holding the request as a serialized message, or several count-delimited ones.
    pub binary_file: Option<PathBuf>,
    /// Request metadata: an object of strings, or an array of such objects used round-robin.
    pub metadata: Option<Value>,
    /// A file holding `metadata`.
    pub metadata_file: Option<PathBuf>,
    /// Pause between the messages a stream sends.
    #[serde(default, deserialize_with = "duration")]
    pub stream_interval: Option<Duration>,
    /// Close each streaming call after this long.
    #[serde(default, deserialize_with = "duration")]
    pub stream_call_duration: Option<Duration>,
    /// Close each streaming call after this many messages (sent by a client stream, received by a server stream).
    pub stream_call_count: Option<u64>,
    /// Render the data template anew for every message a stream sends.
    #[serde(default)]
    pub stream_dynamic_messages: bool,
    /// Metadata sent with the reflection request only.
    pub reflect_metadata: Option<BTreeMap<String, String>>,
    /// `summary`, `csv`, `json`, `pretty`, `html`, `influx-summary`, `influx-details` or `prometheus`.
    pub format: Option<String>,
    /// Write the report here instead of standard output.
    pub output: Option<PathBuf>,
    /// Threads of the client's runtime (default: every CPU).
    pub cpus: Option<u64>,
    /// A name for the run, carried into the report.
    pub name: Option<String>,
    /// Leave the first N answers out of the report (warm-up).
    #[serde(rename = "skipFirst")]
    pub skip_first: Option<u64>,
    /// Count non-OK answers in the latency figures too.
    #[serde(default)]
    pub count_errors: bool,
    /// Free-form labels carried into the report.
    pub tags: Option<BTreeMap<String, String>>,
    /// A file to write a debug log of the run to.
    pub debug: Option<PathBuf>,
    /// Compress requests with gzip.
    #[serde(default)]
    pub enable_compression: bool,
    /// `pick_first` or `round_robin` over the addresses `host` resolves to.
    pub lb_strategy: Option<String>,
    /// Largest answer message accepted (`4mb`, `16mib`, …).
    pub max_recv_message_size: Option<String>,
    /// Largest request message sent.
    pub max_send_message_size: Option<String>,
    /// Do not offer the template functions (`newUUID`, `randomString`, `randomInt`, …).
    #[serde(default)]
    pub disable_template_functions: bool,
    /// Send data and metadata as written, without rendering them as templates.
    #[serde(default)]
    pub disable_template_data: bool,
    /// `const`, `step` or `line`.
    pub load_schedule: Option<String>,
    /// Starting rate of a `step` or `line` schedule.
    pub load_start: Option<f64>,
    /// Rate change per `load-step-duration` (`step`) or per second (`line`).
    pub load_step: Option<f64>,
    /// The rate at which a `step` or `line` schedule stops changing.
    pub load_end: Option<f64>,
    /// How long each step of a `step` schedule lasts.
    #[serde(default, deserialize_with = "duration")]
    pub load_step_duration: Option<Duration>,
    /// After this long a `step` or `line` schedule holds its rate.
    #[serde(default, deserialize_with = "duration")]
    pub load_max_duration: Option<Duration>,
    /// What ghz cannot express.
    #[serde(rename = "x-strata")]
    pub x_strata: Option<XStrata>,
}

/// The `x-strata` section: key popularity, open-loop arrival, a weighted mix of calls.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct XStrata {
    /// Which key each request carries.
    pub keys: Option<KeysConfig>,
    /// `closed` (a worker sends its next request when the answer arrives; ghz's model) or `open` (requests are
    /// due at times set by `rps`/`load-schedule` whatever the answers do; latency counts from the due time).
    pub arrival: Option<String>,
    /// Several calls in one run, each request picking one by weight (replaces `call`/`data`/`metadata`).
    #[serde(default)]
    pub calls: Vec<CallConfig>,
    /// `false`: leave every answer's line (`details`) out of the report — ghz always keeps them, up to 1 000 000.
    pub details: Option<bool>,
}

/// `x-strata.keys`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KeysConfig {
    /// `uniform`, `zipf` or `hotset`.
    pub distribution: String,
    /// Size of the key space: keys are 0 … count-1.
    pub count: u64,
    /// Zipf exponent (default 1.0).
    pub exponent: Option<f64>,
    /// Hot set: the fraction of the keys that are hot (default 0.1).
    pub hot_fraction: Option<f64>,
    /// Hot set: the share of requests that go to hot keys (default 0.9).
    pub hot_share: Option<f64>,
    /// The text replaced by the key in `data` strings and `metadata` values (default `{{.Key}}`).
    pub placeholder: Option<String>,
    /// Seed of the key sequence, for a repeatable run.
    pub seed: Option<u64>,
}

/// One call of a weighted mix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CallConfig {
    /// Fully qualified method.
    pub call: String,
    /// Relative frequency (default 1).
    pub weight: Option<u32>,
    /// Its request message(s), as `data`.
    pub data: Option<Value>,
    /// Its metadata, on top of the top-level `metadata`.
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Reads a JSON, TOML or YAML config file (by its extension, as ghz does) into one JSON object. Relative paths in it
/// are relative to the working directory, as ghz reads them.
pub fn read_file(path: &Path) -> anyhow::Result<Map<String, Value>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let value: Value = match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => {
            let table: toml::Table = toml::from_str(&text)
                .with_context(|| format!("{} is not valid TOML", path.display()))?;
            serde_json::to_value(table)?
        }
        Some("yaml" | "yml") => serde_yaml::from_str(&text)
            .with_context(|| format!("{} is not valid YAML", path.display()))?,
        _ => serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?,
    };
    match value {
        Value::Object(map) => Ok(map),
        _ => anyhow::bail!("{}: the config must be an object", path.display()),
    }
}

/// Reads the merged object into a [`RunConfig`]; an unknown key or a wrong type is an error naming the key.
pub fn from_map(map: Map<String, Value>) -> anyhow::Result<RunConfig> {
    serde_json::from_value(Value::Object(map)).map_err(|e| anyhow::anyhow!("run config: {e}"))
}

/// A Go duration (`7s`, `1m30s`, `500ms`), as a string; a bare `0` too, as ghz's JSON reader takes it.
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Value::String(text)) => go_units::parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom),
        Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(Some(Duration::ZERO)),
        Some(other) => Err(serde::de::Error::custom(format!(
            "{other} is not a duration (write e.g. \"500ms\" or \"10s\")"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_durations_are_named() {
        let map = serde_json::json!({"call": "a.B/C", "cacertt": "x"});
        let Value::Object(map) = map else {
            unreachable!()
        };
        let err = from_map(map).unwrap_err().to_string();
        assert!(err.contains("cacertt"), "{err}");

        let map = serde_json::json!({"timeout": "ten seconds"});
        let Value::Object(map) = map else {
            unreachable!()
        };
        let err = from_map(map).unwrap_err().to_string();
        assert!(err.contains("ten seconds"), "{err}");
    }

    #[test]
    fn toml_and_json_read_the_same() {
        let dir = std::env::temp_dir().join(format!("strata-run-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json = dir.join("a.json");
        let toml = dir.join("a.toml");
        std::fs::write(
            &json,
            r#"{"call":"demo.v1.Catalog/GetItem","proto":"x.proto","total":5,"data":{"id":"{{.Key}}"},
               "x-strata":{"keys":{"distribution":"zipf","count":10}}}"#,
        )
        .unwrap();
        std::fs::write(
            &toml,
            "call = \"demo.v1.Catalog/GetItem\"\nproto = \"x.proto\"\ntotal = 5\ndata = { id = \"{{.Key}}\" }\n\
             [x-strata.keys]\ndistribution = \"zipf\"\ncount = 10\n",
        )
        .unwrap();
        let (a, b) = (read_file(&json).unwrap(), read_file(&toml).unwrap());
        assert_eq!(a, b);
        // As written: relative to the working directory, as ghz reads it.
        assert_eq!(a["proto"], "x.proto");
        let config = from_map(a).unwrap();
        assert_eq!(config.total, Some(5));
        assert_eq!(config.x_strata.unwrap().keys.unwrap().count, 10);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
