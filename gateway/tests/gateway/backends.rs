//! Backends in production: balancing, health checks, outlier ejection, limits, deadlines, load shedding.

use std::time::{Duration, Instant};

use crate::support::backend::TestBackend;
use crate::support::gateway::TestGateway;
use crate::support::raw;
use crate::{get, key};

/// A gateway config proxying everything (nothing cached) to one backend of `endpoints`, with `backend_extra` in the
/// backend's block and `top_extra` at the top level.
fn proxy_config(endpoints: &[&TestBackend], backend_extra: &str, top_extra: &str) -> String {
    let urls = endpoints
        .iter()
        .map(|b| format!("\"{}\"", b.url()))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
backends:
  pool:
    endpoints: [{urls}]
{backend_extra}
routes:
  - match: "*"
    backend: pool
{top_extra}
"#
    )
}

async fn three_backends() -> [TestBackend; 3] {
    [
        TestBackend::start().await,
        TestBackend::start().await,
        TestBackend::start().await,
    ]
}

/// Sends `n` calls from `workers` workers, each sending its next call when the previous one is answered (a closed
/// loop, as real clients do); returns how many failed.
async fn load(gateway: &TestGateway, n: usize, workers: usize) -> usize {
    let client = gateway.client().await;
    let per_worker = n / workers;
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut failed = 0;
                for i in 0..per_worker {
                    if get(&mut client, key(&format!("w{w}-{i}")), None)
                        .await
                        .is_err()
                    {
                        failed += 1;
                    }
                }
                failed
            })
        })
        .collect();
    let mut failed = 0;
    for task in tasks {
        failed += task.await.expect("task");
    }
    failed
}

#[tokio::test]
async fn round_robin_spreads_calls_evenly() {
    let backends = three_backends().await;
    let gateway = TestGateway::start(&proxy_config(
        &backends.each_ref(),
        "    lb: round_robin",
        "",
    ))
    .await;
    assert_eq!(load(&gateway, 300, 10).await, 0);
    for b in &backends {
        let calls = b.get_calls();
        assert!(
            (90..=110).contains(&calls),
            "each endpoint gets 100 ± 10 %, got {calls}"
        );
    }
    gateway.stop().await;
}

