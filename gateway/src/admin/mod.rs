//! The admin listener: HTTP health and readiness, and gRPC cache administration (with reflection, so grpcurl can
//! call it). It is never reachable through the data listener.

mod cache_admin;
mod health;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use strata_proto::admin::v1::cache_admin_server::CacheAdminServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

pub use self::cache_admin::CacheAdminService;
pub use self::health::Readiness;
use crate::metrics::{Exposition, Metrics};
use crate::proxy::LiveProxy;

/// Serves the admin listener until `stopped` turns true.
pub async fn serve(
    listener: TcpListener,
    services: AdminServices,
    readiness: Readiness,
    mut stopped: watch::Receiver<bool>,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let stop = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    // Scrapers and probes keep their connections open between requests: no idle limit here.
    let limits = crate::server::accept::Limits {
        grace: Duration::from_secs(1),
        idle: None,
    };
    crate::server::accept::serve(listener, stop, limits, |stream, _activity| {
        let (services, readiness) = (services.clone(), readiness.clone());
        let connection = builder
            .serve_connection(
                TokioIo::new(stream),
                hyper::service::service_fn(move |request| {
                    services.clone().call(request, readiness.clone())
                }),
            )
            .into_owned();
        std::future::ready(Some(connection))
    })
    .await;
}

/// A gRPC service of the admin listener, type-erased.
type GrpcService = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

/// The gRPC services of the admin listener.
#[derive(Clone)]
pub struct AdminServices {
    metrics: Arc<Metrics>,
    cache_admin: GrpcService,
    reflection_v1: GrpcService,
    reflection_v1alpha: GrpcService,
}

impl std::fmt::Debug for AdminServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServices").finish_non_exhaustive()
    }
}

impl AdminServices {
    /// Cache administration over `proxy` (mutations need the token of its config), and reflection for it.
    pub fn new(
        proxy: LiveProxy,
        metrics: Arc<Metrics>,
    ) -> Result<Self, tonic_reflection::server::Error> {
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(strata_proto::FILE_DESCRIPTOR_SET)
                .with_service_name(<CacheAdminServer<CacheAdminService> as NamedService>::NAME)
        };
        Ok(Self {
            metrics,
            cache_admin: BoxCloneSyncService::new(CacheAdminServer::new(CacheAdminService::new(
                proxy,
            ))),
            reflection_v1: BoxCloneSyncService::new(reflection().build_v1()?),
            reflection_v1alpha: BoxCloneSyncService::new(reflection().build_v1alpha()?),
        })
    }

    async fn call(
        self,
        request: http::Request<Incoming>,
        readiness: Readiness,
    ) -> Result<http::Response<Body>, Infallible> {
        let path = request.uri().path().to_owned();
        let request = request.map(Body::new);
        let grpc = |prefix: &str| path.starts_with(prefix);
        if grpc("/strata.admin.v1.CacheAdmin/") {
            return self.cache_admin.oneshot(request).await;
        }
        if grpc("/grpc.reflection.v1.ServerReflection/") {
            return self.reflection_v1.oneshot(request).await;
        }
        if grpc("/grpc.reflection.v1alpha.ServerReflection/") {
            return self.reflection_v1alpha.oneshot(request).await;
        }
        if path == "/metrics" && request.method() == http::Method::GET {
            // A Prometheus server asks for OpenMetrics; curl and promtool get the text format.
            let format = Exposition::negotiate(request.headers().get(http::header::ACCEPT));
            let mut response = http::Response::new(Body::new(http_body_util::Full::new(
                bytes::Bytes::from(self.metrics.render(format)),
            )));
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, format.content_type());
            return Ok(response);
        }
        let response = health::handle(request.uri().path(), request.method(), &readiness);
        Ok(response.map(Body::new))
    }
}
