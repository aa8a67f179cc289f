//! Backends: endpoints (static or discovered through DNS), one lazily connected HTTP/2 channel each, a balancer over
//! those healthy and not ejected, a limit on calls in flight, retries, and the deadlines the backend allows.

mod balance;
mod connection;
mod discovery;
mod endpoint;
mod health;
mod pool;
pub(crate) mod retry;
mod stream_body;

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use prometheus_client::metrics::histogram::Histogram;
use tonic::body::Body;
use tracing::Instrument;

use self::balance::Balancer;
pub use self::discovery::Resolver;
use self::endpoint::CallFailure;
pub use self::endpoint::Endpoint;
use self::pool::Pool;
pub use self::retry::RetryPolicy;
use crate::config::Target;
use crate::config::{BackendConfig, OutlierConfig};
use crate::error::GatewayError;
use crate::grpc::deadline::Deadline;
use crate::grpc::timeout;
use crate::in_flight;
use crate::metrics::{BackendLabels, BackendMetrics, BackendSeconds};

/// A backend service and its endpoints.
#[derive(Debug)]
pub struct Backend {
    name: String,
    pool: Arc<Pool>,
    resolvers: Vec<tokio::task::JoinHandle<()>>,
    balancer: Balancer,
    outlier: Option<OutlierConfig>,
    max_concurrent_requests: Option<usize>,
    in_flight: in_flight::Counter,
    default_timeout: Option<Duration>,
    max_timeout: Option<Duration>,
    /// The longest the gateway waits for an answer on a cached route.
    pub timeout: Duration,
    /// How calls on cached routes are retried (`None`: never).
    pub retry: Option<RetryPolicy>,
    metrics: Option<BackendMetrics>,
    /// The call-duration histograms by outcome, looked up once rather than per call.
    call_seconds: Option<CallSeconds>,
}

/// A backend's call-duration histograms, one per outcome.
#[derive(Debug)]
struct CallSeconds {
    ok: Histogram,
    refused: Histogram,
    error: Histogram,
}

impl CallSeconds {
    fn of(family: &BackendSeconds, backend: &str) -> Self {
        let get = |outcome| {
            family
                .get_or_create(&BackendLabels {
                    backend: backend.to_owned(),
                    outcome,
                })
                .clone()
        };
        Self {
            ok: get("ok"),
            refused: get("refused"),
            error: get("error"),
        }
    }
}

impl Backend {
    /// Prepares a channel per static endpoint without connecting (the gateway starts even while a backend is down),
    /// starts resolving `dns:///` endpoints and health-checking, so it needs a tokio runtime.
    pub fn start(
        name: &str,
        config: &BackendConfig,
        resolver: &Resolver,
        metrics: Option<BackendMetrics>,
    ) -> Result<Arc<Self>, GatewayError> {
        let static_urls: Vec<String> = config
            .endpoints
            .iter()
            .filter_map(|t| match t {
                Target::Static(url) => Some(url.clone()),
                Target::Dns { .. } => None,
            })
            .collect();
        let pool = Arc::new(Pool::new(name, config, &static_urls, metrics.clone())?);
        let resolvers = config
            .endpoints
            .iter()
            .filter_map(|t| match t {
                Target::Dns { name, port } => Some(tokio::spawn(discovery::resolve_forever(
                    Arc::downgrade(&pool),
                    resolver.clone(),
                    name.clone(),
                    *port,
                    config.resolve_interval,
                ))),
                Target::Static(_) => None,
            })
            .collect();
        Ok(Arc::new(Self {
            name: name.to_owned(),
            pool,
            resolvers,
            balancer: Balancer::new(config.lb),
            outlier: config.outlier.clone(),
            max_concurrent_requests: config.max_concurrent_requests,
            in_flight: in_flight::Counter::default(),
            default_timeout: config.default_timeout,
            max_timeout: config.max_timeout,
            timeout: config.timeout,
            retry: config.retry.as_ref().map(RetryPolicy::new),
            call_seconds: metrics.as_ref().map(|m| CallSeconds::of(&m.seconds, name)),
            metrics,
        }))
    }

