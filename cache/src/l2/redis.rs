//! The Redis implementation of [`L2`]: one multiplexed connection that reconnects by itself, every call under a
//! timeout.

use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use futures::StreamExt;

use super::{Invalidation, InvalidationStream, L2, L2Future, L2Write};
use crate::error::L2Error;
use crate::key::Key;

/// Settings of [`RedisL2`].
#[derive(Debug, Clone)]
pub struct RedisL2Config {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// The longest any single L2 call may take before it counts as a miss.
    pub timeout: Duration,
    /// Prefix of every Redis key (`<prefix>:<64 hex digits>`).
    pub key_prefix: String,
}

/// L2 backed by a Redis server.
///
/// The connection is established lazily and re-established after failures, so Strata starts without Redis and picks
/// it up when it appears; until then every call fails fast and counts as a miss.
#[derive(Clone)]
pub struct RedisL2 {
    client: redis::Client,
    conn: ConnectionManager,
    timeout: Duration,
    key_prefix: String,
}

impl std::fmt::Debug for RedisL2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisL2")
            .field("timeout", &self.timeout)
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

impl RedisL2 {
    /// Prepares the connection (without connecting). Fails only if the URL is invalid. Needs a tokio runtime.
    pub fn new(config: &RedisL2Config) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(config.url.as_str())?;
        let manager_config = ConnectionManagerConfig::new()
            // Reconnect attempts are cheap and bounded; while one is under way, calls wait at most `timeout`.
            .set_number_of_retries(3)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(500))
            .set_connection_timeout(Some(Duration::from_secs(1).max(config.timeout)))
            .set_response_timeout(Some(config.timeout));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)?;
        Ok(Self {
            client,
            conn,
            timeout: config.timeout,
            key_prefix: config.key_prefix.clone(),
        })
    }

    /// Whether `url` is a Redis URL this client accepts (checked at startup, before anything connects).
    pub fn check_url(url: &str) -> Result<(), String> {
        redis::Client::open(url)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// The Redis key under which `key` is stored.
    pub fn redis_key(&self, key: &Key) -> String {
        format!("{}:{}", self.key_prefix, key.to_hex())
    }

    /// The Redis key holding the generation of `scope`. All generation keys share one hash tag, so that in a Redis
    /// Cluster they live in one slot and can be read together.
    pub fn generation_key(&self, scope: &str) -> String {
        format!("{{{}:gen}}:{scope}", self.key_prefix)
    }

    /// The channel invalidations are published on.
    pub fn channel(&self) -> String {
        format!("{}:invalidate", self.key_prefix)
    }

    /// The Redis key of the lease on `key`.
    pub fn lease_key(&self, key: &Key) -> String {
        format!("{}:lease:{}", self.key_prefix, key.to_hex())
    }

    async fn bounded<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, L2Error> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) if source.is_timeout() => Err(self.timed_out(op)),
            Ok(Err(source)) => Err(L2Error::Redis { op, source }),
            Err(_) => Err(self.timed_out(op)),
        }
    }

    fn timed_out(&self, op: &'static str) -> L2Error {
        L2Error::Timeout {
            op,
            timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl L2 for RedisL2 {
    fn get<'a>(&'a self, key: &'a Key) -> L2Future<'a, Option<Bytes>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let cmd = redis::cmd("GET").arg(self.redis_key(key)).to_owned();
            let value: Option<Vec<u8>> = self.bounded("GET", cmd.query_async(&mut conn)).await?;
            Ok(value.map(Bytes::from))
        })
    }

    fn set_many<'a>(&'a self, writes: &'a [L2Write]) -> L2Future<'a, ()> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            for w in writes {
                // Redis rejects PX 0; an entry with under a millisecond to live is not worth storing.
                let ttl_ms = u64::try_from(w.ttl.as_millis()).unwrap_or(u64::MAX);
                if ttl_ms == 0 {
                    continue;
                }
                pipe.cmd("SET")
                    .arg(self.redis_key(&w.key))
                    .arg(w.bytes.as_ref())
                    .arg("PX")
                    .arg(ttl_ms)
                    .ignore();
            }
            let mut conn = self.conn.clone();
            self.bounded("SET", pipe.query_async::<()>(&mut conn)).await
        })
    }

    fn try_lease<'a>(&'a self, key: &'a Key, token: &'a str, ttl: Duration) -> L2Future<'a, bool> {
        Box::pin(async move {
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let cmd = redis::cmd("SET")
                .arg(self.lease_key(key))
                .arg(token)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .to_owned();
            let mut conn = self.conn.clone();
            let taken: Option<String> = self.bounded("SET NX", cmd.query_async(&mut conn)).await?;
            Ok(taken.is_some())
        })
    }

    fn release_lease<'a>(&'a self, key: &'a Key, token: &'a str) -> L2Future<'a, ()> {
        Box::pin(async move {
            let cmd = redis::cmd("EVAL")
                .arg(RELEASE_IF_OURS)
                .arg(1)
                .arg(self.lease_key(key))
                .arg(token)
                .to_owned();
            let mut conn = self.conn.clone();
            self.bounded("EVAL release", cmd.query_async::<i64>(&mut conn))
                .await
                .map(drop)
        })
    }

    fn generations<'a>(&'a self, scopes: &'a [&'a str]) -> L2Future<'a, Vec<u64>> {
        Box::pin(async move {
            if scopes.is_empty() {
                return Ok(Vec::new());
            }
            let mut cmd = redis::cmd("MGET");
            for scope in scopes {
                cmd.arg(self.generation_key(scope));
            }
            let mut conn = self.conn.clone();
            let values: Vec<Option<u64>> = self
                .bounded("MGET generations", cmd.query_async(&mut conn))
                .await?;
            Ok(values.into_iter().map(|v| v.unwrap_or(0)).collect())
        })
    }

    fn bump_generation<'a>(&'a self, scope: &'a str) -> L2Future<'a, u64> {
        Box::pin(async move {
            let cmd = redis::cmd("INCR")
                .arg(self.generation_key(scope))
                .to_owned();
            let mut conn = self.conn.clone();
            let generation: u64 = self
                .bounded("INCR generation", cmd.query_async(&mut conn))
                .await?;
            let message = Invalidation::Scope {
                scope: scope.to_owned(),
                generation,
            };
            self.publish(&message).await?;
            Ok(generation)
        })
    }

    fn delete<'a>(&'a self, key: &'a Key) -> L2Future<'a, ()> {
        Box::pin(async move {
            let cmd = redis::cmd("DEL").arg(self.redis_key(key)).to_owned();
            let mut conn = self.conn.clone();
            self.bounded("DEL", cmd.query_async::<i64>(&mut conn))
                .await?;
            self.publish(&Invalidation::Entry { key: *key }).await
        })
    }

    fn publish<'a>(&'a self, message: &'a Invalidation) -> L2Future<'a, ()> {
        Box::pin(async move {
            let cmd = redis::cmd("PUBLISH")
                .arg(self.channel())
                .arg(message.encode())
                .to_owned();
            let mut conn = self.conn.clone();
            self.bounded("PUBLISH", cmd.query_async::<i64>(&mut conn))
                .await
                .map(drop)
        })
    }

    fn subscribe(&self) -> L2Future<'_, InvalidationStream> {
        Box::pin(async move {
            let mut pubsub = self.bounded_connect(self.client.get_async_pubsub()).await?;
            self.bounded("SUBSCRIBE", pubsub.subscribe(self.channel()))
                .await?;
            let stream = pubsub.into_on_message().filter_map(|msg| {
                let decoded = msg
                    .get_payload::<String>()
                    .ok()
                    .and_then(|text| Invalidation::decode(&text));
                std::future::ready(decoded)
            });
            Ok(Box::pin(stream) as InvalidationStream)
        })
    }
}

impl RedisL2 {
    /// Like [`RedisL2::bounded`] for opening a connection, which may take longer than one command (a second at least).
    async fn bounded_connect<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, L2Error> {
        match tokio::time::timeout(Duration::from_secs(1).max(self.timeout), fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(L2Error::Redis {
                op: "connect",
                source,
            }),
            Err(_) => Err(self.timed_out("connect")),
        }
    }
}

/// Deletes the lease only if it still holds the caller's token: a holder that outlived its lease must not release
/// the lease another replica has taken since.
const RELEASE_IF_OURS: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
