//! Search planners driven through the `Planner` trait on synthetic objectives.

use std::collections::BTreeMap;

use autodebug_core::search::{
    BayesPlanner, Config, Confirmation, Dimension, GridPlanner, HybridPlanner, OneKnobPlanner, RandomPlanner, TuneSpace,
};
use autodebug_core::{
    Analysis, EngineKind, History, Iteration, IterationStatus, Objective, PlanInput, Planner, SearchSpace, ServiceSpec,
};

fn catalog() -> SearchSpace {
    SearchSpace::for_engine(EngineKind::Sglang)
}

fn bare() -> ServiceSpec {
    ServiceSpec::new("synthetic", EngineKind::Sglang, "Qwen/Qwen1.5-0.5B-Chat").with_gpu("H100:1")
}

/// The first level of every knob.
fn baseline() -> ServiceSpec {
    tune_space().to_spec(&catalog(), &bare(), &[0; 7]).unwrap()
}

/// Seven knobs, 5 x 4 x 2 x 4 x 5 x 4 x 2 = 12800 configurations.
fn tune_space() -> TuneSpace {
    let c = catalog();
    TuneSpace::new(vec![
        Dimension::new(&c, "--num-continuous-decode-steps", &["1", "2", "4", "8", "16"]).unwrap(),
        Dimension::new(&c, "--chunked-prefill-size", &["1024", "2048", "4096", "8192"]).unwrap(),
        Dimension::new(&c, "--enable-mixed-chunk", &["false", "true"]).unwrap(),
        Dimension::new(&c, "--max-running-requests", &["16", "32", "64", "128"]).unwrap(),
        Dimension::new(&c, "--mem-fraction-static", &["0.7", "0.8", "0.85", "0.9", "0.95"]).unwrap(),
        Dimension::new(&c, "--schedule-policy", &["fcfs", "lpm", "random", "dfs-weight"]).unwrap(),
        Dimension::new(&c, "--disable-overlap-schedule", &["false", "true"]).unwrap(),
    ])
}

/// A bowl with an interaction term; minimum 0 at levels (3, 2, 1, 2, 3, 1, 0).
fn bowl(x: &[usize]) -> f64 {
    let target = [3usize, 2, 1, 2, 3, 1, 0];
    let mut v = 0.0;
    for (d, (a, t)) in x.iter().zip(target).enumerate() {
        let w = [3.0, 2.0, 4.0, 2.0, 1.5, 5.0, 3.0][d];
        v += w * (*a as f64 - t as f64).powi(2);
    }
    v + 2.0 * ((x[0] as f64 - 3.0) * (x[3] as f64 - 2.0)).abs()
}

enum Eval {
    Ran(f64),
    Fails,
}

fn iteration(number: u32, spec: ServiceSpec, eval: &Eval) -> Iteration {
    let (status, metrics) = match eval {
        Eval::Ran(v) => {
            (IterationStatus::Ok, BTreeMap::from([("loss".to_string(), *v), ("error_rate".to_string(), 0.0)]))
        }
        Eval::Fails => (IterationStatus::DeployFailed, BTreeMap::new()),
    };
    Iteration {
        number,
        spec,
        artifact: None,
        status,
        metrics,
        bench: BTreeMap::new(),
        analysis: Analysis::default(),
        plan: None,
        error: matches!(eval, Eval::Fails).then(|| "CUDA out of memory at startup".to_string()),
        started_ns: 0,
        finished_ns: 0,
        timings: BTreeMap::new(),
        round: None,
    }
}

fn objective() -> Objective {
    Objective::minimize("loss").with_constraint("error_rate == 0".parse().unwrap()).with_noise_pct(0.0)
}

/// Runs `planner` for `budget` evaluations (the baseline first) and returns the history.
async fn drive(planner: &dyn Planner, budget: usize, evaluate: &dyn Fn(&Config) -> Eval) -> (History, Vec<Config>) {
    let space = catalog();
    let tune = tune_space();
    let objective = objective();
    let mut history = History::default();
    let mut current = baseline();
    let mut visited = Vec::new();
    for n in 0..budget {
        let config = tune.encode(&space, &current.flags).expect("every proposal is a point of the space");
        let eval = evaluate(&config);
        visited.push(config);
        history.iterations.push(iteration(n as u32 + 1, current.clone(), &eval));
        let champion =
            history.champion(&objective).or_else(|| history.last_ok()).map(|i| i.spec.clone()).unwrap_or_else(baseline);
        let analysis = Analysis::default();
        let input = PlanInput {
            history: &history,
            analysis: &analysis,
            space: &space,
            current: &champion,
            objective: &objective,
        };
        let plan = planner.plan(input).await.expect("planning succeeds");
        space.validate(&plan.next).expect("planners never propose an invalid configuration");
        if let Some(last) = history.iterations.last_mut() {
            last.plan = Some(plan.clone());
        }
        if plan.exhausted {
            break;
        }
        current = plan.next;
    }
    (history, visited)
}

