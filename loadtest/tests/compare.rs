//! `strata-load compare --quick`: the benchmark suite starts everything it needs, prints its table and writes the raw
//! figures. The figures themselves are not asserted (a shared machine); that every scenario ran without an error and
//! answered from the level it claims to measure is.

use std::process::Command;

#[test]
fn a_quick_compare_prints_the_table_and_writes_the_raw_figures() {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!(
            "redis-server is not installed: scripts/test installs it (apt install redis-server)"
        );
    }
    let json = std::env::temp_dir().join(format!("strata-compare-{}.json", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_strata-load"))
        .args(["compare", "--quick", "--concurrency", "4", "--json"])
        .arg(&json)
        .output()
        .expect("run strata-load compare");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "compare failed:\n{stdout}\n{stderr}"
    );

    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(rows.len(), 5, "a header and four scenarios:\n{stdout}");
    for name in ["direct", "l1-hit", "l2-hit", "miss"] {
        let row = rows
            .iter()
            .find(|r| r.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no `{name}` row in:\n{stdout}"));
        assert!(row.ends_with("| 0 |"), "`{name}` had errors: {row}");
    }

    assert!(
        stdout.contains("→ 1 backend call(s)"),
        "the stampede must reach the backend once:\n{stdout}"
    );

    let text = std::fs::read_to_string(&json).expect("the JSON file");
    let _ = std::fs::remove_file(&json);
    let figures: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(figures["rounds"], 3);
    let scenarios = figures["scenarios"].as_array().expect("scenarios");
    assert_eq!(scenarios.len(), 4);
    // Each scenario answered from the level it is named after, in every round.
    let level = [
        ("direct", "-"),
        ("l1-hit", "l1"),
        ("l2-hit", "l2"),
        ("miss", "miss"),
    ];
    for (scenario, (name, cache)) in scenarios.iter().zip(level) {
        assert_eq!(scenario["name"], name);
        assert_eq!(scenario["errors"], 0, "{scenario}");
        assert!(
            scenario["median"]["rps"].as_f64().unwrap_or(0.0) > 0.0,
            "{scenario}"
        );
        let rounds = scenario["rounds"].as_array().expect("rounds");
        assert_eq!(rounds.len(), 3);
        for round in rounds {
            let requests = round["requests"].as_u64().unwrap_or(0);
            let at_level = round["by_cache"][cache].as_u64().unwrap_or(0);
            assert!(
                requests > 0 && at_level * 10 >= requests * 9,
                "`{name}` should be answered from `{cache}`: {round}"
            );
        }
    }
    let stampede = &figures["stampede"];
    assert_eq!(stampede["backend_calls"], 1, "{stampede}");
    assert_eq!(stampede["errors"], 0, "{stampede}");
    assert_eq!(stampede["calls"], 3000, "{stampede}");
}
