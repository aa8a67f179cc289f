//! The data listener's service: `grpc.health.v1.Health` answered by the gateway, everything else by the proxy.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hyper::body::Incoming;
use tonic::body::Body;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthService;
use tower::ServiceExt;

use crate::proxy::Proxy;

/// Path prefix of the gRPC health service, served by the gateway itself.
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// Serves one HTTP/2 request on the data listener.
#[derive(Clone)]
pub struct DataService {
    proxy: Arc<Proxy>,
    health: HealthServer<HealthService>,
}

impl std::fmt::Debug for DataService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataService").finish_non_exhaustive()
    }
}

impl DataService {
    /// The data service over `proxy`, reporting health through `health`.
    pub fn new(proxy: Arc<Proxy>, health: HealthServer<HealthService>) -> Self {
        Self { proxy, health }
    }
}

impl hyper::service::Service<http::Request<Incoming>> for DataService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let request = request.map(Body::new);
        if request.uri().path().starts_with(HEALTH_PREFIX) {
            let health = self.health.clone();
            return Box::pin(health.oneshot(request));
        }
        let proxy = self.proxy.clone();
        Box::pin(async move { Ok(proxy.handle(request).await) })
    }
}
