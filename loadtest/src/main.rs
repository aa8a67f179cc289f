//! `strata-load`: the sample backend, the demo, and the benchmark suite.

mod backend;
mod compare;
mod constant;
mod demo;
mod h2_relay;
mod held_port;
mod load;
mod local_gateway;
mod redis_child;
mod run;
mod stampede;
mod zipf;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use strata_gateway::config::units::parse_duration;

/// Load testing and demos for Strata.
#[derive(Debug, Parser)]
#[command(
    name = "strata-load",
    version,
    about = "Strata load tools: the sample backend, the demo, and the benchmark suite"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sample backend, the gateway and a short Zipf load, then print a table.
    Demo {
        /// Total load time (30 % direct to the backend, 70 % through Strata).
        #[arg(long, default_value = "10s", value_parser = duration)]
        duration: Duration,
        /// Calls in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Items in the sample catalog.
        #[arg(long, default_value_t = 100_000)]
        items: usize,
        /// Zipf exponent of item popularity.
        #[arg(long, default_value_t = 1.0)]
        zipf: f64,
        /// Latency of each backend lookup.
        #[arg(long, default_value = "2ms", value_parser = duration)]
        backend_latency: Duration,
    },
    /// Serve the sample `demo.v1.Catalog` service.
    Backend {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:50052")]
        listen: SocketAddr,
        /// Latency of each lookup.
        #[arg(long, default_value = "2ms", value_parser = duration)]
        latency: Duration,
        /// Fraction of lookups answered UNAVAILABLE.
        #[arg(long, default_value_t = 0.0)]
        error_rate: f64,
        /// Items in the catalog (ids item-0 … item-<size-1>).
        #[arg(long, default_value_t = 100_000)]
        size: u64,
    },
    /// Answer every call with the same pre-encoded `GetItem` reply (the benchmark's ceiling reference).
    Constant {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:50053")]
        listen: SocketAddr,
        /// Answer through tonic (a generated handler returning a pre-built message, a default tonic server) instead
        /// of bare hyper.
        #[arg(long)]
        tonic: bool,
        /// With --tonic: serve over the gateway's one-write connection wrapper (the ceiling of runs 10–19).
        #[arg(long, requires = "tonic")]
        one_write: bool,
    },
    /// Relay every call to a backend over bare h2 and nothing else: the h2 floor of `scripts/cost-per-call`.
    Relay {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:50054")]
        listen: SocketAddr,
        /// The gRPC server to relay to (plaintext HTTP/2).
        #[arg(long)]
        backend: SocketAddr,
    },
    /// Load from a ghz-compatible JSON/TOML config or flags, with key distributions, open loop and call mixes.
    Run(Box<run::RunArgs>),
    /// The benchmark suite: Strata's cache levels, passthrough and a Zipf load against the backend, nginx and a
    /// constant-answer ceiling, plus the stampede; medians, ratios and targets (needs redis-server; uses nginx and
    /// h2load when installed).
    Compare {
        /// Rounds (the median is reported).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Length of each scenario in each round.
        #[arg(long, default_value = "3s", value_parser = duration)]
        round_duration: Duration,
        /// Calls in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// A smoke run (1 round of 0.3 s, one run of each side measurement): checks that every scenario runs and
        /// answers from its level; its figures are too short to quote.
        #[arg(long, conflicts_with_all = ["rounds", "round_duration"])]
        quick: bool,
        /// Also write every round's raw figures, the medians, their ratios and the targets as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// Write the tables into this Markdown file, between `<!-- compare:begin -->` and `<!-- compare:end -->`
        /// (e.g. docs/BENCHMARKS.md).
        #[arg(long)]
        markdown: Option<std::path::PathBuf>,
        /// Do not pin servers and load clients to different CPUs.
        #[arg(long)]
        no_pin: bool,
    },
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The benchmark's load clients run on CPUs of their own; pinned before the runtime starts, so that it starts one
    // worker per CPU it may use (more would be time-sliced, and the slices would show in the tail latencies).
    let pinning = match &cli.command {
        Command::Compare { no_pin, .. } => {
            let pinning = compare::Pinning::new(!no_pin);
            pinning.pin_this_client()?;
            Some(pinning)
        }
        _ => None,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let command = match cli.command {
        // ghz's --cpus sizes the runtime, so `run` builds its own.
        Command::Run(args) => return run::command(*args),
        // Scheduled as `strata serve` is on the same CPUs, so that the floor differs from Strata in nothing else.
        Command::Relay { listen, backend } => {
            return strata_gateway::runtime::Scheduler::for_this_process(None)
                .build()
                .context("cannot start the tokio runtime")?
                .block_on(async move {
                    let listener = tokio::net::TcpListener::bind(listen)
                        .await
                        .with_context(|| format!("cannot listen on {listen}"))?;
                    eprintln!("h2 relay listening on {}", listener.local_addr()?);
                    let stopped = async {
                        let _ = tokio::signal::ctrl_c().await;
                    };
                    h2_relay::serve(listener, backend, stopped).await
                });
        }
        other => other,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        match command {
            Command::Demo {
                duration,
                concurrency,
                items,
                zipf,
                backend_latency,
            } => {
                demo::run(demo::DemoOptions {
                    duration,
                    concurrency,
                    items: items.max(1),
                    zipf_s: zipf,
                    backend_latency,
                })
                .await
            }
            Command::Backend {
                listen,
                latency,
                error_rate,
                size,
            } => {
                if !(0.0..=1.0).contains(&error_rate) {
                    anyhow::bail!("--error-rate must be between 0 and 1, got {error_rate}");
                }
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                // The bound address, so that `--listen 127.0.0.1:0` says which port it got.
                let bound = listener.local_addr().unwrap_or(listen);
                eprintln!("sample backend demo.v1.Catalog listening on {bound}");
                let options = backend::BackendOptions {
                    size,
                    latency,
                    error_rate,
                    ..backend::BackendOptions::default()
                };
                let shutdown = async {
                    let _ = tokio::signal::ctrl_c().await;
                };
                backend::serve(
                    listener,
                    options,
                    Arc::new(backend::Counters::default()),
                    shutdown,
                )
                .await?;
                Ok(())
            }
            Command::Constant {
                listen,
                tonic,
                one_write,
            } => {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                // The address it got (`--listen 127.0.0.1:0` picks a free port), for whoever started it.
                eprintln!(
                    "constant-answer server listening on {}",
                    listener.local_addr()?
                );
                let stopped = async {
                    let _ = tokio::signal::ctrl_c().await;
                };
                if tonic {
                    constant::serve_tonic(listener, one_write, stopped).await
                } else {
                    constant::serve(listener, stopped).await
                }
            }
            Command::Run(_) | Command::Relay { .. } => {
                unreachable!("run and relay build their own runtimes")
            }
            Command::Compare {
                rounds,
                round_duration,
                concurrency,
                quick,
                json,
                markdown,
                no_pin,
            } => {
                // Quick: a smoke test (every scenario runs and answers from its level), not a measurement.
                let (rounds, round_duration, side_runs, zipf_warmup_calls) = if quick {
                    (1, Duration::from_millis(300), 1, 20_000)
                } else {
                    (rounds.max(1), round_duration, compare::RUNS, 1_000_000)
                };
                compare::run(compare::CompareOptions {
                    rounds,
                    round_duration,
                    side_runs,
                    concurrency: concurrency.max(1),
                    json,
                    markdown,
                    pinning: pinning.unwrap_or_else(|| compare::Pinning::new(!no_pin)),
                    zipf_warmup_calls,
                })
                .await
            }
        }
    })
}
