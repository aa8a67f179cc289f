//! Validating `backends.<name>`: endpoints, balancing, health checks, outlier ejection, limits and deadlines.

use std::time::Duration;

use super::errors::Errors;
use super::raw::{RawBackend, RawBackendTls, RawHealthCheck, RawOutlier, RawRetry, Scalar};
use super::{
    BackendConfig, BackendTlsConfig, HealthCheckConfig, Lb, OutlierConfig, RetryConfig, Target,
};
use crate::grpc::code;

/// Defaults of a backend, shared with docs/CONFIG.md.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 2;
const DEFAULT_HEALTHY_THRESHOLD: u32 = 1;
const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(30);
const DEFAULT_MAX_EJECTION_PERCENT: u32 = 50;

pub(super) fn backend(e: &mut Errors, name: &str, raw: RawBackend) -> BackendConfig {
    let path = format!("backends.{name}");
    let at = |field: &str| format!("{path}.{field}");
    e.unknown(
        &path,
        &raw.unknown,
        &[
            "endpoints",
            "timeout",
            "connect_timeout",
            "lb",
            "resolve_interval",
            "keepalive_interval",
            "keepalive_timeout",
            "health_check",
            "outlier",
            "retry",
            "tls",
            "max_concurrent_requests",
            "default_timeout",
            "max_timeout",
        ],
    );
    let endpoints = endpoints(e, &path, &raw.endpoints, raw.tls.is_some());
    let tls = raw.tls.map(|t| tls(e, &at("tls"), t));
    let lb = lb(e, &at("lb"), raw.lb.as_deref());
    let health_check = raw
        .health_check
        .map(|h| health_check(e, &at("health_check"), h));
    let outlier = raw.outlier.map(|o| outlier(e, &at("outlier"), o));
    let timeout = e.positive_duration(&at("timeout"), raw.timeout.as_ref(), DEFAULT_TIMEOUT);
    let retry = raw.retry.map(|r| retry(e, &at("retry"), r, timeout));
    if raw.max_concurrent_requests == Some(0) {
        e.add(
            at("max_concurrent_requests"),
            "must be at least 1 (leave it out for no limit)",
        );
    }
    let (default_timeout, max_timeout) = deadlines(
        e,
        &path,
        raw.default_timeout.as_ref(),
        raw.max_timeout.as_ref(),
    );
    BackendConfig {
        endpoints,
        timeout,
        retry,
        tls,
        connect_timeout: e.duration(
            &at("connect_timeout"),
            raw.connect_timeout.as_ref(),
            DEFAULT_CONNECT_TIMEOUT,
        ),
        resolve_interval: e.positive_duration(
            &at("resolve_interval"),
            raw.resolve_interval.as_ref(),
            DEFAULT_RESOLVE_INTERVAL,
        ),
        lb,
        keepalive_interval: e.positive_duration(
            &at("keepalive_interval"),
            raw.keepalive_interval.as_ref(),
            DEFAULT_KEEPALIVE_INTERVAL,
        ),
        keepalive_timeout: e.positive_duration(
            &at("keepalive_timeout"),
            raw.keepalive_timeout.as_ref(),
            DEFAULT_KEEPALIVE_TIMEOUT,
        ),
        health_check,
        outlier,
        max_concurrent_requests: raw.max_concurrent_requests.filter(|n| *n > 0),
        default_timeout,
        max_timeout,
    }
}

/// The endpoints, each parsed once into a [`Target`]; plaintext ones refused when `tls` is set.
fn endpoints(e: &mut Errors, path: &str, raw: &[String], tls: bool) -> Vec<Target> {
    if raw.is_empty() {
        e.add(
            format!("{path}.endpoints"),
            "at least one endpoint is needed (e.g. `http://127.0.0.1:50052`)",
        );
    }
    let mut endpoints = Vec::with_capacity(raw.len());
    for (i, endpoint) in raw.iter().enumerate() {
        match Target::parse(endpoint) {
            Err(reason) => e.add(format!("{path}.endpoints[{i}]"), reason),
            Ok(target) if tls && target.is_plaintext() => e.add(
                format!("{path}.endpoints[{i}]"),
                "`tls` is set: use https:// (or dns:///, which then connects with TLS)",
            ),
            Ok(target) => endpoints.push(target),
        }
    }
    endpoints
}

fn tls(e: &mut Errors, tls_path: &str, t: RawBackendTls) -> BackendTlsConfig {
    e.unknown(tls_path, &t.unknown, &["ca", "cert", "key", "server_name"]);
    let cert = e.file(&format!("{tls_path}.cert"), t.cert, false);
    let key = e.file(&format!("{tls_path}.key"), t.key, false);
    if cert.is_some() != key.is_some() {
        e.add(
            tls_path,
            "`cert` and `key` go together (the client certificate and its key)",
        );
    }
    BackendTlsConfig {
        ca: e.file(&format!("{tls_path}.ca"), t.ca, false),
        cert,
        key,
        server_name: t.server_name.filter(|n| !n.is_empty()),
    }
}

fn lb(e: &mut Errors, path: &str, raw: Option<&str>) -> Lb {
    match raw {
        None | Some("round_robin") => Lb::RoundRobin,
        Some("p2c") => Lb::P2c,
        Some(other) => {
            e.add(
                path,
                format!("`{other}` is not a balancer: use round_robin or p2c"),
            );
            Lb::RoundRobin
        }
    }
}

