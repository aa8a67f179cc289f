//! What a call's content type means for the cache: only gRPC calls with a codec the key records are looked up;
//! gRPC-Web and anything else is forwarded as it came.

use crate::key;
use crate::support::backend::TestBackend;
use crate::support::gateway::{TestGateway, config_for};
use crate::support::raw;

const GET: &str = "/testing.v1.Lookup/Get";

#[tokio::test]
async fn grpc_web_calls_are_forwarded_never_cached() {
    let backend = TestBackend::start().await;
    let gateway = TestGateway::start(&config_for(&backend.url())).await;
    let body = raw::framed(&key("web"));
    for content_type in ["application/grpc-web+proto", "application/grpc-web-text"] {
        let before = backend.get_calls();
        for _ in 0..2 {
            raw::call(
                gateway.addr,
                GET,
                &[("content-type", content_type)],
                body.clone(),
            )
            .await;
        }
        assert_eq!(
            backend.get_calls(),
            before + 2,
            "{content_type}: each call reached the backend"
        );
    }
    gateway.stop().await;
}

#[tokio::test]
async fn the_codec_is_part_of_the_key() {
    let backend = TestBackend::start().await;
    let gateway = TestGateway::start(&config_for(&backend.url())).await;
    let body = raw::framed(&key("codec"));
    let call = |content_type: &'static str| {
        let body = body.clone();
        async move {
            let answer =
                raw::call(gateway.addr, GET, &[("content-type", content_type)], body).await;
            assert_eq!(answer.grpc_status, "0", "{content_type}: {answer:?}");
        }
    };
    call("application/grpc").await;
    assert_eq!(backend.get_calls(), 1);
    // The same protobuf codec under its long name: the same entry.
    call("application/grpc+proto").await;
    assert_eq!(backend.get_calls(), 1, "grpc+proto is grpc");
    // The same bytes in another codec ask for an answer in that codec: an entry of its own.
    call("application/grpc+json").await;
    assert_eq!(
        backend.get_calls(),
        2,
        "grpc+json is not served the protobuf answer"
    );
    call("application/grpc+json").await;
    assert_eq!(backend.get_calls(), 2, "and is cached under its own key");
    gateway.stop().await;
}
