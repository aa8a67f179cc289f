//! Retries on cached (idempotent) routes: which answers are retried, how long to pause, and a budget that keeps
//! retries a small share of the calls, so they can never multiply the load on a backend in trouble.

use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use tonic::Code;

use crate::config::RetryConfig;

/// How a backend's calls are retried.
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
    /// The policy a backend's `retry` block describes.
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

    /// Counts a call (each call earns the budget a share of a retry).
    pub fn record_call(&self) {
        self.budget.deposit();
    }

    /// Takes a retry from the budget; `false` when it is spent.
    pub fn try_retry(&self) -> bool {
        self.budget.try_withdraw()
    }
}

/// Retries allowed per second: `percent` of the calls of the current second, and at least `floor`.
#[derive(Debug)]
struct RetryBudget {
    percent: u32,
    floor: u32,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    calls: u64,
    retries: u64,
}

impl RetryBudget {
    fn new(percent: u32, floor: u32) -> Self {
        Self {
            percent,
            floor,
            window: Mutex::new(Window {
                started: Instant::now(),
                calls: 0,
                retries: 0,
            }),
        }
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Window> {
        let mut window = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if window.started.elapsed() >= Duration::from_secs(1) {
            *window = Window {
                started: Instant::now(),
                calls: 0,
                retries: 0,
            };
        }
        window
    }

    fn deposit(&self) {
        self.current().calls += 1;
    }

    fn try_withdraw(&self) -> bool {
        let mut window = self.current();
        let allowed = (window.calls * u64::from(self.percent) / 100).max(u64::from(self.floor));
        if window.retries < allowed {
            window.retries += 1;
            true
        } else {
            false
        }
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
