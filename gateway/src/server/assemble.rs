//! Turning a validated config into the running parts: backends, routes, and the tiered cache.

use std::sync::Arc;
use std::time::Duration;

use strata_cache::l2::{L2, RedisL2, RedisL2Config, RedisNodes};
use strata_cache::{Tiered, TieredConfig};

use crate::backend::{Backend, Resolver, RetryPolicy};
use crate::config::{BackendConfig, Config};
use crate::metrics::Metrics;
use crate::metrics::ProxyStats;
use crate::proxy::{Backends, LongLived, Proxy, ProxyOptions, RunningBackend};
use crate::route::rate_limit::RateLimit;
use crate::route::{CacheRule, Route, Router};

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
pub fn build_long_lived(config: &Config) -> Result<LongLived, StartError> {
    let cache = Arc::new(build_cache(config)?);
    let stats = Arc::new(ProxyStats::default());
    let metrics = Metrics::new(cache.clone(), stats.clone(), config.log.access);
    Ok(LongLived {
        namespace: config.cache.namespace.clone(),
        cache,
        stats,
        metrics,
        resolver: Resolver::System,
        schema: Arc::default(),
    })
}

/// Starts the backends of a validated config (at startup: nothing runs yet).
pub fn start_backends(config: &Config, long_lived: &LongLived) -> Result<Backends, StartError> {
    config
        .backends
        .iter()
        .map(|(name, b)| start_backend(name, b, long_lived).map(|running| (name.clone(), running)))
        .collect()
}

fn start_backend(
    name: &str,
    config: &BackendConfig,
    long_lived: &LongLived,
) -> Result<RunningBackend, StartError> {
    let backend = Backend::start(
        name,
        config,
        &long_lived.resolver,
        Some(long_lived.metrics.backend()),
    )
    .map_err(|e| StartError::Backend(e.to_string()))?;
    Ok(RunningBackend {
        config: config.clone(),
        backend,
    })
}

