//! A reduced tuning suite: one seed, two scenarios, a small budget and a narrowed space.

use autodebug_sim::tune_suite::{PlannerChoice, SuiteOptions, run_suite, scenarios};

#[test]
fn every_scenario_searches_at_least_six_knobs_from_the_engine_defaults() {
    let all = scenarios();
    assert!(all.len() >= 6);
    for s in &all {
        assert!(
            s.space.dims.len() >= 6,
            "{} has {} knobs",
            s.name,
            s.space.dims.len()
        );
        assert!(
            !s.objective.constraints.is_empty(),
            "{} has no constraint",
            s.name
        );
        let catalog = autodebug_core::SearchSpace::for_engine(autodebug_core::EngineKind::Sglang);
        catalog.validate(&s.base).unwrap();
    }
}

#[test]
fn a_reduced_suite_runs_every_planner_and_fills_every_field() {
    let options = SuiteOptions {
        planners: PlannerChoice::ALL.to_vec(),
        seeds: 1,
        budget: 12,
        scenarios: vec!["qwen-chat-latency".into(), "kv-starved".into()],
        limit_space: Some(2),
    };
    let report = run_suite(&options).unwrap();
    assert_eq!(report.scenarios.len(), 2);
    assert_eq!(report.rows.len(), 2 * PlannerChoice::ALL.len());
    for s in &report.scenarios {
        assert_eq!(
            s.configurations,
            1 << s.knobs,
            "{}: 2 levels per knob",
            s.name
        );
        assert!(s.optimum.is_finite() && s.optimum > 0.0);
    }
    for row in &report.rows {
        assert_eq!(
            row.invalid_proposals, 0,
            "{} proposed an invalid configuration",
            row.planner
        );
        assert_eq!(row.evals_per_seed.len(), 1);
        let optimum = report
            .scenarios
            .iter()
            .find(|s| s.name == row.scenario)
            .unwrap()
            .optimum;
        assert_eq!(row.optimum, optimum);
        // Nothing measured can beat the exhaustive optimum of the space by more than the
        // off-ladder values a rule may choose.
        let json = serde_json::to_value(row).unwrap();
        for field in [
            "scenario",
            "planner",
            "evals_to_within_2pct",
            "best_after_10",
            "best_after_20",
            "optimum",
            "failed_evals",
            "within_2pct_share",
            "vs_random",
        ] {
            assert!(json.get(field).is_some(), "missing field {field}");
        }
        assert!(
            row.best_after_10.is_some(),
            "{}/{}: the baseline is feasible, so some value exists",
            row.scenario,
            row.planner
        );
    }
    // The grid visits all 64 points in order: with a budget of 12 it reaches the optimum only if
    // the optimum is early in the order; the exhaustive planners must at least not do worse after
    // 20 evaluations than after 10.
    for row in &report.rows {
        let (a, b) = (row.best_after_10.unwrap(), row.best_after_20.unwrap());
        let scenario = scenarios()
            .into_iter()
            .find(|s| s.name == row.scenario)
            .unwrap();
        assert!(
            !scenario.objective.better_value(a, b),
            "{}/{}: best after 20 ({b}) is worse than after 10 ({a})",
            row.scenario,
            row.planner
        );
    }
}

#[test]
fn the_within_2pct_region_is_a_small_share_even_of_a_narrowed_space() {
    // Three levels per knob: hundreds of configurations, of which only a few are near the best.
    let options = SuiteOptions {
        planners: vec![PlannerChoice::Random, PlannerChoice::Hybrid],
        seeds: 1,
        budget: 12,
        scenarios: vec!["qwen-chat-latency".into(), "long-prompt".into()],
        limit_space: Some(3),
    };
    let report = run_suite(&options).unwrap();
    for s in &report.scenarios {
        assert!(
            s.configurations >= 200,
            "{}: {} configurations",
            s.name,
            s.configurations
        );
        assert!(
            s.within_2pct_share > 0.0 && s.within_2pct_share <= 0.05,
            "{}: {:.1}% of the space is within 2% of the optimum",
            s.name,
            100.0 * s.within_2pct_share
        );
        assert_eq!(
            s.within_2pct_share,
            s.within_2pct_configurations as f64 / s.configurations as f64
        );
    }
    // Virtual time and fixed seeds make this deterministic: the hybrid's rules and local search
    // reach the sparse optimum of the latency scenario within the small budget.
    let hybrid = report
        .rows
        .iter()
        .find(|r| r.scenario == "qwen-chat-latency" && r.planner == "hybrid")
        .unwrap();
    assert!(
        hybrid.evals_per_seed[0].is_some_and(|n| n <= 12),
        "hybrid: {:?}",
        hybrid.evals_per_seed
    );
    let targets = report.targets();
    assert_eq!(targets.len(), 2);
    for t in &targets {
        let random = t.random.unwrap();
        assert!(random >= 1.0);
        if let Some(h) = t.hybrid {
            assert_eq!(t.hybrid_vs_random, Some(h / random));
        }
    }
}
