//! Scenarios nobody tuned to: drawn from a seed.
//!
//! [`generate`] draws a model, a GPU, a workload (prompt and output lengths, an optional shared
//! prefix, closed-loop concurrency or an open-loop arrival rate), an objective with an optional
//! latency SLO, and 4-7 knobs of SGLang's catalog with 2-4 levels each. Levels are drawn
//! uniformly from a wide ladder per knob (the catalog's candidates plus the rest of the knob's
//! usual range) and always include the starting value: nothing is chosen for being harmful.
//! The SLO bound is the starting configuration's own noise-free value times a factor drawn in
//! [1.1, 2.5], so the start is feasible. An open-loop workload replays one arrival trace (the
//! reference seed's) in every run, as a benchmark replays a recorded trace.
//!
//! A draw is drawn again when its start does not run, or when it cannot tell planners apart
//! (see [`informative`]): its starting configuration is already within 2% of the optimum (every
//! planner then scores 1, the baseline), or more than [`MAX_WITHIN_SHARE`] of its space is within
//! 2% (uniform random search then expects under 10 evaluations, so a ratio target such as
//! "0.2x random's evaluations" would ask for the start or the very first move to be optimal and
//! the scenario measures luck, not search). The rule reads only the noise-free landscape, never
//! how any planner did on it.
//!
//! Scenario `index` of seed `seed` is named `gen-<seed>-<index>` and depends on nothing else,
//! so [`generated`] rebuilds it from its name alone.

use autodebug_core::{Comparison, Constraint, Objective};

use super::{Scenario, dims, scenario};
use crate::rng::{SplitMix64, seeded};
use crate::{EngineKind, SimConfig, SimWorkload, simulate};

/// A space larger than this drops levels until it fits, so a run stays in seconds.
const MAX_CONFIGURATIONS: usize = 1200;
const ATTEMPTS: u64 = 64;
/// The largest share of a generated space that may be within 2% of its optimum (see the
/// module docs for why 10%).
pub const MAX_WITHIN_SHARE: f64 = 0.10;

/// Every ladder a knob's levels are drawn from; the first value is the start.
const LADDERS: &[(&str, &[&str])] = &[
    ("--num-continuous-decode-steps", &["1", "2", "4", "8", "16", "32"]),
    ("--chunked-prefill-size", &["default", "256", "512", "1024", "2048", "4096", "8192", "16384"]),
    ("--max-running-requests", &["default", "4", "8", "16", "32", "64", "128", "256"]),
    ("--mem-fraction-static", &["default", "0.7", "0.75", "0.8", "0.85", "0.88", "0.9", "0.92", "0.95"]),
    ("--cuda-graph-max-bs", &["default", "4", "8", "16", "32", "64", "128", "256"]),
    ("--schedule-conservativeness", &["1.0", "0.3", "0.5", "0.8", "1.3", "1.6"]),
    ("--schedule-policy", &["fcfs", "lpm", "random", "dfs-weight", "lof"]),
    ("--attention-backend", &["default", "fa3", "flashinfer", "triton", "torch_native"]),
    ("--enable-mixed-chunk", &["false", "true"]),
    ("--disable-cuda-graph", &["false", "true"]),
    ("--disable-radix-cache", &["false", "true"]),
    ("--disable-overlap-schedule", &["false", "true"]),
];

const MODELS: &[&str] = &["qwen1.5-0.5b", "qwen2.5-7b", "llama-3.1-8b", "llama-3.1-70b"];
const GPUS: &[&str] = &["H100", "H200", "A100", "L4"];

/// `count` scenarios drawn from `seed` (fewer only if some index never drew a runnable start).
pub fn generate(count: usize, seed: u64) -> Vec<Scenario> {
    (0..count).filter_map(|i| generated_at(seed, i)).collect()
}

/// The generated scenario named `gen-<seed>-<index>`.
pub fn generated(name: &str) -> Option<Scenario> {
    let rest = name.strip_prefix("gen-")?;
    let (seed, index) = rest.split_once('-')?;
    generated_at(seed.parse().ok()?, index.parse().ok()?)
}