fn health_check(e: &mut Errors, path: &str, h: RawHealthCheck) -> HealthCheckConfig {
    e.unknown(
        path,
        &h.unknown,
        &[
            "interval",
            "timeout",
            "unhealthy_threshold",
            "healthy_threshold",
            "service",
        ],
    );
    HealthCheckConfig {
        interval: e.positive_duration(
            &format!("{path}.interval"),
            h.interval.as_ref(),
            DEFAULT_HEALTH_INTERVAL,
        ),
        timeout: e.positive_duration(
            &format!("{path}.timeout"),
            h.timeout.as_ref(),
            DEFAULT_HEALTH_TIMEOUT,
        ),
        unhealthy_threshold: at_least_one(
            e,
            &format!("{path}.unhealthy_threshold"),
            h.unhealthy_threshold,
            DEFAULT_UNHEALTHY_THRESHOLD,
        ),
        healthy_threshold: at_least_one(
            e,
            &format!("{path}.healthy_threshold"),
            h.healthy_threshold,
            DEFAULT_HEALTHY_THRESHOLD,
        ),
        service: h.service.unwrap_or_default(),
    }
}

fn outlier(e: &mut Errors, path: &str, o: RawOutlier) -> OutlierConfig {
    e.unknown(
        path,
        &o.unknown,
        &[
            "consecutive_failures",
            "base_ejection_time",
            "max_ejection_percent",
        ],
    );
    let max_ejection_percent = o
        .max_ejection_percent
        .unwrap_or(DEFAULT_MAX_EJECTION_PERCENT);
    if max_ejection_percent > 100 {
        e.add(
            format!("{path}.max_ejection_percent"),
            "must be between 0 and 100",
        );
    }
    OutlierConfig {
        consecutive_failures: at_least_one(
            e,
            &format!("{path}.consecutive_failures"),
            o.consecutive_failures,
            DEFAULT_CONSECUTIVE_FAILURES,
        ),
        base_ejection_time: e.positive_duration(
            &format!("{path}.base_ejection_time"),
            o.base_ejection_time.as_ref(),
            DEFAULT_BASE_EJECTION,
        ),
        max_ejection_percent: max_ejection_percent.min(100),
    }
}

/// `default_timeout` and `max_timeout`, the first no longer than the second.
fn deadlines(
    e: &mut Errors,
    path: &str,
    default_timeout: Option<&Scalar>,
    max_timeout: Option<&Scalar>,
) -> (Option<Duration>, Option<Duration>) {
    let at = |field: &str| format!("{path}.{field}");
    let default_timeout = default_timeout
        .map(|d| e.positive_duration(&at("default_timeout"), Some(d), Duration::ZERO));
    let max_timeout =
        max_timeout.map(|d| e.positive_duration(&at("max_timeout"), Some(d), Duration::ZERO));
    if let (Some(default), Some(max)) = (default_timeout, max_timeout) {
        if default > max {
            e.add(at("default_timeout"), "must not exceed max_timeout");
        }
    }
    (default_timeout, max_timeout)
}

pub(super) fn retry(e: &mut Errors, path: &str, r: RawRetry, timeout: Duration) -> RetryConfig {
    e.unknown(
        path,
        &r.unknown,
        &[
            "attempts",
            "per_try_timeout",
            "on",
            "backoff",
            "budget_percent",
            "min_retries_per_second",
        ],
    );
    let attempts = r.attempts.unwrap_or(2);
    if !(1..=10).contains(&attempts) {
        e.add(
            format!("{path}.attempts"),
            "must be between 1 and 10 (the first attempt included)",
        );
    }
    let on = r.on.unwrap_or_else(|| vec!["UNAVAILABLE".to_owned()]);
    let mut codes = Vec::with_capacity(on.len());
    for (i, name) in on.iter().enumerate() {
        match code::from_name(name) {
            Some(c) if c != tonic::Code::Ok => codes.push(c),
            _ => e.add(
                format!("{path}.on[{i}]"),
                format!("`{name}` is not an error status code name (e.g. UNAVAILABLE)"),
            ),
        }
    }
    let budget_percent = r.budget_percent.unwrap_or(20);
    if budget_percent > 100 {
        e.add(
            format!("{path}.budget_percent"),
            "must be between 0 and 100",
        );
    }
    RetryConfig {
        attempts: attempts.clamp(1, 10),
        per_try_timeout: e.positive_duration(
            &format!("{path}.per_try_timeout"),
            r.per_try_timeout.as_ref(),
            timeout,
        ),
        on: codes,
        backoff: e.duration(
            &format!("{path}.backoff"),
            r.backoff.as_ref(),
            Duration::from_millis(25),
        ),
        budget_percent: budget_percent.min(100),
        min_retries_per_second: r.min_retries_per_second.unwrap_or(10),
    }
}

fn at_least_one(e: &mut Errors, path: &str, value: Option<u32>, default: u32) -> u32 {
    match value {
        Some(0) => {
            e.add(path, "must be at least 1");
            default
        }
        Some(n) => n,
        None => default,
    }
}
