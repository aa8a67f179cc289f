//! The report of a run: ghz's JSON schema (plus an `x-strata` object with the cache results and the mix), and the
//! human summary.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::tally::{Detail, Tally};

/// Percentiles in ghz's `latencyDistribution`.
const GHZ_PERCENTILES: [u32; 7] = [10, 25, 50, 75, 90, 95, 99];

/// How a run ended, in ghz's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Total or schedule reached.
    Normal,
    /// Interrupted (Ctrl-C).
    Cancel,
    /// Its duration (or max-duration) reached.
    Timeout,
}

impl EndReason {
    /// ghz's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Cancel => "cancel",
            Self::Timeout => "timeout",
        }
    }
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
    /// The run's options as ghz's report records them.
    pub options: Value,
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
        Duration::from_micros(self.tally.counted_latency_us.value_at_percentile(p))
    }

    /// The fastest counted answer.
    pub fn fastest(&self) -> Duration {
        Duration::from_micros(self.tally.counted_latency_us.min())
    }

    /// The slowest counted answer.
    pub fn slowest(&self) -> Duration {
        Duration::from_micros(self.tally.counted_latency_us.max())
    }

    /// ghz's histogram: 10 equal bars from the fastest to the slowest OK answer, and one at the slowest.
    pub fn histogram(&self) -> Vec<Bucket> {
        let h = &self.tally.counted_latency_us;
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

    /// The report in ghz's JSON schema (its fields, names and units: durations in nanoseconds), with `x-strata`
    /// added — the answers' cache levels, the mix, the arrival model and the far tail — as text (`pretty`:
    /// indented). Its `details` are written straight from the tally rather than built as a tree first (a million
    /// answers would be a million small maps).
    pub fn json_text(&self, pretty: bool) -> String {
        let report = self.summary_json();
        let whole = WithDetails {
            report: &report,
            details: self.details(),
        };
        let text = if pretty {
            serde_json::to_string_pretty(&whole)
        } else {
            serde_json::to_string(&whole)
        };
        text.unwrap_or_default()
    }

    fn details(&self) -> Details<'_> {
        // Kept only when asked for (`x-strata.details`): none kept, none written.
        Details((!self.tally.details.is_empty()).then_some(&self.tally.details[..]))
    }

    /// Every field but `details` (a null there).
    fn summary_json(&self) -> Value {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let counted = !self.tally.counted_latency_us.is_empty();
        let mut report = Map::new();
        if let Some(name) = self.name.as_ref().filter(|n| !n.is_empty()) {
            report.insert("name".into(), json!(name));
        }
        report.insert("endReason".into(), json!(self.end_reason.as_str()));
        report.insert("date".into(), json!(rfc3339(self.date)));
        report.insert("options".into(), self.options.clone());
        report.insert("count".into(), json!(self.tally.count));
        report.insert("total".into(), json!(ns(self.total)));
        report.insert("average".into(), json!(ns(self.average())));
        report.insert("fastest".into(), json!(ns(self.fastest())));
        report.insert("slowest".into(), json!(ns(self.slowest())));
        report.insert("rps".into(), json!(self.rps()));
        report.insert("errorDistribution".into(), json!(self.tally.by_error));
        report.insert("statusCodeDistribution".into(), json!(self.tally.by_status));
        report.insert(
            "latencyDistribution".into(),
            if counted {
                GHZ_PERCENTILES
                    .iter()
                    .map(
                        |p| json!({"percentage": p, "latency": ns(self.percentile(f64::from(*p)))}),
                    )
                    .collect()
            } else {
                Value::Null
            },
        );
        report.insert(
            "histogram".into(),
            if counted {
                self.histogram()
                    .iter()
                    .map(|b| json!({"mark": b.mark, "count": b.count, "frequency": b.frequency}))
                    .collect()
            } else {
                Value::Null
            },
        );
        // A placeholder: the answers are written by [`Details`], straight from the tally.
        report.insert("details".into(), Value::Null);
        if !self.tags.is_empty() {
            report.insert("tags".into(), json!(self.tags));
        }
        report.insert(
            "x-strata".into(),
            json!({
                "arrival": self.arrival,
                "cache": self.tally.by_cache,
                "calls": self.tally.by_call.iter()
                    .map(|(name, c)| (name.clone(), json!({"count": c.count, "errors": c.errors})))
                    .collect::<Map<_, _>>(),
                "latency": {
                    "p50": ns(self.percentile(50.0)),
                    "p99": ns(self.percentile(99.0)),
                    "p999": ns(self.percentile(99.9)),
                    "p9999": ns(self.percentile(99.99)),
                },
            }),
        );
        Value::Object(report)
    }

    /// The human summary, laid out as ghz's (its units: `ns` below 10 µs, then `ms`, then `s`), then what ghz
    /// lacks: the far tail, the arrival model, the cache levels and the mix.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\nSummary:");
        if let Some(name) = self.name.as_ref().filter(|n| !n.is_empty()) {
            let _ = writeln!(out, "  Name:\t\t{name}");
        }
        let _ = writeln!(out, "  Count:\t{}", self.tally.count);
        let _ = writeln!(out, "  Total:\t{}", nano_unit(self.total));
        let _ = writeln!(out, "  Slowest:\t{}", nano_unit(self.slowest()));
        let _ = writeln!(out, "  Fastest:\t{}", nano_unit(self.fastest()));
        let _ = writeln!(out, "  Average:\t{}", nano_unit(self.average()));
        let _ = writeln!(out, "  Requests/sec:\t{:4.2}", self.rps());
        let histogram = self.histogram();
        let _ = writeln!(out, "\nResponse time histogram:");
        let mark = |b: &Bucket| format!("{:.3}", b.mark * 1e3);
        let widest_mark = histogram.iter().map(|b| mark(b).len()).max().unwrap_or(0);
        let most = histogram.iter().map(|b| b.count).max().unwrap_or(0);
        let widest_count = most.to_string().len();
        for b in &histogram {
            let bar = (b.count * 40 + most / 2).checked_div(most).unwrap_or(0);
            let _ = writeln!(
                out,
                "  {:<widest_mark$} [{:<widest_count$}] |{}",
                mark(b),
                b.count,
                "∎".repeat(usize::try_from(bar).unwrap_or(0)),
            );
        }
        let _ = write!(out, "\nLatency distribution:");
        if !self.tally.counted_latency_us.is_empty() {
            for p in GHZ_PERCENTILES {
                let _ = write!(
                    out,
                    "\n  {p} % in {} ",
                    nano_unit(self.percentile(f64::from(p)))
                );
            }
            for p in [99.9, 99.99] {
                let _ = write!(out, "\n  {p} % in {} ", nano_unit(self.percentile(p)));
            }
        }
        let _ = writeln!(out, "\n");
        if !self.tally.by_status.is_empty() {
            let _ = writeln!(out, "Status code distribution:");
            for (status, n) in &self.tally.by_status {
                let _ = writeln!(out, "  [{status}]   {n} responses   ");
            }
        }
        if !self.tally.by_error.is_empty() {
            let _ = writeln!(out, "\nError distribution:");
            for (error, n) in &self.tally.by_error {
                let _ = writeln!(out, "  [{n}]   {error}   ");
            }
        }
        let _ = writeln!(out, "\nArrival:\t{}", self.arrival);
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
        out
    }
}

