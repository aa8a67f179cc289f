//! A backend killed under load and brought back: cached keys are still answered, the others fail fast with
//! UNAVAILABLE — never a hang — and once it is back, misses are served again without restarting the gateway.

use std::time::{Duration, Instant};

use crate::support::backend::TestBackend;
use crate::support::eventually;
use crate::support::gateway::{TestGateway, config_with_route};
use crate::{get, key};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_leaves_cached_keys_answered_and_the_rest_failing_fast_until_it_returns() {
    let backend = TestBackend::start().await;
    let gateway = TestGateway::start(&config_with_route(&backend.url(), "ttl: 30s", "", "")).await;
    let mut client = gateway.client().await;
    for i in 0..10 {
        get(&mut client, key(&format!("cached-{i}")), None)
            .await
            .expect("warm");
    }

    let hold = backend.stop().await;
    // Under load for a second: 4 workers, cached and uncached keys alternating.
    let until = Instant::now() + Duration::from_secs(1);
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut n = 0;
                while Instant::now() < until {
                    let (name, cached) = if n % 2 == 0 {
                        (format!("cached-{}", (w + n) % 10), true)
                    } else {
                        (format!("new-{w}-{n}"), false)
                    };
                    let started = Instant::now();
                    let result = get(&mut client, key(&name), None).await;
                    seen.push((
                        cached,
                        result.map(|a| a.cache).map_err(|s| s.code()),
                        started.elapsed(),
                    ));
                    n += 1;
                }
                seen
            })
        })
        .collect();
    let mut calls = 0;
    for worker in workers {
        for (cached, result, took) in worker.await.expect("worker") {
            calls += 1;
            match (cached, result) {
                (true, Ok(level)) => assert_eq!(level, "l1"),
                (false, Err(code)) => assert_eq!(code, tonic::Code::Unavailable),
                (cached, other) => panic!("cached {cached}: {other:?}"),
            }
            // Failing fast, not at the backend's 5 s timeout.
            assert!(
                took < Duration::from_secs(2),
                "a call took {took:?} with the backend down"
            );
        }
    }
    eprintln!(
        "backend killed: {calls} calls, cached answered, new ones UNAVAILABLE, none over 500 ms"
    );
    assert!(calls > 20, "the load ran: {calls} calls");

    let _back = TestBackend::restart(hold).await;
    assert!(
        eventually(Duration::from_secs(10), || {
            let mut client = client.clone();
            async move {
                get(&mut client, key("after"), None)
                    .await
                    .is_ok_and(|a| a.cache == "miss")
            }
        })
        .await,
        "misses are served again once the backend is back, without a gateway restart"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_endpoint_ends_calls_at_their_deadline_leaves_the_rotation_and_health_stays_serving()
 {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let (good, doomed) = (TestBackend::start().await, TestBackend::start().await);
    let hole = crate::support::blackhole::Blackhole::start(doomed.addr).await;
    // Active health checks take a silent endpoint out (passive outlier detection counts errors, not timeouts).
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nbackends:\n  pool:\n    endpoints: [\"{}\", \"http://{}\"]\n    \
         timeout: 300ms\n    health_check: {{ interval: 100ms, timeout: 100ms, unhealthy_threshold: 2 }}\n\
         routes:\n  - match: \"*\"\n    backend: pool\n    cache: {{ ttl: 30s }}\n",
        good.url(),
        hole.addr
    );
    let gateway = TestGateway::start(&yaml).await;
    let mut client = gateway.client().await;
    for i in 0..10 {
        get(&mut client, key(&format!("before-{i}")), None)
            .await
            .expect("both endpoints answer");
    }
    assert!(
        doomed.get_calls() > 0,
        "the endpoint behind the relay was in rotation"
    );

    hole.swallow();
    // Calls that land on the blackhole end at the backend timeout (300 ms): not sooner, and never hang. Round robin
    // sends one of the first two there, before the health checks notice.
    let mut failed = Vec::new();
    for i in 0..10 {
        let started = Instant::now();
        let result = get(&mut client, key(&format!("during-{i}")), None).await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "a call hung for {took:?}");
        if let Err(status) = result {
            failed.push((status.code(), took));
        }
    }
    eprintln!("endpoint blackholed: calls that reached it (code, time): {failed:?}");
    assert!(!failed.is_empty(), "a call reached the blackhole");
    for (code, took) in &failed {
        assert!(
            matches!(
                code,
                tonic::Code::DeadlineExceeded | tonic::Code::Unavailable
            ),
            "{code:?}"
        );
        assert!(
            *took >= Duration::from_millis(250),
            "ended at the deadline, not before: {took:?}"
        );
    }
    // After two failed checks (≈300 ms) the endpoint leaves the rotation: every call succeeds on the other one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..20 {
        get(&mut client, key(&format!("after-{i}")), None)
            .await
            .expect("the blackholed endpoint is out of rotation");
    }
    let health = HealthClient::new(gateway.channel().await)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("the gateway's own health answers")
        .into_inner();
    assert_eq!(
        health.status, 1,
        "the gateway stays SERVING (1): {health:?}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_down_backend_is_named_by_its_name_and_its_address_goes_only_to_the_log() {
    // A port bound but never listened on: connections are refused, and no other test can take the port meanwhile.
    let held = tokio::net::TcpSocket::new_v4().expect("socket");
    held.bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let closed = held.local_addr().expect("a port");
    let gateway = TestGateway::start(&config_with_route(
        &format!("http://{closed}"),
        "ttl: 30s",
        "",
        "",
    ))
    .await;
    let mut client = gateway.client().await;
    for path in ["cached", "passthrough"] {
        let status = if path == "cached" {
            get(&mut client, key("down"), None).await.expect_err("down")
        } else {
            let requests = futures::stream::iter(vec![key("down")]);
            client
                .collect(requests)
                .await
                .map(|_| ())
                .expect_err("down")
        };
        assert_eq!(
            status.code(),
            tonic::Code::Unavailable,
            "{path}: {status:?}"
        );
        assert!(
            status.message().contains("backend lookup unavailable"),
            "{path}: names the backend: {status:?}"
        );
        assert!(
            !status.message().contains("127.0.0.1")
                && !status.message().contains(&closed.port().to_string()),
            "{path}: no internal address reaches the client: {status:?}"
        );
    }
    gateway.stop().await;
    drop(held);
}

#[tokio::test]
async fn the_real_binary_logs_a_failed_backend_call_with_its_method_and_address() {
    // Log lines carry no span context: the warning must say itself which call failed, and where it went.
    let held = crate::support::backend::PortHold::any();
    let closed = std::net::SocketAddr::from(([127, 0, 0, 1], held.port()));
    let yaml = config_with_route(&format!("http://{closed}"), "ttl: 30s", "", "");
    let gateway = crate::support::process::GatewayProcess::start(&yaml).await;
    let mut client = gateway.client().await;
    let status = get(&mut client, key("down"), None).await.expect_err("down");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let line = gateway
        .log_line("call to the backend failed", Duration::from_secs(5))
        .await;
    for part in [
        "backend=lookup",
        &format!("endpoint=http://{closed}"),
        "method=/testing.v1.Lookup/Get",
    ] {
        assert!(line.contains(part), "`{part}` missing from: {line}");
    }
    drop(held);
}
