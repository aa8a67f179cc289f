//! ghz's machine formats, as ghz writes them — names, fields, units, even its escaping — so what reads ghz's output
//! (its Grafana dashboards, a Prometheus push, a spreadsheet) reads these: `csv` (one row per answer),
//! `influx-summary` and `influx-details` (InfluxDB line protocol), `prometheus` (text exposition).
//!
//! Each adds what Strata knows and ghz does not, after ghz's own fields: the answer's `x-strata-cache` level.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use super::go_units::format_duration;
use super::report::Report;

/// `csv`: ghz's header and rows (`duration (ms),status,error`), with a last column `x-strata-cache`. Fields that
/// hold a comma or a quote are quoted (RFC 4180), which ghz forgets.
pub fn csv(report: &Report) -> String {
    let mut out = String::from("\nduration (ms),status,error,x-strata-cache");
    for d in &report.tally.details {
        let _ = write!(
            out,
            "\n{:4.2},{},{},{}",
            d.latency.as_secs_f64() * 1000.0,
            d.status,
            csv_field(&d.error),
            d.cache.unwrap_or("")
        );
    }
    out.push('\n');
    out
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// `influx-summary`: one `ghz_run` line with ghz's tags and fields, then `strata_cache_<level>` fields.
pub fn influx_summary(report: &Report) -> String {
    let ns = |d: Duration| d.as_nanos();
    let mut fields = vec![
        format!("count={}", report.tally.count),
        format!("total={}", ns(report.total)),
        format!("average={}", ns(report.average())),
        format!("fastest={}", ns(report.fastest())),
        format!("slowest={}", ns(report.slowest())),
        format!("rps={:4.2}", report.rps()),
    ];
    if !report.tally.counted_latency_us.is_empty() {
        fields.push(format!("median={}", ns(report.percentile(50.0))));
        fields.push(format!("p95={}", ns(report.percentile(95.0))));
    }
    fields.push(format!("errors={}", report.tally.errors()));
    for (level, n) in &report.tally.by_cache {
        fields.push(format!("strata_cache_{level}={n}"));
    }
    format!(
        "ghz_run,{} {} {}",
        influx_tags(report, true),
        fields.join(","),
        unix_nanos(report.date)
    )
}

/// `influx-details`: one `ghz_detail` line per answer (`latency`, `error`, `status`, then `cache`).
pub fn influx_details(report: &Report) -> String {
    let common = influx_tags(report, false);
    let mut out = String::new();
    for d in &report.tally.details {
        let _ = writeln!(
            out,
            "ghz_detail,{common},hasError={} latency={},error=\"{}\",status=\"{}\",cache=\"{}\" {}",
            !d.error.is_empty(),
            d.latency.as_nanos(),
            influx_string(&d.error),
            d.status,
            d.cache.unwrap_or(""),
            unix_nanos(d.timestamp)
        );
    }
    out
}

/// ghz's tags, in its order and spelling (values quoted as ghz quotes them).
fn influx_tags(report: &Report, with_errors: bool) -> String {
    let options = &report.options;
    let text = |key: &str| options.get(key).map(plain).unwrap_or_default();
    let number = |key: &str| {
        options
            .get(key)
            .map(plain)
            .unwrap_or_else(|| "0".to_owned())
    };
    let duration =
        |key: &str| Duration::from_nanos(options.get(key).and_then(Value::as_u64).unwrap_or(0));
    let mut tags = Vec::new();
    if let Some(name) = report.name.as_ref().filter(|n| !n.trim().is_empty()) {
        tags.push(format!("name=\"{}\"", influx_escape(name.trim())));
    }
    if options.get("proto").is_some() {
        tags.push(format!("proto=\"{}\"", text("proto")));
    } else if options.get("protoset").is_some() {
        tags.push(format!("Protoset=\"{}\"", text("protoset")));
    }
    tags.push(format!("call=\"{}\"", text("call")));
    tags.push(format!("host=\"{}\"", text("host")));
    tags.push(format!("n={}", number("total")));
    if text("concurrency-schedule") == "const" {
        tags.push(format!("c={}", number("concurrency")));
    } else {
        for key in [
            "concurrency-schedule",
            "concurrency-start",
            "concurrency-end",
            "concurrency-step",
        ] {
            tags.push(format!("{key}={}", text(key)));
        }
        for key in ["concurrency-step-duration", "concurrency-max-duration"] {
            tags.push(format!("{key}={}", format_duration(duration(key))));
        }
    }
    if text("load-schedule") == "const" {
        tags.push(format!("rps={}", number("rps")));
    } else {
        for key in ["load-schedule", "load-start", "load-end", "load-step"] {
            tags.push(format!("{key}={}", text(key)));
        }
        for key in ["load-step-duration", "load-max-duration"] {
            tags.push(format!("{key}={}", format_duration(duration(key))));
        }
    }
    tags.push(format!("z={}", duration("duration").as_nanos()));
    tags.push(format!("timeout={}", duration("timeout").as_secs_f64()));
    tags.push(format!(
        "dial_timeout={}",
        duration("dial-timeout").as_secs_f64()
    ));
    tags.push(format!("keepalive={}", duration("keepalive").as_secs_f64()));
    // ghz's data and metadata tags: the JSON, encoded as a JSON string, then escaped.
    let twice = |value: Option<&Value>| {
        value.map_or_else(
            || "\"\"".to_owned(),
            |v| influx_escape(&Value::String(v.to_string()).to_string()),
        )
    };
    tags.push(format!("data={}", twice(options.get("data"))));
    tags.push(format!("metadata={}", twice(options.get("metadata"))));
    tags.push(format!(
        "tags={}",
        twice(
            (!report.tags.is_empty())
                .then(|| serde_json::json!(report.tags))
                .as_ref()
        )
    ));
    if with_errors {
        let errors = report.tally.errors();
        tags.push(format!("errors={errors}"));
        tags.push(format!("has_errors={}", errors > 0));
    }
    tags.join(",")
}

/// A JSON value as ghz prints it with `%v`: strings bare, the rest as JSON.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// ghz's escaping of tag values: space, comma and equals sign.
fn influx_escape(text: &str) -> String {
    text.replace(' ', "\\ ")
        .replace(',', "\\,")
        .replace('=', "\\=")
}

/// A string field value, escaped as the line protocol asks (quote and backslash only). ghz also escapes spaces,
/// commas and `=` there, which InfluxDB then stores as backslashes in the error text; that is not copied.
fn influx_string(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

fn unix_nanos(time: std::time::SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// `prometheus`: ghz's gauges, histogram and summary, labelled with the run's options; plus the far-tail quantiles
/// (0.999, 0.9999) and `strata_load_cache_answers{level}`. Histogram buckets are cumulative, as the format requires.
pub fn prometheus(report: &Report) -> String {
    let labels = prometheus_labels(report);
    let mut out = String::new();
    let ns = |d: Duration| d.as_nanos() as f64;
    let gauge = |out: &mut String, name: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{labels}}} {}",
            number(value)
        );
    };
    gauge(
        &mut out,
        "ghz_run_count",
        "Answers counted.",
        report.tally.count as f64,
    );
    gauge(
        &mut out,
        "ghz_run_total",
        "Length of the run, in nanoseconds.",
        ns(report.total),
    );
    gauge(
        &mut out,
        "ghz_run_average",
        "Mean latency, in nanoseconds.",
        ns(report.average()),
    );
    gauge(
        &mut out,
        "ghz_run_fastest",
        "Fastest answer, in nanoseconds.",
        ns(report.fastest()),
    );
    gauge(
        &mut out,
        "ghz_run_slowest",
        "Slowest answer, in nanoseconds.",
        ns(report.slowest()),
    );
    gauge(&mut out, "ghz_run_rps", "Answers per second.", report.rps());
    let _ = writeln!(
        out,
        "# HELP ghz_run_histogram Latency histogram (bounds in seconds), ghz's ten bars.\n# TYPE ghz_run_histogram histogram"
    );
    let mut cumulative = 0;
    let histogram = if report.tally.counted_latency_us.is_empty() {
        Vec::new()
    } else {
        report.histogram()
    };
    for bucket in &histogram {
        cumulative += bucket.count;
        let _ = writeln!(
            out,
            "ghz_run_histogram_bucket{{{labels},le=\"{}\"}} {cumulative}",
            number(bucket.mark)
        );
    }
    let _ = writeln!(
        out,
        "ghz_run_histogram_bucket{{{labels},le=\"+Inf\"}} {}\nghz_run_histogram_sum{{{labels}}} {}\n\
         ghz_run_histogram_count{{{labels}}} {}",
        report.tally.count,
        number(ns(report.total)),
        report.tally.count
    );
    let _ = writeln!(
        out,
        "# HELP ghz_run_latency Latency percentiles, in nanoseconds.\n# TYPE ghz_run_latency summary"
    );
    if !report.tally.counted_latency_us.is_empty() {
        for (p, quantile) in [
            (10.0, "0.1"),
            (25.0, "0.25"),
            (50.0, "0.5"),
            (75.0, "0.75"),
            (90.0, "0.9"),
            (95.0, "0.95"),
            (99.0, "0.99"),
            (99.9, "0.999"),
            (99.99, "0.9999"),
        ] {
            let _ = writeln!(
                out,
                "ghz_run_latency{{{labels},quantile=\"{quantile}\"}} {}",
                number(ns(report.percentile(p)))
            );
        }
    }
    let _ = writeln!(
        out,
        "ghz_run_latency_sum{{{labels}}} {}\nghz_run_latency_count{{{labels}}} {}",
        number(ns(report.total)),
        report.tally.count
    );
    gauge(
        &mut out,
        "ghz_run_errors",
        "Answers that were not OK.",
        report.tally.errors() as f64,
    );
    let _ = writeln!(
        out,
        "# HELP strata_load_cache_answers OK answers by their x-strata-cache level.\n# TYPE strata_load_cache_answers gauge"
    );
    for (level, n) in &report.tally.by_cache {
        let _ = writeln!(
            out,
            "strata_load_cache_answers{{{labels},level=\"{level}\"}} {n}"
        );
    }
    out
}

/// ghz's labels: every option (`-` becomes `_`; the schedule keys only for a non-const schedule), the run's
/// name and its end reason; sorted, so the output is stable.
fn prometheus_labels(report: &Report) -> String {
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("name".to_owned(), report.name.clone().unwrap_or_default());
    labels.insert(
        "end_reason".to_owned(),
        report.end_reason.as_str().to_owned(),
    );
    if let Value::Object(options) = &report.options {
        let constant = |key: &str| options.get(key).and_then(Value::as_str) == Some("const");
        for (key, value) in options {
            let schedule_key =
                |prefix: &str| key.starts_with(prefix) && constant(&format!("{prefix}schedule"));
            // data and metadata are left out as ghz leaves them out; n, c and dialTimeout repeat total,
            // concurrency and dial-timeout under the names of older reports.
            if ["data", "metadata", "n", "c", "dialTimeout"].contains(&key.as_str())
                || schedule_key("load-")
                || schedule_key("concurrency-")
            {
                continue;
            }
            let value = match value {
                Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(","),
                other => plain(other),
            };
            labels.insert(key.replace('-', "_"), value);
        }
    }
    labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A number as the exposition format writes it (integers without a fraction).
fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}
