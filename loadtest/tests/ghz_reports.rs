//! ghz's reports as `strata-load run` writes them, read by what reads ghz's: the JSON report against one ghz wrote,
//! every format parsed back (the Prometheus exposition by promtool), and the Prometheus and InfluxDB reports taken by
//! a real Pushgateway and a real InfluxDB.

mod ghz_run;
mod greeter;
mod report_servers;
mod support;

use ghz_run::{args, greeter_proto, run_json, scratch, strata_load, succeeded, testdata};
use greeter::Greeter;
use report_servers::{http, start_influxdb, start_pushgateway};
use serde_json::Value;
use support::Gateway;

/// The JSON report carries every field ghz writes, with ghz's types — compared with a report ghz wrote (its
/// web/test/SayHello/report1.json): top level, `options`, `latencyDistribution`, `histogram` and `details` entries.
/// What Strata adds is under `x-strata` (and `x-strata-cache` in a detail), plus the option names current ghz writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_report_has_every_field_of_a_report_ghz_wrote() {
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(testdata("report1.json")).expect("golden"))
            .expect("json");
    let greeter = Greeter::start().await;
    let ours = run_json(args(&[
        "--insecure",
        "--proto",
        &greeter_proto(),
        "--call",
        "helloworld.Greeter.SayHello",
        "-d",
        r#"{"name": "Bob"}"#,
        "-n",
        "200",
        "-c",
        "50",
        "--name",
        "Greeter SayHello",
        "--tags",
        r#"{"env": "test"}"#,
        &greeter.addr.to_string(),
    ]))
    .await;
    fn same_shape(golden: &Value, ours: &Value, at: &str) {
        let kind = |v: &Value| match v {
            Value::Number(n) if n.is_f64() => "float",
            Value::Number(_) => "integer",
            Value::String(_) => "string",
            Value::Bool(_) => "bool",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
            Value::Null => "null",
        };
        let compatible = kind(golden) == kind(ours)
            || (kind(golden) == "integer" && kind(ours) == "float")
            || (kind(golden) == "float" && kind(ours) == "integer");
        assert!(compatible, "{at}: ghz wrote {golden}, we wrote {ours}");
    }
    for (key, value) in golden.as_object().expect("object") {
        let mine = ours
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing: {ours}"));
        // ghz writes an empty error map as {} and we do too; the rest must have the same type.
        same_shape(value, mine, key);
    }
    let extra: Vec<&String> = ours
        .as_object()
        .expect("object")
        .keys()
        .filter(|k| !golden.as_object().expect("object").contains_key(*k))
        .collect();
    assert_eq!(extra, ["x-strata"], "only x-strata is ours");
    for (key, value) in golden["options"].as_object().expect("options") {
        let mine = ours["options"]
            .get(key)
            .unwrap_or_else(|| panic!("options.{key} missing: {}", ours["options"]));
        same_shape(value, mine, &format!("options.{key}"));
    }
    assert_eq!(
        (&ours["options"]["n"], &ours["options"]["c"]),
        (&Value::from(200), &Value::from(50))
    );
    assert_eq!(ours["options"]["timeout"], 20_000_000_000u64);
    for list in ["latencyDistribution", "histogram", "details"] {
        let theirs = golden[list][0].as_object().expect("entry");
        let mine = ours[list][0]
            .as_object()
            .unwrap_or_else(|| panic!("{list}: {}", ours[list]));
        for (key, value) in theirs {
            same_shape(value, &mine[key], &format!("{list}[0].{key}"));
        }
    }
    assert_eq!(ours["details"].as_array().expect("details").len(), 200);
    assert_eq!(ours["name"], "Greeter SayHello");
    assert_eq!(ours["tags"]["env"], "test");
}

