//! The loop against the failures and the catalog of a REAL vLLM 0.32 on a CPU, replayed from the
//! engine's own recorded logs and help (`tests/fixtures/vllm_cpu/`, provenance in SOURCES.md): a
//! stand-in deployer answers with the log the real engine printed for the same flags, so the
//! session's root-cause finding, its refusal to retry a failed change and its check against the
//! installed engine's arguments are tested without the engine. The real engine runs the same loop in
//! `autodebug-cli/tests/vllm_cpu.rs`.

use std::sync::Mutex;
use std::time::Duration;

use autodebug_core::session::{Session, SessionConfig};
use autodebug_core::*;

const NUMA_LOG: &str = include_str!("fixtures/vllm_cpu/vllm_0.32.0_error_tp2_numa.log");
const HELP: &str = include_str!("fixtures/vllm_cpu/vllm_0.32.0_serve_help_all.txt");

/// A vLLM CPU engine on one NUMA node: `--tensor-parallel-size` above 1 fails at start with the
/// log the real engine printed for it; anything else starts.
struct OneNumaNodeVllm {
    deployed: Mutex<Vec<LaunchFlags>>,
}

#[async_trait]
impl Deployer for OneNumaNodeVllm {
    fn name(&self) -> &str {
        "one-numa-node"
    }

    fn render(&self, spec: &ServiceSpec) -> Result<Artifact> {
        Ok(Artifact {
            target: "local".into(),
            extension: "sh".into(),
            content: format!("vllm serve {}\n", spec.flags.to_command_line()),
        })
    }

    async fn deploy(&self, spec: &ServiceSpec) -> Result<Deployment> {
        self.deployed.lock().unwrap_or_else(|e| e.into_inner()).push(spec.flags.clone());
        Ok(Deployment {
            id: "1".into(),
            backend: "local".into(),
            spec: spec.clone(),
            started_ns: TimeWindow::now_ns(),
            details: Default::default(),
        })
    }

    async fn wait_ready(&self, deployment: &Deployment, _timeout: Duration) -> Result<Endpoint> {
        if tensor_parallel(&deployment.spec) > 1 {
            return Err(Error::deploy("the engine exited during start-up (exit status 1)"));
        }
        Ok(Endpoint::new("http://127.0.0.1:9", "m"))
    }

    async fn logs(&self, deployment: &Deployment, _since: Option<i128>) -> Result<Vec<LogLine>> {
        let text = if tensor_parallel(&deployment.spec) > 1 { NUMA_LOG } else { "INFO Application startup complete." };
        Ok(text.lines().map(|l| LogLine { time_ns: 0, text: l.to_string() }).collect())
    }

    async fn teardown(&self, _deployment: &Deployment) -> Result<()> {
        Ok(())
    }
}

fn tensor_parallel(spec: &ServiceSpec) -> u32 {
    spec.flags.get("--tensor-parallel-size").flatten().and_then(|v| v.parse().ok()).unwrap_or(1)
}

/// Throughput grows with `--max-num-seqs`, so every measured change is comparable.
struct Bench;

#[async_trait]
impl Benchmarker for Bench {
    fn name(&self) -> &str {
        "bench"
    }

    async fn run(&self, _endpoint: &Endpoint, plan: &BenchPlan) -> Result<BenchReport> {
        let summary = BenchSummary {
            requests: 8,
            succeeded: 8,
            output_throughput: 100.0,
            e2e_ms: Distribution {
                count: 8,
                mean: 100.0,
                p50: 100.0,
                p99: 100.0,
                max: 100.0,
                min: 100.0,
                ..Default::default()
            },
            ..Default::default()
        };
        let now = TimeWindow::now_ns();
        Ok(BenchReport {
            plan: plan.clone(),
            context: Default::default(),
            summary,
            records: Vec::new(),
            window: TimeWindow::new(now - 1000, now),
            warnings: Vec::new(),
        })
    }
}

/// Proposes the same flags every time (a planner that has not learnt), plus a scripted extra.
struct Stubborn {
    flags: Vec<(&'static str, &'static str)>,
}

