//! `strata-load run`'s command line: every ghz flag, under ghz's long and short names, laid over the config file's
//! keys of the same name (ghz's rule: a flag given wins over the file).

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;
use serde_json::{Map, Value};

use super::config;

/// `strata-load run` flags: ghz's names, overriding the config file's keys of the same name.
#[derive(Debug, Default, clap::Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RunArgs {
    /// A ghz config: JSON, TOML or YAML (keys = these flags' long names, plus an `x-strata` section).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// host:port of the server.
    pub host: Option<String>,
    /// Method to call: package.Service/Method (or package.Service.Method).
    #[arg(long)]
    pub call: Option<String>,
    /// .proto file describing the call.
    #[arg(long)]
    pub proto: Option<String>,
    /// Compiled FileDescriptorSet describing the call (--proto wins if both are given).
    #[arg(long)]
    pub protoset: Option<String>,
    /// Comma-separated directories to resolve the proto's imports.
    #[arg(short = 'i', long = "import-paths", value_delimiter = ',')]
    pub import_paths: Vec<String>,
    /// CA certificate (PEM) to verify the server with.
    #[arg(long)]
    pub cacert: Option<String>,
    /// Client certificate (PEM) to present to the server (with --key).
    #[arg(long)]
    pub cert: Option<String>,
    /// Client private key (PEM) (with --cert).
    #[arg(long)]
    pub key: Option<String>,
    /// Server name to verify in its certificate.
    #[arg(long)]
    pub cname: Option<String>,
    /// Do not verify the server's certificate.
    #[arg(long = "skipTLS")]
    #[serde(rename = "skipTLS")]
    pub skip_tls: bool,
    /// Plaintext (no TLS).
    #[arg(long)]
    pub insecure: bool,
    /// The :authority pseudo-header to send.
    #[arg(long)]
    pub authority: Option<String>,
    /// Do not wait for an answer before sending the next request.
    #[arg(long = "async")]
    #[serde(rename = "async")]
    pub asynchronous: bool,
    /// Requests per second in all (0: no limit).
    #[arg(short = 'r', long)]
    pub rps: Option<f64>,
    /// const, step or line.
    #[arg(long = "load-schedule")]
    pub load_schedule: Option<String>,
    /// Starting rate (step, line).
    #[arg(long = "load-start")]
    pub load_start: Option<f64>,
    /// Rate change per step (step) or per second (line).
    #[arg(long = "load-step", allow_hyphen_values = true)]
    pub load_step: Option<f64>,
    /// Rate to stop changing at (step, line).
    #[arg(long = "load-end")]
    pub load_end: Option<f64>,
    /// Length of a step (step).
    #[arg(long = "load-step-duration")]
    pub load_step_duration: Option<String>,
    /// Hold the rate after this long (step, line).
    #[arg(long = "load-max-duration")]
    pub load_max_duration: Option<String>,
    /// Workers (default 50).
    #[arg(short = 'c', long)]
    pub concurrency: Option<u64>,
    /// const, step or line: how the number of workers changes.
    #[arg(long = "concurrency-schedule")]
    pub concurrency_schedule: Option<String>,
    /// Workers at the start (step, line).
    #[arg(long = "concurrency-start")]
    pub concurrency_start: Option<u64>,
    /// Workers to stop changing at (step, line).
    #[arg(long = "concurrency-end")]
    pub concurrency_end: Option<u64>,
    /// Workers added per step (step) or per second (line).
    #[arg(long = "concurrency-step", allow_hyphen_values = true)]
    pub concurrency_step: Option<i64>,
    /// Length of a concurrency step (step).
    #[arg(long = "concurrency-step-duration")]
    pub concurrency_step_duration: Option<String>,
    /// Hold the number of workers after this long.
    #[arg(long = "concurrency-max-duration")]
    pub concurrency_max_duration: Option<String>,
    /// Requests to send (default 200).
    #[arg(short = 'n', long)]
    pub total: Option<u64>,
    /// Deadline per call (default 20s; 0: none).
    #[arg(short = 't', long)]
    pub timeout: Option<String>,
    /// Send for this long (--total is then ignored).
    #[arg(short = 'z', long)]
    pub duration: Option<String>,
    /// Stop after this long even if --total is not reached.
    #[arg(short = 'x', long = "max-duration")]
    pub max_duration: Option<String>,
    /// close, wait or ignore: the calls in flight when the duration ends.
    #[arg(long = "duration-stop")]
    pub duration_stop: Option<String>,
    /// Request data as JSON (an object, or an array used round-robin); `@` reads it from standard input.
    #[arg(short = 'd', long)]
    #[serde(skip)]
    pub data: Option<String>,
    /// File holding the request data as JSON.
    #[arg(short = 'D', long = "data-file")]
    pub data_file: Option<String>,
    /// Read the request from standard input as a serialized message (or count-delimited messages).
    #[arg(short = 'b', long)]
    #[serde(skip)]
    pub binary: bool,
    /// File holding the request as a serialized message (or count-delimited messages).
    #[arg(short = 'B', long = "binary-file")]
    pub binary_file: Option<String>,
    /// Request metadata as a JSON object (or an array of objects, used round-robin).
    #[arg(short = 'm', long)]
    #[serde(skip)]
    pub metadata: Option<String>,
    /// File holding the request metadata as JSON.
    #[arg(short = 'M', long = "metadata-file")]
    pub metadata_file: Option<String>,
    /// Pause between the messages of a client stream.
    #[arg(long = "stream-interval")]
    pub stream_interval: Option<String>,
    /// Close each streaming call after this long.
    #[arg(long = "stream-call-duration")]
    pub stream_call_duration: Option<String>,
    /// Close each streaming call after this many messages.
    #[arg(long = "stream-call-count")]
    pub stream_call_count: Option<u64>,
    /// Render the data anew for every message of a client stream.
    #[arg(long = "stream-dynamic-messages")]
    pub stream_dynamic_messages: bool,
    /// Metadata (JSON object) sent with the reflection request only.
    #[arg(long = "reflect-metadata")]
    #[serde(skip)]
    pub reflect_metadata: Option<String>,
    /// Write the report to this file.
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    /// summary, csv, json, pretty, html, influx-summary, influx-details or prometheus.
    #[arg(short = 'O', long)]
    pub format: Option<String>,
    /// Leave the first N answers out of the report.
    #[arg(long = "skipFirst")]
    #[serde(rename = "skipFirst")]
    pub skip_first: Option<u64>,
    /// Count non-OK answers in the latency figures.
    #[arg(long = "count-errors")]
    pub count_errors: bool,
    /// Connections (default 1).
    #[arg(long)]
    pub connections: Option<u64>,
    /// Connect timeout (default 10s).
    #[arg(long = "connect-timeout")]
    pub connect_timeout: Option<String>,
    /// HTTP/2 keepalive ping interval.
    #[arg(long)]
    pub keepalive: Option<String>,
    /// Name of the run.
    #[arg(long)]
    pub name: Option<String>,
    /// Labels for the report, as a JSON object of strings.
    #[arg(long)]
    #[serde(skip)]
    pub tags: Option<String>,
    /// Threads of the client (default: every CPU).
    #[arg(long)]
    pub cpus: Option<u64>,
    /// Write a debug log of the run to this file.
    #[arg(long)]
    pub debug: Option<String>,
    /// Compress requests with gzip.
    #[arg(short = 'e', long = "enable-compression")]
    pub enable_compression: bool,
    /// pick_first or round_robin over the addresses the host resolves to.
    #[arg(long = "lb-strategy")]
    pub lb_strategy: Option<String>,
    /// Largest answer accepted (e.g. 4mb, 16mib).
    #[arg(long = "max-recv-message-size")]
    pub max_recv_message_size: Option<String>,
    /// Largest request sent.
    #[arg(long = "max-send-message-size")]
    pub max_send_message_size: Option<String>,
    /// Offer no template functions.
    #[arg(long = "disable-template-functions")]
    pub disable_template_functions: bool,
    /// Send data and metadata as written, without rendering them as templates.
    #[arg(long = "disable-template-data")]
    pub disable_template_data: bool,
    /// x-strata.arrival: closed or open.
    #[arg(long)]
    #[serde(skip)]
    pub arrival: Option<String>,
}

