//! Turns the raw config into a [`Config`], collecting every invalid field with its path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::backend::backend;
use super::cache::cache;
use super::descriptors::descriptors;
use super::errors::Errors;
use super::raw::{RawAdmin, RawConfig, RawLog, RawServerTls, RawTelemetry, TOP_LEVEL_KEYS};
use super::route::route;
use super::{
    AdminConfig, Config, FieldError, LogConfig, LogFormat, ServerTlsConfig, TelemetryConfig,
};

/// Defaults, shared with docs/CONFIG.md.
const DEFAULT_LISTEN: &str = "0.0.0.0:50051";
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
const DEFAULT_MAX_REQUEST: u64 = 4 << 20;
const DEFAULT_MAX_RESPONSE: u64 = 16 << 20;
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
const DEFAULT_TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// The idle limit of a client connection: as long as a client may pause between bursts and keep its connection.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// More threads than any machine the gateway runs on has CPUs: a typo, not a setting.
const MAX_WORKER_THREADS: usize = 1024;

pub(super) fn validate(raw: RawConfig) -> Result<Config, Vec<FieldError>> {
    let mut e = Errors::default();
    e.unknown("", &raw.unknown, &TOP_LEVEL_KEYS);

    let listen = e.addr("listen", raw.listen.as_deref(), DEFAULT_LISTEN);
    let tls = raw.tls.map(|t| server_tls(&mut e, t));
    let admin = admin(&mut e, raw.admin.unwrap_or_default(), listen);

    let cache = cache(&mut e, raw.cache.unwrap_or_default());
    let descriptors = descriptors(&mut e, raw.descriptors.unwrap_or_default());
    let backends: BTreeMap<_, _> = raw
        .backends
        .into_iter()
        .map(|(name, b)| {
            let b = backend(&mut e, &name, b);
            (name, b)
        })
        .collect();
    if raw.routes.is_empty() {
        e.add(
            "routes",
            "at least one route is needed (e.g. `- match: \"*\"` with a backend)",
        );
    }
    let routes = raw
        .routes
        .into_iter()
        .enumerate()
        .map(|(i, r)| route(&mut e, i, r, &backends))
        .collect();

    let max_request_bytes = e.size(
        "max_request_bytes",
        raw.max_request_bytes.as_ref(),
        DEFAULT_MAX_REQUEST,
    );
    if max_request_bytes == 0 {
        e.add("max_request_bytes", "must be greater than 0");
    }
    let max_response_bytes = e.size(
        "max_response_bytes",
        raw.max_response_bytes.as_ref(),
        DEFAULT_MAX_RESPONSE,
    );
    if max_response_bytes == 0 {
        e.add("max_response_bytes", "must be greater than 0");
    }
    let log = log(&mut e, raw.log.unwrap_or_default());
    let telemetry = telemetry(&mut e, raw.telemetry.unwrap_or_default());
    let config = Config {
        listen,
        tls,
        log,
        telemetry,
        admin,
        cache,
        descriptors,
        backends,
        routes,
        max_request_bytes,
        max_response_bytes,
        expose_cache_status: raw.expose_cache_status.unwrap_or(true),
        shutdown_grace: e.duration(
            "shutdown_grace",
            raw.shutdown_grace.as_ref(),
            DEFAULT_SHUTDOWN_GRACE,
        ),
        drain_delay: e.duration("drain_delay", raw.drain_delay.as_ref(), Duration::ZERO),
        idle_timeout: e.positive_duration(
            "idle_timeout",
            raw.idle_timeout.as_ref(),
            DEFAULT_IDLE_TIMEOUT,
        ),
        max_concurrent_requests: raw.max_concurrent_requests.filter(|n| *n > 0),
        worker_threads: raw.worker_threads,
    };
    if raw.max_concurrent_requests == Some(0) {
        e.add(
            "max_concurrent_requests",
            "must be at least 1 (leave it out for no limit)",
        );
    }
    if raw
        .worker_threads
        .is_some_and(|threads| !(1..=MAX_WORKER_THREADS).contains(&threads))
    {
        e.add(
            "worker_threads",
            format!(
                "must be 1 to {MAX_WORKER_THREADS} (leave it out for one per CPU the process may use)"
            ),
        );
    }
    if e.0.is_empty() { Ok(config) } else { Err(e.0) }
}

