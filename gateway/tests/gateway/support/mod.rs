//! Real parts for the integration tests: a `redis-server`, a gRPC backend the gateway was never compiled against,
//! and the gateway itself, each on a random loopback port.

pub mod backend;
pub mod gateway;
pub mod raw;
pub mod redis;

use std::net::TcpListener;
use std::time::Duration;

/// The test-only protocol (`testing.v1.Lookup`).
pub mod pb {
    #![allow(clippy::all, missing_debug_implementations)]
    tonic::include_proto!("testing.v1");
}

/// A loopback port that was free a moment ago (for servers that must be told their port, such as redis-server).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// Polls `check` every 20 ms until it returns true or `within` passes; returns whether it did.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
