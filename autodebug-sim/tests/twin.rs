//! The twin: its fit recovers a known engine, and its held-out error on REAL engines' measurements
//! (stores in `tests/fixtures/real/`, measured by `autodebug run` on this project's machine; see the
//! `.yaml` next to each store and `tests/fixtures/SOURCES.md`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use autodebug_core::store::Store;
use autodebug_core::{BenchPlan, EngineKind, LaunchFlags, Platform};
use autodebug_sim::SimWorkload;
use autodebug_sim::twin::{
    CostFactor, FactorScope, FitOptions, Holdout, Observation, StepCosts, Twin, Validation, fit, observations, validate,
};

/// The machine the real data sets were measured on.
const CPU: Platform = Platform::Cpu { cores: 2, numa_nodes: 1, bf16: true };

fn flags(text: &str) -> LaunchFlags {
    LaunchFlags::parse_args(&text.split_whitespace().collect::<Vec<_>>()).unwrap()
}

/// An engine whose costs are known: the data a fit must recover.
fn known_llamacpp() -> Twin {
    let mut twin = Twin::new(EngineKind::LlamaCpp, "smollm2", Twin::defaults_for(EngineKind::LlamaCpp, &CPU));
    twin.costs = StepCosts {
        step_us: 6000.0,
        prefill_token_us: 180.0,
        decode_seq_us: 900.0,
        context_token_ns: 40.0,
        request_ms: 3.0,
    };
    twin.factors = vec![
        CostFactor { flag: "--threads".into(), value: "1".into(), scope: FactorScope::Decode, multiplier: 1.7 },
        CostFactor { flag: "--threads".into(), value: "1".into(), scope: FactorScope::Overhead, multiplier: 1.3 },
        CostFactor { flag: "--threads-batch".into(), value: "1".into(), scope: FactorScope::Prefill, multiplier: 1.9 },
        CostFactor { flag: "--flash-attn".into(), value: "on".into(), scope: FactorScope::Decode, multiplier: 0.8 },
    ];
    twin
}

fn synthetic(truth: &Twin, configs: &[&str]) -> Vec<Observation> {
    let workloads = [
        ("concurrent", SimWorkload::sequential(24, 64, 48).with_concurrency(8)),
        ("stream", SimWorkload::sequential(5, 64, 48)),
    ];
    let mut out = Vec::new();
    for (number, config) in configs.iter().enumerate() {
        for (plan, workload) in &workloads {
            let flags = flags(config);
            let measured = truth.predict(&flags, workload).unwrap().metrics;
            out.push(Observation {
                iteration: number as u32 + 1,
                plan: plan.to_string(),
                flags,
                workload: workload.clone(),
                sent_prompt_tokens: workload.prompt_tokens,
                measured: autodebug_sim::twin::PREDICTED_METRICS
                    .iter()
                    .map(|m| (m.to_string(), measured[*m]))
                    .collect(),
                capacity: None,
            });
        }
    }
    out
}

const CONFIGS: &[&str] = &[
    "",
    "--parallel 8 --threads 1",
    "--parallel 2 --ubatch-size 128",
    "--parallel 1 --threads-batch 1 --flash-attn on",
    "--no-cont-batching --batch-size 256",
    "--parallel 8 --threads 1 --threads-batch 2 --ubatch-size 64",
    "--flash-attn on --parallel 4 --threads 1",
    "--threads 1 --parallel 2",
    "--flash-attn on --parallel 8",
    "--threads-batch 1 --ubatch-size 256",
];

#[test]
fn a_fit_recovers_the_costs_and_multipliers_of_a_known_engine() {
    let truth = known_llamacpp();
    let data = synthetic(&truth, CONFIGS);
    let base = Twin::new(EngineKind::LlamaCpp, "smollm2", Twin::defaults_for(EngineKind::LlamaCpp, &CPU));
    let fitted = fit(&base, &data, &FitOptions { ridge: 0.0, ..FitOptions::default() }).unwrap();
    let close = |a: f64, b: f64, what: &str| {
        assert!(((a - b) / b).abs() < 0.03, "{what}: fitted {a}, truth {b}\n{fitted:#?}");
    };
    close(fitted.costs.step_us, truth.costs.step_us, "step");
    close(fitted.costs.prefill_token_us, truth.costs.prefill_token_us, "prefill token");
    close(fitted.costs.decode_seq_us, truth.costs.decode_seq_us, "decode sequence");
    for factor in &truth.factors {
        let got = fitted
            .factors
            .iter()
            .find(|f| f.flag == factor.flag && f.value == factor.value && f.scope == factor.scope)
            .expect("fitted");
        close(got.multiplier, factor.multiplier, &factor.flag);
    }
    // And it predicts a configuration it never saw.
    let unseen = flags("--parallel 6 --threads 1 --ubatch-size 256");
    let workload = SimWorkload::sequential(24, 64, 48).with_concurrency(8);
    let predicted = fitted.predict(&unseen, &workload).unwrap().metrics;
    let actual = truth.predict(&unseen, &workload).unwrap().metrics;
    close(predicted["output_throughput"], actual["output_throughput"], "held-out throughput");
}

