//! What a shared fetch shares: an answer that may be stored, a backend failure, a stale entry — and nothing that
//! belongs to one caller (an answer that may not be stored, its deadline, its rate limit). Every call is counted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::metrics::sample;
use crate::support::backend::{DENIED_TENANT, TestBackend};
use crate::support::gateway::{TestGateway, config_with_route, start};
use crate::support::{eventually, raw};
use crate::{get, key};

#[tokio::test]
async fn an_answer_that_may_not_be_stored_reaches_only_the_caller_it_was_fetched_for() {
    // No `vary`: the six tenants share one key, and the backend personalises the answer (`private`).
    let (backend, gateway) = start(&|url| config_with_route(url, "ttl: 30s", "", "")).await;
    let mut req = key("me");
    req.delay_ms = 200;
    req.cache_control = "private".into();
    let mut clients = Vec::new();
    for _ in 1..=6 {
        clients.push(gateway.client().await);
    }
    let calls: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            let req = req.clone();
            tokio::spawn(async move {
                let tenant = format!("tenant-{}", i + 1);
                let answer = get(&mut client, req, Some(&tenant)).await;
                (tenant, answer)
            })
        })
        .collect();
    for call in calls {
        let (tenant, answer) = call.await.expect("task");
        let answer = answer.expect("every caller is answered");
        assert_eq!(
            answer.reply.tenant, tenant,
            "each caller got its own answer"
        );
        assert_eq!(answer.cache, "miss");
    }
    assert_eq!(backend.get_calls(), 6);
    gateway.stop().await;
}