#[async_trait]
impl Planner for Stubborn {
    fn name(&self) -> &str {
        "stubborn"
    }

    async fn plan(&self, input: PlanInput<'_>) -> Result<Plan> {
        let mut next = input.current.clone();
        let mut changes = Vec::new();
        for (flag, value) in &self.flags {
            next.flags.set(flag, Some(*value));
            changes.push(Change {
                knob: flag.to_string(),
                from: input.space.effective(&input.current.flags, flag),
                to: Some(value.to_string()),
                rule: "stubborn".into(),
                reason: "always".into(),
                evidence: Vec::new(),
            });
        }
        Ok(Plan { planner: "stubborn".into(), changes, next, exhausted: false, notes: Vec::new() })
    }
}

fn config(dir: &std::path::Path, iterations: u32) -> SessionConfig {
    SessionConfig {
        name: "vllm-cpu".into(),
        objective: Objective::maximize("output_throughput"),
        bench: vec![BenchPlan::new("concurrent", Workload::new(128, 64), Load::Concurrent { concurrency: 16 }, 8)],
        max_iterations: iterations,
        max_wall: None,
        ready_timeout: Duration::from_secs(5),
        sessions_dir: dir.to_path_buf(),
        confirm_trials: 0,
    }
}

fn baseline() -> ServiceSpec {
    ServiceSpec::new("tiny", EngineKind::Vllm, "/models/tiny-llama")
}

