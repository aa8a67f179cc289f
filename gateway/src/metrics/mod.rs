//! Prometheus metrics, one registry per gateway: calls by route, code and cache result, latencies as histograms with
//! explicit buckets, and the cache's and the proxy's counters read at scrape time. Labels never carry request data.

mod call;
mod exposition;
mod proxy_stats;

pub use self::call::RouteSeries;
pub use self::exposition::Exposition;
pub use self::proxy_stats::ProxyStats;

use std::sync::Arc;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use strata_cache::Tiered;

use crate::grpc::CacheResult;
use tokio::time::Instant;
use tonic::body::Body;

/// What a call's metrics are labelled with.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// The route's `match` (`unrouted` when none matched).
    pub route: Arc<String>,
    /// The gRPC status code name.
    pub code: &'static str,
    /// `l1`, `l2`, `miss`, `coalesced`, `stale`, `bypass`, or `none` (not a cached call).
    pub cache: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: Arc<String>,
}

/// A histogram observed without a lock (the call histograms are observed on every call, L1 hits included).
#[derive(Debug, Clone, Default)]
struct AtomicHistogram(Arc<strata_cache::LatencyHistogram>);

impl prometheus_client::metrics::TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.0.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// What a backend call's metrics are labelled with.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// The backend's name.
    pub backend: String,
    /// `ok` (an answer came back, whatever its status), `error` (no answer), `refused` (circuit breaker).
    pub outcome: &'static str,
}

/// The histogram of backend call durations, handed to each backend.
pub type BackendSeconds = Family<BackendLabels, Histogram>;

/// What an endpoint event's metrics are labelled with.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// The backend's name.
    pub backend: String,
    /// What happened: `ejected`, `unhealthy`, `healthy`.
    pub event: &'static str,
}

/// The metrics a backend records into.
#[derive(Debug, Clone)]
pub struct BackendMetrics {
    /// Backend call durations.
    pub seconds: BackendSeconds,
    /// Endpoint events: ejections and health changes.
    pub endpoint_events: Family<EndpointLabels, Counter>,
}

impl BackendMetrics {
    /// Counts an endpoint event of `backend`.
    pub fn endpoint_event(&self, backend: &str, event: &'static str) {
        self.endpoint_events
            .get_or_create(&EndpointLabels {
                backend: backend.to_owned(),
                event,
            })
            .inc();
    }
}

/// What the descriptor gauge is labelled with.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DescriptorLabels {
    /// `files` (descriptor-set files) or `reflection`.
    pub source: &'static str,
    /// The backend asked, for `reflection`; empty for `files`.
    pub backend: String,
}

/// Methods with a descriptor, by where the descriptors came from.
pub type DescriptorMethods = Family<DescriptorLabels, prometheus_client::metrics::gauge::Gauge>;

/// The metrics of one gateway.
#[derive(Debug)]
pub struct Metrics {
    access_log: std::sync::atomic::AtomicBool,
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    call_seconds: Family<RouteLabel, AtomicHistogram>,
    unrouted: Arc<RouteSeries>,
    backend_seconds: BackendSeconds,
    endpoint_events: Family<EndpointLabels, Counter>,
    descriptor_methods: DescriptorMethods,
}

