//! What the loadtest end-to-end tests share: the sample backend as a process of its own, and a gateway in front of
//! it (GetItem cached, everything else proxied) on random loopback ports.

#![allow(dead_code)] // each test crate uses part of it

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use strata_gateway::{Config, Listeners};

/// The repository root (ghz configs name their proto relative to it, as ghz reads paths from the working directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A tool scripts/test installs into target/venv (overridable with an environment variable).
pub fn venv_tool(env_var: &str, name: &str) -> PathBuf {
    std::env::var_os(env_var).map_or_else(
        || repo_root().join("target/venv/bin").join(name),
        PathBuf::from,
    )
}

/// `strata-load backend` on a random port, killed when dropped.
pub struct SampleBackend {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl SampleBackend {
    /// Starts it on a port of its own choosing (no other process can take the port between choosing and binding it)
    /// with no lookup latency; returns once it listens.
    pub fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata-load"))
            .args(["backend", "--listen", "127.0.0.1:0", "--latency", "0ms"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the sample backend");
        // Its first line says where it listens: `… listening on 127.0.0.1:PORT`.
        let mut stderr = std::io::BufReader::new(child.stderr.take().expect("piped"));
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stderr, &mut line)
            .expect("the sample backend's first line");
        // The rest is drained, so that the backend never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in the sample backend's line: {line:?}"));
        Self { child, port }
    }
}

impl Drop for SampleBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway running in this test's runtime.
pub struct Gateway {
    /// Its data listener, host:port.
    pub addr: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), strata_gateway::StartError>>,
}

impl Gateway {
    /// Starts a gateway in front of the backend on `backend_port`: GetItem cached for 30 s, the rest proxied.
    pub async fn start(backend_port: u16) -> Self {
        let config = Config::from_yaml(&format!(
            r#"
listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
backends:
  catalog: {{ endpoints: ["http://127.0.0.1:{backend_port}"] }}
routes:
  - match: /demo.v1.Catalog/GetItem
    backend: catalog
    cache: {{ ttl: 30s }}
  - match: "*"
    backend: catalog
"#
        ))
        .expect("valid config");
        let data = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = data.local_addr().expect("addr").to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(strata_gateway::run(
            config,
            Listeners { data, admin },
            async {
                let _ = stopped.await;
            },
        ));
        Self { addr, stop, task }
    }

    /// Shuts it down and checks it ran without error.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("task").expect("gateway ran");
    }
}
