//! The rule analyzer and planner on hand-built evidence shaped like the published autodebug run
//! (Qwen1.5-0.5B-Chat on SGLang, 1x H100: scheduler overhead 62%, mixed chunk off, no prefix reuse).

use autodebug_core::canonical as c;
use autodebug_core::rules::{RuleAnalyzer, RulePlanner, rule};
use autodebug_core::*;

fn report(plan: BenchPlan, tpot_ms: f64, e2e_ms: f64, cached_ratio: f64) -> BenchReport {
    let summary = BenchSummary {
        requests: 10,
        succeeded: 10,
        tpot_ms: Distribution { count: 10, mean: tpot_ms, ..Default::default() },
        e2e_ms: Distribution { count: 10, mean: e2e_ms, ..Default::default() },
        cached_token_ratio: Some(cached_ratio),
        ..Default::default()
    };
    BenchReport {
        plan,
        context: Default::default(),
        summary,
        records: vec![],
        window: TimeWindow::new(0, 1),
        warnings: vec![],
    }
}

fn published_baseline_telemetry(overhead_share: f64, policy: &str, mixed_chunk: &str) -> TelemetrySnapshot {
    let mut snap = TelemetrySnapshot::new("graphsignal", None);
    snap.signals = vec![
        Signal::number("graphsignal", SignalKind::Profile, "sglang.scheduler.Scheduler.run_batch", 435.0, "ms")
            .with_count(405.0),
        Signal::number(
            "graphsignal",
            SignalKind::Profile,
            "sglang.model_executor.model_runner.ModelRunner.forward",
            267.0,
            "ms",
        )
        .with_count(405.0),
        Signal::number(
            "graphsignal",
            SignalKind::Metric,
            "graphsignal.derived.scheduler_overhead_share",
            overhead_share,
            "ratio",
        )
        .with_canonical(c::SCHEDULER_OVERHEAD_SHARE),
        Signal::text("graphsignal", SignalKind::SpanAttribute, "sglang.startup.enable_mixed_chunk", mixed_chunk),
        Signal::text("graphsignal", SignalKind::SpanAttribute, "sglang.startup.schedule_policy", policy),
        Signal::number("graphsignal", SignalKind::Metric, "sglang.cache_hit_rate", 0.0, "ratio")
            .with_canonical(c::PREFIX_HIT_RATE),
        Signal::number("graphsignal", SignalKind::Metric, "sglang.gen_throughput", 664.0, "tok/s")
            .with_canonical(c::GEN_THROUGHPUT),
    ];
    snap
}

fn chat_plan() -> BenchPlan {
    BenchPlan::new("chat", Workload { repeat_prompt: true, ..Workload::new(31, 150) }, Load::Sequential, 10)
}

async fn analyze_and_plan(spec: &ServiceSpec, telemetry: TelemetrySnapshot, e2e_ms: f64) -> (Analysis, Plan) {
    analyze_and_plan_under(spec, telemetry, e2e_ms, chat_plan()).await
}

async fn analyze_and_plan_under(
    spec: &ServiceSpec,
    telemetry: TelemetrySnapshot,
    e2e_ms: f64,
    bench_plan: BenchPlan,
) -> (Analysis, Plan) {
    let history = &History::default();
    let bench = vec![report(bench_plan, 1.5, e2e_ms, 0.0)];
    let telemetry = vec![telemetry];
    let evidence = Evidence { spec, bench: &bench, logs: &[], telemetry: &telemetry, history };
    let analysis = RuleAnalyzer::new().analyze(&evidence).await.unwrap();
    let space = SearchSpace::for_engine(spec.engine);
    let objective = Objective::minimize("e2e.mean");
    let plan = RulePlanner::new()
        .plan(PlanInput { history, analysis: &analysis, space: &space, current: spec, objective: &objective })
        .await
        .unwrap();
    (analysis, plan)
}

fn sglang_defaults() -> ServiceSpec {
    ServiceSpec::new("qwen", EngineKind::Sglang, "Qwen/Qwen1.5-0.5B-Chat")
}

fn change<'a>(plan: &'a Plan, knob: &str) -> Option<&'a Change> {
    plan.changes.iter().find(|c| c.knob == knob)
}