    /// The backend's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its endpoints now (for tests and admin).
    pub fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.pool.current()
    }

    /// The deadline a call to this backend runs under: the client's, clamped to `max_timeout`; when the client sent
    /// none, `default_timeout`, else `max_timeout` (a call without a deadline is still bounded by the maximum).
    pub fn deadline_for(&self, client: Deadline) -> Deadline {
        match (client.requested(), self.max_timeout, self.default_timeout) {
            (Some(requested), Some(max), _) if requested > max => client.clamped_to(max),
            (None, _, Some(default)) => Deadline::after(default),
            (None, Some(max), None) => Deadline::after(max),
            _ => client,
        }
    }

    /// Sends one call to an available endpoint under `deadline`: the backend is told the time left
    /// (`grpc-timeout`), and the connection stops waiting for the answer's headers when it passes. The request URI
    /// needs only its path: the channel sets the origin. The call is under way when this returns (on an open
    /// connection); its future owns what it needs, so that it outlives its caller's borrows.
    pub fn call(
        self: &Arc<Self>,
        mut request: http::Request<Body>,
        deadline: Deadline,
    ) -> impl Future<Output = Result<http::Response<Body>, GatewayError>> + Send + use<> {
        tell_deadline(&mut request, deadline);
        self.call_endpoint(request, deadline, Purpose::Client)
    }

    /// Sends one of the gateway's own calls (reflection) to an available endpoint under `deadline`. It takes no
    /// slot of `max_concurrent_requests`, is not in the call metrics, and counts neither for nor against an endpoint:
    /// clients' calls are treated as if it had not been made.
    pub fn call_for_gateway(
        self: &Arc<Self>,
        mut request: http::Request<Body>,
        deadline: Deadline,
    ) -> impl Future<Output = Result<http::Response<Body>, GatewayError>> + Send + use<> {
        tell_deadline(&mut request, deadline);
        self.call_endpoint(request, deadline, Purpose::Gateway)
    }

    /// Sends `request` to the endpoint the balancer picks, waiting for the answer's headers at most until `deadline`.
    ///
    /// Not an async fn: what can be done before the call waits — admission, the pick, the span, the request handed
    /// to the endpoint's transport — is done at once, and the future keeps only the transport's and what judges its
    /// outcome. An async fn would keep the request for the call's whole life and move the transport's future into a
    /// slot of its own when it starts: more to copy, and more cache lines touched, on every call.
    fn call_endpoint(
        self: &Arc<Self>,
        mut request: http::Request<Body>,
        deadline: Deadline,
        purpose: Purpose,
    ) -> impl Future<Output = Result<http::Response<Body>, GatewayError>> + Send + use<> {
        use futures::future::Either;
        // A client's call is timed (the clock read only for the histogram that needs it); the gateway's own is not.
        let started = (purpose == Purpose::Client && self.call_seconds.is_some())
            .then(tokio::time::Instant::now);
        let failed = |err: GatewayError| {
            self.time_call(started, Err(&err));
            Either::Left(std::future::ready(Err(err)))
        };
        let admitted = match purpose {
            Purpose::Client => match self.admit() {
                Ok(admitted) => Some(admitted),
                Err(refused) => return failed(refused),
            },
            Purpose::Gateway => None,
        };
        let Some(endpoint) = self.balancer.pick(&self.pool.current()) else {
            return failed(GatewayError::BackendUnavailable {
                backend: self.name.clone(),
                reason: "no endpoint is healthy and in rotation".into(),
            });
        };
        let in_flight = endpoint.start_call();
        // The backend's span becomes a child of this one. A span no layer records (traces not exported) carries no
        // context to pass on, and needs no entering at every poll.
        let span =
            tracing::info_span!("strata.backend", backend = %self.name, endpoint = %endpoint.url);
        if !span.is_disabled() {
            span.in_scope(|| crate::telemetry::inject_current(request.headers_mut()));
        }
        // For the log line of a failed call: logs carry no span context (see telemetry::init).
        let method = request.uri().path_and_query().cloned();
        let call = endpoint.transport.send(request, deadline);
        // One future either way: two would each have a place in the caller's.
        let call = if span.is_disabled() {
            Either::Left(call)
        } else {
            Either::Right(call.instrument(span))
        };
        // Everything the answer's head settles, in one step: a level per step would each copy what it wraps.
        let backend = Arc::clone(self);
        Either::Right(call.map(move |result| {
            let _admitted = admitted;
            let _in_flight = in_flight;
            let judged = backend.judged(&endpoint, method.as_ref(), purpose, result);
            backend.time_call(started, judged.as_ref().map(|_| ()));
            judged
        }))
    }

    /// Records how long a client's call to this backend took (`started`: when it began, if it is timed), by its
    /// outcome.
    fn time_call(&self, started: Option<tokio::time::Instant>, outcome: Result<(), &GatewayError>) {
        if let (Some(seconds), Some(started)) = (&self.call_seconds, started) {
            let histogram = match outcome {
                Ok(()) => &seconds.ok,
                Err(GatewayError::BackendOverloaded { .. }) => &seconds.refused,
                Err(_) => &seconds.error,
            };
            histogram.observe(started.elapsed().as_secs_f64());
        }
    }

    /// A backend call's outcome: it counts for or against `endpoint` (with outlier detection), and a failure
    /// becomes the client's error, logged with the call's `method`.
    fn judged(
        &self,
        endpoint: &Endpoint,
        method: Option<&http::uri::PathAndQuery>,
        purpose: Purpose,
        result: Result<http::Response<Body>, CallFailure>,
    ) -> Result<http::Response<Body>, GatewayError> {
        // Failure streaks matter only to outlier detection.
        if self.outlier.is_some() {
            match &result {
                _ if purpose == Purpose::Gateway => {}
                Ok(response) if !is_endpoint_failure(response) => endpoint.record_success(),
                Err(err) if is_timeout(err.as_ref()) => {}
                _ => self.record_failure(endpoint),
            }
        }
        result.map_err(|err| {
            if is_timeout(err.as_ref()) {
                // The connection (tonic's channel, for TLS, by the `grpc-timeout` header) enforces the deadline: it
                // passed.
                GatewayError::BackendDeadline {
                    backend: self.name.clone(),
                }
            } else if purpose == Purpose::Gateway {
                // Its caller says what failed, once.
                tracing::debug!(backend = %self.name, endpoint = %endpoint.url, error = %error_chain(err.as_ref()), "the gateway's own call failed");
                GatewayError::BackendUnavailable {
                    backend: self.name.clone(),
                    reason: reason_for_client(err.as_ref()),
                }
            } else {
                tracing::warn!(
                    backend = %self.name,
                    endpoint = %endpoint.url,
                    method = %method.map_or("", |m| m.path()),
                    error = %error_chain(err.as_ref()),
                    "call to the backend failed"
                );
                GatewayError::BackendUnavailable {
                    backend: self.name.clone(),
                    reason: reason_for_client(err.as_ref()),
                }
            }
        })
    }

    /// Counts a call against `max_concurrent_requests`, or refuses it at once.
    fn admit(&self) -> Result<in_flight::Guard, GatewayError> {
        let (admitted, now) = self.in_flight.enter();
        match self.max_concurrent_requests {
            Some(max) if now > max => Err(GatewayError::BackendOverloaded {
                backend: self.name.clone(),
                limit: max,
            }),
            _ => Ok(admitted),
        }
    }

    /// Counts a failure of `endpoint`, ejecting it when its streak reaches the threshold — unless that would eject
    /// more than `max_ejection_percent` of the endpoints.
    fn record_failure(&self, endpoint: &Endpoint) {
        let streak = endpoint.record_failure();
        let Some(outlier) = &self.outlier else { return };
        if streak < outlier.consecutive_failures || endpoint.is_ejected() {
            return;
        }
        let endpoints = self.pool.current();
        let ejected = endpoints.iter().filter(|e| e.is_ejected()).count();
        let allowed = endpoints.len() * outlier.max_ejection_percent as usize / 100;
        if ejected < allowed {
            let length = endpoint.eject(outlier.base_ejection_time);
            tracing::warn!(backend = %self.name, endpoint = %endpoint.url, ?length, streak, "endpoint ejected");
            if let Some(metrics) = &self.metrics {
                metrics.endpoint_event(&self.name, "ejected");
            }
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        for task in &self.resolvers {
            task.abort();
        }
    }
}