#[tokio::test]
async fn p2c_sends_fewer_calls_to_a_slow_endpoint() {
    let backends = three_backends().await;
    backends[0].slow_down(100);
    let gateway = TestGateway::start(&proxy_config(&backends.each_ref(), "    lb: p2c", "")).await;
    assert_eq!(load(&gateway, 300, 30).await, 0);
    let (slow, fast) = (
        backends[0].get_calls(),
        backends[1].get_calls() + backends[2].get_calls(),
    );
    assert!(
        slow * 3 < fast,
        "a fair share would be a third; the slow endpoint got {slow} calls, the two fast ones {fast}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn an_endpoint_failing_health_checks_leaves_the_rotation_until_it_recovers() {
    let backends = three_backends().await;
    let health = "    health_check: { interval: 100ms, timeout: 100ms, unhealthy_threshold: 1, healthy_threshold: 1 }";
    let gateway = TestGateway::start(&proxy_config(&backends.each_ref(), health, "")).await;
    backends[0].set_serving(false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = backends[0].get_calls();
    assert_eq!(load(&gateway, 60, 6).await, 0);
    assert_eq!(backends[0].get_calls(), before, "NOT_SERVING: no calls");

    backends[0].set_serving(true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(load(&gateway, 60, 6).await, 0);
    assert!(
        backends[0].get_calls() > before + 10,
        "SERVING again: back in rotation"
    );
    let metrics = crate::health::http_get(gateway.admin, "/metrics").await;
    for event in ["unhealthy", "healthy"] {
        let labels = format!("backend=\"pool\",event=\"{event}\"");
        assert_eq!(
            crate::metrics::sample(&metrics, "strata_backend_endpoint_events_total", &labels),
            Some(1.0),
            "{event}"
        );
    }
    gateway.stop().await;
}

#[tokio::test]
async fn a_killed_endpoint_is_ejected_and_returns_after_recovering() {
    let [dead, b, c] = three_backends().await;
    let outlier = "    outlier: { consecutive_failures: 3, base_ejection_time: 500ms, max_ejection_percent: 50 }";
    let gateway = TestGateway::start(&proxy_config(&[&dead, &b, &c], outlier, "")).await;
    let hold = dead.stop().await;

    // Until it is ejected, calls sent its way fail: at most `consecutive_failures` of them.
    let failed = load(&gateway, 30, 1).await;
    assert!(failed <= 3, "{failed} calls failed before the ejection");
    assert_eq!(
        load(&gateway, 90, 9).await,
        0,
        "after the ejection every call succeeds"
    );
    let metrics = crate::health::http_get(gateway.admin, "/metrics").await;
    let ejected = "backend=\"pool\",event=\"ejected\"";
    assert_eq!(
        crate::metrics::sample(&metrics, "strata_backend_endpoint_events_total", ejected),
        Some(1.0)
    );

    let back = TestBackend::restart(hold).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(load(&gateway, 60, 6).await, 0);
    assert!(
        back.get_calls() > 10,
        "the recovered endpoint is back in rotation, got {}",
        back.get_calls()
    );
    gateway.stop().await;
}

#[tokio::test]
async fn over_a_backends_limit_calls_fail_fast() {
    let backend = TestBackend::start().await;
    backend.slow_down(500);
    let gateway = TestGateway::start(&proxy_config(
        &[&backend],
        "    max_concurrent_requests: 5",
        "",
    ))
    .await;
    let client = gateway.client().await;
    let started = Instant::now();
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move { get(&mut client, key(&format!("k{i}")), None).await })
        })
        .collect();
    let mut refused = 0;
    for call in calls {
        if let Err(status) = call.await.expect("task") {
            assert_eq!(status.code(), tonic::Code::Unavailable);
            assert!(
                status.message().contains("max_concurrent_requests"),
                "{}",
                status.message()
            );
            refused += 1;
        }
    }
    assert_eq!(refused, 15, "5 in flight, the rest refused");
    assert!(started.elapsed() < Duration::from_secs(2));
    // Each call is timed once, under what became of it.
    let metrics = crate::health::http_get(gateway.admin, "/metrics").await;
    let calls_that = |outcome: &str| {
        let labels = format!("backend=\"pool\",outcome=\"{outcome}\"");
        crate::metrics::sample(
            &metrics,
            "strata_backend_call_duration_seconds_count",
            &labels,
        )
    };
    assert_eq!(calls_that("refused"), Some(15.0), "{metrics}");
    assert_eq!(calls_that("ok"), Some(5.0), "{metrics}");
    assert_eq!(calls_that("error"), Some(0.0), "{metrics}");
    gateway.stop().await;
}

#[tokio::test]
async fn beyond_the_global_limit_calls_are_shed_at_once() {
    let backend = TestBackend::start().await;
    // Slow enough that the shed calls are refused, and the state read, while the admitted ones still run.
    backend.slow_down(3000);
    let gateway =
        TestGateway::start(&proxy_config(&[&backend], "", "max_concurrent_requests: 4")).await;
    let client = gateway.client().await;
    let calls: Vec<_> = (0..12)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                (
                    get(&mut client, key(&format!("k{i}")), None).await,
                    started.elapsed(),
                )
            })
        })
        .collect();
    let admitted = crate::support::eventually(Duration::from_secs(2), || async {
        backend.get_calls() == 4
    })
    .await;
    assert!(admitted, "four calls reached the backend");
    let readyz = crate::health::http_get(gateway.admin, "/readyz").await;
    assert!(
        readyz.starts_with("HTTP/1.1 503"),
        "not ready while shedding: {readyz}"
    );
    let health = tonic_health::pb::health_client::HealthClient::new(gateway.channel().await);
    let not_serving = crate::support::eventually(Duration::from_secs(2), || {
        let mut health = health.clone();
        async move {
            let reply = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .expect("health checks are never shed");
            reply.into_inner().status
                == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
        }
    })
    .await;
    assert!(not_serving, "gRPC health says NOT_SERVING while shedding");
    let mut shed = 0;
    for call in calls {
        let (result, took) = call.await.expect("task");
        if let Err(status) = result {
            assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
            assert!(
                took < Duration::from_millis(2500),
                "shed at once, not after the admitted calls' 3 s: took {took:?}"
            );
            shed += 1;
        }
    }
    assert_eq!(shed, 8);
    gateway.stop().await;
}

