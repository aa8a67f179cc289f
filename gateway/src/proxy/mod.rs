//! The data path: route a call, then either answer it through the cache (cached unary routes) or forward it
//! untouched (everything else).

pub mod cache_key;
mod call_deadline;
mod loader;
mod metadata;
mod passthrough;
pub mod plan;
mod replay;
mod stream_deadline;
mod unary;

use std::pin::Pin;
use std::sync::Arc;

use strata_cache::Tiered;
use tokio::time::Instant;
use tonic::body::Body;

use self::cache_key::Codec;
use self::call_deadline::CallDeadline;
use crate::config::{ApplyTo, DescriptorsConfig, Matcher};
use crate::error::GatewayError;
use crate::grpc::CacheResult;
use crate::grpc::deadline::Deadline;
use crate::metrics::{Metrics, ProxyStats, RouteSeries};
use crate::route::{Route, Router};
use crate::schema::{LiveSchema, Schema, StreamsSeen};
use arc_swap::ArcSwap;
use plan::{Plans, RouteView};

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
    /// Where the backends' descriptors come from.
    pub descriptors: DescriptorsConfig,
}

/// What outlives a config reload: the cache (and its namespace), the counters, the metrics registry and the resolver.
#[derive(Debug, Clone)]
pub struct LongLived {
    /// The namespace the cache was started with: key prefix and channel in Redis, part of every key.
    pub namespace: String,
    /// The tiered cache.
    pub cache: Arc<Tiered>,
    /// Counters of the data path.
    pub stats: Arc<ProxyStats>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Where backends resolve their `dns:///` names.
    pub resolver: crate::backend::Resolver,
    /// The backends' method descriptors, kept current in the background.
    pub schema: Arc<LiveSchema>,
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

/// The proxy serving new calls, replaced whole on a reload.
pub type LiveProxy = Arc<arc_swap::ArcSwap<Proxy>>;

/// Everything a call needs: the routes, the cache, the limits.
#[derive(Debug)]
pub struct Proxy {
    router: Router,
    backends: Backends,
    cache: Arc<Tiered>,
    options: ProxyOptions,
    stats: Arc<ProxyStats>,
    metrics: Arc<Metrics>,
    /// Methods without a descriptor that a backend answered with a stream.
    streams_seen: Arc<StreamsSeen>,
    /// The methods' descriptors.
    schema: Arc<LiveSchema>,
    /// What the cached path does with each method that has a descriptor (rebuilt when the schema changes).
    plans: ArcSwap<Plans>,
}

impl Proxy {
    /// A data path over `router` (whose routes use `backends`) and the long-lived parts in `long_lived`.
    pub fn new(
        router: Router,
        backends: Backends,
        long_lived: &LongLived,
        options: ProxyOptions,
    ) -> Self {
        Self {
            router,
            backends,
            cache: long_lived.cache.clone(),
            options,
            stats: long_lived.stats.clone(),
            metrics: long_lived.metrics.clone(),
            streams_seen: Arc::default(),
            plans: ArcSwap::from_pointee(Plans::default()),
            schema: long_lived.schema.clone(),
        }
        .planned(&long_lived.schema.load())
    }

    fn planned(self, schema: &Schema) -> Self {
        self.replan(schema);
        self
    }

    /// Works out again what the cached path does with each method, for `schema`; logs what does not fit.
    pub fn replan(&self, schema: &Schema) {
        let routes: Vec<RouteView<'_>> = self
            .router
            .routes()
            .map(|route| RouteView {
                matcher: route.matcher(),
                backend: route.backend.name(),
                cache: route.cache.as_ref(),
            })
            .collect();
        let plans = Plans::new(&routes, schema);
        let old = self.plans.load();
        for (path, plan) in plans.sorted() {
            // Said once per schema change, not at every refresh.
            let Some(problem) = plan
                .problem
                .as_ref()
                .filter(|p| old.get(path).and_then(|o| o.problem.as_ref()) != Some(*p))
            else {
                continue;
            };
            if problem.is_error {
                tracing::error!(method = %path, "cache rules do not fit the method: {}", problem.reason);
            } else {
                tracing::info!(method = %path, "{}", problem.reason);
            }
        }
        self.plans.store(Arc::new(plans));
    }