/// Whether an answer says the endpoint itself failed (as opposed to the call): a gateway-level HTTP error, or a
/// Trailers-Only UNAVAILABLE.
fn is_endpoint_failure(response: &http::Response<Body>) -> bool {
    matches!(response.status().as_u16(), 502..=504)
        || response
            .headers()
            .get(crate::grpc::code::STATUS_HEADER)
            .is_some_and(|s| s.as_bytes() == b"14")
}

/// Whether the error, or any of its sources, is the call's `grpc-timeout` running out (in our connection, or in
/// tonic's channel for TLS endpoints).
fn is_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.is::<tonic::TimeoutExpired>()
            || e.downcast_ref::<connection::CallError>()
                .is_some_and(|e| matches!(e, connection::CallError::DeadlineExpired(_)))
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// What a client is told of a failed call to an endpoint: the kind of failure, never the endpoint's address.
fn reason_for_client(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(call) = e.downcast_ref::<connection::CallError>() {
            return call.for_client();
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return format!("connection failed: {}", io.kind());
        }
        current = e.source();
    }
    "connection failed".into()
}

/// An error and its sources, `: `-separated (transport errors hide the useful part in their sources).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut last = text.clone();
    let mut source = err.source();
    while let Some(s) = source {
        // Some layers wrap an error and print it again: keep each message once.
        let message = s.to_string();
        if message != last {
            text.push_str(": ");
            text.push_str(&message);
            last = message;
        }
        source = s.source();
    }
    text
}

/// Tells the backend the time left before `deadline` (`grpc-timeout`).
fn tell_deadline(request: &mut http::Request<Body>, deadline: Deadline) {
    let Some(left) = deadline.remaining() else {
        return;
    };
    request
        .headers_mut()
        .insert(timeout::HEADER, timeout::header_value(left));
}

/// Whose call a backend call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// A client's: admitted against the limits, counted, and judging the endpoint.
    Client,
    /// The gateway's own (reflection): none of that.
    Gateway,
}