#[tokio::test]
async fn the_published_first_iteration_yields_the_published_plan_with_citations() {
    let spec = sglang_defaults();
    // Eight chats in flight: mixed chunking has decodes to overlap a new prefill with (one chat at
    // a time it has none, and the rule stays quiet: see rules_negative.rs).
    let concurrent = BenchPlan { load: Load::Concurrent { concurrency: 8 }, ..chat_plan() };
    let (analysis, plan) =
        analyze_and_plan_under(&spec, published_baseline_telemetry(0.62, "fcfs", "False"), 390.0, concurrent).await;

    for r in [rule::SCHEDULER_OVERHEAD, rule::MIXED_CHUNK_OFF, rule::PREFIX_CACHE_MISSES] {
        assert!(analysis.has_finding(r), "missing finding {r}: {:?}", analysis.findings);
    }
    assert_eq!(change(&plan, "--num-continuous-decode-steps").unwrap().to.as_deref(), Some("8"));
    assert_eq!(change(&plan, "--enable-mixed-chunk").unwrap().to.as_deref(), Some("true"));
    assert_eq!(change(&plan, "--schedule-policy").unwrap().to.as_deref(), Some("lpm"));
    let steps = change(&plan, "--num-continuous-decode-steps").unwrap();
    assert!(steps.evidence.iter().any(|s| s.name == "sglang.scheduler.Scheduler.run_batch"), "{:?}", steps.evidence);
    for c in &plan.changes {
        assert!(!c.evidence.is_empty(), "change {} cites nothing", c.knob);
    }
    SearchSpace::for_engine(EngineKind::Sglang).validate(&plan.next).unwrap();
    assert!(
        analysis
            .cited
            .iter()
            .any(|s| s.citation()
                == "Profile `sglang.scheduler.Scheduler.run_batch`: 405 calls / 435 ms (1.074 ms/call)")
    );
}

#[tokio::test]
async fn once_the_published_flags_are_in_the_planner_goes_beyond_them() {
    let spec = sglang_defaults()
        .with_flag("--num-continuous-decode-steps", Some("8"))
        .with_flag("--enable-mixed-chunk", None)
        .with_flag("--schedule-policy", Some("lpm"));
    // With 30 of 31 prompt tokens cached, decode is nearly all of each request (1.5 ms x 149 of 230 ms).
    let (_, plan) = analyze_and_plan(&spec, published_baseline_telemetry(0.45, "lpm", "True"), 230.0).await;
    assert_eq!(change(&plan, "--num-continuous-decode-steps").unwrap().to.as_deref(), Some("16"));
    // Decode-bound, but nothing measured says the outputs are predictable (no acceptance rate while
    // speculation is off): speculation is not switched on blind.
    assert!(change(&plan, "--speculative-algorithm").is_none(), "{:?}", plan.changes);
    assert!(change(&plan, "--enable-mixed-chunk").is_none(), "already on: {:?}", plan.changes);
}

#[tokio::test]
async fn with_no_symptom_left_the_planner_explores_untried_values_then_says_it_is_exhausted() {
    let spec = sglang_defaults();
    let space = SearchSpace::for_engine(EngineKind::Sglang).restrict(&["--schedule-policy"]);
    let analysis = Analysis::default();
    let objective = Objective::minimize("e2e.mean");
    let mut history = History::default();
    let planner = RulePlanner::new();

    let plan = planner
        .plan(PlanInput {
            history: &history,
            analysis: &analysis,
            space: &space,
            current: &spec,
            objective: &objective,
        })
        .await
        .unwrap();
    assert_eq!(plan.changes.len(), 1);
    assert_eq!(plan.changes[0].rule, rule::EXPLORE);
    assert!(!plan.exhausted);
    space.validate(&plan.next).unwrap();

    // Once the only candidate was measured, nothing is left.
    history.iterations.push(Iteration {
        number: 1,
        spec: plan.next.clone(),
        artifact: None,
        status: IterationStatus::Ok,
        metrics: Default::default(),
        bench: Default::default(),
        analysis: Analysis::default(),
        plan: None,
        error: None,
        started_ns: 0,
        finished_ns: 0,
        timings: Default::default(),
        round: None,
    });
    let plan = planner
        .plan(PlanInput {
            history: &history,
            analysis: &analysis,
            space: &space,
            current: &spec,
            objective: &objective,
        })
        .await
        .unwrap();
    assert!(plan.exhausted, "{plan:?}");
    assert!(plan.changes.is_empty());
}

