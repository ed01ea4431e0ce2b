//! What the `autodebug` process itself prints (its `tracing` log at `-vv`, stdout, stderr) and
//! writes (every file under the sessions dir, the SQLite store's bytes included) goes through the
//! one redaction path: a real `autodebug run` on the simulator with a canary `--api-key` in the
//! service's flags and a canary `HF_TOKEN` in its environment shows neither.

use std::path::{Path, PathBuf};
use std::process::Command;

use autodebug_core::IterationStatus;
use autodebug_core::store::Store;

mod support;

const KEY_CANARY: &str = "CANARY-VALUE-7c3e91";
const ENV_CANARY: &str = "CANARY2-hf-5d20a8";

fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("autodebug.yaml");
    let text = format!(
        r#"session: canary
sessions_dir: {}
deployer:
  kind: simulator
service:
  engine: sglang
  model: Qwen/Qwen1.5-0.5B-Chat
  gpu: H100:1
  flags:
    --api-key: {KEY_CANARY}
  env:
    HF_TOKEN: {ENV_CANARY}
bench:
  - name: chat
    prompt_tokens: 16
    output_tokens: 16
    requests: 4
objective:
  minimize: e2e.mean
planner: rules
budget:
  iterations: 2
"#,
        dir.join("sessions").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn assert_no_canary(what: &str, bytes: &[u8]) {
    support::assert_no_canaries(what, bytes, &[KEY_CANARY, ENV_CANARY]);
}

#[test]
fn canary_api_key_and_hf_token_appear_in_no_log_line_stdout_or_sessions_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let output = Command::new(env!("CARGO_BIN_EXE_autodebug"))
        .args(["run", "-vv", "-c"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // The debug log did print the flags, masked.
    assert!(stderr.contains("iteration starts") && stderr.contains("--api-key ***"), "{stderr}");
    assert_no_canary("stdout", &output.stdout);
    assert_no_canary("stderr", &output.stderr);

    let sessions = dir.path().join("sessions");
    let files = support::files_under(&sessions);
    assert!(files.iter().any(|f| f.ends_with("autodebug.db")), "{files:?}");
    for file in &files {
        assert_no_canary(&file.display().to_string(), &std::fs::read(file).unwrap());
    }

    // The engine required the key and the benchmark sent it: the run measured something.
    let store = Store::open(&sessions.join("autodebug.db")).unwrap();
    let session = store.session_by_name("canary").unwrap().unwrap();
    let history = store.history(session.id).unwrap();
    assert_eq!(history.iterations.len(), 2);
    assert_eq!(history.iterations[0].status, IterationStatus::Ok, "{:?}", history.iterations[0].error);
    let not_applied: Vec<&str> = history
        .iterations
        .iter()
        .flat_map(|it| it.analysis.findings.iter().filter_map(autodebug_core::rules::not_applied_flag))
        .collect();
    assert!(!not_applied.contains(&"--api-key"), "a masked key read as a mismatch: {not_applied:?}");
}
