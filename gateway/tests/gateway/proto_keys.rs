//! Keys built from what a request means: the canonical form of the decoded request, with only the fields that change
//! the answer; and a cache policy declared in the proto (`from_proto`).

use std::sync::atomic::Ordering;

use crate::method_kinds::wait_for_descriptors;
use crate::support::backend::{Reflection, TestBackend};
use crate::support::gateway::TestGateway;
use crate::support::pb::{Filter, SearchRequest};
use crate::support::raw;
use crate::{get, key, metadata};

/// One backend serving reflection, behind `routes` (YAML list items), with `descriptors` at the top level.
fn config(backend_url: &str, routes: &str, descriptors: &str) -> String {
    format!(
        r#"
listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
backends:
  lookup: {{ endpoints: ["{backend_url}"], timeout: 5s }}
routes:
{routes}
  - match: "*"
    backend: lookup
{descriptors}
"#
    )
}

/// One length-delimited protobuf field.
fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![number << 3 | 2, u8::try_from(bytes.len()).expect("short")];
    out.extend_from_slice(bytes);
    out
}

/// A map entry of `labels`.
fn label(key: &str, value: &str) -> Vec<u8> {
    field(
        4,
        &[field(1, key.as_bytes()), field(2, value.as_bytes())].concat(),
    )
}

/// `parts` framed as one gRPC message.
fn framed(parts: &[Vec<u8>]) -> Vec<u8> {
    let message = parts.concat();
    let mut out = vec![0];
    out.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
    out.extend_from_slice(&message);
    out
}

/// Two clients' encodings of one request — fields and map entries in other orders, a default written out, a field
/// the gateway's descriptor does not know — are one entry; the raw-bytes route beside it keeps them apart.
#[tokio::test]
async fn two_encodings_of_one_request_are_one_entry() {
    let backend = TestBackend::start_reflecting(Reflection::V1AndV1alpha).await;
    let routes = "  - match: /testing.v1.Lookup/Search\n    backend: lookup\n    cache: { ttl: 30s, canonical: true }\n  - match: /testing.v1.Lookup/Get\n    backend: lookup\n    cache: { ttl: 30s }";
    let gateway = TestGateway::start(&config(&backend.url(), routes, "")).await;
    wait_for_descriptors(&gateway, "reflection").await;

    let one = framed(&[
        field(1, b"q"),
        field(3, &field(1, b"t")),
        label("a", "1"),
        label("b", "2"),
    ]);
    let other = framed(&[
        label("b", "2"),
        vec![0xf8, 0x06, 0x07], // field 111: not in the descriptor
        field(3, &field(1, b"t")),
        field(2, b""), // request_id, its default written out
        label("a", "1"),
        field(1, b"q"),
    ]);
    let search = "/testing.v1.Lookup/Search";
    let first = raw::call(gateway.addr, search, &[], one).await;
    assert_eq!(
        (first.grpc_status.as_str(), first.cache.as_str()),
        ("0", "miss")
    );
    let second = raw::call(gateway.addr, search, &[], other).await;
    assert_eq!(
        (second.grpc_status.as_str(), second.cache.as_str()),
        ("0", "l1")
    );
    assert_eq!(second.message, first.message, "the same answer");
    assert_eq!(backend.seen.search.load(Ordering::SeqCst), 1);

    // The same two encodings on a route keyed by the bytes: two entries.
    let get = "/testing.v1.Lookup/Get";
    let a = framed(&[field(1, b"k"), vec![0x10, 0x00]]); // delay_ms = 0 written out
    let b = framed(&[field(1, b"k")]);
    assert_eq!(raw::call(gateway.addr, get, &[], a).await.cache, "miss");
    assert_eq!(raw::call(gateway.addr, get, &[], b).await.cache, "miss");

    // Bytes that are not a SearchRequest are the backend's to judge, uncached.
    let broken = raw::call(gateway.addr, search, &[], framed(&[vec![0x0a, 9, b'x']])).await;
    assert_eq!(broken.cache, "bypass");
    assert_ne!(broken.grpc_status, "0");
    gateway.stop().await;
}

fn search(query: &str, request_id: &str, tenant: &str) -> SearchRequest {
    SearchRequest {
        query: query.to_owned(),
        request_id: request_id.to_owned(),
        filter: Some(Filter {
            tenant_id: tenant.to_owned(),
            trace: String::new(),
        }),
        ..Default::default()
    }
}

