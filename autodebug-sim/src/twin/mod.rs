//! A calibrated twin of one real deployment.
//!
//! The built-in engine model is calibrated on published GPU figures; a twin is fitted to the
//! user's own engine instead. It is a continuous-batching scheduler whose caps and budgets come
//! from the engine's flags (vLLM's `--max-num-seqs`, `--max-num-batched-tokens`, chunked prefill
//! and prefix caching; llama.cpp's slots, `--batch-size`/`--ubatch-size` and continuous batching),
//! and whose step cost, `fixed + per prefill token + per decoding sequence + per context token`,
//! is fitted ([`fit`]) to measured iterations of that deployment. Flags the scheduler does not
//! model (`--dtype`, `--threads`, ...) become fitted cost multipliers per value seen; a value
//! never measured keeps multiplier 1 and the prediction says so ([`Prediction::unseen`]).
//!
//! Closed-loop schedules do not depend on step durations, so a prediction is a pure function of
//! the costs and [`fit`] converges in a few Levenberg–Marquardt steps; [`validate`] measures the
//! twin's error on iterations it was not fitted to. [`TwinEngine`] steps the same scheduler one
//! request at a time, which is how the simulator's server serves a twin in real time
//! (`autodebug sim serve --twin twin.yaml`).
//!
//! ```
//! use autodebug_core::{EngineKind, LaunchFlags, Platform};
//! use autodebug_sim::SimWorkload;
//! use autodebug_sim::twin::{StepCosts, Twin};
//!
//! let cpu = Platform::Cpu { cores: 2, numa_nodes: 1, bf16: false };
//! let mut twin = Twin::new(EngineKind::Vllm, "tiny-llama", Twin::defaults_for(EngineKind::Vllm, &cpu));
//! twin.costs = StepCosts { step_us: 4000.0, prefill_token_us: 20.0, decode_seq_us: 300.0, context_token_ns: 10.0, request_ms: 2.0 };
//! let workload = SimWorkload::sequential(8, 128, 64).with_concurrency(16);
//! let flags = |text: &str| LaunchFlags::parse_args(&text.split_whitespace().collect::<Vec<_>>()).unwrap();
//! let wide = twin.predict(&flags(""), &workload).unwrap();
//! let narrow = twin.predict(&flags("--max-num-seqs 4"), &workload).unwrap();
//! assert!(narrow.metrics["ttft.p50"] > wide.metrics["ttft.p50"], "4 slots queue 16 streams");
//! ```

mod engine;
mod fit;
mod observe;
mod planner;
mod scheduler;
mod validate;

use std::collections::BTreeMap;
use std::path::Path;

use autodebug_core::{BenchPlan, CapacityGoal, EngineKind, LaunchFlags, Platform, SearchSpace};
use serde::{Deserialize, Serialize};

use crate::simulate::SimWorkload;

pub use engine::TwinEngine;
pub use fit::{FitOptions, fit};
pub use observe::{Observation, observations, workload_of};
pub use planner::{PREDICTED_SIGNAL, TWIN_RULE, TwinCheck, TwinPlanner, TwinSearch, twin_checks};
pub use validate::{Holdout, HoldoutPoint, Validation, validate};

/// The metrics a twin predicts, under the bench's names.
pub const PREDICTED_METRICS: &[&str] =
    &["ttft.p50", "ttft.p99", "tpot.mean", "itl.p99", "output_throughput", "e2e.mean"];

/// A fitted twin, as `twin.yaml` holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Twin {
    pub engine: EngineKind,
    /// The model served when the data was measured (a twin is only good for that model).
    pub model: String,
    /// The engine's effective defaults for the knobs the scheduler models, on the platform the data
    /// came from (vLLM on a CPU defaults to 128 sequences and 2048 batched tokens, on a GPU 256/8192).
    pub defaults: BTreeMap<String, String>,
    pub costs: StepCosts,
    /// Multipliers of flag values the scheduler does not model, fitted per value seen.
    #[serde(default)]
    pub factors: Vec<CostFactor>,
    /// Each bench plan's requests as the server counted them, by plan name.
    #[serde(default)]
    pub plans: BTreeMap<String, PlanShape>,
    /// What it was fitted on and how well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fitted_on: Option<FitProvenance>,
}