#[tokio::test]
async fn retractions_with_free_memory_raise_the_static_memory_fraction() {
    let spec = sglang_defaults().with_flag("--mem-fraction-static", Some("0.80"));
    let mut snap = TelemetrySnapshot::new("logs", None);
    snap.signals = vec![
        Signal::number("logs", SignalKind::LogLine, "sglang.retract_requests", 7.0, "events")
            .with_canonical(c::PREEMPTIONS),
        Signal::number("logs", SignalKind::LogLine, "sglang.available_gpu_mem", 14.2, "GB")
            .with_canonical(c::AVAILABLE_GPU_MEM_GB),
    ];
    let (analysis, plan) = analyze_and_plan(&spec, snap, 390.0).await;
    assert!(analysis.has_finding(rule::KV_PRESSURE));
    assert_eq!(change(&plan, "--mem-fraction-static").unwrap().to.as_deref(), Some("0.84"));
}

// ---- the knowledge base as data ----

use autodebug_core::rules::KnowledgeBase;

fn iteration(number: u32, spec: ServiceSpec, metrics: &[(&str, f64)], analysis: Analysis) -> Iteration {
    Iteration {
        number,
        spec,
        artifact: None,
        status: IterationStatus::Ok,
        metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        bench: Default::default(),
        analysis,
        plan: None,
        error: None,
        started_ns: 0,
        finished_ns: 0,
        round: None,
        timings: Default::default(),
    }
}

async fn analyze_with(
    kb: Option<KnowledgeBase>,
    spec: &ServiceSpec,
    signals: Vec<Signal>,
    logs: &[LogLine],
) -> (Analysis, Plan) {
    let history = &History::default();
    let bench = vec![report(chat_plan(), 0.2, 390.0, 0.9)];
    let mut snap = TelemetrySnapshot::new("test", None);
    snap.signals = signals;
    let telemetry = vec![snap];
    let evidence = Evidence { spec, bench: &bench, logs, telemetry: &telemetry, history };
    let (analyzer, planner) = match kb {
        Some(kb) => (RuleAnalyzer::from_kb(kb.clone()), RulePlanner::from_kb(kb)),
        None => (RuleAnalyzer::new(), RulePlanner::new()),
    };
    let analysis = analyzer.analyze(&evidence).await.unwrap();
    let space = SearchSpace::for_engine(spec.engine);
    let objective = Objective::minimize("e2e.mean");
    let plan = planner
        .plan(PlanInput { history, analysis: &analysis, space: &space, current: spec, objective: &objective })
        .await
        .unwrap();
    (analysis, plan)
}

#[tokio::test]
async fn a_user_rule_file_adds_a_rule_that_fires_and_plans_with_citations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("team-rules.yaml");
    std::fs::write(
        &path,
        r#"
rules:
  - id: team.slow_forward
    engines: [sglang]
    bottleneck: decode
    summary: "forward takes {forward_ms} ms"
    when:
      - { signal: forward_ms, op: ">", value: 5 }
    then:
      - { knob: --cuda-graph-max-bs, raise: { factor: 2, max: 512 }, assume: 160, reason: "capture larger batches" }
"#,
    )
    .unwrap();
    let planner = RulePlanner::with_rules_file(&path).unwrap();
    assert!(planner.knowledge_base().rule("team.slow_forward").is_some());
    assert!(planner.knowledge_base().rule(rule::SCHEDULER_OVERHEAD).is_some(), "shipped rules stay");
    let kb = planner.knowledge_base().clone();
    let forward = Signal::number("prometheus", SignalKind::Metric, "forward", 7.5, "ms").with_canonical(c::FORWARD_MS);
    let (analysis, plan) = analyze_with(Some(kb), &sglang_defaults(), vec![forward], &[]).await;
    let finding = analysis.findings.iter().find(|f| f.rule == "team.slow_forward").expect("the user rule fires");
    assert_eq!(finding.summary, "forward takes 7.500 ms");
    let step = change(&plan, "--cuda-graph-max-bs").expect("the user rule plans");
    assert_eq!((step.to.as_deref(), step.rule.as_str()), (Some("320"), "team.slow_forward"));
    assert_eq!(step.evidence[0].name, "forward");
}

