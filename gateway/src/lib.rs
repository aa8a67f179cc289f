//! Strata's gateway: a gRPC edge proxy that answers cached unary routes from L1, L2 or one backend call per key,
//! and proxies everything else untouched.
//!
//! [`run`] takes bound listeners, so tests (and `strata serve`) start the real gateway on any port.
//!
//! # Layout
//!
//! One call, top-down: [`server::accept`] takes the connection, [`server::http2`] takes the call off its HTTP/2
//! stream, [`server::stack`] runs it through the [`layers`] (load shedding) to [`proxy::Proxy::handle`], which finds
//! its [`route`] and, as the call arrives, either starts answering it through the cache ([`proxy`]'s `unary` and
//! `loader`, over `strata_cache::Tiered`) or hands it to its [`backend`] untouched; [`server::served_call`] sends the
//! answer back.
//!
//! The modules form layers. A module may use the modules on the lines above its own, never those on its line or
//! below (a parent and its children may use each other); this crate root, which puts everything together in
//! [`run`], may use any. `tests/layering.rs` reads this block and fails on an import that points down the list.
//!
//! ```text
//! test_io                       test doubles for IO (tests only)
//! runtime                       the tokio runtime `strata serve` runs on: its scheduler and worker threads
//! grpc, one_write, h2_body, log_writer  the gRPC wire (framing, bodies, deadlines, codes, names); one write per flush; bodies read off h2 streams; the log buffer
//! in_flight, when_woken          counting calls in flight, with a guard; a future polled only when its waker fired
//! error                         GatewayError and the one table mapping it to gRPC codes
//! config                        the config file: parsed and validated into typed values (route matchers included)
//! telemetry                     logs (the access log's lines included) and traces
//! metrics, tls                  the Prometheus registry and the data path's counters; certificates
//! backend                       endpoints, discovery, connections, balancing, health, retries, limits
//! schema                        what the backends' methods are: descriptors, kinds, streams seen
//! route                         routes: matching, cache rules, storage rules, cache-control, rate limits
//! layers                        the tower layers every call passes (load shedding)
//! proxy                         answering one call: the cached path and the passthrough
//! server                        the accept loop, HTTP/2 served by h2 with the calls in their connection's task, the data listener's stack, assembling a config, reloads
//! admin                         the admin listener: metrics, health, invalidation, reflection
//! ```

pub(crate) mod admin;
pub(crate) mod backend;
pub mod config;
pub(crate) mod error;
#[cfg(test)]
mod fuzz;
pub mod grpc;
pub(crate) mod h2_body;
mod in_flight;
pub(crate) mod layers;
pub(crate) mod log_writer;
pub(crate) mod metrics;
pub mod one_write;
pub(crate) mod proxy;
pub(crate) mod route;
pub mod runtime;
pub mod schema;
pub(crate) mod server;
pub mod telemetry;
#[cfg(test)]
mod test_io;
pub(crate) mod tls;
pub(crate) mod when_woken;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

pub use config::Config;
pub use server::assemble::StartError;
use server::assemble::{build_long_lived, build_proxy, start_backends};
pub use server::check::{MethodsReport, describe_methods};

use server::accept;

use arc_swap::ArcSwap;

use crate::admin::Readiness;
use crate::layers::load_shed::Shedding;
use crate::proxy::LiveProxy;
use crate::server::reload;
use crate::server::stack::data_service;
use crate::tls::ServerTls;

/// The two bound sockets the gateway serves.
#[derive(Debug)]
pub struct Listeners {
    /// The data listener (proxied gRPC calls and the health service).
    pub data: TcpListener,
    /// The admin listener (`/healthz`, `/readyz`).
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses in `config`.
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        let data = TcpListener::bind(config.listen).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot bind listen address {}: {e}", config.listen),
            )
        })?;
        let admin = TcpListener::bind(config.admin.listen).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot bind admin.listen address {}: {e}",
                    config.admin.listen
                ),
            )
        })?;
        Ok(Self { data, admin })
    }
}

/// How long startup waits for the first attempt to subscribe to the invalidation channel.
const IN_STEP_WITHIN: Duration = Duration::from_secs(2);

/// How long shutdown waits for queued L2 writes, so a restarted replica finds what this one fetched last.
const FLUSH_WRITES_WITHIN: Duration = Duration::from_secs(2);

/// Serves `config` on `listeners` until `shutdown` completes, then drains in-flight calls (within
/// `shutdown_grace`) and queued L2 writes.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    run_watching(config, None, listeners, shutdown).await
}

