//! `autodebug sim tune-suite` end to end, on a narrowed space.

use std::process::Command;

#[test]
fn tune_suite_writes_one_json_object_per_scenario_and_planner() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("suite.json");
    let status = Command::new(env!("CARGO_BIN_EXE_autodebug"))
        .args([
            "sim",
            "tune-suite",
            "--planners",
            "random,hybrid",
            "--seeds",
            "1",
            "--budget",
            "6",
            "--max-levels",
            "2",
        ])
        .args(["--scenarios", "qwen-chat-latency,long-prompt", "--json"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(
        table.contains("qwen-chat-latency") && table.contains("evals-to-2%"),
        "{table}"
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(rows.len(), 4);
    for row in &rows {
        for field in [
            "scenario",
            "planner",
            "evals_to_within_2pct",
            "best_after_10",
            "best_after_20",
            "optimum",
            "failed_evals",
        ] {
            assert!(row.get(field).is_some(), "missing {field} in {row}");
        }
        assert!(row["optimum"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn an_unknown_planner_is_a_usage_error_naming_the_choices() {
    let output = Command::new(env!("CARGO_BIN_EXE_autodebug"))
        .args(["sim", "tune-suite", "--planners", "magic"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--planners") && stderr.contains("hybrid"),
        "{stderr}"
    );
}
