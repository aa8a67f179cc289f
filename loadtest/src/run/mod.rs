//! `strata-load run`: a ghz-compatible load generator with what ghz lacks for a cache — skewed key popularity,
//! open-loop arrival, and a weighted mix of calls.

mod codec;
pub mod config;
mod descriptors;
mod engine;
mod html;
pub mod keys;
pub mod plan;
mod progress;
pub mod report;
mod requests;
mod schedule;
mod tally;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use anyhow::Context;
use serde_json::{Map, Value};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use self::engine::Work;
use self::plan::{Format, Pacing, Plan};
use self::report::{EndReason, Report};
use self::requests::CallTemplate;

/// `strata-load run` flags: ghz's long names, overriding the config file's keys of the same name.
#[derive(Debug, Default, clap::Args)]
pub struct RunArgs {
    /// A ghz-style JSON or TOML config (keys = these flags' long names, plus an `x-strata` section).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// host:port of the server.
    pub host: Option<String>,
    /// Method to call: package.Service/Method (or package.Service.Method).
    #[arg(long)]
    pub call: Option<String>,
    /// .proto file describing the call.
    #[arg(long)]
    pub proto: Option<String>,
    /// Comma-separated directories to resolve the proto's imports.
    #[arg(short = 'i', long = "import-paths", value_delimiter = ',')]
    pub import_paths: Vec<String>,
    /// Compiled FileDescriptorSet describing the call.
    #[arg(long)]
    pub protoset: Option<String>,
    /// Plaintext (no TLS).
    #[arg(long)]
    pub insecure: bool,
    /// CA certificate (PEM) for TLS.
    #[arg(long)]
    pub cacert: Option<String>,
    /// Server name to verify for TLS.
    #[arg(long)]
    pub cname: Option<String>,
    /// Requests to send (default 200; ignored with --duration).
    #[arg(short = 'n', long)]
    pub total: Option<u64>,
    /// Workers (default 50).
    #[arg(short = 'c', long)]
    pub concurrency: Option<u64>,
    /// Connections (default 1).
    #[arg(long)]
    pub connections: Option<u64>,
    /// Send for this long (e.g. 10s).
    #[arg(short = 'z', long)]
    pub duration: Option<String>,
    /// Requests per second in all (0: no limit).
    #[arg(short = 'r', long)]
    pub rps: Option<f64>,
    /// Deadline per call (default 20s).
    #[arg(short = 't', long)]
    pub timeout: Option<String>,
    /// Connect timeout (default 10s).
    #[arg(long = "connect-timeout")]
    pub connect_timeout: Option<String>,
    /// Request data as JSON (an object, or an array used round-robin).
    #[arg(short = 'd', long)]
    pub data: Option<String>,
    /// File holding the request data as JSON.
    #[arg(short = 'D', long = "data-file")]
    pub data_file: Option<String>,
    /// Request metadata as a JSON object.
    #[arg(short = 'm', long)]
    pub metadata: Option<String>,
    /// const, step or line.
    #[arg(long = "load-schedule")]
    pub load_schedule: Option<String>,
    /// Starting rate (step, line).
    #[arg(long = "load-start")]
    pub load_start: Option<f64>,
    /// Rate change per step (step) or per second (line).
    #[arg(long = "load-step")]
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
    /// summary, json, pretty or html.
    #[arg(short = 'O', long)]
    pub format: Option<String>,
    /// Write the report to this file.
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    /// Name of the run.
    #[arg(long)]
    pub name: Option<String>,
    /// Leave the first N answers out of the report.
    #[arg(long = "skipFirst")]
    pub skip_first: Option<u64>,
    /// x-strata.arrival: closed or open.
    #[arg(long)]
    pub arrival: Option<String>,
}

impl RunArgs {
    /// The config file's keys with these flags laid over them.
    pub fn merged(&self) -> anyhow::Result<Map<String, Value>> {
        let mut map = match &self.config {
            Some(path) => config::read_file(path)?,
            None => Map::new(),
        };
        let mut set = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                map.insert(key.to_owned(), value);
            }
        };
        let text = |v: &Option<String>| v.clone().map(Value::String);
        let json = |key: &str, v: &Option<String>| -> anyhow::Result<Option<Value>> {
            v.as_deref()
                .map(serde_json::from_str)
                .transpose()
                .with_context(|| format!("--{key}: not valid JSON"))
        };
        set("host", text(&self.host));
        set("call", text(&self.call));
        set("proto", text(&self.proto));
        if !self.import_paths.is_empty() {
            set("import-paths", Some(Value::from(self.import_paths.clone())));
        }
        set("protoset", text(&self.protoset));
        set("insecure", self.insecure.then_some(Value::Bool(true)));
        set("cacert", text(&self.cacert));
        set("cname", text(&self.cname));
        set("total", self.total.map(Value::from));
        set("concurrency", self.concurrency.map(Value::from));
        set("connections", self.connections.map(Value::from));
        set("duration", text(&self.duration));
        set("rps", self.rps.map(Value::from));
        set("timeout", text(&self.timeout));
        set("connect-timeout", text(&self.connect_timeout));
        set("data", json("data", &self.data)?);
        set("data-file", text(&self.data_file));
        set("metadata", json("metadata", &self.metadata)?);
        set("load-schedule", text(&self.load_schedule));
        set("load-start", self.load_start.map(Value::from));
        set("load-step", self.load_step.map(Value::from));
        set("load-end", self.load_end.map(Value::from));
        set("load-step-duration", text(&self.load_step_duration));
        set("load-max-duration", text(&self.load_max_duration));
        set("format", text(&self.format));
        set("output", text(&self.output));
        set("name", text(&self.name));
        set("skipFirst", self.skip_first.map(Value::from));
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

