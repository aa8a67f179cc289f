//! Turning a validated config into the running parts: backends, routes, and the tiered cache.

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_cache::l2::{L2, RedisL2, RedisL2Config, RedisNodes};
use strata_cache::{Policy, Tiered, TieredConfig};

use crate::backend::{Backend, RetryPolicy};
use crate::config::Config;
use crate::grpc::code;
use crate::metrics::Metrics;
use crate::proxy::rate_limit::RateLimit;
use crate::proxy::storage::StorageRules;
use crate::proxy::{Proxy, ProxyOptions, ProxyStats, Shared};
use crate::router::{CacheRule, Matcher, Route, Router};

/// Why the gateway could not start with a config that passed validation.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A backend's endpoints could not be set up.
    #[error("backend setup failed: {0}")]
    Backend(String),
    /// A route could not be set up.
    #[error("routes[{index}]: {reason}")]
    Route { index: usize, reason: String },
    /// The TLS files could not be used.
    #[error("tls: {0}")]
    Tls(String),
    /// The admin services could not be set up.
    #[error("admin: {0}")]
    Admin(String),
    /// The Redis client could not be set up.
    #[error("cache.l2: {0}")]
    Redis(String),
}

/// Builds what outlives a config reload: the cache (with its L2), the counters, the metrics registry.
pub fn build_shared(config: &Config) -> Result<Shared, StartError> {
    let cache = Arc::new(build_cache(config)?);
    let stats = Arc::new(ProxyStats::default());
    let metrics = Metrics::new(cache.clone(), stats.clone(), config.log.access);
    Ok(Shared {
        cache,
        stats,
        metrics,
    })
}

/// Builds backends and routes from a validated config, over the long-lived parts in `shared`.
pub fn build_proxy(config: &Config, shared: &Shared) -> Result<Proxy, StartError> {
    let backends = config
        .backends
        .iter()
        .map(|(name, b)| {
            Backend::start(name, b, Some(shared.metrics.backend()))
                .map(|backend| (name.clone(), backend))
                .map_err(|e| StartError::Backend(e.to_string()))
        })
        .collect::<Result<BTreeMap<_, _>, _>>()?;

    let mut routes = Vec::with_capacity(config.routes.len());
    for (index, r) in config.routes.iter().enumerate() {
        let matcher =
            Matcher::parse(&r.matches).map_err(|reason| StartError::Route { index, reason })?;
        let backend = backends
            .get(&r.backend)
            .cloned()
            .ok_or_else(|| StartError::Route {
                index,
                reason: format!("unknown backend `{}`", r.backend),
            })?;
        let cache = r.cache.as_ref().map(|c| {
            Arc::new(CacheRule {
                policy: Policy {
                    early_refresh_beta: c.early_refresh_beta,
                },
                storage: StorageRules {
                    ttl: c.ttl,
                    negative_ttl: c.negative_ttl,
                    negative_codes: c
                        .negative_codes
                        .iter()
                        .filter_map(|n| code::from_name(n))
                        .collect(),
                    stale_while_revalidate: c.stale_while_revalidate,
                    stale_if_error: c.stale_if_error,
                    max_ttl: c.max_ttl,
                    max_entry_bytes: c.max_entry_bytes,
                    private_metadata: header_names(&config.cache.private_metadata),
                },
                vary: header_names(&c.vary),
                shared: c.shared,
            })
        });
        let rate_limit = r.rate_limit.as_ref().map(|l| Arc::new(RateLimit::new(l)));
        let retry = r.retry.as_ref().map(RetryPolicy::new);
        routes.push(Route::new(
            matcher,
            backend,
            cache,
            rate_limit,
            retry,
            shared.metrics.route_series(&r.matches),
        ));
    }

    Ok(Proxy::new(
        Router::new(routes),
        shared,
        ProxyOptions {
            namespace: config.cache.namespace.clone(),
            max_request_bytes: config.max_request_bytes,
            max_response_bytes: config.max_response_bytes,
            expose_cache_status: config.expose_cache_status,
        },
    ))
}

fn build_cache(config: &Config) -> Result<Tiered, StartError> {
    let l2: Option<Arc<dyn L2>> = match &config.cache.l2 {
        Some(l2) => {
            let nodes = match &l2.url {
                Some(url) => RedisNodes::Single(url.clone()),
                None => RedisNodes::Cluster(l2.cluster.clone()),
            };
            let redis = RedisL2::new(&RedisL2Config {
                nodes,
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
            l1_max_age_out_of_step: config.cache.l1.max_ttl_when_disconnected,
            lease: config
                .cache
                .lease
                .as_ref()
                .map(|lease| strata_cache::LeaseConfig { ttl: lease.ttl }),
        },
        l2,
    );
    Ok(cache)
}

/// Metadata names (validated by the config) as header names.
fn header_names(names: &[String]) -> Vec<http::HeaderName> {
    names
        .iter()
        .filter_map(|name| http::HeaderName::from_bytes(name.as_bytes()).ok())
        .collect()
}
