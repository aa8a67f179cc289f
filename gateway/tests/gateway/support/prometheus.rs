//! A real Prometheus server (Debian's `prometheus` package, which `scripts/test` installs) scraping the admin
//! listeners of gateways every second, as the chart's ServiceMonitor has it scrape a pod. Its web API answers what it
//! made of the scrapes: whether each target is up, the last scrape error, and queries.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{eventually, free_port};
use crate::health::http_get;

/// A running `prometheus`, killed when dropped.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    web: SocketAddr,
    dir: std::path::PathBuf,
}

impl Prometheus {
    /// Starts a Prometheus scraping `/metrics` on each of `targets` every second, and waits for its web API.
    pub async fn start(targets: &[SocketAddr]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "strata-prometheus-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global: {{ scrape_interval: 1s, scrape_timeout: 900ms }}\n\
             scrape_configs:\n  - job_name: strata\n    metrics_path: /metrics\n    \
             static_configs: [{{ targets: [{}] }}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("config");
        // Held (bound, not listening) until Prometheus listens on it: no other test is given the port meanwhile.
        let hold = super::backend::PortHold::any();
        let web = SocketAddr::from(([127, 0, 0, 1], hold.port()));
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "`prometheus` must be on PATH: scripts/test installs Debian's prometheus package",
            );
        let prometheus = Self { child, web, dir };
        // It answers 503 until its storage is open and its config loaded.
        let ready = eventually(Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(web).await.is_ok()
                && http_get(web, "/-/ready").await.starts_with("HTTP/1.1 200")
        })
        .await;
        assert!(ready, "prometheus was not ready on {web} within 30 s");
        drop(hold);
        prometheus
    }

    /// The `data` of a GET on the web API at `path_and_query` (`/api/v1/...`).
    pub async fn api(&self, path_and_query: &str) -> Value {
        let response = http_get(self.web, path_and_query).await;
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or_default();
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        let json: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("prometheus API {path_and_query}: {e}: {response}"));
        assert_eq!(json["status"], "success", "{json}");
        json["data"].clone()
    }

    /// Waits (up to 30 s) until every target has been scraped; returns each one's health and last error.
    pub async fn scraped_targets(&self) -> Vec<(String, String)> {
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let data = self.api("/api/v1/targets").await;
            let seen: Vec<(String, String)> = data["activeTargets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let text = |field: &str| t[field].as_str().unwrap_or_default().to_owned();
                    (text("health"), text("lastError"))
                })
                .collect();
            let scraped = !seen.is_empty() && seen.iter().all(|(health, _)| health != "unknown");
            if scraped || tokio::time::Instant::now() >= until {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The instant vector `query` evaluates to, waiting (up to 30 s) until it is not empty.
    pub async fn query(&self, query: &str) -> Vec<Value> {
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let data = self.api(&format!("/api/v1/query?query={query}")).await;
            let result = data["result"].as_array().cloned().unwrap_or_default();
            if !result.is_empty() || tokio::time::Instant::now() >= until {
                return result;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The body of a chunked HTTP/1.1 answer.
fn dechunk(mut chunked: &str) -> String {
    let mut body = String::new();
    while let Some((size, rest)) = chunked.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        body.push_str(&rest[..size]);
        chunked = rest[size..].trim_start_matches("\r\n");
    }
    body
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