fn best_loss(history: &History) -> f64 {
    history.iterations.iter().filter_map(|i| i.metrics.get("loss").copied()).fold(f64::INFINITY, f64::min)
}

#[tokio::test]
async fn tpe_beats_random_search_in_expectation_over_seeds() {
    let eval = |c: &Config| Eval::Ran(bowl(c));
    let (mut tpe_total, mut random_total) = (0.0, 0.0);
    for seed in 0..8u64 {
        let tpe = BayesPlanner::new(seed)
            .with_space(tune_space())
            .with_confirmation(Confirmation { trials: 3, patience: 1000 });
        let random = RandomPlanner::new(seed).with_space(tune_space());
        tpe_total += best_loss(&drive(&tpe, 30, &eval).await.0);
        random_total += best_loss(&drive(&random, 30, &eval).await.0);
    }
    assert!(tpe_total < random_total * 0.7, "TPE mean best {} vs random {}", tpe_total / 8.0, random_total / 8.0);
}

#[tokio::test]
async fn a_region_that_always_fails_is_avoided_after_a_few_failures() {
    // Any memory fraction of 0.9 or more OOMs at startup (levels 3 and 4 of 5).
    let eval = |c: &Config| {
        if c[4] >= 3 { Eval::Fails } else { Eval::Ran(bowl(&[c[0], c[1], c[2], c[3], 1, c[5], c[6]])) }
    };
    let mut late_failures = 0;
    let mut late_total = 0;
    for seed in 0..5u64 {
        let tpe = BayesPlanner::new(seed).with_space(tune_space());
        let (history, _) = drive(&tpe, 40, &eval).await;
        let late = &history.iterations[15..];
        late_total += late.len();
        late_failures += late.iter().filter(|i| i.status == IterationStatus::DeployFailed).count();
    }
    // Random search would land there 40% of the time.
    assert!(late_total > 0);
    assert!(
        (late_failures as f64) < 0.1 * late_total as f64,
        "{late_failures} of {late_total} late proposals still failed"
    );
}

#[tokio::test]
async fn batch_proposals_are_distinct_valid_and_new() {
    let space = catalog();
    let tune = tune_space();
    // Confirmation runs are tested on their own; here every proposal is a new point.
    let planner =
        BayesPlanner::new(3).with_space(tune.clone()).with_confirmation(Confirmation { trials: 3, patience: 1000 });
    let eval = |c: &Config| Eval::Ran(bowl(c));
    for budget in [1usize, 3, 12] {
        let (history, visited) = drive(&planner, budget, &eval).await;
        let champion = history.last_ok().map(|i| i.spec.clone()).unwrap_or_else(baseline);
        let analysis = Analysis::default();
        let objective = objective();
        let input = PlanInput {
            history: &history,
            analysis: &analysis,
            space: &space,
            current: &champion,
            objective: &objective,
        };
        let batch = planner.propose_batch(&input, 8).unwrap();
        assert_eq!(batch.len(), 8);
        for (i, p) in batch.iter().enumerate() {
            space.validate(&p.spec).unwrap();
            assert!(tune.contains(&p.config));
            assert!(!p.confirmation);
            assert!(!visited.contains(&p.config), "batch item {i} was already measured");
            assert!(
                batch[..i].iter().all(|q| q.config != p.config && q.spec.flags != p.spec.flags),
                "batch item {i} repeats an earlier one"
            );
        }
    }
}