#[test]
fn a_broken_rule_file_is_refused_naming_the_file_and_the_rule() {
    let unknown_knob = "rules:\n  - id: r1\n    engines: [vllm]\n    bottleneck: decode\n    summary: s\n    when: [{ signal: kv_usage, op: '>', value: 0.5 }]\n    then: [{ knob: --schedule-policy, set: lpm, reason: x }]\n";
    let err = KnowledgeBase::from_yaml("mine.yaml", unknown_knob).unwrap_err().to_string();
    assert!(err.contains("mine.yaml") && err.contains("`r1`") && err.contains("--schedule-policy"), "{err}");
    let two_selectors = "rules:\n  - id: r2\n    bottleneck: decode\n    summary: s\n    when: [{ signal: kv_usage, flag: --x, op: '>', value: 1 }]\n";
    let err = KnowledgeBase::from_yaml("mine.yaml", two_selectors).unwrap_err().to_string();
    assert!(err.contains("`r2`") && err.contains("exactly one"), "{err}");
    let typo = "rules:\n  - id: r3\n    bottleneck: decode\n    summary: s\n    wen: []\n";
    let err = KnowledgeBase::from_yaml("mine.yaml", typo).unwrap_err().to_string();
    assert!(err.contains("mine.yaml") && err.contains("wen"), "{err}");
    let err = KnowledgeBase::load(std::path::Path::new("/nonexistent/rules.yaml")).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/rules.yaml"), "{err}");
}

#[tokio::test]
async fn sglang_docs_rules_queue_retractions_oom_and_headroom() {
    let spec = sglang_defaults();
    let metric = |name: &str, v: f64, canonical: &str| {
        Signal::number("prometheus", SignalKind::Metric, name, v, "").with_canonical(canonical)
    };

    // Queued requests while token usage is low: admit more.
    let (a, plan) = analyze_with(
        None,
        &spec,
        vec![metric("sglang:num_queue_reqs", 12.0, c::QUEUE_LEN), metric("sglang:token_usage", 0.4, c::KV_USAGE)],
        &[],
    )
    .await;
    assert!(a.has_finding(rule::QUEUEING));
    assert_eq!(change(&plan, "--schedule-conservativeness").unwrap().to.as_deref(), Some("0.5"));

    // Queue empty and usage low: the client is the limit; a finding, no change.
    let (a, plan) = analyze_with(
        None,
        &spec,
        vec![metric("sglang:num_queue_reqs", 0.0, c::QUEUE_LEN), metric("sglang:token_usage", 0.1, c::KV_USAGE)],
        &[],
    )
    .await;
    let client = a.findings.iter().find(|f| f.rule == rule::CLIENT_BOUND).expect("client-bound finding");
    assert!(client.summary.contains("10%"), "{}", client.summary);
    assert!(plan.changes.iter().all(|c| c.rule != rule::CLIENT_BOUND));

    // Frequent retractions in the log: admit more cautiously.
    let logs: Vec<LogLine> = (0..4)
        .map(|i| LogLine {
            time_ns: i,
            text: "KV cache pool is full. Retract requests. #retracted_reqs: 1, #new_token_ratio: 0.7 -> 0.9".into(),
        })
        .collect();
    let (a, plan) = analyze_with(None, &spec, vec![], &logs).await;
    assert!(a.has_finding(rule::RETRACT_FREQUENT), "{:?}", a.findings);
    assert_eq!(change(&plan, "--schedule-conservativeness").unwrap().to.as_deref(), Some("1.3"));

    // OOM in prefill: smaller chunks; in decode: fewer running requests.
    let oom = |phase: &str| {
        vec![LogLine {
            time_ns: 0,
            text: format!("RuntimeError: {phase} out of memory. Try to lower your batch size."),
        }]
    };
    let (_, plan) = analyze_with(None, &spec, vec![], &oom("Prefill")).await;
    assert_eq!(change(&plan, "--chunked-prefill-size").unwrap().to.as_deref(), Some("4096"));
    let (_, plan) = analyze_with(None, &spec, vec![], &oom("Decode")).await;
    assert_eq!(change(&plan, "--max-running-requests").unwrap().to.as_deref(), Some("128"));

    // 10-20 GB free after startup with a busy pool: raise the static fraction; too little: lower it.
    let gb = |v: f64| {
        Signal::number("logs", SignalKind::LogLine, "sglang.log.available_gpu_mem_gb", v, "GB")
            .with_canonical(c::AVAILABLE_GPU_MEM_GB)
    };
    let (_, plan) = analyze_with(
        None,
        &spec.clone().with_flag("--mem-fraction-static", Some("0.85")),
        vec![gb(14.0), metric("u", 0.8, c::KV_USAGE)],
        &[],
    )
    .await;
    assert_eq!(change(&plan, "--mem-fraction-static").unwrap().to.as_deref(), Some("0.88"));
    let (_, plan) =
        analyze_with(None, &spec.clone().with_flag("--mem-fraction-static", Some("0.90")), vec![gb(0.8)], &[]).await;
    assert_eq!(change(&plan, "--mem-fraction-static").unwrap().to.as_deref(), Some("0.87"));
}

