//! A reduced tuning suite: one seed, two scenarios, a small budget and a narrowed space.

use autodebug_sim::tune_suite::{PlannerChoice, SuiteOptions, run_suite, scenarios};

#[test]
fn every_scenario_searches_at_least_six_knobs_from_the_engine_defaults() {
    let all = scenarios();
    assert!(all.len() >= 6);
    for s in &all {
        assert!(s.space.dims.len() >= 6, "{} has {} knobs", s.name, s.space.dims.len());
        assert!(!s.objective.constraints.is_empty(), "{} has no constraint", s.name);
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
        ..SuiteOptions::default()
    };
    let report = run_suite(&options).unwrap();
    assert_eq!(report.scenarios.len(), 2);
    assert_eq!(report.rows.len(), 2 * PlannerChoice::ALL.len());
    for s in &report.scenarios {
        assert_eq!(s.configurations, 1 << s.knobs, "{}: 2 levels per knob", s.name);
        assert!(s.optimum.is_finite() && s.optimum > 0.0);
    }
    for row in &report.rows {
        assert_eq!(row.invalid_evals, 0, "{} proposed a configuration outside the space", row.planner);
        assert_eq!(row.evals_per_seed.len(), 1);
        let optimum = report.scenarios.iter().find(|s| s.name == row.scenario).unwrap().optimum;
        assert_eq!(row.optimum, optimum);
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
            "invalid_evals",
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
        let scenario = scenarios().into_iter().find(|s| s.name == row.scenario).unwrap();
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
        ..SuiteOptions::default()
    };
    let report = run_suite(&options).unwrap();
    for s in &report.scenarios {
        assert!(s.configurations >= 200, "{}: {} configurations", s.name, s.configurations);
        assert!(
            s.within_2pct_share > 0.0 && s.within_2pct_share <= 0.05,
            "{}: {:.1}% of the space is within 2% of the optimum",
            s.name,
            100.0 * s.within_2pct_share
        );
        assert_eq!(s.within_2pct_share, s.within_2pct_configurations as f64 / s.configurations as f64);
    }
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

use autodebug_sim::tune_suite::{EvalRequest, Evaluator, generate, generated, landscape};

fn request(line: &str) -> EvalRequest {
    serde_json::from_str(line).unwrap()
}

#[test]
fn measurement_noise_moves_the_first_draw_and_the_truth_is_the_noise_free_run() {
    let mut noisy = Evaluator::new(1.0);
    let mut quiet = Evaluator::new(0.0);
    let line = r#"{"scenario": "qwen-chat-latency", "config": {}, "seed": 0, "with_truth": true}"#;
    let a = noisy.answer(&request(line)).unwrap();
    let b = quiet.answer(&request(line)).unwrap();
    let truth = a.true_value.unwrap().unwrap();
    // Noise off: the measurement is the truth; noise on: the first draw is not.
    assert_eq!(b.value, Some(truth));
    assert_ne!(a.value, Some(truth));
    // A repeat is a fresh draw, and the same (seed, eval) pair draws the same again.
    let again = noisy.answer(&request(line)).unwrap();
    assert_eq!(again.eval, 2);
    assert_ne!(again.value, a.value);
    let replay = Evaluator::new(1.0)
        .answer(&request(r#"{"scenario": "qwen-chat-latency", "config": {}, "seed": 0, "eval": 1}"#))
        .unwrap();
    assert_eq!(replay.value, a.value);
    // The landscape's optimum is the noise-free value, so no draw can define it.
    let s = autodebug_sim::tune_suite::scenarios().into_iter().find(|s| s.name == "qwen-chat-latency").unwrap();
    let values: Vec<f64> = landscape(&s).points.iter().filter_map(|(_, v)| *v).collect();
    assert!(values.contains(&truth), "the start's truth is one of the landscape's values");
}

#[test]
fn sim_eval_answers_a_json_line_and_refuses_levels_outside_the_space() {
    let mut e = Evaluator::new(1.0);
    let ok = e
        .answer(&request(r#"{"scenario": "kv-starved", "config": {"--max-running-requests": 16}, "seed": 2}"#))
        .unwrap();
    assert!(ok.valid && !ok.failed && ok.feasible, "{ok:?}");
    assert!(ok.value.is_some_and(|v| v > 0.0));
    assert_eq!(ok.direction, "maximize");
    assert!(ok.metrics.contains_key("output_throughput"));
    let off = e
        .answer(&request(r#"{"scenario": "kv-starved", "config": {"--max-running-requests": "17"}, "seed": 2}"#))
        .unwrap();
    assert!(!off.valid && off.value.is_none());
    assert!(off.error.unwrap().contains("not one of its levels"));
    let unknown = e.answer(&request(r#"{"scenario": "kv-starved", "config": {"--tp-size": "2"}, "seed": 2}"#)).unwrap();
    assert!(!unknown.valid);
    assert!(e.answer(&request(r#"{"scenario": "nope", "seed": 1}"#)).is_err());
}

#[test]
fn generated_scenarios_are_reproducible_from_the_seed_and_search_four_to_seven_knobs() {
    let a = generate(4, 7);
    let b = generate(4, 7);
    assert_eq!(a.len(), 4);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.name, y.name);
        assert_eq!(x.description, y.description);
        assert_eq!(x.space, y.space);
        assert_eq!(x.base.flags, y.base.flags);
        let again = generated(&x.name).unwrap();
        assert_eq!(again.space, x.space);
        assert!((4..=7).contains(&x.space.dims.len()), "{}: {} knobs", x.name, x.space.dims.len());
        for d in &x.space.dims {
            assert!(d.levels.len() >= 2, "{}: {} has one level", x.name, d.flag);
        }
    }
    let other = generate(4, 8);
    assert!(a.iter().zip(&other).any(|(x, y)| x.description != y.description));
}

#[test]
fn every_evaluation_stays_inside_the_space_and_outside_configs_are_counted() {
    // The rules name catalog values; the suite snaps them into the scenario's ladder, so every
    // evaluated configuration is one of the space's points (none invalid).
    let options = SuiteOptions {
        planners: vec![PlannerChoice::Rules, PlannerChoice::Hybrid],
        seeds: 2,
        budget: 10,
        scenarios: vec!["kv-starved".into(), "llama70b-tp".into()],
        limit_space: Some(3),
        ..SuiteOptions::default()
    };
    let report = run_suite(&options).unwrap();
    for row in &report.rows {
        assert_eq!(row.invalid_evals, 0, "{}/{}", row.scenario, row.planner);
    }
    // An outside run with an off-ladder level is counted invalid, not measured.
    let external: autodebug_sim::tune_suite::ExternalRun = serde_json::from_str(
        r#"{"planner": "outside", "scenario": "kv-starved", "seed": 0, "evals": [
            {"config": {"--max-running-requests": "17"}, "failed": false},
            {"config": {"--max-running-requests": "16"}, "failed": false}]}"#,
    )
    .unwrap();
    let options = SuiteOptions {
        planners: vec![PlannerChoice::Random],
        seeds: 1,
        budget: 5,
        scenarios: vec!["kv-starved".into()],
        limit_space: Some(6),
        external: vec![external],
        ..SuiteOptions::default()
    };
    let report = run_suite(&options).unwrap();
    let outside = report.row("kv-starved", "outside").unwrap();
    assert_eq!(outside.invalid_evals, 1);
}

#[test]
fn generated_scenarios_start_away_from_the_optimum_and_keep_the_target_region_sparse() {
    use autodebug_sim::tune_suite::generate::MAX_WITHIN_SHARE;
    let mut evaluator = Evaluator::new(0.0);
    for s in generate(5, 11) {
        let map = landscape(&s);
        let (_, optimum) = map.optimum(&s.objective).unwrap();
        let near = map.within_count(&s.objective, optimum);
        let share = near as f64 / map.points.len() as f64;
        assert!(share <= MAX_WITHIN_SHARE, "{}: {:.1}% within 2%", s.name, 100.0 * share);
        // The start, as `sim eval` answers it (an empty config is the starting configuration).
        let line = format!(r#"{{"scenario": "{}", "config": {{}}, "seed": 0, "with_truth": true}}"#, s.name);
        let start = evaluator.answer(&request(&line)).unwrap().true_value.unwrap().unwrap();
        let gap = (start - optimum).abs() / optimum.abs();
        assert!(gap > 0.02, "{}: the start is {:.2}% from the optimum", s.name, 100.0 * gap);
    }
}

#[test]
fn an_open_loop_scenario_replays_one_arrival_trace_so_its_noise_is_the_engines() {
    use autodebug_sim::{EngineKind, SimConfig, SimWorkload, simulate};
    let config = SimConfig::from_args(EngineKind::Sglang, "H100", "qwen1.5-0.5b", &[]).unwrap();
    let open = SimWorkload::sequential(24, 256, 64).with_arrival_rate(20.0);
    let e2e = |w: &SimWorkload, seed| simulate(&config, w, seed).metrics()["e2e.mean"];
    // Fresh arrivals per seed move the mean more than the engine's own noise on one trace.
    let spread = |w: &SimWorkload| {
        let v: Vec<f64> = (1..=6).map(|seed| e2e(w, 100 + seed)).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt() / mean
    };
    let fresh = spread(&open);
    let replayed = spread(&open.clone().with_arrival_seed(1));
    assert!(replayed < fresh, "replayed trace {replayed:.4} vs fresh arrivals {fresh:.4}");
}