/// Every one of ghz's eight formats is written, and each parses back: CSV rows, InfluxDB line protocol, the
/// Prometheus exposition (by promtool), HTML, the summary, JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_is_written_and_parses_back() {
    let greeter = Greeter::start().await;
    let gateway = Gateway::start(greeter.addr.port()).await;
    let dir = scratch("formats");
    for format in [
        "summary",
        "csv",
        "json",
        "pretty",
        "html",
        "influx-summary",
        "influx-details",
        "prometheus",
    ] {
        let out = dir.join(format);
        let output = strata_load(args(&[
            "--insecure",
            "--proto",
            &greeter_proto(),
            "--call",
            "helloworld.Greeter.SayHello",
            "-d",
            r#"{"name": "n-{{.RequestNumber}}"}"#,
            "-n",
            "40",
            "-c",
            "4",
            "--name",
            "formats run",
            "-O",
            format,
            "-o",
            out.to_str().expect("utf-8"),
            &gateway.addr,
        ]))
        .await;
        succeeded(output, &format);
        let text = std::fs::read_to_string(&out).expect("written");
        match format {
            "summary" => {
                assert!(
                    text.contains("Summary:\n  Name:\t\tformats run\n  Count:\t40\n"),
                    "{text}"
                );
                assert!(text.contains("[OK]   40 responses"), "{text}");
            }
            "csv" => {
                let mut lines = text.trim().lines();
                assert_eq!(
                    lines.next(),
                    Some("duration (ms),status,error,x-strata-cache")
                );
                let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
                assert_eq!(rows.len(), 40);
                for row in rows {
                    assert!(
                        row[0].parse::<f64>().is_ok() && row[1] == "OK" && row[2].is_empty(),
                        "{row:?}"
                    );
                }
            }
            "json" | "pretty" => {
                let report: Value = serde_json::from_str(&text).expect("JSON");
                assert_eq!(report["count"], 40);
                assert_eq!(text.trim().contains('\n'), format == "pretty");
            }
            "html" => {
                assert!(text.contains("<svg") && text.contains("</html>"), "{text}");
                for anchor in [
                    "summary",
                    "histogram",
                    "latency",
                    "status",
                    "data",
                    "options",
                    "cache",
                ] {
                    assert!(
                        text.contains(&format!("id=\"{anchor}\"")),
                        "{anchor}: {text}"
                    );
                }
            }
            "influx-summary" | "influx-details" => {
                let lines: Vec<Line> = text.trim().lines().map(parse_line).collect();
                if format == "influx-summary" {
                    assert_eq!(lines.len(), 1);
                    let line = &lines[0];
                    assert_eq!(line.measurement, "ghz_run");
                    assert_eq!(line.tag("name"), "\"formats\\ run\"");
                    assert_eq!(line.tag("n"), "40");
                    assert_eq!(line.tag("has_errors"), "false");
                    assert_eq!(line.field("count"), "40");
                    // The cache level of every OK answer (proxied, uncached here: `none`).
                    assert_eq!(line.field("strata_cache_none"), "40");
                    for field in [
                        "total", "average", "fastest", "slowest", "rps", "median", "p95", "errors",
                    ] {
                        assert!(line.field(field).parse::<f64>().is_ok(), "{field}: {text}");
                    }
                } else {
                    assert_eq!(lines.len(), 40);
                    for line in lines {
                        assert_eq!(line.measurement, "ghz_detail");
                        assert_eq!(line.tag("hasError"), "false");
                        assert_eq!(line.field("status"), "\"OK\"");
                        assert_eq!(line.field("cache"), "\"\"");
                        assert!(line.field("latency").parse::<u64>().is_ok());
                        assert!(line.timestamp > 1_600_000_000_000_000_000);
                    }
                }
            }
            "prometheus" => {
                promtool_accepts(&text);
                assert!(
                    text.contains("# TYPE ghz_run_count gauge\nghz_run_count{"),
                    "{text}"
                );
                assert!(
                    text.contains("ghz_run_latency{") && text.contains("quantile=\"0.999\""),
                    "{text}"
                );
                assert!(
                    text.contains("ghz_run_histogram_bucket{") && text.contains("le=\"+Inf\"} 40"),
                    "{text}"
                );
                assert!(text.contains("end_reason=\"normal\""), "{text}");
                assert!(text.contains("level=\"none\"} 40"), "{text}");
            }
            _ => unreachable!(),
        }
    }
    gateway.stop().await;
    std::fs::remove_dir_all(dir).expect("clean up");
}

