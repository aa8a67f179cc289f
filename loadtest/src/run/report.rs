//! The report of a run: ghz's JSON schema (plus an `x-strata` object with the cache results and the mix), and the
//! human summary.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::tally::Tally;

/// Percentiles in ghz's `latencyDistribution`.
const GHZ_PERCENTILES: [u32; 7] = [10, 25, 50, 75, 90, 95, 99];

/// How a run ended, in ghz's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Total, duration or schedule reached.
    Normal,
    /// Interrupted (Ctrl-C).
    Cancel,
}

/// A finished run.
#[derive(Debug)]
pub struct Report {
    /// What was counted.
    pub tally: Tally,
    /// Wall time from the first request to the last answer.
    pub total: Duration,
    /// When it ended.
    pub date: SystemTime,
    /// How it ended.
    pub end_reason: EndReason,
    /// The run's name.
    pub name: Option<String>,
    /// The configuration as given (ghz's `options`).
    pub options: Map<String, Value>,
    /// Labels.
    pub tags: std::collections::BTreeMap<String, String>,
    /// `open` or `closed`.
    pub arrival: &'static str,
}

/// One bar of ghz's histogram.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    /// Upper edge, in seconds.
    pub mark: f64,
    /// OK answers in the bar.
    pub count: u64,
    /// Share of OK answers.
    pub frequency: f64,
}

impl Report {
    /// Answers per second.
    pub fn rps(&self) -> f64 {
        self.tally.count as f64 / self.total.as_secs_f64().max(1e-9)
    }

    /// Mean latency of all answers.
    pub fn average(&self) -> Duration {
        self.tally.latency_sum / u32::try_from(self.tally.count.max(1)).unwrap_or(u32::MAX)
    }

    /// A percentile (0–100) of OK latencies.
    pub fn percentile(&self, p: f64) -> Duration {
        Duration::from_micros(self.tally.ok_latency_us.value_at_percentile(p))
    }

    fn fastest(&self) -> Duration {
        Duration::from_micros(self.tally.ok_latency_us.min())
    }

    fn slowest(&self) -> Duration {
        Duration::from_micros(self.tally.ok_latency_us.max())
    }

    /// ghz's histogram: 10 equal bars from the fastest to the slowest OK answer, and one at the slowest.
    pub fn histogram(&self) -> Vec<Bucket> {
        let h = &self.tally.ok_latency_us;
        let total = h.len();
        if total == 0 {
            return Vec::new();
        }
        let (fastest, slowest) = (h.min() as f64, h.max() as f64);
        let width = (slowest - fastest) / 10.0;
        let marks: Vec<f64> = (0..=10)
            .map(|i| {
                if i == 10 {
                    slowest
                } else {
                    fastest + width * i as f64
                }
            })
            .collect();
        let mut counts = [0u64; 11];
        for v in h.iter_recorded() {
            let value = h.highest_equivalent(v.value_iterated_to()) as f64;
            let bar = marks.iter().position(|m| value <= *m).unwrap_or(10);
            counts[bar] += v.count_at_value();
        }
        marks
            .iter()
            .zip(counts)
            .map(|(mark, count)| Bucket {
                mark: mark / 1e6,
                count,
                frequency: count as f64 / total as f64,
            })
            .collect()
    }

