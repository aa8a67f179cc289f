//! Global load shedding: beyond `max_concurrent_requests` calls in flight in the whole gateway, new calls are
//! refused at once with RESOURCE_EXHAUSTED instead of queueing without bound.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

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
    S::Future: Unpin,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = LoadShedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // Health checks are never shed: they must be able to say that the gateway is overloaded.
        if request.uri().path().starts_with(crate::grpc::HEALTH_PREFIX) {
            return LoadShedFuture::Admitted {
                call: self.inner.call(request),
                in_flight: None,
            };
        }
        match self.shedding.admit() {
            Ok(in_flight) => LoadShedFuture::Admitted {
                call: self.inner.call(request),
                in_flight: Some(in_flight),
            },
            Err(limit) => {
                let response = GatewayError::Shedding { limit }.to_response(None);
                let response = (self.count_refusal)(request.uri().path(), Instant::now(), response);
                LoadShedFuture::Refused(std::future::ready(Ok(response)))
            }
        }
    }
}

/// A call under [`LoadShedService`]: a named future rather than a boxed one, so that admitting a call costs no
/// allocation.
pub enum LoadShedFuture<F> {
    /// The call, counted in flight until it answers (a health check is not counted).
    Admitted {
        call: F,
        in_flight: Option<in_flight::Guard>,
    },
    /// Refused at the door: the answer is ready.
    Refused(std::future::Ready<Result<http::Response<Body>, Infallible>>),
}

impl<F> Future for LoadShedFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, Infallible>> + Unpin,
{
    type Output = Result<http::Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Admitted { call, in_flight } => {
                let answer = ready!(Pin::new(call).poll(cx));
                // The call counts as in flight until its answer's headers are ready.
                drop(in_flight.take());
                Poll::Ready(answer)
            }
            Self::Refused(answer) => Pin::new(answer).poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use tower::{Layer, Service, ServiceExt};

    use super::*;

    fn request(path: &str) -> http::Request<Body> {
        http::Request::post(path)
            .body(Body::empty())
            .expect("request")
    }

    #[tokio::test]
    async fn a_call_counts_as_in_flight_until_its_answer_is_ready() {
        let (answer, answered) = tokio::sync::oneshot::channel::<()>();
        let answered = std::sync::Mutex::new(Some(answered));
        // The first call waits for `answer`; every later one answers at once.
        let inner = tower::service_fn(move |_| {
            let wait = answered.lock().expect("lock").take();
            Box::pin(async move {
                if let Some(wait) = wait {
                    let _ = wait.await;
                }
                Ok::<_, Infallible>(http::Response::new(Body::empty()))
            })
        });
        let shedding = Shedding::new(Some(1), Arc::default());
        let mut service = LoadShedLayer {
            shedding: shedding.clone(),
            count_refusal: Arc::new(|_: &str, _: Instant, response: http::Response<Body>| response),
        }
        .layer(inner);
        let path = "/demo.v1.Catalog/GetItem";
        let first = service.ready().await.expect("ready").call(request(path));
        assert!(shedding.is_shedding(), "one call in flight: at the limit");

        let refused = service.ready().await.expect("ready").call(request(path));
        let refused = refused.await.expect("infallible");
        assert_eq!(
            crate::grpc::code::status_in(refused.headers()),
            Some(tonic::Code::ResourceExhausted as i32)
        );
        // Health checks are never refused, and not counted.
        let health = format!("{}Check", crate::grpc::HEALTH_PREFIX);
        let health = service.ready().await.expect("ready").call(request(&health));
        assert!(health.await.expect("infallible").headers().is_empty());

        answer.send(()).expect("the first call waits");
        first.await.expect("infallible");
        assert!(
            !shedding.is_shedding(),
            "the answered call no longer counts"
        );
        let next = service.ready().await.expect("ready").call(request(path));
        assert!(next.await.expect("infallible").headers().is_empty());
    }
}