/// Like [`run`], and when `config_file` is given, reloads the config when the file changes or on SIGHUP.
pub async fn run_watching(
    config: Config,
    config_file: Option<std::path::PathBuf>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let long_lived = build_long_lived(&config)?;
    let backends = start_backends(&config, &long_lived)?;
    let live: LiveProxy = Arc::new(ArcSwap::from_pointee(build_proxy(
        &config,
        &long_lived,
        backends,
    )?));
    let cache = long_lived.cache.clone();
    // Tasks that run as long as the gateway serves, ended when it stops.
    let mut background = Vec::new();
    // The backends' descriptors: which methods stream, their request types, the cache policy their protos declare.
    background.push(tokio::spawn(schema::refresh_forever(
        long_lived.schema.clone(),
        server::descriptors::FromLiveProxy(live.clone()),
        long_lived.metrics.descriptor_methods(),
    )));
    background.extend(config_file.map(|path| {
        tokio::spawn(reload::watch(
            path,
            config.clone(),
            live.clone(),
            long_lived.clone(),
        ))
    }));
    let tls = match &config.tls {
        Some(tls) => Some(ServerTls::load(tls).map_err(|e| StartError::Tls(e.to_string()))?),
        None => None,
    };
    // Certificates rotated in place (a Kubernetes secret) are picked up without a restart.
    background.extend(
        tls.as_ref()
            .zip(config.tls.as_ref())
            .map(|(tls, c)| tokio::spawn(tls.clone().reload_forever(c.reload_interval))),
    );
    let health_reporter = HealthReporter::new();
    let health = HealthServer::new(HealthService::from_health_reporter(health_reporter.clone()));
    let shedding = Shedding::new(config.max_concurrent_requests, long_lived.stats.clone());
    let readiness = Readiness::new(shedding.clone());

    // Shutdown begins: stop reporting ready at once, so load balancers drain this replica while calls finish.
    let begin_shutdown = {
        let (readiness, health_reporter) = (readiness.clone(), health_reporter.clone());
        let drain_delay = config.drain_delay;
        async move {
            shutdown.await;
            readiness.set(false);
            health_reporter
                .set_service_status("", ServingStatus::NotServing)
                .await;
            // Load balancers need a moment to see the readiness change: keep accepting meanwhile.
            tokio::time::sleep(drain_delay).await;
        }
    };

    // The admin listener outlives the data listener's drain, so `/readyz` keeps answering 503 meanwhile.
    let (admin_stop, admin_stopped) = watch::channel(false);
    let admin_addr = listeners.admin.local_addr().map(|a| a.to_string());
    let admin_services = admin::AdminServices::new(live.clone(), long_lived.metrics.clone())
        .map_err(|e| StartError::Admin(e.to_string()))?;
    let admin = tokio::spawn(admin::serve(
        listeners.admin,
        admin_services,
        readiness.clone(),
        admin_stopped,
    ));
    // Keeps this replica in step (see strata_cache's `coherence`): subscribed to the invalidation channel, so its L1
    // and generations reflect the invalidations made through any replica. The first attempt is awaited (briefly) so
    // that L1 is not filled before it and cleared by it.
    let in_step = cache.keep_in_step();
    let subscribing = in_step.is_some();
    background.extend(in_step);
    if subscribing && !cache.wait_in_step(IN_STEP_WITHIN).await {
        tracing::warn!(
            "invalidation channel not available yet; L1 trusted only for young entries until it is"
        );
    }

    let (scheduler, worker_threads) = runtime::describe_current();
    tracing::info!(
        listen = %listeners.data.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        admin = %admin_addr.unwrap_or_default(),
        routes = config.routes.len(),
        l2 = config.cache.l2.is_some(),
        scheduler,
        worker_threads,
        "strata gateway serving"
    );
    readiness.set(true);
    // gRPC health on the data listener says what /readyz says: not serving while shedding or shutting down.
    background.push(tokio::spawn(follow_readiness(
        health_reporter.clone(),
        readiness.clone(),
    )));
    let limits = accept::Limits {
        grace: config.shutdown_grace,
        idle: Some(config.idle_timeout),
    };
    let service = data_service(live.clone(), health, shedding);
    server::data::serve(
        listeners.data,
        tls.as_deref(),
        begin_shutdown,
        limits,
        service,
    )
    .await;

    if !cache.flush_writes(FLUSH_WRITES_WITHIN).await {
        tracing::warn!("queued L2 writes not flushed before shutdown; they are dropped");
    }
    for task in background {
        task.abort();
    }
    let _ = admin_stop.send(true);
    let _ = admin.await;
    tracing::info!("strata gateway stopped");
    Ok(())
}

/// Keeps the gRPC health status of the server as a whole in line with readiness, until aborted.
async fn follow_readiness(reporter: HealthReporter, readiness: Readiness) {
    let mut reported = None;
    loop {
        let ready = readiness.is_ready();
        if reported != Some(ready) {
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status("", status).await;
            reported = Some(ready);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