/// Calls a 2-second `Get` with `headers` and checks the gateway answers DEADLINE_EXCEEDED after `at_least` (and well
/// before the backend would have answered).
async fn expect_exceeded_after(
    gateway: &TestGateway,
    headers: &[(&str, &str)],
    at_least: Duration,
) {
    // Far slower than any deadline here: an answer before it came from the gateway.
    let mut slow = key("slow");
    slow.delay_ms = 5000;
    let started = Instant::now();
    let answer = raw::call(
        gateway.addr,
        "/testing.v1.Lookup/Get",
        headers,
        raw::framed(&slow),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(
        answer.grpc_status,
        (tonic::Code::DeadlineExceeded as i32).to_string(),
        "{answer:?}"
    );
    assert!(
        took >= at_least && took < Duration::from_millis(4000),
        "took {took:?}"
    );
}

#[tokio::test]
async fn the_backend_sets_and_clamps_deadlines() {
    let backend = TestBackend::start().await;
    let extra = "    default_timeout: 200ms\n    max_timeout: 300ms";
    let gateway = TestGateway::start(&proxy_config(&[&backend], extra, "")).await;
    // No deadline from the client: the backend's default applies.
    expect_exceeded_after(&gateway, &[], Duration::from_millis(190)).await;
    // A client asking for 5 s gets at most the backend's 300 ms, and the backend is told so.
    expect_exceeded_after(
        &gateway,
        &[("grpc-timeout", "5S")],
        Duration::from_millis(290),
    )
    .await;
    let seen = backend
        .last_grpc_timeout()
        .expect("a grpc-timeout reached the backend");
    let forwarded = strata_gateway::grpc::timeout::parse(seen.as_bytes()).expect("valid");
    assert!(forwarded <= Duration::from_millis(300), "{seen}");
    gateway.stop().await;
}

#[tokio::test]
async fn max_timeout_bounds_calls_without_a_deadline_streams_included() {
    let backend = TestBackend::start().await;
    let gateway =
        TestGateway::start(&proxy_config(&[&backend], "    max_timeout: 300ms", "")).await;
    // A unary call that sent no deadline gets the maximum, and DEADLINE_EXCEEDED when it passes.
    expect_exceeded_after(&gateway, &[], Duration::from_millis(290)).await;
    // A stream that sent none is ended by the gateway when the maximum passes: the backend (tonic) enforces its
    // `grpc-timeout` only until its answer's headers, so without the gateway this stream would stay open.
    let mut client = gateway.client().await;
    let (sender, requests) = tokio::sync::mpsc::channel(4);
    sender.send(key("first")).await.expect("open");
    let mut replies = client
        .chat(tokio_stream::wrappers::ReceiverStream::new(requests))
        .await
        .expect("a stream")
        .into_inner();
    let echo = replies.message().await.expect("the echo");
    assert!(echo.is_some(), "the stream works until the deadline");
    let end = tokio::time::timeout(Duration::from_secs(10), replies.message())
        .await
        .expect("the gateway ended the stream");
    assert_eq!(
        end.expect_err("ended by the deadline").code(),
        tonic::Code::DeadlineExceeded
    );
    drop(sender);
    gateway.stop().await;
}

/// A config caching `Get` on one backend with `retry`.
fn retry_config(backend: &TestBackend, retry: &str) -> String {
    format!(
        r#"
listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
backends:
  pool:
    endpoints: ["{}"]
    retry: {{ {retry} }}
routes:
  - match: /testing.v1.Lookup/Get
    backend: pool
    cache: {{ ttl: 30s }}
  - match: "*"
    backend: pool
"#,
        backend.url()
    )
}

#[tokio::test]
async fn a_failed_first_attempt_succeeds_on_the_retry() {
    let backend = TestBackend::start().await;
    let gateway = TestGateway::start(&retry_config(&backend, "attempts: 3, backoff: 10ms")).await;
    let mut client = gateway.client().await;
    let mut req = key("flaky");
    req.fail_first = 1;
    let answer = get(&mut client, req, None)
        .await
        .expect("the retry succeeded");
    assert_eq!(answer.cache, "miss");
    assert_eq!(backend.get_calls(), 2, "one failed attempt, one retry");
    gateway.stop().await;
}

#[tokio::test]
async fn with_the_backend_down_for_good_retries_stay_within_the_budget() {
    let backend = TestBackend::start().await;
    let retry = "attempts: 3, backoff: 1ms, budget_percent: 20, min_retries_per_second: 2";
    let gateway = TestGateway::start(&retry_config(&backend, retry)).await;
    let mut client = gateway.client().await;
    let started = Instant::now();
    for i in 0..100 {
        let mut req = key(&format!("down{i}"));
        req.fail_code = tonic::Code::Unavailable as i32;
        let status = get(&mut client, req, None).await.expect_err("down");
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }
    let seconds = started.elapsed().as_secs() + 1;
    let attempts = backend.get_calls();
    // 100 calls; retries at most 20 % of the calls of each second, or 2 per second.
    let most = 100 + (20 + 2 * seconds);
    assert!(attempts > 100, "some retries were made: {attempts}");
    assert!(
        attempts <= most,
        "{attempts} backend attempts for 100 calls (at most {most})"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_tenant_over_its_rate_is_refused_about_half_the_time_and_others_are_not() {
    let backend = TestBackend::start().await;
    let limit = "    rate_limit: { rps: 20, burst: 1, key: x-tenant-id }";
    let gateway = TestGateway::start(&proxy_config(&[&backend], "", "").replace(
        "    backend: pool\n",
        &format!("    backend: pool\n{limit}\n"),
    ))
    .await;
    let client = gateway.client().await;
    let tenant_calls = |tenant: &'static str, every: Duration, n: usize| {
        let mut client = client.clone();
        tokio::spawn(async move {
            let mut refused = 0;
            let mut ticks = tokio::time::interval(every);
            for i in 0..n {
                ticks.tick().await;
                match get(&mut client, key(&format!("{tenant}{i}")), Some(tenant)).await {
                    Ok(_) => {}
                    Err(status) => {
                        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
                        assert!(
                            status.message().contains("rate limit"),
                            "{}",
                            status.message()
                        );
                        refused += 1;
                    }
                }
            }
            refused
        })
    };
    // Tenant a at twice its rate (40/s for 1 s), tenant b well under it, at the same time.
    let (a, b) = (
        tenant_calls("a", Duration::from_millis(25), 40),
        tenant_calls("b", Duration::from_millis(100), 10),
    );
    let (a, b) = (a.await.expect("task"), b.await.expect("task"));
    assert!(
        (12..=28).contains(&a),
        "about half of tenant a's 40 calls refused, got {a}"
    );
    assert_eq!(b, 0, "tenant b is unaffected");
    gateway.stop().await;
}

#[tokio::test]
async fn a_limit_on_misses_leaves_cache_hits_free() {
    let backend = TestBackend::start().await;
    let yaml = retry_config(&backend, "attempts: 1").replace(
        "    cache: { ttl: 30s }",
        "    cache: { ttl: 30s }\n    rate_limit: { rps: 1, burst: 1, apply_to: misses }",
    );
    let gateway = TestGateway::start(&yaml).await;
    let mut client = gateway.client().await;
    for _ in 0..5 {
        get(&mut client, key("hot"), None)
            .await
            .expect("hits are not limited");
    }
    let other = get(&mut client, key("cold"), None)
        .await
        .expect_err("a second miss within the second");
    assert_eq!(other.code(), tonic::Code::ResourceExhausted);
    assert_eq!(backend.get_calls(), 1);
    gateway.stop().await;
}

#[tokio::test]
async fn a_dns_backend_resolves_and_serves() {
    let first = TestBackend::start().await;
    let port = first.addr.port();
    // Wherever `localhost` resolves on this machine (127.0.0.1, and ::1 on many), a backend answers on that port.
    let mut backends = vec![first];
    let resolved: Vec<_> = tokio::net::lookup_host(("localhost", port))
        .await
        .expect("resolve")
        .collect();
    for addr in resolved {
        if addr.ip().is_ipv6() && !backends.iter().any(|b| b.addr == addr) {
            backends.push(TestBackend::start_on(addr).await);
        }
    }
    let yaml = format!(
        r#"
listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
backends:
  pool:
    endpoints: ["dns:///localhost:{port}"]
    resolve_interval: 100ms
routes:
  - match: "*"
    backend: pool
"#
    );
    let gateway = TestGateway::start(&yaml).await;
    // The first resolution runs at once in the background.
    let mut client = gateway.client().await;
    let served = crate::support::eventually(Duration::from_secs(5), || {
        let mut client = client.clone();
        async move { get(&mut client, key("dns"), None).await.is_ok() }
    })
    .await;
    assert!(served, "the dns:/// backend serves");
    assert_eq!(load(&gateway, 30, 3).await, 0);
    let calls: u64 = backends.iter().map(TestBackend::get_calls).sum();
    assert!(calls >= 31, "{calls}");
    get(&mut client, key("again"), None)
        .await
        .expect("still serving after re-resolution");
    gateway.stop().await;
}

#[tokio::test]
async fn a_passthrough_route_is_retried_only_when_it_asks_for_it() {
    let backend = TestBackend::start().await;
    let plain = TestGateway::start(&proxy_config(&[&backend], "", "")).await;
    let mut client = plain.client().await;
    let mut flaky = key("flaky-plain");
    flaky.fail_first = 1;
    let status = get(&mut client, flaky, None)
        .await
        .expect_err("not retried");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    plain.stop().await;

    let retried = proxy_config(&[&backend], "", "").replace(
        "    backend: pool\n",
        "    backend: pool\n    retry: { attempts: 3, backoff: 5ms }\n",
    );
    let gateway = TestGateway::start(&retried).await;
    let mut client = gateway.client().await;
    let mut flaky = key("flaky-retried");
    flaky.fail_first = 2;
    let answer = get(&mut client, flaky, None)
        .await
        .expect("the third attempt succeeds");
    assert_eq!(answer.reply.key, "flaky-retried");
    // The passthrough's retries are counted like the cached routes'.
    let metrics = crate::health::http_get(gateway.admin, "/metrics").await;
    assert_eq!(
        crate::metrics::sample(&metrics, "strata_retries_total", ""),
        Some(2.0),
        "{metrics}"
    );
    // A streaming answer still streams through a retried route.
    let mut stream = client.watch(key("w")).await.expect("watch").into_inner();
    let mut n = 0;
    while stream.message().await.expect("ok").is_some() {
        n += 1;
    }
    assert_eq!(n, 3);
    gateway.stop().await;
}

#[tokio::test]
async fn a_full_backend_answers_stale_where_the_route_allows() {
    let backend = TestBackend::start().await;
    let yaml = crate::support::gateway::config_with_route(
        &backend.url(),
        "ttl: 1s, stale_if_error: 30s",
        "",
        "",
    )
    .replace(
        ", timeout: 5s }",
        ", timeout: 5s, max_concurrent_requests: 1 }",
    );
    let gateway = TestGateway::start(&yaml).await;
    let mut client = gateway.client().await;
    let first = get(&mut client, key("k"), None).await.expect("miss");
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // One slow call takes the backend's only slot...
    let mut slow = key("slow");
    slow.delay_ms = 3000;
    let occupying = {
        let mut client = client.clone();
        tokio::spawn(async move { get(&mut client, slow, None).await })
    };
    let occupied = crate::support::eventually(Duration::from_secs(2), || async {
        backend.get_calls() == 2
    })
    .await;
    assert!(occupied, "the slow call reached the backend");
    // ...so refreshing `k` is refused at once, and its stale answer stands in.
    let stale = get(&mut client, key("k"), None)
        .await
        .expect("stale instead of UNAVAILABLE");
    assert_eq!(stale.cache, "stale");
    assert_eq!(stale.reply, first.reply);
    assert!(
        !occupying.is_finished(),
        "answered while the slot was still taken, not after it"
    );
    occupying
        .await
        .expect("task")
        .expect("the slow call completes");
    gateway.stop().await;
}
