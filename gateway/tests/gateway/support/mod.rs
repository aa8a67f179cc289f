//! Real parts for the integration tests: a `redis-server`, a gRPC backend the gateway was never compiled against,
//! and the gateway itself, each on a random loopback port.

pub mod backend;
pub mod blackhole;
pub mod certs;
pub mod gateway;
pub mod lease_hold;
pub mod process;
pub mod prometheus;
pub mod raw;

pub use strata_cache::testing::{RedisServer, free_port};

use std::time::Duration;

/// The test-only protocol (`testing.v1.Lookup`).
pub mod pb {
    #![allow(clippy::all, missing_debug_implementations)]
    tonic::include_proto!("testing.v1");
}

/// The test service's descriptors, imports included (what its reflection serves, and a descriptor-set file).
pub const TESTING_V1_DESCRIPTORS: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/testing_v1.bin"));

/// The test service's descriptor set as a file (written once per test process).
pub fn descriptor_file() -> &'static std::path::Path {
    static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let file =
            std::env::temp_dir().join(format!("strata-test-{}-lookup.binpb", std::process::id()));
        std::fs::write(&file, TESTING_V1_DESCRIPTORS).expect("write the descriptor set");
        file
    })
}

/// A top-level `descriptors:` block giving the gateway the test service's descriptors from a file, reflection off.
pub fn descriptors_from_file() -> String {
    format!(
        "descriptors: {{ reflection: false, files: [\"{}\"] }}",
        descriptor_file().display()
    )
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