/// One engine step's cost: `step_us` per physical forward pass, plus `prefill_token_us` per prompt
/// token computed, `decode_seq_us` per sequence decoding a token and `context_token_ns` per KV
/// token those sequences attend to; `request_ms` is the per-request path outside the scheduler
/// (HTTP, tokenizing, detokenizing, streaming).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepCosts {
    pub step_us: f64,
    pub prefill_token_us: f64,
    pub decode_seq_us: f64,
    pub context_token_ns: f64,
    pub request_ms: f64,
}

impl Default for StepCosts {
    fn default() -> Self {
        StepCosts {
            step_us: 1000.0,
            prefill_token_us: 10.0,
            decode_seq_us: 100.0,
            context_token_ns: 1.0,
            request_ms: 1.0,
        }
    }
}

/// A bench plan's requests as the server counted them (a chat template adds prompt tokens; a
/// tokenizer may count several times the bench's estimate) and how many prompt tokens its prefix
/// cache serves when the cache is on: reported by the server, or fitted where it reports none.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanShape {
    pub prompt_tokens: u32,
    pub output_tokens: u32,
    pub cached_prompt_tokens: u32,
    /// The prompt length the bench asked for, in its own tokens (absent in twins fitted before it
    /// was recorded): with `prompt_tokens`, how many engine tokens a client token becomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_prompt_tokens: Option<u32>,
}

impl PlanShape {
    pub(crate) fn cached_share(&self) -> f64 {
        f64::from(self.cached_prompt_tokens) / f64::from(self.prompt_tokens.max(1))
    }
}

/// Which part of a step a flag's value scales. Every flag value the scheduler does not model gets a
/// multiplier on each part it can touch, since flags differ in what they slow: on the CPU engines
/// here, thread binding moves the per-step overhead and precision the per-token work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactorScope {
    /// The fixed cost of each step or physical pass (scheduling, launches, thread synchronization).
    Overhead,
    /// Prompt processing, per token.
    Prefill,
    /// Decoding, per sequence and per context token.
    Decode,
}

impl FactorScope {
    pub const ALL: [FactorScope; 3] = [FactorScope::Overhead, FactorScope::Prefill, FactorScope::Decode];
}

/// A fitted multiplier of one flag value on one part of the step, e.g. `--dtype float16` × 2.1 on
/// decoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostFactor {
    pub flag: String,
    pub value: String,
    pub scope: FactorScope,
    pub multiplier: f64,
}

/// The data a twin was fitted on, and its residual error there.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitProvenance {
    pub session: String,
    pub iterations: Vec<u32>,
    pub observations: usize,
    /// Median absolute percentage error on the fitted observations, per metric.
    pub fit_median_ape: BTreeMap<String, f64>,
}

/// What the twin predicts for one configuration and workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// Metrics under the bench's names (`ttft.p50`, `output_throughput`, ...).
    pub metrics: BTreeMap<String, f64>,
    /// `flag=value` pairs the twin never saw measured: their multiplier is 1, a guess.
    pub unseen: Vec<String>,
}

/// Why a twin could not be built, loaded or asked.
#[derive(Debug, thiserror::Error)]
pub enum TwinError {
    #[error("twin file {path}: {message}")]
    File { path: String, message: String },
    #[error("cannot fit a twin: {0}")]
    Fit(String),
    #[error("the twin cannot run this configuration: {0}")]
    Infeasible(String),
}

impl Twin {
    /// The seed of [`Twin::predict`]'s runs: a prediction is one fixed draw of prompts and arrivals.
    pub const PREDICTION_SEED: u64 = 0x7477_696e;

    /// An unfitted twin with default costs.
    pub fn new(engine: EngineKind, model: impl Into<String>, defaults: BTreeMap<String, String>) -> Self {
        Twin {
            engine,
            model: model.into(),
            defaults,
            costs: StepCosts::default(),
            factors: Vec::new(),
            plans: BTreeMap::new(),
            fitted_on: None,
        }
    }

    /// The workload `plan` sends, with the lengths and cache reuse the fitted data showed for a plan
    /// of that name (as given when the twin has not seen it).
    pub fn workload(&self, plan: &BenchPlan) -> SimWorkload {
        self.shaped(&plan.name, workload_of(plan))
    }

