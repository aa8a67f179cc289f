//! Everything not cached goes through untouched: streaming in every direction, metadata, trailers, status.

use crate::support::gateway::{config_for, start};
use crate::{key, metadata};

#[tokio::test]
async fn server_streaming_keeps_metadata_trailers_and_status() {
    let (backend, gateway) = start(&config_for).await;
    let mut client = gateway.client().await;

    let response = client.watch(key("s")).await.expect("watch");
    assert_eq!(
        metadata(response.metadata(), "x-backend-header"),
        "streaming"
    );
    assert!(
        response.metadata().get("x-strata-cache").is_none(),
        "uncached routes are not annotated"
    );
    let mut stream = response.into_inner();
    let mut serials = Vec::new();
    while let Some(reply) = stream.message().await.expect("clean end") {
        serials.push(reply.serial);
    }
    assert_eq!(serials, vec![100, 101, 102]);

    let mut failing = key("s");
    failing.fail_code = tonic::Code::Aborted as i32;
    let mut stream = client.watch(failing).await.expect("watch").into_inner();
    let mut count = 0;
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => count += 1,
            Ok(None) => panic!("expected the stream to end with ABORTED"),
            Err(status) => break status,
        }
    };
    assert_eq!(count, 3, "every message before the error arrived");
    assert_eq!(status.code(), tonic::Code::Aborted);
    assert_eq!(status.message(), "backend failed on purpose with code 10");
    assert_eq!(
        metadata(status.metadata(), "x-failure-detail"),
        "on-purpose"
    );
    assert_eq!(
        backend.seen.watch.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "streams are never cached"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn client_streaming_and_bidi_pass_through() {
    let (_backend, gateway) = start(&config_for).await;
    let mut client = gateway.client().await;

    let uploads = tokio_stream::iter(["a", "b", "c"].map(key));
    let reply = client.collect(uploads).await.expect("collect").into_inner();
    assert_eq!(reply.key, "a,b,c");

    crate::chat_interleaved(&mut client).await;
    gateway.stop().await;
}
