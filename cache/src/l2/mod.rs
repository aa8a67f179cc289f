//! L2: the cache level shared by every replica (Redis), and the bounded queue that writes to it in the background.

mod connection;
mod redis;
mod writeback;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

pub use self::connection::RedisNodes;
pub use self::redis::{RedisL2, RedisL2Config};
pub(crate) use self::writeback::WriteBack;
use crate::error::L2Error;
use crate::key::Key;

/// A boxed future returned by [`L2`] methods (the trait is used as `dyn L2`).
pub type L2Future<'a, T> = Pin<Box<dyn Future<Output = Result<T, L2Error>> + Send + 'a>>;

/// One entry to store in L2.
#[derive(Debug, Clone)]
pub struct L2Write {
    /// Where to store it.
    pub key: Key,
    /// The encoded [`crate::Entry`].
    pub bytes: Bytes,
    /// How long L2 should keep it (the entry's remaining life).
    pub ttl: Duration,
    /// The tombstone found under the key when the fetch began, if any. The write is skipped when any other tombstone
    /// is there now: the entry was invalidated while the fetch ran, and the invalidation wins.
    pub seen_tombstone: Option<Bytes>,
}

/// What an invalidation leaves under an entry's key for [`TOMBSTONE_TTL`]: a marker no entry can look like (an
/// encoded entry never starts with a zero byte) followed by a token of its own, so that a fetch that began before the
/// invalidation can tell that it happened and does not write its answer back.
pub const TOMBSTONE_PREFIX: &[u8] = b"\0strata-tombstone:";

/// How long a tombstone stays: longer than any fetch runs (a fetch that outlives it may write back what it fetched).
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(600);

/// Length of a tombstone: the prefix and 32 hex digits.
pub const TOMBSTONE_LEN: usize = TOMBSTONE_PREFIX.len() + 32;

/// A new tombstone, unlike any other.
pub fn new_tombstone() -> Bytes {
    let token = format!("{:032x}", rand::random::<u128>());
    let mut bytes = Vec::with_capacity(TOMBSTONE_LEN);
    bytes.extend_from_slice(TOMBSTONE_PREFIX);
    bytes.extend_from_slice(token.as_bytes());
    Bytes::from(bytes)
}

/// Whether bytes read from L2 are a tombstone rather than an entry.
pub fn is_tombstone(bytes: &[u8]) -> bool {
    bytes.starts_with(TOMBSTONE_PREFIX)
}

/// A shared cache level. Implementations bound every call by their own timeout: a slow L2 must never hold up an
/// answer.
pub trait L2: Send + Sync + fmt::Debug {
    /// The encoded entry stored under `key`, if any.
    fn get<'a>(&'a self, key: &'a Key) -> L2Future<'a, Option<Bytes>>;

    /// Stores a batch of entries (one round trip where the store allows it), each unless its key holds a tombstone
    /// other than the one it saw ([`L2Write::seen_tombstone`]).
    fn set_many<'a>(&'a self, writes: &'a [L2Write]) -> L2Future<'a, ()>;

    /// Takes the lease on `key` for `ttl` if nobody holds it: whoever holds it is the one replica fetching the key.
    /// `true` if this caller now holds it under `token`.
    fn try_lease<'a>(&'a self, key: &'a Key, token: &'a str, ttl: Duration) -> L2Future<'a, bool>;

    /// Extends the lease on `key` to `ttl` from now if it is still held under `token`; `true` if it was.
    fn renew_lease<'a>(&'a self, key: &'a Key, token: &'a str, ttl: Duration)
    -> L2Future<'a, bool>;

    /// Releases the lease on `key` if it is still held under `token` (an expired and re-taken lease is left alone).
    fn release_lease<'a>(&'a self, key: &'a Key, token: &'a str) -> L2Future<'a, ()>;

    /// The current generations of `scopes`, in order (0 for a scope never invalidated), in one round trip.
    fn generations<'a>(&'a self, scopes: &'a [&'a str]) -> L2Future<'a, Vec<u64>>;

    /// Invalidates every entry of `scope` by bumping its generation, and tells every replica. Returns the new one.
    fn bump_generation<'a>(&'a self, scope: &'a str) -> L2Future<'a, u64>;

    /// Invalidates the entry under `key`: replaces it with a new tombstone (so that no fetch begun before can write
    /// it back), and tells every replica to drop it from L1.
    fn delete<'a>(&'a self, key: &'a Key) -> L2Future<'a, ()>;

    /// Tells every replica about an invalidation (or, for a heartbeat, that the channel works).
    fn publish<'a>(&'a self, message: &'a Invalidation) -> L2Future<'a, ()>;

    /// Subscribes to the invalidations every replica publishes. The stream ends when the subscription breaks.
    fn subscribe(&self) -> L2Future<'_, InvalidationStream>;
}

/// An invalidation as every replica receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// `scope` is now at `generation`: keys built with an older one are dead.
    Scope { scope: String, generation: u64 },
    /// The entry under this key was deleted.
    Entry { key: Key },
    /// Nothing changed; sent periodically so a subscriber notices a channel that went silent.
    Heartbeat,
}

impl Invalidation {
    /// The message sent on the channel: `s <generation> <scope>` or `e <64 hex digits>`.
    pub fn encode(&self) -> String {
        match self {
            Self::Scope { scope, generation } => format!("s {generation} {scope}"),
            Self::Entry { key } => format!("e {}", key.to_hex()),
            Self::Heartbeat => "h".to_owned(),
        }
    }

    /// Reads a channel message; `None` for anything else (a message from a newer or foreign writer).
    pub fn decode(text: &str) -> Option<Self> {
        if text == "h" {
            return Some(Self::Heartbeat);
        }
        let (kind, rest) = text.split_once(' ')?;
        match kind {
            "s" => {
                let (generation, scope) = rest.split_once(' ')?;
                Some(Self::Scope {
                    scope: scope.to_owned(),
                    generation: generation.parse().ok()?,
                })
            }
            "e" => Key::from_hex(rest).map(|key| Self::Entry { key }),
            _ => None,
        }
    }
}

/// The invalidations published by every replica, until the subscription breaks.
pub type InvalidationStream = Pin<Box<dyn futures::Stream<Item = Invalidation> + Send>>;
