//! A cached wildcard route never breaks a call: unary methods under it are cached, streaming ones carried through
//! intact — told apart by descriptors when the gateway has them, and by what the call does when it has none.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::backend::{Reflection, TestBackend};
use crate::support::gateway::TestGateway;
use crate::support::pb::GetRequest;
use crate::support::pb::lookup_client::LookupClient;
use crate::{get, key, metadata};
use tonic::transport::Channel;

/// One backend behind a cached `/testing.v1.Lookup/*` route; `descriptors` is the top-level `descriptors:` block.
pub fn wildcard_config(backend_url: &str, descriptors: &str) -> String {
    format!(
        r#"
listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
backends:
  lookup: {{ endpoints: ["{backend_url}"], timeout: 5s }}
routes:
  - match: /testing.v1.Lookup/*
    backend: lookup
    cache: {{ ttl: 30s }}
{descriptors}
"#
    )
}

/// Every kind of method through the route, twice: the unary one is cached, the others reach the backend each time
/// with every message in both directions. Without descriptors (`known`: false), a client stream of exactly one
/// message looks unary on the wire and is cached like one.
pub async fn all_four_kinds_work(
    backend: &TestBackend,
    client: &mut LookupClient<Channel>,
    known: bool,
) {
    for round in 0..2 {
        let answer = get(client, key("g"), None).await.expect("get");
        assert_eq!(answer.reply.key, "g");
        assert_eq!(answer.cache, if round == 0 { "miss" } else { "l1" });

        let response = client.watch(key("w")).await.expect("watch");
        assert_eq!(
            metadata(response.metadata(), "x-backend-header"),
            "streaming"
        );
        let mut stream = response.into_inner();
        let mut serials = Vec::new();
        while let Some(reply) = stream.message().await.expect("clean end") {
            serials.push(reply.serial % 100);
        }
        assert_eq!(
            serials,
            [0, 1, 2],
            "round {round}: every message of the stream"
        );

        let uploads = tokio_stream::iter(["a", "b", "c"].map(key));
        let reply = client.collect(uploads).await.expect("collect").into_inner();
        assert_eq!(reply.key, "a,b,c");
        let one = tokio_stream::iter(["only"].map(key));
        let reply = client.collect(one).await.expect("collect one").into_inner();
        assert_eq!(reply.key, "only");
        let none = tokio_stream::iter(Vec::<GetRequest>::new());
        let reply = client
            .collect(none)
            .await
            .expect("collect none")
            .into_inner();
        assert_eq!(reply.key, "");

        crate::chat_interleaved(client).await;
    }
    let seen = &backend.seen;
    assert_eq!(
        seen.get.load(Ordering::SeqCst),
        1,
        "the unary method is cached"
    );
    assert_eq!(seen.watch.load(Ordering::SeqCst), 2);
    let collects = if known { 6 } else { 5 };
    assert_eq!(seen.collect.load(Ordering::SeqCst), collects);
    assert_eq!(seen.chat.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn without_descriptors_a_cached_wildcard_route_carries_every_kind_of_call() {
    let backend = TestBackend::start().await;
    let config = wildcard_config(&backend.url(), "descriptors: { reflection: false }");
    let gateway = TestGateway::start(&config).await;
    let mut client = gateway.client().await;
    all_four_kinds_work(&backend, &mut client, false).await;
    // Chat answered with several messages: it is known to stream now, so even a one-message call of it (which looks
    // unary on the wire) is carried through, never answered from the cache.
    for _ in 0..2 {
        let one = tokio_stream::iter([key("once")]);
        let mut replies = client.chat(one).await.expect("chat").into_inner();
        let reply = replies.message().await.expect("ok").expect("a reply");
        assert_eq!(reply.key, "once");
        assert!(replies.message().await.expect("clean end").is_none());
    }
    assert_eq!(
        backend.seen.chat.load(Ordering::SeqCst),
        4,
        "both reached the backend"
    );
    gateway.stop().await;
}

/// Waits until the gateway has descriptors from `source` (`reflection` of backend `lookup`, or `files`).
pub async fn wait_for_descriptors(gateway: &TestGateway, source: &str) {
    let admin = gateway.admin;
    let learned = crate::support::eventually(Duration::from_secs(20), || async move {
        let metrics = crate::health::http_get(admin, "/metrics").await;
        metrics.lines().any(|line| {
            line.starts_with("strata_descriptor_methods{")
                && line.contains(&format!("source=\"{source}\""))
                && !line.ends_with(" 0")
        })
    })
    .await;
    assert!(learned, "descriptors from {source} within 20 s");
}

/// Every kind of method through a cached wildcard route, with the descriptors from `source` (`reflection` of the
/// backend, or `files`, given by the `descriptors` block).
async fn all_four_kinds_with_descriptors(backend: TestBackend, descriptors: &str, source: &str) {
    let gateway = TestGateway::start(&wildcard_config(&backend.url(), descriptors)).await;
    wait_for_descriptors(&gateway, source).await;
    let mut client = gateway.client().await;
    all_four_kinds_work(&backend, &mut client, true).await;
    gateway.stop().await;
}

#[tokio::test]
async fn with_descriptors_by_reflection_streaming_methods_are_carried_and_unary_ones_cached() {
    let backend = TestBackend::start_reflecting(Reflection::V1AndV1alpha).await;
    all_four_kinds_with_descriptors(backend, "", "reflection").await;
}

#[tokio::test]
async fn reflection_falls_back_to_v1alpha() {
    let backend = TestBackend::start_reflecting(Reflection::V1alphaOnly).await;
    all_four_kinds_with_descriptors(backend, "", "reflection").await;
}

#[tokio::test]
async fn a_descriptor_set_file_describes_a_backend_without_reflection() {
    let backend = TestBackend::start().await;
    let descriptors = crate::support::descriptors_from_file();
    all_four_kinds_with_descriptors(backend, &descriptors, "files").await;
}

/// A reload asks the backends for their descriptors at once: with `descriptors.refresh` at an hour, only the reload
/// can have the gateway learn the new backend's methods within the test's wait.
#[tokio::test]
async fn a_reload_asks_the_backends_for_their_descriptors_at_once() {
    let silent = TestBackend::start().await;
    let reflecting = TestBackend::start_reflecting(Reflection::V1AndV1alpha).await;
    let refresh = "descriptors: { refresh: 1h }";
    let dir = crate::support::certs::PemDir::new("descriptors-reload");
    let path = dir.write("strata.yaml", &wildcard_config(&silent.url(), refresh));
    let gateway = TestGateway::start_watching(&path).await;
    dir.write("strata.yaml", &wildcard_config(&reflecting.url(), refresh));
    wait_for_descriptors(&gateway, "reflection").await;
    let mut client = gateway.client().await;
    all_four_kinds_work(&reflecting, &mut client, true).await;
    gateway.stop().await;
}

/// A reload reads the descriptor files again, though their paths did not change: an operator replaces a file in place
/// and reloads.
#[tokio::test]
async fn a_reload_reads_a_descriptor_file_replaced_in_place() {
    let backend = TestBackend::start().await;
    let dir = crate::support::certs::PemDir::new("descriptors-file-reload");
    // An empty FileDescriptorSet: valid, and describes nothing.
    let file = dir.write("lookup.binpb", "");
    let descriptors = format!(
        "descriptors: {{ reflection: false, refresh: 1h, files: [\"{}\"] }}",
        file.display()
    );
    let yaml = wildcard_config(&backend.url(), &descriptors);
    let path = dir.write("strata.yaml", &yaml);
    let gateway = TestGateway::start_watching(&path).await;
    // The first round has read the empty file (its gauge is there, at 0) before the file is replaced.
    let admin = gateway.admin;
    let first_round = crate::support::eventually(Duration::from_secs(20), || async move {
        let metrics = crate::health::http_get(admin, "/metrics").await;
        metrics.lines().any(|line| {
            line.starts_with("strata_descriptor_methods{") && line.contains("source=\"files\"")
        })
    })
    .await;
    assert!(first_round, "the descriptor files read within 20 s");
    std::fs::write(&file, crate::support::TESTING_V1_DESCRIPTORS)
        .expect("replace the descriptor set");
    // A change the watcher cannot take for the file it started with, even on its first look; the paths stay.
    dir.write("strata.yaml", &yaml.replace("refresh: 1h", "refresh: 2h"));
    wait_for_descriptors(&gateway, "files").await;
    let mut client = gateway.client().await;
    all_four_kinds_work(&backend, &mut client, true).await;
    gateway.stop().await;
}