#[test]
fn a_value_the_data_never_held_is_reported_as_a_guess() {
    let truth = known_llamacpp();
    let data = synthetic(&truth, &CONFIGS[..3]);
    let fitted = fit(&truth, &data, &FitOptions::default()).unwrap();
    let prediction = fitted.predict(&flags("--flash-attn off"), &SimWorkload::sequential(2, 64, 8)).unwrap();
    assert_eq!(prediction.unseen, vec!["--flash-attn=off".to_string()]);
}

#[test]
fn leave_one_out_on_exact_data_has_no_error_where_every_value_was_seen_elsewhere() {
    let truth = known_llamacpp();
    let data = synthetic(&truth, CONFIGS);
    let base = Twin::new(EngineKind::LlamaCpp, "smollm2", Twin::defaults_for(EngineKind::LlamaCpp, &CPU));
    // Noise-free data: no reason to hold multipliers near 1.
    let options = FitOptions { ridge: 0.01, ..FitOptions::default() };
    let validation = validate(&base, &data, Holdout::LeaveOneOut, &options).unwrap();
    assert_eq!(validation.points.len(), data.len());
    for point in validation.points.iter().filter(|p| p.unseen.is_empty()) {
        assert!(point.ape["output_throughput"] < 3.0, "{point:#?}");
    }
    assert!(validation.median_ape["tpot.mean"] < 3.0, "{:?}", validation.median_ape);
}

/// A session whose first plan searches for capacity under an SLO and whose others run fixed loads:
/// each configuration measured by a known engine. A twin fitted to the other configurations
/// predicts each held-out one's capacity, and ranks the configurations as the engine does.
#[test]
fn a_twin_fitted_to_a_capacity_session_predicts_held_out_capacities_and_their_order() {
    let truth = known_llamacpp();
    let mut goal = autodebug_core::CapacityGoal::ttft_p99_ms(1500.0);
    goal.tpot_p99_ms = Some(250.0);
    let requests = SimWorkload::sequential(32, 64, 48);
    let mut data = synthetic(&truth, CONFIGS);
    for (number, config) in CONFIGS.iter().enumerate() {
        let flags = flags(config);
        let rate = truth.predict_capacity(&flags, &requests, &goal).unwrap().metrics["capacity"];
        assert!(rate > 0.0, "`{config}` holds no rate");
        // The figures a search reports: its trials at the rate that held, pooled.
        let workload = SimWorkload::sequential(64, 64, 48).with_arrival_rate(rate);
        let found = truth.predict(&flags, &workload).unwrap().metrics;
        data.push(Observation {
            iteration: number as u32 + 1,
            plan: "capacity".into(),
            flags,
            sent_prompt_tokens: workload.prompt_tokens,
            workload,
            measured: autodebug_sim::twin::PREDICTED_METRICS.iter().map(|m| (m.to_string(), found[*m])).collect(),
            capacity: Some((goal.clone(), rate)),
        });
    }
    let base = Twin::new(EngineKind::LlamaCpp, "smollm2", Twin::defaults_for(EngineKind::LlamaCpp, &CPU));
    let options = FitOptions { ridge: 0.01, ..FitOptions::default() };
    let validation = validate(&base, &data, Holdout::LeaveOneOut, &options).unwrap();
    let seen: Vec<_> = validation.points.iter().filter(|p| p.unseen.is_empty() && p.plan == "capacity").collect();
    assert!(seen.len() >= 5, "{validation:#?}");
    // Both searches stop within 5% of the boundary, so a twin with the engine's costs lands
    // within about one bracket of it.
    for point in &seen {
        assert!(point.ape["capacity"] <= 10.0, "{point:#?}");
    }
    let (predicted, measured): (Vec<f64>, Vec<f64>) =
        seen.iter().map(|p| (p.predicted["capacity"], p.measured["capacity"])).unzip();
    let highest = |values: &[f64]| (0..values.len()).max_by(|a, b| values[*a].total_cmp(&values[*b]));
    let spread = measured.iter().cloned().fold(0.0, f64::max) / measured.iter().cloned().fold(f64::MAX, f64::min);
    assert!(spread > 1.5, "the configurations differ in capacity: {measured:?}");
    assert_eq!(highest(&predicted), highest(&measured), "{predicted:?} vs {measured:?}");
    assert!(validation.naive_median_ape.contains_key("capacity"), "{:?}", validation.naive_median_ape);
}

