//! The tuning suite: how fast each planner finds the best configuration, measured on the
//! simulator's virtual clock.
//!
//! Each [`Scenario`] is a model on a GPU under a workload, an objective with constraints, and a
//! discretized space of knobs: six hand-written ones ([`scenarios`]) and any number drawn from a
//! seed ([`generate()`]). The suite first finds the TRUE optimum by measuring every configuration
//! of the space noise-free in virtual time, then drives each planner through the [`Planner`]
//! trait with a [`History`] it builds itself, exactly as the loop would: every iteration carries
//! NOISY metrics (see [`noise`]: a fresh draw per (run seed, evaluation index), spread as measured
//! seed to seed), a `DeployFailed` status when the engine would not start, and an
//! [`Analysis`](autodebug_core::Analysis) made by the [`RuleAnalyzer`] from the telemetry a real
//! SGLang exports (Prometheus gauges and counters, startup attributes, the engine's error lines),
//! never the model's internals.
//!
//! Every planner searches the scenario's space: a proposal off its ladder is snapped to the
//! nearest level (numeric knobs), and one that cannot be (a categorical value not among the
//! levels, or a configuration the catalog rejects) is counted as invalid and not measured. A run
//! "reaches" the optimum at its first evaluation whose TRUE value is within 2% of it.
//!
//! ```
//! use autodebug_sim::tune_suite::{PlannerChoice, SuiteOptions, run_suite, scenarios};
//!
//! let options = SuiteOptions {
//!     planners: vec![PlannerChoice::Random],
//!     seeds: 1,
//!     budget: 3,
//!     scenarios: vec!["qwen-chat-latency".into()],
//!     limit_space: Some(2),
//!     ..SuiteOptions::default()
//! };
//! let report = run_suite(&options).unwrap();
//! assert_eq!(report.rows.len(), 1);
//! assert!(scenarios().len() >= 6);
//! ```

pub mod eval;
pub mod generate;
pub mod noise;

mod bench;
mod drive;
mod external;
mod handwritten;
mod landscape;
mod report;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Mutex;

use autodebug_core::rules::RulePlanner;
use autodebug_core::search::{BayesPlanner, GridPlanner, HybridPlanner, OneKnobPlanner, RandomPlanner};
use autodebug_core::{Error, Objective, Planner, Platform, Result};

use crate::twin::{Twin, TwinPlanner, TwinSearch};
// Named in the module docs only; the planner runs that use them live in `drive`.
#[cfg(doc)]
use autodebug_core::{History, rules::RuleAnalyzer};
use serde::Serialize;

use bench::Bench;
use drive::{Trace, run_planner};
use external::external_trace;
use handwritten::{dims, scenario};
use landscape::measure_all;
use report::row_from;

pub use eval::{EvalAnswer, EvalRequest, Evaluator, describe};
pub use external::{ExternalEval, ExternalRun};
pub use generate::{generate, generated};
pub use handwritten::{Scenario, scenarios};
pub use landscape::{Landscape, landscape};
pub use noise::NoiseLevels;
pub use report::{
    Comparison, PlannerOverall, ScenarioSummary, SuiteReport, SuiteRow, SuiteSummary, Target, TargetCheck,
};

/// Seed of the noise-free reference run (its prompts) of every configuration.
const REFERENCE_SEED: u64 = 1;
/// How close to the optimum counts as found.
const WITHIN: f64 = 0.02;

fn within(objective: &Objective, optimum: f64, value: f64) -> bool {
    match objective.direction {
        autodebug_core::Direction::Minimize => value <= optimum + optimum.abs() * WITHIN,
        autodebug_core::Direction::Maximize => value >= optimum - optimum.abs() * WITHIN,
    }
}

/// A planner the suite can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlannerChoice {
    Rules,
    Grid,
    Random,
    Oat,
    Bayes,
    Hybrid,
    /// The hybrid for 3 evaluations, then twin-screened search ([`crate::twin::TwinPlanner`]): a
    /// twin fitted to the evaluations so far predicts the scenario's engine, which is not its model.
    Twin,
}

impl PlannerChoice {
    /// What `autodebug sim tune-suite` runs by default.
    pub const DEFAULT: [PlannerChoice; 5] =
        [PlannerChoice::Oat, PlannerChoice::Random, PlannerChoice::Bayes, PlannerChoice::Hybrid, PlannerChoice::Rules];

