//! The processes a benchmark run starts — sample backends, the constant-answer server, nginx, Strata gateways —
//! each on a random loopback port, each killed when dropped; and the CPU pinning that keeps servers and clients off
//! each other's core.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::held_port::HeldPort;

/// A server process of the run.
#[derive(Debug)]
pub struct Process {
    /// What it is, for messages.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    /// Its ports, held for as long as it runs.
    _ports: Vec<HeldPort>,
}

impl Process {
    /// Starts `command`, which must listen on each of `ports` (the first is the one it serves on), and waits until
    /// it accepts connections there.
    pub fn start(name: &str, command: Command, ports: Vec<HeldPort>) -> anyhow::Result<Self> {
        Self::start_with_stderr(name, command, ports, Stdio::null())
    }

    /// [`Process::start`], its stderr written to `log`.
    pub fn start_logging_to(
        name: &str,
        command: Command,
        ports: Vec<HeldPort>,
        log: std::fs::File,
    ) -> anyhow::Result<Self> {
        Self::start_with_stderr(name, command, ports, Stdio::from(log))
    }

    fn start_with_stderr(
        name: &str,
        mut command: Command,
        ports: Vec<HeldPort>,
        stderr: Stdio,
    ) -> anyhow::Result<Self> {
        let addr = ports
            .first()
            .map(|port| port.addr)
            .context("a server needs a port")?;
        let child = command
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {name} ({command:?})"))?;
        let mut process = Self {
            name: name.to_owned(),
            addr,
            child,
            _ports: ports,
        };
        let until = Instant::now() + Duration::from_secs(20);
        // The port is held: whoever accepts there is this child.
        while std::net::TcpStream::connect(addr).is_err() {
            if let Some(status) = process.child.try_wait()? {
                anyhow::bail!("{name} exited ({status}) before listening on {addr}");
            }
            if Instant::now() > until {
                anyhow::bail!("{name} did not listen on {addr} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(process)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory, from /proc.
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_bytes(self.pid())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // A server that died before the end made some figures meaningless: say so.
        if let Ok(Some(status)) = self.child.try_wait() {
            eprintln!("warning: {} exited during the run ({status})", self.name);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of process `pid` (VmRSS), in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Which CPUs servers and clients run on.
#[derive(Debug, Clone)]
pub struct Pinning {
    /// CPU list for servers (`taskset -c` syntax), if pinned.
    pub servers: Option<String>,
    /// CPU list for clients, if pinned.
    pub clients: Option<String>,
}

impl Pinning {
    /// Servers on the first half of the CPUs, clients on the second, when `wanted`, there are two CPUs or more and
    /// taskset is installed; otherwise no pinning.
    pub fn new(wanted: bool) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let has_taskset = Command::new("taskset")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !wanted || cpus < 2 || !has_taskset {
            return Self {
                servers: None,
                clients: None,
            };
        }
        let half = cpus / 2;
        let list = |from: usize, to: usize| {
            if to - from == 1 {
                from.to_string()
            } else {
                format!("{from}-{}", to - 1)
            }
        };
        Self {
            servers: Some(list(0, half)),
            clients: Some(list(half, cpus)),
        }
    }

    /// Says where things run, for the report.
    pub fn describe(&self) -> String {
        match (&self.servers, &self.clients) {
            (Some(s), Some(c)) => {
                format!("servers pinned to CPU {s}, load clients to CPU {c} (taskset)")
            }
            _ => "not pinned".to_owned(),
        }
    }

    /// `program`, run on the server CPUs. Pinned from its start, so a runtime that sizes its thread pool by the CPUs
    /// it may use (tokio) starts no more threads than it has CPUs — threads time-sliced on one CPU add
    /// scheduler-tick latency (milliseconds) to the tail.
    pub fn server_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        pinned(program, self.servers.as_deref())
    }

    /// Pins every thread of the already running process `pid` to the server CPUs.
    pub fn pin_server(&self, pid: u32) -> anyhow::Result<()> {
        pin(pid, self.servers.as_deref())
    }

    /// Pins every thread of this process (the in-process load client) to the client CPUs.
    pub fn pin_this_client(&self) -> anyhow::Result<()> {
        pin(std::process::id(), self.clients.as_deref())
    }

    /// `program`, run on the client CPUs.
    pub fn client_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        pinned(program, self.clients.as_deref())
    }
}

fn pinned(program: impl AsRef<std::ffi::OsStr>, cpus: Option<&str>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.args(["-c", cpus]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

fn pin(pid: u32, cpus: Option<&str>) -> anyhow::Result<()> {
    let Some(cpus) = cpus else { return Ok(()) };
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .context("taskset")?;
    anyhow::ensure!(
        status.success(),
        "taskset could not pin process {pid} to CPU {cpus}"
    );
    Ok(())
}

/// The `strata` binary: `STRATA_BIN`, or next to this executable.
pub fn strata_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("STRATA_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name("strata");
    anyhow::ensure!(
        path.exists(),
        "the gateway binary is not at {} (build it: cargo build --release -p strata-gateway, or set STRATA_BIN)",
        path.display()
    );
    Ok(path)
}

/// Starts the sample backend (this executable's `backend` command) with `latency` per lookup.
pub fn backend(latency: &str, pinning: &Pinning) -> anyhow::Result<Process> {
    let port = HeldPort::any()?;
    let mut command = pinning.server_command(std::env::current_exe()?);
    let addr_text = port.addr.to_string();
    command.args(["backend", "--listen", &addr_text, "--latency", latency]);
    command.args(["--size", "100000000"]);
    Process::start(&format!("sample backend ({latency})"), command, vec![port])
}

/// Which constant-answer server to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Constant {
    /// The leanest tonic handler on a plain tonic server with default settings: the ceiling the performance issue
    /// names.
    Tonic,
    /// Bare hyper sending a pre-encoded reply: faster still, a stricter reference.
    Hyper,
}

/// Starts a constant-answer server (this executable's `constant` command).
pub fn constant(kind: Constant, pinning: &Pinning) -> anyhow::Result<Process> {
    let port = HeldPort::any()?;
    let mut command = pinning.server_command(std::env::current_exe()?);
    command.args(["constant", "--listen", &port.addr.to_string()]);
    let name = match kind {
        Constant::Tonic => {
            command.arg("--tonic");
            "constant-answer server (tonic)"
        }
        Constant::Hyper => "constant-answer server (bare hyper)",
    };
    Process::start(name, command, vec![port])
}

/// Starts a Strata gateway from `yaml` (whose `listen` and `admin.listen` it sets) with its config in `dir`.
pub fn gateway(name: &str, yaml: &str, dir: &Path, pinning: &Pinning) -> anyhow::Result<Process> {
    let (data, admin) = (HeldPort::any()?, HeldPort::any()?);
    let yaml = yaml
        .replacen("listen: 127.0.0.1:0", &format!("listen: {}", data.addr), 1)
        .replacen(
            "{ listen: 127.0.0.1:0 }",
            &format!("{{ listen: \"{}\" }}", admin.addr),
            1,
        );
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml)?;
    let mut command = pinning.server_command(strata_binary()?);
    command.arg("serve").arg("--config").arg(&file);
    // Its logs go to a file, as a container runtime would take them (writing to /dev/null would flatter the access
    // log).
    let log = std::fs::File::create(dir.join(format!("{name}.stderr.log")))?;
    Process::start_logging_to(&format!("gateway {name}"), command, vec![data, admin], log)
}

/// Starts nginx as a plain gRPC proxy (`grpc_pass`) to `backend`, as a single process; `None` if not installed.
pub fn nginx(
    backend: SocketAddr,
    dir: &Path,
    pinning: &Pinning,
) -> anyhow::Result<Option<Process>> {
    let installed = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(program) = installed else {
        return Ok(None);
    };
    let port = HeldPort::any()?;
    let addr = port.addr;
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("tmp"))?;
    // One process, no daemon: the benchmark owns and ends it like any other child.
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; pid nginx.pid; error_log error.log error;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off; keepalive_requests 100000000;\n\
           client_body_temp_path tmp/body; proxy_temp_path tmp/proxy; fastcgi_temp_path tmp/fcgi;\n\
           uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;\n\
           upstream backend {{ server {backend}; keepalive 64; keepalive_requests 100000000; }}\n\
           server {{ listen {addr} http2; location / {{ grpc_pass grpc://backend; }} }} }}\n"
    );
    std::fs::write(prefix.join("nginx.conf"), conf)?;
    let mut command = pinning.server_command(program);
    command
        .arg("-p")
        .arg(format!("{}/", prefix.display()))
        .args(["-c", "nginx.conf", "-e", "error.log"]);
    Process::start("nginx grpc_pass", command, vec![port]).map(Some)
}