#[test]
fn a_twin_file_round_trips_and_a_broken_one_names_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("twin.yaml");
    let twin = known_llamacpp();
    twin.save(&path).unwrap();
    assert_eq!(Twin::load(&path).unwrap(), twin);
    std::fs::write(&path, std::fs::read_to_string(&path).unwrap().replace("step_us: 6000.0", "step_us: -1.0")).unwrap();
    let error = Twin::load(&path).unwrap_err().to_string();
    assert!(error.contains("twin.yaml") && error.contains("costs.step_us"), "{error}");
    std::fs::write(&path, "engine: vllm\n").unwrap();
    let error = Twin::load(&path).unwrap_err().to_string();
    assert!(error.contains("twin.yaml") && error.contains("autodebug twin fit"), "{error}");
}

// ---- real engines ----

fn real_store(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real").join(name)
}

/// The base twin and the observations of the one session in a real data set.
fn real(name: &str) -> (Twin, Vec<Observation>) {
    let path = real_store(name);
    assert!(path.exists(), "{} is missing: the real data sets are kept in the repository", path.display());
    let store = Store::open(&path).unwrap();
    let session = store.find_session(None).unwrap();
    let history = store.history(session.id).unwrap();
    let plans: Vec<BenchPlan> = serde_json::from_value(session.config["bench"].clone()).unwrap();
    let first = history.iterations.iter().find(|i| i.is_ok()).unwrap();
    let base = Twin::new(first.spec.engine, first.spec.model.clone(), Twin::defaults_for(first.spec.engine, &CPU));
    (base, observations(&plans, &history.iterations))
}

fn report(name: &str, validation: &Validation) -> BTreeMap<String, (f64, f64)> {
    let out: BTreeMap<String, (f64, f64)> =
        validation.median_ape.iter().map(|(m, median)| (m.clone(), (*median, validation.p90_ape[m]))).collect();
    println!("{name} ({}): median / p90 APE {out:?}; no model: {:?}", validation.holdout, validation.naive_median_ape);
    out
}

/// Leave-one-out on a real data set: the twin's held-out error on `metrics`, against the yardstick
/// without a model (each held-out run predicted as the median of its plan's other runs).
fn beats_the_no_model_yardstick(name: &str, min_configurations: usize, metrics: &[&str]) {
    let (base, data) = real(name);
    let configurations: std::collections::BTreeSet<u32> = data.iter().map(|o| o.iteration).collect();
    assert!(configurations.len() >= min_configurations, "{name}: {} configurations", configurations.len());
    let validation = validate(&base, &data, Holdout::LeaveOneOut, &FitOptions::default()).unwrap();
    let errors = report(name, &validation);
    for metric in metrics {
        let twin = errors[*metric].0;
        let naive = validation.naive_median_ape[*metric];
        assert!(
            twin < naive,
            "{name}: the twin's held-out {metric} error {twin:.1}% is not below the no-model {naive:.1}%"
        );
    }
}

const TARGET_METRICS: &[&str] = &["output_throughput", "tpot.mean", "ttft.p50"];

#[test]
fn on_real_llamacpp_the_twin_predicts_held_out_configurations_better_than_no_model() {
    beats_the_no_model_yardstick("llamacpp-smollm2.db", 12, TARGET_METRICS);
}

#[test]
fn on_real_vllm_with_the_tiny_model_the_twin_predicts_held_out_configurations_better_than_no_model() {
    beats_the_no_model_yardstick("vllm-cpu-tiny.db", 19, TARGET_METRICS);
}

/// The data set the model was NOT designed on (measured after the model and its ridge were fixed on
/// the two above). There the twin beats the yardstick on TTFT only: leave-one-out over its 24
/// configurations, output throughput and TPOT were 19.2% and 20.5% against the yardstick's 17.6% and
/// 13.4% when this test was written, a miss reported in `benches/README.md` rather than tuned away here.
#[test]
fn on_real_vllm_with_smollm2_the_twin_predicts_held_out_ttft_better_than_no_model() {
    beats_the_no_model_yardstick("vllm-cpu-smollm2.db", 24, &["ttft.p50", "ttft.p99"]);
}

