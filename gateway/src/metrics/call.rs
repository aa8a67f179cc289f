//! One call's observation: counted by route, gRPC code and cache result, and timed, once its answer ends — the
//! status of a streamed answer comes in its trailers — or when the client goes away.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use tokio::time::Instant;
use tonic::body::Body;

use super::{CallLabels, Metrics, RouteLabel};

/// `response`, its body wrapped so that the call is recorded when it ends (see [`Metrics::observe`]).
pub(super) fn observed(
    metrics: &Arc<Metrics>,
    route: Arc<String>,
    started: Instant,
    cache: &'static str,
    response: http::Response<Body>,
) -> http::Response<Body> {
    let code = response
        .headers()
        .get(crate::grpc::code::STATUS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok());
    let observation = Observation {
        metrics: metrics.clone(),
        route,
        cache,
        code,
        started,
        done: false,
    };
    response.map(|body| {
        Body::new(ObservedBody {
            inner: body,
            observation,
        })
    })
}

/// A call being observed; recorded once, when its body ends (or is dropped: the client went away).
#[derive(Debug)]
struct Observation {
    metrics: Arc<Metrics>,
    route: Arc<String>,
    cache: &'static str,
    code: Option<i32>,
    started: Instant,
    done: bool,
}

impl Observation {
    fn record(&mut self, code: Option<i32>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let code = code.map_or(tonic::Code::Unknown, tonic::Code::from);
        let elapsed = self.started.elapsed();
        if self
            .metrics
            .access_log
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            tracing::info!(
                target: "strata::access",
                route = %self.route,
                code = crate::grpc::code::name(code),
                cache = self.cache,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                "call"
            );
        }
        self.metrics
            .calls
            .get_or_create(&CallLabels {
                route: self.route.clone(),
                code: crate::grpc::code::name(code),
                cache: self.cache,
            })
            .inc();
        self.metrics
            .call_seconds
            .get_or_create(&RouteLabel {
                route: self.route.clone(),
            })
            .0
            .observe(elapsed);
    }
}

/// A response body that records its call's metrics when it ends.
#[derive(Debug)]
struct ObservedBody {
    inner: Body,
    observation: Observation,
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = trailers
                        .get(crate::grpc::code::STATUS_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok());
                    this.observation.record(code.or(this.observation.code));
                }
            }
            Poll::Ready(None) => {
                let code = this.observation.code;
                this.observation.record(code);
            }
            Poll::Ready(Some(Err(_))) => {
                this.observation.record(Some(tonic::Code::Internal as i32))
            }
            Poll::Pending => {}
        }
        if this.inner.is_end_stream() && !this.observation.done {
            let code = this.observation.code;
            this.observation.record(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        if self.observation.done {
            return;
        }
        // A Trailers-Only answer has an empty body that is never polled: its status came with the headers. Any
        // other body dropped before its end means the client went away.
        let code = if self.inner.is_end_stream() {
            self.observation.code
        } else {
            Some(tonic::Code::Cancelled as i32)
        };
        self.observation.record(code);
    }
}