/// The backends of `config` when it replaces a running one: a backend whose config is unchanged is kept as it runs
/// (endpoints, resolved addresses, health, ejection and breaker state, connections); a new or changed one is started
/// and, when it resolves names, waited for (up to `resolve_within`) until it has endpoints. A changed backend with
/// none by then is not swapped in: the running one stays, and the log says so.
pub async fn replace_backends(
    config: &Config,
    long_lived: &LongLived,
    running: &Backends,
    resolve_within: Duration,
) -> Result<Backends, StartError> {
    let mut backends = Backends::new();
    for (name, wanted) in &config.backends {
        let old = running.get(name);
        if let Some(unchanged) = old.filter(|old| old.config == *wanted) {
            backends.insert(name.clone(), unchanged.clone());
            continue;
        }
        let started = start_backend(name, wanted, long_lived)?;
        let resolved = tokio::time::timeout(resolve_within, async {
            while started.backend.endpoints().is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .is_ok();
        match old {
            Some(old) if !resolved => {
                tracing::error!(
                    field = %format!("backends.{name}"),
                    "the changed backend has no endpoints after {resolve_within:?} (its names did not resolve); \
                     the running one stays until a reload that resolves"
                );
                backends.insert(name.clone(), old.clone());
            }
            _ => {
                backends.insert(name.clone(), started);
            }
        }
    }
    Ok(backends)
}

/// Builds the routes of a validated config over running `backends` and the long-lived parts in `long_lived`.
pub fn build_proxy(
    config: &Config,
    long_lived: &LongLived,
    backends: Backends,
) -> Result<Proxy, StartError> {
    let mut routes = Vec::with_capacity(config.routes.len());
    for (index, r) in config.routes.iter().enumerate() {
        let backend = backends
            .get(&r.backend)
            .map(|running| running.backend.clone())
            .ok_or_else(|| StartError::Route {
                index,
                reason: format!("unknown backend `{}`", r.backend),
            })?;
        let cache = r.cache.as_ref().map(|c| {
            Arc::new(CacheRule::new(
                c.clone(),
                config.cache.private_metadata.clone(),
            ))
        });
        let rate_limit = r.rate_limit.as_ref().map(|l| Arc::new(RateLimit::new(l)));
        let retry = r.retry.as_ref().map(RetryPolicy::new);
        routes.push(Route::new(
            r.matcher.clone(),
            backend,
            cache,
            rate_limit,
            retry,
            long_lived.metrics.route_series(&r.matcher.to_string()),
        ));
    }

    Ok(Proxy::new(
        Router::new(routes),
        backends,
        long_lived,
        ProxyOptions {
            // The namespace is also the Redis prefix and channel, fixed when the cache started.
            namespace: long_lived.namespace.clone(),
            admin_token: config.admin.token.clone(),
            max_request_bytes: config.max_request_bytes,
            max_response_bytes: config.max_response_bytes,
            expose_cache_status: config.expose_cache_status,
            descriptors: config.descriptors.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(backend: &str, namespace: &str) -> Config {
        Config::from_yaml(&format!(
            "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\ncache: {{ namespace: {namespace} }}\n\
             backends:\n  b: {backend}\n\
             routes:\n  - match: \"*\"\n    backend: b\n    cache: {{ ttl: 1s }}\n"
        ))
        .expect("valid")
    }

    const STATIC: &str = r#"{ endpoints: ["http://127.0.0.1:1"], timeout: 2s }"#;

    #[tokio::test]
    async fn a_reload_keeps_unchanged_backends_and_the_running_namespace() {
        let first = config(STATIC, "ns");
        let long_lived = build_long_lived(&first).expect("shared");
        let running = start_backends(&first, &long_lived).expect("backends");

        let same = config(STATIC, "renamed");
        let kept = replace_backends(&same, &long_lived, &running, Duration::from_secs(1))
            .await
            .expect("backends");
        assert!(
            Arc::ptr_eq(&kept["b"].backend, &running["b"].backend),
            "an unchanged backend is the running one, state and connections included"
        );
        let proxy = build_proxy(&same, &long_lived, kept).expect("proxy");
        assert_eq!(
            proxy.namespace(),
            "ns",
            "keys keep the namespace the cache (and its Redis prefix) started with"
        );

        let changed = config(
            r#"{ endpoints: ["http://127.0.0.1:1"], timeout: 3s }"#,
            "ns",
        );
        let replaced = replace_backends(&changed, &long_lived, &running, Duration::from_secs(1))
            .await
            .expect("backends");
        assert!(!Arc::ptr_eq(&replaced["b"].backend, &running["b"].backend));
    }

    /// A changed backend whose names do not resolve is not swapped in: the running one, with its endpoints, stays.
    #[tokio::test]
    async fn a_changed_backend_that_does_not_resolve_keeps_the_running_one() {
        let first = config(STATIC, "ns");
        let long_lived = build_long_lived(&first).expect("shared");
        let running = start_backends(&first, &long_lived).expect("backends");
        // `.invalid` never resolves (RFC 2606).
        let unresolvable = config(
            r#"{ endpoints: ["dns:///strata-test.invalid:50051"] }"#,
            "ns",
        );
        let kept = replace_backends(
            &unresolvable,
            &long_lived,
            &running,
            Duration::from_millis(300),
        )
        .await
        .expect("backends");
        assert!(Arc::ptr_eq(&kept["b"].backend, &running["b"].backend));
        assert_eq!(kept["b"].backend.endpoints().len(), 1);
    }

    /// A hosts file the test rewrites: what `dns:///` names resolve to.
    struct Hosts(std::path::PathBuf);

    impl Hosts {
        fn new(text: &str) -> Self {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("strata-hosts-{}-{n}", std::process::id()));
            let hosts = Self(path);
            hosts.set(text);
            hosts
        }

        fn set(&self, text: &str) {
            std::fs::write(&self.0, text).expect("write the hosts file");
        }
    }

    impl Drop for Hosts {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn urls(backend: &Backend) -> Vec<String> {
        backend.endpoints().iter().map(|e| e.url.clone()).collect()
    }

    /// Waits (at most 10 s) until `backend`'s endpoints are `want`.
    async fn endpoints_become(backend: &Backend, want: &[&str]) -> bool {
        for _ in 0..500 {
            if urls(backend) == want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    const DNS: &str = r#"{ endpoints: ["dns:///svc.strata.test:50051"], resolve_interval: 50ms }"#;

    #[tokio::test]
    async fn a_dns_backend_follows_its_name_and_a_reload_resolves_before_it_swaps() {
        let hosts = Hosts::new("127.0.0.2 svc.strata.test\n");
        let first = config(DNS, "ns");
        let mut long_lived = build_long_lived(&first).expect("shared");
        long_lived.resolver = Resolver::HostsFile(hosts.0.clone());
        let running = start_backends(&first, &long_lived).expect("backends");
        let backend = &running["b"].backend;
        assert!(endpoints_become(backend, &["http://127.0.0.2:50051"]).await);

        // The name moves: the running backend follows at its next resolution.
        hosts.set("127.0.0.3 svc.strata.test\n");
        assert!(endpoints_become(backend, &["http://127.0.0.3:50051"]).await);
        // The name stops resolving: the endpoints known so far stay.
        hosts.set("127.0.0.9 another.name\n");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(urls(backend), ["http://127.0.0.3:50051"]);

        // A reload that keeps the backend's config keeps the backend and what it resolved.
        hosts.set("127.0.0.4 svc.strata.test\n");
        let kept = replace_backends(&first, &long_lived, &running, Duration::from_secs(5))
            .await
            .expect("backends");
        assert!(Arc::ptr_eq(&kept["b"].backend, backend));
        // A reload that changes it: the new backend has resolved the name before it replaces the running one.
        let changed = config(
            r#"{ endpoints: ["dns:///svc.strata.test:50051"], resolve_interval: 50ms, timeout: 3s }"#,
            "ns",
        );
        let replaced = replace_backends(&changed, &long_lived, &running, Duration::from_secs(10))
            .await
            .expect("backends");
        assert!(!Arc::ptr_eq(&replaced["b"].backend, backend));
        assert_eq!(urls(&replaced["b"].backend), ["http://127.0.0.4:50051"]);
    }
}