/// Capacity on a real engine, held out: 8 configurations of llama.cpp ranked by the highest rate
/// whose TTFT p99 held 1 s. Every held-out configuration gets a capacity prediction, checked against
/// its measured one. How far off it is was recorded, not tuned: leave-one-out gave a median APE of
/// 100% against the no-model yardstick's 4.1% when the set was taken (the twin judged each rate by
/// a 400-request steady state, where the real search judges ten-odd requests from an idle server);
/// 44.7% once the twin's search followed the real one's protocol, still far above the yardstick
/// (see `benches/README.md`).
#[test]
fn on_real_llamacpp_capacity_every_held_out_configuration_is_predicted_against_its_measured_capacity() {
    let capacity = autodebug_core::CAPACITY_METRIC;
    let (base, data) = real("llamacpp-smollm2-capacity.db");
    let measured: Vec<&Observation> = data.iter().filter(|o| o.capacity.is_some()).collect();
    let configurations: std::collections::BTreeSet<u32> = measured.iter().map(|o| o.iteration).collect();
    assert_eq!(configurations.len(), 8, "one capacity plan measured per configuration");
    assert!(measured.iter().all(|o| o.capacity.as_ref().is_some_and(|(_, rate)| *rate > 0.5)), "every one held a rate");
    let validation = validate(&base, &data, Holdout::LeaveOneOut, &FitOptions::default()).unwrap();
    report("llamacpp-smollm2-capacity.db", &validation);
    let points: Vec<_> = validation.points.iter().filter(|p| p.measured.contains_key(capacity)).collect();
    assert_eq!(points.len(), 8, "{points:?}");
    for point in points {
        assert!(point.ape.contains_key(capacity), "no capacity error for iteration {}", point.iteration);
        println!(
            "iteration {}: capacity predicted {:?}, measured {:.3} req/s ({})",
            point.iteration,
            point.predicted.get(capacity),
            point.measured[capacity],
            point.flags
        );
    }
    assert!(validation.median_ape.contains_key(capacity) && validation.naive_median_ape.contains_key(capacity));
}

/// Capacity held out across data sets: a twin fitted to all 8 configurations of the first capacity
/// set (seed 7) predicts the 8 of a second (seed 11), measured after the twin's capacity search was
/// made to follow the real search's protocol (short screening steps from an idle server, judged by
/// the share of requests over the bound). That change was made looking at the first set only; the
/// second is its check. Both sets' capacities sit within about ±20% of each other, so the
/// no-model yardstick (the first set's median) is hard to beat, and the figures are reported
/// against it in `benches/README.md`.
#[test]
fn on_real_llamacpp_a_twin_of_one_capacity_set_predicts_the_capacities_of_another() {
    let capacity = autodebug_core::CAPACITY_METRIC;
    let (base, first) = real("llamacpp-smollm2-capacity.db");
    let (_, mut second) = real("llamacpp-smollm2-capacity-b.db");
    let offset = first.iter().map(|o| o.iteration).max().unwrap();
    for observation in &mut second {
        observation.iteration += offset;
    }
    let held: std::collections::BTreeSet<u32> = second.iter().map(|o| o.iteration).collect();
    assert_eq!(held.len(), 8, "the second set holds 8 configurations");
    let data: Vec<Observation> = first.into_iter().chain(second).collect();
    let validation = validate(&base, &data, Holdout::Last(held.len()), &FitOptions::default()).unwrap();
    report("llamacpp-smollm2-capacity-b.db, fitted on the first set", &validation);
    let points: Vec<_> = validation.points.iter().filter(|p| p.measured.contains_key(capacity)).collect();
    assert_eq!(points.len(), 8, "{points:?}");
    for point in &points {
        println!(
            "iteration {}: capacity predicted {:?}, measured {:.3} req/s ({})",
            point.iteration - offset,
            point.predicted.get(capacity),
            point.measured[capacity],
            point.flags
        );
    }
    let predicted_zero = points.iter().filter(|p| p.predicted.get(capacity).is_none_or(|rate| *rate <= 0.0)).count();
    assert!(predicted_zero < points.len() / 2, "{predicted_zero} of {} predicted to hold no rate", points.len());
    assert!(validation.median_ape.contains_key(capacity) && validation.naive_median_ape.contains_key(capacity));
}

/// The twin as the loop uses it, on runs nobody had seen: fitted to the first sitting of the SmolLM2
/// session (12 configurations), it predicts the 12 of the second sitting, measured hours later.
/// TTFT must beat the yardstick there too (46.3% / 34.9% against 87.4% / 69.7% when this was written).
#[test]
fn on_real_vllm_with_smollm2_a_twin_of_the_first_sitting_predicts_the_second_sittings_ttft() {
    let (base, data) = real("vllm-cpu-smollm2.db");
    let validation = validate(&base, &data, Holdout::Last(12), &FitOptions::default()).unwrap();
    let errors = report("vllm-cpu-smollm2.db, second sitting", &validation);
    for metric in ["ttft.p50", "ttft.p99"] {
        let (twin, naive) = (errors[metric].0, validation.naive_median_ape[metric]);
        assert!(twin < naive, "the second sitting's {metric}: twin {twin:.1}% is not below the no-model {naive:.1}%");
    }
}
