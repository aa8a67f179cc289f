//! Test support (feature `test-support`): a real `redis-server` (or a 3-master Redis Cluster) on random loopback
//! ports, killed when dropped.
//!
//! Integration tests of this crate and of the gateway use it; it is not part of the cache's API.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a starting redis-server may take to answer (a loaded CI machine is slow; a ready one answers at once).
const START_WITHIN: Duration = Duration::from_secs(30);

/// A redis-server child process of this test, on a port it holds for its whole life.
#[derive(Debug)]
pub struct RedisServer {
    hold: PortHold,
    child: Option<Child>,
    dir: std::path::PathBuf,
    extra_args: Vec<String>,
}

impl RedisServer {
    /// Starts redis-server on a free port and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(PortHold::any(), Vec::new())
    }

    /// Starts redis-server on the port `hold` kept for it (refused until now, given to no other test) and waits
    /// until it answers. The server keeps holding the port.
    pub fn start_on(hold: PortHold) -> Self {
        Self::start_with(hold, Vec::new())
    }

    fn start_with(hold: PortHold, extra_args: Vec<String>) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "strata-test-redis-{}-{}",
            std::process::id(),
            hold.port()
        ));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut server = Self {
            hold,
            child: None,
            dir,
            extra_args,
        };
        if let Err(why) = server.spawn() {
            panic!("{why}");
        }
        server
    }

    /// Starts the child and waits until it answers; the error says why not, with the end of the server's log.
    ///
    /// The port is held by this test (bound, not listening), so the kernel hands it to no other socket; redis-server
    /// binds beside the hold (both set SO_REUSEADDR) and is the only listener on it.
    fn spawn(&mut self) -> Result<(), String> {
        let port = self.port();
        let log = self.dir.join("redis.log");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH (scripts/test installs it)");
        self.child = Some(child);
        let until = Instant::now() + START_WITHIN;
        let failure = loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                break format!("redis-server on port {port} exited ({status})");
            }
            if self.is_ours() {
                return Ok(());
            }
            if Instant::now() >= until {
                self.kill();
                break format!(
                    "redis-server on port {port} did not answer within {} s",
                    START_WITHIN.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        let mut tail: Vec<&str> = log.lines().rev().take(10).collect();
        tail.reverse();
        Err(format!(
            "{failure}; the end of its log:\n{}",
            tail.join("\n")
        ))
    }

    /// Whether the server answering on the port is this one (by its directory). Every step is bounded: a listener
    /// that accepts and never answers costs one timeout, not the test.
    fn is_ours(&self) -> bool {
        let ours = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        let bound = Some(Duration::from_millis(500));
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|c| {
                c.set_read_timeout(bound)?;
                c.set_write_timeout(bound)?;
                Ok(c)
            })
            .and_then(|mut c| {
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("dir")
                    .query::<Vec<String>>(&mut c)
            })
            .is_ok_and(|reply| reply.get(1).map(std::path::PathBuf::from) == Some(ours.clone()))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.hold.port()
    }

    /// The URL the gateway connects to.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port())
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (still held: nobody took it meanwhile), empty: nothing is persisted.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(why) = self.spawn() {
            panic!("restart: {why}");
        }
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
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                let (hold, bus) = cluster_node_ports();
                let port = hold.port();
                let node = RedisServer::start_with(
                    hold,
                    ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]
                        .iter()
                        .map(|s| s.to_string())
                        .chain([
                            "--cluster-config-file".to_owned(),
                            format!("nodes-{port}.conf"),
                        ])
                        .collect(),
                );
                // The bus listens now; the node keeps its client port held.
                drop(bus);
                node
            })
            .collect();
        let ports: Vec<u16> = nodes.iter().map(RedisServer::port).collect();
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

/// A loopback port for a cluster node, and its cluster bus port (port + 10000), both held.
fn cluster_node_ports() -> (PortHold, PortHold) {
    loop {
        let hold = PortHold::any();
        let Some(bus_port) = hold.port().checked_add(10_000) else {
            continue;
        };
        if let Some(bus) = PortHold::try_on(SocketAddr::from(([127, 0, 0, 1], bus_port))) {
            return (hold, bus);
        }
    }
}

/// A loopback port bound but not listening: connections to it are refused, and the kernel gives it to no other
/// socket (a test's listener, an outgoing connection) while it is held. A server the test starts binds beside the
/// hold (SO_REUSEADDR on both), so the port cannot be taken between being chosen and being listened on.
#[derive(Debug)]
pub struct PortHold {
    _socket: tokio::net::TcpSocket,
    addr: SocketAddr,
}

impl PortHold {
    /// A free loopback port, held until dropped.
    pub fn any() -> Self {
        Self::on(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Holds `addr` (e.g. the address of a server the test just stopped).
    pub fn on(addr: SocketAddr) -> Self {
        Self::try_on(addr).unwrap_or_else(|| panic!("could not hold {addr}"))
    }

    fn try_on(addr: SocketAddr) -> Option<Self> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .ok()?;
        // Connections a stopped server closed may still linger on the port (TIME_WAIT): binding beside them is fine.
        socket.set_reuseaddr(true).ok()?;
        socket.bind(addr).ok()?;
        let addr = socket.local_addr().ok()?;
        Some(Self {
            _socket: socket,
            addr,
        })
    }

    /// The port held.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The address held.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}
