//! The client's deadline, from its `grpc-timeout`.

use std::time::Duration;

use http::HeaderMap;
use tokio::time::Instant;

use crate::grpc::timeout;

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
