//! A `redis-server` of the demo's or benchmark's own, on a random loopback port, stopped when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::held_port::HeldPort;

/// How long a starting redis-server may take to accept connections.
const START_WITHIN: Duration = Duration::from_secs(10);

/// A redis-server child process.
#[derive(Debug)]
pub struct RedisChild {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
    /// Its port, held for as long as it runs: what answers there is this child.
    _port: HeldPort,
}

impl RedisChild {
    /// Starts redis-server if it is on PATH; `Ok(None)` when it is not installed.
    pub fn start_if_installed() -> anyhow::Result<Option<Self>> {
        let held = HeldPort::any()?;
        let port = held.addr.port();
        let dir =
            std::env::temp_dir().join(format!("strata-load-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let log = dir.join("redis.log");
        let spawned = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        let mut redis = Self {
            child,
            port,
            dir,
            _port: held,
        };
        let until = Instant::now() + START_WITHIN;
        let failure = loop {
            if let Some(status) = redis.child.try_wait()? {
                break format!("exited ({status})");
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Some(redis));
            }
            if Instant::now() >= until {
                break format!("did not listen within {} s", START_WITHIN.as_secs());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        let mut tail: Vec<&str> = log.lines().rev().take(5).collect();
        tail.reverse();
        anyhow::bail!(
            "redis-server on port {port} {failure}; the end of its log:\n{}",
            tail.join("\n")
        )
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The URL for the gateway's `cache.l2.url`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
