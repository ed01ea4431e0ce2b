//! `autodebug init` and `autodebug config-reference`, run as the binary.

use std::path::Path;
use std::process::{Command, Output};

fn autodebug(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autodebug")).args(args).current_dir(dir).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn init_writes_a_commented_file_and_keeps_an_existing_one() {
    let dir = tempfile::tempdir().unwrap();
    for target in ["simulator", "local", "dstack", "kubernetes", "slurm"] {
        let out = format!("{target}.yaml");
        let run = autodebug(&["init", "--target", target, "--out", &out], dir.path());
        assert!(run.status.success(), "{target}: {}", text(&run.stderr));
        let written = std::fs::read_to_string(dir.path().join(&out)).unwrap();
        let comments = written.lines().filter(|l| l.trim_start().starts_with('#')).count();
        assert!(comments >= 20, "{target}: only {comments} comment lines");
        assert!(written.contains(&format!("--target {target}")));
    }
    let again = autodebug(&["init", "--out", "simulator.yaml"], dir.path());
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("--force"), "{}", text(&again.stderr));
    let forced = autodebug(&["init", "--out", "simulator.yaml", "--force", "--target", "local"], dir.path());
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert!(std::fs::read_to_string(dir.path().join("simulator.yaml")).unwrap().contains("kind: local"));
}

#[test]
fn init_prints_to_stdout_with_a_dash() {
    let dir = tempfile::tempdir().unwrap();
    let run = autodebug(&["init", "--target", "dstack", "--out", "-"], dir.path());
    assert!(run.status.success());
    let stdout = text(&run.stdout);
    assert!(stdout.contains("kind: dstack") && stdout.contains("base_file"), "{stdout}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing is written");
}

#[test]
fn docs_config_reference_is_the_generated_one() {
    let dir = tempfile::tempdir().unwrap();
    let run = autodebug(&["config-reference"], dir.path());
    assert!(run.status.success(), "{}", text(&run.stderr));
    let generated = text(&run.stdout);
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config-reference.md");
    if std::env::var_os("AUTODEBUG_BLESS").is_some() {
        std::fs::write(&docs, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&docs).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/config-reference.md is out of date; regenerate it with `autodebug config-reference > docs/config-reference.md` \
         (or run this test with AUTODEBUG_BLESS=1)"
    );
    for key in ["sessions_dir", "deployer", "ready_timeout_s", "prompt_tokens", "constraints", "telemetry"] {
        assert!(generated.contains(&format!("| `{key}` |")), "{key} is not documented");
    }
}

#[test]
fn config_reference_json_is_a_schema() {
    let dir = tempfile::tempdir().unwrap();
    let run = autodebug(&["config-reference", "--json"], dir.path());
    assert!(run.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(schema["title"], "RunConfig");
    let required: Vec<&str> = schema["required"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    for key in ["deployer", "service", "bench", "objective"] {
        assert!(required.contains(&key), "{key} should be required: {required:?}");
    }
}
