//! The rule analyzer and planner: expert rules, kept as data, that tie a symptom in the signals to
//! a knob change.
//!
//! The rules live in a [`KnowledgeBase`] (YAML; the shipped one is `autodebug-core/rules/builtin.yaml`,
//! users add their own with [`KnowledgeBase::load`] or `RulePlanner::with_rules_file`).
//! [`RuleAnalyzer`] raises a [`Finding`](crate::Finding) for every rule whose conditions hold and
//! cites the signals each rests on; [`RulePlanner`] turns findings into changes inside the engine's
//! knob catalog with the rule's actions.
//!
//! ```
//! use autodebug_core::rules::{KnowledgeBase, RuleAnalyzer, RulePlanner, rule};
//!
//! let kb = KnowledgeBase::builtin();
//! assert!(kb.rule(rule::SCHEDULER_OVERHEAD).is_some());
//! let _analyzer = RuleAnalyzer::from_kb(kb.clone());
//! let _planner = RulePlanner::from_kb(kb);
//! ```

mod analyzer;
mod eval;
pub mod kb;
mod planner;

pub use analyzer::{RuleAnalyzer, not_applied_flag};
pub(crate) use eval::same_setting;
pub use kb::{Action, ApplyMode, Condition, KnowledgeBase, Op, Rule, Step};
pub use planner::{RulePlanner, ignored_flags};

/// Rule ids, shared by the analyzer (which raises them) and the planner (which acts on them).
pub mod rule {
    /// Kept in code: the benchmark client saw failed requests.
    pub const BENCH_ERRORS: &str = "errors.bench";
    /// Kept in code: the engine logged error lines.
    pub const ENGINE_ERRORS: &str = "errors.engine";
    pub const SCHEDULER_OVERHEAD: &str = "scheduler.overhead";
    pub const MIXED_CHUNK_OFF: &str = "sglang.mixed_chunk_off";
    pub const PREFIX_CACHE_MISSES: &str = "prefix_cache.misses";
    pub const DECODE_BOUND: &str = "decode.bound";
    pub const QUEUEING: &str = "queueing.server";
    pub const CLIENT_BOUND: &str = "queueing.client_bound";
    /// vLLM's steps ran far below their token budget with nothing queued: the load is the limit.
    pub const BATCH_UNDERFILLED: &str = "batch.underfilled";
    pub const KV_PRESSURE: &str = "kv.pressure";
    pub const RETRACT_FREQUENT: &str = "sglang.retract.frequent";
    pub const OOM_PREFILL: &str = "sglang.oom.prefill";
    pub const OOM_DECODE: &str = "sglang.oom.decode";
    /// vLLM on a CPU whose bf16 matmuls fall back to plain torch: run float32.
    pub const CPU_BF16_EMULATED: &str = "cpu.bf16_emulated";
    /// llama.cpp running more compute threads than the target has cores: back to its default.
    pub const CPU_THREADS_OVERSUBSCRIBED: &str = "cpu.threads_oversubscribed";
    /// Speculation runs but few drafts are accepted: turn it off.
    pub const SPEC_LOW_ACCEPTANCE: &str = "spec.low_acceptance";
    pub const MEM_HEADROOM_HIGH: &str = "sglang.mem.headroom_high";
    pub const MEM_HEADROOM_LOW: &str = "sglang.mem.headroom_low";
    /// The engine ran out of GPU memory while starting (weights, KV pool).
    pub const STARTUP_OOM: &str = "startup.out_of_memory";
    pub const STARTUP_CUDA_GRAPH_OOM: &str = "startup.cuda_graph_oom";
    /// Read by the planner: a latency bound of the objective is broken.
    pub const SLO_LATENCY_PARALLELISM: &str = "slo.latency.parallelism";
    /// The planner's own: no rule fired, so one untried catalog value is measured.
    pub const EXPLORE: &str = "explore.one_knob";
    /// Kept in code: an asked-for flag the engine reports otherwise.
    pub const NOT_APPLIED: &str = "config.not_applied";
}

