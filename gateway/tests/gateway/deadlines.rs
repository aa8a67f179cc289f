//! The client's deadline: honoured by the gateway itself, forwarded to the backend as the time left.

use std::time::{Duration, Instant};

use crate::support::backend::TestBackend;
use crate::support::gateway::{TestGateway, config_for, start};
use crate::support::raw;
use crate::{get, key};

fn forwarded(seen: &str) -> Duration {
    strata_gateway::grpc::timeout::parse(seen.as_bytes())
        .unwrap_or_else(|| panic!("invalid grpc-timeout {seen:?}"))
}

/// Calls `path` with a 300 ms deadline on a backend call that takes 2 s, through the bare client (which has no
/// timer of its own: the answer at the deadline is the gateway's). Checks that the gateway answered
/// DEADLINE_EXCEEDED close to the deadline, and returns the `grpc-timeout` the backend received.
async fn expect_deadline_in_time(
    backend: &TestBackend,
    gateway: &TestGateway,
    path: &str,
) -> Duration {
    let mut req = key("slow");
    req.delay_ms = 2000;
    let started = Instant::now();
    let answer = raw::call(
        gateway.addr,
        path,
        &[("grpc-timeout", "300m")],
        raw::framed(&req),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(
        answer.grpc_status,
        (tonic::Code::DeadlineExceeded as i32).to_string(),
        "{answer:?}"
    );
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_millis(1500),
        "took {took:?}"
    );
    let seen = backend
        .last_grpc_timeout()
        .expect("backend saw a grpc-timeout");
    forwarded(&seen)
}

#[tokio::test]
async fn a_short_deadline_ends_a_cached_call_in_time_and_its_fetch_serves_the_next() {
    let (backend, gateway) = start(&config_for).await;
    let left = expect_deadline_in_time(&backend, &gateway, "/testing.v1.Lookup/Get").await;
    // The fetch belongs to the key, not to the caller that started it: it runs under the backend's timeout (5 s).
    assert!(
        left <= Duration::from_secs(5) && left > Duration::from_secs(4),
        "{left:?}"
    );

    // The next caller is answered by that same fetch, and the one after it from L1.
    let mut client = gateway.client().await;
    let mut req = key("slow");
    req.delay_ms = 2000;
    let answer = get(&mut client, req.clone(), None).await.expect("ok");
    assert_eq!(answer.cache, "coalesced");
    let again = get(&mut client, req, None).await.expect("ok");
    assert_eq!(again.cache, "l1");
    assert_eq!(backend.get_calls(), 1);
    gateway.stop().await;
}

#[tokio::test]
async fn a_short_deadline_ends_a_passthrough_call_in_time() {
    let (backend, gateway) = start(&config_for).await;
    let left = expect_deadline_in_time(&backend, &gateway, "/testing.v1.Lookup/Watch").await;
    assert!(
        left <= Duration::from_millis(300) && left > Duration::from_millis(200),
        "the client's time left: {left:?}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn the_backend_learns_the_time_left() {
    let (_backend, gateway) = start(&config_for).await;
    let mut client = gateway.client().await;

    // Passthrough: the client's 5 s, minus what the gateway spent.
    let mut request = tonic::Request::new(key("w"));
    request
        .metadata_mut()
        .insert("grpc-timeout", "5S".parse().expect("ascii"));
    let mut stream = client.watch(request).await.expect("watch").into_inner();
    let first = stream
        .message()
        .await
        .expect("stream ok")
        .expect("one reply");
    let left = forwarded(&first.grpc_timeout);
    assert!(
        left < Duration::from_secs(5) && left > Duration::from_secs(4),
        "{}",
        first.grpc_timeout
    );

    // Cached route without a client deadline: the backend gets the backend timeout (5 s in the test config).
    let answer = get(&mut client, key("no-deadline"), None)
        .await
        .expect("ok");
    let left = forwarded(&answer.reply.grpc_timeout);
    assert!(
        left <= Duration::from_secs(5) && left > Duration::from_secs(4),
        "{}",
        answer.reply.grpc_timeout
    );
    gateway.stop().await;
}
