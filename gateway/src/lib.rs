//! Strata's gateway: a gRPC edge proxy that answers cached unary routes from L1, L2 or one backend call per key,
//! and proxies everything else untouched.
//!
//! [`run`] takes bound listeners, so tests (and `strata serve`) start the real gateway on any port.

pub mod admin;
pub mod backend;
pub mod config;
pub mod grpc;
pub mod layers;
pub mod proxy;
pub mod router;
pub mod server;
pub mod service;
pub mod status;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use strata_cache::l2::{L2, RedisL2, RedisL2Config};
use strata_cache::{Policy, Tiered, TieredConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

pub use config::Config;

use crate::admin::Readiness;
use crate::backend::Backend;
use crate::proxy::{Proxy, ProxyOptions};
use crate::router::{CacheRule, Matcher, Route, Router};
use crate::service::data_service;

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

/// Why the gateway could not start with a config that passed validation.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A backend's endpoints could not be set up.
    #[error("backend setup failed: {0}")]
    Backend(String),
    /// The Redis client could not be set up.
    #[error("cache.l2: {0}")]
    Redis(String),
}

/// How long shutdown waits for queued L2 writes, so a restarted replica finds what this one fetched last.
const FLUSH_WRITES_WITHIN: Duration = Duration::from_secs(2);

/// Serves `config` on `listeners` until `shutdown` completes, then drains in-flight calls (within
/// `shutdown_grace`) and queued L2 writes.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let proxy = Arc::new(build_proxy(&config)?);
    let health_reporter = HealthReporter::new();
    let health = HealthServer::new(HealthService::from_health_reporter(health_reporter.clone()));
    let readiness = Readiness::default();

    // Shutdown begins: stop reporting ready at once, so load balancers drain this replica while calls finish.
    let begin_shutdown = {
        let (readiness, health_reporter) = (readiness.clone(), health_reporter.clone());
        async move {
            shutdown.await;
            readiness.set(false);
            health_reporter
                .set_service_status("", ServingStatus::NotServing)
                .await;
        }
    };

    // The admin listener outlives the data listener's drain, so `/readyz` keeps answering 503 meanwhile.
    let (admin_stop, admin_stopped) = watch::channel(false);
    let admin = tokio::spawn(serve_admin(
        listeners.admin,
        readiness.clone(),
        admin_stopped,
    ));

    tracing::info!(
        listen = %listeners.data.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        routes = config.routes.len(),
        l2 = config.cache.l2.is_some(),
        "strata gateway serving"
    );
    readiness.set(true);
    let data_service = data_service(proxy.clone(), health);
    let mut h2 = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    h2.timer(hyper_util::rt::TokioTimer::new());
    server::serve(
        listeners.data,
        begin_shutdown,
        config.shutdown_grace,
        |io| h2.serve_connection(io, data_service.clone()),
    )
    .await;

    if !proxy.cache().flush_writes(FLUSH_WRITES_WITHIN).await {
        tracing::warn!("queued L2 writes not flushed before shutdown; they are dropped");
    }
    let _ = admin_stop.send(true);
    let _ = admin.await;
    tracing::info!("strata gateway stopped");
    Ok(())
}

async fn serve_admin(
    listener: TcpListener,
    readiness: Readiness,
    mut stopping: watch::Receiver<bool>,
) {
    let http1 = hyper::server::conn::http1::Builder::new();
    let stopped = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    server::serve(listener, stopped, Duration::from_secs(1), |io| {
        let readiness = readiness.clone();
        http1.serve_connection(
            io,
            hyper::service::service_fn(move |req| admin::handle(req, readiness.clone())),
        )
    })
    .await;
}

/// Builds backends, routes and the cache from a validated config.
pub fn build_proxy(config: &Config) -> Result<Proxy, StartError> {
    let backends = config
        .backends
        .iter()
        .map(|(name, b)| {
            Backend::new(name, b)
                .map(|backend| (name.clone(), Arc::new(backend)))
                .map_err(|e| StartError::Backend(e.to_string()))
        })
        .collect::<Result<BTreeMap<_, _>, _>>()?;

    let mut routes = Vec::with_capacity(config.routes.len());
    for r in &config.routes {
        let matcher = Matcher::parse(&r.matches).map_err(StartError::Backend)?;
        let backend = backends
            .get(&r.backend)
            .cloned()
            .ok_or_else(|| StartError::Backend(format!("unknown backend `{}`", r.backend)))?;
        let cache = r.cache.as_ref().map(|c| CacheRule {
            policy: Policy { ttl: c.ttl },
            vary: c
                .vary
                .iter()
                .filter_map(|name| http::HeaderName::from_bytes(name.as_bytes()).ok())
                .collect(),
        });
        routes.push(Route::new(r.matches.clone(), matcher, backend, cache));
    }

    let l2: Option<Arc<dyn L2>> = match &config.cache.l2 {
        Some(l2) => {
            let redis = RedisL2::new(&RedisL2Config {
                url: l2.url.clone(),
                timeout: l2.timeout,
                key_prefix: config.cache.namespace.clone(),
            })
            .map_err(|e| StartError::Redis(e.to_string()))?;
            Some(Arc::new(redis))
        }
        None => None,
    };
    let cache = Tiered::new(
        &TieredConfig {
            l1_max_bytes: config.cache.l1.max_bytes,
            flight_wait: config.cache.flight_wait,
            write_queue: config.cache.l2.as_ref().map_or(1, |l2| l2.write_queue),
        },
        l2,
    );
    Ok(Proxy::new(
        Router::new(routes),
        Arc::new(cache),
        ProxyOptions {
            namespace: config.cache.namespace.clone(),
            max_request_bytes: config.max_request_bytes,
            max_response_bytes: config.max_response_bytes,
            expose_cache_status: config.expose_cache_status,
        },
    ))
}
