//! `autodebug check` as a CI gate, on a store filled by a real `autodebug demo` run.

mod support;

use std::process::{Command, Output};

use autodebug_core::History;
use autodebug_core::store::Store;
use serde_json::Value;
use support::demo_db;

const BIN: &str = env!("CARGO_BIN_EXE_autodebug");

fn check(args: &[&str]) -> Output {
    Command::new(BIN).arg("check").args(args).arg("--db").arg(demo_db()).output().unwrap()
}

fn history() -> History {
    let store = Store::open(demo_db()).unwrap();
    let session = store.latest_session().unwrap().unwrap();
    store.history(session.id).unwrap()
}

#[test]
fn generous_budgets_pass_even_under_strict() {
    let out = check(&[
        "--ttft-p99-ms",
        "100000",
        "--itl-p95-ms",
        "100000",
        "--min-output-throughput",
        "1",
        "--max-error-rate",
        "0",
        "--strict",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["passed_iterations"], 3);
    assert_eq!(report["budgets"].as_array().unwrap().len(), 4);
}

#[test]
fn a_tight_budget_fails_exactly_the_iterations_above_it_and_strict_exits_3() {
    let history = history();
    let values: Vec<f64> = history.iterations.iter().map(|i| i.metrics["ttft.p99"]).collect();
    let bound = values.iter().copied().fold(f64::INFINITY, f64::min);
    let bound_text = format!("{bound}");
    let expected_fail: Vec<u32> =
        history.iterations.iter().filter(|i| i.metrics["ttft.p99"] > bound).map(|i| i.number).collect();
    assert!(!expected_fail.is_empty(), "the demo's iterations differ in ttft.p99: {values:?}");

    let out = check(&["--ttft-p99-ms", &bound_text, "--json", "--strict"]);
    assert_eq!(out.status.code(), Some(3));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<u64> = report["iterations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["results"][0]["verdict"] == "fail")
        .map(|v| v["iteration"].as_u64().unwrap())
        .collect();
    assert_eq!(failed, expected_fail.iter().map(|n| *n as u64).collect::<Vec<_>>());

    // Without --strict the table is the same and the exit code is 0.
    let lenient = check(&["--ttft-p99-ms", &bound_text]);
    assert_eq!(lenient.status.code(), Some(0));
    let text = String::from_utf8_lossy(&lenient.stdout);
    assert!(text.contains("FAIL") && text.contains("ttft.p99 <= "), "{text}");

    // Judging only the iteration at the bound passes.
    let best = history.iterations.iter().find(|i| i.metrics["ttft.p99"] == bound).unwrap().number.to_string();
    assert_eq!(check(&["--ttft-p99-ms", &bound_text, "--iteration", &best, "--strict"]).status.code(), Some(0));
}

#[test]
fn a_metric_that_is_not_recorded_cannot_pass_strict() {
    let out = check(&["--budget", "gpu.power_watts <= 700", "--strict", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["missing_metrics"], 3);
    assert_eq!(report["iterations"][0]["results"][0]["verdict"], "missing");
    assert_eq!(check(&["--budget", "gpu.power_watts <= 700"]).status.code(), Some(0));
}

#[test]
fn usage_errors_name_what_to_fix_and_help_documents_exit_codes() {
    let none = check(&[]);
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("--ttft-p99-ms"));
    let bad = check(&["--budget", "ttft.p99 < 3"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--budget"));
    let help = Command::new(BIN).args(["check", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("Exit codes") && help.contains("3 with --strict"), "{help}");
}
