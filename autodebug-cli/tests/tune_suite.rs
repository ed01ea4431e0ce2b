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
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(table.contains("qwen-chat-latency") && table.contains("evals-to-2%"), "{table}");
    let document: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let rows = document["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    // The summary block: per planner medians over the two scenarios, and hybrid against random.
    let summary = &document["summary"];
    let planners: Vec<&str> =
        summary["planners"].as_array().unwrap().iter().map(|p| p["planner"].as_str().unwrap()).collect();
    assert_eq!(planners, ["random", "hybrid"]);
    for p in summary["planners"].as_array().unwrap() {
        let median = p["median_evals"].as_f64().unwrap();
        assert!((1.0..=7.0).contains(&median), "{p}");
    }
    assert!(summary["hybrid_vs_random"]["median_ratio"].as_f64().unwrap() > 0.0);
    // Optuna and OAT did not run: their comparisons are absent, not made up.
    assert!(summary["hybrid_vs_optuna"].is_null() && summary["hybrid_vs_oat"].is_null());
    assert_eq!(summary["targets"].as_array().unwrap().len(), 4);
    for row in rows {
        for field in [
            "scenario",
            "planner",
            "evals_to_within_2pct",
            "best_after_10",
            "best_after_20",
            "optimum",
            "failed_evals",
            "invalid_evals",
            "stopped_early",
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
    assert!(stderr.contains("--planners") && stderr.contains("hybrid"), "{stderr}");
}

#[test]
fn sim_eval_answers_each_json_line_and_describes_generated_spaces() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_autodebug"))
        .args(["sim", "eval"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(
        stdin,
        r#"{{"scenario": "qwen-chat-latency", "config": {{"--num-continuous-decode-steps": "4"}}, "seed": 1}}"#
    )
    .unwrap();
    writeln!(stdin, "not json").unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    // A bad line is answered with an error object and makes the exit status non-zero.
    assert_eq!(output.status.code(), Some(2));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["valid"], true);
    assert_eq!(lines[0]["feasible"], true);
    assert!(lines[0]["value"].as_f64().unwrap() > 0.0);
    assert!(lines[1]["error"].as_str().unwrap().contains("line 2"));

    let described = Command::new(env!("CARGO_BIN_EXE_autodebug"))
        .args(["sim", "eval", "--describe", "--generate", "2", "--seed", "5", "--skip-builtin"])
        .output()
        .unwrap();
    assert!(described.status.success());
    let spaces: Vec<serde_json::Value> = serde_json::from_slice(&described.stdout).unwrap();
    assert_eq!(spaces.len(), 2);
    for s in &spaces {
        assert!(s["name"].as_str().unwrap().starts_with("gen-5-"));
        let knobs = s["knobs"].as_array().unwrap().len();
        assert!((4..=7).contains(&knobs), "{knobs} knobs");
        assert!(s["noise"]["source"].as_str().unwrap().contains("seed-to-seed"));
    }
}
