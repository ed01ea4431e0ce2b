//! The loop on a REAL inference engine: llama.cpp's `llama-server` with SmolLM2-135M on this
//! machine's CPU. Benchmark, metrics, logs and plan all come from the real engine. Ignored in a
//! plain `cargo test`: `scripts/llama-server.sh` builds the server and fetches the model once (~11
//! minutes, cached under ~/.cache/autodebug; `.ci/setup.sh` runs it). With `--include-ignored` a
//! missing server or model is a failure naming that command.

use std::path::{Path, PathBuf};
use std::process::Command;

mod support;

use autodebug_core::store::Store;

const BIN: &str = env!("CARGO_BIN_EXE_autodebug");

/// Where `scripts/llama-server.sh` caches (llama-server, model); the test fails when either is missing.
fn llama_server() -> (PathBuf, PathBuf) {
    let cache = support::engine_cache();
    let server = cache.join("llama-server");
    let model = cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    for path in [&server, &model] {
        assert!(
            path.exists(),
            "needs llama-server: bash scripts/llama-server.sh, then cargo test --workspace -- --include-ignored ({} is missing)",
            path.display()
        );
    }
    (server, model)
}

#[test]
#[ignore = "needs llama-server: bash scripts/llama-server.sh, then cargo test --workspace -- --include-ignored"]
fn the_loop_tunes_a_real_llama_server_and_the_trail_shows_what_changed_and_why() {
    let (server, model) = llama_server();
    let dir = tempfile::tempdir().unwrap();
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/llamacpp-local.yaml")).unwrap();
    let config = example
        .replace("~/.cache/autodebug/llama-server", &server.to_string_lossy())
        .replace("~/.cache/autodebug/models/SmolLM2-135M-Instruct.Q4_1.gguf", &model.to_string_lossy())
        .replace("sessions/llamacpp", &dir.path().join("sessions").to_string_lossy())
        .replace("requests: 12", "requests: 8")
        .replace("confirm_trials: 3", "confirm_trials: 0");
    let path = dir.path().join("llamacpp.yaml");
    std::fs::write(&path, config).unwrap();

    let output = Command::new(BIN).args(["run", "-q", "--iterations", "2", "-c"]).arg(&path).output().unwrap();
    assert!(
        output.status.success(),
        "run failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let store = Store::open(&dir.path().join("sessions").join("autodebug.db")).unwrap();
    let session = store.latest_session().unwrap().unwrap();
    let history = store.history(session.id).unwrap();
    assert_eq!(history.iterations.len(), 2);
    let first = &history.iterations[0];
    // Metrics and logs come from the real engine.
    support::assert_real_llamacpp_evidence(first);
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
