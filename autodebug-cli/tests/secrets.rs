//! One redaction path: a canary secret planted in every input path (a ServiceSpec's env, an
//! `--api-key` flag, a dstack base file's inline `HF_TOKEN=...`, the LLM key) never appears in any
//! output (store file bytes, trail files, rendered files of every backend, the displayed command,
//! the LLM prompt), and knob values whose names mention tokens stay readable.

use std::collections::BTreeMap;
use std::path::Path;

use autodebug_core::store::Store;
use autodebug_core::trail::Trail;
use autodebug_core::{
    Analysis, Deployer, History, Iteration, IterationStatus, Objective, Plan, PlanInput, SearchSpace, Secret,
    ServiceSpec,
};
use autodebug_deploy::dstack::DstackDeployer;
use autodebug_deploy::{KubernetesDeployer, LocalDeployer, SlurmDeployer};
use autodebug_llm::PlanContext;

const ENV_CANARY: &str = "canary-env-7d1f0c9a";
const FLAG_CANARY: &str = "canary-flag-53be2e41";
const BASE_CANARY: &str = "canary-base-a90c6d12";
const LLM_CANARY: &str = "canary-llm-0b7e3f55";

/// A spec read from a dstack base file with an inline token, given a secret env entry and `--api-key`.
fn planted_spec(dir: &Path) -> ServiceSpec {
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../autodebug-deploy/tests/fixtures/dstack-service.yml"),
    )
    .expect("fixture")
    .replace(
        "  - MODEL_ID=Qwen/Qwen1.5-0.5B-Chat",
        &format!("  - MODEL_ID=Qwen/Qwen1.5-0.5B-Chat\n  - HF_TOKEN={BASE_CANARY}"),
    )
    .replace("--schedule-policy lpm", &format!("--schedule-policy lpm --api-key {FLAG_CANARY}"));
    let path = dir.join("base.yml");
    std::fs::write(&path, base).expect("write base");
    let mut spec = DstackDeployer::base_spec_from_file(&path).expect("the planted base parses");
    spec.env.push(("OPENAI_API_KEY".into(), ENV_CANARY.into()));
    spec.flags.set("--max-num-batched-tokens", Some("4096"));
    spec
}

fn assert_clean(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for canary in [ENV_CANARY, FLAG_CANARY, BASE_CANARY, LLM_CANARY] {
        assert!(!text.contains(canary), "{what} leaks `{canary}`:\n{text}");
    }
}

fn iteration(spec: &ServiceSpec, artifact: autodebug_core::Artifact, number: u32) -> Iteration {
    let mut next = spec.clone();
    next.flags.set("--schedule-policy", Some("fcfs"));
    Iteration {
        number,
        artifact: Some(artifact),
        spec: spec.clone(),
        status: IterationStatus::DeployFailed,
        metrics: BTreeMap::new(),
        bench: BTreeMap::new(),
        analysis: Analysis::default(),
        plan: Some(Plan {
            planner: "rules".into(),
            changes: Vec::new(),
            next,
            exhausted: false,
            notes: vec![format!("engine said: api_key={FLAG_CANARY}")],
        }),
        error: Some(format!("engine exited: --api-key {FLAG_CANARY} rejected; HF_TOKEN={BASE_CANARY}")),
        started_ns: 1_774_191_600_000_000_000 + i128::from(number) * 60_000_000_000,
        finished_ns: 1_774_191_600_000_000_000 + i128::from(number) * 60_000_000_000 + 1,
        timings: BTreeMap::new(),
        round: None,
    }
}