fn server_tls(e: &mut Errors, t: RawServerTls) -> ServerTlsConfig {
    e.unknown(
        "tls",
        &t.unknown,
        &["cert", "key", "client_ca", "reload_interval"],
    );
    let cert = e.file("tls.cert", t.cert, true);
    let key = e.file("tls.key", t.key, true);
    ServerTlsConfig {
        cert: cert.unwrap_or_default(),
        key: key.unwrap_or_default(),
        client_ca: e.file("tls.client_ca", t.client_ca, false),
        reload_interval: e.positive_duration(
            "tls.reload_interval",
            t.reload_interval.as_ref(),
            DEFAULT_TLS_RELOAD_INTERVAL,
        ),
    }
}

/// The admin listener; its address must differ from the data listener's (`listen`).
fn admin(e: &mut Errors, admin: RawAdmin, listen: SocketAddr) -> AdminConfig {
    e.unknown("admin", &admin.unknown, &["listen", "token"]);
    let admin = AdminConfig {
        listen: e.addr(
            "admin.listen",
            admin.listen.as_deref(),
            DEFAULT_ADMIN_LISTEN,
        ),
        token: admin.token.filter(|t| !t.is_empty()),
    };
    if listen == admin.listen && listen.port() != 0 {
        e.add(
            "admin.listen",
            format!("must differ from `listen` ({listen})"),
        );
    }
    admin
}
fn log(e: &mut Errors, log: RawLog) -> LogConfig {
    e.unknown("log", &log.unknown, &["level", "format", "access"]);
    let level = log.level.unwrap_or_else(|| "info".to_owned());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        e.add(
            "log.level",
            format!("`{level}` is not a log filter (e.g. `info`, `strata_gateway=debug,info`)"),
        );
    }
    let format = match log.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            e.add("log.format", format!("`{other}`: use `text` or `json`"));
            LogFormat::Text
        }
    };
    LogConfig {
        level,
        format,
        access: log.access.unwrap_or(true),
    }
}

