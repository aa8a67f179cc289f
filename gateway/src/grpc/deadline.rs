//! A call's deadline: when the client stops waiting, read once from its `grpc-timeout`, or set by the gateway
//! (`default_timeout`, `max_timeout`).
//!
//! # Where deadlines are enforced, and why
//!
//! - `proxy` (`Proxy::handle`) reads the client's deadline once; `Backend::deadline_for` gives the deadline the
//!   backend is called under: the client's, clamped to `max_timeout`, or `default_timeout`/`max_timeout` for a call
//!   that sent none.
//! - `proxy::call_deadline` enforces it with one timer per call: around all a cached or retried call does; for a call
//!   forwarded as it came, the backend connection's. A deadline the gateway set also ends a streamed answer
//!   (`proxy::stream_deadline`), since the client's own timer will not fire first.
//! - `backend::Backend::call`: tells the backend the time left (`grpc-timeout`) and hands the deadline to the
//!   connection, which stops waiting for the answer's headers when it passes (tonic's channel does so for TLS).
//! - `proxy::unary` and `proxy::passthrough`: reading a request bounded by the backend's `timeout` when the client
//!   set no deadline, so a client that never finishes its request cannot hold a call open.
//! - `proxy::loader` and `backend::retry`: a cache fetch runs under the backend's `timeout`, never one caller's
//!   deadline (the fetch belongs to every caller of the key; each waits for it until its own deadline), and each
//!   retried attempt under `per_try_timeout`.

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
