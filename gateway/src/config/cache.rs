//! Validating `cache`: the namespace, L1, the Redis L2, the flight wait, the lease, private metadata.

use std::time::Duration;

use super::errors::Errors;
use super::raw::{RawCache, RawL1, RawL2, RawLease};
use super::{CacheConfig, L1Config, L2Config, LeaseConfig};

/// Defaults of `cache`, shared with docs/CONFIG.md.
const DEFAULT_NAMESPACE: &str = "strata";
const DEFAULT_L1_BYTES: u64 = 256 << 20;
const DEFAULT_L1_MAX_TTL_WHEN_DISCONNECTED: Duration = Duration::from_secs(5);
const DEFAULT_L2_TIMEOUT: Duration = Duration::from_millis(25);
const DEFAULT_WRITE_QUEUE: u64 = 1024;
const DEFAULT_FLIGHT_WAIT: Duration = Duration::from_secs(5);
const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

pub(super) fn cache(e: &mut Errors, raw: RawCache) -> CacheConfig {
    e.unknown(
        "cache",
        &raw.unknown,
        &[
            "namespace",
            "l1",
            "l2",
            "flight_wait",
            "lease",
            "private_metadata",
        ],
    );
    let namespace = raw
        .namespace
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    if namespace.is_empty()
        || !namespace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        e.add(
            "cache.namespace",
            format!("`{namespace}` must be non-empty and use only letters, digits, `-`, `_`, `.`"),
        );
    }
    let l1 = l1(e, raw.l1.unwrap_or_default());
    let l2 = raw.l2.map(|l2| l2_config(e, l2));
    let flight_wait = e.positive_duration(
        "cache.flight_wait",
        raw.flight_wait.as_ref(),
        DEFAULT_FLIGHT_WAIT,
    );
    let lease = raw.lease.map(|raw| lease(e, raw, l2.is_some()));
    CacheConfig {
        namespace,
        l1,
        l2,
        flight_wait,
        lease,
        private_metadata: e.metadata_names("cache.private_metadata", raw.private_metadata),
    }
}

fn l1(e: &mut Errors, l1: RawL1) -> L1Config {
    e.unknown(
        "cache.l1",
        &l1.unknown,
        &["max_bytes", "max_ttl_when_disconnected"],
    );
    L1Config {
        max_bytes: e.size(
            "cache.l1.max_bytes",
            l1.max_bytes.as_ref(),
            DEFAULT_L1_BYTES,
        ),
        max_ttl_when_disconnected: e.duration(
            "cache.l1.max_ttl_when_disconnected",
            l1.max_ttl_when_disconnected.as_ref(),
            DEFAULT_L1_MAX_TTL_WHEN_DISCONNECTED,
        ),
    }
}

/// One Redis server (`url`) or a cluster (`cluster` nodes), and how the gateway uses it.
fn l2_config(e: &mut Errors, l2: RawL2) -> L2Config {
    e.unknown(
        "cache.l2",
        &l2.unknown,
        &["url", "cluster", "timeout", "write_queue"],
    );
    let url = l2.url.filter(|u| !u.is_empty());
    match (&url, l2.cluster.is_empty()) {
        (None, true) => e.add(
            "cache.l2.url",
            "required when `cache.l2` is present (e.g. `redis://127.0.0.1:6379`), unless `cluster` lists nodes",
        ),
        (Some(_), false) => e.add("cache.l2.cluster", "give either `url` (one server) or `cluster` (nodes), not both"),
        (Some(url), true) => {
            if let Err(err) = redis_url_ok(url) {
                e.add("cache.l2.url", err);
            }
        }
        (None, false) => {
            for (i, node) in l2.cluster.iter().enumerate() {
                if let Err(err) = redis_url_ok(node) {
                    e.add(format!("cache.l2.cluster[{i}]"), err);
                } else if node.starts_with("redis+unix://") {
                    e.add(format!("cache.l2.cluster[{i}]"), "cluster nodes are reached over TCP: redis://host:port");
                }
            }
        }
    }
    let timeout = e.positive_duration("cache.l2.timeout", l2.timeout.as_ref(), DEFAULT_L2_TIMEOUT);
    let write_queue = l2.write_queue.unwrap_or(DEFAULT_WRITE_QUEUE);
    if write_queue == 0 || write_queue > 1 << 20 {
        e.add("cache.l2.write_queue", "must be between 1 and 1048576");
    }
    L2Config {
        url,
        cluster: l2.cluster,
        timeout,
        write_queue: usize::try_from(write_queue).unwrap_or(usize::MAX),
    }
}

/// The cross-replica lease; it lives in Redis, so it needs `cache.l2`.
fn lease(e: &mut Errors, lease: RawLease, has_l2: bool) -> LeaseConfig {
    e.unknown("cache.lease", &lease.unknown, &["ttl", "wait"]);
    if !has_l2 {
        e.add("cache.lease", "needs `cache.l2`: the lease lives in Redis");
    }
    let ttl = e.positive_duration("cache.lease.ttl", lease.ttl.as_ref(), DEFAULT_LEASE_TTL);
    // Still read (so old configs start, and a malformed value is reported), no longer used: a replica waits for
    // as long as the holder keeps its lease alive.
    let _ = e.positive_duration("cache.lease.wait", lease.wait.as_ref(), DEFAULT_LEASE_TTL);
    LeaseConfig { ttl }
}

fn redis_url_ok(url: &str) -> Result<(), String> {
    let shown = super::redact_url(url);
    if !(url.starts_with("redis://")
        || url.starts_with("rediss://")
        || url.starts_with("redis+unix://"))
    {
        return Err(format!(
            "`{shown}` must start with redis://, rediss:// or redis+unix://"
        ));
    }
    strata_cache::l2::RedisL2::check_url(url)
        .map_err(|reason| format!("`{shown}` is not a valid Redis URL: {reason}"))
}
