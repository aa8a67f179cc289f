//! `strata-load run`: a drop-in for ghz — its flags, config keys (JSON, TOML, YAML), templates, reflection and eight
//! report formats — with what ghz lacks for a cache: skewed key popularity, open-loop arrival, a weighted mix of
//! calls, the far tail, round-robin metadata, and the answers' `x-strata-cache` levels in every report.

mod calls;
mod codec;
pub mod config;
mod debug_log;
mod descriptors;
mod engine;
pub mod flags;
mod formats;
pub mod go_units;
mod html;
pub mod keys;
mod options;
pub mod plan;
mod progress;
pub mod report;
mod requests;
mod schedule;
mod tally;
mod template;
#[cfg(test)]
mod tests;
mod transport;
mod workers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use serde_json::json;
use tonic::client::Grpc;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

pub use self::flags::RunArgs;

use self::debug_log::DebugLog;
use self::engine::{Closing, Work};
use self::plan::{Descriptors, Format, Pacing, Plan};
use self::report::{EndReason, Report};
use self::requests::CallTemplate;
use self::workers::Workers;

/// The command: reads the config, runs on a runtime of `cpus` threads, writes the report.
pub fn command(args: RunArgs) -> anyhow::Result<()> {
    let plan = Plan::resolve(config::from_map(args.merged()?)?)?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(cpus) = plan.cpus {
        runtime.worker_threads(cpus);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let cancelled = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let report = execute(&plan, cancelled).await?;
        let rendered = render(&report, plan.format);
        match &plan.output {
            Some(path) => std::fs::write(path, rendered)
                .with_context(|| format!("output: cannot write {}", path.display())),
            None => {
                print!("{rendered}");
                Ok(())
            }
        }
    })
}

/// The report in `format`.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Summary => report.summary(),
        Format::Csv => formats::csv(report),
        Format::Json => format!("{}\n", report.json_text(false)),
        Format::Pretty => format!("{}\n", report.json_text(true)),
        Format::Html => html::render(report),
        Format::InfluxSummary => formats::influx_summary(report),
        Format::InfluxDetails => formats::influx_details(report),
        Format::Prometheus => formats::prometheus(report),
    }
}

/// Runs `plan` until its total, duration or schedule ends, or `cancelled` completes.
pub async fn execute(
    plan: &Plan,
    cancelled: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Report> {
    let debug = plan.debug.as_deref().map(DebugLog::create).transpose()?;
    let placeholder = plan.keys.as_ref().map(|k| k.placeholder.as_str());
    let templates = |pool: &prost_reflect::DescriptorPool| {
        plan.calls
            .iter()
            .map(|spec| {
                let method = descriptors::method(pool, &spec.method)?;
                CallTemplate::new(spec, method, placeholder, plan.templating)
            })
            .collect::<anyhow::Result<Vec<_>>>()
    };
    // With a proto or a protoset, every call's data and metadata are checked before anything connects.
    let local = descriptors::local(&plan.descriptors)?
        .map(|pool| templates(&pool))
        .transpose()?;
    let channels = transport::connect(&plan.transport).await?;
    let (calls, reflection) = match (local, &plan.descriptors) {
        (Some(calls), _) => (calls, None),
        (None, Descriptors::Reflection(metadata)) => {
            let (pool, version) = descriptors::reflect(metadata, &channels[0]).await?;
            (templates(&pool)?, Some(version))
        }
        (None, _) => anyhow::bail!("a proto or protoset gave no descriptors"),
    };
    if let Some(log) = &debug {
        log.event(
            "Connected",
            json!({"host": plan.transport.host, "connections": channels.len(), "reflection": reflection}),
        );
    }
    let clients: Vec<Grpc<Channel>> = channels.into_iter().map(|c| client(plan, c)).collect();
    let live = Arc::new(progress::Live::default());
    let started = Instant::now();
    let work = Arc::new(Work {
        calls,
        keys: plan.keys.clone(),
        pacing: plan.pacing.clone(),
        workers: plan.workers,
        asynchronous: plan.asynchronous,
        total: plan.total,
        until: plan.duration.map(|d| started + d),
        timeout: plan.timeout,
        streams: plan.streams,
        skip_first: plan.skip_first,
        details: plan.details,
        count_errors: plan.count_errors,
        started,
        stop: AtomicBool::new(false),
        closing: Closing {
            signal: tokio::sync::watch::channel(false).0,
            mode: plan.duration_stop,
        },
        next: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        live: live.clone(),
        debug,
    });
    let printer = progress::Printer::start(live);
    let mut running = tokio::task::JoinSet::new();
    let mut spawned = 0usize;
    let spawn_up_to =
        |target: usize, spawned: &mut usize, running: &mut tokio::task::JoinSet<_>| {
            while *spawned < target {
                let grpc = clients[*spawned % clients.len()].clone();
                running.spawn(engine::worker(work.clone(), grpc, *spawned as u64));
                *spawned += 1;
            }
        };
    spawn_up_to(work.workers.at(Duration::ZERO), &mut spawned, &mut running);
    // A concurrency schedule adds workers as it rises (a falling one retires them itself).
    let scheduled = matches!(work.workers, Workers::Scheduled { .. });
    let most = work.workers.most(plan.duration);
    let mut growth = tokio::time::interval(Duration::from_millis(10));
    let ended = async {
        match work.until {
            Some(until) => tokio::time::sleep_until(until.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(ended, cancelled);
    let mut end_reason = EndReason::Normal;
    let mut tally = tally::Tally::default();
    loop {
        let may_grow = scheduled && spawned < most && !work.exhausted();
        if running.is_empty() && !may_grow {
            break;
        }
        let stopping = end_reason != EndReason::Normal;
        tokio::select! {
            Some(joined) = running.join_next(), if !running.is_empty() => {
                tally.absorb(joined.context("a load worker panicked")?);
            }
            _ = growth.tick(), if may_grow => {
                spawn_up_to(work.workers.at(started.elapsed()).min(most), &mut spawned, &mut running);
            }
            () = &mut ended, if !stopping => end_reason = EndReason::Timeout,
            () = &mut cancelled, if !stopping => end_reason = EndReason::Cancel,
        }
        if !stopping && end_reason != EndReason::Normal {
            work.stop.store(true, Ordering::Relaxed);
            work.closing.signal.send_replace(true);
        }
    }
    let total = started.elapsed();
    drop(printer);
    if let Some(log) = &work.debug {
        log.event(
            "Finished",
            json!({"count": tally.count, "endReason": end_reason.as_str()}),
        );
        log.flush();
    }
    Ok(Report {
        tally,
        total,
        date: SystemTime::now(),
        end_reason,
        name: plan.name.clone(),
        options: plan.options.clone(),
        tags: plan.tags.clone(),
        arrival: match plan.pacing {
            Pacing::Scheduled {
                open_loop: true, ..
            } => "open",
            _ => "closed",
        },
    })
}

/// A gRPC client on `channel` with the run's compression and message size limits.
fn client(plan: &Plan, channel: Channel) -> Grpc<Channel> {
    let mut grpc = Grpc::new(channel);
    if plan.transport.compression {
        grpc = grpc
            .send_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Gzip);
    }
    if let Some(limit) = plan.transport.max_recv_message_size {
        grpc = grpc.max_decoding_message_size(limit);
    }
    if let Some(limit) = plan.transport.max_send_message_size {
        grpc = grpc.max_encoding_message_size(limit);
    }
    grpc
}
