//! L1, L2 and the key: what is a hit, what is a different entry.

use prost::Message;

use crate::support::RedisServer;
use crate::support::backend::TestBackend;
use crate::support::gateway::{
    TestGateway, config, config_for, config_with_route, l2_block, start,
};
use crate::{get, key, metadata};

#[tokio::test]
async fn miss_then_l1_then_l2_after_a_restart() {
    let redis = RedisServer::start();
    let backend = TestBackend::start().await;
    let yaml = config(&backend.url(), &l2_block(&redis.url(), false), "");

    let gateway = TestGateway::start(&yaml).await;
    let mut client = gateway.client().await;
    let first = get(&mut client, key("a"), None).await.expect("first call");
    assert_eq!(first.cache, "miss");
    assert_eq!(backend.get_calls(), 1);
    assert_eq!(metadata(&first.headers, "x-backend-header"), "from-backend");
    assert_eq!(
        first
            .headers
            .get_bin("x-backend-bin")
            .map(|v| v.to_bytes().expect("base64").to_vec()),
        Some(vec![0, 1, 255])
    );

    let second = get(&mut client, key("a"), None).await.expect("second call");
    assert_eq!(second.cache, "l1");
    assert_eq!(
        backend.get_calls(),
        1,
        "an L1 hit does not reach the backend"
    );
    assert_eq!(second.reply.encode_to_vec(), first.reply.encode_to_vec());
    assert_eq!(
        second.headers.get("x-backend-header"),
        first.headers.get("x-backend-header")
    );
    assert_eq!(
        second.headers.get_bin("x-backend-bin"),
        first.headers.get_bin("x-backend-bin")
    );
    gateway.stop().await;

    let restarted = TestGateway::start(&yaml).await;
    let mut client = restarted.client().await;
    let third = get(&mut client, key("a"), None)
        .await
        .expect("after restart");
    assert_eq!(third.cache, "l2");
    assert_eq!(
        backend.get_calls(),
        1,
        "an L2 hit does not reach the backend"
    );
    assert_eq!(third.reply.encode_to_vec(), first.reply.encode_to_vec());
    assert_eq!(
        third.headers.get_bin("x-backend-bin"),
        first.headers.get_bin("x-backend-bin")
    );
    let fourth = get(&mut client, key("a"), None).await.expect("filled L1");
    assert_eq!(fourth.cache, "l1", "an L2 hit fills L1");
    restarted.stop().await;
}

#[tokio::test]
async fn request_bytes_and_vary_values_make_different_entries() {
    let (backend, gateway) = start(&config_for).await;
    let mut client = gateway.client().await;

    let t1 = get(&mut client, key("a"), Some("t1")).await.expect("t1");
    let t2 = get(&mut client, key("a"), Some("t2")).await.expect("t2");
    let none = get(&mut client, key("a"), None).await.expect("no tenant");
    let other = get(&mut client, key("b"), Some("t1"))
        .await
        .expect("other key");
    for answer in [&t1, &t2, &none, &other] {
        assert_eq!(answer.cache, "miss");
    }
    assert_eq!(backend.get_calls(), 4);
    assert_eq!(
        (t1.reply.tenant.as_str(), t2.reply.tenant.as_str()),
        ("t1", "t2")
    );

    let again = get(&mut client, key("a"), Some("t2"))
        .await
        .expect("t2 again");
    assert_eq!(again.cache, "l1");
    assert_eq!(again.reply.tenant, "t2", "each tenant gets its own answer");
    assert_eq!(again.reply.serial, t2.reply.serial);
    assert_eq!(backend.get_calls(), 4);
    gateway.stop().await;
}

#[tokio::test]
async fn backend_errors_are_relayed_and_never_cached() {
    let (backend, gateway) = start(&config_for).await;
    let mut client = gateway.client().await;

    for (code, calls) in [(tonic::Code::Unavailable, 2), (tonic::Code::Internal, 4)] {
        let mut req = key("err");
        req.fail_code = code as i32;
        for _ in 0..2 {
            let status = get(&mut client, req.clone(), None)
                .await
                .expect_err("an error status");
            assert_eq!(status.code(), code);
            assert_eq!(
                status.message(),
                format!("backend failed on purpose with code {}", code as i32)
            );
            assert_eq!(
                metadata(status.metadata(), "x-failure-detail"),
                "on-purpose"
            );
        }
        assert_eq!(
            backend.get_calls(),
            calls,
            "every failing call reached the backend"
        );
    }
    gateway.stop().await;
}

#[tokio::test]
async fn answers_are_exact_for_large_messages() {
    let (_backend, gateway) =
        start(&|url| config_with_route(url, "ttl: 30s, max_entry_bytes: 8MiB", "", "")).await;
    let mut client = gateway.client().await;
    let mut req = key("big");
    req.reply_bytes = 3 << 20;
    req.padding = vec![9u8; 100_000];
    let first = get(&mut client, req.clone(), None).await.expect("miss");
    let second = get(&mut client, req, None).await.expect("hit");
    assert_eq!(
        (first.cache.as_str(), second.cache.as_str()),
        ("miss", "l1")
    );
    assert_eq!(second.reply.payload.len(), 3 << 20);
    assert_eq!(first.reply, second.reply);
    gateway.stop().await;
}

#[tokio::test]
async fn answers_over_max_entry_bytes_are_relayed_not_stored() {
    let (backend, gateway) =
        start(&|url| config_with_route(url, "ttl: 30s, max_entry_bytes: 64KiB", "", "")).await;
    let mut client = gateway.client().await;
    let mut req = key("big");
    req.reply_bytes = 100_000;
    for _ in 0..2 {
        let answer = get(&mut client, req.clone(), None).await.expect("relayed");
        assert_eq!(answer.cache, "miss");
        assert_eq!(answer.reply.payload.len(), 100_000);
    }
    assert_eq!(backend.get_calls(), 2);
    gateway.stop().await;
}
