//! `autodebug run --from-known-good`: a new session starts from the champion of the latest
//! finished session on the same model and GPU type in the store (real runs on the simulator).

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_autodebug");

fn write_config(dir: &Path, gpu: &str) -> std::path::PathBuf {
    let path = dir.join(format!("autodebug-{}.yaml", gpu.replace(':', "-")));
    let text = format!(
        r#"sessions_dir: {}
deployer:
  kind: simulator
service:
  engine: sglang
  model: Qwen/Qwen1.5-0.5B-Chat
  gpu: {gpu}
bench:
  - name: chat
    prompt_tokens: 31
    output_tokens: 150
    repeat_prompt: true
    requests: 16
objective:
  minimize: e2e.mean
  constraints: ["error_rate == 0"]
planner: rules
"#,
        dir.join("sessions").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn run(config: &Path, extra: &[&str]) -> (serde_json::Value, String) {
    let output = Command::new(BIN).args(["run", "-q", "--json", "-c"]).arg(config).args(extra).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    (serde_json::from_slice(&output.stdout).expect("JSON outcome"), stderr)
}

#[test]
fn a_new_session_starts_from_the_champion_of_the_last_one_on_the_same_model_and_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let h100 = write_config(dir.path(), "H100:1");

    // Nothing finished yet: the file's baseline, said so.
    let (first, stderr) = run(&h100, &["--session", "first", "--iterations", "3", "--from-known-good"]);
    assert!(stderr.contains("starting from the file's baseline"), "{stderr}");
    assert_eq!(first["iterations"][0]["flags"], serde_json::json!({}), "{first}");
    let champion = first["champion"]["iteration"].as_u64().expect("a champion");
    assert!(champion > 1, "the rules improved on the baseline: {first}");
    let champion_flags = first["iterations"][(champion - 1) as usize]["flags"].clone();

    let (second, stderr) = run(&h100, &["--session", "second", "--iterations", "1", "--from-known-good"]);
    assert!(stderr.contains("starting from the known-good config"), "{stderr}");
    assert_eq!(second["iterations"][0]["flags"], champion_flags, "{second}");

    // Another GPU type has no known-good config: its baseline.
    let a100 = write_config(dir.path(), "A100:1");
    let (third, stderr) = run(&a100, &["--session", "third", "--iterations", "1", "--from-known-good"]);
    assert!(stderr.contains("no finished session"), "{stderr}");
    assert_eq!(third["iterations"][0]["flags"], serde_json::json!({}), "{third}");
}