/// `promtool check metrics` (Debian's prometheus package, installed by scripts/test) parses `text`. Its lints about
/// ghz's own names (`ghz_run_count` and `ghz_run_total` are gauges, `ghz_run_histogram` names its type, its labels
/// `CPUs` and `skipFirst` are camelCase) are ghz's, kept for its dashboards; anything else — a parse error, a lint on
/// a name of ours — fails.
fn promtool_accepts(text: &str) {
    use std::io::Write;
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool must be on PATH (scripts/test installs the prometheus package)");
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let result = check.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    // promtool exits 1 when it cannot parse, 3 when it only has lints.
    assert!(
        matches!(result.status.code(), Some(0 | 3)),
        "promtool: {said}"
    );
    let ghz_names = ["ghz_run_count ", "ghz_run_total ", "ghz_run_histogram "];
    let problems: Vec<&str> = said
        .lines()
        .filter(|l| {
            let ghz_metric = ghz_names.iter().any(|n| l.starts_with(n));
            let ghz_labels =
                l.ends_with("label names should be written in 'snake_case' not 'camelCase'");
            !l.trim().is_empty() && !ghz_metric && !ghz_labels
        })
        .collect();
    assert!(problems.is_empty(), "promtool: {said}");
}

/// One InfluxDB line: measurement, tags, fields, timestamp (escapes kept as written).
struct Line {
    measurement: String,
    tags: Vec<(String, String)>,
    fields: Vec<(String, String)>,
    timestamp: u128,
}

impl Line {
    fn tag(&self, key: &str) -> &str {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("tag {key}"))
    }
    fn field(&self, key: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("field {key}"))
    }
}

