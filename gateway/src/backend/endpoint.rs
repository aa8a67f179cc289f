//! One backend endpoint: its transport (an HTTP/2 connection) and what the balancer, the health checker and outlier
//! detection know of it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::TryFutureExt;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::transport::Channel;

use super::connection::Connection;
use crate::grpc::deadline::Deadline;
use crate::in_flight;

/// Any error of a call to an endpoint.
pub type CallFailure = Box<dyn std::error::Error + Send + Sync>;

/// How calls reach an endpoint: plaintext over the gateway's own lean HTTP/2 connection, TLS over tonic's channel
/// (rustls).
#[derive(Debug, Clone)]
pub enum Transport {
    /// `http://` endpoints.
    Plain(Connection),
    /// `https://` endpoints.
    Tls(Channel),
}

impl tower::Service<http::Request<Body>> for Transport {
    type Response = http::Response<Body>;
    type Error = CallFailure;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, CallFailure>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CallFailure>> {
        match self {
            Self::Plain(_) => Poll::Ready(Ok(())),
            Self::Tls(channel) => channel.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The sending futures themselves, not futures wrapped around them: a wrapping level copies what it wraps.
        match self {
            // Tonic's clients (health checks) set no deadline of their own to enforce.
            Self::Plain(connection) => {
                Box::pin(connection.send(request, Deadline::default()).err_into())
            }
            Self::Tls(channel) => Box::pin(channel.call(request).err_into()),
        }
    }
}

impl Transport {
    /// Sends one call, waiting for the answer's headers at most until `deadline` (the plain connection's timer; tonic's
    /// channel enforces the request's `grpc-timeout`). The backend calls of the proxy take this way: a plain
    /// connection's sending future is held in the caller's, not boxed per call as the tower service (for tonic's
    /// clients, e.g. health checks) must.
    pub fn send(
        &self,
        request: http::Request<Body>,
        deadline: Deadline,
    ) -> impl Future<Output = Result<http::Response<Body>, CallFailure>> + Send + use<> {
        use tower::ServiceExt;
        match self {
            Self::Plain(connection) => {
                futures::future::Either::Left(connection.send(request, deadline).err_into())
            }
            Self::Tls(channel) => {
                futures::future::Either::Right(channel.clone().oneshot(request).err_into())
            }
        }
    }
}

/// An endpoint of a backend.
#[derive(Debug)]
pub struct Endpoint {
    /// Its URL, for logs.
    pub url: String,
    /// The DNS name it was resolved from, if any.
    pub source: Option<String>,
    /// The address it was resolved to, if any.
    pub addr: Option<std::net::SocketAddr>,
    /// How calls reach it: the multiplexed HTTP/2 connection (or tonic's channel, for TLS).
    pub transport: Transport,
    outstanding: in_flight::Counter,
    healthy: AtomicBool,
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
    /// Milliseconds after `epoch` until which the endpoint is ejected (0: not ejected).
    ejected_until_ms: AtomicU64,
    epoch: Instant,
}

impl Endpoint {
    /// A healthy, idle endpoint.
    pub fn new(url: String, transport: Transport) -> Self {
        Self {
            url,
            source: None,
            addr: None,
            transport,
            outstanding: in_flight::Counter::default(),
            healthy: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Calls in flight to this endpoint.
    pub fn outstanding(&self) -> usize {
        self.outstanding.now()
    }

    /// Counts a call in flight until the returned guard is dropped.
    pub fn start_call(&self) -> in_flight::Guard {
        self.outstanding.enter().0
    }

    /// Whether the last health checks said it serves.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Sets what the health checks say.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Whether outlier detection has it out of rotation now.
    pub fn is_ejected(&self) -> bool {
        // Never ejected (always, without outlier detection): no clock to read.
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && self.now_ms() < until
    }

    /// Whether it may receive calls: healthy and not ejected.
    pub fn is_available(&self) -> bool {
        self.is_healthy() && !self.is_ejected()
    }

    /// Records a call that succeeded: the failure streak ends.
    pub fn record_success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// Records a failed call; returns the failure streak.
    pub fn record_failure(&self) -> u32 {
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Ejects it for `base × (ejections so far + 1)`: each ejection lasts longer than the last.
    pub fn eject(&self, base: std::time::Duration) -> std::time::Duration {
        let n = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let length = base.saturating_mul(n);
        let until = self.now_ms() + u64::try_from(length.as_millis()).unwrap_or(u64::MAX / 2);
        self.ejected_until_ms.store(until, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        length
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX / 2)
    }
}
