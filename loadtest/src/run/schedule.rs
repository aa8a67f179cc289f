//! When each request is due: ghz's load schedules (`const`, `step`, `line`) as a function from a request's number to
//! its start time, so any worker can take the next number and know when to send it.

use std::time::Duration;

/// A request rate over time, as consecutive phases; the last phase lasts forever.
#[derive(Debug, Clone)]
pub struct Schedule {
    phases: Vec<Phase>,
}

/// A stretch of time in which the rate starts at `rate` and changes by `slope` per second.
#[derive(Debug, Clone, Copy)]
struct Phase {
    /// When the phase begins, in seconds from the start of the run.
    begins: f64,
    /// Requests due before the phase begins.
    before: f64,
    /// Requests per second at its beginning.
    rate: f64,
    /// Change of the rate per second.
    slope: f64,
}

/// Phases a step schedule may have before its rate is held (a bound for schedules with no end).
const MAX_STEPS: usize = 100_000;

impl Schedule {
    /// A constant `rate` (requests per second).
    pub fn constant(rate: f64) -> Self {
        Self::from_pieces(&[(f64::INFINITY, rate, 0.0)])
    }

    /// `start` rps, changed by `step` every `step_duration`, held at `end` (when given) once reached, and held at
    /// whatever it is after `max_duration` (when given).
    pub fn step(
        start: f64,
        step: f64,
        step_duration: Duration,
        end: Option<f64>,
        max_duration: Option<Duration>,
    ) -> Self {
        let width = step_duration.as_secs_f64().max(1e-3);
        let max = max_duration.map_or(f64::INFINITY, |d| d.as_secs_f64());
        let mut pieces = Vec::new();
        let mut rate = start;
        for k in 0..MAX_STEPS {
            let reached_end =
                end.is_some_and(|end| (step >= 0.0 && rate >= end) || (step < 0.0 && rate <= end));
            if let Some(end) = end.filter(|_| reached_end) {
                rate = end;
            }
            let elapsed = k as f64 * width;
            if reached_end || step == 0.0 || rate <= 0.0 || elapsed + width >= max {
                break;
            }
            pieces.push((width, rate, 0.0));
            rate += step;
        }
        pieces.push((f64::INFINITY, rate.max(0.0), 0.0));
        Self::from_pieces(&pieces)
    }

    /// `start` rps changing linearly by `slope` rps per second, held at `end` (when given) once reached, and held
    /// at whatever it is after `max_duration` (when given); a falling rate stops at zero.
    pub fn line(start: f64, slope: f64, end: Option<f64>, max_duration: Option<Duration>) -> Self {
        let mut ramp = max_duration.map_or(f64::INFINITY, |d| d.as_secs_f64());
        if let Some(end) = end
            && slope != 0.0
        {
            ramp = ramp.min(((end - start) / slope).max(0.0));
        }
        if slope < 0.0 {
            ramp = ramp.min(start / -slope);
        }
        if slope == 0.0 || ramp.is_infinite() {
            return Self::from_pieces(&[(f64::INFINITY, start, slope)]);
        }
        let held = (start + slope * ramp).max(0.0);
        Self::from_pieces(&[(ramp, start, slope), (f64::INFINITY, held, 0.0)])
    }

    fn from_pieces(pieces: &[(f64, f64, f64)]) -> Self {
        let mut phases = Vec::with_capacity(pieces.len());
        let (mut begins, mut before) = (0.0, 0.0);
        for &(length, rate, slope) in pieces {
            phases.push(Phase {
                begins,
                before,
                rate,
                slope,
            });
            if length.is_finite() {
                before += rate * length + slope * length * length / 2.0;
                begins += length;
            }
        }
        Self { phases }
    }

    /// When request number `n` (0-based) is due, from the start of the run; `None` if the rate never gets there.
    pub fn due(&self, n: u64) -> Option<Duration> {
        let n = n as f64;
        let phase = self.phases[self
            .phases
            .partition_point(|p| p.before <= n)
            .saturating_sub(1)];
        let remaining = n - phase.before;
        let within = if phase.slope == 0.0 {
            if phase.rate <= 0.0 {
                return None;
            }
            remaining / phase.rate
        } else {
            // rate·t + slope·t²/2 = remaining, the root that comes first in time.
            let discriminant = phase.rate * phase.rate + 2.0 * phase.slope * remaining;
            if discriminant < 0.0 {
                return None;
            }
            (discriminant.sqrt() - phase.rate) / phase.slope
        };
        let at = phase.begins + within;
        (at.is_finite() && at >= 0.0).then(|| Duration::from_secs_f64(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(schedule: &Schedule, n: u64) -> f64 {
        schedule.due(n).map_or(f64::NAN, |d| d.as_secs_f64())
    }

    #[test]
    fn constant_spaces_requests_evenly() {
        let s = Schedule::constant(100.0);
        assert_eq!(secs(&s, 0), 0.0);
        assert!((secs(&s, 250) - 2.5).abs() < 1e-9);
        assert!(Schedule::constant(0.0).due(1).is_none());
    }

    #[test]
    fn step_raises_the_rate_and_holds_it_at_the_end() {
        // 10 rps for 1 s, 20 rps for 1 s, then 25 rps (the end) forever.
        let s = Schedule::step(10.0, 10.0, Duration::from_secs(1), Some(25.0), None);
        assert!((secs(&s, 10) - 1.0).abs() < 1e-9);
        assert!((secs(&s, 30) - 2.0).abs() < 1e-9);
        assert!((secs(&s, 55) - 3.0).abs() < 1e-9);
        // Held by max_duration instead: 10 rps, then 20 rps forever.
        let s = Schedule::step(
            10.0,
            10.0,
            Duration::from_secs(1),
            None,
            Some(Duration::from_secs(2)),
        );
        assert!((secs(&s, 50) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn line_integrates_the_ramp() {
        // Rate 10 + 10 t: after 2 s, 10·2 + 10·4/2 = 40 requests; then held at 30 rps.
        let s = Schedule::line(10.0, 10.0, Some(30.0), None);
        assert!((secs(&s, 40) - 2.0).abs() < 1e-9);
        assert!((secs(&s, 70) - 3.0).abs() < 1e-9);
        // A falling rate reaches zero and stops: 10 − 10 t gives 5 requests in all.
        let s = Schedule::line(10.0, -10.0, None, None);
        assert!(secs(&s, 4) < 1.0);
        assert!(s.due(6).is_none());
    }
}