/// Splits `text` at unescaped `separator`s outside double quotes.
fn split_unescaped(text: &str, separator: char) -> Vec<String> {
    let (mut parts, mut current, mut quoted, mut escaped) =
        (Vec::new(), String::new(), false, false);
    for c in text.chars() {
        if escaped {
            current.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => {
                current.push(c);
                escaped = true;
            }
            '"' => {
                current.push(c);
                quoted = !quoted;
            }
            c if c == separator && !quoted => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    assert!(!quoted && !escaped, "unbalanced: {text}");
    parts.push(current);
    parts
}

/// Parses one line of the InfluxDB line protocol (`measurement,tags fields timestamp`).
fn parse_line(line: &str) -> Line {
    let sections = split_unescaped(line, ' ');
    assert_eq!(sections.len(), 3, "{line}");
    let pairs = |text: &str| -> Vec<(String, String)> {
        split_unescaped(text, ',')
            .into_iter()
            .map(|pair| {
                let parts = split_unescaped(&pair, '=');
                assert_eq!(parts.len(), 2, "{pair} in {line}");
                (parts[0].clone(), parts[1].clone())
            })
            .collect()
    };
    let mut head = split_unescaped(&sections[0], ',').into_iter();
    let measurement = head.next().expect("measurement");
    let tags = pairs(&head.collect::<Vec<_>>().join(","));
    let fields = pairs(&sections[1]);
    for (key, value) in &fields {
        assert!(
            (value.starts_with('"') && value.ends_with('"')) || value.parse::<f64>().is_ok(),
            "field {key}={value} is neither a string nor a number"
        );
    }
    Line {
        measurement,
        tags,
        fields,
        timestamp: sections[2].parse().expect("timestamp"),
    }
}

/// The `prometheus` report is taken by a real Prometheus Pushgateway (Debian's prometheus-pushgateway, installed by
/// scripts/test) — where a load run's figures go to reach Prometheus — and comes back out of it as pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushgateway_takes_the_prometheus_report() {
    let greeter = Greeter::start().await;
    let output = strata_load(args(&[
        "--insecure",
        "--proto",
        &greeter_proto(),
        "--call",
        "helloworld.Greeter.SayHello",
        "-d",
        r#"{"name": "pushed"}"#,
        "-n",
        "30",
        "-c",
        "3",
        "--name",
        "pushed run",
        "-O",
        "prometheus",
        &greeter.addr.to_string(),
    ]))
    .await;
    let report = String::from_utf8(succeeded(output, &"-O prometheus")).expect("text");
    let dir = scratch("pushgateway");
    let (gateway, web) = start_pushgateway(&dir).await;
    let put = http(web, "PUT", "/metrics/job/strata-load", &report).await;
    assert!(
        put.starts_with("HTTP/1.1 200"),
        "the Pushgateway refused the report: {put}"
    );
    let scraped = http(web, "GET", "/metrics", "").await;
    for needle in [
        "ghz_run_count{",
        "job=\"strata-load\"",
        "name=\"pushed run\"",
        "ghz_run_latency{",
        "quantile=\"0.9999\"",
        "ghz_run_histogram_bucket{",
        "strata_load_cache_answers{",
    ] {
        assert!(
            scraped.contains(needle),
            "{needle} not in what the Pushgateway serves: {scraped}"
        );
    }
    let count = scraped
        .lines()
        .find(|l| l.starts_with("ghz_run_count{"))
        .and_then(|l| l.rsplit(' ').next())
        .expect("ghz_run_count");
    assert_eq!(count, "30");
    drop(gateway);
    std::fs::remove_dir_all(dir).expect("clean up");
}

/// Both Influx formats are taken by a real InfluxDB (1.x, Debian's): every line written, then read back by
/// InfluxQL — the run's count and cache levels, one detail per answer, an error text as the server sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_takes_both_influx_formats() {
    let greeter = Greeter::start().await;
    let dir = scratch("influxdb");
    let (server, web) = start_influxdb(&dir).await;
    let created = http(web, "POST", "/query?q=CREATE%20DATABASE%20ghz", "").await;
    assert!(created.starts_with("HTTP/1.1 200"), "{created}");
    for format in ["influx-summary", "influx-details"] {
        let output = strata_load(args(&[
            "--insecure",
            "--proto",
            &greeter_proto(),
            "--call",
            "helloworld.Greeter.SayHello",
            "-d",
            r#"[{"name": "a, b"}, {"name": "sleep:1000"}]"#,
            "-n",
            "6",
            "-c",
            "1",
            "-t",
            "200ms",
            "--name",
            "influx run",
            "--tags",
            r#"{"env": "ci, test"}"#,
            "-O",
            format,
            &greeter.addr.to_string(),
        ]))
        .await;
        let lines = String::from_utf8(succeeded(output, &format)).expect("text");
        let written = http(web, "POST", "/write?db=ghz", &lines).await;
        assert!(
            written.starts_with("HTTP/1.1 204"),
            "InfluxDB refused {format}: {written}\n{lines}"
        );
    }
    let query = async |q: &str| {
        let encoded: String = q
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    char::from(b).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect();
        http(web, "GET", &format!("/query?db=ghz&q={encoded}"), "").await
    };
    // One JSON answer, sent chunked: the chunks joined.
    let body = |answer: String| -> Value {
        let mut chunked = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let mut json = String::new();
        while let Some((size, rest)) = chunked.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if size == 0 || rest.len() < size {
                break;
            }
            json.push_str(&rest[..size]);
            chunked = rest[size..].trim_start_matches("\r\n");
        }
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {answer}"))
    };
    let run = body(query(r#"SELECT "count", "errors", "strata_cache_none" FROM ghz_run"#).await);
    assert_eq!(
        run["results"][0]["series"][0]["values"][0]
            .as_array()
            .map(|v| v[1..].to_vec()),
        Some(vec![Value::from(6), Value::from(3), Value::from(3)]),
        "{run}"
    );
    let details = body(query(r#"SELECT count("latency") FROM ghz_detail"#).await);
    assert_eq!(
        details["results"][0]["series"][0]["values"][0][1], 6,
        "{details}"
    );
    let errors =
        body(query(r#"SELECT "error" FROM ghz_detail WHERE "hasError" = 'true' LIMIT 1"#).await);
    assert_eq!(
        errors["results"][0]["series"][0]["values"][0][1],
        "rpc error: code = DeadlineExceeded desc = context deadline exceeded",
        "{errors}"
    );
    drop(server);
    std::fs::remove_dir_all(dir).expect("clean up");
}
