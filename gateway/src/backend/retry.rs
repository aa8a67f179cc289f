//! Retries, the one loop for cached and passthrough routes: which answers are retried, how long to pause, and a
//! budget that keeps retries a small share of the calls, so they can never multiply the load on a backend in trouble.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use tonic::Code;

use crate::config::RetryConfig;
use crate::error::GatewayError;
use crate::metrics::ProxyStats;

/// How a backend's (or a passthrough route's) calls are retried.
#[derive(Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The longest one attempt may take.
    pub per_try_timeout: Duration,
    on: Vec<Code>,
    backoff: Duration,
    budget: RetryBudget,
}

impl RetryPolicy {
    /// The policy a `retry` block describes.
    pub fn new(config: &RetryConfig) -> Self {
        Self {
            attempts: config.attempts,
            per_try_timeout: config.per_try_timeout,
            on: config.on.clone(),
            backoff: config.backoff,
            budget: RetryBudget::new(config.budget_percent, config.min_retries_per_second),
        }
    }

    /// Whether an answer with `code` is retried.
    pub fn retries_code(&self, code: Code) -> bool {
        self.on.contains(&code)
    }

    /// The pause before attempt `attempt + 1`: exponential from `backoff`, full jitter, at most a second.
    pub fn pause_after(&self, attempt: u32) -> Duration {
        let ceiling = self
            .backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(10))
            .min(Duration::from_secs(1));
        ceiling.mul_f64(rand::rng().random::<f64>())
    }
}

/// Runs one call to `backend` within `time`: `attempt` (given the time the attempt may take) once, and again while
/// `policy` allows — an attempt that could not reach the backend, ran out of its time, or answered with a retried
/// code (`code_of`), while attempts, the budget and the time left allow the pause. Retries, and retries the budget
/// refused, are counted in `stats`.
pub async fn with_retries<T, F, Fut>(
    backend: &str,
    policy: Option<&RetryPolicy>,
    time: Duration,
    stats: &ProxyStats,
    code_of: impl Fn(&T) -> Option<Code>,
    mut attempt: F,
) -> Result<T, GatewayError>
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<T, GatewayError>>,
{
    let until = Instant::now() + time;
    if let Some(policy) = policy {
        policy.budget.deposit();
    }
    let mut attempts = 1;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let per_try = policy.map_or(left, |p| p.per_try_timeout.min(left));
        let result = match tokio::time::timeout(per_try, attempt(per_try)).await {
            Ok(result) => result,
            Err(_) => Err(GatewayError::BackendDeadline {
                backend: backend.to_owned(),
            }),
        };
        let Some(policy) = policy else { return result };
        let retryable = match &result {
            Ok(answer) => code_of(answer).is_some_and(|code| policy.retries_code(code)),
            Err(GatewayError::BackendUnavailable { .. } | GatewayError::BackendDeadline { .. }) => {
                true
            }
            Err(_) => false,
        };
        if !retryable || attempts >= policy.attempts {
            return result;
        }
        let pause = policy.pause_after(attempts);
        if Instant::now() + pause >= until {
            return result;
        }
        if !policy.budget.try_withdraw() {
            stats.count_retry_budget_exhausted();
            return result;
        }
        stats.count_retry();
        tokio::time::sleep(pause).await;
        attempts += 1;
    }
}

/// Retries allowed per second: `percent` of the calls of the current second, and at least `floor`. Lock-free: a
/// call at a second's turn may be counted in either second.
#[derive(Debug)]
struct RetryBudget {
    percent: u64,
    floor: u64,
    since: Instant,
    /// The second (since `since`) the counts are for.
    second: AtomicU64,
    calls: AtomicU64,
    retries: AtomicU64,
}

impl RetryBudget {
    fn new(percent: u32, floor: u32) -> Self {
        Self {
            percent: u64::from(percent),
            floor: u64::from(floor),
            since: Instant::now(),
            second: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        }
    }

    /// Starts a new second's counts when the second has turned.
    fn roll(&self) {
        let now = self.since.elapsed().as_secs();
        let counted = self.second.load(Ordering::Acquire);
        if now != counted
            && self
                .second
                .compare_exchange(counted, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.calls.store(0, Ordering::Release);
            self.retries.store(0, Ordering::Release);
        }
    }

    fn deposit(&self) {
        self.roll();
        self.calls.fetch_add(1, Ordering::AcqRel);
    }

    fn try_withdraw(&self) -> bool {
        self.roll();
        let allowed = (self.calls.load(Ordering::Acquire) * self.percent / 100).max(self.floor);
        self.retries
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < allowed).then_some(used + 1)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_budget_is_a_share_of_calls_with_a_floor() {
        let budget = RetryBudget::new(20, 2);
        assert!(budget.try_withdraw() && budget.try_withdraw(), "the floor");
        assert!(!budget.try_withdraw());
        for _ in 0..50 {
            budget.deposit();
        }
        let granted = (0..100).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 8, "20 % of 50 calls, 2 of them already used");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(budget.try_withdraw(), "a new second, a new budget");
    }

    #[test]
    fn pauses_grow_and_stay_bounded() {
        let policy = RetryPolicy::new(&RetryConfig {
            attempts: 3,
            per_try_timeout: Duration::from_secs(1),
            on: vec![tonic::Code::Unavailable],
            backoff: Duration::from_millis(100),
            budget_percent: 20,
            min_retries_per_second: 10,
        });
        assert!(policy.retries_code(Code::Unavailable));
        assert!(!policy.retries_code(Code::NotFound));
        for attempt in 1..20 {
            assert!(policy.pause_after(attempt) <= Duration::from_secs(1));
        }
        assert!(policy.pause_after(1) <= Duration::from_millis(100));
    }
}