    /// What the cached path does with each method that has a descriptor (an `Arc`: callers may hold it across an
    /// await).
    pub fn plans(&self) -> Arc<Plans> {
        self.plans.load_full()
    }

    /// The backends' method descriptors.
    pub fn schema(&self) -> &Arc<LiveSchema> {
        &self.schema
    }

    /// Where the backends' descriptors come from.
    pub fn descriptors(&self) -> &DescriptorsConfig {
        &self.options.descriptors
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

    /// Answers one call. Never fails: every error becomes a gRPC status response, a passed deadline included (the
    /// client's `grpc-timeout`, read here once, or one the gateway sets; see [`call_deadline`]).
    ///
    /// Every call is counted once in the metrics and the access log, whatever ends it: its answer, or — when this
    /// future is dropped before it answers — the client going away (`CANCELLED`, or `DEADLINE_EXCEEDED` once its
    /// deadline passed).
    ///
    /// Not an async fn, nor an async block: the call is routed and dispatched as it arrives — a forwarded call is on
    /// its way to the backend when this returns — and the future returned is the chosen path's own, owning what it
    /// needs, mapped to the call's answer. A level of `async` code above it would keep the request in its state until
    /// its first poll, and move the path's future into a slot of its own: copies, and cache lines touched, on every
    /// call (docs/BENCHMARKS.md, round twenty-one).
    pub fn handle(
        self: Arc<Self>,
        request: http::Request<Body>,
    ) -> impl Future<Output = http::Response<Body>> + Send + 'static {
        use futures::FutureExt;
        use futures::future::Either;
        use tracing::Instrument;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let started = Instant::now();
        let client_deadline = Deadline::from_headers(request.headers());
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
        let found = self.router.find(request.uri().path());
        let series = found.map(|(_, route)| route.series.clone());
        let outcome = match found {
            // A span no layer records (traces not exported) needs no entering, now or at every poll.
            Some((place, route)) if span.is_disabled() => Either::Left(Either::Left(
                self.dispatch_to(place, route, request, client_deadline),
            )),
            // Inside the span: the dispatch starts the backend call at once, whose span and the trace context the
            // backend is sent are this one's children.
            Some((place, route)) => {
                let dispatched =
                    span.in_scope(|| self.dispatch_to(place, route, request, client_deadline));
                Either::Left(Either::Right(dispatched.instrument(span.clone())))
            }
            None => {
                let error = GatewayError::NoRoute {
                    path: request.uri().path().to_owned(),
                };
                Either::Right(std::future::ready((error.to_response(None), None)))
            }
        };
        let answering = Answering {
            proxy: self,
            series,
            started,
            client_deadline,
            span,
            answered: false,
        };
        outcome.map(move |outcome| answering.answer(outcome))
    }

    /// Counts a call refused before it reached the proxy (load shedding) under its route, and returns its answer.
    pub fn refused(
        &self,
        path: &str,
        started: Instant,
        response: http::Response<Body>,
    ) -> http::Response<Body> {
        let series = self.router.route(path).map(|r| r.series.clone());
        self.metrics.observe(series, started, None, response)
    }

