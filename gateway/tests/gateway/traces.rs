//! Traces across the hop: the client's trace continues in the gateway's spans, exported over OTLP to a receiver
//! started here, and the backend receives a `traceparent` whose parent is one of the gateway's spans.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use strata_gateway::config::Config;

use crate::key;
use crate::support::backend::TestBackend;
use crate::support::eventually;
use crate::support::gateway::{TestGateway, config_for, start};

/// An OTLP/gRPC trace receiver keeping every span it is sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("lock");
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Calls `Get` for `name` through `gateway` as part of the client's trace `trace_id` (its span `client_span`), checks
/// that the backend's `traceparent` is in that trace, and returns the span the backend was given as its parent.
async fn traced_call(
    gateway: &TestGateway,
    backend: &TestBackend,
    name: &str,
    trace_id: &str,
    client_span: &str,
) -> String {
    let mut client = gateway.client().await;
    let mut request = tonic::Request::new(key(name));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{client_span}-01")
            .parse()
            .expect("ascii"),
    );
    client.get(request).await.expect("answered");
    let traceparent = backend
        .seen
        .last_traceparent
        .lock()
        .expect("lock")
        .clone()
        .expect("the backend got a traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(
        parts.get(1),
        Some(&trace_id),
        "the backend's trace is the client's ({name}): {traceparent}"
    );
    parts.get(2).copied().unwrap_or_default().to_owned()
}

// Multi-threaded: the span exporter is a task on the runtime, and flushing waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_trace_continues_through_the_gateway_to_the_backend() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let receiver_addr = listener.local_addr().expect("addr");
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await;
    });

    // The process-wide subscriber, as `strata serve` installs it (once per test process: only this test does).
    let telemetry_config = Config::from_yaml(&format!(
        "telemetry: {{ otlp_endpoint: \"http://{receiver_addr}\", service_name: strata-test }}\nlog: {{ level: warn }}\n{}",
        config_for("http://127.0.0.1:1")
    ))
    .expect("valid");
    let telemetry =
        strata_gateway::telemetry::init(&telemetry_config.log, &telemetry_config.telemetry)
            .expect("telemetry");

    let (backend, gateway) = start(&config_for).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let backend_parent =
        traced_call(&gateway, &backend, "traced", trace_id, "00f067aa0ba902b7").await;

    telemetry.flush();
    let exported = eventually(Duration::from_secs(5), || {
        let spans = receiver.spans.clone();
        let parent = backend_parent.clone();
        async move {
            let spans = spans.lock().expect("lock");
            spans
                .iter()
                .any(|s| hex(&s.trace_id) == trace_id && hex(&s.span_id) == parent)
        }
    })
    .await;
    let seen: Vec<(String, String, String)> = receiver
        .spans
        .lock()
        .expect("lock")
        .iter()
        .map(|s| (s.name.clone(), hex(&s.trace_id), hex(&s.span_id)))
        .collect();
    assert!(
        exported,
        "the span the backend's parent ({backend_parent}) names was exported, in the client's trace: {seen:?}"
    );
    let spans = receiver.spans.lock().expect("lock").clone();
    let ours: Vec<_> = spans
        .iter()
        .filter(|s| hex(&s.trace_id) == trace_id)
        .collect();
    let call = ours
        .iter()
        .find(|s| s.name.contains("Lookup/Get"))
        .expect("the call's span");
    assert_eq!(
        hex(&call.parent_span_id),
        "00f067aa0ba902b7",
        "the call span's parent is the client's span"
    );
    for stage in ["strata.load", "strata.backend"] {
        assert!(
            ours.iter().any(|s| s.name == stage),
            "a {stage} span in the trace: {seen:?}"
        );
    }
    gateway.stop().await;

    // A forwarded call (no cache on the route): the backend's span is the call span's child, in the client's trace.
    let forwarding = TestGateway::start(&format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nbackends:\n  lookup: {{ endpoints: [\"{}\"], timeout: 5s }}\nroutes:\n  - match: \"*\"\n    backend: lookup\n",
        backend.url()
    ))
    .await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let backend_parent = traced_call(
        &forwarding,
        &backend,
        "forwarded",
        trace_id,
        "b7ad6b7169203331",
    )
    .await;
    telemetry.flush();
    let linked = eventually(Duration::from_secs(5), || {
        let spans = receiver.spans.clone();
        let parent = backend_parent.clone();
        async move {
            let spans = spans.lock().expect("lock");
            let call = spans
                .iter()
                .find(|s| hex(&s.trace_id) == trace_id && s.name.contains("Lookup/Get"));
            let backend_span = spans
                .iter()
                .find(|s| hex(&s.trace_id) == trace_id && hex(&s.span_id) == parent);
            matches!((call, backend_span), (Some(call), Some(b))
                if b.name == "strata.backend" && b.parent_span_id == call.span_id)
        }
    })
    .await;
    assert!(
        linked,
        "the backend's parent ({backend_parent}) is a strata.backend span under the call span"
    );
    forwarding.stop().await;
}
