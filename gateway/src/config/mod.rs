//! The gateway's configuration: YAML file + `STRATA_` environment overrides, validated before any port is bound.
//!
//! Every key is documented in docs/CONFIG.md, with its unit and default.

mod backend;
mod cache;
mod descriptors;
mod endpoint;
mod errors;
mod load;
mod matcher;
mod raw;
mod route;
pub mod units;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderName;
use serde::{Serialize, Serializer};
use tonic::Code;

pub use descriptors::{DescriptorsConfig, KeyRules, field_path_ok};
pub use endpoint::Target;
pub use load::{ConfigError, FieldError};
pub use matcher::Matcher;

/// The validated gateway configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Address of the data listener (the proxied gRPC services).
    pub listen: SocketAddr,
    /// TLS (and mutual TLS) on the data listener; `None`: cleartext HTTP/2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsConfig>,
    /// The admin listener.
    pub admin: AdminConfig,
    /// Logs.
    pub log: LogConfig,
    /// Traces.
    pub telemetry: TelemetryConfig,
    /// The cache levels.
    pub cache: CacheConfig,
    /// Where the backends' method descriptors come from.
    pub descriptors: DescriptorsConfig,
    /// Backends by name.
    pub backends: BTreeMap<String, BackendConfig>,
    /// Routes in order; the first whose `match` fits a call's path handles it.
    pub routes: Vec<RouteConfig>,
    /// Largest request message accepted on a cached route, in bytes.
    #[serde(serialize_with = "size")]
    pub max_request_bytes: u64,
    /// Largest backend answer collected on a cached route, in bytes.
    #[serde(serialize_with = "size")]
    pub max_response_bytes: u64,
    /// Whether answers on cached routes carry `x-strata-cache`.
    pub expose_cache_status: bool,
    /// How long in-flight calls may take to finish after a shutdown signal.
    #[serde(serialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// After a shutdown signal, how long the listener keeps accepting (while readiness already says no).
    #[serde(serialize_with = "duration")]
    pub drain_delay: Duration,
    /// A client connection on which no call started for this long is closed gracefully (GOAWAY).
    #[serde(serialize_with = "duration")]
    pub idle_timeout: Duration,
    /// Calls in flight in the whole gateway beyond which new ones are refused at once (`None`: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_requests: Option<usize>,
    /// Threads that serve calls (`None`: one per CPU the process may use; see [`crate::runtime`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<usize>,
}

/// TLS on the data listener.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerTlsConfig {
    /// PEM certificate chain.
    pub cert: std::path::PathBuf,
    /// PEM private key.
    pub key: std::path::PathBuf,
    /// PEM CA certificates of client certificates: set, every client must present one it signed (mutual TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<std::path::PathBuf>,
    /// How often the files are checked for changes.
    #[serde(serialize_with = "duration")]
    pub reload_interval: Duration,
}

/// TLS to a backend.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendTlsConfig {
    /// PEM CA certificates the backend's certificate must chain to (absent: the system's roots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<std::path::PathBuf>,
    /// PEM client certificate presented to the backend (with `key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<std::path::PathBuf>,
    /// PEM private key of `cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<std::path::PathBuf>,
    /// The name the backend's certificate must carry (absent: the endpoint's host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// OpenTelemetry traces.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TelemetryConfig {
    /// OTLP/gRPC collector, e.g. `http://otel-collector:4317`; `None`: no traces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// Share of new traces recorded (0–1); a client's sampled trace is always followed.
    pub sample_ratio: f64,
    /// `service.name` of the spans.
    pub service_name: String,
}

/// Logs (to stderr).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `strata_gateway=debug,info`… (`RUST_LOG` wins when set).
    pub level: String,
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
    /// One `strata::access` event per call: route, code, cache result, duration.
    pub access: bool,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The admin listener (health, readiness).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdminConfig {
    /// Address of the admin listener (HTTP health and readiness, gRPC cache administration).
    pub listen: SocketAddr,
    /// Bearer token required by admin mutations; `None` refuses them all. Printed redacted.
    #[serde(serialize_with = "redacted_secret")]
    pub token: Option<String>,
}

/// The cache levels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheConfig {
    /// Separates this deployment's keys from others sharing a Redis.
    pub namespace: String,
    /// The in-process level.
    pub l1: L1Config,
    /// The shared level; `None` runs with L1 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l2: Option<L2Config>,
    /// How long past its own time limit a fetch of a key is waited for by the other calls of that key (a guard
    /// against a stuck fetch; a healthy one is waited for within each caller's own deadline).
    #[serde(serialize_with = "duration")]
    pub flight_wait: Duration,
    /// The cross-replica stampede guard; `None`: each replica fetches a cold key on its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseConfig>,
    /// Response metadata never stored or replayed (besides `set-cookie`), lowercase names.
    #[serde(serialize_with = "header_names")]
    pub private_metadata: Vec<HeaderName>,
}