#[tokio::test]
async fn a_change_that_failed_on_the_hardware_is_not_retried_and_the_trail_names_the_root_cause() {
    let dir = tempfile::tempdir().unwrap();
    // A catalog that believes in two NUMA nodes, on an engine that has one: the first TP 2 is a fair
    // try, the second would be a repeat.
    let believed = Platform::Cpu { cores: 2, numa_nodes: 2, bf16: false };
    let deployer = OneNumaNodeVllm { deployed: Mutex::new(Vec::new()) };
    let session = Session::builder()
        .deployer(deployer)
        .benchmarker(Bench)
        .planner(Stubborn { flags: vec![("--tensor-parallel-size", "2"), ("--max-num-seqs", "16")] })
        .search_space(SearchSpace::for_platform(EngineKind::Vllm, &believed))
        .build(config(dir.path(), 3))
        .unwrap();
    let outcome = session.run(baseline()).await.unwrap();

    let statuses: Vec<_> = outcome.history.iterations.iter().map(|i| i.status).collect();
    assert_eq!(statuses, [IterationStatus::Ok, IterationStatus::DeployFailed, IterationStatus::Ok]);
    let failed = &outcome.history.iterations[1];
    let finding = failed.analysis.findings.iter().find(|f| f.rule == "session.deploy_failed").unwrap();
    assert!(
        finding.summary.contains("Not enough allowed NUMA nodes"),
        "root cause, not the last line: {}",
        finding.summary
    );
    assert!(finding.summary.contains("hardware"), "{}", finding.summary);
    assert!(!finding.summary.contains("See root cause above"), "{}", finding.summary);

    let blamed = outcome.history.blamed_settings();
    assert_eq!(blamed.len(), 1, "{blamed:?}");
    assert_eq!((blamed[0].flag.as_str(), blamed[0].value.as_str()), ("--tensor-parallel-size", "2"));
    let replan = failed.plan.as_ref().unwrap();
    assert!(
        replan.notes.iter().any(|n| n.starts_with("not retried: `--tensor-parallel-size 2`")),
        "{:?}",
        replan.notes
    );
    let third = &outcome.history.iterations[2].spec.flags;
    assert_eq!(third.get("--tensor-parallel-size"), None, "the failed change was not repeated: {third:?}");
    assert_eq!(third.get("--max-num-seqs"), Some(Some("16")), "the rest of the plan still runs");

    let trail = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("debug-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect::<String>();
    assert!(trail.contains("Not enough allowed NUMA nodes to bind threads of 2 local CPUWorkers"), "{trail}");
}

#[tokio::test]
async fn a_plan_with_a_flag_the_installed_engine_lacks_is_refused_before_deploy_naming_flag_and_version() {
    let dir = tempfile::tempdir().unwrap();
    // The installed engine's help, less one argument the catalog has.
    let help: String =
        HELP.lines().filter(|l| !l.trim_start().starts_with("--dtype ")).map(|l| format!("{l}\n")).collect();
    let installed = EngineArgs::parse(EngineKind::Vllm, Some("0.32.0"), &help);
    assert!(installed.get("--dtype").is_none());
    let cpu = Platform::Cpu { cores: 2, numa_nodes: 1, bf16: false };
    let session = Session::builder()
        .deployer(OneNumaNodeVllm { deployed: Mutex::new(Vec::new()) })
        .benchmarker(Bench)
        .planner(Stubborn { flags: vec![("--dtype", "float32")] })
        .search_space(SearchSpace::for_platform(EngineKind::Vllm, &cpu))
        .engine_args(installed.clone())
        .build(config(dir.path(), 2))
        .unwrap();
    let outcome = session.run(baseline()).await.unwrap();
    let plan = outcome.history.iterations[0].plan.as_ref().unwrap();
    assert!(plan.notes.iter().any(|n| n.contains("--dtype") && n.contains("vllm 0.32.0")), "{:?}", plan.notes);
    assert!(!outcome.history.iterations[1].spec.flags.contains("--dtype"), "the refused flag was never deployed");

    // A baseline with such a flag stops before anything is deployed.
    let deployer = OneNumaNodeVllm { deployed: Mutex::new(Vec::new()) };
    let session = Session::builder()
        .deployer(deployer)
        .benchmarker(Bench)
        .planner(Stubborn { flags: vec![] })
        .search_space(SearchSpace::for_platform(EngineKind::Vllm, &cpu))
        .engine_args(installed)
        .build(config(dir.path(), 1))
        .unwrap();
    let err = session.run(baseline().with_flag("--dtype", Some("float32"))).await.unwrap_err().to_string();
    assert!(err.contains("--dtype") && err.contains("0.32.0") && err.contains("baseline"), "{err}");
}

#[test]
fn the_cpu_catalog_has_the_cpu_engines_defaults_and_no_gpu_knobs() {
    let cpu = Platform::Cpu { cores: 2, numa_nodes: 1, bf16: false };
    let space = SearchSpace::for_platform(EngineKind::Vllm, &cpu);
    for gpu_only in ["--gpu-memory-utilization", "--enforce-eager", "--kv-cache-dtype"] {
        assert!(space.knob(gpu_only).is_none(), "{gpu_only} on a CPU");
    }
    assert_eq!(space.knob("--max-num-seqs").unwrap().default.as_deref(), Some("128"));
    assert_eq!(space.knob("--max-num-batched-tokens").unwrap().default.as_deref(), Some("2048"));
    assert!(space.knob("VLLM_CPU_KVCACHE_SPACE").is_some(), "the CPU engine's environment knobs are knobs");
    let tp = space.knob("--tensor-parallel-size").unwrap();
    assert!(tp.validate(Some("1")).is_ok() && tp.validate(Some("2")).is_err());
    // The same engine on GPUs keeps its GPU knobs.
    let gpu = SearchSpace::for_platform(EngineKind::Vllm, &Platform::Gpu { name: "H100".into(), count: 1 });
    assert!(gpu.knob("--gpu-memory-utilization").is_some());
    // llama.cpp threads never exceed the cores.
    let llama = SearchSpace::for_platform(EngineKind::LlamaCpp, &cpu);
    assert!(llama.knob("--threads").unwrap().candidates.iter().all(|c| c.parse::<u32>().unwrap() <= 2));
}

#[test]
fn a_switch_and_its_negation_never_appear_together() {
    let space = SearchSpace::for_engine(EngineKind::Vllm);
    let mut flags = LaunchFlags::new();
    assert_eq!(space.effective(&flags, "--enable-prefix-caching").as_deref(), Some("true"), "on by default in V1");
    space.apply(&mut flags, "--enable-prefix-caching", Some("false")).unwrap();
    assert_eq!(flags.to_args(), ["--no-enable-prefix-caching"]);
    assert_eq!(space.effective(&flags, "--enable-prefix-caching").as_deref(), Some("false"));
    space.apply(&mut flags, "--enable-prefix-caching", Some("true")).unwrap();
    assert!(flags.is_empty(), "back to the engine's default: {flags:?}");

    let both = LaunchFlags::parse_args(&["--enable-prefix-caching", "--no-enable-prefix-caching"]).unwrap();
    let err = space.validate_flags(&both).unwrap_err().to_string();
    assert!(err.contains("--no-enable-prefix-caching") && err.contains("--enable-prefix-caching"), "{err}");
}

#[test]
fn environment_knobs_stay_out_of_the_arguments_and_go_into_the_environment() {
    let mut spec = baseline().with_flag("--max-num-seqs", Some("16")).with_flag("VLLM_CPU_KVCACHE_SPACE", Some("4"));
    spec.env.push(("VLLM_CPU_KVCACHE_SPACE".into(), "2".into()));
    spec.env.push(("HF_HUB_OFFLINE".into(), "1".into()));
    assert_eq!(spec.flags.to_args(), ["--max-num-seqs", "16"]);
    assert_eq!(spec.flags.to_command_line(), "VLLM_CPU_KVCACHE_SPACE=4 --max-num-seqs 16");
    let env = spec.launch_env();
    assert!(env.contains(&("VLLM_CPU_KVCACHE_SPACE".into(), "4".into())), "the knob wins: {env:?}");
    assert!(env.contains(&("HF_HUB_OFFLINE".into(), "1".into())));
    assert_eq!(env.iter().filter(|(n, _)| n == "VLLM_CPU_KVCACHE_SPACE").count(), 1);
    // A YAML flags map keeps an environment knob's name as it is.
    let flags: LaunchFlags = serde_yaml::from_str("VLLM_CPU_KVCACHE_SPACE: 4\nmax-num-seqs: 8\n").unwrap();
    assert_eq!(flags.env_knobs(), [("VLLM_CPU_KVCACHE_SPACE".to_string(), "4".to_string())]);
    assert_eq!(flags.to_args(), ["--max-num-seqs", "8"]);
}

/// Output throughput grows with `--max-num-seqs`, plus a small drift per run, so repeated runs differ.
struct SeqsBench {
    runs: Mutex<u32>,
}

#[async_trait]
impl Benchmarker for SeqsBench {
    fn name(&self) -> &str {
        "seqs"
    }

    async fn run(&self, _endpoint: &Endpoint, plan: &BenchPlan) -> Result<BenchReport> {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        *runs += 1;
        let seqs: f64 = CURRENT_SEQS.lock().map(|s| *s).unwrap_or(128.0);
        let throughput = 100.0 + seqs + f64::from(*runs % 3);
        let summary = BenchSummary { requests: 8, succeeded: 8, output_throughput: throughput, ..Default::default() };
        let now = TimeWindow::now_ns();
        Ok(BenchReport {
            plan: plan.clone(),
            context: Default::default(),
            summary,
            records: Vec::new(),
            window: TimeWindow::new(now - 1000, now),
            warnings: Vec::new(),
        })
    }
}

static CURRENT_SEQS: Mutex<f64> = Mutex::new(128.0);
// The tests that use CURRENT_SEQS run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Records the `--max-num-seqs` of what it deploys for [`SeqsBench`].
struct SeqsDeployer;

#[async_trait]
impl Deployer for SeqsDeployer {
    fn name(&self) -> &str {
        "seqs"
    }

    fn render(&self, spec: &ServiceSpec) -> Result<Artifact> {
        Ok(Artifact { target: "local".into(), extension: "sh".into(), content: spec.flags.to_command_line() })
    }

    async fn deploy(&self, spec: &ServiceSpec) -> Result<Deployment> {
        let seqs = spec.flags.get("--max-num-seqs").flatten().and_then(|v| v.parse().ok()).unwrap_or(128.0);
        *CURRENT_SEQS.lock().unwrap_or_else(|e| e.into_inner()) = seqs;
        Ok(Deployment {
            id: "1".into(),
            backend: "local".into(),
            spec: spec.clone(),
            started_ns: TimeWindow::now_ns(),
            details: Default::default(),
        })
    }

    async fn wait_ready(&self, _deployment: &Deployment, _timeout: Duration) -> Result<Endpoint> {
        Ok(Endpoint::new("http://127.0.0.1:9", "m"))
    }

    async fn logs(&self, _deployment: &Deployment, _since: Option<i128>) -> Result<Vec<LogLine>> {
        Ok(Vec::new())
    }

    async fn teardown(&self, _deployment: &Deployment) -> Result<()> {
        Ok(())
    }
}

/// A session of 2 searched iterations and 3 confirmation trials, whose planner sets `--max-num-seqs`.
fn confirming_session(dir: &std::path::Path, seqs: &'static str) -> Session {
    let mut config = config(dir, 2);
    config.confirm_trials = 3;
    Session::builder()
        .deployer(SeqsDeployer)
        .benchmarker(SeqsBench { runs: Mutex::new(0) })
        .planner(Stubborn { flags: vec![("--max-num-seqs", seqs)] })
        .build(config)
        .unwrap()
}

#[tokio::test]
async fn the_champion_is_confirmed_against_the_baseline_on_interleaved_re_runs() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let outcome = confirming_session(dir.path(), "256").run(baseline()).await.unwrap();

    // 2 searched iterations, then baseline/champion alternating three times.
    let runs: Vec<Option<&str>> =
        outcome.history.iterations.iter().map(|i| i.spec.flags.get("--max-num-seqs").flatten()).collect();
    assert_eq!(runs, [None, Some("256"), None, Some("256"), None, Some("256"), None, Some("256")]);
    for trial in &outcome.history.iterations[2..] {
        let plan = trial.plan.as_ref().unwrap();
        assert_eq!(plan.planner, "confirmation");
        assert!(plan.changes.is_empty() && plan.notes[0].starts_with("confirmation trial"), "{:?}", plan.notes);
    }
    let confirmation = outcome.confirmation.expect("a confirmation");
    assert_eq!((confirmation.baseline_values.len(), confirmation.champion_values.len()), (3, 3));
    assert!(confirmation.confirmed, "{confirmation:?}");
    assert!((confirmation.p_value - 0.05).abs() < 1e-9);
    assert!(confirmation.ratio > 1.5 && confirmation.ratio < 1.7, "{}", confirmation.ratio);
    let store = autodebug_core::store::Store::open(&dir.path().join("autodebug.db")).unwrap();
    let stored = store.latest_session().unwrap().unwrap();
    assert!(stored.stop_reason.as_deref().unwrap_or("").contains("CONFIRMED"), "{:?}", stored.stop_reason);
}

