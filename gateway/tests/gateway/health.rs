//! The gateway's own health: gRPC health on the data listener, `/healthz` and `/readyz` on the admin listener.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::key;
use crate::support::gateway::{config, config_for, start};

pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect admin");
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}

#[tokio::test]
async fn health_and_readiness() {
    let (_backend, gateway) = start(&config_for).await;

    let mut health = HealthClient::new(gateway.channel().await);
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answered by the gateway")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    assert!(
        http_get(gateway.admin, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        http_get(gateway.admin, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        http_get(gateway.admin, "/nope")
            .await
            .starts_with("HTTP/1.1 404")
    );
    gateway.stop().await;
}

#[tokio::test]
async fn shutdown_stops_readiness_at_once_and_lets_calls_finish() {
    let (_backend, mut gateway) = start(&|url| config(url, "", "shutdown_grace: 5s")).await;
    let mut client = gateway.client().await;
    let mut slow = key("slow");
    slow.delay_ms = 600;
    let in_flight = tokio::spawn(async move { client.get(slow).await });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    gateway.begin_stop();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        http_get(gateway.admin, "/readyz")
            .await
            .starts_with("HTTP/1.1 503"),
        "not ready while draining"
    );
    let reply = in_flight
        .await
        .expect("task")
        .expect("the in-flight call finishes")
        .into_inner();
    assert_eq!(reply.key, "slow");
    gateway.stop().await;
}

#[tokio::test]
async fn sigterm_lets_50_in_flight_calls_finish_then_exits_0() {
    let backend = crate::support::backend::TestBackend::start().await;
    let yaml = config(&backend.url(), "", "shutdown_grace: 5s\ndrain_delay: 200ms");
    let mut gateway = crate::support::process::GatewayProcess::start(&yaml).await;
    let client = gateway.client().await;
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let mut client = client.clone();
            let mut req = key(&format!("slow{i}"));
            req.delay_ms = 800;
            tokio::spawn(async move { crate::get(&mut client, req, None).await })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    gateway.terminate();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(
        http_get(gateway.admin, "/readyz")
            .await
            .starts_with("HTTP/1.1 503"),
        "not ready at once"
    );

    for call in calls {
        call.await
            .expect("task")
            .expect("every accepted call completes");
    }
    let status = gateway.exited(std::time::Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    let refused = tokio::net::TcpStream::connect(gateway.addr).await;
    assert!(refused.is_err(), "no new calls after the drain");
}
