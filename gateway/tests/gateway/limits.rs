//! Bad input gets a clear status, and the gateway keeps serving everyone else.

use crate::support::backend::TestBackend;
use crate::support::gateway::{TestGateway, config, config_for, start};
use crate::support::raw;
use crate::{get, key};

#[tokio::test]
async fn an_oversized_request_is_resource_exhausted() {
    let (backend, gateway) = start(&|url| config(url, "", "max_request_bytes: 1KiB")).await;
    let mut client = gateway.client().await;

    let mut big = key("big");
    big.padding = vec![0u8; 2048];
    let status = get(&mut client, big, None).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("max_request_bytes"),
        "{}",
        status.message()
    );
    assert_eq!(backend.get_calls(), 0);

    let answer = get(&mut client, key("small"), None)
        .await
        .expect("others are served");
    assert_eq!(answer.cache, "miss");
    gateway.stop().await;
}

/// Sends `body` as a raw gRPC request to `Get` and returns the grpc-status the gateway answered with.
async fn raw_call(gateway: &TestGateway, body: &'static [u8]) -> String {
    let answer = raw::call(gateway.addr, "/testing.v1.Lookup/Get", &[], body.to_vec()).await;
    assert!(
        !answer.grpc_message.is_empty(),
        "every refusal says why: {answer:?}"
    );
    answer.grpc_status
}

#[tokio::test]
async fn malformed_frames_get_an_error_status() {
    let (backend, gateway) = start(&config_for).await;

    let internal = (tonic::Code::Internal as i32).to_string();
    // Truncated: the prefix promises 10 bytes, 2 arrive.
    assert_eq!(
        raw_call(&gateway, b"\x00\x00\x00\x00\x0a\x01\x02").await,
        internal
    );
    // A compressed flag that is neither 0 nor 1.
    assert_eq!(
        raw_call(&gateway, b"\x07\x00\x00\x00\x01\x01").await,
        internal
    );
    // Two messages on a unary call.
    assert_eq!(
        raw_call(&gateway, b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00").await,
        internal
    );
    // No message at all.
    assert_eq!(raw_call(&gateway, b"").await, internal);
    // A length prefix far beyond max_request_bytes: refused before anything is buffered.
    assert_eq!(
        raw_call(&gateway, b"\x00\xff\xff\xff\xff").await,
        (tonic::Code::ResourceExhausted as i32).to_string()
    );
    assert_eq!(backend.get_calls(), 0);

    let mut client = gateway.client().await;
    get(&mut client, key("fine"), None)
        .await
        .expect("the gateway keeps serving");
    gateway.stop().await;
}

#[tokio::test]
async fn unrouted_calls_are_unimplemented_and_dead_backends_unavailable() {
    let backend = TestBackend::start().await;
    let backend_url = backend.url();
    let only_get = format!(
        r#"
listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
backends:
  lookup: {{ endpoints: ["{backend_url}"] }}
routes:
  - match: /testing.v1.Lookup/Get
    backend: lookup
    cache: {{ ttl: 30s }}
"#
    );
    let gateway = TestGateway::start(&only_get).await;
    let mut client = gateway.client().await;
    let status = client.watch(key("x")).await.expect_err("no route");
    assert_eq!(status.code(), tonic::Code::Unimplemented);

    backend.stop().await;
    let started = std::time::Instant::now();
    let status = get(&mut client, key("y"), None)
        .await
        .expect_err("backend down");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "fails fast, took {:?}",
        started.elapsed()
    );
    gateway.stop().await;
}