impl RunArgs {
    /// The config file's keys with these flags laid over them.
    pub fn merged(&self) -> anyhow::Result<Map<String, Value>> {
        let mut map = match &self.config {
            Some(path) => config::read_file(path)?,
            None => Map::new(),
        };
        // Flags as they serialize: what was not given (none, false, empty) leaves the file's key alone.
        let Value::Object(flags) = serde_json::to_value(self)? else {
            anyhow::bail!("flags did not serialize to an object");
        };
        for (key, value) in flags {
            let given = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::Array(items) => !items.is_empty(),
                _ => true,
            };
            if given {
                map.insert(key, value);
            }
        }
        let json = |key: &str, v: &Option<String>| -> anyhow::Result<Option<Value>> {
            v.as_deref()
                .map(serde_json::from_str)
                .transpose()
                .with_context(|| format!("--{key}: not valid JSON"))
        };
        match self.data.as_deref() {
            // ghz: `-d @` reads the data from standard input.
            Some("@") => {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("--data @: cannot read standard input")?;
                map.insert(
                    "data".into(),
                    serde_json::from_str(&text).context("--data @: standard input is not JSON")?,
                );
            }
            _ => {
                if let Some(data) = json("data", &self.data)? {
                    map.insert("data".into(), data);
                }
            }
        }
        if self.binary {
            map.insert("binary-file".into(), Value::String("/dev/stdin".into()));
        }
        for (key, value) in [
            ("metadata", json("metadata", &self.metadata)?),
            ("tags", json("tags", &self.tags)?),
            (
                "reflect-metadata",
                json("reflect-metadata", &self.reflect_metadata)?,
            ),
        ] {
            if let Some(value) = value {
                map.insert(key.into(), value);
            }
        }
        if let Some(arrival) = &self.arrival {
            let section = map
                .entry("x-strata")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(section) = section {
                section.insert("arrival".into(), Value::String(arrival.clone()));
            }
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn merged(args: &[&str]) -> Map<String, Value> {
        Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied()))
            .unwrap()
            .run
            .merged()
            .unwrap()
    }

    #[test]
    fn short_and_long_names_become_config_keys() {
        let map = merged(&[
            "-n",
            "10",
            "-c",
            "2",
            "-x",
            "7s",
            "-z",
            "3s",
            "-t",
            "0",
            "-e",
            "--skipTLS",
            "--async",
            "-B",
            "req.bin",
            "-M",
            "md.json",
            "-O",
            "csv",
            "-o",
            "out.csv",
            "--cpus",
            "1",
            "--concurrency-step",
            "-2",
            "--tags",
            r#"{"env":"ci"}"#,
            "--reflect-metadata",
            r#"{"k":"v"}"#,
            "--duration-stop",
            "wait",
            "--lb-strategy",
            "round_robin",
            "127.0.0.1:1",
        ]);
        let expect = serde_json::json!({
            "host": "127.0.0.1:1", "total": 10, "concurrency": 2, "max-duration": "7s", "duration": "3s",
            "timeout": "0", "enable-compression": true, "skipTLS": true, "async": true,
            "binary-file": "req.bin", "metadata-file": "md.json", "format": "csv", "output": "out.csv",
            "cpus": 1, "concurrency-step": -2, "tags": {"env": "ci"}, "reflect-metadata": {"k": "v"},
            "duration-stop": "wait", "lb-strategy": "round_robin",
        });
        assert_eq!(Value::Object(map.clone()), expect);
        // Every key the flags produce is a key the config reads.
        config::from_map(map).unwrap();
    }

    #[test]
    fn a_flag_wins_over_the_file() {
        let dir = std::env::temp_dir().join(format!("strata-flags-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.yaml");
        std::fs::write(&file, "total: 5\nconcurrency: 3\ninsecure: true\n").unwrap();
        let map = merged(&["--config", file.to_str().unwrap(), "-n", "9"]);
        assert_eq!(
            (&map["total"], &map["concurrency"], &map["insecure"]),
            (&Value::from(9), &Value::from(3), &Value::Bool(true))
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
