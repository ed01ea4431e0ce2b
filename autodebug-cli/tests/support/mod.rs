//! What several CLI test files share: one store filled by a real `autodebug demo` run, and where
//! the setup scripts cache the real engines.

// Each test binary uses only part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The store of a 3-iteration demo (simulator over loopback, ~15 s), run once per test binary.
pub fn demo_db() -> &'static Path {
    static DB: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, db) = DB.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_autodebug"))
            .args(["demo", "-q", "--iterations", "3", "--out"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "demo failed: {}", String::from_utf8_lossy(&out.stderr));
        let db = dir.path().join("autodebug.db");
        (dir, db)
    });
    db
}

/// Every file under `dir`, at any depth.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.is_dir() { out.extend(files_under(&path)) } else { out.push(path) }
    }
    out
}

/// `bytes` (named `what` in the failure) hold none of `canaries`.
pub fn assert_no_canaries(what: &str, bytes: &[u8], canaries: &[&str]) {
    for canary in canaries {
        let found = bytes.windows(canary.len()).any(|w| w == canary.as_bytes());
        assert!(!found, "{what} shows `{canary}`:\n{}", String::from_utf8_lossy(bytes));
    }
}

/// Where `scripts/llama-server.sh` and `scripts/vllm-cpu.sh` cache engines and models
/// (`$AUTODEBUG_CACHE`, else `~/.cache/autodebug`).
pub fn engine_cache() -> PathBuf {
    match std::env::var_os("AUTODEBUG_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/autodebug"),
    }
}

/// A first iteration on a real llama.cpp `llama-server` measured something and cited the engine's
/// own evidence: a `llamacpp:` Prometheus metric and a line of its log.
pub fn assert_real_llamacpp_evidence(first: &autodebug_core::Iteration) {
    use autodebug_core::{IterationStatus, SignalKind};
    assert_eq!(first.status, IterationStatus::Ok, "{:?}", first.error);
    assert!(first.metrics["output_throughput"] > 0.0);
    let cited: Vec<&str> = first.analysis.cited.iter().map(|s| s.name.as_str()).collect();
    // The findings say what the analysis went without (a log that could not be read, a source that failed).
    let findings: Vec<&str> = first.analysis.findings.iter().map(|f| f.summary.as_str()).collect();
    assert!(cited.iter().any(|n| n.starts_with("llamacpp:")), "no llama.cpp metric cited: {cited:?}; {findings:?}");
    assert!(
        first.analysis.cited.iter().any(|s| s.kind == SignalKind::LogLine),
        "no log line cited: {cited:?}; {findings:?}"
    );
}
