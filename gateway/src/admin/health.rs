//! The admin listener's HTTP side: `/healthz` (the process is up) and `/readyz` (it takes traffic).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;

/// Whether the gateway takes traffic: set once serving, cleared when shutdown begins.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the gateway ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// Whether the gateway is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Answers one admin HTTP request.
pub fn handle(
    path: &str,
    method: &http::Method,
    readiness: &Readiness,
) -> http::Response<Full<Bytes>> {
    let (status, text) = match (method, path) {
        (&http::Method::GET, "/healthz") => (http::StatusCode::OK, "ok\n"),
        (&http::Method::GET, "/readyz") if readiness.is_ready() => {
            (http::StatusCode::OK, "ready\n")
        }
        (&http::Method::GET, "/readyz") => (http::StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        (_, "/healthz" | "/readyz") => (http::StatusCode::METHOD_NOT_ALLOWED, "use GET\n"),
        _ => (
            http::StatusCode::NOT_FOUND,
            "not found; try /healthz, /readyz, or gRPC strata.admin.v1.CacheAdmin\n",
        ),
    };
    let mut response = http::Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
