//! How long fitting and validating a twin takes: on each real data set kept in the project, and on a
//! 30-iteration session (the issue's yardstick) drawn from the vLLM CPU catalog, measured by a twin
//! fitted to the real vLLM data with 5% noise on every metric. Run it pinned to one core:
//!
//! ```text
//! cargo build --release -p autodebug-benches --bin twin_fit
//! taskset -c 0 ./target/release/twin_fit [--reps 3]
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use autodebug_benches::median;
use autodebug_core::rng::SplitMix64;
use autodebug_core::search::TuneSpace;
use autodebug_core::store::Store;
use autodebug_core::{BenchPlan, EngineKind, Platform, SearchSpace, ServiceSpec};
use autodebug_sim::twin::{FitOptions, Holdout, Observation, PREDICTED_METRICS, Twin, fit, observations, validate};

const CPU: Platform = Platform::Cpu { cores: 2, numa_nodes: 1, bf16: true };

fn real(dir: &Path, name: &str) -> (Twin, Vec<Observation>, Vec<BenchPlan>) {
    let store = Store::open(&dir.join(name)).expect("the real data set opens");
    let session = store.find_session(None).expect("one session");
    let history = store.history(session.id).expect("its history");
    let plans: Vec<BenchPlan> = serde_json::from_value(session.config["bench"].clone()).expect("bench plans");
    let first = history.iterations.iter().find(|i| i.is_ok()).expect("a served iteration");
    let base = Twin::new(first.spec.engine, first.spec.model.clone(), Twin::defaults_for(first.spec.engine, &CPU));
    (base, observations(&plans, &history.iterations), plans)
}

/// `count` configurations drawn from the vLLM CPU catalog, measured by `truth` with noise.
fn synthetic(truth: &Twin, plans: &[BenchPlan], count: usize) -> Vec<Observation> {
    let catalog = SearchSpace::for_platform(EngineKind::Vllm, &CPU);
    let start = ServiceSpec::new("twin-bench", EngineKind::Vllm, truth.model.clone());
    let tune = TuneSpace::from_space(&catalog, &start);
    let mut rng = SplitMix64::new(7);
    let mut out = Vec::new();
    let mut number = 0;
    while number < count as u32 {
        let config = tune.canonical(tune.dims.iter().map(|d| rng.below(d.len())).collect());
        let Ok(spec) = tune.to_spec(&catalog, &start, &config) else { continue };
        // A configuration the engine would refuse (a prompt larger than an unchunked step) is a
        // failed deploy in a real session: not an observation.
        let predictions: Option<Vec<_>> =
            plans.iter().map(|plan| truth.predict(&spec.flags, &truth.workload(plan)).ok()).collect();
        let Some(predictions) = predictions else { continue };
        number += 1;
        for (plan, prediction) in plans.iter().zip(predictions) {
            let measured = PREDICTED_METRICS
                .iter()
                .filter_map(|m| {
                    prediction.metrics.get(*m).map(|v| (m.to_string(), v * (1.0 + 0.05 * (2.0 * rng.next_f64() - 1.0))))
                })
                .collect();
            let workload = truth.workload(plan);
            out.push(Observation {
                iteration: number,
                plan: plan.name.clone(),
                flags: spec.flags.clone(),
                sent_prompt_tokens: plan.workload.prompt_tokens,
                workload,
                measured,
                capacity: None,
            });
        }
    }
    out
}

fn time(reps: usize, label: &str, base: &Twin, data: &[Observation]) {
    let iterations = data.iter().map(|o| o.iteration).collect::<std::collections::BTreeSet<_>>().len();
    let (mut fits, mut validations) = (Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..reps {
        let started = Instant::now();
        fit(base, data, &FitOptions::default()).expect("fits");
        fits.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        last = Some(validate(base, data, Holdout::LeaveOneOut, &FitOptions::default()).expect("validates"));
        validations.push(started.elapsed().as_secs_f64());
    }
    let v = last.expect("one rep");
    let fit_s = median(&mut fits).unwrap_or(f64::NAN);
    let validate_s = median(&mut validations).unwrap_or(f64::NAN);
    println!(
        "{label}: {iterations} iterations, {} observations: fit {fit_s:.3} s, leave-one-out {validate_s:.3} s, \
         together {:.3} s (median of {reps}); held-out median APE throughput {:.1}%, TPOT {:.1}%, TTFT p50 {:.1}%",
        data.len(),
        fit_s + validate_s,
        v.median_ape.get("output_throughput").copied().unwrap_or(f64::NAN),
        v.median_ape.get("tpot.mean").copied().unwrap_or(f64::NAN),
        v.median_ape.get("ttft.p50").copied().unwrap_or(f64::NAN),
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut reps = 3;
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--reps" => reps = args.next().and_then(|v| v.parse().ok()).unwrap_or(reps),
            _ => {
                eprintln!("usage: twin_fit [--reps 3]");
                std::process::exit(2);
            }
        }
    }
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../autodebug-sim/tests/fixtures/real");
    for name in ["llamacpp-smollm2.db", "vllm-cpu-tiny.db", "vllm-cpu-smollm2.db"] {
        if !dir.join(name).exists() {
            println!("{name}: not in this checkout");
            continue;
        }
        let (base, data, _) = real(&dir, name);
        time(reps, name, &base, &data);
    }
    let (base, data, plans) = real(&dir, "vllm-cpu-tiny.db");
    let truth = fit(&base, &data, &FitOptions::default()).expect("fits");
    let session = synthetic(&truth, &plans, 30);
    time(reps, "30-iteration vLLM session (the real twin's answers, 5% noise)", &base, &session);
}
