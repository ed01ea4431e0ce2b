//! vLLM's cross-flag startup rules, held by the catalog: a plan that breaks one is refused before
//! deploy, and no search planner proposes one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use autodebug_core::knobs::Verdict;
use autodebug_core::search::{BayesPlanner, GridPlanner, HybridPlanner, OneKnobPlanner, RandomPlanner, TuneSpace};
use autodebug_core::{
    Analysis, EngineArgs, EngineKind, History, Iteration, IterationStatus, LaunchFlags, Objective, PlanInput, Planner,
    Platform, SearchSpace, ServiceSpec,
};

const VLLM_HELP: &str = include_str!("fixtures/vllm_cpu/vllm_0.32.0_serve_help_all.txt");

fn cpu() -> Platform {
    Platform::Cpu { cores: 2, numa_nodes: 1, bf16: false }
}

fn vllm_cpu() -> SearchSpace {
    SearchSpace::for_platform(EngineKind::Vllm, &cpu()).with_engine_version("0.32.0")
}

/// The tiny Llama the vLLM CPU fixtures were recorded with (`max_position_embeddings` 2048).
fn fixture_model() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vllm_cpu/tiny-llama").to_string_lossy().into_owned()
}

fn spec(model: &str, args: &[&str]) -> ServiceSpec {
    let mut spec = ServiceSpec::new("tiny", EngineKind::Vllm, model);
    spec.flags = LaunchFlags::parse_args(args).unwrap();
    spec
}

#[test]
fn the_plan_vllm_refused_for_real_is_refused_before_deploy_naming_both_flags_values_and_version() {
    // The TPE proposal vLLM 0.32.0 refused at startup (SchedulerConfig: max_num_batched_tokens (512)
    // is smaller than max_model_len (1024)).
    let args = ["--max-num-batched-tokens", "512", "--no-enable-chunked-prefill", "--max-model-len", "1024"];
    let plan = spec("/models/not-here", &args);
    // Each flag on its own is one the installed engine has: only the cross-flag rule catches it.
    EngineArgs::parse(EngineKind::Vllm, Some("0.32.0"), VLLM_HELP).check_flags(&plan.flags).unwrap();
    let err = vllm_cpu().validate(&plan).unwrap_err().to_string();
    for needle in
        ["--max-num-batched-tokens 512", "--max-model-len 1024", "--no-enable-chunked-prefill", "installed vllm 0.32.0"]
    {
        assert!(err.contains(needle), "`{needle}` missing from: {err}");
    }
    assert!(err.contains("max_num_batched_tokens (512) is smaller than max_model_len (1024)"), "{err}");
    // Without the version read, the refusal says so rather than naming one.
    let err = SearchSpace::for_platform(EngineKind::Vllm, &cpu()).validate(&plan).unwrap_err().to_string();
    assert!(err.contains("vllm (version not read)"), "{err}");
}

#[test]
fn the_context_rule_binds_only_while_chunked_prefill_is_off() {
    let space = vllm_cpu();
    // Chunked prefill is on by default in vLLM 0.32.0 on a CPU (`enable_chunked_prefill=True` in
    // the startup log): the same budget is fine there, explicitly on too.
    space.validate(&spec("/models/not-here", &["--max-num-batched-tokens", "512", "--max-model-len", "1024"])).unwrap();
    let on = ["--max-num-batched-tokens", "512", "--enable-chunked-prefill", "--max-model-len", "1024"];
    space.validate(&spec("/models/not-here", &on)).unwrap();
    // Equal is enough; an unset budget is sized by vLLM itself.
    let equal = ["--max-num-batched-tokens", "1024", "--no-enable-chunked-prefill", "--max-model-len", "1024"];
    space.validate(&spec("/models/not-here", &equal)).unwrap();
    space.validate(&spec("/models/not-here", &["--no-enable-chunked-prefill", "--max-model-len", "1024"])).unwrap();
}

#[test]
fn a_platform_whose_default_is_off_arms_the_rule_without_the_flag() {
    let mut space = vllm_cpu();
    let knob = space.knobs.iter_mut().find(|k| k.flag == "--enable-chunked-prefill").unwrap();
    knob.default = Some("false".into());
    let plan = spec("/models/not-here", &["--max-num-batched-tokens", "512", "--max-model-len", "1024"]);
    let err = space.validate(&plan).unwrap_err().to_string();
    assert!(err.contains("by the engine's default"), "{err}");
}

#[test]
fn the_context_comes_from_a_local_model_folders_config() {
    let space = vllm_cpu();
    let model = fixture_model();
    // No --max-model-len: the fixture config's max_position_embeddings (2048) is the context.
    let short = spec(&model, &["--max-num-batched-tokens", "1024", "--no-enable-chunked-prefill"]);
    let err = space.validate(&short).unwrap_err().to_string();
    assert!(err.contains("2048 (the model's max_position_embeddings)") && err.contains("1024"), "{err}");
    space.validate(&spec(&model, &["--max-num-batched-tokens", "2048", "--no-enable-chunked-prefill"])).unwrap();
    // --max-model-len wins over the model's own length, as in the fixture's startup log.
    let capped = ["--max-num-batched-tokens", "1024", "--no-enable-chunked-prefill", "--max-model-len", "1024"];
    space.validate(&spec(&model, &capped)).unwrap();
    assert!(space.unchecked_constraints(&short).is_empty());
}

