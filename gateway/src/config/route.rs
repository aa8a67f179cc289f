//! Validating `routes[]`: where calls go, and how a cached route stores and serves answers.

use std::collections::BTreeMap;
use std::time::Duration;

use super::descriptors::key_rules;
use super::errors::Errors;
use super::raw::{RawRateLimit, RawRoute, RawRouteCache};
use super::{
    ApplyTo, BackendConfig, ExplicitValues, RateLimitConfig, RouteCacheConfig, RouteConfig,
};
use crate::grpc::code;

/// Defaults of a route's `cache:` block, shared with docs/CONFIG.md.
const DEFAULT_MAX_ENTRY_BYTES: u64 = 1 << 20;
const DEFAULT_NEGATIVE_CODES: [tonic::Code; 1] = [tonic::Code::NotFound];

pub(super) fn route(
    e: &mut Errors,
    i: usize,
    raw: RawRoute,
    backends: &BTreeMap<String, BackendConfig>,
) -> RouteConfig {
    let path = format!("routes[{i}]");
    e.unknown(
        &path,
        &raw.unknown,
        &["match", "backend", "cache", "rate_limit"],
    );
    let matcher = super::Matcher::parse(raw.matches.as_deref().unwrap_or_default()).unwrap_or_else(
        |reason| {
            e.add(format!("{path}.match"), reason);
            super::Matcher::Any
        },
    );
    let backend = raw.backend.unwrap_or_default();
    if backend.is_empty() {
        e.add(
            format!("{path}.backend"),
            "required: the name of a backend under `backends`",
        );
    } else if !backends.contains_key(&backend) {
        let known: Vec<_> = backends.keys().map(String::as_str).collect();
        let known = if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        };
        e.add(
            format!("{path}.backend"),
            format!("unknown backend `{backend}` (defined: {known})"),
        );
    }
    let cache = raw
        .cache
        .map(|c| route_cache(e, &format!("{path}.cache"), c));
    let rate_limit = raw
        .rate_limit
        .map(|r| rate_limit(e, &format!("{path}.rate_limit"), r));
    let retry = raw.retry.map(|r| {
        if cache.is_some() {
            e.add(format!("{path}.retry"), "a cached route is retried by `backends.<name>.retry`; `retry` here is for passthrough routes");
        }
        let timeout = backends.get(&backend).map_or(std::time::Duration::from_secs(5), |b| b.timeout);
        super::backend::retry(e, &format!("{path}.retry"), r, timeout)
    });
    RouteConfig {
        matcher,
        backend,
        cache,
        rate_limit,
        retry,
    }
}

fn rate_limit(e: &mut Errors, path: &str, r: RawRateLimit) -> RateLimitConfig {
    e.unknown(path, &r.unknown, &["rps", "burst", "key", "apply_to"]);
    let rps = match r.rps {
        Some(0) | None => {
            e.add(
                format!("{path}.rps"),
                "required: calls per second, at least 1",
            );
            1
        }
        Some(n) => n,
    };
    if r.burst == Some(0) {
        e.add(
            format!("{path}.burst"),
            "must be at least 1 (leave it out for `rps`)",
        );
    }
    let key = r
        .key
        .and_then(|k| e.metadata_name(&format!("{path}.key"), &k));
    let apply_to = match r.apply_to.as_deref() {
        None | Some("all") => ApplyTo::All,
        Some("misses") => ApplyTo::Misses,
        Some(other) => {
            e.add(
                format!("{path}.apply_to"),
                format!("`{other}`: use `all` or `misses`"),
            );
            ApplyTo::All
        }
    };
    RateLimitConfig {
        rps,
        burst: r.burst.filter(|b| *b > 0).unwrap_or(rps),
        key,
        apply_to,
    }
}

