//! The data path: route a call, then either answer it through the cache (cached unary routes) or forward it
//! untouched (everything else).

pub(crate) mod cache_control;
pub mod cache_key;
mod loader;
mod metadata;
mod passthrough;
pub mod rate_limit;
mod replay;
mod stats;
pub mod storage;
mod unary;

use std::sync::Arc;

use strata_cache::Tiered;
use tokio::time::Instant;
use tonic::body::Body;

pub use self::stats::ProxyStats;
use crate::config::ApplyTo;
use crate::layers::deadline::Deadline;
use crate::metrics::{Metrics, RouteSeries};
use crate::router::{Route, Router};
use crate::status::GatewayError;

/// Response metadata saying which level answered: `l1`, `l2`, `miss`, `coalesced`, `bypass`.
pub const CACHE_STATUS_HEADER: &str = "x-strata-cache";

/// [`CACHE_STATUS_HEADER`] as a header name (a name given as a string is copied on every use).
const CACHE_STATUS: http::HeaderName = http::HeaderName::from_static(CACHE_STATUS_HEADER);

/// Limits and switches of the data path.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Namespace mixed into every cache key (the one the cache was started with: it is also the Redis prefix).
    pub namespace: String,
    /// Bearer token admin mutations need; `None` refuses them (a reload changes it).
    pub admin_token: Option<String>,
    /// Largest request message accepted on a cached route.
    pub max_request_bytes: u64,
    /// Largest backend answer collected on a cached route.
    pub max_response_bytes: u64,
    /// Whether to send `x-strata-cache`.
    pub expose_cache_status: bool,
}

/// What outlives a config reload: the cache (and its namespace), the counters and the metrics registry.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The namespace the cache was started with: key prefix and channel in Redis, part of every key.
    pub namespace: String,
    /// The tiered cache.
    pub cache: Arc<Tiered>,
    /// Counters of the data path.
    pub stats: Arc<ProxyStats>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
}

/// A running backend and the config it was started from (a reload keeps it when that is unchanged).
#[derive(Debug, Clone)]
pub struct RunningBackend {
    /// Its config, as validated.
    pub config: crate::config::BackendConfig,
    /// The backend, with its endpoints, health, ejection and breaker state, and connections.
    pub backend: Arc<crate::backend::Backend>,
}

/// The running backends by name.
pub type Backends = std::collections::BTreeMap<String, RunningBackend>;

/// Everything a call needs: the routes, the cache, the limits.
#[derive(Debug)]
pub struct Proxy {
    router: Router,
    backends: Backends,
    cache: Arc<Tiered>,
    options: ProxyOptions,
    stats: Arc<ProxyStats>,
    metrics: Arc<Metrics>,
}

impl Proxy {
    /// A data path over `router` (whose routes use `backends`) and the long-lived parts in `shared`.
    pub fn new(router: Router, backends: Backends, shared: &Shared, options: ProxyOptions) -> Self {
        Self {
            router,
            backends,
            cache: shared.cache.clone(),
            options,
            stats: shared.stats.clone(),
            metrics: shared.metrics.clone(),
        }
    }

    /// The cache this proxy answers from.
    pub fn cache(&self) -> &Arc<Tiered> {
        &self.cache
    }

    /// The routes.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The namespace mixed into every cache key.
    pub fn namespace(&self) -> &str {
        &self.options.namespace
    }

    /// The backends, by name.
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// The token admin mutations need, if any.
    pub fn admin_token(&self) -> Option<&str> {
        self.options.admin_token.as_deref()
    }

