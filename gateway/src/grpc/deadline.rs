//! A call's deadline: when the client stops waiting, read once from its `grpc-timeout`, or set by the gateway
//! (`default_timeout`, `max_timeout`).

use std::time::Duration;

use http::HeaderMap;
use tokio::time::Instant;

use super::timeout;

/// When the client stops waiting, if it said.
#[derive(Debug, Clone, Copy, Default)]
pub struct Deadline {
    at: Option<Instant>,
    requested: Option<Duration>,
}

impl Deadline {
    /// The deadline a request's `grpc-timeout` asks for (none when absent or malformed).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let requested = headers
            .get(timeout::HEADER)
            .and_then(|v| timeout::parse(v.as_bytes()));
        Self {
            at: requested.map(|d| Instant::now() + d),
            requested,
        }
    }

    /// A deadline `timeout` from now, as if the client had asked for it.
    pub fn after(timeout: Duration) -> Self {
        Self {
            at: Some(Instant::now() + timeout),
            requested: Some(timeout),
        }
    }

    /// This deadline, but no later than `max` after the call began.
    pub fn clamped_to(self, max: Duration) -> Self {
        let started = self
            .at
            .zip(self.requested)
            .map(|(at, requested)| at - requested);
        Self {
            at: started.map(|s| s + max),
            requested: Some(max),
        }
    }

    /// The instant the deadline passes.
    pub fn at(&self) -> Option<Instant> {
        self.at
    }

    /// The timeout the client asked for.
    pub fn requested(&self) -> Option<Duration> {
        self.requested
    }

    /// Time left, if there is a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Time left, capped at `cap` (the backend's own timeout).
    pub fn remaining_within(&self, cap: Duration) -> Duration {
        self.remaining().map_or(cap, |left| left.min(cap))
    }
}