    /// Works out how the call is answered — through the cache, forwarded with retries, or forwarded as it is — and
    /// starts it; returns the future that answers it. `route` is the route at `place`.
    ///
    /// A forwarded call is handed to its backend here (on an open connection); the future left waits for its answer's
    /// head, and holds no request. The paths the proxy works on own the proxy, and find `route` again by its place.
    fn dispatch_to(
        self: &Arc<Self>,
        place: usize,
        route: &Route,
        request: http::Request<Body>,
        client_deadline: Deadline,
    ) -> impl Future<Output = Outcome> + Send + use<> {
        use futures::FutureExt;
        use futures::future::Either;
        // A limit on every call is checked first; one on misses only where a call reaches the backend: a call that
        // is not looked up in the cache always does (an uncached route, or a call that is not gRPC); a looked-up call
        // does when it bypasses the cache, or when the loader is about to call the backend for it.
        let path = request.uri().path();
        // The rule the call is looked up under, what is known of its method, and how its key is built; `None`:
        // carried through untouched. Only a cached route's calls need the plans.
        let plans = route.cache.as_ref().map(|_| self.plans.load());
        let plan = plans.as_ref().and_then(|plans| plans.get(path));
        if route.cache.is_some() && plan.is_none() && self.options.descriptors.reflection {
            // A cached route's method without a descriptor: the backends are asked again soon (at most every 10 s).
            self.schema.ask_again();
        }
        let lookup = match (&route.cache, plan) {
            (None, _) => None,
            (Some(_), Some(plan)) => plan
                .rule
                .as_ref()
                .map(|rule| (rule.clone(), unary::Unary::Known, plan.key.clone())),
            // No descriptor: a `from_proto` route caches only what a descriptor declares.
            (Some(rule), None) if rule.config.from_proto => None,
            (Some(_), None) if self.streams_seen.contains(path) => None,
            // An exact route names its method: it is unary, as the operator said (a descriptor overrides).
            (Some(rule), None) if matches!(route.matcher(), Matcher::Exact(_)) => {
                Some((rule.clone(), unary::Unary::Known, None))
            }
            (Some(rule), None) => Some((rule.clone(), unary::Unary::Presumed, None)),
        };
        drop(plans);
        let cached = lookup.and_then(|lookup| Some((lookup, cacheable_codec(&request)?)));
        let looked_up = cached.is_some();
        if let Some(limit) = &route.rate_limit {
            if limit.apply_to == ApplyTo::All || !looked_up {
                if let Err(refused) = limit.check(request.headers()) {
                    self.stats.count_rate_limited();
                    return Either::Left(std::future::ready((refused.to_response(None), None)));
                }
            }
        }
        // The backend may allow less time than the client asked for, or give calls without a deadline one.
        let call_deadline =
            CallDeadline::new(client_deadline, route.backend.deadline_for(client_deadline));
        let deadline = call_deadline.deadline;
        // The paths the proxy works on are boxed: the cached path's future is the largest, and a forwarded call would
        // otherwise carry its room — copied into the call's box and touched on every call, for nothing.
        let worked_on: Pin<Box<dyn Future<Output = Outcome> + Send>> = match cached {
            Some(((rule, unary, canonical), codec)) => {
                let proxy = Arc::clone(self);
                Box::pin(async move {
                    let Some(route) = proxy.router.at(place) else {
                        return (lost_route(place), None);
                    };
                    let canonical = canonical.as_deref();
                    unary::answer(
                        &proxy, route, &rule, request, &codec, deadline, unary, canonical,
                    )
                    .await
                })
            }
            None => match &route.retry {
                Some(_) => {
                    let proxy = Arc::clone(self);
                    Box::pin(async move {
                        let Some(route) = proxy.router.at(place) else {
                            return (lost_route(place), None);
                        };
                        let Some(policy) = &route.retry else {
                            return (lost_route(place), None);
                        };
                        let max_request_bytes = proxy.options.max_request_bytes;
                        let response = passthrough::forward_with_retries(
                            &route.backend,
                            policy,
                            request,
                            deadline,
                            max_request_bytes,
                            &proxy.stats,
                        )
                        .await;
                        (response, None)
                    })
                }
                None => {
                    // The answer made and settled in one step around the backend call: a level per step would each
                    // copy the call's future and touch its lines.
                    let forwarded = route.backend.call(request, deadline).map(move |answer| {
                        call_deadline.settled(answer.unwrap_or_else(|err| err.to_response(None)))
                    });
                    return Either::Right(Either::Right(forwarded));
                }
            },
        };
        Either::Right(Either::Left(call_deadline.bound_whole(worked_on)))
    }