#[test]
fn an_unknown_context_is_said_not_guessed() {
    let space = vllm_cpu();
    let hub = spec("Qwen/Qwen2.5-0.5B-Instruct", &["--max-num-batched-tokens", "512", "--no-enable-chunked-prefill"]);
    // Not refused (the engine may well accept it), but not passed silently either.
    space.validate(&hub).unwrap();
    let unchecked = space.unchecked_constraints(&hub);
    assert_eq!(unchecked.len(), 1, "{unchecked:?}");
    assert!(
        unchecked[0].contains("--max-model-len is not set")
            && unchecked[0].contains("Qwen/Qwen2.5-0.5B-Instruct")
            && unchecked[0].contains("vllm 0.32.0"),
        "{}",
        unchecked[0]
    );
    // `auto` lets vLLM pick the length at startup: just as unknown here.
    let auto = spec("/models/not-here", &["--max-num-batched-tokens", "512", "--no-enable-chunked-prefill"]);
    let mut auto = auto;
    auto.flags.set("--max-model-len", Some("-1"));
    let checks = space.check_constraints(&auto);
    assert!(checks.iter().any(|(_, v)| matches!(v, Verdict::Unknown(t) if t.contains("-1"))), "{checks:?}");

    // A RoPE-scaled model's context is not its max_position_embeddings.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"max_position_embeddings": 4096, "rope_scaling": {"factor": 4.0, "rope_type": "yarn"}}"#,
    )
    .unwrap();
    let scaled =
        spec(&dir.path().to_string_lossy(), &["--max-num-batched-tokens", "512", "--no-enable-chunked-prefill"]);
    space.validate(&scaled).unwrap();
    let unchecked = space.unchecked_constraints(&scaled);
    assert!(unchecked.iter().any(|u| u.contains("scales RoPE")), "{unchecked:?}");
}

