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
    BenchReport { plan, context: Default::default(), summary, records: vec![], window: TimeWindow::new(0, 1), warnings: vec![] }
}

fn published_baseline_telemetry(overhead_share: f64, policy: &str, mixed_chunk: &str) -> TelemetrySnapshot {
    let mut snap = TelemetrySnapshot::new("graphsignal", None);
    snap.signals = vec![
        Signal::number("graphsignal", SignalKind::Profile, "sglang.scheduler.Scheduler.run_batch", 435.0, "ms").with_count(405.0),
        Signal::number("graphsignal", SignalKind::Profile, "sglang.model_executor.model_runner.ModelRunner.forward", 267.0, "ms").with_count(405.0),
        Signal::number("graphsignal", SignalKind::Metric, "graphsignal.derived.scheduler_overhead_share", overhead_share, "ratio")
            .with_canonical(c::SCHEDULER_OVERHEAD_SHARE),
        Signal::text("graphsignal", SignalKind::SpanAttribute, "sglang.startup.enable_mixed_chunk", mixed_chunk),
        Signal::text("graphsignal", SignalKind::SpanAttribute, "sglang.startup.schedule_policy", policy),
        Signal::number("graphsignal", SignalKind::Metric, "sglang.cache_hit_rate", 0.0, "ratio").with_canonical(c::PREFIX_HIT_RATE),
        Signal::number("graphsignal", SignalKind::Metric, "sglang.gen_throughput", 664.0, "tok/s").with_canonical(c::GEN_THROUGHPUT),
    ];
    snap
}

fn chat_plan() -> BenchPlan {
    BenchPlan::new("chat", Workload { repeat_prompt: true, ..Workload::new(31, 150) }, Load::Sequential, 10)
}

async fn analyze_and_plan(spec: &ServiceSpec, telemetry: TelemetrySnapshot, e2e_ms: f64) -> (Analysis, Plan) {
    let history = &History::default();
    let bench = vec![report(chat_plan(), 1.5, e2e_ms, 0.0)];
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
    let (analysis, plan) = analyze_and_plan(&spec, published_baseline_telemetry(0.62, "fcfs", "False"), 390.0).await;

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
    assert!(analysis.cited.iter().any(|s| s.citation() == "Profile `sglang.scheduler.Scheduler.run_batch`: 405 calls / 435 ms (1.074 ms/call)"));
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
    assert_eq!(change(&plan, "--speculative-algorithm").unwrap().to.as_deref(), Some("NGRAM"));
    assert_eq!(change(&plan, "--speculative-num-draft-tokens").unwrap().to.as_deref(), Some("3"));
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

    let plan = planner.plan(PlanInput { history: &history, analysis: &analysis, space: &space, current: &spec, objective: &objective }).await.unwrap();
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
    });
    let plan = planner.plan(PlanInput { history: &history, analysis: &analysis, space: &space, current: &spec, objective: &objective }).await.unwrap();
    assert!(plan.exhausted, "{plan:?}");
    assert!(plan.changes.is_empty());
}

#[tokio::test]
async fn retractions_with_free_memory_raise_the_static_memory_fraction() {
    let spec = sglang_defaults().with_flag("--mem-fraction-static", Some("0.80"));
    let mut snap = TelemetrySnapshot::new("logs", None);
    snap.signals = vec![
        Signal::number("logs", SignalKind::LogLine, "sglang.retract_requests", 7.0, "events").with_canonical(c::PREEMPTIONS),
        Signal::number("logs", SignalKind::LogLine, "sglang.available_gpu_mem", 14.2, "GB").with_canonical(c::AVAILABLE_GPU_MEM_GB),
    ];
    let (analysis, plan) = analyze_and_plan(&spec, snap, 390.0).await;
    assert!(analysis.has_finding(rule::KV_PRESSURE));
    assert_eq!(change(&plan, "--mem-fraction-static").unwrap().to.as_deref(), Some("0.84"));
}