    pub const ALL: [PlannerChoice; 7] = [
        PlannerChoice::Rules,
        PlannerChoice::Grid,
        PlannerChoice::Random,
        PlannerChoice::Oat,
        PlannerChoice::Bayes,
        PlannerChoice::Hybrid,
        PlannerChoice::Twin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PlannerChoice::Rules => "rules",
            PlannerChoice::Grid => "grid",
            PlannerChoice::Random => "random",
            PlannerChoice::Oat => "oat",
            PlannerChoice::Bayes => "bayes",
            PlannerChoice::Hybrid => "hybrid",
            PlannerChoice::Twin => "twin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        PlannerChoice::ALL.into_iter().find(|p| p.as_str() == text.trim().to_ascii_lowercase())
    }

    fn build(self, scenario: &Scenario, seed: u64) -> Box<dyn Planner> {
        let space = &scenario.space;
        match self {
            PlannerChoice::Rules => Box::new(RulePlanner::new()),
            PlannerChoice::Grid => Box::new(GridPlanner::new().with_space(space.clone())),
            PlannerChoice::Random => Box::new(RandomPlanner::new(seed).with_space(space.clone())),
            PlannerChoice::Oat => Box::new(OneKnobPlanner::new().with_space(space.clone())),
            PlannerChoice::Bayes => Box::new(BayesPlanner::new(seed).with_space(space.clone())),
            PlannerChoice::Hybrid => Box::new(HybridPlanner::new(seed).with_space(space.clone())),
            PlannerChoice::Twin => {
                let engine = scenario.base.engine;
                let gpu = Platform::Gpu { name: scenario.gpu.clone(), count: 1 };
                let base = Twin::new(engine, scenario.model.clone(), Twin::defaults_for(engine, &gpu));
                let plans = vec![drive::bench_plan(&scenario.workload)];
                let inner = HybridPlanner::new(seed).with_space(space.clone());
                Box::new(
                    TwinPlanner::new(inner, plans, base)
                        .with_space(space.clone())
                        .with_search(TwinSearch { seed, ..TwinSearch::default() }),
                )
            }
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    pub planners: Vec<PlannerChoice>,
    /// Run seeds per (scenario, planner): each seeds the planner AND the measurement noise;
    /// medians are taken over them. Deterministic planners run on every seed too.
    pub seeds: u64,
    /// Evaluations per planner run (the baseline included).
    pub budget: usize,
    /// Scenario names to run (hand-written, or `gen-<seed>-<index>`); empty = the hand-written
    /// ones plus the generated ones.
    pub scenarios: Vec<String>,
    /// Keep only the first N levels of each knob (for quick runs and tests).
    pub limit_space: Option<usize>,
    /// Scenarios to draw with [`generate()`] and add to the hand-written ones.
    pub generate: usize,
    /// The seed they are drawn from.
    pub generate_seed: u64,
    /// Multiplier on the measured noise levels (1 = as measured, 0 = noise off).
    pub noise_scale: f64,
    /// Leave out the hand-written scenarios (only generated or named ones).
    pub skip_builtin: bool,
    /// Runs of planners outside this process, scored on the same truth.
    pub external: Vec<ExternalRun>,
}

impl Default for SuiteOptions {
    fn default() -> Self {
        SuiteOptions {
            planners: PlannerChoice::DEFAULT.to_vec(),
            seeds: 10,
            budget: 150,
            scenarios: Vec::new(),
            limit_space: None,
            generate: 0,
            generate_seed: 1,
            noise_scale: 1.0,
            skip_builtin: false,
            external: Vec::new(),
        }
    }
}

fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 16)
}