fn pick<'a, T>(rng: &mut SplitMix64, items: &'a [T]) -> &'a T {
    &items[(rng.next_u64() % items.len() as u64) as usize]
}

fn range(rng: &mut SplitMix64, low: usize, high: usize) -> usize {
    low + (rng.next_u64() % (high - low + 1) as u64) as usize
}

fn generated_at(seed: u64, index: usize) -> Option<Scenario> {
    let name = format!("gen-{seed}-{index}");
    (0..ATTEMPTS).find_map(|attempt| {
        let mut rng = seeded(
            seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (index as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ attempt,
        );
        draw(&mut rng, &name)
    })
}

/// One noise-free run of the flags' configuration: its metrics, `None` when it does not run.
fn run(
    gpu: &str,
    model: &str,
    flags: &[String],
    workload: &SimWorkload,
) -> Option<std::collections::BTreeMap<String, f64>> {
    let mut config = SimConfig::from_args(EngineKind::Sglang, gpu, model, flags).ok()?;
    config.noise = 0.0;
    let result = simulate(&config, workload, 1);
    (!result.failed && result.errors == 0).then(|| result.metrics())
}

fn draw(rng: &mut SplitMix64, name: &str) -> Option<Scenario> {
    let model = *pick(rng, MODELS);
    let gpu = *pick(rng, GPUS);
    let big = model == "llama-3.1-70b";
    let tp: u32 = if big { *pick(rng, &[4, 8]) } else { *pick(rng, &[1, 1, 1, 2]) };
    let prompt = *pick(rng, &[128u32, 256, 512, 1024, 2048, 4096, 8192]);
    let output = *pick(rng, &[32u32, 64, 128, 256, 512]);
    let concurrency = *pick(rng, &[1usize, 2, 4, 8, 16, 32, 64]);
    let mut workload = SimWorkload::sequential(48, prompt, output).with_concurrency(concurrency.max(1));
    if rng.next_f64() < 0.3 {
        let share = *pick(rng, &[0.5, 0.75, 0.9]);
        workload = workload.with_shared_prefix((prompt as f64 * share) as u32);
    }
    let tp_flag = vec!["--tp-size".to_string(), tp.to_string()];

    // Knobs: 4-7 distinct ones; with several GPUs the TP degree may be one of them.
    let mut pool: Vec<(&str, Vec<&str>)> = LADDERS.iter().map(|(f, l)| (*f, l.to_vec())).collect();
    if tp > 1 {
        let degrees: Vec<&str> =
            ["1", "2", "4", "8"].into_iter().filter(|d| d.parse::<u32>().is_ok_and(|d| d <= tp)).collect();
        let start = ["1", "2", "4", "8"].into_iter().find(|d| *d == tp.to_string())?;
        let mut ladder = vec![start];
        ladder.extend(degrees.into_iter().filter(|d| *d != start));
        pool.push(("--tp-size", ladder));
    }
    let count = range(rng, 4, 7);
    let mut chosen: Vec<(&str, Vec<&str>)> = Vec::new();
    // A 70B model does not fit one GPU: its TP degree is always searched (from the GPUs bought).
    if big && let Some(p) = pool.iter().position(|(f, _)| *f == "--tp-size") {
        chosen.push(pool.remove(p));
    }
    while chosen.len() < count && !pool.is_empty() {
        let i = (rng.next_u64() % pool.len() as u64) as usize;
        chosen.push(pool.remove(i));
    }
    let mut levels: Vec<(&str, Vec<&str>)> = chosen
        .into_iter()
        .map(|(flag, ladder)| {
            let (start, rest) = ladder.split_first().map(|(s, r)| (*s, r.to_vec())).unwrap_or(("default", Vec::new()));
            let mut rest = rest;
            let extra = range(rng, 1, 3.min(rest.len()));
            let mut picked = vec![start];
            for _ in 0..extra {
                let i = (rng.next_u64() % rest.len() as u64) as usize;
                picked.push(rest.remove(i));
            }
            (flag, picked)
        })
        .collect();
    while levels.iter().map(|(_, l)| l.len()).product::<usize>() > MAX_CONFIGURATIONS {
        let widest = levels.iter().enumerate().max_by_key(|(_, (_, l))| l.len()).map(|(i, _)| i)?;
        levels[widest].1.pop();
    }
    let searched_tp = levels.iter().any(|(f, _)| *f == "--tp-size");

    // The start must run; its truth sets the open-loop rate and the SLO.
    let start_flags: Vec<String> = if searched_tp || tp == 1 { Vec::new() } else { tp_flag.clone() };
    let mut start_args = start_flags.clone();
    for (flag, l) in &levels {
        match l[0] {
            "default" | "false" => {}
            "true" => start_args.push(flag.to_string()),
            v => start_args.extend([flag.to_string(), v.to_string()]),
        }
    }
    let closed = run(gpu, model, &start_args, &workload)?;
    let mut load = format!("concurrency {concurrency}");
    if rng.next_f64() < 0.25 {
        let capacity = run(gpu, model, &start_args, &workload.clone().with_concurrency(64))?;
        let rate = closed
            .get("request_throughput")
            .copied()
            .unwrap_or(0.0)
            .max(capacity.get("request_throughput").copied().unwrap_or(0.0) * (0.3 + 0.6 * rng.next_f64()));
        if rate > 0.0 {
            workload = workload.with_arrival_rate(rate).with_arrival_seed(super::REFERENCE_SEED);
            load = format!("Poisson arrivals at {rate:.2} req/s");
        }
    }
    let metrics = run(gpu, model, &start_args, &workload)?;
    let (metric, maximize) =
        *pick(rng, &[("e2e.mean", false), ("ttft.mean", false), ("tpot.mean", false), ("output_throughput", true)]);
    let mut objective = if maximize { Objective::maximize(metric) } else { Objective::minimize(metric) };
    objective =
        objective.with_constraint(Constraint { metric: "error_rate".into(), op: Comparison::AtMost, bound: 0.0 });
    let mut slo_text = String::new();
    if rng.next_f64() < 0.6 {
        let slo = *pick(rng, &["ttft.p99", "itl.p99", "e2e.p99"]);
        if slo != metric.replace(".mean", ".p99") || maximize {
            let bound = metrics.get(slo).copied()? * (1.1 + 1.4 * rng.next_f64());
            objective = objective.with_constraint(Constraint { metric: slo.into(), op: Comparison::AtMost, bound });
            slo_text = format!(" with {slo} <= {bound:.1}ms");
        }
    }
    let gpus = if searched_tp || tp > 1 { format!("{tp}x {gpu}") } else { format!("1x {gpu}") };
    let description = format!(
        "{model} on {gpus}, {} {prompt}-token prompts{}, {output}-token answers, {load}: {}{slo_text}",
        workload.requests,
        if workload.shared_prefix_tokens > 0 {
            format!(" sharing a {}-token prefix", workload.shared_prefix_tokens)
        } else {
            String::new()
        },
        objective.describe().split(" subject").next().unwrap_or_default(),
    );
    let refs: Vec<(&str, &[&str])> = levels.iter().map(|(f, l)| (*f, l.as_slice())).collect();
    let mut s = scenario(name, &description, gpu, model, workload, objective, dims(&refs));
    if !searched_tp && tp > 1 {
        s.base.flags.set("--tp-size", Some(tp.to_string()));
    }
    (s.space.dims.len() >= 4 && informative(&s)).then_some(s)
}

/// Whether `scenario` can tell planners apart: its start is not within 2% of the optimum and at
/// most [`MAX_WITHIN_SHARE`] of its space is (noise-free values; see the module docs).
pub fn informative(scenario: &Scenario) -> bool {
    let bench = super::Bench::new(scenario.clone(), 0.0);
    let Some(map) = super::measure_all(std::slice::from_ref(&bench)).pop() else {
        return false;
    };
    let Some((_, optimum)) = map.optimum(&scenario.objective) else {
        return false;
    };
    let share = map.within_count(&scenario.objective, optimum) as f64 / map.points.len().max(1) as f64;
    let start_is_near = bench.value(&scenario.base).is_some_and(|v| super::within(&scenario.objective, optimum, v));
    !start_is_near && share <= MAX_WITHIN_SHARE
}