/// The cross-replica lease on cold keys.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaseConfig {
    /// How long a lease outlives its holder's last renewal (renewed every third of it while the fetch runs).
    #[serde(serialize_with = "duration")]
    pub ttl: Duration,
}

/// The in-process level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct L1Config {
    /// Budget in bytes; 0 disables L1.
    #[serde(serialize_with = "size")]
    pub max_bytes: u64,
    /// While the invalidation channel is down, L1 entries older than this are not served.
    #[serde(serialize_with = "duration")]
    pub max_ttl_when_disconnected: Duration,
}

/// The shared Redis level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct L2Config {
    /// One Redis server: `redis://[user:password@]host:port[/db]` (printed with the password redacted).
    #[serde(
        serialize_with = "redacted_url",
        skip_serializing_if = "Option::is_none"
    )]
    pub url: Option<String>,
    /// Or a Redis Cluster, by some of its nodes (printed with passwords redacted).
    #[serde(
        serialize_with = "redacted_urls",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cluster: Vec<String>,
    /// The longest one Redis call may take before it counts as a miss.
    #[serde(serialize_with = "duration")]
    pub timeout: Duration,
    /// Capacity of the background write queue; writes beyond it are dropped and counted.
    pub write_queue: usize,
}

/// One backend service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendConfig {
    /// `http://host:port` addresses, or `dns:///name:port` names resolved to one endpoint per address.
    pub endpoints: Vec<Target>,
    /// The longest the gateway waits for the backend's answer on a cached route.
    #[serde(serialize_with = "duration")]
    pub timeout: Duration,
    /// The longest a TCP connect to an endpoint may take.
    #[serde(serialize_with = "duration")]
    pub connect_timeout: Duration,
    /// How often `dns:///` endpoints are resolved again.
    #[serde(serialize_with = "duration")]
    pub resolve_interval: Duration,
    /// How calls are spread over the endpoints.
    pub lb: Lb,
    /// How often an idle HTTP/2 connection is pinged.
    #[serde(serialize_with = "duration")]
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    #[serde(serialize_with = "duration")]
    pub keepalive_timeout: Duration,
    /// Active `grpc.health.v1` checks; `None`: endpoints are assumed healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckConfig>,
    /// Ejection of endpoints that keep failing; `None`: never ejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outlier: Option<OutlierConfig>,
    /// TLS to the endpoints (needed for `https://` endpoints).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<BackendTlsConfig>,
    /// Retries on cached routes; `None`: never retried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryConfig>,
    /// Calls in flight to this backend beyond which new ones fail fast (`None`: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_requests: Option<usize>,
    /// The deadline of calls whose client sent none.
    #[serde(
        serialize_with = "optional_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub default_timeout: Option<Duration>,
    /// The longest deadline a client may ask for.
    #[serde(
        serialize_with = "optional_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_timeout: Option<Duration>,
}

/// How calls are spread over a backend's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lb {
    /// In turn.
    RoundRobin,
    /// Power of two choices: of two random endpoints, the one with fewer calls in flight.
    P2c,
}

/// Active health checks of a backend's endpoints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthCheckConfig {
    /// Time between checks of an endpoint.
    #[serde(serialize_with = "duration")]
    pub interval: Duration,
    /// The longest one check may take.
    #[serde(serialize_with = "duration")]
    pub timeout: Duration,
    /// Failed checks in a row that take an endpoint out of rotation.
    pub unhealthy_threshold: u32,
    /// Passed checks in a row that bring it back.
    pub healthy_threshold: u32,
    /// The service name asked about (`""`: the server as a whole).
    pub service: String,
}

/// A route's rate limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateLimitConfig {
    /// Calls per second allowed (per bucket).
    pub rps: u32,
    /// Calls allowed at once after a quiet period.
    pub burst: u32,
    /// Metadata whose value picks the bucket (one per tenant, say); `None`: one bucket for the route.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "optional_header_name"
    )]
    pub key: Option<HeaderName>,
    /// Which calls count.
    pub apply_to: ApplyTo,
}

/// Which calls a rate limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyTo {
    /// Every call.
    All,
    /// Only calls that reach the backend (cache hits are free).
    Misses,
}

/// Retries of a backend's calls on cached routes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryConfig {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The longest one attempt may take.
    #[serde(serialize_with = "duration")]
    pub per_try_timeout: Duration,
    /// Status codes retried.
    #[serde(serialize_with = "code_names")]
    pub on: Vec<Code>,
    /// Pause before the first retry; doubled for each further one, with full jitter, at most 1 s.
    #[serde(serialize_with = "duration")]
    pub backoff: Duration,
    /// Retries per second as a percentage of calls per second.
    pub budget_percent: u32,
    /// Retries per second allowed whatever the percentage says.
    pub min_retries_per_second: u32,
}

