//! Bounded under client-chosen input: what a client makes up (method names on a cached wildcard route) grows no
//! state in the gateway, and invalidation keeps reaching every replica.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use strata_proto::admin::v1::InvalidateRequest;
use strata_proto::admin::v1::cache_admin_client::CacheAdminClient;
use strata_proto::admin::v1::invalidate_request::Target;

use crate::health::http_get;
use crate::metrics::sample;
use crate::support::backend::TestBackend;
use crate::support::pb::lookup_client::LookupClient;
use crate::support::process::GatewayProcess;
use crate::support::{RedisServer, eventually};
use crate::{get, key};

const TOKEN: &str = "bounds-admin-token";

/// Two replicas' config: every call cached (`match: "*"`), a shared Redis, the admin token.
fn wildcard_config(backend: &TestBackend, redis: &RedisServer) -> String {
    format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\n\
         cache:\n  l2: {{ url: \"{}\", timeout: 100ms }}\n\
         backends:\n  lookup: {{ endpoints: [\"{}\"], timeout: 5s }}\n\
         routes:\n  - match: \"*\"\n    backend: lookup\n    cache: {{ ttl: 60s }}\n",
        redis.url(),
        backend.url()
    )
    .replace(
        "admin: { listen: 127.0.0.1:0 }",
        &format!("admin: {{ listen: 127.0.0.1:0, token: {TOKEN} }}"),
    )
}

/// The median of `times`.
fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// 2000 calls with distinct 6 KB method names on a cached `*` route: the replica's invalidation scopes stay what the
/// config names (one: the route's), its memory grows by less than 64 MiB, the calls take as long at the end as at the
/// start, and an invalidation through the other replica still reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_method_names_on_a_wildcard_route_grow_no_state() {
    let redis = RedisServer::start();
    let backend = TestBackend::start().await;
    let yaml = wildcard_config(&backend, &redis);
    let flooded = GatewayProcess::start(&yaml).await;
    let other = GatewayProcess::start(&yaml).await;
    let mut client = LookupClient::connect(format!("http://{}", flooded.addr))
        .await
        .expect("connect");
    let warmed = eventually(Duration::from_secs(5), || {
        let mut client = client.clone();
        async move {
            get(&mut client, key("a"), None)
                .await
                .is_ok_and(|a| a.cache == "l1")
        }
    })
    .await;
    assert!(warmed, "`a` in the flooded replica's L1");
    let before = get(&mut client, key("a"), None)
        .await
        .expect("l1")
        .reply
        .serial;

    // One connection, 2000 calls, each with a method name never seen before (the backend answers UNIMPLEMENTED).
    let tcp = tokio::net::TcpStream::connect(flooded.addr)
        .await
        .expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    let rss_before = flooded.rss_bytes();
    let padding = "x".repeat(6 * 1024);
    let mut times = Vec::with_capacity(2000);
    for i in 0..2000 {
        let request = http::Request::post(format!(
            "http://{}/testing.v1.Lookup/Made{i}{padding}",
            flooded.addr
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .expect("request");
        let started = Instant::now();
        let response = sender.send_request(request).await.expect("an answer");
        let in_headers = response.headers().contains_key("grpc-status");
        let answer = response.into_body().collect().await.expect("body");
        times.push(started.elapsed());
        let in_trailers = answer
            .trailers()
            .is_some_and(|t| t.contains_key("grpc-status"));
        assert!(
            in_headers || in_trailers,
            "call {i} ended with a gRPC status"
        );
    }
    let grown = flooded.rss_bytes().saturating_sub(rss_before);
    let (first, last) = (median(&times[..300]), median(&times[1700..]));
    eprintln!(
        "2000 made-up 6 KB method names: median call {first:?} over the first 300, {last:?} over the last 300; \
         RSS grew by {} KiB",
        grown / 1024
    );

    let metrics = http_get(flooded.admin, "/metrics").await;
    assert_eq!(
        sample(&metrics, "strata_cache_invalidation_scopes", ""),
        Some(1.0),
        "one scope, the `*` route's, whatever the method names:\n{metrics}"
    );
    assert!(grown < 64 << 20, "RSS grew by {grown} bytes");

    // An invalidation of the service through the other replica reaches the flooded one.
    let mut admin = CacheAdminClient::connect(format!("http://{}", other.admin))
        .await
        .expect("admin");
    let mut request = tonic::Request::new(InvalidateRequest {
        target: Some(Target::Service("/testing.v1.Lookup/".into())),
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("ascii"),
    );
    admin.invalidate(request).await.expect("invalidated");
    let reached = eventually(Duration::from_secs(5), || {
        let mut client = client.clone();
        async move {
            get(&mut client, key("a"), None)
                .await
                .is_ok_and(|a| a.cache != "l1" && a.reply.serial > before)
        }
    })
    .await;
    assert!(reached, "the invalidation reached the flooded replica");
}

/// A client that connects and sends nothing (not even the HTTP/2 preface) is disconnected, not kept forever.
#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    use tokio::io::AsyncReadExt;
    let backend = TestBackend::start().await;
    let gateway = crate::support::gateway::TestGateway::start(
        &crate::support::gateway::config_for(&backend.url()),
    )
    .await;
    let mut silent = tokio::net::TcpStream::connect(gateway.addr)
        .await
        .expect("connect");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(30), silent.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "closed by the gateway (the preface timeout is 10 s): {read:?}"
    );
    gateway.stop().await;
}

/// A client that opens an HTTP/2 connection and then starts no call is asked to go (GOAWAY) after `idle_timeout`; a
/// call still running then is not cut: the connection ends once it has.
#[tokio::test]
async fn a_connection_without_calls_is_closed_after_idle_timeout_and_in_flight_calls_finish() {
    let backend = TestBackend::start().await;
    let config = crate::support::gateway::config(&backend.url(), "", "idle_timeout: 200ms");
    let gateway = crate::support::gateway::TestGateway::start(&config).await;

    // Preface and settings, then nothing.
    let tcp = tokio::net::TcpStream::connect(gateway.addr)
        .await
        .expect("connect");
    let (_sender, connection) = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    let ended = tokio::time::timeout(Duration::from_secs(30), connection).await;
    assert!(
        ended.is_ok(),
        "the idle connection was closed by the gateway"
    );

    // A call far longer than the idle limit: answered in full, then the connection goes.
    let mut client = gateway.client().await;
    let mut slow = key("slow");
    slow.delay_ms = 1000;
    let answer = get(&mut client, slow, None)
        .await
        .expect("a call in flight is not cut by the idle limit");
    assert_eq!(answer.reply.key, "slow");
    gateway.stop().await;
}
