//! L2: the cache level shared by every replica (Redis), and the bounded queue that writes to it in the background.

mod redis;
mod writeback;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

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
}

/// A shared cache level. Implementations bound every call by their own timeout: a slow L2 must never hold up an
/// answer.
pub trait L2: Send + Sync + fmt::Debug {
    /// The encoded entry stored under `key`, if any.
    fn get<'a>(&'a self, key: &'a Key) -> L2Future<'a, Option<Bytes>>;

    /// Stores a batch of entries (one round trip where the store allows it).
    fn set_many<'a>(&'a self, writes: &'a [L2Write]) -> L2Future<'a, ()>;

    /// Takes the lease on `key` for `ttl` if nobody holds it: whoever holds it is the one replica fetching the key.
    /// `true` if this caller now holds it under `token`.
    fn try_lease<'a>(&'a self, key: &'a Key, token: &'a str, ttl: Duration) -> L2Future<'a, bool>;

    /// Releases the lease on `key` if it is still held under `token` (an expired and re-taken lease is left alone).
    fn release_lease<'a>(&'a self, key: &'a Key, token: &'a str) -> L2Future<'a, ()>;
}
