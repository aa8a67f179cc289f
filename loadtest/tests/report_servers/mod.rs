//! The servers that read ghz's reports, run for real: a Prometheus Pushgateway and an InfluxDB 1.x (both Debian
//! packages scripts/test installs), each on loopback ports held for it, and the HTTP exchange the tests use on them.

use std::net::SocketAddr;

use strata_cache::testing::PortHold;

/// A Pushgateway on a held loopback port.
pub async fn start_pushgateway(dir: &std::path::Path) -> (Server, SocketAddr) {
    let data = dir.join("pushgateway.data");
    start_held("/-/ready", 0, |web, _| {
        let mut command = std::process::Command::new("prometheus-pushgateway");
        command
            .arg(format!("--web.listen-address={web}"))
            .arg(format!("--persistence.file={}", data.display()));
        command
    })
    .await
}

/// An InfluxDB 1.x server (Debian's influxdb, installed by scripts/test) on held loopback ports (HTTP, and its RPC
/// service's), its files in `dir`.
pub async fn start_influxdb(dir: &std::path::Path) -> (Server, SocketAddr) {
    let dir = dir.to_owned();
    start_held("/ping", 1, move |http, more| {
        let config = dir.join("influxdb.conf");
        let d = dir.display();
        std::fs::write(
            &config,
            format!(
                "reporting-disabled = true\nbind-address = \"{}\"\n[meta]\n  dir = \"{d}/meta\"\n\
                 [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
                 [http]\n  bind-address = \"{http}\"\n  log-enabled = false\n[monitor]\n  store-enabled = false\n",
                more[0]
            ),
        )
        .expect("influxdb config");
        let mut command = std::process::Command::new("influxd");
        command.arg("-config").arg(&config);
        command
    })
    .await
}

/// Starts the server `command` makes for held loopback ports (`web`, and `more` others it listens on) and waits
/// until `ready` answers 2xx on `web`. The ports stay held (see `PortHold`: the server, written in Go, binds beside
/// the hold), so no other test's listener can be given one, and what answers there is this server.
async fn start_held(
    ready: &str,
    more: usize,
    command: impl FnOnce(SocketAddr, &[SocketAddr]) -> std::process::Command,
) -> (Server, SocketAddr) {
    let ports: Vec<PortHold> = (0..=more).map(|_| PortHold::any()).collect();
    let addrs: Vec<SocketAddr> = ports.iter().map(PortHold::addr).collect();
    let web = addrs[0];
    let mut command = command(web, &addrs[1..]);
    let program = command.get_program().to_string_lossy().into_owned();
    let child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} must be on PATH (scripts/test installs it): {e}"));
    let mut server = Server {
        child,
        _ports: ports,
    };
    for _ in 0..300 {
        if http(web, "GET", ready, "").await.starts_with("HTTP/1.1 2") {
            return (server, web);
        }
        if let Some(status) = server.child.try_wait().expect("wait") {
            panic!("{program} exited ({status}) before answering {ready} on {web}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{program} did not answer {ready} on {web} within 30 s");
}

/// A server child of a test, killed when dropped, with the ports held for it.
pub struct Server {
    child: std::process::Child,
    _ports: Vec<PortHold>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange (connection closed after it); an empty string if nothing answers.
pub async fn http(to: std::net::SocketAddr, method: &str, path: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(to).await else {
        return String::new();
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {to}\r\nContent-Type: text/plain; version=0.0.4\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}