#[tokio::test]
async fn vllm_preemptions_raise_memory_then_lower_sequences_and_llamacpp_deferrals_add_slots() {
    let preempt = Signal::number("prometheus", SignalKind::Metric, "vllm:num_preemptions_total", 9.0, "")
        .with_canonical(c::PREEMPTIONS);
    let vllm = ServiceSpec::new("q", EngineKind::Vllm, "m");
    let (_, plan) = analyze_with(None, &vllm, vec![preempt.clone()], &[]).await;
    assert_eq!(change(&plan, "--gpu-memory-utilization").unwrap().to.as_deref(), Some("0.93"));
    assert!(change(&plan, "--max-num-seqs").is_none(), "one remedy at a time");
    let at_cap = vllm.clone().with_flag("--gpu-memory-utilization", Some("0.95"));
    let (_, plan) = analyze_with(None, &at_cap, vec![preempt], &[]).await;
    assert_eq!(change(&plan, "--max-num-seqs").unwrap().to.as_deref(), Some("128"));

    let llama = ServiceSpec::new("q", EngineKind::LlamaCpp, "m.gguf").with_flag("--parallel", Some("2"));
    let deferred = Signal::number("prometheus", SignalKind::Metric, "llamacpp:requests_deferred", 3.0, "")
        .with_canonical(c::DEFERRED);
    let (_, plan) = analyze_with(None, &llama, vec![deferred], &[]).await;
    assert_eq!(change(&plan, "--parallel").unwrap().to.as_deref(), Some("4"));
}

/// vLLM's window statistics, shaped as the Prometheus source reports them (a histogram's window
/// mean under `stat=mean`), and the step budget from its startup line, as the log source does.
fn vllm_window(tokens_per_step: f64, queue_s: f64, e2e_s: f64) -> Vec<Signal> {
    let mean = |name: &str, value: f64, unit: &str, canonical: &str| {
        Signal::number("prometheus", SignalKind::Metric, name, value, unit)
            .with_label("stat", "mean")
            .with_count(900.0)
            .with_canonical(canonical)
    };
    vec![
        mean("vllm:iteration_tokens_total", tokens_per_step, "tokens", c::TOKENS_PER_STEP),
        mean("vllm:request_queue_time_seconds", queue_s, "s", c::QUEUE_TIME_S),
        mean("vllm:e2e_request_latency_seconds", e2e_s, "s", c::E2E_S),
        // The waiting gauge's peak: one request waited at some scrape.
        Signal::number("prometheus", SignalKind::Metric, "vllm:num_requests_waiting", 2.0, "")
            .with_label("stat", "max")
            .with_canonical(c::QUEUE_LEN),
        Signal::number("logs", SignalKind::LogLine, "vllm.log.max_num_batched_tokens", 2048.0, "tokens"),
    ]
}

#[tokio::test]
async fn vllm_steps_far_below_their_budget_with_a_negligible_queue_are_client_bound_not_queueing() {
    let vllm = ServiceSpec::new("q", EngineKind::Vllm, "m");
    // 16 streams decoding: ~18 tokens a step of 2048; requests waited 4 ms of 1.9 s.
    let (analysis, plan) = analyze_with(None, &vllm, vllm_window(18.0, 0.004, 1.9), &[]).await;
    let underfilled = analysis.findings.iter().find(|f| f.rule == rule::BATCH_UNDERFILLED).expect("under-filled");
    assert!(
        underfilled.summary.contains("1% full") && underfilled.summary.contains("0% of their time"),
        "{}",
        underfilled.summary
    );
    assert!(underfilled.evidence.iter().any(|s| s.name == "vllm:iteration_tokens_total"), "{:?}", underfilled.evidence);
    assert!(analysis.findings.iter().all(|f| f.rule != rule::QUEUEING), "{:?}", analysis.findings);
    assert!(
        plan.changes.iter().all(|c| c.rule != rule::QUEUEING),
        "a one-step wait is not a queue: {:?}",
        plan.changes
    );

    // The same peak, but requests now spend a quarter of their time waiting: a real queue.
    let (analysis, plan) = analyze_with(None, &vllm, vllm_window(18.0, 0.5, 1.9), &[]).await;
    assert!(analysis.findings.iter().any(|f| f.rule == rule::QUEUEING), "{:?}", analysis.findings);
    assert!(analysis.findings.iter().all(|f| f.rule != rule::BATCH_UNDERFILLED), "{:?}", analysis.findings);
    assert_eq!(change(&plan, "--max-num-seqs").map(|c| c.rule.as_str()), Some(rule::QUEUEING), "{:?}", plan.changes);

    // Full steps are not under-filled, whatever the queue.
    let (analysis, _) = analyze_with(None, &vllm, vllm_window(1800.0, 0.004, 1.9), &[]).await;
    assert!(analysis.findings.iter().all(|f| f.rule != rule::BATCH_UNDERFILLED), "{:?}", analysis.findings);
}

