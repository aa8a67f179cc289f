//! Every ready-made config (loadtest/ghz/*.json for ghz users, loadtest/scenarios/* with the x-strata section)
//! runs with `strata-load run` against the sample backend behind a real gateway, and its JSON report is ghz's.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::{Gateway, SampleBackend, repo_root};

fn configs() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["loadtest/ghz", "loadtest/scenarios"] {
        for entry in std::fs::read_dir(repo_root().join(dir)).expect("config directory") {
            files.push(entry.expect("entry").path());
        }
    }
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_config_runs_and_reports_in_ghz_json() {
    let backend = SampleBackend::start();
    let gateway = Gateway::start(backend.port).await;
    let files = configs();
    assert!(files.len() >= 6, "{files:?}");
    for file in files {
        let addr = gateway.addr.clone();
        let config = file.clone();
        // Their own host, length and rate are for a real run: here, the test's gateway for a short while.
        let output = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_strata-load"))
                .current_dir(repo_root())
                .args(["run", "--config"])
                .arg(&config)
                // `wait`: the calls in flight when the 400 ms end are answered, not cut (ghz's default, `close`,
                // would report them as errors).
                .args([
                    addr.as_str(),
                    "--duration",
                    "400ms",
                    "--duration-stop",
                    "wait",
                    "--format",
                    "json",
                ])
                .output()
                .expect("strata-load runs")
        })
        .await
        .expect("joined");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{}: {stderr}", file.display());
        let report: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {stderr}", file.display()));
        let count = report["count"].as_u64().unwrap_or(0);
        assert!(count > 0, "{}: {report}", file.display());
        let statuses = report["statusCodeDistribution"]
            .as_object()
            .expect("statuses");
        assert_eq!(
            statuses.get("OK").and_then(|v| v.as_u64()),
            Some(count),
            "{}: every call OK: {statuses:?} {}",
            file.display(),
            report["errorDistribution"]
        );
        for field in [
            "total",
            "average",
            "fastest",
            "slowest",
            "rps",
            "latencyDistribution",
            "histogram",
        ] {
            assert!(
                report.get(field).is_some(),
                "{}: no {field}",
                file.display()
            );
        }
        // Every OK answer is counted by its x-strata-cache value; GetItem goes through the cache, so configs
        // calling it see cache levels (ListItems is proxied: no header, counted as `none`).
        let cache = report["x-strata"]["cache"]
            .as_object()
            .expect("cache counts");
        let counted: u64 = cache.values().filter_map(|v| v.as_u64()).sum();
        assert_eq!(counted, count, "{}: {cache:?}", file.display());
        let calls_get_item = std::fs::read_to_string(&file)
            .expect("read")
            .contains("GetItem");
        assert_eq!(
            cache.contains_key("l1") || cache.contains_key("miss"),
            calls_get_item,
            "{}: {cache:?}",
            file.display()
        );
    }
    gateway.stop().await;
}

/// Runs `strata-load run` on a config file holding `text`; it must fail: returns what it said.
fn refusal(text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("strata-run-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("bad.json");
    std::fs::write(&file, text).expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_strata-load"))
        .args(["run", "--config"])
        .arg(&file)
        .output()
        .expect("strata-load runs");
    std::fs::remove_dir_all(dir).expect("clean up");
    assert!(!output.status.success(), "{text} was accepted");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_bad_config_is_refused_with_the_key_named() {
    // A typo'd ghz key.
    let said = refusal(
        r#"{"call": "demo.v1.Catalog.GetItem", "host": "127.0.0.1:1", "insecure": true, "concurency": 5}"#,
    );
    assert!(said.contains("concurency"), "{said}");
    // A bad x-strata value.
    let said = refusal(
        r#"{"call": "demo.v1.Catalog.GetItem", "host": "127.0.0.1:1", "insecure": true, "data": {"id": "{{.Key}}"},
            "x-strata": {"keys": {"distribution": "zipf", "count": 10, "exponent": -1}}}"#,
    );
    assert!(said.contains("x-strata.keys.exponent"), "{said}");
    // A template naming what ghz's call data does not have: refused before anything connects (nothing listens on
    // port 1), naming the call, the template and the fields there are.
    let proto = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/ghz-testdata/greeter.proto"
    );
    let said = refusal(&format!(
        r#"{{"call": "helloworld.Greeter.SayHello", "proto": "{proto}", "host": "127.0.0.1:1", "insecure": true,
            "data": {{"name": "{{{{.Nope}}}}"}}}}"#
    ));
    assert!(
        said.contains("helloworld.Greeter/SayHello: data")
            && said.contains("no field Nope")
            && said.contains(".UUID"),
        "{said}"
    );
    assert!(!said.contains("cannot connect"), "{said}");
}

/// As ghz, a proto's imports are also looked up from the working directory: `svc/api.proto` importing
/// `svc/types.proto` compiles when run from the directory holding `svc/`.
#[test]
fn a_proto_imports_from_the_working_directory() {
    let dir = std::env::temp_dir().join(format!("strata-run-cwd-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("svc")).expect("temp dir");
    std::fs::write(
        dir.join("svc/types.proto"),
        "syntax = \"proto3\";\npackage svc;\nmessage Ask { string q = 1; }\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("svc/api.proto"),
        "syntax = \"proto3\";\npackage svc;\nimport \"svc/types.proto\";\nservice Api { rpc Get(Ask) returns (Ask); }\n",
    )
    .expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_strata-load"))
        .current_dir(&dir)
        .args([
            "run",
            "--insecure",
            "--proto",
            "svc/api.proto",
            "--call",
            "svc.Api.Get",
        ])
        .args(["-d", r#"{"q": "x"}"#, "-n", "1", "127.0.0.1:1"])
        .output()
        .expect("strata-load runs");
    std::fs::remove_dir_all(dir).expect("clean up");
    let said = String::from_utf8_lossy(&output.stderr);
    // Nothing listens on port 1: getting as far as connecting means the schema compiled and the data fit it.
    assert!(
        said.contains("cannot connect") && !said.contains("proto:"),
        "{said}"
    );
}