#[test]
fn the_token_budget_must_cover_the_sequences() {
    let space = vllm_cpu();
    let err = space
        .validate(&spec("/models/not-here", &["--max-num-seqs", "1024", "--max-num-batched-tokens", "512"]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--max-num-batched-tokens 512") && err.contains("--max-num-seqs 1024"), "{err}");
    assert!(err.contains("must be greater than or equal to max_num_seqs (1024)"), "{err}");
    // An unset sequence cap is the catalog's CPU default (128).
    let err = space.validate(&spec("/models/not-here", &["--max-num-batched-tokens", "64"])).unwrap_err().to_string();
    assert!(err.contains("128 (its default)"), "{err}");
    space.validate(&spec("/models/not-here", &["--max-num-seqs", "1024"])).unwrap();
    space.validate(&spec("/models/not-here", &["--max-num-seqs", "512", "--max-num-batched-tokens", "512"])).unwrap();
}

#[test]
fn only_vllm_has_these_rules_and_they_serialize_as_data() {
    assert!(SearchSpace::for_engine(EngineKind::Sglang).constraints.is_empty());
    assert!(SearchSpace::for_engine(EngineKind::LlamaCpp).constraints.is_empty());
    let space = vllm_cpu();
    let json = serde_json::to_string(&space).unwrap();
    let back: SearchSpace = serde_json::from_str(&json).unwrap();
    assert_eq!(back, space);
    assert!(json.contains("vllm.batched_tokens_cover_context"), "{json}");
}

fn iteration(number: u32, spec: ServiceSpec, loss: f64) -> Iteration {
    Iteration {
        number,
        spec,
        artifact: None,
        status: IterationStatus::Ok,
        metrics: BTreeMap::from([("loss".to_string(), loss), ("error_rate".to_string(), 0.0)]),
        bench: BTreeMap::new(),
        analysis: Analysis::default(),
        plan: None,
        error: None,
        started_ns: 0,
        finished_ns: 0,
        timings: BTreeMap::new(),
        round: None,
    }
}

/// A loss that pulls the search towards the broken corner: chunked prefill off, small budgets.
fn loss(space: &SearchSpace, spec: &ServiceSpec) -> f64 {
    let chunked = space.effective(&spec.flags, "--enable-chunked-prefill").as_deref() == Some("true");
    let budget: f64 =
        space.effective(&spec.flags, "--max-num-batched-tokens").and_then(|v| v.parse().ok()).unwrap_or(2048.0);
    let seqs: f64 = space.effective(&spec.flags, "--max-num-seqs").and_then(|v| v.parse().ok()).unwrap_or(128.0);
    f64::from(u8::from(chunked)) * 10.0 + budget / 512.0 + (seqs - 64.0).abs() / 64.0
}

/// Drives `planner` for `steps` plans and returns every spec it proposed, with the plans' notes.
async fn proposals(
    planner: &dyn Planner,
    space: &SearchSpace,
    base: &ServiceSpec,
    steps: u32,
) -> Vec<(ServiceSpec, Vec<String>)> {
    let objective = Objective::minimize("loss").with_constraint("error_rate == 0".parse().unwrap()).with_noise_pct(0.0);
    let mut history = History::default();
    let mut current = base.clone();
    let mut out = Vec::new();
    for n in 0..steps {
        history.iterations.push(iteration(n + 1, current.clone(), loss(space, &current)));
        let champion = history.champion(&objective).map(|i| i.spec.clone()).unwrap_or_else(|| base.clone());
        let analysis = Analysis::default();
        let input =
            PlanInput { history: &history, analysis: &analysis, space, current: &champion, objective: &objective };
        let plan = planner.plan(input).await.unwrap();
        if plan.exhausted {
            break;
        }
        out.push((plan.next.clone(), plan.notes.clone()));
        current = plan.next;
    }
    out
}

fn planners(seed: u64) -> Vec<Box<dyn Planner>> {
    vec![
        Box::new(RandomPlanner::new(seed)),
        Box::new(BayesPlanner::new(seed)),
        Box::new(HybridPlanner::new(seed)),
        Box::new(GridPlanner::new()),
        Box::new(OneKnobPlanner::new()),
    ]
}

fn broken(space: &SearchSpace, spec: &ServiceSpec) -> bool {
    space.check_constraints(spec).iter().any(|(_, v)| !matches!(v, Verdict::Holds))
}

#[tokio::test]
async fn no_planner_proposes_a_point_vllm_would_refuse_across_seeds() {
    let space = vllm_cpu();
    let base = spec("/models/not-here", &["--max-model-len", "4096"]);
    let tune = TuneSpace::from_space(&space, &base);
    // The space holds plenty of points the engine refuses: the test can fail.
    let refused = tune.enumerate().filter(|c| {
        tune.to_flags(&space, &base.flags, c).is_ok_and(|f| broken(&space, &ServiceSpec { flags: f, ..base.clone() }))
    });
    assert!(refused.count() > 100);
    for seed in 0..12 {
        for planner in planners(seed) {
            for (next, notes) in proposals(planner.as_ref(), &space, &base, 12).await {
                assert!(
                    !broken(&space, &next),
                    "{} (seed {seed}) proposed {}: {:?}",
                    planner.name(),
                    next.flags.to_command_line(),
                    space.check_constraints(&next)
                );
                space.validate(&next).unwrap();
                if planner.name() != "hybrid" || notes.iter().any(|n| n.contains("Bayesian")) {
                    assert!(
                        notes.iter().any(|n| n.contains("vllm.batched_tokens_cover_context")),
                        "{}: {notes:?}",
                        planner.name()
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn without_the_rules_the_same_search_walks_into_the_refused_corner() {
    // The control for the test above: the loss favours the corner vLLM refuses.
    let mut space = vllm_cpu();
    space.constraints.clear();
    let base = spec("/models/not-here", &["--max-model-len", "4096"]);
    let ruled = vllm_cpu();
    let mut hits = 0;
    for seed in 0..4 {
        for (next, _) in proposals(&BayesPlanner::new(seed), &space, &base, 12).await {
            hits += usize::from(broken(&ruled, &next));
        }
    }
    assert!(hits > 0, "the unconstrained search never reached a refused point: the loss does not test anything");
}

#[tokio::test]
async fn with_an_unknown_context_the_search_leaves_the_unverifiable_points_alone_and_says_so() {
    let space = vllm_cpu();
    let base = spec("Qwen/Qwen2.5-0.5B-Instruct", &[]);
    let mut proposed = 0;
    for seed in 0..6 {
        for (next, notes) in proposals(&RandomPlanner::new(seed), &space, &base, 10).await {
            proposed += 1;
            assert!(space.unchecked_constraints(&next).is_empty(), "{}", next.flags.to_command_line());
            let chunked_off = space.effective(&next.flags, "--enable-chunked-prefill").as_deref() == Some("false");
            assert!(
                !chunked_off || !next.flags.contains("--max-num-batched-tokens"),
                "{}",
                next.flags.to_command_line()
            );
            assert!(
                notes.iter().any(|n| n.contains("cannot be checked") && n.contains("set --max-model-len")),
                "{notes:?}"
            );
        }
    }
    assert!(proposed > 0);
}

#[test]
fn the_model_context_is_read_from_the_fixture_and_from_a_text_config() {
    use autodebug_core::knobs::model_context;
    assert_eq!(model_context(&fixture_model()), Ok(2048));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"text_config": {"max_position_embeddings": 32768}}"#).unwrap();
    assert_eq!(model_context(&dir.path().to_string_lossy()), Ok(32768));
    let empty = tempfile::tempdir().unwrap();
    let err = model_context(&empty.path().to_string_lossy()).unwrap_err();
    assert!(err.contains("config.json") && err.contains("cannot be read"), "{err}");
    assert!(model_context("Qwen/Qwen2.5-0.5B-Instruct").unwrap_err().contains("not a local folder"));
}
