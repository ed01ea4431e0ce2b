//! Every shipped rule stays quiet where its remedy would hurt (issue 14, item 5).
//!
//! Each test runs the rule analyzer and planner twice on hand-built evidence (signals under the
//! engines' real metric names and canonical tags, log lines as the engines print them): once
//! where the rule's remedy would cost something and the rule must not fire, and once with the
//! one piece of evidence that makes the remedy sound, where it must, so the quiet case cannot
//! pass because the rule is broken. The last test fails when a rule is added to
//! `rules/builtin.yaml` without a case here.

use autodebug_core::canonical as c;
use autodebug_core::rules::{KnowledgeBase, RuleAnalyzer, RulePlanner, rule};
use autodebug_core::*;

const NGRAM_3: &str = r#"{"method":"ngram","num_speculative_tokens":3,"prompt_lookup_max":4}"#;
const NGRAM_5: &str = r#"{"method":"ngram","num_speculative_tokens":5,"prompt_lookup_max":4}"#;

/// The evidence of one iteration.
#[derive(Clone)]
struct Case {
    spec: ServiceSpec,
    signals: Vec<Signal>,
    logs: Vec<String>,
    /// `None`: the engine did not start, so nothing was benchmarked.
    load: Option<Load>,
    workload: Workload,
    tpot_ms: f64,
    e2e_ms: f64,
    objective: Objective,
    measured: Vec<(&'static str, f64)>,
    /// The client's measured share of output chunks an n-gram lookup would have drafted.
    predictability: Option<f64>,
    /// The target the analyzer's catalog is fitted to; `None`: the engine's catalog alone.
    platform: Option<Platform>,
}

impl Case {
    fn on(spec: ServiceSpec) -> Self {
        Case {
            spec,
            signals: Vec::new(),
            logs: Vec::new(),
            load: Some(Load::Concurrent { concurrency: 8 }),
            workload: Workload::new(512, 150),
            // 1 ms x 149 tokens of a 390 ms request: decode is 38% of it.
            tpot_ms: 1.0,
            e2e_ms: 390.0,
            objective: Objective::minimize("e2e.mean"),
            measured: Vec::new(),
            predictability: None,
            platform: None,
        }
    }

    fn llamacpp_on_cores(cores: u32) -> Self {
        Case {
            platform: Some(Platform::Cpu { cores, numa_nodes: 1, bf16: false }),
            ..Case::on(ServiceSpec::new("t", EngineKind::LlamaCpp, "SmolLM2-135M-Instruct.Q4_1.gguf"))
        }
    }

    fn sglang() -> Self {
        Case::on(ServiceSpec::new("t", EngineKind::Sglang, "Qwen/Qwen2.5-7B-Instruct").with_gpu("H100"))
    }

    fn vllm() -> Self {
        Case::on(ServiceSpec::new("t", EngineKind::Vllm, "Qwen/Qwen2.5-7B-Instruct").with_gpu("H100"))
    }

    fn flag(mut self, flag: &str, value: Option<&str>) -> Self {
        self.spec = self.spec.with_flag(flag, value);
        self
    }

    fn metric(mut self, canonical: &str, value: f64) -> Self {
        self.signals.push(
            Signal::number("prometheus", SignalKind::Metric, &format!("engine:{canonical}"), value, "")
                .with_canonical(canonical),
        );
        self
    }

    /// A histogram's mean over the window, as the Prometheus source reports it.
    fn window_mean(mut self, canonical: &str, value: f64) -> Self {
        self.signals.push(
            Signal::number("prometheus", SignalKind::Metric, &format!("engine:{canonical}"), value, "")
                .with_label("stat", "mean")
                .with_canonical(canonical),
        );
        self
    }

    fn counter(mut self, name: &str, value: f64) -> Self {
        self.signals.push(Signal::number("prometheus", SignalKind::Metric, name, value, "tokens"));
        self
    }

