//! `strata-load run` as a ghz user meets it: ghz's own test data (tests/ghz-testdata, copied from ghz with its
//! license) run unchanged but for `host` and `proto`, against a real gRPC server of ghz's Greeter — through a real
//! gateway where the call is proxied, directly where TLS is the point — with ghz's flags and templates. (Its reports:
//! ghz_reports.rs.)

mod ghz_run;
mod greeter;
mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;

use ghz_run::{args, greeter_proto, ok_count, run_json, scratch, testdata};
use greeter::Greeter;
use serde_json::Value;
use support::Gateway;
/// ghz's config file `name`, with only `host` and `proto` edited (textually, whatever its format).
fn edited(name: &str, host: &str, dir: &std::path::Path) -> PathBuf {
    let text = std::fs::read_to_string(testdata(name)).expect("ghz config");
    let edited: Vec<String> = text
        .lines()
        .map(|line| {
            let key = line.trim_start().trim_start_matches('"');
            let indent = &line[..line.len() - line.trim_start().len()];
            let comma = if line.trim_end().ends_with(',') {
                ","
            } else {
                ""
            };
            if name.ends_with(".json") && key.starts_with("host\"") {
                format!("{indent}\"host\": \"{host}\"{comma}")
            } else if name.ends_with(".json") && key.starts_with("proto\"") {
                format!("{indent}\"proto\": \"{}\"{comma}", greeter_proto())
            } else if key.starts_with("host =") {
                format!("host = \"{host}\"")
            } else if key.starts_with("proto =") {
                format!("proto = \"{}\"", greeter_proto())
            } else {
                line.to_owned()
            }
        })
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, edited.join("\n")).expect("write config");
    path
}

/// ghz's testdata configs (JSON and TOML; and config.json's keys as YAML) run as they are: each sends `total`
/// requests (or stops at `max-duration`), leaves `skipFirst` out, renders `{{.TimestampUnix}}` in the data and
/// `{{.RequestNumber}}` in the metadata, through a gateway that proxies the Greeter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghz_testdata_configs_run_unchanged_but_for_host_and_proto() {
    let greeter = Greeter::start().await;
    let gateway = Gateway::start(greeter.addr.port()).await;
    let dir = scratch("configs");
    let json = edited("config.json", &gateway.addr, &dir);
    let yaml = dir.join("config.yaml");
    let as_value: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("read")).expect("json");
    std::fs::write(&yaml, serde_yaml::to_string(&as_value).expect("yaml")).expect("write");
    for (config, total, skip) in [
        (json, 5000u64, 5u64),
        (edited("config.toml", &gateway.addr, &dir), 5000, 5),
        (edited("config5.toml", &gateway.addr, &dir), 5000, 100),
        (yaml, 5000, 5),
    ] {
        let before = greeter.calls().len();
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let report = run_json(vec!["--config".into(), config.display().to_string()]).await;
        let name = config.display();
        // max-duration (7 s) bounds the run; on any box that can send 5000 small calls in 7 s, all are sent.
        let count = report["count"].as_u64().expect("count");
        if report["endReason"] == "normal" {
            assert_eq!(count, total - skip, "{name}: {report}");
        }
        assert_eq!(
            ok_count(&report),
            count,
            "{name}: {}",
            report["errorDistribution"]
        );
        let calls: Vec<_> = greeter.calls()[before..].to_vec();
        assert_eq!(calls.len() as u64, count + skip, "{name}");
        let mut numbers = BTreeSet::new();
        for call in &calls {
            let stamp: u64 = call.names[0]
                .strip_prefix("Bob ")
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| {
                    panic!("{name}: {:?} is not Bob {{.TimestampUnix}}", call.names)
                });
            assert!(
                stamp + 2 >= started && stamp <= started + 60,
                "{name}: {stamp}"
            );
            numbers.insert(
                call.metadata["rn"]
                    .parse::<u64>()
                    .expect("rn is a request number"),
            );
        }
        assert_eq!(
            numbers,
            (0..count + skip).collect(),
            "{name}: every request number once"
        );
    }
    gateway.stop().await;
    std::fs::remove_dir_all(dir).expect("clean up");
}

