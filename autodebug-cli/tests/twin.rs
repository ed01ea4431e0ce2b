//! `autodebug twin fit|validate|predict` on a REAL engine's measurements: the llama.cpp data set
//! kept in `autodebug-sim/tests/fixtures/real/` (measured by `autodebug run` on this project's
//! machine; provenance in the `.yaml` next to it), so no engine is needed here.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_autodebug");

fn real(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../autodebug-sim/tests/fixtures/real").join(name)
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().expect("autodebug runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(args: &[&str]) -> Value {
    let (ok, stdout, stderr) = run(args);
    assert!(ok, "autodebug {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn fit_writes_a_twin_that_predict_reads_and_validate_reports_held_out_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = real("llamacpp-smollm2.db");
    let db = db.to_str().unwrap();
    let out = dir.path().join("twin.yaml");
    let fitted = json(&["twin", "fit", "--db", db, "--out", out.to_str().unwrap(), "--json"]);
    assert_eq!(fitted["engine"], "llamacpp");
    assert!(fitted["observations"].as_u64().unwrap() >= 20, "{fitted}");
    assert!(fitted["costs"]["step_us"].as_f64().unwrap() > 0.0, "{fitted}");
    assert!(out.exists());

    let config = real("llamacpp-smollm2.yaml");
    let predict = |flags: &str| {
        json(&[
            "twin",
            "predict",
            "--twin",
            out.to_str().unwrap(),
            "-c",
            config.to_str().unwrap(),
            "--flags",
            flags,
            "--json",
        ])
    };
    let (wide, narrow) = (predict("--parallel 8"), predict("--parallel 1"));
    let ttft = |v: &Value| v["plans"]["concurrent"]["metrics"]["ttft.p50"].as_f64().unwrap();
    assert!(ttft(&narrow) > 2.0 * ttft(&wide), "one slot queues 8 streams: {narrow} vs {wide}");

    let validation = json(&["twin", "validate", "--db", db, "--holdout", "4", "--json"]);
    assert_eq!(validation["holdout"], "last 4");
    let points = validation["points"].as_array().unwrap();
    assert_eq!(points.len(), 8, "4 iterations x 2 plans: {validation}");
    for metric in ["output_throughput", "tpot.mean", "ttft.p50", "ttft.p99", "itl.p99", "e2e.mean"] {
        assert!(validation["median_ape"][metric].as_f64().is_some(), "{metric} missing: {validation}");
        assert!(validation["p90_ape"][metric].as_f64().is_some(), "{metric} missing: {validation}");
    }
    assert!(points.iter().all(|p| p["fitted_on"] == points[0]["fitted_on"]));

    let (ok, table, _) = run(&["twin", "validate", "--db", db]);
    assert!(ok && table.contains("leave-one-out") && table.contains("median APE"), "{table}");
}

#[test]
fn a_missing_store_and_a_broken_twin_are_errors_that_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.db");
    let (ok, _, stderr) = run(&["twin", "fit", "--db", missing.to_str().unwrap()]);
    assert!(!ok && stderr.contains("none.db"), "{stderr}");
    let twin = dir.path().join("twin.yaml");
    std::fs::write(&twin, "engine: [").unwrap();
    let config = real("llamacpp-smollm2.yaml");
    let (ok, _, stderr) = run(&["twin", "predict", "--twin", twin.to_str().unwrap(), "-c", config.to_str().unwrap()]);
    assert!(!ok && stderr.contains("twin.yaml") && stderr.contains("autodebug twin fit"), "{stderr}");
}
