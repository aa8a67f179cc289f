//! What the L2 tests share: a counting loader, replicas over one Redis, keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use strata_cache::l2::{L2, RedisL2, RedisL2Config, RedisNodes};
use strata_cache::{
    Entry, Fetched, Key, KeyBuilder, LeaseConfig, Lifetime, LoadError, LoadMode, Loader, Policy,
    Tiered, TieredConfig,
};

/// A fake backend: answers `answer <n>` (n counting from 0 across every clone) after `delay`, fresh for 60 s.
#[derive(Clone, Default)]
pub struct Backend {
    pub calls: Arc<AtomicUsize>,
    pub delay: Duration,
    /// How long its answers may be used (fresh for 60 s when not set).
    pub lifetime: Option<Lifetime>,
}

impl Backend {
    pub fn slow(delay: Duration) -> Self {
        Self {
            calls: Arc::default(),
            delay,
            lifetime: None,
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Loader for Backend {
    fn time_limit(&self) -> Duration {
        Duration::from_secs(10)
    }

    async fn load(self, _mode: LoadMode) -> Result<Fetched, LoadError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let entry = Entry::unstamped(Bytes::from(format!("answer {n}")), 0, String::new());
        Ok(Fetched::store(
            entry,
            self.lifetime
                .unwrap_or(Lifetime::fresh_for(Duration::from_secs(60))),
        ))
    }
}

pub const POLICY: Policy = Policy {
    early_refresh_beta: 0.0,
};

/// An L2 over `nodes`, once it answers (a cluster connection is established in the background).
pub async fn l2_for(nodes: RedisNodes, timeout: Duration) -> RedisL2 {
    let l2 = RedisL2::new(&RedisL2Config {
        nodes,
        timeout,
        key_prefix: "test".into(),
    })
    .expect("valid urls");
    let connected = tokio::time::timeout(Duration::from_secs(10), async {
        while l2.get(&key("probe")).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(connected.is_ok(), "L2 answers");
    l2
}

fn tiered(
    l2: &RedisL2,
    l1_max_bytes: u64,
    write_queue: usize,
    lease: Option<LeaseConfig>,
    out_of_step: Duration,
) -> Arc<Tiered> {
    let l2: Arc<dyn L2> = Arc::new(l2.clone());
    Arc::new(Tiered::new(
        &TieredConfig {
            l1_max_bytes,
            flight_wait: Duration::from_secs(5),
            write_queue,
            lease,
            l1_max_age_out_of_step: out_of_step,
        },
        Some(l2),
    ))
}

/// A cache over `l2` with L1 off, so every lookup shows what L2 did.
pub fn cache(l2: &RedisL2, write_queue: usize) -> Arc<Tiered> {
    tiered(l2, 0, write_queue, None, Duration::from_secs(60))
}

/// A replica: its own L1 and flights, the shared Redis, and the lease.
pub fn replica(l2: &RedisL2, lease: LeaseConfig) -> Arc<Tiered> {
    tiered(l2, 1 << 20, 16, Some(lease), Duration::from_secs(60))
}

/// A replica whose L1 is trusted for only `out_of_step` while the invalidation channel is down.
pub fn replica_trusting_l1_for(l2: &RedisL2, out_of_step: Duration) -> Arc<Tiered> {
    tiered(l2, 1 << 20, 16, None, out_of_step)
}

pub fn key(s: &str) -> Key {
    KeyBuilder::new("test", "/t.S/M").finish(s.as_bytes())
}

/// A key of scope `/t.S/M`, built with the generation `replica` currently knows.
pub async fn scoped_key(replica: &Tiered, name: &str) -> Key {
    let generation = replica.generations(&["/t.S/M"]).await[0];
    KeyBuilder::new("test", "/t.S/M")
        .generation("/t.S/M", generation)
        .finish(name.as_bytes())
}

/// Waits until every replica has subscribed to the invalidation channel.
pub async fn in_step(replicas: &[&Arc<Tiered>]) {
    let ok = tokio::time::timeout(Duration::from_secs(10), async {
        while replicas
            .iter()
            .any(|r| r.stats().snapshot().channel_connects == 0)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        ok.is_ok(),
        "replicas subscribed to the invalidation channel"
    );
}

/// Waits until `l2` holds an entry under `key`.
pub async fn stored(l2: &RedisL2, key: &Key) -> bool {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !matches!(l2.get(key).await, Ok(Some(_))) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .is_ok()
}