    fn attribute(mut self, key: &str, value: &str) -> Self {
        let engine = self.spec.engine.as_str().to_string();
        self.signals.push(Signal::text(
            "graphsignal",
            SignalKind::SpanAttribute,
            &format!("{engine}.startup.{key}"),
            value,
        ));
        self
    }

    fn log(mut self, line: &str) -> Self {
        self.logs.push(line.to_string());
        self
    }

    fn failed_start(mut self) -> Self {
        self.load = None;
        self
    }

    fn load(mut self, load: Load) -> Self {
        self.load = Some(load);
        self
    }

    fn speculation(mut self, accepted: f64, drafted: f64) -> Self {
        self = self.counter("vllm:spec_decode_num_accepted_tokens_total", accepted);
        self.counter("vllm:spec_decode_num_draft_tokens_total", drafted)
    }
}

struct Outcome {
    analysis: Analysis,
    plan: Plan,
}

impl Outcome {
    /// The rule found something or moved a knob.
    fn fired(&self, id: &str) -> bool {
        self.analysis.has_finding(id) || self.plan.changes.iter().any(|c| c.rule == id)
    }

    fn change(&self, knob: &str) -> Option<&Change> {
        self.plan.changes.iter().find(|c| c.knob == knob)
    }
}

async fn run(case: &Case) -> Outcome {
    let history = History::default();
    let bench: Vec<BenchReport> = case
        .load
        .iter()
        .map(|load| BenchReport {
            plan: BenchPlan::new("chat", case.workload.clone(), load.clone(), 16),
            context: Default::default(),
            summary: BenchSummary {
                requests: 16,
                succeeded: 16,
                tpot_ms: Distribution { count: 16, mean: case.tpot_ms, ..Default::default() },
                e2e_ms: Distribution { count: 16, mean: case.e2e_ms, ..Default::default() },
                cached_token_ratio: Some(0.0),
                output_ngram_predictability: case.predictability,
                ..Default::default()
            },
            records: vec![],
            window: TimeWindow::new(0, 1),
            warnings: vec![],
        })
        .collect();
    let logs: Vec<LogLine> = case.logs.iter().map(|t| LogLine { time_ns: 0, text: t.clone() }).collect();
    let mut snap = TelemetrySnapshot::new("test", None);
    snap.signals = case.signals.clone();
    let telemetry = vec![snap];
    let evidence = Evidence { spec: &case.spec, bench: &bench, logs: &logs, telemetry: &telemetry, history: &history };
    let analyzer = match &case.platform {
        Some(platform) => RuleAnalyzer::new().with_space(SearchSpace::for_platform(case.spec.engine, platform)),
        None => RuleAnalyzer::new(),
    };
    let mut analysis = analyzer.analyze(&evidence).await.unwrap();
    analysis.metrics.extend(case.measured.iter().map(|(k, v)| (k.to_string(), *v)));
    let space = SearchSpace::for_engine(case.spec.engine);
    let plan = RulePlanner::new()
        .plan(PlanInput {
            history: &history,
            analysis: &analysis,
            space: &space,
            current: &case.spec,
            objective: &case.objective,
        })
        .await
        .unwrap();
    Outcome { analysis, plan }
}

/// Asserts `id` stays quiet on `quiet` and fires on `fires`; returns both outcomes.
async fn quiet_then_fires(id: &str, quiet: Case, fires: Case) -> (Outcome, Outcome) {
    let (q, f) = (run(&quiet).await, run(&fires).await);
    assert!(!q.fired(id), "{id} fired where its remedy would hurt: {:?} / {:?}", q.analysis.findings, q.plan.changes);
    assert!(f.fired(id), "{id} did not fire on the evidence it exists for: {:?}", f.analysis.findings);
    (q, f)
}

#[tokio::test]
async fn kv_pressure_needs_preemptions_not_just_a_full_pool() {
    // A pool kept 97% full without a single preemption is memory well used: halving the running
    // requests would only cut throughput.
    let full = Case::sglang().metric(c::KV_USAGE, 0.97).metric(c::PREEMPTIONS, 0.0);
    quiet_then_fires(rule::KV_PRESSURE, full.clone(), full.metric(c::PREEMPTIONS, 4.0)).await;
}

#[tokio::test]
async fn a_retraction_or_two_does_not_make_sglang_admit_more_cautiously() {
    let case = Case::sglang().metric(c::KV_USAGE, 0.9);
    quiet_then_fires(
        rule::RETRACT_FREQUENT,
        case.clone().metric(c::PREEMPTIONS, 2.0),
        case.metric(c::PREEMPTIONS, 3.0),
    )
    .await;
}

#[tokio::test]
async fn a_decode_oom_does_not_shrink_prefill_chunks() {
    quiet_then_fires(
        rule::OOM_PREFILL,
        Case::sglang().log("RuntimeError: decode out of memory happened"),
        Case::sglang().log("RuntimeError: prefill out of memory happened"),
    )
    .await;
}

#[tokio::test]
async fn a_prefill_oom_does_not_cut_running_requests() {
    quiet_then_fires(
        rule::OOM_DECODE,
        Case::sglang().log("RuntimeError: prefill out of memory happened"),
        Case::sglang().log("RuntimeError: decode out of memory happened"),
    )
    .await;
}

#[tokio::test]
async fn free_memory_with_a_mostly_empty_kv_pool_is_not_given_to_the_pool() {
    // A larger static fraction only risks activation OOM when the pool is not what binds.
    let case = Case::sglang().metric(c::AVAILABLE_GPU_MEM_GB, 14.0);
    quiet_then_fires(rule::MEM_HEADROOM_HIGH, case.clone().metric(c::KV_USAGE, 0.3), case.metric(c::KV_USAGE, 0.8))
        .await;
}

#[tokio::test]
async fn a_few_free_gigabytes_do_not_shrink_the_static_pool() {
    quiet_then_fires(
        rule::MEM_HEADROOM_LOW,
        Case::sglang().metric(c::AVAILABLE_GPU_MEM_GB, 4.0),
        Case::sglang().metric(c::AVAILABLE_GPU_MEM_GB, 1.0),
    )
    .await;
}

#[tokio::test]
async fn scheduler_overhead_with_prompt_heavy_requests_does_not_batch_more_decode_steps() {
    // 1 ms x 149 tokens of a 2 s request: decode is 7% of it, and more decode steps per round trip
    // would hold back every new prefill for little saved overhead.
    let case = Case::sglang().metric(c::SCHEDULER_OVERHEAD_SHARE, 0.6);
    let prompt_heavy = Case { e2e_ms: 2000.0, ..case.clone() };
    let (_, fires) = quiet_then_fires(rule::SCHEDULER_OVERHEAD, prompt_heavy, case).await;
    assert!(fires.change("--num-continuous-decode-steps").is_some());
}

#[tokio::test]
async fn mixed_chunking_is_not_proposed_for_one_request_at_a_time() {
    let case = Case::sglang().attribute("enable_mixed_chunk", "False");
    quiet_then_fires(rule::MIXED_CHUNK_OFF, case.clone().load(Load::Sequential), case).await;
}

#[tokio::test]
async fn prefix_scheduling_is_not_proposed_without_prefix_reuse() {
    // LPM sorts the queue by prefix match, which only costs where no prefix is shared.
    let case = Case::sglang().attribute("schedule_policy", "fcfs");
    let mut shared = case.clone();
    shared.workload.shared_prefix_tokens = 400;
    quiet_then_fires(rule::PREFIX_CACHE_MISSES, case, shared).await;
}

#[tokio::test]
async fn a_queue_with_a_full_kv_pool_does_not_admit_more_requests() {
    // Admitting more into a 95% full pool turns the queue into retractions.
    let case = Case::sglang().metric(c::QUEUE_LEN, 5.0);
    quiet_then_fires(rule::QUEUEING, case.clone().metric(c::KV_USAGE, 0.95), case.metric(c::KV_USAGE, 0.5)).await;
}

#[tokio::test]
async fn a_server_queue_is_never_blamed_on_the_client() {
    let case = Case::sglang().metric(c::KV_USAGE, 0.2);
    quiet_then_fires(rule::CLIENT_BOUND, case.clone().metric(c::QUEUE_LEN, 3.0), case.metric(c::QUEUE_LEN, 0.0)).await;
}

#[tokio::test]
async fn steps_below_their_budget_are_not_blamed_on_the_load_while_requests_queue() {
    // Half a request's time queued: the engine's limits, not the load, hold the batch back.
    let case = Case::vllm()
        .window_mean(c::TOKENS_PER_STEP, 40.0)
        .counter("vllm.log.max_num_batched_tokens", 2048.0)
        .window_mean(c::E2E_S, 2.0)
        // The waiting gauge's peak: some request waited at some scrape in both cases.
        .metric(c::QUEUE_LEN, 3.0);
    let (queued, free) = quiet_then_fires(
        rule::BATCH_UNDERFILLED,
        case.clone().window_mean(c::QUEUE_TIME_S, 1.0),
        case.window_mean(c::QUEUE_TIME_S, 0.01),
    )
    .await;
    assert!(queued.fired(rule::QUEUEING), "{:?}", queued.analysis.findings);
    // Nothing is raised for a load the engine already has room for.
    assert!(free.plan.changes.iter().all(|c| c.rule != rule::QUEUEING), "{:?}", free.plan.changes);
}

#[tokio::test]
async fn decode_bound_turns_no_speculation_on_blind_and_lengthens_drafts_only_when_most_are_accepted() {
    // 1 ms x 149 tokens of a 200 ms request: decode-bound.
    let bound = Case { e2e_ms: 200.0, ..Case::vllm() };
    let blind = run(&bound).await;
    assert!(blind.analysis.has_finding(rule::DECODE_BOUND));
    assert!(
        blind.change("--speculative-config").is_none(),
        "no acceptance rate measured, yet speculation was proposed: {:?}",
        blind.plan.changes
    );
    let speculating = bound.flag("--speculative-config", Some(NGRAM_3));
    // Half the drafts accepted: longer drafts would mostly be verified for nothing.
    let half = run(&speculating.clone().speculation(500.0, 1000.0)).await;
    assert!(half.change("--speculative-config").is_none(), "{:?}", half.plan.changes);
    let most = run(&speculating.speculation(850.0, 1000.0)).await;
    let change = most.change("--speculative-config").expect("85% accepted: longer drafts");
    assert_eq!(change.rule, rule::DECODE_BOUND);
    assert_eq!(change.to.as_deref(), Some(NGRAM_5));
    assert!(change.evidence.iter().any(|s| s.canonical.as_deref() == Some("spec_acceptance_rate")));
}

#[tokio::test]
async fn decode_bound_turns_ngram_speculation_on_only_when_the_output_was_measured_predictable() {
    let bound = Case { e2e_ms: 200.0, ..Case::vllm() };
    // A fifth of the output repeated its own n-grams: drafts would mostly be rejected.
    let varied = run(&Case { predictability: Some(0.2), ..bound.clone() }).await;
    assert!(varied.analysis.has_finding(rule::DECODE_BOUND));
    assert!(varied.change("--speculative-config").is_none(), "{:?}", varied.plan.changes);
    let repeating = run(&Case { predictability: Some(0.8), ..bound }).await;
    let change = repeating.change("--speculative-config").expect("80% predictable: n-gram drafts");
    assert_eq!(change.to.as_deref(), Some(NGRAM_3));
    assert!(change.evidence.iter().any(|s| s.canonical.as_deref() == Some("output_ngram_predictability")));
    // SGLang spells it with its own flags.
    let sglang = run(&Case { e2e_ms: 200.0, predictability: Some(0.8), ..Case::sglang() }).await;
    assert_eq!(sglang.change("--speculative-algorithm").and_then(|c| c.to.clone()).as_deref(), Some("NGRAM"));
}

#[tokio::test]
async fn ngram_speculation_needs_half_the_output_predictable_on_either_engine() {
    // The threshold of `decode.bound` (0.5, see its comment in rules/builtin.yaml), pinned from
    // both sides: just under it a fresh-text workload gets no drafts, just over it one does.
    for (case, knob) in [(Case::vllm(), "--speculative-config"), (Case::sglang(), "--speculative-algorithm")] {
        let bound = Case { e2e_ms: 200.0, ..case };
        let under = run(&Case { predictability: Some(0.45), ..bound.clone() }).await;
        assert!(under.analysis.has_finding(rule::DECODE_BOUND), "decode-bound either way");
        assert!(under.change(knob).is_none(), "45% predictable, yet {knob} proposed: {:?}", under.plan.changes);
        let over = run(&Case { predictability: Some(0.55), ..bound }).await;
        let change = over.change(knob).unwrap_or_else(|| panic!("55% predictable: {knob} expected"));
        assert_eq!(change.rule, rule::DECODE_BOUND);
    }
}

#[tokio::test]
async fn speculation_that_pays_stays_on_and_a_low_acceptance_rate_turns_it_off() {
    let speculating = Case::vllm().flag("--speculative-config", Some(NGRAM_3));
    // Too few drafts to measure a rate, and a healthy rate: speculation stays.
    let unmeasured = run(&speculating.clone().speculation(5.0, 60.0)).await;
    assert!(!unmeasured.fired(rule::SPEC_LOW_ACCEPTANCE));
    let (_, off) = quiet_then_fires(
        rule::SPEC_LOW_ACCEPTANCE,
        speculating.clone().speculation(600.0, 1000.0),
        speculating.speculation(120.0, 1000.0),
    )
    .await;
    let change = off.change("--speculative-config").expect("speculation turned off");
    assert_eq!(change.to, None);
    assert!(!off.plan.next.flags.contains("--speculative-config"));
    SearchSpace::for_engine(EngineKind::Vllm).validate(&off.plan.next).unwrap();

    // SGLang's flags go too, dependents first so the result stays valid.
    let sglang = Case::sglang()
        .flag("--speculative-algorithm", Some("NGRAM"))
        .flag("--speculative-num-draft-tokens", Some("4"))
        .counter("llamacpp:spec_decode_num_accepted_tokens_total", 50.0)
        .counter("llamacpp:spec_decode_num_draft_tokens_total", 1000.0);
    let off = run(&sglang).await;
    for knob in ["--speculative-algorithm", "--speculative-num-draft-tokens"] {
        assert!(!off.plan.next.flags.contains(knob), "{knob} still set: {:?}", off.plan.next.flags);
    }
    SearchSpace::for_engine(EngineKind::Sglang).validate(&off.plan.next).unwrap();
}

#[tokio::test]
async fn float32_is_not_proposed_where_bf16_kernels_run_natively_or_it_is_already_set() {
    let cpu = Case::vllm().flag("--dtype", Some("bfloat16"));
    quiet_then_fires(
        rule::CPU_BF16_EMULATED,
        cpu.clone().metric(c::CPU_KERNEL_FALLBACKS, 0.0),
        cpu.clone().metric(c::CPU_KERNEL_FALLBACKS, 2.0),
    )
    .await;
    let already = run(&cpu.flag("--dtype", Some("float32")).metric(c::CPU_KERNEL_FALLBACKS, 2.0)).await;
    assert!(!already.fired(rule::CPU_BF16_EMULATED));
}

#[tokio::test]
async fn llamacpp_threads_are_not_reset_at_one_per_core_or_at_the_engines_own_choice() {
    let two_cores = Case::llamacpp_on_cores(2);
    quiet_then_fires(
        rule::CPU_THREADS_OVERSUBSCRIBED,
        two_cores.clone().flag("--threads", Some("2")).metric(c::ENGINE_THREADS, 2.0),
        two_cores.clone().flag("--threads", Some("3")).metric(c::ENGINE_THREADS, 3.0),
    )
    .await;
    // `-1`, the default, lets the engine pick: what it reported is what counts.
    let auto = run(&two_cores.flag("--threads", Some("-1")).metric(c::ENGINE_THREADS, 2.0)).await;
    assert!(!auto.fired(rule::CPU_THREADS_OVERSUBSCRIBED), "{:?}", auto.analysis.findings);
    // Four threads where the catalog knows of no cores (a GPU target's): nothing to weigh them against.
    let unknown =
        run(&Case::on(ServiceSpec::new("t", EngineKind::LlamaCpp, "m.gguf")).metric(c::ENGINE_THREADS, 4.0)).await;
    assert!(!unknown.fired(rule::CPU_THREADS_OVERSUBSCRIBED));
}

#[tokio::test]
async fn an_oom_after_startup_or_in_graph_capture_does_not_double_the_gpus() {
    let tp1 = Case::sglang().flag("--tp-size", Some("1"));
    // Running out of memory in decode is the running batch's size, not the weights' fit.
    quiet_then_fires(
        rule::STARTUP_OOM,
        tp1.clone().log("RuntimeError: decode out of memory happened"),
        tp1.clone().failed_start().log("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"),
    )
    .await;
    let capture =
        run(&tp1.failed_start().log("Capture cuda graph failed: CUDA out of memory. Tried to allocate 1.00 GiB")).await;
    assert!(!capture.fired(rule::STARTUP_OOM), "{:?}", capture.plan.changes);
    assert!(capture.change("--tp-size").is_none());
}

#[tokio::test]
async fn an_oom_loading_weights_does_not_shrink_cuda_graphs() {
    let start = Case::sglang().failed_start();
    quiet_then_fires(
        rule::STARTUP_CUDA_GRAPH_OOM,
        start.clone().log("torch.OutOfMemoryError: CUDA out of memory while loading weights"),
        start.log("Capture cuda graph failed: CUDA out of memory. Tried to allocate 1.00 GiB"),
    )
    .await;
}

#[tokio::test]
async fn a_latency_bound_broken_by_a_server_queue_does_not_add_gpus() {
    let broken = Case {
        objective: Objective::minimize("e2e.mean").with_constraint("ttft.p99 <= 200ms".parse().unwrap()),
        measured: vec![("ttft.p99", 900.0), ("e2e.mean", 1500.0)],
        ..Case::sglang().flag("--tp-size", Some("1"))
    };
    let (queued, _) = quiet_then_fires(
        rule::SLO_LATENCY_PARALLELISM,
        broken.clone().metric(c::QUEUE_LEN, 6.0),
        broken.metric(c::QUEUE_LEN, 0.0),
    )
    .await;
    assert!(queued.change("--tp-size").is_none(), "{:?}", queued.plan.changes);
}

#[test]
fn every_shipped_rule_has_a_case_here() {
    let tested = [
        rule::KV_PRESSURE,
        rule::RETRACT_FREQUENT,
        rule::OOM_PREFILL,
        rule::OOM_DECODE,
        rule::MEM_HEADROOM_HIGH,
        rule::MEM_HEADROOM_LOW,
        rule::SCHEDULER_OVERHEAD,
        rule::MIXED_CHUNK_OFF,
        rule::PREFIX_CACHE_MISSES,
        rule::QUEUEING,
        rule::CLIENT_BOUND,
        rule::BATCH_UNDERFILLED,
        rule::DECODE_BOUND,
        rule::SPEC_LOW_ACCEPTANCE,
        rule::CPU_BF16_EMULATED,
        rule::CPU_THREADS_OVERSUBSCRIBED,
        rule::STARTUP_OOM,
        rule::STARTUP_CUDA_GRAPH_OOM,
        rule::SLO_LATENCY_PARALLELISM,
    ];
    for r in &KnowledgeBase::builtin().rules {
        assert!(tested.contains(&r.id.as_str()), "rule `{}` has no does-not-fire case in rules_negative.rs", r.id);
    }
}
