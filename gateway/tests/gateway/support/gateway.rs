//! The real gateway, started in-process on random loopback ports.

use std::net::SocketAddr;
use std::time::Duration;

use strata_gateway::{Config, Listeners};
use tokio::sync::oneshot;
use tonic::transport::Channel;

use super::backend::TestBackend;
use super::pb::lookup_client::LookupClient;

/// A running gateway.
pub struct TestGateway {
    /// The data listener.
    pub addr: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A config for one backend with `Get` cached for 30 s (varying on `x-tenant-id`) and everything else proxied.
/// `extra_cache` is added under `cache:` (e.g. an `l2:` block), `extra_top` at the top level.
pub fn config(backend_url: &str, extra_cache: &str, extra_top: &str) -> String {
    config_with_route(
        backend_url,
        "ttl: 30s, vary: [x-tenant-id]",
        extra_cache,
        extra_top,
    )
}

/// [`config`] with `route_cache` as the cached route's `cache:` block (inline YAML map contents).
pub fn config_with_route(
    backend_url: &str,
    route_cache: &str,
    extra_cache: &str,
    extra_top: &str,
) -> String {
    format!(
        r#"
listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
cache:
  namespace: strata
{extra_cache}
backends:
  lookup: {{ endpoints: ["{backend_url}"], timeout: 5s }}
routes:
  - match: /testing.v1.Lookup/Get
    backend: lookup
    cache: {{ {route_cache} }}
  - match: "*"
    backend: lookup
{extra_top}
"#
    )
}

/// [`config`] with no extra lines: L1 only, default limits.
pub fn config_for(backend_url: &str) -> String {
    config(backend_url, "", "")
}

/// Starts a test backend and a gateway configured by `make_config(backend_url)`.
pub async fn start(make_config: &dyn Fn(&str) -> String) -> (TestBackend, TestGateway) {
    let backend = TestBackend::start().await;
    let gateway = TestGateway::start(&make_config(&backend.url())).await;
    (backend, gateway)
}

/// The `cache:` lines for an L2 at `url`, with L1 disabled when `l1_off` (so every call shows what L2 did).
pub fn l2_block(url: &str, l1_off: bool) -> String {
    let l1 = if l1_off {
        "  l1: { max_bytes: 0 }\n"
    } else {
        ""
    };
    format!("{l1}  l2: {{ url: \"{url}\", timeout: 50ms }}\n")
}

/// The cluster's node URLs as the items of a YAML flow list (`"redis://…", "redis://…"`), for `l2.cluster`.
pub fn cluster_nodes(cluster: &strata_cache::testing::RedisCluster) -> String {
    cluster
        .urls()
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

impl TestGateway {
    /// Validates `yaml` and starts the gateway on ephemeral ports.
    pub async fn start(yaml: &str) -> Self {
        let config =
            Config::from_yaml(yaml).unwrap_or_else(|e| panic!("test config invalid: {e}\n{yaml}"));
        Self::spawn(config, None).await
    }

    /// Starts the gateway from the config file at `path`, watching it for changes (as `strata serve` does).
    pub async fn start_watching(path: &std::path::Path) -> Self {
        let config = Config::load(path).unwrap_or_else(|e| panic!("test config invalid: {e}"));
        Self::spawn(config, Some(path.to_owned())).await
    }

    /// Starts a gateway with `loaded`, watching `path`, which already holds something else: the file changed between
    /// being read and the gateway starting.
    pub async fn start_watching_changed(loaded: &str, path: &std::path::Path) -> Self {
        let config =
            Config::from_yaml(loaded).unwrap_or_else(|e| panic!("test config invalid: {e}"));
        Self::spawn(config, Some(path.to_owned())).await
    }

    /// Binds both listeners on ephemeral ports and runs the gateway, reloading from `config_file` when given.
    async fn spawn(config: Config, config_file: Option<std::path::PathBuf>) -> Self {
        let data = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind data");
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind admin");
        let (addr, admin_addr) = (
            data.local_addr().expect("addr"),
            admin.local_addr().expect("addr"),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            strata_gateway::run_watching(config, config_file, Listeners { data, admin }, shutdown)
                .await
                .expect("gateway runs");
        });
        Self {
            addr,
            admin: admin_addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A client of the test service through the gateway.
    pub async fn client(&self) -> LookupClient<Channel> {
        LookupClient::new(self.channel().await)
    }

    /// A raw channel to the gateway.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect to gateway")
    }

    /// Signals shutdown without waiting for it (in-flight calls keep running, within `shutdown_grace`).
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts the gateway down gracefully (drains calls and queued L2 writes) and waits for it.
    pub async fn stop(mut self) {
        self.begin_stop();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("gateway stops within 15 s")
                .expect("gateway task");
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
