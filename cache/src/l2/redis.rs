//! The Redis implementation of [`L2`] (one server or a Redis Cluster): every call under a timeout, every failure a
//! counted miss.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::connection::{Connection, RedisNodes, Unavailable};
use super::{
    Invalidation, InvalidationStream, L2, L2Future, L2Write, TOMBSTONE_LEN, TOMBSTONE_PREFIX,
    TOMBSTONE_TTL, new_tombstone,
};
use crate::error::L2Error;
use crate::key::Key;

/// Settings of [`RedisL2`].
#[derive(Debug, Clone)]
pub struct RedisL2Config {
    /// One server (`redis://[user:password@]host:port[/db]`) or the nodes of a cluster.
    pub nodes: RedisNodes,
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
    conn: Connection,
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
    /// Prepares the connection (without connecting). Fails only if a URL is invalid. Needs a tokio runtime.
    pub fn new(config: &RedisL2Config) -> Result<Self, redis::RedisError> {
        Ok(Self {
            conn: Connection::new(&config.nodes, config.timeout)?,
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

    /// Sends `cmd` under the timeout; any failure is an [`L2Error`] naming `op`.
    async fn run<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, L2Error> {
        self.bounded(op, self.conn.query(cmd)).await
    }

    async fn bounded<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = Result<T, Unavailable>>,
    ) -> Result<T, L2Error> {
        self.bounded_by(self.timeout, op, fut).await
    }

    async fn bounded_by<T>(
        &self,
        limit: Duration,
        op: &'static str,
        fut: impl std::future::Future<Output = Result<T, Unavailable>>,
    ) -> Result<T, L2Error> {
        match tokio::time::timeout(limit, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(Unavailable::NotConnected)) => Err(L2Error::NotConnected),
            Ok(Err(Unavailable::Redis(source))) if source.is_timeout() => Err(self.timed_out(op)),
            Ok(Err(Unavailable::Redis(source))) => Err(L2Error::Redis { op, source }),
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
            let value: Option<Vec<u8>> = self
                .run("GET", redis::cmd("GET").arg(self.redis_key(key)))
                .await?;
            Ok(value.map(Bytes::from))
        })
    }

    fn set_many<'a>(&'a self, writes: &'a [L2Write]) -> L2Future<'a, ()> {
        Box::pin(async move {
            let cmds: Vec<redis::Cmd> = writes
                .iter()
                .filter_map(|w| {
                    // Redis rejects PX 0; an entry with under a millisecond to live is not worth storing.
                    let ttl_ms = u64::try_from(w.ttl.as_millis()).unwrap_or(u64::MAX);
                    (ttl_ms > 0).then(|| {
                        redis::cmd("EVAL")
                            .arg(SET_UNLESS_INVALIDATED)
                            .arg(1)
                            .arg(self.redis_key(&w.key))
                            .arg(w.bytes.as_ref())
                            .arg(ttl_ms)
                            .arg(w.seen_tombstone.as_deref().unwrap_or_default())
                            .arg(TOMBSTONE_PREFIX)
                            .arg(TOMBSTONE_LEN)
                            .to_owned()
                    })
                })
                .collect();
            if cmds.is_empty() {
                return Ok(());
            }
            self.bounded("SET", self.conn.query_all(cmds)).await
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
            let taken: Option<String> = self.run("SET NX", &cmd).await?;
            Ok(taken.is_some())
        })
    }

    fn renew_lease<'a>(
        &'a self,
        key: &'a Key,
        token: &'a str,
        ttl: Duration,
    ) -> L2Future<'a, bool> {
        Box::pin(async move {
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let cmd = redis::cmd("EVAL")
                .arg(RENEW_IF_OURS)
                .arg(1)
                .arg(self.lease_key(key))
                .arg(token)
                .arg(ttl_ms)
                .to_owned();
            let renewed: i64 = self.run("EVAL renew", &cmd).await?;
            Ok(renewed == 1)
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
            self.run::<i64>("EVAL release", &cmd).await.map(drop)
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
            let values: Vec<Option<u64>> = self.run("MGET generations", &cmd).await?;
            Ok(values.into_iter().map(|v| v.unwrap_or(0)).collect())
        })
    }

    fn bump_generation<'a>(&'a self, scope: &'a str) -> L2Future<'a, u64> {
        Box::pin(async move {
            let generation: u64 = self
                .run(
                    "INCR generation",
                    redis::cmd("INCR").arg(self.generation_key(scope)),
                )
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
            let ttl_ms = u64::try_from(TOMBSTONE_TTL.as_millis()).unwrap_or(u64::MAX);
            let cmd = redis::cmd("SET")
                .arg(self.redis_key(key))
                .arg(new_tombstone().as_ref())
                .arg("PX")
                .arg(ttl_ms)
                .to_owned();
            self.run::<()>("SET tombstone", &cmd).await?;
            self.publish(&Invalidation::Entry { key: *key }).await
        })
    }

    fn publish<'a>(&'a self, message: &'a Invalidation) -> L2Future<'a, ()> {
        Box::pin(async move {
            let cmd = redis::cmd("PUBLISH")
                .arg(self.channel())
                .arg(message.encode())
                .to_owned();
            self.run::<i64>("PUBLISH", &cmd).await.map(drop)
        })
    }

    fn subscribe(&self) -> L2Future<'_, InvalidationStream> {
        Box::pin(async move {
            // Opening a connection may take longer than one command: a second at least.
            let connect = Duration::from_secs(1).max(self.timeout);
            let mut pubsub = self
                .bounded_by(connect, "connect", self.conn.pubsub())
                .await?;
            let channel = self.channel();
            self.bounded("SUBSCRIBE", async { Ok(pubsub.subscribe(&channel).await?) })
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

/// Stores an entry unless the key holds a tombstone other than the one its fetch saw when it began (ARGV: entry,
/// ttl in ms, the tombstone seen or empty, the tombstone prefix, a tombstone's length). Only a tombstone's length is
/// read, never a whole entry.
const SET_UNLESS_INVALIDATED: &str = "local head = redis.call('GETRANGE', KEYS[1], 0, tonumber(ARGV[5]) - 1) \
if string.sub(head, 1, string.len(ARGV[4])) == ARGV[4] and head ~= ARGV[3] then return 0 end \
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1";

/// Extends the lease only if it still holds the caller's token.
const RENEW_IF_OURS: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";

/// Deletes the lease only if it still holds the caller's token: a holder that outlived its lease must not release
/// the lease another replica has taken since.
const RELEASE_IF_OURS: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
