//! `autodebug ingest` of vLLM, SGLang, AIPerf and guidellm reports (samples in
//! `autodebug-report/tests/fixtures/ingest/`, provenance in its SOURCES.md) into a store that a real
//! `autodebug demo` run filled, then read back with `history` and `check`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_autodebug");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../autodebug-report/tests/fixtures/ingest").join(name)
}

fn run(args: &[&str], db: &Path) -> Output {
    Command::new(BIN).args(args).arg("--db").arg(db).output().unwrap()
}

fn json_of(args: &[&str], db: &Path) -> Value {
    let out = run(args, db);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn peer_reports_join_a_demo_history_as_their_own_session() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Command::new(BIN).args(["demo", "-q", "--iterations", "3", "--out"]).arg(dir.path()).output().unwrap();
    assert!(demo.status.success(), "demo failed: {}", String::from_utf8_lossy(&demo.stderr));
    let db = dir.path().join("autodebug.db");

    let mut numbers = Vec::new();
    for name in [
        "vllm_bench_serve.json",
        "sglang_bench_serving.jsonl",
        "profile_export_aiperf.json",
        "guidellm_benchmarks.json",
    ] {
        let path = fixture(name);
        let result = json_of(&["ingest", path.to_str().unwrap(), "--session", "peers", "--json"], &db);
        numbers.extend(result["summary"]["iterations"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()));
        if name == "vllm_bench_serve.json" {
            let raw: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let metrics = &result["iterations"][0]["metrics"];
            assert_eq!(metrics["ttft.p99"], raw["p99_ttft_ms"]);
            assert_eq!(metrics["e2e.mean"], raw["mean_e2el_ms"]);
            assert_eq!(result["summary"]["format"], "vllm");
            assert_eq!(result["summary"]["session_created"], true);
        }
        if name == "guidellm_benchmarks.json" {
            let raw: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let first = &raw["benchmarks"][0]["metrics"];
            let metrics = &result["iterations"][0]["metrics"];
            assert_eq!(metrics["tpot.mean"], first["inter_token_latency_ms"]["successful"]["mean"]);
            assert_eq!(metrics["tpot_incl_ttft.mean"], first["time_per_output_token_ms"]["successful"]["mean"]);
        }
    }
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6], "1 vLLM + 2 SGLang lines + 1 AIPerf + 2 guidellm benchmarks");

    let sessions = json_of(&["history", "list", "--json"], &db);
    let names: Vec<&str> =
        sessions["sessions"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"peers"));

    let show = String::from_utf8(run(&["history", "show", "4", "--session", "peers"], &db).stdout).unwrap();
    assert!(show.contains("ingest.source") && show.contains("profile_export_aiperf.json"), "{show}");
    assert!(show.contains("inter_token_latency") && show.contains("tpot"), "{show}");

    // SGLang's summary lines carry no failure count: a strict error-rate gate cannot pass them.
    let gate = run(&["check", "--session", "peers", "--max-error-rate", "0.05", "--strict", "--json"], &db);
    assert_eq!(gate.status.code(), Some(3));
    let report: Value = serde_json::from_slice(&gate.stdout).unwrap();
    let missing: Vec<u64> = report["iterations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["results"][0]["verdict"] == "missing")
        .map(|v| v["iteration"].as_u64().unwrap())
        .collect();
    assert_eq!(missing, [2, 3]);

    let pareto = json_of(
        &["history", "pareto", "--session", "peers", "--x", "ttft.p99", "--y", "output_throughput", "--json"],
        &db,
    );
    assert_eq!(pareto["pareto"]["points"].as_array().unwrap().len(), 6);
}

#[test]
fn files_that_are_not_reports_get_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("autodebug.db");
    let notes = dir.path().join("notes.json");
    std::fs::write(&notes, "[1, 2, 3]").unwrap();
    let out = run(&["ingest", notes.to_str().unwrap()], &db);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("notes.json") && stderr.contains("--format"), "{stderr}");

    let out = run(&["ingest", dir.path().join("absent.json").to_str().unwrap()], &db);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent.json"));

    let out = run(&["ingest", fixture("vllm_bench_serve.json").to_str().unwrap(), "--format", "trtllm"], &db);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format"));
}

#[test]
fn the_text_summary_has_the_headline_columns_history_uses() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("autodebug.db");
    let path = fixture("vllm_bench_serve.json");
    let out = run(&["ingest", path.to_str().unwrap(), "--session", "peers"], &db);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let header = stdout
        .lines()
        .find(|line| line.trim_start().starts_with("iter"))
        .unwrap_or_else(|| panic!("no table in {stdout}"));
    let mut expected = vec!["iter"];
    expected.extend(autodebug_report::export::HEADLINE_METRICS);
    expected.push("run");
    assert_eq!(header.split_whitespace().collect::<Vec<_>>(), expected);
    let raw: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let median_ttft = raw["median_ttft_ms"].as_f64().unwrap().to_string();
    assert!(stdout.contains(&median_ttft), "ttft.p50 {median_ttft} missing from {stdout}");
}
