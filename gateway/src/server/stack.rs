//! The data listener's service stack: the gateway's own `grpc.health.v1.Health`, and the proxy for everything else,
//! behind the layers every call goes through.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::FutureExt;
use tonic::body::Body;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthService;
use tower::{ServiceBuilder, ServiceExt};

use crate::grpc::HEALTH_PREFIX;
use crate::layers::load_shed::{LoadShedLayer, LoadShedService, Shedding};
use crate::proxy::LiveProxy;

/// The stack serving the data listener's calls: each connection has a clone. Named, not boxed: a boxed stack would
/// cost a virtual call per call for nothing.
pub type DataService = LoadShedService<Dispatch>;

/// Builds the data listener's stack, outermost layer first.
pub fn data_service(
    proxy: LiveProxy,
    health: HealthServer<HealthService>,
    shedding: Arc<Shedding>,
) -> DataService {
    ServiceBuilder::new()
        // Over the gateway-wide limit a call is refused before it costs anything: no unbounded queue. A refused call
        // is still counted, under its route.
        .layer(LoadShedLayer {
            shedding,
            count_refusal: Arc::new({
                let proxy = proxy.clone();
                move |path, started, response| proxy.load().refused(path, started, response)
            }),
        })
        .service(Dispatch { proxy, health })
}

/// Sends health checks to the gateway's health service and every other call to the proxy.
#[derive(Clone)]
pub struct Dispatch {
    proxy: LiveProxy,
    health: HealthServer<HealthService>,
}

impl std::fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatch").finish_non_exhaustive()
    }
}

impl tower::Service<http::Request<Body>> for Dispatch {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path().starts_with(HEALTH_PREFIX) {
            return Box::pin(self.health.clone().oneshot(request));
        }
        // The proxy current when the call arrives serves all of it, even if a reload swaps in another meanwhile.
        // Its own future, not one wrapped around it: each wrapping level is a copy of the whole call's state.
        Box::pin(self.proxy.load_full().handle(request).map(Ok))
    }
}
