//! `strata`: serve the gateway, or check a config.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use strata_gateway::config::{Config, ConfigError};
use strata_gateway::runtime::Scheduler;
use strata_gateway::telemetry;
use strata_gateway::{Listeners, describe_methods, run_watching};

/// The heap: mimalloc rather than glibc's malloc. glibc's per-thread cache takes blocks up to 1 KiB only, and a
/// call's future (~3.5 KiB, boxed per call) is larger, so every call goes through glibc's arenas and their
/// consolidation: ~7 % more instructions per call with glibc, for a little less memory touched with one call in
/// flight (docs/BENCHMARKS.md, rounds eight and thirteen).
#[global_allocator]
static HEAP: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Strata: a multi-level caching gRPC gateway.
#[derive(Debug, Parser)]
#[command(
    name = "strata",
    version,
    about = "Strata: a multi-level caching gRPC gateway (L1 in memory, L2 in Redis, one backend call per key)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the gateway with a config file (STRATA_… environment variables override its values).
    Serve {
        /// The YAML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file: print it resolved (defaults filled in, secrets redacted) or list every error.
    Check {
        /// The YAML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(config) => check_methods(&config),
            Err(err) => report(&err),
        },
        Command::Serve { config } => {
            let config_path = config;
            let config = match Config::load(&config_path) {
                Ok(config) => config,
                Err(err) => return report(&err),
            };
            match serve(config, config_path) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("strata: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Prints the resolved config and what happens to each method of its cached routes; fails on cache rules that do not
/// fit a method's descriptor.
fn check_methods(config: &Config) -> ExitCode {
    print!("{}", config.to_yaml());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("strata: cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let methods = runtime.block_on(describe_methods(config));
    print!("{}", methods.text);
    if methods.errors.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!("strata: the cache rules do not fit the methods' descriptors:");
    for error in &methods.errors {
        eprintln!("  {error}");
    }
    ExitCode::from(2)
}

fn report(err: &ConfigError) -> ExitCode {
    eprintln!("strata: {err}");
    ExitCode::from(2)
}

fn serve(config: Config, path: PathBuf) -> anyhow::Result<()> {
    // One CPU: one thread (see strata_gateway::runtime).
    let runtime = Scheduler::for_this_process(config.worker_threads)
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        // Inside the runtime: the OTLP exporter runs on it.
        let telemetry = telemetry::init(&config.log, &config.telemetry)?;
        let listeners = Listeners::bind(&config).await?;
        // The file is watched: edits (and SIGHUP) reload what can change without a restart.
        let served = run_watching(config, Some(path), listeners, shutdown_signal()).await;
        telemetry.shutdown().await;
        served?;
        Ok(())
    })
}

/// Completes on SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received; shutting down"),
        () = term => tracing::info!("SIGTERM received; shutting down"),
    }
}