/// Ejection of endpoints that keep failing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutlierConfig {
    /// Failures in a row (UNAVAILABLE, connection errors) that eject an endpoint.
    pub consecutive_failures: u32,
    /// How long the first ejection lasts; each further one lasts longer (× the number of ejections).
    #[serde(serialize_with = "duration")]
    pub base_ejection_time: Duration,
    /// The largest share of endpoints ejected at once.
    pub max_ejection_percent: u32,
}

/// One route: which calls, which backend, and whether and how they are cached.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteConfig {
    /// `/pkg.Service/Method`, `/pkg.Service/*` or `*`.
    #[serde(rename = "match")]
    pub matcher: Matcher,
    /// The backend's name (a key of `backends`).
    pub backend: String,
    /// Present: unary calls are cached. Absent: calls are proxied untouched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<RouteCacheConfig>,
    /// Present: calls beyond the rate are refused with RESOURCE_EXHAUSTED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitConfig>,
    /// Present (on a route without `cache`): its calls are buffered and retried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryConfig>,
}

/// How a route caches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteCacheConfig {
    /// How long an OK answer is fresh.
    #[serde(serialize_with = "duration")]
    pub ttl: Duration,
    /// How long an answer with one of `negative_codes` is cached (0: not at all).
    #[serde(serialize_with = "duration")]
    pub negative_ttl: Duration,
    /// Status codes cached for `negative_ttl`.
    #[serde(serialize_with = "code_names")]
    pub negative_codes: Vec<Code>,
    /// After `ttl`, how long an answer is served stale while one background refresh runs.
    #[serde(serialize_with = "duration")]
    pub stale_while_revalidate: Duration,
    /// After `ttl`, how long an answer may stand in for a backend failure.
    #[serde(serialize_with = "duration")]
    pub stale_if_error: Duration,
    /// XFetch early refresh factor (0: off).
    pub early_refresh_beta: f64,
    /// The longest lifetime a backend's `cache-control` may ask for.
    #[serde(serialize_with = "duration")]
    pub max_ttl: Duration,
    /// Larger answers are relayed but not stored.
    #[serde(serialize_with = "size")]
    pub max_entry_bytes: u64,
    /// Request metadata whose values are part of the key.
    #[serde(serialize_with = "header_names")]
    pub vary: Vec<HeaderName>,
    /// Cache calls carrying `authorization` or `cookie` even when the key does not vary on them.
    pub shared: bool,
    /// Which parts of a request make its key.
    #[serde(flatten)]
    pub key: KeyRules,
    /// Cache exactly the unary methods whose descriptor carries Strata's cache option or declares
    /// `idempotency_level = NO_SIDE_EFFECTS`; values set here override the option's.
    pub from_proto: bool,
    /// The values this block sets itself (on a `from_proto` route they override a method's option).
    #[serde(skip)]
    pub explicit: ExplicitValues,
}

/// Which values a route's `cache` block sets itself, rather than taking a default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExplicitValues {
    /// `ttl`.
    pub ttl: bool,
    /// `negative_ttl`.
    pub negative_ttl: bool,
    /// `stale_while_revalidate`.
    pub stale_while_revalidate: bool,
    /// `stale_if_error`.
    pub stale_if_error: bool,
    /// `max_ttl`.
    pub max_ttl: bool,
    /// `vary`.
    pub vary: bool,
    /// `key_fields` or `ignore_fields`.
    pub key_fields: bool,
}

fn duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&units::format_duration(*d))
}

fn optional_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&units::format_duration(*d)),
        None => s.serialize_none(),
    }
}

fn header_names<S: Serializer>(names: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(names.iter().map(HeaderName::as_str))
}

fn optional_header_name<S: Serializer>(name: &Option<HeaderName>, s: S) -> Result<S::Ok, S::Error> {
    match name {
        Some(name) => s.serialize_str(name.as_str()),
        None => s.serialize_none(),
    }
}

fn code_names<S: Serializer>(codes: &[Code], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(codes.iter().map(|c| crate::grpc::code::name(*c)))
}

fn size<S: Serializer>(bytes: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&units::format_size(*bytes))
}

fn redacted_secret<S: Serializer>(secret: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => s.serialize_str("***"),
        None => s.serialize_none(),
    }
}

fn redacted_url<S: Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => s.serialize_str(&redact_url(url)),
        None => s.serialize_none(),
    }
}

fn redacted_urls<S: Serializer>(urls: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(urls.iter().map(|u| redact_url(u)))
}

/// The URL with any password replaced by `***`, for printing and logging.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        Some((userinfo, host)) if !userinfo.is_empty() => format!("{scheme}://***@{host}"),
        _ => url.to_owned(),
    }
}

impl Config {
    /// The configuration as YAML, with defaults filled in and secrets redacted (what `strata check` prints).
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("redis://:s3cret@h:6379"), "redis://:***@h:6379");
        assert_eq!(
            redact_url("redis://u:s3cret@h:6379/2"),
            "redis://u:***@h:6379/2"
        );
        assert_eq!(redact_url("redis://tok@h"), "redis://***@h");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }
}