/// The report's fields with its `details` written by [`Details`].
struct WithDetails<'a> {
    report: &'a Value,
    details: Details<'a>,
}

impl serde::Serialize for WithDetails<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(fields) = self.report else {
            return self.report.serialize(serializer);
        };
        let mut map = serializer.serialize_map(Some(fields.len()))?;
        for (key, value) in fields {
            if key == "details" {
                map.serialize_entry(key, &self.details)?;
            } else {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

/// ghz's `details`: every answer's time (RFC 3339, nanoseconds), latency (ns), error and status, plus its
/// `x-strata-cache`; `null` when none were kept, as ghz writes it.
struct Details<'a>(Option<&'a [Detail]>);

/// One entry of `details`, as written.
#[derive(serde::Serialize)]
struct DetailEntry<'a> {
    timestamp: String,
    latency: u64,
    error: &'a str,
    status: &'a str,
    #[serde(rename = "x-strata-cache")]
    cache: Option<&'a str>,
}

impl serde::Serialize for Details<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let Some(details) = self.0 else {
            return serializer.serialize_none();
        };
        let mut second = (0, String::new());
        let mut seq = serializer.serialize_seq(Some(details.len()))?;
        for d in details {
            seq.serialize_element(&DetailEntry {
                timestamp: rfc3339_nanos(d.timestamp, &mut second),
                latency: u64::try_from(d.latency.as_nanos()).unwrap_or(u64::MAX),
                error: &d.error,
                status: d.status,
                cache: d.cache,
            })?;
        }
        seq.end()
    }
}

/// A duration as ghz's summary writes one: `9500 ns`, `12.34 ms`, `1.50 s`.
pub fn nano_unit(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos < 10_000 {
        return format!("{nanos} ns");
    }
    let ms = nanos as f64 / 1e6;
    if ms < 1000.0 {
        format!("{ms:4.2} ms")
    } else {
        format!("{:4.2} s", ms / 1000.0)
    }
}

/// `2026-11-24T05:42:12.123456789Z` (UTC, with nanoseconds, as Go writes a detail's timestamp). Answers come in
/// runs within one second, so the date of the last second asked is kept in `last` and not formatted again.
pub fn rfc3339_nanos(time: SystemTime, last: &mut (u64, String)) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    if last.1.is_empty() || last.0 != since.as_secs() {
        let whole = rfc3339(time);
        *last = (since.as_secs(), whole.trim_end_matches('Z').to_owned());
    }
    format!("{}.{:09}Z", last.1, since.subsec_nanos())
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
        let mut last = (0, String::new());
        let a = t + Duration::from_nanos(5);
        assert_eq!(
            rfc3339_nanos(a, &mut last),
            "2026-11-24T05:42:12.000000005Z"
        );
        let b = t + Duration::from_millis(1500);
        assert_eq!(
            rfc3339_nanos(b, &mut last),
            "2026-11-24T05:42:13.500000000Z"
        );
    }
}