#[test]
fn a_canary_planted_in_every_input_reaches_no_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = planted_spec(dir.path());
    // The comparison runs on real values: the spec itself still holds them.
    assert_eq!(spec.flags.get("--api-key"), Some(Some(FLAG_CANARY)));
    assert!(spec.env.iter().any(|(n, v)| n == "HF_TOKEN" && v == BASE_CANARY));
    let _llm_key = Secret::new(LLM_CANARY);

    // Every renderer.
    let local =
        LocalDeployer::builder().program("python3").args_template(["{model}", "{flags}"]).build().expect("local");
    let renderers: Vec<Box<dyn Deployer>> = vec![
        Box::new(local),
        Box::new(
            SlurmDeployer::builder().program("python3").args_template(["{model}", "{flags}"]).build().expect("slurm"),
        ),
        Box::new(KubernetesDeployer::render_only()),
        Box::new(DstackDeployer::render_only(serde_yaml::Value::Null)),
    ];
    let mut artifacts = Vec::new();
    for deployer in &renderers {
        let artifact = deployer.render(&spec).expect("renders");
        assert_clean(&format!("the {} rendering", deployer.name()), artifact.content.as_bytes());
        assert!(
            artifact.content.contains("4096"),
            "{}: the knob value is readable:\n{}",
            deployer.name(),
            artifact.content
        );
        artifacts.push(artifact);
    }
    let dstack = &artifacts[3].content;
    assert!(dstack.contains("- HF_TOKEN\n") && dstack.contains("\"$API_KEY\""), "dstack keeps references:\n{dstack}");
    assert!(!dstack.contains("AUTODEBUG_SECRET_REF"), "the header shows the variable, not a stand-in:\n{dstack}");

    // The store: every byte of the database file (and its WAL).
    let sessions = dir.path().join("sessions");
    std::fs::create_dir_all(&sessions).expect("mkdir");
    let store = Store::open(&sessions.join("autodebug.db")).expect("store");
    let objective = Objective::minimize("chat.e2e.mean");
    let config = serde_json::json!({"llm": {"api_key": LLM_CANARY}, "flags": format!("--api-key {FLAG_CANARY}")});
    let session = store.create_session("canary", "dstack", "sglang", &objective, &config, 1).expect("session");
    let first = iteration(&spec, artifacts[3].clone(), 1);
    store.begin_iteration(session.id, 1, &spec, first.artifact.as_ref(), first.started_ns).expect("begin");
    store.finish_iteration(session.id, &first).expect("finish");
    let mut changed = spec.clone();
    changed.flags.set("--api-key", Some(format!("{FLAG_CANARY}-rotated")));
    let second = iteration(&changed, artifacts[0].clone(), 2);
    store.finish_iteration(session.id, &second).expect("finish 2");

    // The trail, with a config diff in which the key changed.
    let trail = Trail::new(&sessions).expect("trail");
    trail.write_iteration(&first, None, &objective, "context").expect("trail 1");
    let files = trail.write_iteration(&second, Some(&first), &objective, "context").expect("trail 2");
    let log = std::fs::read_to_string(&files.debug_log).expect("debug log");
    assert!(log.contains("--api-key") && log.contains("*** (changed)"), "the diff says the key changed:\n{log}");
    drop(store);
    for entry in std::fs::read_dir(&sessions).expect("ls").filter_map(|e| e.ok()) {
        assert_clean(&entry.path().display().to_string(), &std::fs::read(entry.path()).expect("read"));
    }
    // The stored spec reads back with the knob values intact.
    let store = Store::open(&sessions.join("autodebug.db")).expect("reopen");
    let history = store.history(session.id).expect("history");
    assert_eq!(history.iterations[0].spec.flags.get("--max-num-batched-tokens"), Some(Some("4096")));

    // The LLM planner's prompt.
    let history = History::default();
    let space = SearchSpace::for_engine(spec.engine);
    let analysis = Analysis::default();
    let input =
        PlanInput { history: &history, analysis: &analysis, space: &space, current: &spec, objective: &objective };
    let prompt = PlanContext::new(&input, None).prompt();
    assert_clean("the LLM prompt", format!("{}\n{}", prompt.system, prompt.user).as_bytes());
    assert!(prompt.user.contains("--max-num-batched-tokens 4096"), "the knob is readable in the prompt");
}

#[test]
fn knob_values_stay_readable_in_scripts_and_error_messages() {
    let spec = ServiceSpec::new("knobs", autodebug_core::EngineKind::Vllm, "Qwen/Qwen1.5-0.5B-Chat")
        .with_flag("--max-num-batched-tokens", Some("4096"))
        .with_flag("--long-prefill-token-threshold", Some("512"));
    let local =
        LocalDeployer::builder().program("vllm").args_template(["serve", "{model}", "{flags}"]).build().expect("local");
    let script = local.render(&spec).expect("renders").content;
    assert!(script.contains("--max-num-batched-tokens 4096"), "{script}");
    assert!(script.contains("--long-prefill-token-threshold 512"), "{script}");
    let args: Vec<String> = spec.flags.to_args();
    let shown = autodebug_core::secret::redact_args(&args).join(" ");
    assert_eq!(shown, "--max-num-batched-tokens 4096 --long-prefill-token-threshold 512");
    assert!(!autodebug_core::secret::is_secret_name("--max-num-batched-tokens"));
    assert!(
        autodebug_core::secret::is_secret_name("--api-key") && autodebug_core::secret::is_secret_name("--hf-token")
    );
}