    /// `result`, when answers say where they came from (`expose_cache_status`).
    fn cache_status(&self, result: CacheResult) -> Option<CacheResult> {
        self.options.expose_cache_status.then_some(result)
    }
}

/// A call being answered: what its answer is counted and traced with. Dropped before it answered (the client went
/// away), it counts the call as unanswered.
struct Answering {
    proxy: Arc<Proxy>,
    series: Option<Arc<RouteSeries>>,
    started: Instant,
    client_deadline: Deadline,
    span: tracing::Span,
    answered: bool,
}

impl Answering {
    /// The call's answer, once it has one: traced, and counted when its body ends.
    fn answer(mut self, (response, cache): Outcome) -> http::Response<Body> {
        self.answered = true;
        let span = &self.span;
        if !span.is_disabled() {
            let route = self
                .series
                .as_ref()
                .map_or("unrouted", |s| s.route().as_str());
            span.record("route", route);
            if let Some(cache) = cache {
                span.record("cache", cache.as_str());
            }
            if let Some(code) = response
                .headers()
                .get(crate::grpc::code::STATUS_HEADER)
                .and_then(|v| v.to_str().ok())
            {
                span.record("grpc.status", code);
            }
        }
        let series = self.series.take();
        self.proxy
            .metrics
            .observe(series, self.started, cache, response)
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let code = match self.client_deadline.at() {
            Some(at) if Instant::now() >= at => tonic::Code::DeadlineExceeded,
            _ => tonic::Code::Cancelled,
        };
        let series = self.series.take();
        self.proxy
            .metrics
            .count_unanswered(series, self.started, code);
    }
}

/// The answer of a call whose route is not where dispatching it found it: cannot happen (a proxy's routes never
/// change), but answered as an internal error rather than a panic.
fn lost_route(place: usize) -> http::Response<Body> {
    GatewayError::Internal(format!(
        "route #{place} went missing while its call was dispatched"
    ))
    .to_response(None)
}

/// A call's response and, on a cached route, where its answer came from (`l1`, `miss`, `bypass`, …).
type Outcome = (http::Response<Body>, Option<CacheResult>);

/// The message codec of a call the cache may answer: `application/grpc`, `application/grpc+proto` or
/// `application/grpc+<subtype>` (`json`, say). `None` for anything else — gRPC-Web (`application/grpc-web…`), content
/// types with parameters, or no gRPC at all — which is forwarded as it came.
fn cacheable_codec(request: &http::Request<Body>) -> Option<Codec> {
    if request.method() != http::Method::POST {
        return None;
    }
    let content_type = request
        .headers()
        .get(http::header::CONTENT_TYPE)?
        .as_bytes();
    let rest = content_type.strip_prefix(b"application/grpc")?;
    match rest.strip_prefix(b"+") {
        None if rest.is_empty() => Some(Codec::Proto),
        Some(b"proto") => Some(Codec::Proto),
        Some(subtype) => {
            let token = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(b);
            let name = std::str::from_utf8(subtype).ok()?;
            (!subtype.is_empty() && subtype.iter().all(token))
                .then(|| Codec::Other(name.to_owned()))
        }
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: http::Method, content_type: Option<&str>) -> http::Request<Body> {
        let mut request = http::Request::new(Body::empty());
        *request.method_mut() = method;
        if let Some(value) = content_type {
            let value = http::HeaderValue::from_str(value).expect("valid");
            request
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, value);
        }
        request
    }

    #[test]
    fn only_grpc_calls_with_a_known_codec_are_looked_up() {
        let codec = |ct| cacheable_codec(&request(http::Method::POST, Some(ct)));
        assert_eq!(codec("application/grpc"), Some(Codec::Proto));
        assert_eq!(codec("application/grpc+proto"), Some(Codec::Proto));
        assert_eq!(
            codec("application/grpc+json"),
            Some(Codec::Other("json".into()))
        );
        for refused in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web-text",
            "application/grpcx",
            "application/grpc+",
            "application/grpc; charset=utf-8",
            "application/grpc+JSON",
            "application/json",
        ] {
            assert_eq!(codec(refused), None, "{refused}");
        }
        assert_eq!(cacheable_codec(&request(http::Method::POST, None)), None);
        let get = request(http::Method::GET, Some("application/grpc"));
        assert_eq!(cacheable_codec(&get), None);
    }
}
