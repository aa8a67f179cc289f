//! The data listener's service stack: the gateway's own `grpc.health.v1.Health`, and the proxy for everything else,
//! behind the layers every call goes through.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::body::Incoming;
use hyper_util::service::TowerToHyperService;
use tonic::body::Body;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthService;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

use crate::layers::deadline::DeadlineLayer;
use crate::layers::load_shed::{LoadShedLayer, Shedding};
use crate::reload::LiveProxy;

/// Path prefix of the gRPC health service, served by the gateway itself.
pub const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// The stack serving one HTTP/2 connection of the data listener.
pub type DataService = TowerToHyperService<
    BoxCloneSyncService<http::Request<Incoming>, http::Response<Body>, Infallible>,
>;

/// Builds the data listener's stack, outermost layer first.
pub fn data_service(
    proxy: LiveProxy,
    health: HealthServer<HealthService>,
    shedding: Arc<Shedding>,
) -> DataService {
    let stack = ServiceBuilder::new()
        // hyper hands over its own body type; the proxy and tonic's channels speak `tonic::body::Body`.
        .map_request(|request: http::Request<Incoming>| request.map(Body::new))
        // Over the gateway-wide limit a call is refused before it costs anything: no unbounded queue.
        .layer(LoadShedLayer(shedding))
        // The client's `grpc-timeout` bounds everything the gateway does for the call, and tells the inner layers
        // how much time is left.
        .layer(DeadlineLayer)
        .service(Dispatch { proxy, health });
    TowerToHyperService::new(BoxCloneSyncService::new(stack))
}

/// Sends health checks to the gateway's health service and every other call to the proxy.
#[derive(Clone)]
struct Dispatch {
    proxy: LiveProxy,
    health: HealthServer<HealthService>,
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
        let proxy = self.proxy.load_full();
        Box::pin(async move { Ok(proxy.handle(request).await) })
    }
}
