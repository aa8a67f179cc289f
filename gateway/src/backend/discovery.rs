//! DNS discovery: a `dns:///name:port` endpoint is re-resolved every `resolve_interval` (a Kubernetes headless
//! service: pods come and go without a restart).

use std::sync::Weak;
use std::time::Duration;

use super::pool::Pool;

/// A configured endpoint: a fixed URL, or a DNS name to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `http://host:port`.
    Static(String),
    /// `dns:///name:port`.
    Dns { name: String, port: u16 },
}

impl Target {
    /// Reads an endpoint as configured (validated by the config already).
    pub fn parse(endpoint: &str) -> Option<Self> {
        match endpoint.strip_prefix("dns:///") {
            Some(rest) => {
                let (name, port) = rest.rsplit_once(':')?;
                let port = port.parse().ok()?;
                (!name.is_empty()).then(|| Self::Dns {
                    name: name.to_owned(),
                    port,
                })
            }
            None => Some(Self::Static(endpoint.to_owned())),
        }
    }
}

/// Resolves `name:port` now and every `interval`, until the pool is gone. A failed resolution keeps the endpoints
/// known so far (a DNS hiccup must not empty the backend).
pub async fn resolve_forever(pool: Weak<Pool>, name: String, port: u16, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let resolved = tokio::net::lookup_host((name.as_str(), port)).await;
        let Some(pool) = pool.upgrade() else { return };
        match resolved {
            Ok(addrs) => {
                let mut addrs: Vec<_> = addrs.collect();
                addrs.sort();
                addrs.dedup();
                if addrs.is_empty() {
                    tracing::warn!(%name, "resolved to no address; keeping the endpoints known so far");
                } else {
                    pool.set_resolved(&name, &addrs);
                }
            }
            Err(err) => {
                tracing::warn!(%name, error = %err, "cannot resolve; keeping the endpoints known so far")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(
            Target::parse("dns:///svc.ns.svc.cluster.local:50051"),
            Some(Target::Dns {
                name: "svc.ns.svc.cluster.local".into(),
                port: 50051
            })
        );
        assert_eq!(
            Target::parse("http://1.2.3.4:5"),
            Some(Target::Static("http://1.2.3.4:5".into()))
        );
        assert_eq!(Target::parse("dns:///svc"), None);
        assert_eq!(Target::parse("dns:///:80"), None);
    }
}
