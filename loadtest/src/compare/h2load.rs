//! h2load (nghttp2) as the second load driver: a lean C client that pushes a server harder than an in-process Rust
//! client sharing the box. It sends one fixed request body and counts HTTP statuses only — a gRPC error still
//! arrives as HTTP 200 — so the suite checks the gRPC status of the same request separately before trusting it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use bytes::{BufMut, BytesMut};
use prost::Message;

use super::fleet::Pinning;

/// What one h2load run measured.
#[derive(Debug, Clone, Copy)]
pub struct H2loadReport {
    /// Requests per second.
    pub rps: f64,
    /// Mean time per request, milliseconds.
    pub mean_ms: f64,
    /// Requests that did not complete with HTTP 2xx.
    pub failed: u64,
}

/// Whether h2load is installed.
pub fn installed() -> bool {
    std::process::Command::new("h2load")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Writes the framed `GetItem` request for `id` (what h2load sends) into `dir`.
pub fn request_file(dir: &Path, id: &str) -> anyhow::Result<PathBuf> {
    let message = strata_proto::demo::v1::GetItemRequest {
        id: id.to_owned(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(message.len())?);
    framed.put_slice(&message);
    let path = dir.join(format!("get-item-{id}.bin"));
    std::fs::write(&path, framed)?;
    Ok(path)
}

/// Runs h2load against `/demo.v1.Catalog/GetItem` at `target` for `duration`: `connections` connections with
/// `streams` calls in flight on each.
pub async fn run(
    target: SocketAddr,
    body: &Path,
    duration: Duration,
    connections: usize,
    streams: usize,
    pinning: &Pinning,
) -> anyhow::Result<H2loadReport> {
    let seconds = duration.as_secs().max(1).to_string();
    let (connections, streams) = (connections.to_string(), streams.to_string());
    let options = [
        "-D",
        &seconds,
        "-t",
        "1",
        "-c",
        &connections,
        "-m",
        &streams,
    ];
    let text = get_item(target, body, &options, pinning).await?;
    parse(&text).with_context(|| format!("cannot read h2load's output:\n{text}"))
}

/// The median time of `calls` calls against `/demo.v1.Catalog/GetItem` at `target`, `streams` in flight on each of
/// `connections` connections, in milliseconds. With one connection and one stream it is the latency a server adds with
/// nothing queued, measured by a client as lean as redis-benchmark. Read from h2load's per-request log
/// (`--log-file`); every call must end with HTTP 200.
pub async fn p50_ms(
    target: SocketAddr,
    body: &Path,
    calls: u64,
    (connections, streams): (usize, usize),
    pinning: &Pinning,
) -> anyhow::Result<f64> {
    let log = body.with_file_name(format!("h2load-{}.log", target.port()));
    let _ = std::fs::remove_file(&log);
    let (count, log_option) = (calls.to_string(), format!("--log-file={}", log.display()));
    let (connections, streams) = (connections.to_string(), streams.to_string());
    let options = [
        "-n",
        &count,
        "-c",
        &connections,
        "-m",
        &streams,
        "-t",
        "1",
        &log_option,
    ];
    get_item(target, body, &options, pinning).await?;
    let text = std::fs::read_to_string(&log)
        .with_context(|| format!("h2load wrote no log at {}", log.display()))?;
    let _ = std::fs::remove_file(&log);
    median_from_log(&text, calls)
}

/// Runs h2load with `options`, sending `body` as a gRPC `GetItem` call to `target`; returns what it printed.
async fn get_item(
    target: SocketAddr,
    body: &Path,
    options: &[&str],
    pinning: &Pinning,
) -> anyhow::Result<String> {
    let mut command = pinning.client_command("h2load");
    command
        .args(options)
        .arg("-d")
        .arg(body)
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg(format!("http://{target}/demo.v1.Catalog/GetItem"));
    let output = tokio::process::Command::from(command)
        .output()
        .await
        .context("cannot run h2load")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "h2load failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(text)
}

/// The median of the log's third column (microseconds until the end of the response), in milliseconds.
fn median_from_log(text: &str, calls: u64) -> anyhow::Result<f64> {
    let mut micros = Vec::with_capacity(usize::try_from(calls).unwrap_or(0));
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let columns: Vec<&str> = line.split('\t').collect();
        let (Some(status), Some(time)) = (columns.get(1), columns.get(2)) else {
            anyhow::bail!("unexpected h2load log line: {line:?}");
        };
        anyhow::ensure!(*status == "200", "a call ended with HTTP {status}");
        micros.push(
            time.trim()
                .parse::<u64>()
                .context("h2load log: time column")?,
        );
    }
    anyhow::ensure!(
        micros.len() as u64 == calls,
        "h2load logged {} of {calls} calls",
        micros.len()
    );
    micros.sort_unstable();
    Ok(micros[micros.len() / 2] as f64 / 1e3)
}

/// Reads `finished in …, N req/s`, `requests: … N failed` and `time for request: min max mean …`.
fn parse(text: &str) -> Option<H2loadReport> {
    let finished = text.lines().find(|l| l.starts_with("finished in"))?;
    let rps: f64 = finished
        .split(", ")
        .nth(1)?
        .strip_suffix(" req/s")?
        .trim()
        .parse()
        .ok()?;
    let requests = text.lines().find(|l| l.starts_with("requests:"))?;
    let failed = requests
        .split(", ")
        .find_map(|part| part.strip_suffix(" failed"))?
        .trim()
        .parse()
        .ok()?;
    let timing = text
        .lines()
        .find(|l| l.trim_start().starts_with("time for request:"))?;
    let mean = timing.split_whitespace().nth(5)?;
    Some(H2loadReport {
        rps,
        mean_ms: duration_ms(mean)?,
        failed,
    })
}

fn duration_ms(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else {
        (text.strip_suffix('s')?, 1e3)
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_h2load_output() {
        let text = "starting benchmark...\n\
            finished in 3.00s, 51234.67 req/s, 31.05MB/s\n\
            requests: 153704 total, 153704 started, 153704 done, 153704 succeeded, 0 failed, 0 errored, 0 timeout\n\
            status codes: 153704 2xx, 0 3xx, 0 4xx, 0 5xx\n\
            \x20                    min         max         mean         sd        +/- sd\n\
            time for request:      108us      9.02ms       1.22ms       402us    71.23%\n";
        let report = parse(text).unwrap();
        assert!((report.rps - 51234.67).abs() < 1e-6);
        assert!((report.mean_ms - 1.22).abs() < 1e-9);
        assert_eq!(report.failed, 0);
    }

    #[test]
    fn reads_the_per_request_log() {
        let log =
            "1732440000000000\t200\t120\n1732440000000200\t200\t90\n1732440000000400\t200\t300\n";
        assert!((median_from_log(log, 3).unwrap() - 0.120).abs() < 1e-9);
        assert!(
            median_from_log(log, 4).is_err(),
            "a call missing from the log"
        );
        let failed = "1732440000000000\t503\t120\n";
        assert!(
            median_from_log(failed, 1).is_err(),
            "a call that did not end with 200"
        );
    }
}