    /// The counters of the data path.
    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Answers one call. Never fails: every error becomes a gRPC status response. The call's deadline comes from
    /// the request's extensions (put there by [`crate::layers::deadline::DeadlineLayer`], which also enforces it).
    ///
    /// Every call is counted once in the metrics and the access log, whatever ends it: its answer, or — when this
    /// future is dropped before it answers — the deadline layer (`DEADLINE_EXCEEDED`) or the client going away
    /// (`CANCELLED`).
    pub async fn handle(&self, request: http::Request<Body>) -> http::Response<Body> {
        use tracing::Instrument;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let started = Instant::now();
        let deadline = request
            .extensions()
            .get::<Deadline>()
            .copied()
            .unwrap_or_default();
        let route = self.router.route(request.uri().path());
        let series = route.map(|r| &r.series);
        let mut unanswered = Unanswered {
            metrics: &self.metrics,
            series,
            started,
            deadline,
            answered: false,
        };
        // One span per call, child of the client's trace when it sent one; no message bytes in it.
        let span = tracing::info_span!(
            "strata.call",
            otel.name = %request.uri().path(),
            rpc.method = %request.uri().path(),
            route = tracing::field::Empty,
            cache = tracing::field::Empty,
            grpc.status = tracing::field::Empty,
        );
        // Reading the client's trace context is only worth it when the span is recorded (traces exported).
        if !span.is_disabled() {
            let _ = span.set_parent(crate::telemetry::extract(request.headers()));
        }
        let (response, cache) = match route {
            Some(route) => {
                self.dispatch_to(route, request, deadline)
                    .instrument(span.clone())
                    .await
            }
            None => {
                let error = GatewayError::NoRoute {
                    path: request.uri().path().to_owned(),
                };
                (error.to_response(None), None)
            }
        };
        unanswered.answered = true;
        span.record("route", series.map_or("unrouted", |s| s.route().as_str()));
        if let Some(cache) = cache {
            span.record("cache", cache);
        }
        if let Some(code) = response
            .headers()
            .get(crate::grpc::code::STATUS_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            span.record("grpc.status", code);
        }
        self.metrics.observe(series, started, cache, response)
    }

    /// Counts a call refused before it reached the proxy (load shedding) under its route, and returns its answer.
    pub fn refused(
        &self,
        path: &str,
        started: Instant,
        response: http::Response<Body>,
    ) -> http::Response<Body> {
        let series = self.router.route(path).map(|r| &r.series);
        self.metrics.observe(series, started, None, response)
    }

    async fn dispatch_to(
        &self,
        route: &Route,
        request: http::Request<Body>,
        client_deadline: Deadline,
    ) -> Answer {
        // A limit on every call is checked first; one on misses only where a call reaches the backend: a call that
        // is not looked up in the cache always does (an uncached route, or a call that is not gRPC); a looked-up call
        // does when it bypasses the cache, or when the loader is about to call the backend for it.
        let looked_up = route.cache.is_some() && is_grpc(&request);
        if let Some(limit) = &route.rate_limit {
            if limit.apply_to == ApplyTo::All || !looked_up {
                if let Err(refused) = limit.check(request.headers()) {
                    self.stats.count_rate_limited();
                    return (refused.to_response(None), None);
                }
            }
        }
        // The backend may allow less time than the client asked for, or give calls without a deadline one.
        let deadline = route.backend.deadline_for(client_deadline);
        let call = async {
            match &route.cache {
                Some(rule) if looked_up => {
                    unary::answer(self, route, rule, request, deadline).await
                }
                _ => match &route.retry {
                    Some(policy) => {
                        let limit = self.options.max_request_bytes;
                        // Boxed: a large future the calls without retries should not carry.
                        let forwarded = Box::pin(passthrough::forward_with_retries(
                            &route.backend,
                            policy,
                            request,
                            deadline,
                            limit,
                        ));
                        (forwarded.await, None)
                    }
                    None => (
                        passthrough::forward(&route.backend, request, deadline).await,
                        None,
                    ),
                },
            }
        };
        match deadline.at() {
            Some(at) if deadline.at() != client_deadline.at() => {
                match tokio::time::timeout_at(at, call).await {
                    Ok(answer) => answer,
                    Err(_) => {
                        let error =
                            GatewayError::Deadline(deadline.requested().unwrap_or_default());
                        (error.to_response(None), None)
                    }
                }
            }
            _ => call.await,
        }
    }

    fn cache_status(&self, value: &'static str) -> Option<&'static str> {
        self.options.expose_cache_status.then_some(value)
    }
}

/// A call being answered; dropped before it answered (the client went away, or the deadline layer answered), it
/// counts the call. Once the call has its answer, that answer is counted instead.
struct Unanswered<'a> {
    metrics: &'a Arc<Metrics>,
    series: Option<&'a Arc<RouteSeries>>,
    started: Instant,
    deadline: Deadline,
    answered: bool,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let code = match self.deadline.at() {
            Some(at) if Instant::now() >= at => tonic::Code::DeadlineExceeded,
            _ => tonic::Code::Cancelled,
        };
        self.metrics
            .count_unanswered(self.series, self.started, code);
    }
}

/// A call's response and, on a cached route, where its answer came from (`l1`, `miss`, `bypass`, …).
type Answer = (http::Response<Body>, Option<&'static str>);

/// Whether the request is a gRPC call (only those are cached; anything else is forwarded as it came).
fn is_grpc(request: &http::Request<Body>) -> bool {
    request.method() == http::Method::POST
        && request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}
