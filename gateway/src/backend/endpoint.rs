//! One backend endpoint: its HTTP/2 channel and what the balancer, the health checker and outlier detection know of
//! it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use tokio::time::Instant;
use tonic::transport::Channel;

/// An endpoint of a backend.
#[derive(Debug)]
pub struct Endpoint {
    /// Its URL, for logs.
    pub url: String,
    /// The DNS name it was resolved from, if any.
    pub source: Option<String>,
    /// The address it was resolved to, if any.
    pub addr: Option<std::net::SocketAddr>,
    /// The multiplexed HTTP/2 connection to it.
    pub channel: Channel,
    outstanding: AtomicUsize,
    healthy: AtomicBool,
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
    /// Milliseconds after `epoch` until which the endpoint is ejected (0: not ejected).
    ejected_until_ms: AtomicU64,
    epoch: Instant,
}

impl Endpoint {
    /// A healthy, idle endpoint.
    pub fn new(url: String, channel: Channel) -> Self {
        Self {
            url,
            source: None,
            addr: None,
            channel,
            outstanding: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Calls in flight to this endpoint.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Counts a call in flight until the returned guard is dropped.
    pub fn start_call(self: &Arc<Self>) -> InFlight {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Whether the last health checks said it serves.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Sets what the health checks say.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Whether outlier detection has it out of rotation now.
    pub fn is_ejected(&self) -> bool {
        self.now_ms() < self.ejected_until_ms.load(Ordering::Relaxed)
    }

    /// Whether it may receive calls: healthy and not ejected.
    pub fn is_available(&self) -> bool {
        self.is_healthy() && !self.is_ejected()
    }

    /// Records a call that succeeded: the failure streak ends.
    pub fn record_success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// Records a failed call; returns the failure streak.
    pub fn record_failure(&self) -> u32 {
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Ejects it for `base × (ejections so far + 1)`: each ejection lasts longer than the last.
    pub fn eject(&self, base: std::time::Duration) -> std::time::Duration {
        let n = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let length = base.saturating_mul(n);
        let until = self.now_ms() + u64::try_from(length.as_millis()).unwrap_or(u64::MAX / 2);
        self.ejected_until_ms.store(until, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        length
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX / 2)
    }
}

/// A call in flight to an endpoint; dropping it ends the count.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}