/// `analyzer`'s analysis of one chat plan's report and `signals`, for `spec`.
async fn analyze_by(analyzer: RuleAnalyzer, spec: ServiceSpec, signals: Vec<Signal>) -> Analysis {
    let bench = vec![report(chat_plan(), 0.2, 390.0, 0.9)];
    let mut snap = TelemetrySnapshot::new("test", None);
    snap.signals = signals;
    let telemetry = vec![snap];
    let history = History::default();
    let evidence = Evidence { spec: &spec, bench: &bench, logs: &[], telemetry: &telemetry, history: &history };
    analyzer.analyze(&evidence).await.unwrap()
}

#[tokio::test]
async fn without_the_engines_budget_line_the_batch_is_measured_against_the_targets_default() {
    // vLLM on a CPU prints no `max_num_batched_tokens` line at its defaults; its budget there is 2048.
    let spec = ServiceSpec::new("q", EngineKind::Vllm, "m");
    let mut signals = vllm_window(18.0, 0.004, 1.9);
    signals.retain(|s| s.name != "vllm.log.max_num_batched_tokens");
    let fill = |analysis: &Analysis| {
        let finding = analysis.findings.iter().find(|f| f.rule == rule::BATCH_UNDERFILLED)?;
        finding.evidence.iter().find(|s| s.name == "derived.batch_fill").and_then(|s| s.as_f64())
    };
    let cpu = Platform::Cpu { cores: 2, numa_nodes: 1, bf16: false };
    let analyzer = RuleAnalyzer::new().with_space(SearchSpace::for_platform(EngineKind::Vllm, &cpu));
    let on_cpu = analyze_by(analyzer.clone(), spec.clone(), signals.clone()).await;
    assert_eq!(fill(&on_cpu), Some(18.0 / 2048.0), "{:?}", on_cpu.findings);
    // A budget set in the flags is the one measured against.
    let set = spec.clone().with_flag("--max-num-batched-tokens", Some("512"));
    assert_eq!(fill(&analyze_by(analyzer, set, signals.clone()).await), Some(18.0 / 512.0));
    // Without the target's catalog, the engine's GPU default.
    assert_eq!(fill(&analyze_by(RuleAnalyzer::new(), spec, signals).await), Some(18.0 / 8192.0));
}