/// Canonical names of the signals the analyzer derives from the benchmark, for rule conditions.
pub mod derived {
    /// Share of the primary plan's mean request time spent decoding (tpot x output tokens / e2e).
    pub const DECODE_SHARE: &str = "decode_share";
    /// 1 when a bench plan reuses prompt prefixes (repeated prompts or a shared prefix).
    pub const PREFIX_REUSE: &str = "prefix_reuse";
    /// Cached-token ratio of the prefix-reusing plans (client side), else the server's hit rate.
    pub const REUSE_CACHED_RATIO: &str = "reuse_cached_ratio";
    /// Requests the benchmark kept in flight (closed loop: its concurrency; open loop: rate x
    /// mean e2e).
    pub const CLIENT_IN_FLIGHT: &str = "client_in_flight";
    /// Accepted over proposed speculative draft tokens, from the engine's counters
    /// (`vllm:spec_decode_num_{accepted,draft}_tokens_total`, llama.cpp's same-named ones).
    pub const SPEC_ACCEPTANCE_RATE: &str = "spec_acceptance_rate";
    /// Share of the primary plan's output chunks that an n-gram lookup over the answer so far
    /// would have predicted (the client's own measurement, with speculation off): the evidence that
    /// n-gram speculative decoding has drafts worth proposing.
    pub const OUTPUT_NGRAM_PREDICTABILITY: &str = "output_ngram_predictability";
    /// Mean tokens per engine step (vLLM's `iteration_tokens_total`) over the step's token budget:
    /// the one the engine reported at startup, else the flag's value or the target's default, 0..1.
    pub const BATCH_FILL: &str = "batch_fill";
    /// Mean time requests waited in the engine's queue over their mean time in the engine, both
    /// from the engine's histograms for the window, 0..1.
    pub const QUEUE_SHARE: &str = "queue_share";
    /// The engine's compute threads (its own report, else the flag) over the target CPU's cores,
    /// where the catalog knows them.
    pub const THREADS_PER_CORE: &str = "threads_per_core";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_knowledge_base_parses_and_names_the_loop_rules() {
        let kb = KnowledgeBase::from_yaml("builtin.yaml", kb::BUILTIN_YAML).expect("shipped rules must load");
        for id in [
            rule::SCHEDULER_OVERHEAD,
            rule::MIXED_CHUNK_OFF,
            rule::PREFIX_CACHE_MISSES,
            rule::DECODE_BOUND,
            rule::QUEUEING,
            rule::CLIENT_BOUND,
            rule::BATCH_UNDERFILLED,
            rule::KV_PRESSURE,
            rule::RETRACT_FREQUENT,
            rule::OOM_PREFILL,
            rule::OOM_DECODE,
            rule::MEM_HEADROOM_HIGH,
            rule::MEM_HEADROOM_LOW,
            rule::STARTUP_OOM,
            rule::STARTUP_CUDA_GRAPH_OOM,
            rule::SLO_LATENCY_PARALLELISM,
        ] {
            assert!(kb.rule(id).is_some(), "shipped rules lack {id}");
        }
    }

    use crate::{
        Analysis, Analyzer, EngineKind, Evidence, History, Iteration, IterationStatus, LogLine, Objective, Plan,
        PlanInput, Planner, SearchSpace, ServiceSpec,
    };

    fn spec_with_tp(tp: &str) -> ServiceSpec {
        let mut spec = ServiceSpec::new("t", EngineKind::Sglang, "llama-3.1-70b");
        let space = SearchSpace::for_engine(EngineKind::Sglang);
        space.apply(&mut spec.flags, "--tp-size", Some(tp)).expect("tp 4 is in the catalog");
        spec
    }

