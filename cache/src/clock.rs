//! Wall-clock time for entry freshness, driven by `tokio::time` so tests can pause and advance it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Milliseconds since the Unix epoch: the unit of every time stored in an [`crate::Entry`].
pub type UnixMs = u64;

/// A wall clock anchored once to the system time and advanced by `tokio::time`.
///
/// Entries carry wall-clock times so that replicas sharing L2 agree on freshness; reading them through `tokio::time`
/// keeps the cache testable with a paused runtime clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    anchor_unix_ms: UnixMs,
    anchor: Instant,
}

impl Clock {
    /// A clock reading the current system time now and following `tokio::time` from here on.
    pub fn new() -> Self {
        let anchor_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            anchor_unix_ms,
            anchor: Instant::now(),
        }
    }

    /// The current time in milliseconds since the Unix epoch.
    pub fn now(&self) -> UnixMs {
        let elapsed = Instant::now().saturating_duration_since(self.anchor);
        self.anchor_unix_ms
            .saturating_add(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
    }

    /// The time `d` from now.
    pub fn after(&self, d: Duration) -> UnixMs {
        self.now()
            .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_tokio_time() {
        let clock = Clock::new();
        let t0 = clock.now();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(clock.now() - t0, 30_000);
        assert_eq!(clock.after(Duration::from_millis(5)) - clock.now(), 5);
    }
}
