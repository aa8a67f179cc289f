//! `strata-load demo` end to end: it starts everything it needs, runs, prints its table and cleans up.

use std::process::Command;

#[test]
fn the_demo_runs_and_reports_every_level() {
    let output = Command::new(env!("CARGO_BIN_EXE_strata-load"))
        .args([
            "demo",
            "--duration",
            "3s",
            "--concurrency",
            "8",
            "--items",
            "200",
        ])
        .output()
        .expect("run strata-load demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for needle in [
        "direct",
        "through Strata",
        "requests/s",
        "p99 latency",
        "backend calls",
        "l1",
        "miss",
    ] {
        assert!(
            stdout.contains(needle),
            "`{needle}` missing from:\n{stdout}"
        );
    }
    let errors = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("errors"))
        .expect("an errors row");
    assert!(
        errors.split_whitespace().skip(1).all(|n| n == "0"),
        "no call may fail: {errors}"
    );
    // With redis-server installed the demo runs two replicas over one Redis: with 200 items, some keys one replica
    // fetched are answered to the other from L2.
    if which_redis() {
        assert!(stdout.contains("shared L2"), "{stdout}");
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with("l2 ")),
            "no L2 answers:\n{stdout}"
        );
    }
}

fn which_redis() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok()
}
