//! The gateway's configuration: YAML file + `STRATA_` environment overrides, validated before any port is bound.
//!
//! Every key is documented in docs/CONFIG.md, with its unit and default.

mod errors;
mod load;
mod raw;
mod route;
pub mod units;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Serialize, Serializer};

pub use load::{ConfigError, FieldError};

/// The validated gateway configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Address of the data listener (the proxied gRPC services).
    pub listen: SocketAddr,
    /// The admin listener.
    pub admin: AdminConfig,
    /// The cache levels.
    pub cache: CacheConfig,
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
}

/// The admin listener (health, readiness).
#[derive(Debug, Clone, Serialize)]
pub struct AdminConfig {
    /// Address of the admin listener (HTTP health and readiness, gRPC cache administration).
    pub listen: SocketAddr,
    /// Bearer token required by admin mutations; `None` refuses them all. Printed redacted.
    #[serde(serialize_with = "redacted_secret")]
    pub token: Option<String>,
}

/// The cache levels.
#[derive(Debug, Clone, Serialize)]
pub struct CacheConfig {
    /// Separates this deployment's keys from others sharing a Redis.
    pub namespace: String,
    /// The in-process level.
    pub l1: L1Config,
    /// The shared level; `None` runs with L1 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l2: Option<L2Config>,
    /// The longest a call waits for another call's in-flight backend fetch of the same key.
    #[serde(serialize_with = "duration")]
    pub flight_wait: Duration,
    /// The cross-replica stampede guard; `None`: each replica fetches a cold key on its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseConfig>,
    /// Response metadata never stored or replayed (besides `set-cookie`), lowercase names.
    pub private_metadata: Vec<String>,
}

/// The cross-replica lease on cold keys.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseConfig {
    /// How long a lease lives when its holder never releases it (crashed).
    #[serde(serialize_with = "duration")]
    pub ttl: Duration,
    /// How long a replica waits for the holder's answer before calling the backend itself, uncached.
    #[serde(serialize_with = "duration")]
    pub wait: Duration,
}

/// The in-process level.
#[derive(Debug, Clone, Serialize)]
pub struct L1Config {
    /// Budget in bytes; 0 disables L1.
    #[serde(serialize_with = "size")]
    pub max_bytes: u64,
    /// While the invalidation channel is down, L1 entries older than this are not served.
    #[serde(serialize_with = "duration")]
    pub max_ttl_when_disconnected: Duration,
}

/// The shared Redis level.
#[derive(Debug, Clone, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
pub struct BackendConfig {
    /// `http://host:port` addresses, called round-robin.
    pub endpoints: Vec<String>,
    /// The longest the gateway waits for the backend's answer on a cached route.
    #[serde(serialize_with = "duration")]
    pub timeout: Duration,
    /// The longest a TCP connect to an endpoint may take.
    #[serde(serialize_with = "duration")]
    pub connect_timeout: Duration,
}

/// One route: which calls, which backend, and whether and how they are cached.
#[derive(Debug, Clone, Serialize)]
pub struct RouteConfig {
    /// `/pkg.Service/Method`, `/pkg.Service/*` or `*`.
    #[serde(rename = "match")]
    pub matches: String,
    /// The backend's name (a key of `backends`).
    pub backend: String,
    /// Present: unary calls are cached. Absent: calls are proxied untouched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<RouteCacheConfig>,
}

/// How a route caches.
#[derive(Debug, Clone, Serialize)]
pub struct RouteCacheConfig {
    /// How long an OK answer is fresh.
    #[serde(serialize_with = "duration")]
    pub ttl: Duration,
    /// How long an answer with one of `negative_codes` is cached (0: not at all).
    #[serde(serialize_with = "duration")]
    pub negative_ttl: Duration,
    /// Status codes cached for `negative_ttl` (canonical names).
    pub negative_codes: Vec<String>,
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
    /// Request metadata whose values are part of the key (lowercase names).
    pub vary: Vec<String>,
    /// Cache calls carrying `authorization` or `cookie` even when the key does not vary on them.
    pub shared: bool,
}

fn duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&units::format_duration(*d))
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
