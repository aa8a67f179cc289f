//! Running `strata-load run` the way the ghz-compatibility tests do: ghz's test data, a scratch directory each,
//! the binary as a process of its own, and its JSON report.

#![allow(dead_code)] // each test crate uses part of it

use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;

/// A file of ghz's test data (tests/ghz-testdata).
pub fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/ghz-testdata")
        .join(name)
}

/// The path of ghz's `greeter.proto`, as `--proto` takes it.
pub fn greeter_proto() -> String {
    testdata("greeter.proto").display().to_string()
}

/// A scratch directory of this test's own.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-ghz-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Runs `strata-load run` with `args` (off the runtime's threads: it blocks).
pub async fn strata_load(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_strata-load"))
            .arg("run")
            .args(&args)
            .output()
            .expect("strata-load runs")
    })
    .await
    .expect("joined")
}

/// Owned arguments from string slices.
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| (*a).to_owned()).collect()
}

/// Runs and parses the JSON report (it must succeed).
pub async fn run_json(mut list: Vec<String>) -> Value {
    list.extend(args(&["-O", "json"]));
    let output = strata_load(list.clone()).await;
    json_report(output, &list)
}

/// What a run that had to succeed printed on its standard output; `run` names it if it failed.
pub fn succeeded(output: Output, run: &dyn std::fmt::Debug) -> Vec<u8> {
    assert!(
        output.status.success(),
        "{run:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The JSON report a run that had to succeed printed; `run` names it if it failed.
pub fn json_report(output: Output, run: &dyn std::fmt::Debug) -> Value {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let stdout = succeeded(output, run);
    serde_json::from_slice(&stdout).unwrap_or_else(|e| panic!("{run:?}: not JSON ({e}): {stderr}"))
}

/// How many calls a JSON report counts as `OK`.
pub fn ok_count(report: &Value) -> u64 {
    report["statusCodeDistribution"]["OK"].as_u64().unwrap_or(0)
}
