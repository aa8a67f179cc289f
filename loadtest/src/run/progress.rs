//! The live progress line (`elapsed  calls  rate  errors  p99`), printed once a second on a terminal.
//!
//! Workers feed it through relaxed atomics — a log-scale bucket per answer — so watching a run does not slow it.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Buckets 1.25× apart from 1 µs: bucket 90 is past 5 minutes.
const BUCKETS: usize = 91;
const GROWTH: f64 = 1.25;

/// Counters the workers bump and the printer reads.
#[derive(Debug)]
pub struct Live {
    calls: AtomicU64,
    errors: AtomicU64,
    /// Latencies since the last print.
    recent: [AtomicU64; BUCKETS],
}

impl Default for Live {
    fn default() -> Self {
        Self {
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            recent: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Live {
    /// Counts one answer.
    pub fn record(&self, latency: Duration, ok: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let micros = latency.as_secs_f64() * 1e6;
        let bucket = if micros <= 1.0 {
            0
        } else {
            (micros.ln() / GROWTH.ln()).ceil() as usize
        };
        self.recent[bucket.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// The 99th percentile of the latencies since the last call (upper bucket edge), and forgets them.
    fn take_recent_p99(&self) -> Option<Duration> {
        let counts: Vec<u64> = self
            .recent
            .iter()
            .map(|b| b.swap(0, Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (total as f64 * 0.99).ceil() as u64;
        let mut seen = 0;
        let bucket = counts.iter().position(|c| {
            seen += c;
            seen >= rank
        })?;
        Some(Duration::from_secs_f64(GROWTH.powi(bucket as i32) / 1e6))
    }
}

/// Prints the progress line to standard error every second until dropped (only when it is a terminal).
#[derive(Debug)]
pub struct Printer {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Printer {
    /// Starts printing `live` if standard error is a terminal.
    pub fn start(live: Arc<Live>) -> Self {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return Self { task: None };
        }
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut last = 0;
            loop {
                tick.tick().await;
                let calls = live.calls.load(Ordering::Relaxed);
                let p99 = live.take_recent_p99().map_or("-".to_owned(), |d| {
                    format!("{:.2} ms", d.as_secs_f64() * 1e3)
                });
                eprint!(
                    "\r{:>6.1} s  {calls:>10} calls  {:>8} /s  {:>6} errors  p99 {p99:<12}",
                    started.elapsed().as_secs_f64(),
                    calls - last,
                    live.errors.load(Ordering::Relaxed),
                );
                let _ = std::io::stderr().flush();
                last = calls;
            }
        });
        Self { task: Some(task) }
    }
}

impl Drop for Printer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_lands_in_the_slow_bucket() {
        let live = Live::default();
        for _ in 0..98 {
            live.record(Duration::from_micros(100), true);
        }
        for _ in 0..2 {
            live.record(Duration::from_millis(50), false);
        }
        let p99 = live.take_recent_p99().unwrap();
        assert!(
            p99 >= Duration::from_millis(50) && p99 < Duration::from_millis(63),
            "{p99:?}"
        );
        assert!(live.take_recent_p99().is_none(), "forgotten once read");
    }
}