impl Metrics {
    /// The registry, with the cache's and the proxy's counters collected at each scrape.
    pub fn new(cache: Arc<Tiered>, proxy_stats: Arc<ProxyStats>, access_log: bool) -> Arc<Self> {
        let mut registry = Registry::with_prefix("strata");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "calls",
            "Calls answered, by route, gRPC code and cache result",
            calls.clone(),
        );
        let call_seconds = Family::<RouteLabel, AtomicHistogram>::default();
        registry.register(
            "call_duration_seconds",
            "Time from a call's arrival to the end of its answer, by route",
            call_seconds.clone(),
        );
        let backend_seconds = BackendSeconds::new_with_constructor(|| {
            Histogram::new(strata_cache::LATENCY_BUCKETS.iter().copied())
        });
        registry.register(
            "backend_call_duration_seconds",
            "Time from sending a call to a backend to its response headers, by backend and outcome",
            backend_seconds.clone(),
        );
        let endpoint_events = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "backend_endpoint_events",
            "Endpoints ejected by outlier detection, or turned unhealthy or healthy by health checks",
            endpoint_events.clone(),
        );
        let descriptor_methods = DescriptorMethods::default();
        registry.register(
            "descriptor_methods",
            "Methods the gateway has a descriptor for, by source (files, reflection) and backend",
            descriptor_methods.clone(),
        );
        registry.register_collector(Box::new(Snapshots { cache, proxy_stats }));
        let info = Family::<BuildLabels, prometheus_client::metrics::gauge::Gauge>::default();
        info.get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            commit: env!("STRATA_GIT_COMMIT").to_owned(),
        })
        .set(1);
        registry.register("build_info", "The running build (value 1)", info);
        let unrouted = Arc::new(RouteSeries::new(
            Arc::new("unrouted".to_owned()),
            &calls,
            &call_seconds,
        ));
        Arc::new(Self {
            access_log: std::sync::atomic::AtomicBool::new(access_log),
            registry,
            calls,
            call_seconds,
            unrouted,
            backend_seconds,
            endpoint_events,
            descriptor_methods,
        })
    }

    /// The gauge of methods with a descriptor, for the descriptor refresher to set.
    pub fn descriptor_methods(&self) -> DescriptorMethods {
        self.descriptor_methods.clone()
    }

    /// The metrics the backends record into.
    pub fn backend(&self) -> BackendMetrics {
        BackendMetrics {
            seconds: self.backend_seconds.clone(),
            endpoint_events: self.endpoint_events.clone(),
        }
    }

    /// Turns the access log on or off (a config reload may change it).
    pub fn set_access_log(&self, on: bool) {
        self.access_log
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The metrics page in `format`.
    pub fn render(&self, format: Exposition) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        match format {
            Exposition::OpenMetrics => text,
            Exposition::Text => exposition::openmetrics_to_text(&text),
        }
    }

    /// The call series of the route named `route`, for the route to hold (see [`RouteSeries`]).
    pub fn route_series(&self, route: &str) -> Arc<RouteSeries> {
        Arc::new(RouteSeries::new(
            Arc::new(route.to_owned()),
            &self.calls,
            &self.call_seconds,
        ))
    }

    /// Counts `response` when its answer ends (its status may come in the trailers), in the series of the route that
    /// took the call (`None`: no route matched) under its cache result (`cache`, on a cached route), and times it
    /// from `started`.
    pub fn observe(
        self: &Arc<Self>,
        route: Option<Arc<RouteSeries>>,
        started: Instant,
        cache: Option<CacheResult>,
        response: http::Response<Body>,
    ) -> http::Response<Body> {
        let series = route.unwrap_or_else(|| self.unrouted.clone());
        call::observed(self, series, started, cache, response)
    }

    /// Counts a call that ended without an answer from the gateway (`code`: why), under `route`.
    pub fn count_unanswered(
        self: &Arc<Self>,
        route: Option<Arc<RouteSeries>>,
        started: Instant,
        code: tonic::Code,
    ) {
        let series = route.unwrap_or_else(|| self.unrouted.clone());
        call::record_unanswered(self, series, started, code);
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
}

/// The cache's and the proxy's own counters, read when Prometheus scrapes.
#[derive(Debug)]
struct Snapshots {
    cache: Arc<Tiered>,
    proxy_stats: Arc<ProxyStats>,
}

