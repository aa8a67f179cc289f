//! A Strata gateway running in this process, on random loopback ports (for the demo and the benchmarks).

use std::net::SocketAddr;

use strata_gateway::{Config, Listeners};
use tokio::sync::oneshot;

/// A gateway started by [`LocalGateway::start`].
#[derive(Debug)]
pub struct LocalGateway {
    /// The data listener.
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), strata_gateway::StartError>>,
}

impl LocalGateway {
    /// Validates `yaml` (its `listen` addresses are ignored: both listeners use random loopback ports) and starts.
    pub async fn start(yaml: &str) -> anyhow::Result<Self> {
        let config = Config::from_yaml(yaml)?;
        let data = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = data.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(strata_gateway::run(
            config,
            Listeners { data, admin },
            async {
                let _ = stopped.await;
            },
        ));
        Ok(Self { addr, stop, task })
    }

    /// Shuts it down gracefully and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }
}

/// The Redis L2 of a [`catalog_config`].
#[derive(Debug, Clone, Copy)]
pub struct L2<'a> {
    /// The server's URL.
    pub url: &'a str,
    /// `cache.l2.timeout`: how long a Redis operation may take before the gateway carries on without it.
    pub timeout: &'a str,
    /// Whether replicas take the cross-replica lease before calling the backend (`cache.lease`).
    pub lease: bool,
}

impl<'a> L2<'a> {
    /// The Redis at `url` with a 25 ms timeout and no lease (the demo's and the benchmarks' setting).
    pub fn at(url: &'a str) -> Self {
        Self {
            url,
            timeout: "25ms",
            lease: false,
        }
    }
}

/// A gateway config for the sample backend at `backend_url`: `GetItem` cached for `ttl`, everything else proxied.
pub fn catalog_config(
    backend_url: &str,
    l1_max_bytes: &str,
    l2: Option<L2<'_>>,
    ttl: &str,
) -> String {
    let l2 = l2
        .map(|l2| {
            let lease = if l2.lease {
                "  lease: { ttl: 10s }\n"
            } else {
                ""
            };
            format!(
                "  l2: {{ url: \"{}\", timeout: {} }}\n{lease}",
                l2.url, l2.timeout
            )
        })
        .unwrap_or_default();
    format!(
        r#"
listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
cache:
  namespace: demo
  l1: {{ max_bytes: {l1_max_bytes} }}
{l2}backends:
  catalog: {{ endpoints: ["{backend_url}"], timeout: 2s }}
routes:
  - match: /demo.v1.Catalog/GetItem
    backend: catalog
    cache: {{ ttl: {ttl} }}
  - match: "*"
    backend: catalog
"#
    )
}
