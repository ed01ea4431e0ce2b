//! `autodebug trace analyze` on every trace fixture, as a user runs it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn traces() -> Vec<PathBuf> {
    // The copies in the telemetry crate keep this self-contained; the shared set is read too
    // when this checkout has it, so a newly added shared trace is covered at once.
    let own = Path::new(env!("CARGO_MANIFEST_DIR")).join("../autodebug-telemetry/tests/fixtures/traces");
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/traces");
    let mut files = Vec::new();
    for dir in [own, shared] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        files.extend(entries.map(|e| e.unwrap().path()).filter(|p| p.to_string_lossy().ends_with(".json.gz")));
    }
    assert!(files.len() >= 14, "{files:?}");
    files
}

fn autodebug(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_autodebug")).args(args).output().unwrap()
}

#[test]
fn analyzes_every_fixture_as_json_and_table() {
    for path in traces() {
        let file = path.to_str().unwrap();
        let out = autodebug(&["trace", "analyze", file, "--json"]);
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for key in ["kernel_total_us", "gpu_busy_us", "gpu_idle_us", "span_us"] {
            assert!(v[key].as_f64().is_some(), "{file}: {key} missing");
        }
        let (busy, idle, span) =
            (v["gpu_busy_us"].as_f64().unwrap(), v["gpu_idle_us"].as_f64().unwrap(), v["span_us"].as_f64().unwrap());
        assert!((busy + idle - span).abs() < 0.01 + span * 1e-9, "{file}: {busy} + {idle} != {span}");
        let kernels = v["kernels"].as_array().unwrap();
        let total: f64 = kernels.iter().map(|k| k["total_us"].as_f64().unwrap()).sum();
        assert!((total - v["kernel_total_us"].as_f64().unwrap()).abs() < 0.01 + total * 1e-9, "{file}");
        let count = |key: &str| v[key].as_u64().unwrap_or_else(|| panic!("{file}: {key} missing"));
        let launches: u64 = kernels.iter().map(|k| k["count"].as_u64().unwrap()).sum();
        assert_eq!(launches, count("kernel_count"), "{file}");
        let gpu_events = count("kernel_count") + count("memcpy_count") + count("memset_count");
        assert_eq!(gpu_events, count("gpu_events"), "{file}");
        for k in kernels {
            for key in ["name", "category", "count", "total_us", "mean_us", "max_us", "share"] {
                assert!(!k[key].is_null(), "{file}: kernel without {key}");
            }
        }
        let table = autodebug(&["trace", "analyze", file]);
        assert!(table.status.success(), "{file}");
        let text = String::from_utf8_lossy(&table.stdout);
        assert!(text.contains("GPU time (ms)"), "{file}: {text}");
        if !kernels.is_empty() {
            assert!(
                text.contains("Kernel classes") && text.contains(&format!("of {}", kernels.len())),
                "{file}: {text}"
            );
        }
    }
}

#[test]
fn top_limits_the_lists_and_errors_name_the_file() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../autodebug-telemetry/tests/fixtures/traces/nccl_parser_config__nccl_data.json.gz");
    let out = autodebug(&["trace", "analyze", file.to_str().unwrap(), "--json", "--top", "3"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kernels"].as_array().unwrap().len(), 3);
    assert!(v["categories"].as_array().unwrap().iter().any(|c| c["category"] == "communication"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("not-a-trace.json");
    std::fs::write(&bad, "{\"traceEvents\": 7}").unwrap();
    let out = autodebug(&["trace", "analyze", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not-a-trace.json"), "{err}");
    let out = autodebug(&["trace", "analyze", dir.path().join("absent.json").to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent.json"));
}

#[test]
fn copies_are_reported_apart_from_kernels() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../autodebug-telemetry/tests/fixtures/kernels_memcpy_memset.trace.json");
    let file = file.to_str().unwrap();
    let out = autodebug(&["trace", "analyze", file, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // 80 µs of kernels; 195 if the memcpy, the copy kernel and the memset were counted as kernels.
    assert_eq!(v["kernel_total_us"], 80.0);
    assert_eq!((v["kernel_count"].as_u64(), v["kernels"].as_array().map(Vec::len)), (Some(2), Some(2)));
    assert_eq!((v["memcpy_us"].as_f64(), v["memcpy_count"].as_u64()), (Some(105.0), Some(2)));
    assert_eq!((v["memset_us"].as_f64(), v["memset_count"].as_u64()), (Some(10.0), Some(1)));
    assert_eq!(v["gpu_busy_us"], 135.0);
    let classes: Vec<&str> =
        v["categories"].as_array().unwrap().iter().filter_map(|c| c["category"].as_str()).collect();
    assert_eq!(classes, ["gemm", "norm"]);

    let table = autodebug(&["trace", "analyze", file]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("kernels 0.080 in 2 launches, memcpy 0.105 in 2, memset 0.010 in 1"), "{text}");
    assert!(text.contains("Kernels (top 2 of 2)") && !text.contains("Memcpy HtoD"), "{text}");
}
