//! The loop on a REAL inference engine: llama.cpp's `llama-server` with SmolLM2-135M on this
//! machine's CPU, built and fetched by `scripts/llama-server.sh` (cached under ~/.cache/autodebug).
//! Benchmark, metrics, logs and plan all come from the real engine. Skipped with a note when the
//! script cannot run here; `AUTODEBUG_REQUIRE_LLAMA=1` (CI sets it) makes that a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

use autodebug_core::store::Store;
use autodebug_core::{IterationStatus, SignalKind};

const BIN: &str = env!("CARGO_BIN_EXE_autodebug");

/// Paths printed by the install script: (llama-server, model).
fn llama_server() -> Option<(PathBuf, PathBuf)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/llama-server.sh");
    let output = Command::new("bash").arg(&script).output().ok();
    let value = |key: &str| {
        output.as_ref().and_then(|o| {
            String::from_utf8_lossy(&o.stdout).lines().find_map(|l| l.strip_prefix(&format!("{key}=")).map(PathBuf::from))
        })
    };
    match (value("LLAMA_SERVER"), value("SMOLLM2")) {
        (Some(bin), Some(model)) if bin.exists() && model.exists() => Some((bin, model)),
        _ => {
            let why = output.map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_default();
            assert!(std::env::var_os("AUTODEBUG_REQUIRE_LLAMA").is_none(), "llama-server could not be installed: {why}");
            eprintln!("skipping: llama-server could not be built or the model fetched here: {why}");
            None
        }
    }
}

#[test]
fn the_loop_tunes_a_real_llama_server_and_the_trail_shows_what_changed_and_why() {
    let Some((server, model)) = llama_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/llamacpp-local.yaml")).unwrap();
    let config = example
        .replace("~/.cache/autodebug/llama-server", &server.to_string_lossy())
        .replace("~/.cache/autodebug/models/SmolLM2-135M-Instruct.Q4_1.gguf", &model.to_string_lossy())
        .replace("sessions/llamacpp", &dir.path().join("sessions").to_string_lossy())
        .replace("requests: 12", "requests: 8");
    let path = dir.path().join("llamacpp.yaml");
    std::fs::write(&path, config).unwrap();

    let output = Command::new(BIN).args(["run", "-q", "--iterations", "2", "-c"]).arg(&path).output().unwrap();
    assert!(output.status.success(), "run failed:\n{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));

    let store = Store::open(&dir.path().join("sessions").join("autodebug.db")).unwrap();
    let session = store.latest_session().unwrap().unwrap();
    let history = store.history(session.id).unwrap();
    assert_eq!(history.iterations.len(), 2);
    let first = &history.iterations[0];
    assert_eq!(first.status, IterationStatus::Ok, "{:?}", first.error);
    assert!(first.metrics["output_throughput"] > 0.0);
    // Metrics and logs come from the real engine.
    let cited: Vec<&str> = first.analysis.cited.iter().map(|s| s.name.as_str()).collect();
    assert!(cited.iter().any(|n| n.starts_with("llamacpp:")), "no llama.cpp metric cited: {cited:?}");
    assert!(first.analysis.cited.iter().any(|s| s.kind == SignalKind::LogLine), "no log signal cited: {cited:?}");
    // The plan changed a llama.cpp knob and says why, citing the engine's signals.
    let plan = first.plan.as_ref().unwrap();
    assert!(!plan.changes.is_empty(), "{:?}", plan.notes);
    for change in &plan.changes {
        assert!(change.knob.starts_with("--") && !change.reason.is_empty());
    }
    let log = std::fs::read_dir(dir.path().join("sessions"))
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("debug-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .unwrap();
    assert!(log.contains("**Planned changes**") && log.contains(&plan.changes[0].knob), "{log}");
    assert_ne!(history.iterations[1].spec.flags, first.spec.flags, "iteration 2 runs the planned change");
}
