//! Backends: one lazily connected HTTP/2 channel per endpoint, called round-robin.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::ServiceExt;

use crate::config::BackendConfig;
use crate::status::GatewayError;

/// A backend service and its endpoints.
#[derive(Debug)]
pub struct Backend {
    name: String,
    channels: Vec<Channel>,
    next: AtomicUsize,
    /// The longest the gateway waits for an answer on a cached route.
    pub timeout: Duration,
}

impl Backend {
    /// Prepares a channel per endpoint without connecting (the gateway starts even while a backend is down).
    pub fn new(name: &str, config: &BackendConfig) -> Result<Self, GatewayError> {
        let channels = config
            .endpoints
            .iter()
            .map(|url| {
                let endpoint = Endpoint::from_shared(url.clone()).map_err(|e| {
                    GatewayError::Internal(format!(
                        "backends.{name}: endpoint `{url}` rejected: {e}"
                    ))
                })?;
                Ok(endpoint
                    .connect_timeout(config.connect_timeout)
                    .tcp_nodelay(true)
                    .http2_adaptive_window(true)
                    .connect_lazy())
            })
            .collect::<Result<Vec<_>, GatewayError>>()?;
        Ok(Self {
            name: name.to_owned(),
            channels,
            next: AtomicUsize::new(0),
            timeout: config.timeout,
        })
    }

    /// The backend's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends one call to the next endpoint. The request URI needs only its path: the channel sets the origin.
    pub async fn call(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, GatewayError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len().max(1);
        let Some(channel) = self.channels.get(i) else {
            return Err(GatewayError::Internal(format!(
                "backend {} has no endpoints",
                self.name
            )));
        };
        channel.clone().oneshot(request).await.map_err(|err| {
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