fn route_cache(e: &mut Errors, path: &str, c: RawRouteCache) -> RouteCacheConfig {
    e.unknown(
        path,
        &c.unknown,
        &[
            "ttl",
            "negative_ttl",
            "negative_codes",
            "stale_while_revalidate",
            "stale_if_error",
            "early_refresh_beta",
            "max_ttl",
            "max_entry_bytes",
            "vary",
            "shared",
            "key_fields",
            "ignore_fields",
            "canonical",
            "keep_unknown_fields",
            "from_proto",
        ],
    );
    let at = |field: &str| format!("{path}.{field}");
    let from_proto = c.from_proto.unwrap_or(false);
    // A `from_proto` route may leave `ttl` to each method's option.
    if c.ttl.is_none() && !from_proto {
        e.add(
            at("ttl"),
            "required: how long an answer stays fresh, e.g. `30s`",
        );
    }
    let explicit = ExplicitValues {
        ttl: c.ttl.is_some(),
        negative_ttl: c.negative_ttl.is_some(),
        stale_while_revalidate: c.stale_while_revalidate.is_some(),
        stale_if_error: c.stale_if_error.is_some(),
        max_ttl: c.max_ttl.is_some(),
        vary: !c.vary.is_empty(),
        key_fields: !c.key_fields.is_empty() || !c.ignore_fields.is_empty(),
    };
    let ttl = match &c.ttl {
        Some(ttl) => e.positive_duration(&at("ttl"), Some(ttl), Duration::ZERO),
        None => Duration::ZERO,
    };
    let negative_ttl = e.duration(&at("negative_ttl"), c.negative_ttl.as_ref(), Duration::ZERO);
    let negative_codes = negative_codes(e, &at("negative_codes"), c.negative_codes);
    let stale_while_revalidate = e.duration(
        &at("stale_while_revalidate"),
        c.stale_while_revalidate.as_ref(),
        Duration::ZERO,
    );
    let stale_if_error = e.duration(
        &at("stale_if_error"),
        c.stale_if_error.as_ref(),
        Duration::ZERO,
    );
    let early_refresh_beta = c.early_refresh_beta.unwrap_or(0.0);
    if !(0.0..=100.0).contains(&early_refresh_beta) {
        e.add(
            at("early_refresh_beta"),
            format!("{early_refresh_beta} must be between 0 (off) and 100; 1 is the usual setting"),
        );
    }
    let max_ttl = e.duration(&at("max_ttl"), c.max_ttl.as_ref(), ttl);
    if c.max_ttl.is_some() && max_ttl < ttl {
        e.add(
            at("max_ttl"),
            "must be at least `ttl` (it caps what a backend's cache-control may ask for)",
        );
    }
    let max_entry_bytes = e.size(
        &at("max_entry_bytes"),
        c.max_entry_bytes.as_ref(),
        DEFAULT_MAX_ENTRY_BYTES,
    );
    let vary = e.metadata_names(&at("vary"), c.vary);
    let key = key_rules(
        e,
        path,
        c.key_fields,
        c.ignore_fields,
        c.canonical,
        c.keep_unknown_fields,
    );
    RouteCacheConfig {
        ttl,
        negative_ttl,
        negative_codes,
        stale_while_revalidate,
        stale_if_error,
        early_refresh_beta,
        max_ttl,
        max_entry_bytes,
        vary,
        shared: c.shared.unwrap_or(false),
        key,
        from_proto,
        explicit,
    }
}

/// The negative codes; never one that must not be cached.
fn negative_codes(e: &mut Errors, path: &str, names: Option<Vec<String>>) -> Vec<tonic::Code> {
    let Some(names) = names else {
        return DEFAULT_NEGATIVE_CODES.to_vec();
    };
    let mut out = Vec::with_capacity(names.len());
    for (j, name) in names.iter().enumerate() {
        match code::from_name(name) {
            None => e.add(
                format!("{path}[{j}]"),
                format!("`{name}` is not a gRPC status code name (e.g. NOT_FOUND)"),
            ),
            Some(tonic::Code::Ok) => e.add(
                format!("{path}[{j}]"),
                "OK answers are cached by `ttl`, not as negative answers",
            ),
            Some(c) if code::NEVER_CACHED.contains(&c) => e.add(
                format!("{path}[{j}]"),
                format!(
                    "{} is never cached: it says how the backend is doing, not what the answer is",
                    code::name(c)
                ),
            ),
            Some(c) => out.push(c),
        }
    }
    out
}