fn telemetry(e: &mut Errors, telemetry: RawTelemetry) -> TelemetryConfig {
    e.unknown(
        "telemetry",
        &telemetry.unknown,
        &["otlp_endpoint", "sample_ratio", "service_name"],
    );
    let sample_ratio = telemetry.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        e.add(
            "telemetry.sample_ratio",
            format!("{sample_ratio} must be between 0 and 1"),
        );
    }
    let otlp_endpoint = telemetry.otlp_endpoint.filter(|u| !u.is_empty());
    if let Some(url) = &otlp_endpoint {
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || url.parse::<http::Uri>().is_err()
        {
            e.add(
                "telemetry.otlp_endpoint",
                format!("`{url}` is not an http(s):// URL of an OTLP/gRPC collector"),
            );
        }
    }
    TelemetryConfig {
        otlp_endpoint,
        sample_ratio: sample_ratio.clamp(0.0, 1.0),
        service_name: telemetry
            .service_name
            .unwrap_or_else(|| "strata".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigError};

    const GOOD: &str = r#"
listen: 127.0.0.1:50051
admin: { listen: 127.0.0.1:9901 }
cache:
  namespace: strata
  l1: { max_bytes: 64MiB }
  l2: { url: "redis://:pw@127.0.0.1:6379", timeout: 25ms }
backends:
  catalog: { endpoints: ["http://127.0.0.1:50052"], timeout: 2s }
routes:
  - match: /demo.v1.Catalog/GetItem
    backend: catalog
    cache: { ttl: 30s, vary: [X-Tenant-Id] }
  - match: "*"
    backend: catalog
"#;

    #[test]
    fn the_issue_example_is_valid() {
        let c = Config::from_yaml(GOOD).expect("valid");
        assert_eq!(c.cache.l1.max_bytes, 64 << 20);
        assert_eq!(
            c.cache.l2.as_ref().map(|l2| l2.timeout.as_millis()),
            Some(25)
        );
        assert_eq!(
            c.routes[0].cache.as_ref().map(|p| p.vary.clone()),
            Some(vec![http::HeaderName::from_static("x-tenant-id")])
        );
        assert_eq!(c.max_request_bytes, 4 << 20);
        let printed = c.to_yaml();
        assert!(printed.contains("redis://:***@127.0.0.1:6379"), "{printed}");
        assert!(!printed.contains("pw"), "{printed}");
    }

    #[test]
    fn every_mistake_is_named_with_its_path() {
        let bad = r#"
listen: 127.0.0.1:50051
lisen: oops
log: { level: "=nonsense=", format: xml }
cache:
  l1: { max_bytes: 64 parsecs }
  l2: { url: "http://nope", timeout: 25 }
backends:
  catalog: { endpoints: ["127.0.0.1:50052"], timeout: 2 s, retries: 3 }
routes:
  - match: GetItem
    backend: catalgo
    cache: { ttl: 0s, vary: ["bad header"] }
  - match: "*"
    backend: catalog
    cache:
      ttl: 30s
      max_ttl: 10s
      negative_codes: [NOT_FOUND, UNAVAILABLE, NOPE, OK]
      early_refresh_beta: -1
      stale_if_error: forever
"#;
        let Err(ConfigError::Invalid(errors)) = Config::from_yaml(bad) else {
            panic!("invalid")
        };
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        for expected in [
            "lisen",
            "log.level",
            "log.format",
            "cache.l1.max_bytes",
            "cache.l2.url",
            "cache.l2.timeout",
            "backends.catalog.endpoints[0]",
            "backends.catalog.timeout",
            "backends.catalog.retries",
            "routes[0].match",
            "routes[0].backend",
            "routes[0].cache.ttl",
            "routes[0].cache.vary[0]",
            "routes[1].cache.max_ttl",
            "routes[1].cache.negative_codes[1]",
            "routes[1].cache.negative_codes[2]",
            "routes[1].cache.negative_codes[3]",
            "routes[1].cache.early_refresh_beta",
            "routes[1].cache.stale_if_error",
        ] {
            assert!(
                paths.contains(&expected),
                "{expected} missing from {paths:?}"
            );
        }
    }

    #[test]
    fn route_cache_defaults() {
        let c = Config::from_yaml(GOOD).expect("valid");
        let rule = c.routes[0].cache.as_ref().expect("cached route");
        assert_eq!(rule.negative_codes, [tonic::Code::NotFound]);
        assert!(rule.negative_ttl.is_zero(), "negative caching is opt-in");
        assert_eq!(
            rule.max_ttl, rule.ttl,
            "the backend may shorten, not lengthen, by default"
        );
        assert_eq!(rule.max_entry_bytes, 1 << 20);
        assert!(!rule.shared);
    }

    #[test]
    fn worker_threads_is_a_count_of_threads() {
        assert_eq!(Config::from_yaml(GOOD).expect("valid").worker_threads, None);
        let two = Config::from_yaml(&format!("{GOOD}worker_threads: 2\n")).expect("valid");
        assert_eq!(two.worker_threads, Some(2));
        for bad in ["0", "100000", "-1", "many"] {
            let err =
                Config::from_yaml(&format!("{GOOD}worker_threads: {bad}\n")).expect_err("invalid");
            assert!(err.to_string().contains("worker_threads"), "{bad}: {err}");
        }
    }

    #[test]
    fn wrong_types_name_the_field() {
        let err = Config::from_yaml("listen: [1, 2]\nroutes: []\n").expect_err("invalid");
        assert!(err.to_string().contains("listen"), "{err}");
    }
}