    /// `workload` with the lengths and cache reuse fitted for the plan named `plan`.
    pub(crate) fn shaped(&self, plan: &str, mut workload: SimWorkload) -> SimWorkload {
        if let Some(shape) = self.plans.get(plan) {
            workload.prompt_tokens = shape.prompt_tokens;
            workload.output_tokens = shape.output_tokens;
            workload.shared_prefix_tokens = shape.cached_prompt_tokens;
        }
        workload
    }

    /// Engine tokens per client token, the median over the fitted plans (1 when none recorded
    /// what it sent): a served twin counts a request's prompt as the fitted engine did.
    pub fn prompt_scale(&self) -> f64 {
        let mut ratios: Vec<f64> = self
            .plans
            .values()
            .filter_map(|shape| {
                let sent = shape.sent_prompt_tokens.filter(|s| *s > 0)?;
                Some(f64::from(shape.prompt_tokens) / f64::from(sent))
            })
            .collect();
        if ratios.is_empty() {
            return 1.0;
        }
        ratios.sort_by(f64::total_cmp);
        ratios[ratios.len() / 2]
    }

    /// The engine's effective defaults on `platform`: the catalog's defaults for every knob, plus
    /// what the engine picks itself there (vLLM's V1 engine: 128 sequences and 2048 batched tokens on
    /// a CPU, 256/8192 on a GPU; llama-server: 4 slots for its automatic `--parallel -1`, a 2048/512
    /// logical/physical batch, and one thread per core for generation and prompt processing).
    /// A flag set to its default is the default: it gets no multiplier of its own.
    pub fn defaults_for(engine: EngineKind, platform: &Platform) -> BTreeMap<String, String> {
        let mut defaults: BTreeMap<String, String> = SearchSpace::for_platform(engine, platform)
            .knobs
            .iter()
            .filter_map(|knob| knob.default.clone().map(|value| (knob.flag.clone(), value)))
            .collect();
        let cpu = matches!(platform, Platform::Cpu { .. });
        defaults.extend(scheduler::defaults(engine, cpu));
        if let (EngineKind::LlamaCpp, Platform::Cpu { cores, .. }) = (engine, platform) {
            defaults.insert("--threads".into(), cores.to_string());
            defaults.insert("--threads-batch".into(), cores.to_string());
        }
        defaults
    }

    /// Reads a twin written by [`Twin::save`]; the error names the file and what is wrong.
    pub fn load(path: &Path) -> Result<Twin, TwinError> {
        let file = |message: String| TwinError::File { path: path.display().to_string(), message };
        let text = std::fs::read_to_string(path).map_err(|e| file(format!("cannot read it: {e}")))?;
        let twin: Twin = serde_yaml::from_str(&text)
            .map_err(|e| file(format!("not a twin ({e}); write one with `autodebug twin fit`")))?;
        twin.check().map_err(file)?;
        Ok(twin)
    }

    pub fn save(&self, path: &Path) -> Result<(), TwinError> {
        let file = |message: String| TwinError::File { path: path.display().to_string(), message };
        let text = serde_yaml::to_string(self).map_err(|e| file(e.to_string()))?;
        std::fs::write(path, text).map_err(|e| file(format!("cannot write it: {e}")))
    }

