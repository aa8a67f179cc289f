//! The real `strata` binary as a child process, for what only a process shows: SIGKILL, SIGTERM, exit codes.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tonic::transport::Channel;

use super::free_port;
use super::pb::lookup_client::LookupClient;

/// A `strata serve` process (so the test can kill it with SIGKILL), killed when dropped.
pub struct GatewayProcess {
    child: Child,
    /// Every line it wrote to stderr so far.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The data listener.
    pub addr: std::net::SocketAddr,
    /// The admin listener.
    pub admin: std::net::SocketAddr,
    config: std::path::PathBuf,
}

impl GatewayProcess {
    /// Writes the config with fresh ports for both listeners, starts `strata serve`, and waits until it says it
    /// serves. Ports another process took between being chosen and being bound (tests run in parallel) make the
    /// gateway exit: fresh ones are tried.
    pub async fn start(yaml_without_listeners: &str) -> Self {
        for _ in 0..5 {
            if let Some(process) = Self::try_start(yaml_without_listeners).await {
                return process;
            }
        }
        panic!("strata serve did not start on any of 5 pairs of free ports");
    }

    async fn try_start(yaml_without_listeners: &str) -> Option<Self> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        let yaml = yaml_without_listeners
            .replace("listen: 127.0.0.1:0\n", &format!("listen: {addr}\n"))
            .replace(
                "admin: { listen: 127.0.0.1:0",
                &format!("admin: {{ listen: {admin}"),
            );
        let config = std::env::temp_dir().join(format!(
            "strata-process-{}-{}.yaml",
            std::process::id(),
            addr.port()
        ));
        std::fs::write(&config, yaml).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start strata");
        // It logs `strata gateway serving` once both listeners are its own; it exits if a port was taken.
        let stderr = child.stderr.take().expect("piped");
        let (serving, said) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stderr);
            let mut line = String::new();
            let mut told = false;
            while std::io::BufRead::read_line(&mut lines, &mut line).is_ok_and(|n| n > 0) {
                if !told && line.contains("strata gateway serving") {
                    let _ = serving.send(());
                    told = true;
                }
                kept.lock()
                    .expect("log lock")
                    .push(std::mem::take(&mut line));
            }
        });
        let up = tokio::task::spawn_blocking(move || said.recv_timeout(Duration::from_secs(10)))
            .await
            .is_ok_and(|r| r.is_ok());
        let process = Self {
            child,
            log,
            addr,
            admin,
            config,
        };
        // Dropped when it did not start: killed, its config removed.
        up.then_some(process)
    }

    /// Waits (at most `within`) for a log line containing `text`; the line.
    pub async fn log_line(&self, text: &str, within: Duration) -> String {
        let until = tokio::time::Instant::now() + within;
        loop {
            let found = self
                .log
                .lock()
                .expect("log lock")
                .iter()
                .find(|l| l.contains(text))
                .cloned();
            if let Some(line) = found {
                return line;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "no log line with `{text}` within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A client of the test service through it.
    pub async fn client(&self) -> LookupClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect to strata serve");
        LookupClient::new(channel)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory (VmRSS), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/PID/status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    /// Kills it with SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GatewayProcess {
    /// Sends SIGTERM (a graceful shutdown).
    pub fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM");
    }

    /// Waits (at most `within`) for it to exit; its exit status.
    pub async fn exited(&mut self, within: Duration) -> std::process::ExitStatus {
        let until = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "strata did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.config);
    }
}
