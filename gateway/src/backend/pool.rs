//! A backend's endpoints: the static ones, and those a DNS name resolves to now. The set is swapped whole when it
//! changes, so a call in flight keeps the endpoint it picked while new calls see the new set.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;

use super::connection::{Connection, ConnectionConfig};
use super::endpoint::{Endpoint, Transport};
use super::health;
use crate::config::BackendConfig;
use crate::error::GatewayError;
use crate::metrics::BackendMetrics;

/// The endpoints of one backend.
#[derive(Debug)]
pub struct Pool {
    backend: String,
    config: BackendConfig,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    /// Health-check tasks by endpoint URL.
    health_checks: Mutex<HashMap<String, JoinHandle<()>>>,
    metrics: Option<BackendMetrics>,
}

impl Pool {
    /// A pool of `urls` (static endpoints), health-checked if configured (so it needs a tokio runtime).
    pub fn new(
        backend: &str,
        config: &BackendConfig,
        urls: &[String],
        metrics: Option<BackendMetrics>,
    ) -> Result<Self, GatewayError> {
        let pool = Self {
            backend: backend.to_owned(),
            config: config.clone(),
            endpoints: ArcSwap::from_pointee(Vec::new()),
            health_checks: Mutex::default(),
            metrics,
        };
        let endpoints = urls
            .iter()
            .map(|url| pool.endpoint(url, None))
            .collect::<Result<Vec<_>, _>>()?;
        pool.install(endpoints);
        Ok(pool)
    }

    /// The endpoints now.
    pub fn current(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints.load_full()
    }

    /// Replaces the endpoints `source` (a DNS name) resolved to with `addrs`: new addresses join, gone ones leave (a
    /// call in flight to one keeps it until it ends), the others keep their state.
    pub fn set_resolved(&self, source: &str, addrs: &[SocketAddr]) {
        let current = self.current();
        let mut next: Vec<Arc<Endpoint>> = current
            .iter()
            .filter(|e| {
                e.source.as_deref() != Some(source) || addrs.iter().any(|a| Some(*a) == e.addr)
            })
            .cloned()
            .collect();
        for addr in addrs {
            if !next
                .iter()
                .any(|e| e.source.as_deref() == Some(source) && e.addr == Some(*addr))
            {
                let scheme = if self.config.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                match self.endpoint(&format!("{scheme}://{addr}"), Some((source, *addr))) {
                    Ok(endpoint) => next.push(endpoint),
                    Err(err) => {
                        tracing::warn!(backend = %self.backend, error = %err, "resolved address rejected")
                    }
                }
            }
        }
        if next.len() != current.len()
            || next
                .iter()
                .zip(current.iter())
                .any(|(a, b)| !Arc::ptr_eq(a, b))
        {
            tracing::info!(backend = %self.backend, source, endpoints = next.len(), "endpoints changed");
            self.install(next);
        }
    }

    fn install(&self, endpoints: Vec<Arc<Endpoint>>) {
        let mut checks = self
            .health_checks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        checks.retain(|url, task| {
            let kept = endpoints.iter().any(|e| &e.url == url);
            if !kept {
                task.abort();
            }
            kept
        });
        if let Some(hc) = &self.config.health_check {
            for endpoint in &endpoints {
                checks.entry(endpoint.url.clone()).or_insert_with(|| {
                    tokio::spawn(health::check_forever(
                        endpoint.clone(),
                        hc.clone(),
                        self.backend.clone(),
                        self.metrics.clone(),
                    ))
                });
            }
        }
        self.endpoints.store(Arc::new(endpoints));
    }

    /// A new endpoint for `url`, with a lazily connected channel.
    fn endpoint(
        &self,
        url: &str,
        resolved: Option<(&str, SocketAddr)>,
    ) -> Result<Arc<Endpoint>, GatewayError> {
        let rejected = |e: &dyn std::fmt::Display| {
            GatewayError::Internal(format!(
                "backends.{}: endpoint `{url}` rejected: {e}",
                self.backend
            ))
        };
        let tls = match &self.config.tls {
            Some(tls) => Some(crate::tls::backend_client(tls).map_err(|e| rejected(&e))?),
            // An https:// endpoint without a `tls` block: verified against the system's roots.
            None if url.starts_with("https://") => {
                Some(tonic::transport::ClientTlsConfig::new().with_native_roots())
            }
            None => None,
        };
        let channel = match tls {
            // Plaintext: the gateway's own connection, which sends a unary call in one write.
            None => {
                let uri = url.parse::<http::Uri>().map_err(|e| rejected(&e))?;
                let config = ConnectionConfig {
                    connect_timeout: self.config.connect_timeout,
                    keepalive_interval: self.config.keepalive_interval,
                    keepalive_timeout: self.config.keepalive_timeout,
                };
                Transport::Plain(Connection::lazy(&uri, config).map_err(|e| rejected(&e))?)
            }
            Some(tls) => Transport::Tls(
                tonic::transport::Endpoint::from_shared(url.to_owned())
                    .map_err(|e| rejected(&e))?
                    .tls_config(tls)
                    .map_err(|e| rejected(&e))?
                    .connect_timeout(self.config.connect_timeout)
                    .tcp_nodelay(true)
                    .http2_adaptive_window(true)
                    .http2_keep_alive_interval(self.config.keepalive_interval)
                    .keep_alive_timeout(self.config.keepalive_timeout)
                    .keep_alive_while_idle(true)
                    .connect_lazy(),
            ),
        };
        let mut endpoint = Endpoint::new(url.to_owned(), channel);
        if let Some((source, addr)) = resolved {
            endpoint.source = Some(source.to_owned());
            endpoint.addr = Some(addr);
        }
        Ok(Arc::new(endpoint))
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for task in self
            .health_checks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;

    fn pool() -> Pool {
        let config = Config::from_yaml(
            "backends: { b: { endpoints: [\"dns:///svc:50051\"] } }\nroutes: [{ match: \"*\", backend: b }]\n",
        )
        .expect("valid");
        Pool::new("b", &config.backends["b"], &[], None).expect("pool")
    }

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 50051))
    }

    // A unit test with fixed address sets: what a DNS name resolves to cannot be changed from a test on a shared
    // machine, so re-resolution is checked here and real resolution end to end.
    #[tokio::test]
    async fn re_resolution_adds_and_removes_endpoints_and_keeps_the_rest() {
        let pool = pool();
        pool.set_resolved("svc", &[addr(1), addr(2)]);
        let first = pool.current();
        assert_eq!(first.len(), 2);
        let in_flight = first[0].start_call();

        pool.set_resolved("svc", &[addr(2), addr(3)]);
        let second = pool.current();
        let urls: Vec<_> = second.iter().map(|e| e.url.as_str()).collect();
        assert_eq!(
            urls,
            ["http://10.0.0.2:50051", "http://10.0.0.3:50051"],
            "10.0.0.1 gets no new calls"
        );
        assert!(
            Arc::ptr_eq(&first[1], &second[0]),
            "an endpoint still resolved keeps its state"
        );
        assert_eq!(
            first[0].outstanding(),
            1,
            "the call in flight to the removed endpoint is untouched"
        );
        drop(in_flight);

        let unchanged = pool.current();
        pool.set_resolved("svc", &[addr(3), addr(2)]);
        assert!(
            Arc::ptr_eq(&unchanged, &pool.current()),
            "the same set in another order changes nothing"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
