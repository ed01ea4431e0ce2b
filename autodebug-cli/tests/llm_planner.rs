//! `planner: llm` and `rules: [...]` in `autodebug.yaml`, end to end: `autodebug run` on the
//! simulator (a real child process over loopback HTTP) planning with a scripted OpenAI-compatible
//! chat server on 127.0.0.1, a user rules file in the knowledge base, and the errors a user sees
//! when the key or a rules file is missing or broken.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use autodebug_core::History;
use autodebug_core::store::Store;
use serde_json::Value;

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_autodebug");

/// Unlike any text the loop could produce, so finding it anywhere means it leaked.
const FAKE_KEY: &str = "sk-fake-7c1e93b4d2a8f6e0-never-print-me";
const KEY_ENV: &str = "AUTODEBUG_TEST_LLM_KEY";

/// Plan 1: a valid change of a catalog knob, citing the first signal offered.
const GOOD_PLAN: &str = r#"```json
{"rationale": "scripted: the scheduler runs one decode step per loop", "changes": [{"knob": "--num-continuous-decode-steps", "value": 4, "reason": "scripted: fewer scheduler passes per token", "cites": ["S1"]}]}
```"#;
/// Plan 2: a flag outside the catalog, which must be rejected.
const BAD_PLAN: &str =
    r#"{"changes": [{"knob": "--rm-rf", "value": "/", "reason": "scripted: not a knob", "cites": ["S1"]}]}"#;

/// A small session on the simulator; `extra` is appended (planner, llm, rules sections).
fn write_config(dir: &Path, iterations: u32, extra: &str) -> PathBuf {
    let path = dir.join("autodebug.yaml");
    let text = format!(
        r#"session: llm-test
sessions_dir: sessions
deployer:
  kind: simulator
service:
  engine: sglang
  model: Qwen/Qwen1.5-0.5B-Chat
  gpu: H100:1
bench:
  - name: chat
    prompt_tokens: 31
    output_tokens: 150
    repeat_prompt: true
    requests: 8
objective:
  minimize: chat.e2e.mean
  constraints: ["chat.error_rate == 0"]
budget:
  iterations: {iterations}
{extra}"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `autodebug <args> -c <config>` from `dir`, so the relative `sessions_dir` lands inside it.
fn run(dir: &Path, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command.current_dir(dir).args(args).arg("-c").arg(config).env_remove(KEY_ENV).env_remove("OPENAI_API_KEY");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn debug_logs(sessions: &Path) -> Vec<String> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(sessions)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("debug-")))
        .collect();
    names.sort();
    names.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect()
}

fn history(sessions: &Path) -> History {
    let store = Store::open(&sessions.join("autodebug.db")).unwrap();
    let session = store.session_by_name("llm-test").unwrap().expect("the session is in the store");
    store.history(session.id).unwrap()
}

#[test]
fn llm_plan_is_applied_a_bad_plan_is_rejected_for_the_fallback_and_the_key_never_leaks() {
    let (_runtime, base_url, script) = support::chat_server(&[GOOD_PLAN, BAD_PLAN]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        3,
        &format!(
            "planner: llm\nllm:\n  base_url: {base_url}\n  model: scripted\n  api_key_env: {KEY_ENV}\n  timeout_s: 10\n  budget:\n    max_calls: 2\n"
        ),
    );
    // -vv: debug logs are where a key would most likely slip out.
    let output = run(dir.path(), &config, &["-vv", "run", "--json"], &[(KEY_ENV, FAKE_KEY)]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "run failed: {stderr}");

    let sessions = dir.path().join("sessions");
    let history = history(&sessions);
    assert_eq!(history.iterations.len(), 3);

    // Iteration 1 was planned by the model, and iteration 2 ran its change.
    let first = history.iterations[0].plan.as_ref().expect("iteration 1 has a plan");
    assert_eq!(first.planner, "llm", "{first:?}");
    assert_eq!(first.changes.len(), 1);
    assert_eq!(first.changes[0].knob, "--num-continuous-decode-steps");
    assert_eq!(first.changes[0].to.as_deref(), Some("4"));
    assert!(!first.changes[0].evidence.is_empty(), "the model's change cites a signal");
    assert_eq!(history.iterations[1].spec.flags.get("--num-continuous-decode-steps").flatten(), Some("4"));

    // Iteration 2's plan: the model's unknown flag rejected with its reason, the rule planner instead.
    let second = history.iterations[1].plan.as_ref().expect("iteration 2 has a plan");
    assert_ne!(second.planner, "llm", "{second:?}");
    let rejection = second.notes.first().cloned().unwrap_or_default();
    assert!(rejection.contains("--rm-rf") && rejection.contains("not in the"), "{:?}", second.notes);
    assert!(rejection.contains("fell back to the rules planner"), "{rejection}");
    assert!(second.changes.iter().all(|c| c.knob != "--rm-rf"));
    assert!(history.iterations[2].spec.flags.get("--rm-rf").is_none());

    // Iteration 3's plan: the two-call budget is spent, so no third call was made.
    let third = history.iterations[2].plan.as_ref().expect("iteration 3 has a plan");
    assert!(third.notes.iter().any(|n| n.contains("budget spent")), "{:?}", third.notes);

    // The human trail tells the same story.
    let logs = debug_logs(&sessions);
    assert_eq!(logs.len(), 3);
    assert!(logs[0].contains("(planner `llm`)") && logs[0].contains("`--num-continuous-decode-steps`"), "{}", logs[0]);
    assert!(logs[1].contains("--rm-rf") && logs[1].contains("fell back to the rules planner"), "{}", logs[1]);

    // The key went to the server, and nowhere else.
    let authorizations = script.lock().unwrap().authorizations.clone();
    assert_eq!(authorizations.len(), 2, "one request per allowed call");
    for auth in &authorizations {
        assert_eq!(auth.as_deref(), Some(format!("Bearer {FAKE_KEY}").as_str()));
    }
    support::assert_no_canaries("stdout", &output.stdout, &[FAKE_KEY]);
    support::assert_no_canaries("stderr", &output.stderr, &[FAKE_KEY]);
    let files = support::files_under(&sessions);
    assert!(files.len() >= 7, "trail and store written: {files:?}");
    for file in files {
        support::assert_no_canaries(&file.display().to_string(), &std::fs::read(&file).unwrap(), &[FAKE_KEY]);
    }
}

#[test]
fn a_missing_key_names_the_variable_and_the_file_before_anything_is_deployed() {
    let dir = tempfile::tempdir().unwrap();
    // `--planner llm` overrides the file's planner; the defaults read OPENAI_API_KEY.
    let config = write_config(dir.path(), 1, "planner: rules\n");
    let output = run(dir.path(), &config, &["run", "--planner", "llm"], &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("OPENAI_API_KEY") && stderr.contains(&config.display().to_string()), "{stderr}");
    assert!(stderr.contains("llm.api_key_env"), "{stderr}");
    assert!(!dir.path().join("sessions").join("autodebug.db").exists(), "nothing ran");

    let config =
        write_config(dir.path(), 1, &format!("planner: llm\nllm:\n  provider: anthropic\n  api_key_env: {KEY_ENV}\n"));
    let output = run(dir.path(), &config, &["run"], &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(KEY_ENV) && stderr.contains("api.anthropic.com"), "{stderr}");

    let config = write_config(dir.path(), 1, "planner: llm\nllm:\n  fallback: llm\n");
    let output = run(dir.path(), &config, &["run"], &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("fallback") && stderr.contains("autodebug.yaml"), "{stderr}");
}

const USER_RULES: &str = r#"rules:
  - id: user.prefer_lpm
    engines: [sglang]
    bottleneck: cache_misses
    priority: 1
    summary: "user rule: KV usage read ({kv_usage|pct}); this site always schedules by longest prefix"
    when:
      - { signal: kv_usage, op: exists }
    then:
      - { knob: --schedule-policy, set: lpm, reason: "user rule: this site prefers lpm" }
"#;

#[test]
fn user_rules_files_join_the_knowledge_base_and_relative_paths_start_at_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules").join("site.yaml"), USER_RULES).unwrap();
    // No `planner`: the default hybrid, whose rule phase must use the user rules too.
    let config = write_config(dir.path(), 1, "rules: [rules/site.yaml]\n");
    // Run from elsewhere: the rules path must resolve against the config file, not the cwd.
    let elsewhere = tempfile::tempdir().unwrap();
    let config_text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("sessions_dir: sessions", &format!("sessions_dir: {}", dir.path().join("sessions").display()));
    std::fs::write(&config, config_text).unwrap();
    let output = run(elsewhere.path(), &config, &["run", "-q"], &[]);
    assert!(output.status.success(), "run failed: {}", String::from_utf8_lossy(&output.stderr));

    let sessions = dir.path().join("sessions");
    let history = history(&sessions);
    let first = &history.iterations[0];
    assert!(first.analysis.findings.iter().any(|f| f.rule == "user.prefer_lpm"), "{:?}", first.analysis.findings);
    let plan = first.plan.as_ref().expect("a plan");
    assert_eq!(plan.planner, "hybrid");
    let change = plan.changes.iter().find(|c| c.knob == "--schedule-policy").expect("the user rule's change");
    assert_eq!((change.rule.as_str(), change.to.as_deref()), ("user.prefer_lpm", Some("lpm")));
    let logs = debug_logs(&sessions);
    assert!(logs[0].contains("rule `user.prefer_lpm`"), "{}", logs[0]);
}

#[test]
fn a_broken_or_missing_rules_file_is_an_error_naming_its_path_and_rule() {
    let dir = tempfile::tempdir().unwrap();
    let broken = USER_RULES.replace("    when:\n      - { signal: kv_usage, op: exists }\n", "");
    std::fs::write(dir.path().join("broken.yaml"), broken).unwrap();
    let config = write_config(dir.path(), 1, "rules: [broken.yaml]\n");
    let output = run(dir.path(), &config, &["run"], &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&dir.path().join("broken.yaml").display().to_string()), "{stderr}");
    assert!(stderr.contains("user.prefer_lpm") && stderr.contains("when"), "{stderr}");

    let config = write_config(dir.path(), 1, "rules: [absent.yaml]\n");
    let output = run(dir.path(), &config, &["run"], &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&dir.path().join("absent.yaml").display().to_string()), "{stderr}");
    assert!(stderr.contains("rules"), "{stderr}");
    assert!(!dir.path().join("sessions").join("autodebug.db").exists(), "nothing ran");
}

#[test]
fn the_example_config_runs_against_a_local_keyless_server() {
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/llm-planner.yaml")).unwrap();
    assert!(example.contains("base_url: http://127.0.0.1:8080"), "the example points at a local server");
    let (_runtime, base_url, script) = support::chat_server(&[GOOD_PLAN]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("llm-planner.yaml");
    let text = example
        .replace("base_url: http://127.0.0.1:8080", &format!("base_url: {base_url}"))
        .replace("iterations: 4", "iterations: 2")
        .replace("requests: 12", "requests: 4");
    std::fs::write(&config, text).unwrap();
    let output = run(dir.path(), &config, &["run", "-q", "--json"], &[]);
    assert!(output.status.success(), "run failed: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON object on stdout");
    assert_eq!(report["iterations"].as_array().map(Vec::len), Some(2), "{report}");
    let authorizations = script.lock().unwrap().authorizations.clone();
    assert!(!authorizations.is_empty(), "the model was asked");
    assert!(authorizations.iter().all(Option::is_none), "`api_key_env: \"\"` sends no key: {authorizations:?}");
    let store = Store::open(&dir.path().join("sessions/llm-planner/autodebug.db")).unwrap();
    let session = store.session_by_name("llm-planner").unwrap().expect("the session is in the store");
    let history = store.history(session.id).unwrap();
    assert_eq!(history.iterations[0].plan.as_ref().map(|p| p.planner.as_str()), Some("llm"));
}
