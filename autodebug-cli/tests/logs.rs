//! `autodebug logs analyze` on every engine log fixture: signals and the capacity plan.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../autodebug-telemetry/tests/fixtures")
}

fn analyze(file: &Path, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_autodebug"))
        .args(["logs", "analyze", file.to_str().unwrap(), "--json"])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_log_fixture_is_read_with_the_engine_guessed() {
    let mut logs: Vec<PathBuf> = vec![
        fixtures().join("sglang_server.log"),
        fixtures().join("vllm_server.log"),
        fixtures().join("llamacpp_smollm2_server.log"),
    ];
    // The shared set too, when this checkout has it.
    if let Ok(entries) = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/logs")) {
        logs.extend(entries.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "log")));
    }
    for (log, engine) in logs.iter().zip(["sglang", "vllm", "llamacpp", "llamacpp"]) {
        let v = analyze(log, &[]);
        assert_eq!(v["engine"], engine, "{}", log.display());
        assert_eq!(v["engine_guessed"], true);
        assert!(!v["signals"].as_array().unwrap().is_empty(), "{}", log.display());
        assert!(v["capacity"]["max_concurrency"].as_f64().is_some(), "{}: {}", log.display(), v["capacity"]);
    }
}

#[test]
fn sglang_capacity_plan_follows_the_request_size() {
    let log = fixtures().join("sglang_server.log");
    let v = analyze(&log, &["--isl", "2000", "--osl", "500"]);
    let plan = &v["capacity"];
    let kv_tokens = plan["kv_tokens"].as_f64().unwrap();
    assert_eq!(plan["max_concurrency"].as_f64().unwrap(), (kv_tokens / 2500.0).floor());
    assert_eq!(plan["limited_by"], "kv_pool");
    assert!((plan["kv_pool_gb"].as_f64().unwrap() - (33.64 + 33.64)).abs() < 1e-9);
    assert!(v["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("capacity.kv_bound")));

    // Small requests: the scheduler's cap binds before the KV pool.
    let v = analyze(&log, &["--isl", "100", "--osl", "100"]);
    assert_eq!(v["capacity"]["limited_by"], "max_running_requests");
    assert_eq!(v["capacity"]["max_concurrency"].as_f64(), v["capacity"]["max_running_requests"].as_f64());
}

#[test]
fn forced_engine_and_unknown_logs() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.log");
    std::fs::write(&plain, "hello\nworld\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_autodebug"))
        .args(["logs", "analyze", plain.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plain.log") && err.contains("--engine"), "{err}");

    let v = analyze(&plain, &["--engine", "vllm"]);
    assert_eq!(v["engine"], "vllm");
    assert_eq!(v["engine_guessed"], false);

    let out = Command::new(env!("CARGO_BIN_EXE_autodebug"))
        .args(["logs", "analyze", fixtures().join("vllm_server.log").to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Capacity plan") && text.contains("engine.error.out_of_memory"), "{text}");
}