async fn search_cache(gateway: &TestGateway, request: SearchRequest) -> String {
    let mut client = gateway.client().await;
    let response = client.search(request).await.expect("search");
    metadata(response.metadata(), "x-strata-cache")
}

#[tokio::test]
async fn ignored_fields_and_key_fields_choose_what_makes_the_key() {
    let backend = TestBackend::start_reflecting(Reflection::V1AndV1alpha).await;
    let ignoring = "  - match: /testing.v1.Lookup/Search\n    backend: lookup\n    cache: { ttl: 30s, ignore_fields: [request_id] }";
    let gateway = TestGateway::start(&config(&backend.url(), ignoring, "")).await;
    wait_for_descriptors(&gateway, "reflection").await;
    assert_eq!(search_cache(&gateway, search("q", "r1", "t")).await, "miss");
    assert_eq!(search_cache(&gateway, search("q", "r2", "t")).await, "l1");
    assert_eq!(search_cache(&gateway, search("q", "r3", "u")).await, "miss");
    gateway.stop().await;

    let only_tenant = "  - match: /testing.v1.Lookup/Search\n    backend: lookup\n    cache: { ttl: 30s, key_fields: [filter.tenant_id] }";
    let gateway = TestGateway::start(&config(&backend.url(), only_tenant, "")).await;
    wait_for_descriptors(&gateway, "reflection").await;
    assert_eq!(
        search_cache(&gateway, search("q1", "r1", "t")).await,
        "miss"
    );
    assert_eq!(search_cache(&gateway, search("q2", "r2", "t")).await, "l1");
    assert_eq!(
        search_cache(&gateway, search("q1", "r1", "u")).await,
        "miss"
    );
    gateway.stop().await;
}

/// A `from_proto` route caches what the proto declares: `Search` by its option (its `request_id` ignored), `Peek`
/// by its idempotency level with the route's `ttl`; `Get` declares nothing and is carried through; values the route
/// sets override the option's.
#[tokio::test]
async fn a_from_proto_route_caches_what_the_proto_declares() {
    // tonic's reflection re-encodes descriptors and drops custom options: the option comes from a descriptor file.
    let descriptors = crate::support::descriptors_from_file();
    let backend = TestBackend::start().await;

    let without_ttl =
        "  - match: /testing.v1.Lookup/*\n    backend: lookup\n    cache: { from_proto: true }";
    let gateway = TestGateway::start(&config(&backend.url(), without_ttl, &descriptors)).await;
    wait_for_descriptors(&gateway, "files").await;
    assert_eq!(search_cache(&gateway, search("q", "r1", "t")).await, "miss");
    assert_eq!(
        search_cache(&gateway, search("q", "r2", "t")).await,
        "l1",
        "request_id ignored, per the option"
    );
    let mut client = gateway.client().await;
    // Peek: NO_SIDE_EFFECTS but no ttl anywhere: not cached.
    let peek = client.peek(key("p")).await.expect("peek");
    assert_eq!(metadata(peek.metadata(), "x-strata-cache"), "<none>");
    let answer = get(&mut client, key("g"), None).await.expect("get");
    assert_eq!(
        answer.cache, "<none>",
        "Get declares nothing: carried through"
    );
    gateway.stop().await;

    let with_ttl = "  - match: /testing.v1.Lookup/*\n    backend: lookup\n    cache: { from_proto: true, ttl: 10s, key_fields: [query] }";
    let gateway = TestGateway::start(&config(&backend.url(), with_ttl, &descriptors)).await;
    wait_for_descriptors(&gateway, "files").await;
    let mut client = gateway.client().await;
    for expected in ["miss", "l1"] {
        let peek = client.peek(key("p")).await.expect("peek");
        assert_eq!(metadata(peek.metadata(), "x-strata-cache"), expected);
    }
    // The route's key_fields override the option's ignore_fields: only the query counts.
    assert_eq!(search_cache(&gateway, search("q", "r1", "t")).await, "miss");
    assert_eq!(search_cache(&gateway, search("q", "r2", "u")).await, "l1");
    assert_eq!(backend.seen.peek.load(Ordering::SeqCst), 2);
    gateway.stop().await;
}
