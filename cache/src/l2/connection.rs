//! The connection behind [`super::RedisL2`]: one Redis server through a self-healing multiplexed connection, or a
//! Redis Cluster through a cluster connection that routes each key to its slot's master. Both connect in the
//! background, so a replica starts (and serves) while Redis is away.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, RedisError, RedisResult};

/// Where the shared level lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisNodes {
    /// One server (or a proxy in front of several): `redis://host:port`.
    Single(String),
    /// A Redis Cluster, by some of its nodes (the rest are discovered).
    Cluster(Vec<String>),
}

/// A connection to Redis or a Redis Cluster. Cloning shares it.
#[derive(Clone)]
pub(super) enum Connection {
    Single {
        client: redis::Client,
        manager: ConnectionManager,
    },
    Cluster {
        nodes: Vec<String>,
        connection: Arc<OnceLock<ClusterConnection>>,
    },
}

/// Why no command could be sent.
pub(super) enum Unavailable {
    /// The cluster connection has not been established yet.
    NotConnected,
    /// Redis answered with an error or the connection broke.
    Redis(RedisError),
}

impl From<RedisError> for Unavailable {
    fn from(err: RedisError) -> Self {
        Self::Redis(err)
    }
}

impl Connection {
    /// Prepares the connection; a cluster connection is established by a background task that retries until it
    /// succeeds. Fails only on invalid URLs.
    pub(super) fn new(nodes: &RedisNodes, timeout: Duration) -> RedisResult<Self> {
        let connect_timeout = Duration::from_secs(1).max(timeout);
        match nodes {
            RedisNodes::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                let config = ConnectionManagerConfig::new()
                    // Reconnect attempts are cheap and bounded; while one is under way, calls wait at most `timeout`.
                    .set_number_of_retries(3)
                    .set_min_delay(Duration::from_millis(10))
                    .set_max_delay(Duration::from_millis(500))
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout(Some(timeout));
                let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
                Ok(Self::Single { client, manager })
            }
            RedisNodes::Cluster(urls) => {
                let client = ClusterClient::builder(urls.iter().map(String::as_str))
                    .connection_timeout(connect_timeout)
                    .response_timeout(timeout)
                    .retries(1)
                    .build()?;
                let connection = Arc::new(OnceLock::new());
                tokio::spawn(connect_cluster(client, Arc::downgrade(&connection)));
                Ok(Self::Cluster {
                    nodes: urls.clone(),
                    connection,
                })
            }
        }
    }

    /// Sends one command (routed by its key in a cluster).
    pub(super) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Unavailable> {
        match self {
            Self::Single { manager, .. } => Ok(cmd.query_async(&mut manager.clone()).await?),
            Self::Cluster { connection, .. } => {
                let mut conn = connection.get().cloned().ok_or(Unavailable::NotConnected)?;
                Ok(cmd.query_async(&mut conn).await?)
            }
        }
    }

    /// Sends every command, in one round trip to a single server; a cluster can only pipeline keys of one slot, so
    /// there they go out concurrently instead. Fails if any fails.
    pub(super) async fn query_all(&self, cmds: Vec<Cmd>) -> Result<(), Unavailable> {
        match self {
            Self::Single { manager, .. } => {
                let mut pipe = redis::pipe();
                for cmd in cmds {
                    pipe.add_command(cmd).ignore();
                }
                Ok(pipe.query_async::<()>(&mut manager.clone()).await?)
            }
            Self::Cluster { .. } => {
                let sent = futures::future::join_all(
                    cmds.iter().map(|cmd| self.query::<redis::Value>(cmd)),
                )
                .await;
                sent.into_iter().try_for_each(|r| r.map(drop))
            }
        }
    }

    /// A dedicated connection for receiving published messages (in a cluster, any node receives every message).
    pub(super) async fn pubsub(&self) -> Result<redis::aio::PubSub, Unavailable> {
        match self {
            Self::Single { client, .. } => Ok(client.get_async_pubsub().await?),
            Self::Cluster { nodes, .. } => {
                let mut last = None;
                for url in nodes {
                    match redis::Client::open(url.as_str()) {
                        Ok(client) => match client.get_async_pubsub().await {
                            Ok(pubsub) => return Ok(pubsub),
                            Err(err) => last = Some(err),
                        },
                        Err(err) => last = Some(err),
                    }
                }
                Err(last.map_or(Unavailable::NotConnected, Unavailable::Redis))
            }
        }
    }
}

/// Connects to the cluster, retrying until it works or the L2 is dropped. Once connected, the cluster connection
/// follows topology changes and reconnects to nodes by itself.
async fn connect_cluster(
    client: ClusterClient,
    slot: std::sync::Weak<OnceLock<ClusterConnection>>,
) {
    let mut delay = Duration::from_millis(50);
    loop {
        if slot.strong_count() == 0 {
            return;
        }
        match client.get_async_connection().await {
            Ok(conn) => {
                if let Some(slot) = slot.upgrade() {
                    let _ = slot.set(conn);
                }
                return;
            }
            Err(err) => {
                tracing::debug!(error = %err, "Redis Cluster not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}
