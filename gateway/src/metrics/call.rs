//! One call's observation: counted by route, gRPC code and cache result, and timed, once its answer is done with —
//! the status of a streamed answer comes in its trailers — or when the client goes away.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::time::Instant;
use tonic::body::Body;

use super::{AtomicHistogram, CallLabels, Metrics, RouteLabel};
use crate::grpc::CacheResult;

/// The cache results a call is counted under (`none`: not a cached call).
const CACHE_RESULTS: usize = CacheResult::ALL.len() + 1;

/// gRPC status codes: 0 (OK) to 16 (UNAUTHENTICATED).
const CODES: usize = 17;

/// One route's call series, looked up once: counting a call then takes no lock and hashes no label. (A family's
/// series sit in a map behind a lock that every core would otherwise take twice on every call, L1 hits included.)
#[derive(Debug)]
pub struct RouteSeries {
    route: Arc<String>,
    seconds: AtomicHistogram,
    /// The route's `calls` series by gRPC code × cache result, each taken from the family on its first call.
    calls: Box<[OnceLock<Counter>]>,
    family: Family<CallLabels, Counter>,
}

impl RouteSeries {
    /// The series of the route labelled `route` in the families `calls` and `seconds`; a route rebuilt by a reload
    /// gets the same ones.
    pub(super) fn new(
        route: Arc<String>,
        calls: &Family<CallLabels, Counter>,
        seconds: &Family<RouteLabel, AtomicHistogram>,
    ) -> Self {
        let seconds = seconds
            .get_or_create(&RouteLabel {
                route: route.clone(),
            })
            .clone();
        Self {
            route,
            seconds,
            calls: (0..CODES * CACHE_RESULTS)
                .map(|_| OnceLock::new())
                .collect(),
            family: calls.clone(),
        }
    }

    /// The route's label.
    pub fn route(&self) -> &Arc<String> {
        &self.route
    }

    /// Counts one call ending with `code`, answered as `cache` says.
    fn count(&self, code: tonic::Code, cache: Option<CacheResult>) {
        let labels = || CallLabels {
            route: self.route.clone(),
            code: crate::grpc::code::name(code),
            cache: CacheResult::name_of(cache),
        };
        let code_index = usize::try_from(i32::from(code)).ok().filter(|&c| c < CODES);
        // 0 for calls off the cached path, then the results in their order.
        let cache_index = cache.map_or(0, |c| c as usize + 1);
        match code_index {
            Some(c) => self.calls[c * CACHE_RESULTS + cache_index]
                .get_or_init(|| self.family.get_or_create(&labels()).clone())
                .inc(),
            None => self.family.get_or_create(&labels()).inc(),
        };
    }
}

/// `response`, its body wrapped so that the call is recorded when it ends (see [`Metrics::observe`]).
pub(super) fn observed(
    metrics: &Arc<Metrics>,
    series: Arc<RouteSeries>,
    started: Instant,
    cache: Option<CacheResult>,
    response: http::Response<Body>,
) -> http::Response<Body> {
    let code = crate::grpc::code::status_in(response.headers());
    let observation = Observation {
        metrics: metrics.clone(),
        series,
        cache,
        code,
        started,
        done: false,
    };
    response.map(|body| {
        Body::new(ObservedBody {
            inner: body,
            observation,
            ended: None,
        })
    })
}

/// Records a call that ended without an answer (`code`: why), at once.
pub(super) fn record_unanswered(
    metrics: &Arc<Metrics>,
    series: Arc<RouteSeries>,
    started: Instant,
    code: tonic::Code,
) {
    let mut observation = Observation {
        metrics: metrics.clone(),
        series,
        cache: None,
        code: None,
        started,
        done: false,
    };
    observation.record(Some(code as i32));
}

/// A call being observed; recorded once, when its body is dropped (after its end, or before: the client went away).
#[derive(Debug)]
struct Observation {
    metrics: Arc<Metrics>,
    series: Arc<RouteSeries>,
    cache: Option<CacheResult>,
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
            crate::telemetry::access_log(&crate::telemetry::AccessLine {
                route: &self.series.route,
                code: crate::grpc::code::name(code),
                cache: CacheResult::name_of(self.cache),
                elapsed,
            });
        }
        self.series.count(code, self.cache);
        self.series.seconds.0.observe(elapsed);
    }
}

/// A response body that records its call's metrics when it is dropped, with the status its end carried. Not at the
/// end itself: the server drops an answered call once its last frames are written, so the recording (metrics, the
/// access log line) does not hold them back.
#[derive(Debug)]
struct ObservedBody {
    inner: Body,
    observation: Observation,
    /// The call's status once the body ended (`Some(None)`: ended without one).
    ended: Option<Option<i32>>,
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
        let headers_code = this.observation.code;
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = crate::grpc::code::status_in(trailers);
                    this.ended.get_or_insert(code.or(headers_code));
                }
            }
            Poll::Ready(None) => {
                this.ended.get_or_insert(headers_code);
            }
            Poll::Ready(Some(Err(_))) => {
                this.ended.get_or_insert(Some(tonic::Code::Internal as i32));
            }
            Poll::Pending => {}
        }
        if this.ended.is_none() && this.inner.is_end_stream() {
            this.ended = Some(headers_code);
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
        // A Trailers-Only answer has an empty body that is never polled: its status came with the headers. Any
        // other body dropped before its end means the client went away.
        let code = match self.ended {
            Some(code) => code,
            None if self.inner.is_end_stream() => self.observation.code,
            None => Some(tonic::Code::Cancelled as i32),
        };
        self.observation.record(code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_of(
        family: &Family<CallLabels, Counter>,
        code: &'static str,
        cache: &'static str,
    ) -> u64 {
        family
            .get_or_create(&CallLabels {
                route: Arc::new("/demo.v1.Catalog/GetItem".to_owned()),
                code,
                cache,
            })
            .get()
    }

    #[test]
    fn a_route_counts_into_the_families_series_and_a_rebuilt_route_continues_them() {
        let calls = Family::<CallLabels, Counter>::default();
        let seconds = Family::<RouteLabel, AtomicHistogram>::default();
        let route = || Arc::new("/demo.v1.Catalog/GetItem".to_owned());
        let series = RouteSeries::new(route(), &calls, &seconds);
        series.count(tonic::Code::Ok, Some(CacheResult::L1));
        series.count(tonic::Code::Ok, Some(CacheResult::L1));
        series.count(tonic::Code::NotFound, Some(CacheResult::Miss));
        series.count(tonic::Code::Ok, None);
        // A config reload builds the route again: same labels, same series.
        let rebuilt = RouteSeries::new(route(), &calls, &seconds);
        rebuilt.count(tonic::Code::Ok, Some(CacheResult::L1));
        assert_eq!(count_of(&calls, "OK", "l1"), 3);
        assert_eq!(count_of(&calls, "NOT_FOUND", "miss"), 1);
        assert_eq!(count_of(&calls, "OK", "none"), 1);
        assert_eq!(count_of(&calls, "OK", "l2"), 0);
        rebuilt
            .seconds
            .0
            .observe(std::time::Duration::from_millis(3));
        let (_, observed, _) = series.seconds.0.snapshot();
        assert_eq!(observed, 1, "both hold the route's one histogram");
    }
}
