//! The admin listener's HTTP side: `/healthz` (the process is up) and `/readyz` (it takes traffic).

use std::sync::Arc;

use crate::layers::load_shed::Shedding;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;

/// Whether the gateway takes traffic: set once serving, cleared when shutdown begins, and false while it sheds load.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    serving: Arc<AtomicBool>,
    shedding: Arc<Shedding>,
}

impl Readiness {
    /// Readiness that also reports not ready while `shedding` refuses calls.
    pub fn new(shedding: Arc<Shedding>) -> Self {
        Self {
            serving: Arc::default(),
            shedding,
        }
    }

    /// Marks the gateway serving or not.
    pub fn set(&self, ready: bool) {
        self.serving.store(ready, Ordering::SeqCst);
    }

    /// Whether the gateway is ready: serving, and not shedding load.
    pub fn is_ready(&self) -> bool {
        self.serving.load(Ordering::SeqCst) && !self.shedding.is_shedding()
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
            "not found; try /healthz, /readyz, /metrics, or gRPC strata.admin.v1.CacheAdmin\n",
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
