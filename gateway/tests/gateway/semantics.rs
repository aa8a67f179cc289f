//! Cache semantics through the gateway: negative caching, stale serving, the backend's cache-control, credentials
//! and private metadata.

use std::time::{Duration, Instant};

use crate::support::gateway::{config_with_route, start};
use crate::support::pb::GetRequest;
use crate::{get, key, metadata};

fn not_found(name: &str) -> GetRequest {
    let mut req = key(name);
    req.fail_code = tonic::Code::NotFound as i32;
    req
}

#[tokio::test]
async fn not_found_is_cached_for_negative_ttl_then_fetched_again() {
    let (backend, gateway) =
        start(&|url| config_with_route(url, "ttl: 30s, negative_ttl: 1s", "", "")).await;
    let mut client = gateway.client().await;

    let first = get(&mut client, not_found("gone"), None)
        .await
        .expect_err("NOT_FOUND");
    let second = get(&mut client, not_found("gone"), None)
        .await
        .expect_err("NOT_FOUND again");
    for status in [&first, &second] {
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), "backend failed on purpose with code 5");
        assert_eq!(
            metadata(status.metadata(), "x-failure-detail"),
            "on-purpose"
        );
    }
    assert_eq!(metadata(first.metadata(), "x-strata-cache"), "miss");
    assert_eq!(metadata(second.metadata(), "x-strata-cache"), "l1");
    assert_eq!(backend.get_calls(), 1, "the negative answer was replayed");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    get(&mut client, not_found("gone"), None)
        .await
        .expect_err("NOT_FOUND");
    assert_eq!(backend.get_calls(), 2, "re-fetched after negative_ttl");
    gateway.stop().await;
}

#[tokio::test]
async fn stale_while_revalidate_answers_everyone_at_once_with_one_refresh() {
    let (backend, gateway) =
        start(&|url| config_with_route(url, "ttl: 1s, stale_while_revalidate: 30s", "", "")).await;
    let mut client = gateway.client().await;
    // Every fetch of this request takes 2 s: the calls below are answered before the refresh could have been.
    let mut req = key("swr");
    req.delay_ms = 2000;
    let first = get(&mut client, req.clone(), None).await.expect("miss");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let (mut client, req) = (client.clone(), req.clone());
            tokio::spawn(async move { get(&mut client, req, None).await })
        })
        .collect();
    for call in calls {
        let answer = call.await.expect("task").expect("answered");
        assert_eq!(answer.cache, "stale");
        assert_eq!(answer.reply.serial, first.reply.serial, "the stale answer");
    }
    // Nobody waited for the refresh: each got the stale answer (a caller that waited would have the new serial).
    let refreshed = crate::support::eventually(Duration::from_secs(10), || {
        let (mut client, req) = (client.clone(), req.clone());
        async move {
            get(&mut client, req, None)
                .await
                .is_ok_and(|a| a.cache == "l1")
        }
    })
    .await;
    assert!(refreshed, "the background refresh landed");
    assert_eq!(backend.get_calls(), 2, "exactly one background refresh");
    let fresh = get(&mut client, req, None).await.expect("refreshed");
    assert_eq!(fresh.cache, "l1");
    assert_eq!(fresh.reply.serial, 2, "the refreshed answer");
    gateway.stop().await;
}

#[tokio::test]
async fn stale_if_error_covers_a_dead_backend_within_its_window() {
    let (backend, gateway) =
        start(&|url| config_with_route(url, "ttl: 1s, stale_if_error: 2s", "", "")).await;
    let mut client = gateway.client().await;
    let first = get(&mut client, key("k"), None).await.expect("miss");
    backend.stop().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let stale = get(&mut client, key("k"), None)
        .await
        .expect("stale instead of UNAVAILABLE");
    assert_eq!(stale.cache, "stale");
    assert_eq!(stale.reply, first.reply);

    let started = Instant::now();
    let never = get(&mut client, key("never-cached"), None)
        .await
        .expect_err("nothing to stand in");
    assert_eq!(never.code(), tonic::Code::Unavailable);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "fails fast: {:?}",
        started.elapsed()
    );

    tokio::time::sleep(Duration::from_millis(2000)).await;
    let after = get(&mut client, key("k"), None)
        .await
        .expect_err("past the window");
    assert_eq!(after.code(), tonic::Code::Unavailable);
    gateway.stop().await;
}

#[tokio::test]
async fn the_backends_cache_control_overrides_the_route() {
    let (backend, gateway) = start(&|url| config_with_route(url, "ttl: 30s", "", "")).await;
    let mut client = gateway.client().await;

    let mut no_store = key("no-store");
    no_store.cache_control = "no-store".into();
    for _ in 0..2 {
        assert_eq!(
            get(&mut client, no_store.clone(), None)
                .await
                .expect("ok")
                .cache,
            "miss"
        );
    }
    assert_eq!(backend.get_calls(), 2, "no-store answers are never cached");

    let mut short = key("short");
    short.cache_control = "max-age=1".into();
    assert_eq!(
        get(&mut client, short.clone(), None)
            .await
            .expect("ok")
            .cache,
        "miss"
    );
    assert_eq!(
        get(&mut client, short.clone(), None)
            .await
            .expect("ok")
            .cache,
        "l1"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        get(&mut client, short, None).await.expect("ok").cache,
        "miss",
        "fresh for 1 s, not the route's 30 s"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn credentials_bypass_the_cache_unless_the_key_varies_on_them() {
    let with_auth = |token: &str| {
        let mut request = tonic::Request::new(key("me"));
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
        request
    };

    let (backend, gateway) = start(&|url| config_with_route(url, "ttl: 30s", "", "")).await;
    let mut client = gateway.client().await;
    for token in ["alice", "alice", "bob"] {
        let response = client.get(with_auth(token)).await.expect("ok");
        assert_eq!(metadata(response.metadata(), "x-strata-cache"), "bypass");
    }
    assert_eq!(
        backend.get_calls(),
        3,
        "a call with credentials always reaches the backend"
    );
    gateway.stop().await;

    let (backend, gateway) =
        start(&|url| config_with_route(url, "ttl: 30s, vary: [authorization]", "", "")).await;
    let mut client = gateway.client().await;
    let sources: Vec<_> = {
        let mut v = Vec::new();
        for token in ["alice", "alice", "bob"] {
            let response = client.get(with_auth(token)).await.expect("ok");
            v.push(
                response
                    .metadata()
                    .get("x-strata-cache")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned(),
            );
        }
        v
    };
    assert_eq!(sources, ["miss", "l1", "miss"], "cached per credential");
    assert_eq!(backend.get_calls(), 2);
    gateway.stop().await;
}

#[tokio::test]
async fn an_answer_setting_a_cookie_reaches_only_the_caller_that_fetched_it() {
    let (backend, gateway) = start(&|url| config_with_route(url, "ttl: 30s", "", "")).await;
    let mut client = gateway.client().await;
    let mut req = key("cookie");
    req.set_cookie = true;
    let first = get(&mut client, req.clone(), None).await.expect("miss");
    assert_eq!(first.cache, "miss");
    assert_eq!(metadata(&first.headers, "set-cookie"), "session=1");
    // An answer that sets a cookie is personal: never stored, so the next caller gets an answer of its own.
    let second = get(&mut client, req, None).await.expect("miss");
    assert_eq!(second.cache, "miss");
    assert_eq!(metadata(&second.headers, "set-cookie"), "session=2");
    assert_eq!(backend.get_calls(), 2);
    gateway.stop().await;
}
