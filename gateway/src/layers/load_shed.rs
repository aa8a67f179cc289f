//! Global load shedding: beyond `max_concurrent_requests` calls in flight in the whole gateway, new calls are
//! refused at once with RESOURCE_EXHAUSTED instead of queueing without bound.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tonic::body::Body;

use crate::error::GatewayError;
use crate::in_flight;
use crate::metrics::ProxyStats;

/// The gateway-wide count of calls in flight and its limit.
#[derive(Debug, Default)]
pub struct Shedding {
    in_flight: in_flight::Counter,
    limit: Option<usize>,
    stats: Arc<ProxyStats>,
}

impl Shedding {
    /// A counter refusing calls beyond `limit` (`None`: never).
    pub fn new(limit: Option<usize>, stats: Arc<ProxyStats>) -> Arc<Self> {
        Arc::new(Self {
            in_flight: in_flight::Counter::default(),
            limit,
            stats,
        })
    }

    /// Whether the gateway is at its limit now (readiness reports not ready meanwhile).
    pub fn is_shedding(&self) -> bool {
        self.limit
            .is_some_and(|limit| self.in_flight.now() >= limit)
    }

    fn admit(&self) -> Result<in_flight::Guard, usize> {
        let (guard, now) = self.in_flight.enter();
        match self.limit {
            Some(limit) if now > limit => {
                self.stats.count_shed();
                Err(limit)
            }
            _ => Ok(guard),
        }
    }
}

/// Counts a refused call (by its path, from when it arrived) like any other call, and returns the answer to send.
pub type CountRefusal =
    Arc<dyn Fn(&str, Instant, http::Response<Body>) -> http::Response<Body> + Send + Sync>;

/// Adds [`LoadShedService`] to a stack.
#[derive(Clone)]
pub struct LoadShedLayer {
    /// The gateway-wide count and limit.
    pub shedding: Arc<Shedding>,
    /// How a refused call is counted.
    pub count_refusal: CountRefusal,
}

impl std::fmt::Debug for LoadShedLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadShedLayer")
            .field("shedding", &self.shedding)
            .finish_non_exhaustive()
    }
}

impl<S> tower::Layer<S> for LoadShedLayer {
    type Service = LoadShedService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShedService {
            inner,
            shedding: self.shedding.clone(),
            count_refusal: self.count_refusal.clone(),
        }
    }
}

/// Refuses calls beyond the gateway-wide limit; counts a call until its response (headers) is ready.
#[derive(Clone)]
pub struct LoadShedService<S> {
    inner: S,
    shedding: Arc<Shedding>,
    count_refusal: CountRefusal,
}

impl<S> std::fmt::Debug for LoadShedService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadShedService")
            .field("shedding", &self.shedding)
            .finish_non_exhaustive()
    }
}

impl<S> tower::Service<http::Request<Body>> for LoadShedService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // Health checks are never shed: they must be able to say that the gateway is overloaded.
        if request.uri().path().starts_with(crate::grpc::HEALTH_PREFIX) {
            return Box::pin(self.inner.call(request));
        }
        match self.shedding.admit() {
            Ok(in_flight) => {
                let call = self.inner.call(request);
                Box::pin(async move {
                    let response = call.await;
                    drop(in_flight);
                    response
                })
            }
            Err(limit) => {
                let response = GatewayError::Shedding { limit }.to_response(None);
                let response = (self.count_refusal)(request.uri().path(), Instant::now(), response);
                Box::pin(std::future::ready(Ok(response)))
            }
        }
    }
}