impl prometheus_client::collector::Collector for Snapshots {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.cache.stats().snapshot();
        let counters: Vec<(&str, &str, u64)> = vec![
            ("cache_l1_hits", "Answers from L1", s.l1_hits),
            ("cache_l2_hits", "Answers from L2", s.l2_hits),
            (
                "cache_misses",
                "Loads from the backend (answers the cache did not have)",
                s.misses,
            ),
            (
                "cache_coalesced",
                "Answers shared from another call's load (single-flight followers)",
                s.coalesced,
            ),
            (
                "cache_stale_served",
                "Stale answers served while a refresh ran",
                s.stale_served,
            ),
            (
                "cache_stale_if_error_served",
                "Stale answers served instead of a backend failure",
                s.stale_if_error_served,
            ),
            (
                "cache_refreshes_stale",
                "Background refreshes of entries served stale",
                s.refreshes_stale,
            ),
            (
                "cache_refreshes_early",
                "Early refreshes of fresh entries (XFetch)",
                s.refreshes_early,
            ),
            (
                "cache_flight_wait_timeouts",
                "Callers that stopped waiting for a fetch stuck past its own time limit",
                s.flight_wait_timeouts,
            ),
            (
                "cache_leader_takeovers",
                "Fetches taken over after the leading fetch was gone",
                s.leader_takeovers,
            ),
            (
                "cache_not_shared",
                "Callers that fetched for themselves: the answer of the fetch they waited for was its own caller's",
                s.not_shared,
            ),
            (
                "cache_withdrawn",
                "Entries removed because the backend's latest answer for them may not be stored",
                s.withdrawn,
            ),
            (
                "cache_fills_overtaken",
                "Fetched answers not stored because their key was invalidated while they were fetched",
                s.fills_overtaken,
            ),
            (
                "cache_lease_acquired",
                "Loads made holding the cross-replica lease",
                s.lease_acquired,
            ),
            (
                "cache_lease_waited_hit",
                "Loads answered by another replica's lease holder",
                s.lease_waited_hit,
            ),
            (
                "cache_lease_gave_up",
                "Waits for another replica's lease holder that ran out",
                s.lease_gave_up,
            ),
            ("cache_l2_errors", "L2 operations that failed", s.l2_errors),
            (
                "cache_l2_timeouts",
                "L2 operations that timed out",
                s.l2_timeouts,
            ),
            (
                "cache_l2_undecodable",
                "L2 entries that could not be decoded (treated as misses)",
                s.l2_undecodable,
            ),
            ("cache_l2_writes", "Entries written to L2", s.l2_writes),
            (
                "cache_l2_write_errors",
                "L2 writes that failed",
                s.l2_write_errors,
            ),
            (
                "cache_l2_write_drops",
                "L2 writes dropped because the write-back queue was full",
                s.l2_write_drops,
            ),
            (
                "cache_invalidations",
                "Invalidations made through this replica",
                s.invalidations,
            ),
            (
                "cache_channel_connects",
                "Times the invalidation channel was (re)subscribed",
                s.channel_connects,
            ),
            (
                "cache_bypassed",
                "Calls on cached routes that bypassed the cache",
                self.proxy_stats.bypassed(),
            ),
            (
                "cache_l1_evicted_size",
                "L1 entries evicted to stay within cache.l1.max_bytes",
                s.l1_evicted_size,
            ),
            (
                "cache_l1_evicted_expired",
                "L1 entries evicted past their lifetime",
                s.l1_evicted_expired,
            ),
            (
                "cache_l1_evicted_invalidated",
                "L1 entries removed by invalidation",
                s.l1_evicted_invalidated,
            ),
        ];
        for (name, help, value) in counters {
            let metric = ConstCounter::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        let more: [(&str, &str, u64); 6] = [
            (
                "rate_limited",
                "Calls refused by a route's rate limit",
                self.proxy_stats.rate_limited(),
            ),
            (
                "shed",
                "Calls refused by global load shedding (max_concurrent_requests)",
                self.proxy_stats.shed(),
            ),
            (
                "entries_too_large",
                "Answers relayed but not stored: larger than max_entry_bytes",
                self.proxy_stats.too_large(),
            ),
            (
                "retries",
                "Retries sent to backends",
                self.proxy_stats.retries(),
            ),
            (
                "retry_budget_exhausted",
                "Retries not sent because the retry budget was spent",
                self.proxy_stats.retry_budget_exhausted(),
            ),
            (
                "log_lines_dropped",
                "Log lines (access log included) dropped because stderr could not keep up",
                crate::telemetry::dropped_log_lines(),
            ),
        ];
        for (name, help, value) in more {
            let metric = ConstCounter::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        let stats = self.cache.stats();
        let histograms = [
            (
                "cache_l2_read_duration_seconds",
                "How long L2 reads take",
                &stats.l2_read_seconds,
            ),
            (
                "cache_flight_wait_duration_seconds",
                "How long calls wait for another call's load of the same key",
                &stats.flight_wait_seconds,
            ),
        ];
        for (name, help, histogram) in histograms {
            let (sum, count, buckets) = histogram.snapshot();
            encoder
                .encode_descriptor(name, help, None, MetricType::Histogram)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        let l1 = self.cache.l1();
        let gauges: [(&str, &str, u64); 3] = [
            ("cache_l1_entries", "Entries in L1", l1.entry_count()),
            ("cache_l1_bytes", "Bytes weighed by L1", l1.weighted_size()),
            (
                "cache_invalidation_scopes",
                "Invalidation scopes (routes, services, methods named in the config) this replica holds a generation of",
                self.cache.scopes_known() as u64,
            ),
        ];
        for (name, help, value) in gauges {
            let metric = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        Ok(())
    }
}
