//! Routing: a call's path (`/pkg.Service/Method`) → the first route whose `match` fits, and what the route says
//! about the call: its backend, how its answers are cached (keys, storage rules, the backend's `cache-control`) and
//! its rate limit.

pub(crate) mod cache_control;
pub mod rate_limit;
pub mod storage;

use std::sync::Arc;

use http::HeaderName;
use strata_cache::Policy;

use crate::backend::{Backend, RetryPolicy};
use crate::config::{Matcher, RouteCacheConfig};
use crate::metrics::RouteSeries;
use rate_limit::RateLimit;
use storage::StorageRules;

/// How a cached route (or, on a `from_proto` route, one method) builds keys, stores answers and serves them.
#[derive(Debug)]
pub struct CacheRule {
    /// The config it was built from.
    pub config: RouteCacheConfig,
    /// How lookups behave (early refresh).
    pub policy: Policy,
    /// Whether and how long answers are stored.
    pub storage: StorageRules,
    /// Request metadata whose values are part of the key.
    pub vary: Vec<HeaderName>,
    /// Cache calls carrying credentials even when the key does not vary on them.
    pub shared: bool,
}

/// Request metadata that identifies a caller: a call carrying it is not answered from a cache shared with others,
/// unless the route varies on it or is explicitly `shared`.
const CREDENTIALS: [http::HeaderName; 2] = [http::header::AUTHORIZATION, http::header::COOKIE];

impl CacheRule {
    /// The rule `config` describes; `private_metadata` is never stored (`cache.private_metadata`).
    pub fn new(config: RouteCacheConfig, private_metadata: Vec<HeaderName>) -> Self {
        Self {
            policy: Policy {
                early_refresh_beta: config.early_refresh_beta,
            },
            storage: StorageRules {
                ttl: config.ttl,
                negative_ttl: config.negative_ttl,
                negative_codes: config.negative_codes.clone(),
                stale_while_revalidate: config.stale_while_revalidate,
                stale_if_error: config.stale_if_error,
                max_ttl: config.max_ttl,
                max_entry_bytes: config.max_entry_bytes,
                private_metadata,
            },
            vary: config.vary.clone(),
            shared: config.shared,
            config,
        }
    }

    /// Whether a call with `headers` must bypass the cache: it carries credentials the key does not vary on.
    pub fn must_bypass(&self, headers: &http::HeaderMap) -> bool {
        !self.shared
            && CREDENTIALS
                .iter()
                .any(|c| headers.contains_key(c) && !self.vary.contains(c))
    }
}

/// One route, ready to serve.
#[derive(Debug)]
pub struct Route {
    /// Its call metrics, looked up once; their route label is the route's `match` as configured, its name.
    pub series: Arc<RouteSeries>,
    matcher: Matcher,
    /// Where its calls go.
    pub backend: Arc<Backend>,
    /// `Some` for cached routes.
    pub cache: Option<Arc<CacheRule>>,
    /// `Some` for rate-limited routes.
    pub rate_limit: Option<Arc<RateLimit>>,
    /// `Some` for passthrough routes whose calls are buffered and retried.
    pub retry: Option<RetryPolicy>,
}

impl Route {
    /// What its `match` accepts.
    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// A route from its parts.
    pub fn new(
        matcher: Matcher,
        backend: Arc<Backend>,
        cache: Option<Arc<CacheRule>>,
        rate_limit: Option<Arc<RateLimit>>,
        retry: Option<RetryPolicy>,
        series: Arc<RouteSeries>,
    ) -> Self {
        Self {
            series,
            matcher,
            backend,
            cache,
            rate_limit,
            retry,
        }
    }
}

/// The routes in configured order.
#[derive(Debug)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// A router trying `routes` in order.
    pub fn new(routes: Vec<Route>) -> Self {
        Self { routes }
    }

    /// The first route matching `path`, if any.
    pub fn route(&self, path: &str) -> Option<&Route> {
        self.find(path).map(|(_, route)| route)
    }

    /// The first route matching `path` and its place among the routes (for [`Router::at`]), if any.
    pub fn find(&self, path: &str) -> Option<(usize, &Route)> {
        self.routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.matcher.matches(path))
    }

    /// The route at `place`, as [`Router::find`] gave it: a future that owns the proxy finds its route again with it.
    pub fn at(&self, place: usize) -> Option<&Route> {
        self.routes.get(place)
    }

    /// Every route, in order.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }
}