/// Without a proto, the schema comes from the server's reflection — here a server offering only v1alpha, through
/// the gateway — and `--reflect-metadata` goes with the reflection request only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_falls_back_to_v1alpha_and_carries_its_own_metadata() {
    let greeter = Greeter::start().await;
    let gateway = Gateway::start(greeter.addr.port()).await;
    let report = run_json(args(&[
        "--insecure",
        "--call",
        "helloworld.Greeter.SayHello",
        "-d",
        r#"{"name": "reflected"}"#,
        "-n",
        "20",
        "-c",
        "2",
        "--reflect-metadata",
        r#"{"authorization": "Bearer reflect-only"}"#,
        &gateway.addr,
    ]))
    .await;
    assert_eq!(ok_count(&report), 20, "{report}");
    let reflected = greeter
        .record
        .reflection_metadata
        .lock()
        .expect("lock")
        .clone();
    assert!(
        reflected
            .iter()
            .any(|m| m.get("authorization").map(String::as_str) == Some("Bearer reflect-only")),
        "{reflected:?}"
    );
    assert!(
        greeter
            .calls()
            .iter()
            .all(|c| !c.metadata.contains_key("authorization"))
    );
    gateway.stop().await;
}

/// `-B` (ghz's hello_request_data.bin), `-D` (its data.json, a template), `-M` (its metadata.json), and its
/// precompiled bundle.protoset instead of the proto.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghz_data_files_binary_metadata_and_protoset() {
    let greeter = Greeter::start().await;
    let host = greeter.addr.to_string();
    let binary = testdata("hello_request_data.bin").display().to_string();
    let metadata = testdata("metadata.json").display().to_string();
    let report = run_json(args(&[
        "--insecure",
        "--proto",
        &greeter_proto(),
        "--call",
        "helloworld.Greeter.SayHello",
        "-B",
        &binary,
        "-M",
        &metadata,
        "-n",
        "10",
        "-c",
        "1",
        &host,
    ]))
    .await;
    assert_eq!(ok_count(&report), 10, "{report}");
    assert_eq!(report["options"]["binary"], true);
    // As ghz records them: the metadata read from the file, as written.
    assert_eq!(
        report["options"]["metadata"],
        serde_json::json!({"request-id": "{{.RequestNumber}}"})
    );
    let calls = greeter.calls();
    assert!(calls.iter().all(|c| c.names == ["bob"]), "{calls:?}");
    let ids: BTreeSet<String> = calls
        .iter()
        .map(|c| c.metadata["request-id"].clone())
        .collect();
    assert_eq!(ids, (0..10).map(|n| n.to_string()).collect());

    let data = testdata("data.json").display().to_string();
    let protoset = testdata("bundle.protoset").display().to_string();
    let report = run_json(args(&[
        "--insecure",
        "--protoset",
        &protoset,
        "--call",
        "helloworld.Greeter/SayHello",
        "-D",
        &data,
        "-n",
        "5",
        &host,
    ]))
    .await;
    assert_eq!(ok_count(&report), 5, "{report}");
    let names: Vec<String> = greeter.calls()[10..]
        .iter()
        .map(|c| c.names[0].clone())
        .collect();
    assert!(
        names.iter().all(|n| n
            .strip_prefix("Some Name ")
            .is_some_and(|t| t.parse::<u64>().is_ok())),
        "{names:?}"
    );
}

/// Reflection as another implementation serves it: Python grpcio's (grpcio-reflection, v1alpha only, from
/// scripts/test's target/venv) describing ghz's Greeter, which it does not implement — so the schema comes by
/// reflection and every call is answered `Unimplemented`, counted as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_served_by_python_grpcio() {
    use std::io::BufRead;
    let dir = scratch("grpcio");
    let mut compiler = protox::Compiler::new([testdata("")]).expect("compiler");
    compiler.open_file("greeter.proto").expect("greeter.proto");
    let set = dir.join("greeter.protoset");
    std::fs::write(&set, compiler.encode_file_descriptor_set()).expect("write");
    let python = std::env::var_os("STRATA_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| support::repo_root().join("target/venv/bin/python"));
    let mut server = std::process::Command::new(&python)
        .arg(support::repo_root().join("gateway/tests/python/reflection_server.py"))
        .arg(&set)
        .arg("helloworld.Greeter")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{} ({e}): scripts/test installs grpcio there",
                python.display()
            )
        });
    let mut port = String::new();
    std::io::BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut port)
        .expect("the server's port");
    let report = run_json(args(&[
        "--insecure",
        "--call",
        "helloworld.Greeter.SayHello",
        "-d",
        r#"{"name": "py"}"#,
        "-n",
        "5",
        "-c",
        "1",
        &format!("127.0.0.1:{}", port.trim()),
    ]))
    .await;
    drop(server.stdin.take());
    let _ = server.wait();
    std::fs::remove_dir_all(dir).expect("clean up");
    assert_eq!(report["count"], 5, "{report}");
    assert_eq!(
        report["statusCodeDistribution"]["Unimplemented"], 5,
        "{report}"
    );
}