    fn check(&self) -> Result<(), String> {
        let c = &self.costs;
        let costs = [
            ("step_us", c.step_us),
            ("prefill_token_us", c.prefill_token_us),
            ("decode_seq_us", c.decode_seq_us),
            ("context_token_ns", c.context_token_ns),
            ("request_ms", c.request_ms),
        ];
        for (name, value) in costs {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("`costs.{name}` is {value}; costs are finite and not negative"));
            }
        }
        if let Some(f) = self.factors.iter().find(|f| !(f.multiplier.is_finite() && f.multiplier > 0.0)) {
            return Err(format!(
                "the factor of `{} {}` is {}; multipliers are positive",
                f.flag, f.value, f.multiplier
            ));
        }
        Ok(())
    }

    /// Predicts `workload` on the engine launched with `flags` (the tuned flags, as a plan sets them).
    pub fn predict(&self, flags: &LaunchFlags, workload: &SimWorkload) -> Result<Prediction, TwinError> {
        let schedule = scheduler::Schedule::from_flags(self.engine, flags, &self.defaults)?;
        let (scales, unseen) = self.scales(flags);
        let run = scheduler::run(&schedule, &self.costs, scales, workload, Self::PREDICTION_SEED)?;
        Ok(Prediction { metrics: run.metrics(), unseen })
    }

    /// The capacity of the engine launched with `flags` under `goal`, on `workload`'s requests:
    /// [`crate::simulated_capacity`] on this twin, its metrics those of the rate that held plus
    /// `capacity`, `capacity_broke_at` and `capacity_steps`.
    pub fn predict_capacity(
        &self,
        flags: &LaunchFlags,
        workload: &SimWorkload,
        goal: &CapacityGoal,
    ) -> Result<Prediction, TwinError> {
        scheduler::Schedule::from_flags(self.engine, flags, &self.defaults)?;
        let (_, unseen) = self.scales(flags);
        let found = crate::simulated_capacity(&self.launch(flags), workload, goal, Self::PREDICTION_SEED);
        Ok(Prediction { metrics: found.all_metrics(), unseen })
    }

    /// This twin launched with `flags`, for [`crate::simulate`]: its runs are the ones
    /// [`Twin::predict`] summarizes, with the seed the caller gives.
    ///
    /// ```
    /// # use autodebug_core::{EngineKind, LaunchFlags, Platform};
    /// # use autodebug_sim::twin::Twin;
    /// use autodebug_sim::{SimWorkload, simulate};
    /// # let cpu = Platform::Cpu { cores: 2, numa_nodes: 1, bf16: false };
    /// let twin = Twin::new(EngineKind::Vllm, "tiny-llama", Twin::defaults_for(EngineKind::Vllm, &cpu));
    /// let flags = LaunchFlags::parse_args(&["--max-num-seqs", "4"]).unwrap();
    /// let workload = SimWorkload::sequential(16, 128, 32).with_concurrency(8);
    /// let result = simulate(&twin.launch(&flags), &workload, 7);
    /// assert!(!result.failed && result.e2e_ms.len() == 16);
    /// let predicted = twin.predict(&flags, &workload).unwrap();
    /// let seeded = simulate(&twin.launch(&flags), &workload, Twin::PREDICTION_SEED).metrics();
    /// assert_eq!(seeded["output_throughput"], predicted.metrics["output_throughput"]);
    /// ```
    pub fn launch(&self, flags: &LaunchFlags) -> LaunchedTwin<'_> {
        LaunchedTwin { twin: self, flags: flags.clone() }
    }

    /// The `flag=value` pairs of `flags` the fitting data never held: a prediction guesses a
    /// multiplier of 1 for each.
    pub fn unseen(&self, flags: &LaunchFlags) -> Vec<String> {
        self.scales(flags).1
    }

    /// The step-cost scales `flags` imply: the product of the multipliers of their values.
    fn scales(&self, flags: &LaunchFlags) -> (scheduler::Scales, Vec<String>) {
        let mut scales = scheduler::Scales::default();
        let mut unseen = Vec::new();
        for (flag, value, scopes) in scheduler::factor_values(self.engine, flags, &self.defaults) {
            let mut seen = false;
            for factor in
                self.factors.iter().filter(|f| f.flag == flag && f.value == value && scopes.contains(&f.scope))
            {
                scales.apply(factor.scope, factor.multiplier);
                seen = true;
            }
            if !seen {
                unseen.push(format!("{flag}={value}"));
            }
        }
        (scales, unseen)
    }
}

/// A twin launched with one configuration's flags: what [`crate::simulate`] runs.
#[derive(Debug, Clone)]
pub struct LaunchedTwin<'a> {
    twin: &'a Twin,
    flags: LaunchFlags,
}

impl crate::simulate::Simulated for LaunchedTwin<'_> {
    fn simulate(&self, workload: &SimWorkload, seed: u64) -> crate::SimResult {
        let run =
            scheduler::Schedule::from_flags(self.twin.engine, &self.flags, &self.twin.defaults).and_then(|schedule| {
                scheduler::run(&schedule, &self.twin.costs, self.twin.scales(&self.flags).0, workload, seed)
            });
        match run {
            Ok(run) => run.into_result(),
            Err(error) => crate::SimResult::failure(error.to_string()),
        }
    }
}
