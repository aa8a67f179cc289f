//! How many workers a run has over time: ghz's `concurrency`, or its `concurrency-schedule` (`step`, `line`) that
//! adds or retires workers as the run goes.

use std::time::Duration;

use super::config::RunConfig;

/// How many workers run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Workers {
    /// This many, all the run.
    Fixed(usize),
    /// Changing over time (`concurrency-schedule` `step` or `line`).
    Scheduled {
        /// Workers at the start.
        start: u64,
        /// Workers added (removed, if negative) per step.
        step: i64,
        /// Length of a step (one second for `line`).
        step_duration: Duration,
        /// Stop changing on reaching this many.
        end: Option<u64>,
        /// Stop changing after this long.
        max_duration: Option<Duration>,
    },
}

impl Workers {
    /// How many workers should run `elapsed` into the run.
    pub fn at(&self, elapsed: Duration) -> usize {
        match *self {
            Self::Fixed(n) => n,
            Self::Scheduled {
                start,
                step,
                step_duration,
                end,
                max_duration,
            } => {
                let elapsed = max_duration.map_or(elapsed, |max| elapsed.min(max));
                let steps = (elapsed.as_secs_f64() / step_duration.as_secs_f64().max(1e-3)) as i64;
                let mut n = i64::try_from(start)
                    .unwrap_or(i64::MAX)
                    .saturating_add(steps.saturating_mul(step));
                if let Some(end) = end.map(|e| i64::try_from(e).unwrap_or(i64::MAX)) {
                    n = if step >= 0 { n.min(end) } else { n.max(end) };
                }
                usize::try_from(n.max(0)).unwrap_or(usize::MAX)
            }
        }
    }

    /// The most workers the schedule can reach within `horizon` (the size of the worker pool).
    pub fn most(&self, horizon: Option<Duration>) -> usize {
        match *self {
            Self::Fixed(n) => n,
            Self::Scheduled {
                step,
                end,
                max_duration,
                ..
            } if step > 0 => {
                let until = match (horizon, max_duration) {
                    (Some(h), Some(m)) => Some(h.min(m)),
                    (h, m) => h.or(m),
                };
                match (end, until) {
                    (Some(end), _) => usize::try_from(end).unwrap_or(usize::MAX),
                    (None, Some(until)) => self.at(until),
                    (None, None) => MAX_SCHEDULED_WORKERS,
                }
                .min(MAX_SCHEDULED_WORKERS)
            }
            Self::Scheduled { start, .. } => usize::try_from(start).unwrap_or(usize::MAX),
        }
    }
}

/// Most workers a concurrency schedule without an end may reach.
pub const MAX_SCHEDULED_WORKERS: usize = 10_000;

/// How many workers run: `concurrency`, or a `step`/`line` concurrency schedule.
pub fn resolve(config: &RunConfig, concurrency: u64, problems: &mut Vec<String>) -> Workers {
    let fixed = Workers::Fixed(usize::try_from(concurrency).unwrap_or(usize::MAX));
    let kind = config.concurrency_schedule.as_deref().unwrap_or("const");
    if kind == "const" {
        return fixed;
    }
    if kind != "step" && kind != "line" {
        problems.push(format!(
            "concurrency-schedule: `{kind}` is not one of const, step, line"
        ));
        return fixed;
    }
    let start = config.concurrency_start.unwrap_or(1);
    let end = config.concurrency_end.filter(|e| *e > 0);
    if end == Some(start) {
        problems.push("concurrency-end: must differ from concurrency-start".to_owned());
    }
    let step = config.concurrency_step.unwrap_or(1);
    if step == 0 {
        problems.push(format!(
            "concurrency-step: must not be 0 for concurrency-schedule {kind}"
        ));
    }
    let step_duration = if kind == "line" {
        Duration::from_secs(1)
    } else {
        match config.concurrency_step_duration.filter(|d| !d.is_zero()) {
            Some(d) => d,
            None => {
                problems.push(
                    "concurrency-step-duration: required by concurrency-schedule step".to_owned(),
                );
                Duration::from_secs(1)
            }
        }
    };
    Workers::Scheduled {
        start,
        step,
        step_duration,
        end,
        max_duration: config.concurrency_max_duration.filter(|d| !d.is_zero()),
    }
}
