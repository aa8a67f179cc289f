//! `/metrics` on the admin listener: counters that match what the test did, exactly.

use std::time::Duration;

use crate::health::http_get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::gateway::{TestGateway, config_with_route, start};
use crate::support::pb::GetRequest;
use crate::support::prometheus::Prometheus;
use crate::{get, key};

/// The value of the sample `name{labels}` in a metrics text, if present.
pub fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
}

async fn scrape(gateway: &TestGateway) -> String {
    let response = http_get(gateway.admin, "/metrics").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

fn failing(name: &str, code: tonic::Code) -> GetRequest {
    let mut req = key(name);
    req.fail_code = code as i32;
    req
}

#[tokio::test]
async fn counters_match_what_the_calls_did() {
    let (_backend, gateway) =
        start(&|url| config_with_route(url, "ttl: 1s, stale_while_revalidate: 30s", "", "")).await;
    let mut client = gateway.client().await;

    get(&mut client, key("a"), None).await.expect("miss");
    get(&mut client, key("a"), None).await.expect("l1");
    get(&mut client, key("a"), None).await.expect("l1");
    for _ in 0..2 {
        get(&mut client, failing("b", tonic::Code::NotFound), None)
            .await
            .expect_err("not found, not cached");
    }
    let mut stream = client.watch(key("w")).await.expect("watch").into_inner();
    while stream.message().await.expect("ok").is_some() {}
    let mut failing_stream = client
        .watch(failing("w", tonic::Code::Aborted))
        .await
        .expect("watch")
        .into_inner();
    while let Ok(Some(_)) = failing_stream.message().await {}
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        get(&mut client, key("a"), None).await.expect("stale").cache,
        "stale"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;

    let text = scrape(&gateway).await;
    let get_route = "route=\"/testing.v1.Lookup/Get\"";
    let any = "route=\"*\"";
    let expected = [
        (format!("{get_route},code=\"OK\",cache=\"miss\""), 1.0),
        (format!("{get_route},code=\"OK\",cache=\"l1\""), 2.0),
        (
            format!("{get_route},code=\"NOT_FOUND\",cache=\"miss\""),
            2.0,
        ),
        (format!("{get_route},code=\"OK\",cache=\"stale\""), 1.0),
        (format!("{any},code=\"OK\",cache=\"none\""), 1.0),
        (format!("{any},code=\"ABORTED\",cache=\"none\""), 1.0),
    ];
    for (labels, value) in &expected {
        assert_eq!(
            sample(&text, "strata_calls_total", labels),
            Some(*value),
            "{labels} in:\n{text}"
        );
    }
    let all_calls: f64 = text
        .lines()
        .filter(|l| l.starts_with("strata_calls_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(all_calls, 8.0, "no call counted twice or missed:\n{text}");
    assert_eq!(
        sample(&text, "strata_call_duration_seconds_count", get_route),
        Some(6.0)
    );
    assert_eq!(sample(&text, "strata_cache_l1_hits_total", ""), Some(2.0));
    assert_eq!(
        sample(&text, "strata_cache_stale_served_total", ""),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "strata_cache_refreshes_stale_total", ""),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "strata_cache_misses_total", ""),
        Some(4.0),
        "a, b twice, and a's refresh"
    );
    assert!(
        text.contains("strata_call_duration_seconds_bucket{le=\"0.0005\","),
        "explicit buckets:\n{text}"
    );
    // a, b twice, the two Watch calls, and a's background refresh.
    let backend = "backend=\"lookup\",outcome=\"ok\"";
    assert_eq!(
        sample(&text, "strata_backend_call_duration_seconds_count", backend),
        Some(6.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "strata_cache_l2_read_duration_seconds_count", ""),
        Some(0.0),
        "no L2 here"
    );
    assert_eq!(
        sample(&text, "strata_cache_flight_wait_duration_seconds_count", ""),
        Some(0.0)
    );
    assert!(text.contains("strata_build_info{version="), "{text}");
    gateway.stop().await;
}

/// `promtool check metrics` (from the Debian `prometheus` package) accepts the text format.
#[tokio::test]
async fn promtool_accepts_the_output() {
    let (_backend, gateway) = start(&|url| config_with_route(url, "ttl: 30s", "", "")).await;
    let mut client = gateway.client().await;
    get(&mut client, key("a"), None).await.expect("miss");
    let response = scrape(&gateway).await;
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .expect("a body")
        .to_owned();
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool must be on PATH (scripts/test installs the prometheus package)");
    use std::io::Write;
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write");
    let result = check.wait_with_output().expect("promtool");
    assert!(
        result.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    gateway.stop().await;
}

/// A GET of `/metrics` on `gateway`'s admin listener asking for `accept`: the content type and the body.
async fn scrape_accepting(gateway: &TestGateway, accept: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(gateway.admin)
        .await
        .expect("connect admin");
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: admin\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP answer");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    (content_type, body.to_owned())
}

/// What a scraper asks for is what it gets: OpenMetrics (with `# EOF`, `# TYPE` without `_total`) for a Prometheus
/// server, the 0.0.4 text format (no `# EOF`, `_total` everywhere) otherwise, each labelled as what it is.
#[tokio::test]
async fn the_format_follows_the_accept_header() {
    let (_backend, gateway) = start(&|url| config_with_route(url, "ttl: 30s", "", "")).await;
    let mut client = gateway.client().await;
    get(&mut client, key("a"), None).await.expect("miss");

    let prometheus_accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                             version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (content_type, body) = scrape_accepting(&gateway, prometheus_accept).await;
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    assert!(
        body.ends_with("# EOF\n"),
        "OpenMetrics ends with # EOF:\n{body}"
    );
    assert!(body.contains("# TYPE strata_calls counter\n"), "{body}");

    for accept in ["*/*", "text/plain;version=0.0.4"] {
        let (content_type, body) = scrape_accepting(&gateway, accept).await;
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{accept}: {content_type}"
        );
        assert!(!body.contains("# EOF"), "{accept}: {body}");
        assert!(
            body.contains("# TYPE strata_calls_total counter\n"),
            "{body}"
        );
    }
    gateway.stop().await;
}

/// A real Prometheus server scrapes the admin listener every second, as the chart's ServiceMonitor has it: the target
/// is up (Prometheus asks for OpenMetrics and refuses a page without `# EOF`) and the call counter can be queried.
#[tokio::test]
async fn a_prometheus_server_scrapes_the_gateway() {
    let (_backend, gateway) = start(&|url| config_with_route(url, "ttl: 30s", "", "")).await;
    let mut client = gateway.client().await;
    get(&mut client, key("a"), None).await.expect("miss");
    get(&mut client, key("a"), None).await.expect("l1");

    let prometheus = Prometheus::start(&[gateway.admin]).await;
    let targets = prometheus.scraped_targets().await;
    assert_eq!(
        targets,
        vec![("up".to_owned(), String::new())],
        "the target's health and last scrape error"
    );
    let samples = prometheus.query("strata_calls_total").await;
    let l1 = samples
        .iter()
        .find(|s| s["metric"]["cache"] == "l1" && s["metric"]["route"] == "/testing.v1.Lookup/Get")
        .unwrap_or_else(|| panic!("no l1 series in {samples:?}"));
    assert_eq!(l1["value"][1], "1", "{l1}");
    gateway.stop().await;
}