#[tokio::test]
async fn no_trials_are_spent_when_nothing_beat_the_baseline_outside_the_noise() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // `--max-num-seqs 129` is one token per second better: inside the 2% noise margin.
    let outcome = confirming_session(dir.path(), "129").run(baseline()).await.unwrap();
    assert_eq!(outcome.champion().unwrap().number, 1, "the baseline stays champion");
    assert!(outcome.confirmation.is_none());
    assert_eq!(outcome.history.iterations.len(), 2, "no confirmation trials were run");
}

/// An engine started with `--api-key` answers every request without the key with HTTP 401.
struct UnauthorizedBench;

#[async_trait]
impl Benchmarker for UnauthorizedBench {
    fn name(&self) -> &str {
        "unauthorized"
    }

    async fn run(&self, _endpoint: &Endpoint, plan: &BenchPlan) -> Result<BenchReport> {
        let records: Vec<RequestRecord> = (0..8)
            .map(|index| RequestRecord {
                index,
                error: Some(ErrorClass::HttpStatus),
                error_message: Some("HTTP 401 Unauthorized: {\"error\":\"Unauthorized\"}".into()),
                ..Default::default()
            })
            .collect();
        let mut summary = BenchSummary { requests: 8, succeeded: 0, failed: 8, ..Default::default() };
        summary.errors.insert("http_status".into(), 8);
        let now = TimeWindow::now_ns();
        Ok(BenchReport {
            plan: plan.clone(),
            context: Default::default(),
            summary,
            records,
            window: TimeWindow::new(now - 1000, now),
            warnings: Vec::new(),
        })
    }
}