    fn ran(spec: &ServiceSpec, ttft_p99: f64) -> History {
        History {
            iterations: vec![Iteration {
                number: 1,
                spec: spec.clone(),
                artifact: None,
                status: IterationStatus::Ok,
                metrics: [("ttft.p99".to_string(), ttft_p99), ("e2e.mean".to_string(), 9000.0)].into(),
                bench: Default::default(),
                analysis: Analysis::default(),
                plan: None,
                error: None,
                started_ns: 0,
                finished_ns: 0,
                timings: Default::default(),
                round: None,
            }],
        }
    }

    async fn plan(history: &History, analysis: &Analysis, spec: &ServiceSpec, objective: &Objective) -> Plan {
        let space = SearchSpace::for_engine(EngineKind::Sglang);
        RulePlanner::new()
            .plan(PlanInput { history, analysis, space: &space, current: spec, objective })
            .await
            .expect("the rule planner plans")
    }

    #[tokio::test]
    async fn a_broken_latency_bound_raises_tensor_parallelism_only_when_the_objective_sets_one() {
        let spec = spec_with_tp("4");
        let bound = Objective::minimize("e2e.mean").with_constraint("ttft.p99 <= 2s".parse().expect("constraint"));
        let over = plan(&ran(&spec, 2270.0), &Analysis::default(), &spec, &bound).await;
        let change = over.changes.iter().find(|c| c.knob == "--tp-size").expect("TP is raised");
        assert_eq!(change.to.as_deref(), Some("8"));
        assert_eq!(change.rule, rule::SLO_LATENCY_PARALLELISM);
        assert!(change.evidence.iter().any(|s| s.name == "slo.ttft.p99"), "{:?}", change.evidence);

        let within = plan(&ran(&spec, 1500.0), &Analysis::default(), &spec, &bound).await;
        assert!(within.changes.iter().all(|c| c.knob != "--tp-size"), "{:?}", within.changes);
        let unbounded = Objective::minimize("e2e.mean");
        let free = plan(&ran(&spec, 2270.0), &Analysis::default(), &spec, &unbounded).await;
        assert!(free.changes.iter().all(|c| c.knob != "--tp-size"), "{:?}", free.changes);
    }

    #[tokio::test]
    async fn a_startup_out_of_memory_raises_tensor_parallelism_and_a_graph_capture_oom_lowers_the_fraction() {
        let spec = spec_with_tp("2");
        let history = History::default();
        let analyze = |text: &str| {
            let logs: Vec<LogLine> = text.lines().map(|l| LogLine { time_ns: 0, text: l.to_string() }).collect();
            let spec = spec.clone();
            async move {
                let evidence =
                    Evidence { spec: &spec, bench: &[], logs: &logs, telemetry: &[], history: &History::default() };
                RuleAnalyzer::new().analyze(&evidence).await.expect("analysis")
            }
        };
        let objective = Objective::minimize("e2e.mean");
        let empty_pool =
            analyze("RuntimeError: Not enough memory. Please try to increase --mem-fraction-static.").await;
        assert!(empty_pool.findings.iter().any(|f| f.rule == rule::STARTUP_OOM), "{:?}", empty_pool.findings);
        let next = plan(&history, &empty_pool, &spec, &objective).await;
        let tp = next.changes.iter().find(|c| c.knob == "--tp-size").expect("TP is raised");
        assert_eq!(tp.to.as_deref(), Some("4"));

        let graphs = analyze(
            "Capture cuda graph failed: CUDA out of memory. Tried to allocate 2.00 GiB.\nPossible solutions:\n1. set --mem-fraction-static to a smaller value",
        )
        .await;
        assert!(graphs.findings.iter().all(|f| f.rule != rule::STARTUP_OOM), "{:?}", graphs.findings);
        let next = plan(&history, &graphs, &spec, &objective).await;
        let fraction = next.changes.iter().find(|c| c.knob == "--mem-fraction-static").expect("fraction lowered");
        assert_eq!(fraction.rule, rule::STARTUP_CUDA_GRAPH_OOM);
        assert_eq!(fraction.to.as_deref(), Some("0.83"));
    }
}