#[tokio::test]
async fn a_relayed_auth_failure_is_its_callers_alone_on_a_shared_route() {
    // `shared: true`: calls with credentials share answers. The backend refuses one tenant; its refusal must not
    // reach the callers that joined its fetch.
    let (backend, gateway) =
        start(&|url| config_with_route(url, "ttl: 30s, shared: true", "", "")).await;
    let mut req = key("doc");
    req.delay_ms = 300;
    let call = |tenant: &'static str,
                client: crate::support::pb::lookup_client::LookupClient<_>| {
        let req = req.clone();
        tokio::spawn(async move {
            let mut client = client;
            let mut request = tonic::Request::new(req);
            request
                .metadata_mut()
                .insert("x-tenant-id", tenant.parse().expect("ascii"));
            request
                .metadata_mut()
                .insert("authorization", "Bearer t".parse().expect("ascii"));
            client.get(request).await
        })
    };
    let intruder = call(DENIED_TENANT, gateway.client().await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut others = Vec::new();
    for _ in 0..5 {
        others.push(call("reader", gateway.client().await));
    }
    let refused = intruder.await.expect("task").expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    for other in others {
        let answer = other.await.expect("task").expect("the others are answered");
        assert_eq!(answer.into_inner().tenant, "reader");
    }
    assert!(
        backend.get_calls() >= 2,
        "the others fetched for themselves"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn one_callers_deadline_is_its_own_and_its_fetch_fills_the_cache() {
    let (backend, gateway) = start(&|url| config_with_route(url, "ttl: 30s", "", "")).await;
    let mut req = key("shared");
    req.delay_ms = 500;
    let impatient = {
        let addr = gateway.addr;
        let body = raw::framed(&req);
        tokio::spawn(async move {
            raw::call(
                addr,
                "/testing.v1.Lookup/Get",
                &[("grpc-timeout", "150m")],
                body,
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut client = gateway.client().await;
    let mut patient = tonic::Request::new(req.clone());
    patient.set_timeout(Duration::from_secs(5));
    let started = Instant::now();
    let answer = client
        .get(patient)
        .await
        .expect("the patient caller is answered");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(answer.into_inner().key, "shared");

    let impatient = impatient.await.expect("task");
    assert_eq!(
        impatient.grpc_status,
        (tonic::Code::DeadlineExceeded as i32).to_string(),
        "{impatient:?}"
    );
    assert!(
        backend.get_calls() <= 2,
        "{} backend calls",
        backend.get_calls()
    );
    let next = get(&mut client, req, None).await.expect("cached");
    assert_eq!(next.cache, "l1");
    gateway.stop().await;
}

#[tokio::test]
async fn forty_callers_of_a_slow_key_wait_for_one_fetch_past_flight_wait() {
    let backend = TestBackend::start().await;
    // The backend takes 6 s of its 10 s timeout; flight_wait (5 s by default) only guards against a stuck fetch.
    let yaml = config_with_route(&backend.url(), "ttl: 30s", "", "")
        .replace("timeout: 5s", "timeout: 10s");
    let gateway = TestGateway::start(&yaml).await;
    let mut req = key("slow");
    req.delay_ms = 6000;
    let client = gateway.client().await;
    let calls: Vec<_> = (0..40)
        .map(|_| {
            let (mut client, req) = (client.clone(), req.clone());
            tokio::spawn(async move {
                let mut request = tonic::Request::new(req);
                request.set_timeout(Duration::from_secs(9));
                client.get(request).await
            })
        })
        .collect();
    for call in calls {
        let reply = call.await.expect("task").expect("every caller is answered");
        assert_eq!(reply.into_inner().serial, 1);
    }
    assert_eq!(backend.get_calls(), 1);
    gateway.stop().await;
}

#[tokio::test]
async fn a_deleted_item_is_not_served_stale_after_the_refresh_says_so() {
    let (backend, gateway) =
        start(&|url| config_with_route(url, "ttl: 1s, stale_while_revalidate: 60s", "", "")).await;
    let mut client = gateway.client().await;
    let item = key("item");
    assert_eq!(
        get(&mut client, item.clone(), None)
            .await
            .expect("ok")
            .cache,
        "miss"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    backend.forget("item");
    // Served stale at once; the refresh learns the item is gone (NOT_FOUND, not cached by default).
    assert_eq!(
        get(&mut client, item.clone(), None)
            .await
            .expect("stale")
            .cache,
        "stale"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            backend.get_calls() == 2
        })
        .await,
        "the refresh ran"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = get(&mut client, item, None)
        .await
        .expect_err("the new truth, at the first call after the refresh");
    assert_eq!(after.code(), tonic::Code::NotFound);
    gateway.stop().await;
}

#[tokio::test]
async fn every_call_that_reaches_the_backend_counts_against_a_limit_on_misses() {
    let (backend, gateway) = start(&|url| {
        config_with_route(url, "ttl: 30s", "", "").replace(
            "    cache: { ttl: 30s }",
            "    cache: { ttl: 30s }\n    rate_limit: { rps: 1, burst: 2, apply_to: misses }",
        )
    })
    .await;
    let mut client = gateway.client().await;
    // Two bypassed calls (credentials the key does not vary on) take the burst; then a third, a call with another
    // content type and a miss are refused. (A compressed request takes the bypass path these calls take.)
    let with_credentials = |name: &str| {
        let mut request = tonic::Request::new(key(name));
        request
            .metadata_mut()
            .insert("authorization", "Bearer x".parse().expect("ascii"));
        request
    };
    for name in ["b1", "b2"] {
        let answer = client
            .get(with_credentials(name))
            .await
            .expect("within the burst");
        assert_eq!(
            crate::metadata(answer.metadata(), "x-strata-cache"),
            "bypass"
        );
    }
    let refused = client
        .get(with_credentials("b3"))
        .await
        .expect_err("over the limit");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    let not_grpc = raw::call(
        gateway.addr,
        "/testing.v1.Lookup/Get",
        &[("content-type", "application/octet-stream")],
        raw::framed(&key("c")),
    )
    .await;
    assert_eq!(
        not_grpc.grpc_status,
        (tonic::Code::ResourceExhausted as i32).to_string(),
        "{not_grpc:?}"
    );
    let miss = get(&mut client, key("m"), None)
        .await
        .expect_err("over the limit");
    assert_eq!(miss.code(), tonic::Code::ResourceExhausted);
    assert_eq!(backend.get_calls(), 2);
    gateway.stop().await;
}

/// The `strata_calls_total` samples of the cached route, by code, summed over cache results.
fn calls_by_code(text: &str) -> BTreeMap<String, f64> {
    let mut by_code = BTreeMap::new();
    for line in text.lines().filter(|l| {
        l.starts_with("strata_calls_total{") && l.contains("route=\"/testing.v1.Lookup/Get\"")
    }) {
        let code = line
            .split("code=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_owned();
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *by_code.entry(code).or_default() += value;
    }
    by_code.retain(|_, v| *v > 0.0);
    by_code
}

#[tokio::test]
async fn every_call_is_counted_once_whatever_ended_it() {
    let (_backend, gateway) =
        start(&|url| config_with_route(url, "ttl: 30s", "", "max_concurrent_requests: 3\n")).await;
    let client = gateway.client().await;
    let mut sent: BTreeMap<String, f64> = BTreeMap::new();

    // 30 concurrent calls against a limit of 3: most are shed.
    let calls: Vec<_> = (0..30)
        .map(|i| {
            let mut client = client.clone();
            let mut req = key(&format!("k{i}"));
            req.delay_ms = 300;
            tokio::spawn(async move { client.get(req).await })
        })
        .collect();
    for call in calls {
        let code = match call.await.expect("task") {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        *sent
            .entry(strata_gateway::grpc::code::name(code).to_owned())
            .or_default() += 1.0;
    }
    assert!(
        sent.get("RESOURCE_EXHAUSTED").is_some_and(|n| *n > 0.0),
        "{sent:?}"
    );

    // Ended by its deadline, while waiting for the backend.
    let mut slow = key("slow");
    slow.delay_ms = 1000;
    let late = raw::call(
        gateway.addr,
        "/testing.v1.Lookup/Get",
        &[("grpc-timeout", "100m")],
        raw::framed(&slow),
    )
    .await;
    assert_eq!(
        late.grpc_status,
        (tonic::Code::DeadlineExceeded as i32).to_string()
    );
    *sent.entry("DEADLINE_EXCEEDED".into()).or_default() += 1.0;

    // Cancelled by its client before the answer.
    let mut cancelled = key("cancelled");
    cancelled.delay_ms = 1000;
    let call = {
        let mut client = client.clone();
        tokio::spawn(async move { client.get(cancelled).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    call.abort();
    *sent.entry("CANCELLED".into()).or_default() += 1.0;

    let counted = eventually(Duration::from_secs(5), || async {
        let text = crate::health::http_get(gateway.admin, "/metrics").await;
        calls_by_code(&text) == sent
    })
    .await;
    let text = crate::health::http_get(gateway.admin, "/metrics").await;
    assert!(
        counted,
        "sent {sent:?}, counted {:?}; shed {:?}",
        calls_by_code(&text),
        sample(&text, "strata_shed_total", "")
    );
    gateway.stop().await;
}