#[tokio::test]
async fn a_run_where_every_request_failed_is_a_failure_and_the_same_failure_twice_stops_the_session() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let session = Session::builder()
        .deployer(SeqsDeployer)
        .benchmarker(UnauthorizedBench)
        .planner(Stubborn { flags: vec![("--max-num-seqs", "256")] })
        .build(config(dir.path(), 5))
        .unwrap();
    let outcome = session.run(baseline()).await.unwrap();
    let statuses: Vec<_> = outcome.history.iterations.iter().map(|i| i.status).collect();
    assert_eq!(statuses, [IterationStatus::BenchFailed, IterationStatus::BenchFailed], "stopped after the second");
    assert_eq!(outcome.stop_reason, autodebug_core::session::StopReason::SameFailureTwice);
    let error = outcome.history.iterations[0].error.as_deref().unwrap();
    assert!(error.contains("8 of 8 failed with http_status") && error.contains("requires a key"), "{error}");
    assert!(outcome.champion().is_none(), "a run that measured nothing is never a champion");
}

#[tokio::test]
async fn a_plan_breaking_a_cross_flag_rule_is_refused_before_deploy_naming_flags_values_and_version() {
    // The plan vLLM 0.32.0 refused for real: `--max-num-batched-tokens 512 --no-enable-chunked-prefill
    // --max-model-len 1024` (SchedulerConfig: max_num_batched_tokens (512) is smaller than max_model_len (1024)).
    let dir = tempfile::tempdir().unwrap();
    let cpu = Platform::Cpu { cores: 2, numa_nodes: 1, bf16: false };
    let installed = EngineArgs::parse(EngineKind::Vllm, Some("0.32.0"), HELP);
    let off =
        baseline().with_flag("--max-model-len", Some("1024")).with_flag("--no-enable-chunked-prefill", None::<&str>);
    let deployer = OneNumaNodeVllm { deployed: Mutex::new(Vec::new()) };
    let session = Session::builder()
        .deployer(deployer)
        .benchmarker(Bench)
        .planner(Stubborn { flags: vec![("--max-num-batched-tokens", "512")] })
        .search_space(SearchSpace::for_platform(EngineKind::Vllm, &cpu))
        .engine_args(installed.clone())
        .build(config(dir.path(), 2))
        .unwrap();
    let outcome = session.run(off.clone()).await.unwrap();
    let plan = outcome.history.iterations[0].plan.as_ref().unwrap();
    assert!(
        plan.notes.iter().any(|n| n.contains("--max-num-batched-tokens 512")
            && n.contains("--max-model-len 1024")
            && n.contains("the installed vllm 0.32.0")),
        "{:?}",
        plan.notes
    );
    assert!(
        outcome.history.iterations.iter().all(|i| !i.spec.flags.contains("--max-num-batched-tokens")),
        "the refused plan was never deployed"
    );

    // The same combination as the user's baseline stops before anything is deployed.
    let session = Session::builder()
        .deployer(OneNumaNodeVllm { deployed: Mutex::new(Vec::new()) })
        .benchmarker(Bench)
        .planner(Stubborn { flags: vec![] })
        .search_space(SearchSpace::for_platform(EngineKind::Vllm, &cpu))
        .engine_args(installed)
        .build(config(dir.path(), 1))
        .unwrap();
    let err = session.run(off.with_flag("--max-num-batched-tokens", Some("512"))).await.unwrap_err().to_string();
    assert!(
        err.contains("baseline")
            && err.contains("--max-num-batched-tokens 512")
            && err.contains("installed vllm 0.32.0"),
        "{err}"
    );
}
