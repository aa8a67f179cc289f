//! The config file's shape as written, before validation. Durations and sizes are still text, and unknown keys are
//! collected instead of rejected, so that validation can report every mistake at once with its field path.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;

/// A duration or size as written: text (`30s`, `4MiB`) or a bare number (from YAML or an environment variable).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum Scalar {
    Number(u64),
    Text(String),
}

/// The top-level keys of the config (also what `STRATA_…` environment variables may set).
pub(super) const TOP_LEVEL_KEYS: [&str; 17] = [
    "listen",
    "descriptors",
    "telemetry",
    "tls",
    "admin",
    "log",
    "cache",
    "backends",
    "routes",
    "max_request_bytes",
    "max_response_bytes",
    "expose_cache_status",
    "shutdown_grace",
    "drain_delay",
    "idle_timeout",
    "max_concurrent_requests",
    "worker_threads",
];

/// Keys present in the file that no field takes.
pub(super) type Unknown = BTreeMap<String, IgnoredAny>;

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawConfig {
    pub listen: Option<String>,
    pub tls: Option<RawServerTls>,
    pub admin: Option<RawAdmin>,
    pub log: Option<RawLog>,
    pub telemetry: Option<RawTelemetry>,
    pub cache: Option<RawCache>,
    pub descriptors: Option<RawDescriptors>,
    #[serde(default)]
    pub backends: BTreeMap<String, RawBackend>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    pub max_request_bytes: Option<Scalar>,
    pub max_response_bytes: Option<Scalar>,
    pub expose_cache_status: Option<bool>,
    pub shutdown_grace: Option<Scalar>,
    pub drain_delay: Option<Scalar>,
    pub idle_timeout: Option<Scalar>,
    pub max_concurrent_requests: Option<usize>,
    pub worker_threads: Option<usize>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawDescriptors {
    pub reflection: Option<bool>,
    #[serde(default)]
    pub files: Vec<String>,
    pub refresh: Option<Scalar>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawAdmin {
    pub listen: Option<String>,
    pub token: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawCache {
    pub namespace: Option<String>,
    pub l1: Option<RawL1>,
    pub l2: Option<RawL2>,
    pub flight_wait: Option<Scalar>,
    pub lease: Option<RawLease>,
    #[serde(default)]
    pub private_metadata: Vec<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawL1 {
    pub max_bytes: Option<Scalar>,
    pub max_ttl_when_disconnected: Option<Scalar>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawL2 {
    pub url: Option<String>,
    #[serde(default)]
    pub cluster: Vec<String>,
    pub timeout: Option<Scalar>,
    pub write_queue: Option<u64>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawBackend {
    #[serde(default)]
    pub endpoints: Vec<String>,
    pub timeout: Option<Scalar>,
    pub connect_timeout: Option<Scalar>,
    pub lb: Option<String>,
    pub resolve_interval: Option<Scalar>,
    pub keepalive_interval: Option<Scalar>,
    pub keepalive_timeout: Option<Scalar>,
    pub health_check: Option<RawHealthCheck>,
    pub outlier: Option<RawOutlier>,
    pub retry: Option<RawRetry>,
    pub tls: Option<RawBackendTls>,
    pub max_concurrent_requests: Option<usize>,
    pub default_timeout: Option<Scalar>,
    pub max_timeout: Option<Scalar>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRoute {
    #[serde(rename = "match")]
    pub matches: Option<String>,
    pub backend: Option<String>,
    pub cache: Option<RawRouteCache>,
    pub rate_limit: Option<RawRateLimit>,
    pub retry: Option<RawRetry>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRouteCache {
    pub ttl: Option<Scalar>,
    pub negative_ttl: Option<Scalar>,
    pub negative_codes: Option<Vec<String>>,
    pub stale_while_revalidate: Option<Scalar>,
    pub stale_if_error: Option<Scalar>,
    pub early_refresh_beta: Option<f64>,
    pub max_ttl: Option<Scalar>,
    pub max_entry_bytes: Option<Scalar>,
    #[serde(default)]
    pub vary: Vec<String>,
    pub shared: Option<bool>,
    #[serde(default)]
    pub key_fields: Vec<String>,
    #[serde(default)]
    pub ignore_fields: Vec<String>,
    pub canonical: Option<bool>,
    pub keep_unknown_fields: Option<bool>,
    pub from_proto: Option<bool>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawLease {
    pub ttl: Option<Scalar>,
    pub wait: Option<Scalar>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawHealthCheck {
    pub interval: Option<Scalar>,
    pub timeout: Option<Scalar>,
    pub unhealthy_threshold: Option<u32>,
    pub healthy_threshold: Option<u32>,
    pub service: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawOutlier {
    pub consecutive_failures: Option<u32>,
    pub base_ejection_time: Option<Scalar>,
    pub max_ejection_percent: Option<u32>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRetry {
    pub attempts: Option<u32>,
    pub per_try_timeout: Option<Scalar>,
    pub on: Option<Vec<String>>,
    pub backoff: Option<Scalar>,
    pub budget_percent: Option<u32>,
    pub min_retries_per_second: Option<u32>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRateLimit {
    pub rps: Option<u32>,
    pub burst: Option<u32>,
    pub key: Option<String>,
    pub apply_to: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawServerTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub client_ca: Option<String>,
    pub reload_interval: Option<Scalar>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawBackendTls {
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub server_name: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawLog {
    pub level: Option<String>,
    pub format: Option<String>,
    pub access: Option<bool>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawTelemetry {
    pub otlp_endpoint: Option<String>,
    pub sample_ratio: Option<f64>,
    pub service_name: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}