#[tokio::test]
async fn proposals_are_deterministic_given_the_seed() {
    let eval = |c: &Config| Eval::Ran(bowl(c));
    let a = drive(&BayesPlanner::new(11).with_space(tune_space()), 15, &eval).await.1;
    let b = drive(&BayesPlanner::new(11).with_space(tune_space()), 15, &eval).await.1;
    let c = drive(&BayesPlanner::new(12).with_space(tune_space()), 15, &eval).await.1;
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[tokio::test]
async fn no_planner_ever_proposes_an_invalid_configuration() {
    // The catalog-derived space, with its conditional speculative knobs added explicitly.
    let c = catalog();
    let mut tune = TuneSpace::from_space(&c, &bare());
    assert!(
        tune.dims.len() >= 8,
        "the catalog gives a real space: {:?}",
        tune.dims.iter().map(|d| &d.flag).collect::<Vec<_>>()
    );
    assert!(tune.dims.iter().all(|d| d.flag != "--kv-cache-dtype"), "quality-risk knobs are left out unasked");
    tune.dims.push(Dimension::new(&c, "--speculative-algorithm", &["default", "NGRAM"]).unwrap());
    tune.dims.push(Dimension::new(&c, "--speculative-num-draft-tokens", &["2", "4"]).unwrap());
    let eval = |x: &Config| Eval::Ran(x.iter().enumerate().map(|(d, l)| ((d * 7 + 3) % 5) as f64 * *l as f64).sum());
    let planners: Vec<Box<dyn Planner>> = vec![
        Box::new(BayesPlanner::new(1).with_space(tune.clone())),
        Box::new(RandomPlanner::new(1).with_space(tune.clone())),
        Box::new(GridPlanner::new().with_space(tune.clone())),
        Box::new(OneKnobPlanner::new().with_space(tune.clone())),
        Box::new(HybridPlanner::new(1).with_space(tune.clone())),
        Box::new(BayesPlanner::new(2)),
    ];
    let draft = tune.dims.len() - 1;
    for planner in &planners {
        let space = catalog();
        let objective = objective();
        let mut history = History::default();
        let mut current = bare();
        for n in 0..40u32 {
            space.validate(&current).unwrap_or_else(|e| panic!("{} proposed an invalid config: {e}", planner.name()));
            if let Some(x) = tune.encode(&space, &current.flags) {
                assert!(tune.contains(&x));
                // A draft-token count only appears with its speculative algorithm.
                if x[draft] != 0 {
                    assert_eq!(current.flags.get("--speculative-algorithm"), Some(Some("NGRAM")), "{}", planner.name());
                }
                history.iterations.push(iteration(n + 1, current.clone(), &eval(&x)));
            } else {
                history.iterations.push(iteration(n + 1, current.clone(), &Eval::Ran(1e9)));
            }
            let champion = history.champion(&objective).map(|i| i.spec.clone()).unwrap_or_else(baseline);
            let analysis = Analysis::default();
            let plan = planner
                .plan(PlanInput {
                    history: &history,
                    analysis: &analysis,
                    space: &space,
                    current: &champion,
                    objective: &objective,
                })
                .await
                .unwrap();
            if plan.exhausted {
                break;
            }
            current = plan.next;
        }
    }
}

#[tokio::test]
async fn a_stagnating_search_confirms_its_best_and_says_draft_or_verdict() {
    // Flat everywhere but the baseline: nothing new ever wins, so the best is re-run.
    let eval = |c: &Config| Eval::Ran(if c == &vec![0, 0, 0, 0, 0, 0, 0] { 1.0 } else { 5.0 + c[0] as f64 });
    let planner =
        BayesPlanner::new(5).with_space(tune_space()).with_confirmation(Confirmation { trials: 3, patience: 4 });
    let (history, _) = drive(&planner, 14, &eval).await;
    let confirmations: Vec<_> = history
        .iterations
        .iter()
        .filter_map(|i| i.plan.as_ref())
        .filter(|p| p.notes.iter().any(|n| n.contains("confirmation run")))
        .collect();
    assert!(!confirmations.is_empty(), "the best configuration was never re-run");
    let baseline_trials = history.iterations.iter().filter(|i| i.spec.flags == baseline().flags).count();
    assert_eq!(baseline_trials, 3, "confirmation stops at the trials a verdict needs");
    let last = history.iterations.last().and_then(|i| i.plan.as_ref()).unwrap();
    assert!(last.notes.iter().any(|n| n.starts_with("DRAFT")), "{:?}", last.notes);
}

#[tokio::test]
async fn hybrid_runs_rules_first_then_searches() {
    let eval = |c: &Config| Eval::Ran(bowl(c));
    let planner = HybridPlanner::new(9).with_space(tune_space());
    let (history, _) = drive(&planner, 12, &eval).await;
    let plans: Vec<_> = history.iterations.iter().filter_map(|i| i.plan.as_ref()).collect();
    // With no findings to act on, the rules do not fire and the search starts at once.
    assert!(plans[0].notes.iter().any(|n| n == "hybrid phase: Bayesian search"), "{:?}", plans[0].notes);
    assert!(plans.iter().all(|p| p.planner == "hybrid"));
    assert!(best_loss(&history) < bowl(&[0, 0, 0, 0, 0, 0, 0]));
}
