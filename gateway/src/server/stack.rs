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

#[cfg(test)]
mod tests {
    //! The stack dispatches a call as it is handed over: a forwarded call leaves before its future is polled.

    use std::time::Duration;

    use tower::{Service, ServiceExt};

    use super::*;

    /// A backend that reports the path of every call it receives, and answers each with an empty OK (Trailers-Only).
    async fn reporting_backend() -> (
        std::net::SocketAddr,
        tokio::sync::mpsc::UnboundedReceiver<String>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (received, calls) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let received = received.clone();
                tokio::spawn(async move {
                    let Ok(mut connection) = h2::server::handshake(tcp).await else {
                        return;
                    };
                    while let Some(Ok((request, mut respond))) = connection.accept().await {
                        let _ = received.send(request.uri().path().to_owned());
                        let answer = http::Response::builder()
                            .header("content-type", "application/grpc")
                            .header("grpc-status", "0")
                            .body(())
                            .expect("answer");
                        let _ = respond.send_response(answer, true);
                    }
                });
            }
        });
        (addr, calls)
    }

    /// The data stack with one uncached route to the backend at `addr`, and the metrics its calls are counted in.
    fn forwarding_stack(addr: std::net::SocketAddr) -> (DataService, Arc<crate::metrics::Metrics>) {
        use crate::server::assemble::{build_long_lived, build_proxy, start_backends};
        let config = crate::config::Config::from_yaml(&format!(
            "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\n\
             backends:\n  b: {{ endpoints: [\"http://{addr}\"], timeout: 2s }}\n\
             routes:\n  - match: \"*\"\n    backend: b\n"
        ))
        .expect("valid");
        let long_lived = build_long_lived(&config).expect("long-lived parts");
        let backends = start_backends(&config, &long_lived).expect("backends");
        let proxy = build_proxy(&config, &long_lived, backends).expect("proxy");
        let health = HealthServer::new(HealthService::from_health_reporter(
            tonic_health::server::HealthReporter::new(),
        ));
        let shedding = Shedding::new(None, long_lived.stats.clone());
        let live = Arc::new(arc_swap::ArcSwap::from_pointee(proxy));
        (data_service(live, health, shedding), long_lived.metrics)
    }

    fn grpc_call(path: &str) -> http::Request<Body> {
        http::Request::post(path)
            .header("content-type", "application/grpc")
            .body(Body::empty())
            .expect("request")
    }

    /// The `strata_calls_total` samples with `code`, summed.
    fn calls_with_code(metrics: &crate::metrics::Metrics, code: &str) -> f64 {
        let text = metrics.render(crate::metrics::Exposition::Text);
        text.lines()
            .filter(|l| {
                l.starts_with("strata_calls_total{") && l.contains(&format!("code=\"{code}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    #[tokio::test]
    async fn a_forwarded_call_is_on_its_way_before_its_future_is_polled() {
        let (addr, mut received) = reporting_backend().await;
        let (mut stack, metrics) = forwarding_stack(addr);
        // The first call makes the connection.
        let first = stack
            .ready()
            .await
            .expect("ready")
            .call(grpc_call("/pkg.Service/First"));
        let answer = tokio::time::timeout(Duration::from_secs(5), first)
            .await
            .expect("the first call within 5 s")
            .expect("infallible");
        assert_eq!(answer.headers()["grpc-status"], "0");
        drop(answer);
        assert_eq!(received.recv().await.as_deref(), Some("/pkg.Service/First"));

        // The second is sent while the proxy dispatches it: its future is never polled.
        let unpolled = stack
            .ready()
            .await
            .expect("ready")
            .call(grpc_call("/pkg.Service/Second"));
        let seen = tokio::time::timeout(Duration::from_secs(5), received.recv())
            .await
            .expect("the second call at the backend within 5 s");
        assert_eq!(seen.as_deref(), Some("/pkg.Service/Second"));
        // Dropped unanswered (its client went away), it is counted as cancelled, once.
        drop(unpolled);
        assert_eq!(calls_with_code(&metrics, "CANCELLED"), 1.0);
        assert_eq!(calls_with_code(&metrics, "OK"), 1.0);
    }
}