/// Runs `jobs` on a few threads; results in job order.
fn parallel<T: Send, R: Send>(jobs: Vec<T>, work: impl Fn(T) -> R + Sync) -> Vec<R> {
    let queue = Mutex::new(jobs.into_iter().enumerate().collect::<Vec<_>>());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..workers() {
            s.spawn(|| {
                loop {
                    let job = queue.lock().ok().and_then(|mut q| q.pop());
                    let Some((index, job)) = job else { break };
                    let out = work(job);
                    if let Ok(mut r) = results.lock() {
                        r.push((index, out));
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// The scenarios `options` names: the hand-written ones (unless skipped) and the generated
/// ones, or exactly those named; with `limit_space` applied.
pub fn chosen_scenarios(options: &SuiteOptions) -> Result<Vec<Scenario>> {
    let mut pool: Vec<Scenario> = if options.skip_builtin { Vec::new() } else { scenarios() };
    pool.extend(generate(options.generate, options.generate_seed));
    let mut chosen: Vec<Scenario> = if options.scenarios.is_empty() {
        pool
    } else {
        let mut out = Vec::new();
        for name in &options.scenarios {
            match pool.iter().find(|s| &s.name == name).cloned().or_else(|| generated(name)) {
                Some(s) => out.push(s),
                None => {
                    let names: Vec<String> = scenarios().into_iter().map(|s| s.name).collect();
                    return Err(Error::config(
                        "--scenarios",
                        format!(
                            "no scenario is named `{name}`; known: {}, or gen-<seed>-<index> for a generated one",
                            names.join(", ")
                        ),
                    ));
                }
            }
        }
        out
    };
    if chosen.is_empty() {
        return Err(Error::config(
            "--scenarios",
            "no scenario to run: --skip-builtin needs --generate N or named scenarios",
        ));
    }
    if let Some(limit) = options.limit_space {
        for s in &mut chosen {
            for d in &mut s.space.dims {
                d.levels.truncate(limit.max(1));
            }
        }
    }
    Ok(chosen)
}

/// Runs the suite; see the [module docs](self).
pub fn run_suite(options: &SuiteOptions) -> Result<SuiteReport> {
    let chosen = chosen_scenarios(options)?;
    let benches: Vec<Bench> = parallel(chosen.clone(), |s| Bench::new(s, options.noise_scale));
    let maps = measure_all(&benches);
    let mut summaries = Vec::new();
    for (bench, map) in benches.iter().zip(&maps) {
        let s = &bench.scenario;
        let Some((best, optimum)) = map.optimum(&s.objective) else {
            return Err(Error::Plan(format!(
                "scenario `{}`: no configuration of its space is feasible; loosen its constraints",
                s.name
            )));
        };
        let within = map.within_count(&s.objective, optimum);
        summaries.push(ScenarioSummary {
            name: s.name.clone(),
            description: s.description.clone(),
            objective: s.objective.describe(),
            knobs: s.space.dims.len(),
            configurations: map.points.len(),
            infeasible_configurations: map.points.iter().filter(|(_, v)| v.is_none()).count(),
            within_2pct_configurations: within,
            within_2pct_share: within as f64 / map.points.len().max(1) as f64,
            random_expected_evals: (map.points.len() as f64 + 1.0) / (within as f64 + 1.0),
            optimum,
            optimum_config: s.space.describe(best),
            baseline: bench.value(&s.base),
            noise_sd: bench.noise.sd(&s.objective.metric),
            noise_source: bench.noise.source.clone(),
            generated: s.name.starts_with("gen-"),
            hybrid_vs_random: None,
        });
    }

    let seeds = options.seeds.max(1);
    let budget = options.budget.max(1);
    let jobs: Vec<(usize, PlannerChoice, u64)> = (0..chosen.len())
        .flat_map(|i| options.planners.iter().flat_map(move |p| (0..seeds).map(move |seed| (i, *p, seed))))
        .collect();
    let traces = parallel(jobs.clone(), |(i, choice, seed)| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| Error::Plan(format!("cannot start a runtime for the suite: {e}")))?;
        let planner = choice.build(&chosen[i], seed);
        runtime.block_on(run_planner(planner.as_ref(), &benches[i], budget, seed))
    });

    let mut rows = Vec::new();
    for (i, s) in chosen.iter().enumerate() {
        for choice in &options.planners {
            let mut mine = Vec::new();
            for ((j, p, _), trace) in jobs.iter().zip(&traces) {
                if *j != i || p != choice {
                    continue;
                }
                match trace {
                    Ok(t) => mine.push(t),
                    Err(e) => {
                        return Err(Error::Plan(format!("scenario `{}`, planner `{}`: {e}", s.name, choice.as_str())));
                    }
                }
            }
            rows.push(row_from(s, &summaries[i], choice.as_str(), &mine, seeds, budget));
        }
        let mut outside: BTreeMap<&str, Vec<Trace>> = BTreeMap::new();
        for run in options.external.iter().filter(|r| r.scenario == s.name) {
            outside.entry(run.planner.as_str()).or_default().push(external_trace(&benches[i], run, budget));
        }
        for (planner, traces) in &outside {
            let refs: Vec<&Trace> = traces.iter().collect();
            rows.push(row_from(s, &summaries[i], planner, &refs, traces.len() as u64, budget));
        }
    }
    let mut report = SuiteReport { scenarios: summaries, rows };
    let vs_random: Vec<Option<f64>> = report
        .rows
        .iter()
        .map(|row| {
            let random = report.row(&row.scenario, "random")?.evals_or_past_budget();
            row.evals_to_within_2pct.map(|evals| evals / random)
        })
        .collect();
    for (row, ratio) in report.rows.iter_mut().zip(vs_random) {
        row.vs_random = ratio;
    }
    for s in &mut report.scenarios {
        s.hybrid_vs_random =
            report.rows.iter().find(|r| r.scenario == s.name && r.planner == "hybrid").and_then(|r| r.vs_random);
    }
    Ok(report)
}
