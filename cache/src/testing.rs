//! Test support (feature `test-support`): a real `redis-server` (or a 3-master Redis Cluster) on random loopback
//! ports, killed when dropped.
//!
//! Integration tests of this crate and of the gateway use it; it is not part of the cache's API.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server child process of this test.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: std::path::PathBuf,
    extra_args: Vec<String>,
}

impl RedisServer {
    /// Starts redis-server on a free port and waits until it answers. A port another process took between being
    /// chosen and being bound (tests run in parallel) makes the server exit: another port is tried.
    pub fn start() -> Self {
        for _ in 0..5 {
            if let Some(server) = Self::try_start_with(free_port(), Vec::new()) {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Starts redis-server on `port` (e.g. the port of a server this test killed) and waits until it answers.
    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, Vec::new())
    }

    fn start_with(port: u16, extra_args: Vec<String>) -> Self {
        Self::try_start_with(port, extra_args)
            .unwrap_or_else(|| panic!("redis-server on port {port} did not start (port taken?)"))
    }

    fn try_start_with(port: u16, extra_args: Vec<String>) -> Option<Self> {
        let dir =
            std::env::temp_dir().join(format!("strata-test-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut server = Self {
            port,
            child: None,
            dir,
            extra_args,
        };
        server.spawn().then_some(server)
    }

    /// Starts the child and waits until it answers; `false` if it exited first (its port was taken).
    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH (scripts/test installs it)");
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some())
            {
                self.child = None;
                return false;
            }
            if self.is_ours() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server on port {} did not answer within 10 s",
            self.port
        );
    }

    /// Whether the server answering on the port is this one (by its directory), not another test's.
    fn is_ours(&self) -> bool {
        let ours = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| {
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("dir")
                    .query::<Vec<String>>(&mut c)
            })
            .is_ok_and(|reply| reply.get(1).map(std::path::PathBuf::from) == Some(ours.clone()))
    }

    /// The URL the gateway connects to.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: nothing is persisted).
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "redis-server could not restart on port {} (taken meanwhile?)",
            self.port
        );
    }

    /// A synchronous client connection.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connect to test redis")
    }

    /// The server's process id (to freeze it with SIGSTOP, say).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Every key in the server.
    pub fn keys(&self) -> Vec<String> {
        redis::cmd("KEYS")
            .arg("*")
            .query(&mut self.client())
            .unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port that was free a moment ago (for servers that must be told their port, such as redis-server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

/// A 3-master Redis Cluster of redis-server children (no replicas), killed when dropped.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, joins them into a cluster, and waits until it serves every slot.
    pub fn start() -> Self {
        let ports = cluster_ports(3);
        let nodes: Vec<RedisServer> = ports
            .iter()
            .map(|port| {
                RedisServer::start_with(
                    *port,
                    ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]
                        .iter()
                        .map(|s| s.to_string())
                        .chain([
                            "--cluster-config-file".to_owned(),
                            format!("nodes-{port}.conf"),
                        ])
                        .collect(),
                )
            })
            .collect();
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli must be on PATH (it comes with redis-server)");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = Self { nodes };
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if cluster.nodes.iter().all(|n| n.cluster_ok()) {
                return cluster;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("Redis Cluster on {addrs:?} did not reach cluster_state:ok within 20 s");
    }

    /// The URLs of its nodes, for `cache.l2.cluster`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Kills master `i` (0–2): its slots have no server until it is restarted (there are no replicas).
    pub fn kill_master(&mut self, i: usize) {
        self.nodes[i].kill();
    }
}

impl RedisServer {
    fn cluster_ok(&self) -> bool {
        redis::cmd("CLUSTER")
            .arg("INFO")
            .query::<String>(&mut self.client())
            .is_ok_and(|info| info.contains("cluster_state:ok"))
    }
}

/// `n` free loopback ports whose cluster bus ports (port + 10000) are free too.
fn cluster_ports(n: usize) -> Vec<u16> {
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        let port = free_port();
        let bus_free =
            port <= 55_535 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok();
        if bus_free && !ports.contains(&port) {
            ports.push(port);
        }
    }
    ports
}