    /// The report in ghz's JSON schema, with `x-strata` added.
    pub fn to_json(&self) -> Value {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let mut report = json!({
            "name": self.name.clone().unwrap_or_default(),
            "endReason": match self.end_reason { EndReason::Normal => "normal", EndReason::Cancel => "cancel" },
            "options": self.options,
            "date": rfc3339(self.date),
            "count": self.tally.count,
            "total": ns(self.total),
            "average": ns(self.average()),
            "fastest": ns(self.fastest()),
            "slowest": ns(self.slowest()),
            "rps": self.rps(),
            "errorDistribution": self.tally.by_error,
            "statusCodeDistribution": self.tally.by_status,
            "latencyDistribution": GHZ_PERCENTILES
                .iter()
                .map(|p| json!({"percentage": p, "latency": ns(self.percentile(f64::from(*p)))}))
                .collect::<Vec<_>>(),
            "histogram": self
                .histogram()
                .iter()
                .map(|b| json!({"mark": b.mark, "count": b.count, "frequency": b.frequency}))
                .collect::<Vec<_>>(),
            "tags": self.tags,
            "x-strata": {
                "arrival": self.arrival,
                "cache": self.tally.by_cache,
                "calls": self.tally.by_call.iter()
                    .map(|(name, c)| (name.clone(), json!({"count": c.count, "errors": c.errors})))
                    .collect::<Map<_, _>>(),
                "latency": {
                    "p50": ns(self.percentile(50.0)),
                    "p99": ns(self.percentile(99.0)),
                    "p999": ns(self.percentile(99.9)),
                },
            },
        });
        if !self.tally.details.is_empty()
            && let Value::Object(map) = &mut report
        {
            let details = self
                .tally
                .details
                .iter()
                .map(|d| {
                    json!({"timestamp": rfc3339(d.timestamp), "latency": ns(d.latency),
                           "error": d.error, "status": d.status})
                })
                .collect();
            map.insert("details".into(), Value::Array(details));
        }
        report
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        let mut out = String::new();
        let _ = writeln!(out, "\nSummary:");
        if let Some(name) = &self.name {
            let _ = writeln!(out, "  Name:\t\t{name}");
        }
        let _ = writeln!(out, "  Count:\t{}", self.tally.count);
        let _ = writeln!(out, "  Total:\t{:.2} s", self.total.as_secs_f64());
        let _ = writeln!(out, "  Slowest:\t{}", ms(self.slowest()));
        let _ = writeln!(out, "  Fastest:\t{}", ms(self.fastest()));
        let _ = writeln!(out, "  Average:\t{}", ms(self.average()));
        let _ = writeln!(out, "  Requests/sec:\t{:.2}", self.rps());
        let _ = writeln!(out, "  Arrival:\t{}", self.arrival);
        let histogram = self.histogram();
        let widest = histogram.iter().map(|b| b.count).max().unwrap_or(1).max(1);
        let _ = writeln!(out, "\nResponse time histogram (OK answers):");
        for b in &histogram {
            let bar = "∎".repeat(usize::try_from(b.count * 40 / widest).unwrap_or(0));
            let _ = writeln!(out, "  {:>10.3} ms [{}]\t|{bar}", b.mark * 1e3, b.count);
        }
        let _ = writeln!(out, "\nLatency distribution (OK answers):");
        for p in [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9] {
            let _ = writeln!(out, "  {p:>5} % in {}", ms(self.percentile(p)));
        }
        let _ = writeln!(out, "\nStatus code distribution:");
        for (status, n) in &self.tally.by_status {
            let _ = writeln!(out, "  [{status}]\t{n} responses");
        }
        if !self.tally.by_cache.is_empty() {
            let _ = writeln!(out, "\nCache results (x-strata-cache of OK answers):");
            for (level, n) in &self.tally.by_cache {
                let share = *n as f64 * 100.0 / self.tally.count.max(1) as f64;
                let _ = writeln!(out, "  [{level}]\t{n}\t({share:.1} %)");
            }
        }
        if self.tally.by_call.len() > 1 {
            let _ = writeln!(out, "\nCalls:");
            for (name, c) in &self.tally.by_call {
                let _ = writeln!(out, "  {name}\t{} ({} errors)", c.count, c.errors);
            }
        }
        if !self.tally.by_error.is_empty() {
            let _ = writeln!(out, "\nError distribution:");
            for (error, n) in &self.tally.by_error {
                let _ = writeln!(out, "  [{n}]\t{error}");
            }
        }
        out
    }
}

/// `2026-11-24T05:42:12Z` (UTC, whole seconds, as ghz writes its dates).
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_498_932);
        assert_eq!(rfc3339(t), "2026-11-24T05:42:12Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }
}