/// llama.cpp started with more threads than the target's cores: the finding weighs the engine's
/// own threadpool line against the cores the catalog was fitted to, and the plan lowers the thread
/// count, held to the cores by the target's catalog. At one thread per core, or with no cores
/// known, nothing fires.
#[tokio::test]
async fn llamacpp_threads_beyond_the_targets_cores_are_a_finding_and_the_plan_lowers_them_to_the_cores() {
    let spec = ServiceSpec::new("q", EngineKind::LlamaCpp, "m.gguf").with_flag("--threads", Some("4"));
    let threadpool = |threads: f64| {
        Signal::number("logs", SignalKind::LogLine, "llamacpp.log.n_threads", threads, "threads")
            .with_canonical(c::ENGINE_THREADS)
    };
    let on = |cores: u32| {
        let cpu = Platform::Cpu { cores, numa_nodes: 1, bf16: false };
        RuleAnalyzer::new().with_space(SearchSpace::for_platform(EngineKind::LlamaCpp, &cpu))
    };
    let fired =
        |analysis: &Analysis| analysis.findings.iter().find(|f| f.rule == rule::CPU_THREADS_OVERSUBSCRIBED).cloned();

    let analysis = analyze_by(on(2), spec.clone(), vec![threadpool(4.0)]).await;
    let finding = fired(&analysis).unwrap_or_else(|| panic!("{:?}", analysis.findings));
    let ratio = finding.evidence.iter().find(|s| s.name == "derived.threads_per_core").expect("cited");
    assert_eq!(ratio.as_f64(), Some(2.0));
    assert!(ratio.detail.as_deref().is_some_and(|d| d.contains("4 compute threads on 2 cores")), "{ratio:?}");
    assert!(finding.evidence.iter().any(|s| s.name == "llamacpp.log.n_threads"), "{:?}", finding.evidence);
    let plan_on = |space: SearchSpace, current: ServiceSpec, analysis: Analysis| async move {
        RulePlanner::new()
            .plan(PlanInput {
                history: &History::default(),
                analysis: &analysis,
                space: &space,
                current: &current,
                objective: &Objective::minimize("e2e.mean"),
            })
            .await
            .unwrap()
    };
    let plan = plan_on(SearchSpace::for_engine(EngineKind::LlamaCpp), spec.clone(), analysis).await;
    let threads = change(&plan, "--threads").unwrap_or_else(|| panic!("{:?}", plan.changes));
    assert_eq!((threads.to.as_deref(), threads.rule.as_str()), (Some("2"), rule::CPU_THREADS_OVERSUBSCRIBED));
    // The engine's own choice (no flag) on a CPU set of one core of a two-core host: 2 threads on
    // 1 core, and the target's catalog holds the plan to that core.
    let one_core =
        SearchSpace::for_platform(EngineKind::LlamaCpp, &Platform::Cpu { cores: 1, numa_nodes: 1, bf16: false });
    let auto = ServiceSpec::new("q", EngineKind::LlamaCpp, "m.gguf");
    let analysis =
        analyze_by(RuleAnalyzer::new().with_space(one_core.clone()), auto.clone(), vec![threadpool(2.0)]).await;
    assert!(fired(&analysis).is_some(), "{:?}", analysis.findings);
    let plan = plan_on(one_core, auto, analysis).await;
    assert_eq!(change(&plan, "--threads").and_then(|c| c.to.as_deref()), Some("1"), "{:?}", plan.changes);

    // Without the engine's line, the flag tells; the engine's line wins over a flag it overrode.
    assert!(fired(&analyze_by(on(2), spec.clone(), vec![]).await).is_some());
    assert!(fired(&analyze_by(on(2), spec.clone(), vec![threadpool(2.0)]).await).is_none());
    // As many threads as cores, or cores unknown (no target catalog): nothing to say.
    assert!(fired(&analyze_by(on(4), spec.clone(), vec![threadpool(4.0)]).await).is_none());
    assert!(fired(&analyze_by(RuleAnalyzer::new(), spec, vec![threadpool(4.0)]).await).is_none());
}

#[tokio::test]
async fn vllm_cache_config_info_and_startup_lines_reveal_ignored_flags_which_are_not_proposed_again() {
    let spec = ServiceSpec::new("q", EngineKind::Vllm, "m")
        .with_flag("--gpu-memory-utilization", Some("0.93"))
        .with_flag("--max-num-seqs", Some("64"));
    let info = Signal::number("prometheus", SignalKind::Metric, "vllm:cache_config_info", 1.0, "")
        .with_label("gpu_memory_utilization", "0.9")
        .with_label("block_size", "16");
    let preempt = Signal::number("prometheus", SignalKind::Metric, "vllm:num_preemptions_total", 9.0, "")
        .with_canonical(c::PREEMPTIONS);
    let logs = [LogLine { time_ns: 0, text: "INFO non-default args: {'model': 'm', 'max_num_seqs': 256}".into() }];
    let (analysis, plan) = analyze_with(None, &spec, vec![info, preempt], &logs).await;
    let ignored: Vec<&str> = analysis.findings.iter().filter_map(autodebug_core::rules::not_applied_flag).collect();
    assert_eq!(ignored, ["--gpu-memory-utilization", "--max-num-seqs"], "{:?}", analysis.findings);
    assert!(analysis.findings.iter().any(|f| f.evidence.iter().any(|s| s.name == "vllm:cache_config_info")));
    // The memory fraction was ignored, so the planner does not raise it again; the next remedy
    // (fewer sequences) was ignored too, so it goes to the batched-token budget.
    assert!(change(&plan, "--gpu-memory-utilization").is_none(), "{:?}", plan.changes);
    assert!(change(&plan, "--max-num-seqs").is_none(), "{:?}", plan.changes);
    assert_eq!(change(&plan, "--max-num-batched-tokens").unwrap().to.as_deref(), Some("4096"));
    assert!(plan.notes.iter().any(|n| n.contains("--gpu-memory-utilization")), "{:?}", plan.notes);
}

