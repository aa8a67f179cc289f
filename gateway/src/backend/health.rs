//! Active health checks: each endpoint is asked `grpc.health.v1.Health/Check` every interval, and leaves or rejoins
//! the rotation after enough failed or passed checks in a row.

use std::sync::Arc;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::endpoint::Endpoint;
use crate::config::HealthCheckConfig;
use crate::metrics::BackendMetrics;

/// Checks `endpoint` until the task is aborted.
pub async fn check_forever(
    endpoint: Arc<Endpoint>,
    config: HealthCheckConfig,
    backend: String,
    metrics: Option<BackendMetrics>,
) {
    let count = |event| {
        if let Some(m) = &metrics {
            m.endpoint_event(&backend, event);
        }
    };
    let (mut passed, mut failed) = (0u32, 0u32);
    let mut interval = tokio::time::interval(config.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let serving = check_once(&endpoint, &config).await;
        if serving {
            (passed, failed) = (passed.saturating_add(1), 0);
            if !endpoint.is_healthy() && passed >= config.healthy_threshold {
                endpoint.set_healthy(true);
                count("healthy");
                tracing::info!(endpoint = %endpoint.url, "endpoint healthy again; back in rotation");
            }
        } else {
            (passed, failed) = (0, failed.saturating_add(1));
            if endpoint.is_healthy() && failed >= config.unhealthy_threshold {
                endpoint.set_healthy(false);
                count("unhealthy");
                tracing::warn!(endpoint = %endpoint.url, failed, "endpoint failed its health checks; out of rotation");
            }
        }
    }
}

async fn check_once(endpoint: &Endpoint, config: &HealthCheckConfig) -> bool {
    let mut client = HealthClient::new(endpoint.transport.clone());
    let request = HealthCheckRequest {
        service: config.service.clone(),
    };
    match tokio::time::timeout(config.timeout, client.check(request)).await {
        Ok(Ok(response)) => response.into_inner().status == ServingStatus::Serving as i32,
        _ => false,
    }
}