/// The command: reads the config, runs, writes the report.
pub async fn command(args: RunArgs) -> anyhow::Result<()> {
    let options = args.merged()?;
    let plan = Plan::resolve(config::from_map(options.clone())?)?;
    let cancelled = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let report = execute(&plan, options, cancelled).await?;
    let rendered = match plan.format {
        Format::Summary => report.summary(),
        Format::Json => format!("{}\n", report.to_json()),
        Format::Pretty => format!("{:#}\n", report.to_json()),
        Format::Html => html::render(&report),
    };
    match &plan.output {
        Some(path) => std::fs::write(path, rendered)
            .with_context(|| format!("output: cannot write {}", path.display()))?,
        None => print!("{rendered}"),
    }
    Ok(())
}

/// Runs `plan` until its total, duration or schedule ends, or `cancelled` completes; `options` is echoed in the
/// report.
pub async fn execute(
    plan: &Plan,
    options: Map<String, Value>,
    cancelled: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Report> {
    let channels = connect(plan).await?;
    let services: Vec<String> = plan
        .calls
        .iter()
        .filter_map(|c| c.method.split_once('/').map(|(s, _)| s.to_owned()))
        .collect();
    let pool = descriptors::load(&plan.descriptors, &services, &channels[0]).await?;
    let placeholder = plan.keys.as_ref().map(|k| k.placeholder.as_str());
    let calls = plan
        .calls
        .iter()
        .map(|spec| CallTemplate::new(spec, descriptors::method(&pool, &spec.method)?, placeholder))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let live = Arc::new(progress::Live::default());
    let started = Instant::now();
    let work = Arc::new(Work {
        calls,
        keys: plan.keys.clone(),
        pacing: plan.pacing.clone(),
        total: plan.total,
        until: plan.duration.map(|d| started + d),
        timeout: plan.timeout,
        skip_first: plan.skip_first,
        details: plan.details,
        started,
        stop: AtomicBool::new(false),
        next: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        live: live.clone(),
    });
    let printer = progress::Printer::start(live);
    let workers: Vec<_> = (0..plan.concurrency)
        .map(|i| {
            let channel = channels[i % channels.len()].clone();
            tokio::spawn(engine::worker(work.clone(), channel, i as u64))
        })
        .collect();
    let all_done = futures::future::join_all(workers);
    tokio::pin!(all_done);
    let mut end_reason = EndReason::Normal;
    let finished = tokio::select! {
        finished = &mut all_done => finished,
        () = cancelled => {
            end_reason = EndReason::Cancel;
            work.stop.store(true, Ordering::Relaxed);
            all_done.await
        }
    };
    let total = started.elapsed();
    drop(printer);
    let mut tally = tally::Tally::default();
    for worker in finished {
        tally.absorb(worker.context("a load worker panicked")?);
    }
    Ok(Report {
        tally,
        total,
        date: SystemTime::now(),
        end_reason,
        name: plan.name.clone(),
        options,
        tags: plan.tags.clone(),
        arrival: match plan.pacing {
            Pacing::Scheduled {
                open_loop: true, ..
            } => "open",
            _ => "closed",
        },
    })
}

/// Opens the plan's connections.
async fn connect(plan: &Plan) -> anyhow::Result<Vec<Channel>> {
    let scheme = if plan.tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", plan.host))
        .with_context(|| format!("host: `{}` is not host:port", plan.host))?
        .connect_timeout(plan.connect_timeout)
        .tcp_nodelay(true);
    if let Some(tls) = &plan.tls {
        let mut config = ClientTlsConfig::new().with_native_roots();
        if let Some(path) = &tls.cacert {
            let pem = std::fs::read(path)
                .with_context(|| format!("cacert: cannot read {}", path.display()))?;
            config = config.ca_certificate(Certificate::from_pem(pem));
        }
        if let Some(name) = &tls.cname {
            config = config.domain_name(name.clone());
        }
        endpoint = endpoint.tls_config(config).context("TLS settings")?;
    }
    let mut channels = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        channels.push(endpoint.connect().await.with_context(|| {
            format!(
                "cannot connect to {} ({}; add insecure for a plaintext server)",
                plan.host,
                if plan.tls.is_some() {
                    "TLS"
                } else {
                    "plaintext"
                }
            )
        })?);
    }
    Ok(channels)
}