#[tokio::test]
async fn a_masked_api_key_the_engine_reports_is_unknown_not_ignored_while_a_real_mismatch_still_is() {
    let spec =
        sglang_defaults().with_flag("--api-key", Some("canary-key-4e1d")).with_flag("--schedule-policy", Some("lpm"));
    // As SGLang (and the simulator) print it: the key masked, the policy as it runs.
    let logs = [LogLine {
        time_ns: 0,
        text: "server_args=ServerArgs(model_path='m', api_key='***', schedule_policy='fcfs')".into(),
    }];
    let masked = Signal::text("graphsignal", SignalKind::SpanAttribute, "sglang.startup.api_key", "***");
    // The startup line alone, then with Graphsignal's startup attribute read first.
    for signals in [vec![], vec![masked]] {
        let (analysis, _) = analyze_with(None, &spec, signals, &logs).await;
        let ignored: Vec<&str> = analysis.findings.iter().filter_map(autodebug_core::rules::not_applied_flag).collect();
        assert_eq!(ignored, ["--schedule-policy"], "{:?}", analysis.findings);
    }
}

#[tokio::test]
async fn a_flag_ignored_in_an_earlier_iteration_is_not_explored_again() {
    let spec = sglang_defaults();
    let space = SearchSpace::for_engine(EngineKind::Sglang).restrict(&["--schedule-policy", "--enable-mixed-chunk"]);
    let ignored = Finding {
        rule: rule::NOT_APPLIED.into(),
        bottleneck: Bottleneck::Config,
        severity: Severity::Warning,
        summary: "`--schedule-policy` was asked for but the engine runs with schedule_policy=fcfs".into(),
        evidence: vec![],
    };
    // The earlier iteration asked for `random`; `lpm` is untried, so only the ignore keeps it out.
    let earlier = iteration(
        1,
        spec.clone().with_flag("--schedule-policy", Some("random")),
        &[],
        Analysis { findings: vec![ignored], ..Default::default() },
    );
    let history = History { iterations: vec![earlier] };
    let objective = Objective::minimize("e2e.mean");
    let plan = RulePlanner::new()
        .plan(PlanInput {
            history: &history,
            analysis: &Analysis::default(),
            space: &space,
            current: &spec,
            objective: &objective,
        })
        .await
        .unwrap();
    assert_eq!(plan.changes.len(), 1);
    assert_eq!(plan.changes[0].knob, "--enable-mixed-chunk", "{:?}", plan.changes);
}

#[test]
fn the_champion_of_a_finished_session_is_the_known_good_start_on_the_same_model_and_gpu() {
    use autodebug_core::store::Store;
    let store = Store::open_in_memory().unwrap();
    let objective = Objective::minimize("e2e.mean");
    let base = sglang_defaults().with_gpu("H100:1");
    let session = store.create_session("s1", "local", "sglang", &objective, &serde_json::json!({}), 1).unwrap();
    let tuned = base.clone().with_flag("--schedule-policy", Some("lpm"));
    for (n, spec, e2e) in [(1, &base, 300.0), (2, &tuned, 200.0)] {
        store.begin_iteration(session.id, n, spec, None, n as i128).unwrap();
        store
            .finish_iteration(session.id, &iteration(n, spec.clone(), &[("e2e.mean", e2e)], Analysis::default()))
            .unwrap();
    }
    assert_eq!(store.known_good("Qwen/Qwen1.5-0.5B-Chat", "H100").unwrap(), None, "the session is not finished yet");
    store.finish_session(session.id, 10, "budget").unwrap();
    assert_eq!(store.known_good("Qwen/Qwen1.5-0.5B-Chat", "h100:2").unwrap(), Some(tuned));
    assert_eq!(store.known_good("Qwen/Qwen1.5-0.5B-Chat", "A100").unwrap(), None);
    assert_eq!(store.known_good("other/model", "H100").unwrap(), None);
}
