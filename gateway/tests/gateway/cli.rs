//! The `strata` binary: `check` names every bad field, `serve` refuses the same config, env overrides apply.

use std::io::Write;
use std::process::{Command, Output};

fn strata(args: &[&str], env: &[(&str, &str)], config: &str) -> Output {
    let mut file = tempfile_in_target();
    file.1.write_all(config.as_bytes()).expect("write config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.args(args).arg("--config").arg(&file.0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = cmd.output().expect("run strata");
    let _ = std::fs::remove_file(&file.0);
    output
}

fn tempfile_in_target() -> (std::path::PathBuf, std::fs::File) {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let path =
        std::env::temp_dir().join(format!("strata-cli-test-{}-{n}.yaml", std::process::id()));
    let file = std::fs::File::create(&path).expect("create config");
    (path, file)
}

const BAD: &str = r#"
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
cache:
  l1: { max_bytes: lots }
  l2: { url: "redis://127.0.0.1:6379", timeout: 25 }
backends:
  catalog: { endpoints: ["http://127.0.0.1:1"], timout: 2s }
routes:
  - match: /demo.v1.Catalog/GetItem
    backend: catalogue
    cache: { ttl: 30s }
"#;

const GOOD: &str = r#"
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
cache:
  l2: { url: "redis://:hunter2@127.0.0.1:6379" }
backends:
  catalog: { endpoints: ["http://127.0.0.1:1"] }
routes:
  - match: "*"
    backend: catalog
"#;

#[test]
fn check_names_every_bad_field_and_serve_refuses() {
    for command in ["check", "serve"] {
        let out = strata(&[command], &[], BAD);
        assert!(!out.status.success(), "{command} must fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for field in [
            "cache.l1.max_bytes",
            "cache.l2.timeout",
            "backends.catalog.timout",
            "routes[0].backend",
        ] {
            assert!(
                stderr.contains(field),
                "{command}: `{field}` not named in:\n{stderr}"
            );
        }
    }
}

#[test]
fn check_prints_the_resolved_config_without_secrets() {
    let out = strata(&["check"], &[], GOOD);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("max_request_bytes: 4MiB"),
        "defaults filled in:\n{stdout}"
    );
    assert!(
        stdout.contains("timeout: 25ms"),
        "L2 timeout default:\n{stdout}"
    );
    assert!(!stdout.contains("hunter2"), "password redacted:\n{stdout}");
}

#[test]
fn environment_overrides_the_file() {
    let out = strata(&["check"], &[("STRATA_CACHE__L2__TIMEOUT", "75ms")], GOOD);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("timeout: 75ms"));

    let out = strata(&["check"], &[("STRATA_CACHE__L2__TIMEOUT", "soon")], GOOD);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cache.l2.timeout"));
}

#[test]
fn unrelated_strata_variables_are_not_config() {
    // What Kubernetes injects for a Service named `strata`.
    let env = [
        ("STRATA_SERVICE_HOST", "10.0.0.1"),
        ("STRATA_PORT", "tcp://10.0.0.1:50051"),
    ];
    let out = strata(&["check"], &env, GOOD);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["check", "--config", "/nonexistent/strata.yaml"])
        .output()
        .expect("run strata");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/strata.yaml"));
}

/// `strata check` says which methods of each cached route are unary or streaming and what each gets, from a
/// descriptor-set file, and refuses key rules naming a field the request type does not have.
#[test]
fn check_reports_the_methods_and_refuses_key_fields_the_request_lacks() {
    let descriptors = crate::support::descriptors_from_file();
    let config = |cache: &str| {
        format!(
            "{descriptors}\nbackends:\n  lookup: {{ endpoints: [\"http://127.0.0.1:1\"] }}\nroutes:\n  - match: /testing.v1.Lookup/*\n    backend: lookup\n    cache: {{ {cache} }}\n"
        )
    };
    let out = strata(&["check"], &[], &config("from_proto: true"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in [
        "/testing.v1.Lookup/Watch    server streaming  carried through (streams)",
        "/testing.v1.Lookup/Chat     bidi streaming    carried through (streams)",
        "/testing.v1.Lookup/Get      unary             carried through (declares no cache policy)",
        "/testing.v1.Lookup/Search   unary             cached: ttl 30s; key: all but request_id",
        "/testing.v1.Lookup/Peek     unary             carried through: declares NO_SIDE_EFFECTS",
    ] {
        assert!(stdout.contains(line), "`{line}` in:\n{stdout}");
    }
    let out = strata(
        &["check"],
        &[],
        &config("ttl: 10s, key_fields: [query, filter.tenant]"),
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("routes[0].cache: /testing.v1.Lookup/Search: `filter.tenant`: testing.v1.Filter has no field `tenant`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("routes[0].cache: /testing.v1.Lookup/Get: `query`: testing.v1.GetRequest has no field `query`"),
        "{stderr}"
    );
}

/// Another implementation's reflection: a Python grpcio server (grpcio-reflection, which scripts/test installs under
/// target/venv) serving `v1alpha` only and keeping the descriptors' custom options, where tonic's reflection drops
/// them. `strata check` falls back to v1alpha, learns each method's kind, and reads the cache option by reflection.
#[test]
fn check_learns_kinds_and_the_cache_option_from_python_grpcio_reflection() {
    use std::io::BufRead;
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("STRATA_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target/venv/bin/python"));
    let mut server = Command::new(&python)
        .arg(manifest.join("tests/python/reflection_server.py"))
        .arg(crate::support::descriptor_file())
        .arg("testing.v1.Lookup")
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
    let config = format!(
        "backends:\n  py: {{ endpoints: [\"http://127.0.0.1:{}\"] }}\nroutes:\n  - match: /testing.v1.Lookup/*\n    backend: py\n    cache: {{ from_proto: true, ttl: 10s }}\n",
        port.trim()
    );
    let out = strata(&["check"], &[], &config);
    drop(server.stdin.take());
    let _ = server.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in [
        "methods by reflection v1alpha",
        "/testing.v1.Lookup/Watch    server streaming  carried through (streams)",
        "/testing.v1.Lookup/Get      unary             carried through (declares no cache policy)",
        // The option's ignore_fields, read by reflection; the route's ttl overrides the option's 30 s.
        "/testing.v1.Lookup/Search   unary             cached: ttl 10s; key: all but request_id",
        "/testing.v1.Lookup/Peek     unary             cached: ttl 10s; key: request bytes",
    ] {
        assert!(stdout.contains(line), "`{line}` in:\n{stdout}");
    }
}
