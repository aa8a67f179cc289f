//! Backends: one lazily connected HTTP/2 channel per endpoint, a balancer over the endpoints that are healthy and not
//! ejected, a limit on calls in flight, and the deadlines the backend allows.

mod balance;
mod endpoint;
mod health;
mod retry;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::body::Body;
use tonic::transport::Channel;
use tower::ServiceExt;

use self::balance::Balancer;
pub use self::endpoint::Endpoint;
pub use self::retry::RetryPolicy;
use crate::config::{BackendConfig, OutlierConfig};
use crate::layers::deadline::Deadline;
use crate::status::GatewayError;

/// A backend service and its endpoints.
#[derive(Debug)]
pub struct Backend {
    name: String,
    endpoints: Vec<Arc<Endpoint>>,
    balancer: Balancer,
    outlier: Option<OutlierConfig>,
    max_concurrent_requests: Option<usize>,
    in_flight: AtomicUsize,
    default_timeout: Option<Duration>,
    max_timeout: Option<Duration>,
    health_checks: Vec<tokio::task::JoinHandle<()>>,
    /// The longest the gateway waits for an answer on a cached route.
    pub timeout: Duration,
    /// How calls on cached routes are retried (`None`: never).
    pub retry: Option<RetryPolicy>,
}

impl Backend {
    /// Prepares a channel per endpoint without connecting (the gateway starts even while a backend is down), and
    /// starts the health checks if configured (so it needs a tokio runtime).
    pub fn new(name: &str, config: &BackendConfig) -> Result<Self, GatewayError> {
        let endpoints = config
            .endpoints
            .iter()
            .map(|url| {
                let endpoint =
                    tonic::transport::Endpoint::from_shared(url.clone()).map_err(|e| {
                        GatewayError::Internal(format!(
                            "backends.{name}: endpoint `{url}` rejected: {e}"
                        ))
                    })?;
                let channel: Channel = endpoint
                    .connect_timeout(config.connect_timeout)
                    .tcp_nodelay(true)
                    .http2_adaptive_window(true)
                    .http2_keep_alive_interval(config.keepalive_interval)
                    .keep_alive_timeout(config.keepalive_timeout)
                    .keep_alive_while_idle(true)
                    .connect_lazy();
                Ok(Arc::new(Endpoint::new(url.clone(), channel)))
            })
            .collect::<Result<Vec<_>, GatewayError>>()?;
        let health_checks = match &config.health_check {
            Some(hc) => endpoints
                .iter()
                .map(|e| tokio::spawn(health::check_forever(e.clone(), hc.clone())))
                .collect(),
            None => Vec::new(),
        };
        Ok(Self {
            name: name.to_owned(),
            endpoints,
            balancer: Balancer::new(config.lb),
            outlier: config.outlier.clone(),
            max_concurrent_requests: config.max_concurrent_requests,
            in_flight: AtomicUsize::new(0),
            default_timeout: config.default_timeout,
            max_timeout: config.max_timeout,
            health_checks,
            timeout: config.timeout,
            retry: config.retry.as_ref().map(RetryPolicy::new),
        })
    }

    /// The backend's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its endpoints (for tests and admin).
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// The deadline a call to this backend runs under: the client's, clamped to `max_timeout`, or `default_timeout`
    /// when the client sent none.
    pub fn deadline_for(&self, client: Deadline) -> Deadline {
        match (client.requested(), self.max_timeout, self.default_timeout) {
            (Some(requested), Some(max), _) if requested > max => client.clamped_to(max),
            (None, _, Some(default)) => Deadline::after(default),
            _ => client,
        }
    }

    /// Sends one call to an available endpoint. The request URI needs only its path: the channel sets the origin.
    pub async fn call(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, GatewayError> {
        let _admitted = self.admit()?;
        let endpoint = self.balancer.pick(&self.endpoints).ok_or_else(|| {
            GatewayError::BackendUnavailable {
                backend: self.name.clone(),
                reason: "no endpoint is healthy and in rotation".into(),
            }
        })?;
        let _in_flight = endpoint.start_call();
        let result = endpoint.channel.clone().oneshot(request).await;
        match &result {
            Ok(response) if !is_endpoint_failure(response) => endpoint.record_success(),
            Err(err) if is_timeout(err) => {}
            _ => self.record_failure(&endpoint),
        }
        result.map_err(|err| {
            if is_timeout(&err) {
                // The channel enforces the `grpc-timeout` the request carries: the deadline passed.
                GatewayError::BackendDeadline {
                    backend: self.name.clone(),
                }
            } else {
                GatewayError::BackendUnavailable {
                    backend: self.name.clone(),
                    reason: error_chain(&err),
                }
            }
        })
    }

    /// Counts a call against `max_concurrent_requests`, or refuses it at once.
    fn admit(&self) -> Result<Admitted<'_>, GatewayError> {
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        let admitted = Admitted(&self.in_flight);
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
        let ejected = self.endpoints.iter().filter(|e| e.is_ejected()).count();
        let allowed = self.endpoints.len() * outlier.max_ejection_percent as usize / 100;
        if ejected < allowed {
            let length = endpoint.eject(outlier.base_ejection_time);
            tracing::warn!(backend = %self.name, endpoint = %endpoint.url, ?length, streak, "endpoint ejected");
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        for task in &self.health_checks {
            task.abort();
        }
    }
}

/// A call counted against the backend's limit until dropped.
struct Admitted<'a>(&'a AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether an answer says the endpoint itself failed (as opposed to the call): a gateway-level HTTP error, or a
/// Trailers-Only UNAVAILABLE.
fn is_endpoint_failure(response: &http::Response<Body>) -> bool {
    matches!(response.status().as_u16(), 502..=504)
        || response
            .headers()
            .get("grpc-status")
            .is_some_and(|s| s.as_bytes() == b"14")
}

/// Whether the error, or any of its sources, is tonic's deadline timer firing.
fn is_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.is::<tonic::TimeoutExpired>() {
            return true;
        }
        current = e.source();
    }
    false
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
