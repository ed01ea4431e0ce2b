//! `objective: {maximize: capacity, slo: [...]}` end to end: `autodebug run` on the simulator (a
//! real child process over loopback HTTP) ranks configurations by the highest request rate at
//! which the SLO holds. The configurations are scripted through the `llm` planner and a fake
//! OpenAI-compatible server on 127.0.0.1, so the test knows which one must win: the baseline
//! runs one request at a time (`--max-running-requests 1`), the second batches up to 64, and its
//! capacity must be the higher one and make it the champion.

use std::path::{Path, PathBuf};
use std::process::Command;

use autodebug_core::store::Store;
use serde_json::Value;

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_autodebug");

/// The planner's one proposal: lift the cap on requests run together.
const BATCH_MORE: &str = r#"{"rationale": "scripted: one request at a time caps capacity", "changes": [{"knob": "--max-running-requests", "value": 64, "reason": "scripted: batch requests together", "cites": ["S1"]}]}"#;

/// Two iterations of a capacity session on the simulated SGLang engine. The search is kept
/// short (2 s steps, a wide 30% tolerance, one trial per rate, at most 6 steps) and capped at
/// 16 req/s, which the batching configuration holds and the one-at-a-time one cannot.
fn write_config(dir: &Path, llm_url: &str) -> PathBuf {
    let path = dir.join("autodebug.yaml");
    let text = format!(
        r#"session: capacity-test
sessions_dir: sessions
deployer:
  kind: simulator
service:
  engine: sglang
  model: Qwen/Qwen1.5-0.5B-Chat
  gpu: H100:1
  flags:
    --max-running-requests: 1
bench:
  - name: chat
    prompt_tokens: 128
    output_tokens: 96
    requests: 10
    warmup: 1
objective:
  maximize: capacity
  slo: ["ttft.p99 <= 600ms"]
  capacity_search:
    start_rate: 4
    min_rate: 0.5
    max_rate: 16
    step_s: 2
    tolerance: 0.3
    boundary_trials: 1
    max_steps: 6
planner: llm
llm:
  base_url: {llm_url}
  model: scripted
  api_key_env: ""
  fallback: rules
budget:
  iterations: 2
telemetry: [prometheus, logs]
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_loop_ranks_configurations_by_capacity_under_the_slo() {
    let dir = tempfile::tempdir().unwrap();
    let (_runtime, llm_url, _) = support::chat_server(&[BATCH_MORE]);
    let config = write_config(dir.path(), &llm_url);
    let output = Command::new(BIN)
        .current_dir(dir.path())
        .args(["run", "-q", "--json", "-c"])
        .arg(&config)
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "run failed: {stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON object on stdout");
    assert_eq!(report["objective"], "maximize capacity subject to capacity >= 0.5000", "{report}");

    let iterations = report["iterations"].as_array().expect("iterations");
    assert_eq!(iterations.len(), 2, "{report}");
    let capacities: Vec<f64> = iterations
        .iter()
        .map(|it| {
            assert_eq!(it["status"], "ok", "{it}");
            let capacity = it["metrics"]["capacity"].as_f64().unwrap_or_else(|| panic!("no capacity: {it}"));
            assert!(capacity > 0.0, "no rate held the SLO: {it}");
            assert_eq!(it["metrics"]["chat.capacity"].as_f64(), Some(capacity), "{it}");
            // The figures of the rate that held are there for the analyzer, and meet the SLO.
            let ttft = it["metrics"]["ttft.p99"].as_f64().unwrap_or_else(|| panic!("no ttft.p99: {it}"));
            assert!(ttft <= 600.0, "the reported rate's figures break the SLO: {it}");
            capacity
        })
        .collect();
    assert_eq!(iterations[0]["flags"]["--max-running-requests"], "1", "{report}");
    assert_eq!(iterations[1]["flags"]["--max-running-requests"], "64", "the scripted plan was not applied: {report}");
    // One request at a time saturates far below what batching serves: a capacity objective wired
    // the wrong way round, or reading the wrong metric, keeps the baseline as champion.
    assert!(capacities[1] > capacities[0] * 1.5, "capacities {capacities:?}");
    let best = if capacities[1] > capacities[0] { 2 } else { 1 };
    assert_eq!(report["champion"]["iteration"].as_u64(), Some(best), "{report}");
    assert_eq!(report["champion"]["metric"], "capacity", "{report}");

    // The store keeps each search's outcome with the plan's summary.
    let store = Store::open(&dir.path().join("sessions/autodebug.db")).unwrap();
    let session = store.session_by_name("capacity-test").unwrap().expect("the session is stored");
    let history = store.history(session.id).unwrap();
    for (it, capacity) in history.iterations.iter().zip(&capacities) {
        let outcome = it.bench["chat"].capacity.as_ref().expect("the search's outcome is stored");
        let steps: Vec<String> =
            outcome.steps.iter().map(|s| format!("{:.2}{}", s.rate, if s.holds { "+" } else { "-" })).collect();
        println!("iteration {}: capacity {} req/s, steps {}", it.number, outcome.rate, steps.join(" "));
        assert_eq!(outcome.rate, *capacity);
        assert!(!outcome.steps.is_empty() && outcome.steps.len() <= 6, "{outcome:?}");
        assert!(outcome.steps.iter().any(|s| s.rate == outcome.rate && s.holds), "{outcome:?}");
    }
    // The trail says what was measured: the search, not the plan's nominal closed-loop load.
    let trail = std::fs::read_dir(dir.path().join("sessions"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("debug-")))
        .expect("a debug log in the trail");
    let text = std::fs::read_to_string(&trail).unwrap();
    assert!(text.contains("the highest open-loop rate holding ttft.p99 <="), "{}:\n{text}", trail.display());
}
