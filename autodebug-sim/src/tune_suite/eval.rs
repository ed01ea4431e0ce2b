//! An ask/tell interface: any optimizer measured on the suite's scale.
//!
//! `autodebug sim eval` reads one JSON [`EvalRequest`] a line and answers each with an
//! [`EvalAnswer`]: the metrics as measured (with the scenario's noise, drawn from the stream of
//! (seed, evaluation index) that the suite's own planners get), whether the engine started,
//! whether the objective's constraints held, and the objective's value. [`describe`] is the
//! space an optimizer searches.

use std::collections::{BTreeMap, HashMap};

use autodebug_core::{Direction, Error, Result, SearchSpace, ServiceSpec};
use serde::{Deserialize, Serialize};

use super::{Bench, Scenario, generated, scenarios};
use crate::EngineKind;

/// One evaluation asked for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalRequest {
    /// A hand-written scenario's name, or `gen-<seed>-<index>`.
    pub scenario: String,
    /// Flag -> level (`null` or `"default"`: unset); knobs left out keep their starting level.
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
    /// The run this evaluation belongs to: seeds its noise stream.
    #[serde(default)]
    pub seed: u64,
    /// The evaluation's index within its run (from 1); by default one more than the last one
    /// this process answered for (scenario, seed).
    #[serde(default)]
    pub eval: Option<u64>,
    /// Add the noise-free truth to the answer: for scoring a finished run, never for the optimizer.
    #[serde(default)]
    pub with_truth: bool,
}

/// The answer to one [`EvalRequest`].
#[derive(Debug, Clone, Serialize)]
pub struct EvalAnswer {
    pub scenario: String,
    pub seed: u64,
    pub eval: u64,
    /// The configuration is one of the scenario's space (when false, nothing was measured).
    pub valid: bool,
    /// The engine failed to start (its error in `error`).
    pub failed: bool,
    /// Started and met every constraint, as measured.
    pub feasible: bool,
    /// The objective's value as measured (`None` when it failed).
    pub value: Option<f64>,
    /// `minimize` or `maximize`.
    pub direction: &'static str,
    /// Each constraint's measured value minus its bound, signed so that > 0 breaks it
    /// (Optuna's `constraints_func` convention).
    pub constraint_violations: Vec<f64>,
    pub metrics: BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The noise-free objective value when feasible (only with `with_truth`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub true_value: Option<Option<f64>>,
}

/// A text level from a JSON value: strings as they are, numbers and booleans written out.
fn level_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) if s == "default" || s.is_empty() => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The spec of `config` in `scenario`'s space: every flag must be a searched knob and every
/// value one of its levels.
pub(crate) fn spec_of(
    scenario: &Scenario,
    catalog: &SearchSpace,
    config: &BTreeMap<String, serde_json::Value>,
) -> Result<ServiceSpec> {
    let space = &scenario.space;
    let mut levels = space
        .encode(catalog, &scenario.base.flags)
        .ok_or_else(|| Error::Plan(format!("scenario `{}`: its start is outside its space", scenario.name)))?;
    for (flag, value) in config {
        let Some(d) = space.dims.iter().position(|d| &d.flag == flag) else {
            let known: Vec<&str> = space.dims.iter().map(|d| d.flag.as_str()).collect();
            return Err(Error::config(
                "config",
                format!("`{flag}` is not searched in scenario `{}`; its knobs: {}", scenario.name, known.join(", ")),
            ));
        };
        let text = level_text(value);
        let dim = &space.dims[d];
        let exact = dim.levels.iter().position(|l| {
            l.as_deref() == text.as_deref()
                || l.as_deref()
                    .zip(text.as_deref())
                    .and_then(|(a, b)| Some(a.parse::<f64>().ok()? == b.parse::<f64>().ok()?))
                    .unwrap_or(false)
        });
        let Some(level) = exact else {
            let shown: Vec<&str> = dim.levels.iter().map(|l| l.as_deref().unwrap_or("default")).collect();
            return Err(Error::config(
                "config",
                format!("`{flag}` = {value} is not one of its levels: {}", shown.join(", ")),
            ));
        };
        levels[d] = level;
    }
    let canonical = space.canonical(levels.clone());
    space.to_spec(catalog, &scenario.base, &canonical)
}

/// Answers [`EvalRequest`]s, keeping each scenario's noise-free runs and noise levels.
pub struct Evaluator {
    benches: HashMap<String, Bench>,
    counters: HashMap<(String, u64), u64>,
    catalog: SearchSpace,
    noise_scale: f64,
}

impl Evaluator {
    /// `noise_scale` multiplies the measured noise levels (1 = as the suite measures).
    pub fn new(noise_scale: f64) -> Self {
        Evaluator {
            benches: HashMap::new(),
            counters: HashMap::new(),
            catalog: SearchSpace::for_engine(EngineKind::Sglang),
            noise_scale,
        }
    }

    fn bench(&mut self, name: &str) -> Result<&Bench> {
        if !self.benches.contains_key(name) {
            let scenario =
                scenarios().into_iter().find(|s| s.name == name).or_else(|| generated(name)).ok_or_else(|| {
                    let names: Vec<String> = scenarios().into_iter().map(|s| s.name).collect();
                    Error::config(
                        "scenario",
                        format!("no scenario is named `{name}`; known: {}, or gen-<seed>-<index>", names.join(", ")),
                    )
                })?;
            self.benches.insert(name.to_string(), Bench::new(scenario, self.noise_scale));
        }
        self.benches.get(name).ok_or_else(|| Error::Plan(format!("scenario `{name}` vanished")))
    }

    /// Answers one request; an unknown scenario is an error, a configuration outside the space
    /// an answer with `valid: false`.
    pub fn answer(&mut self, request: &EvalRequest) -> Result<EvalAnswer> {
        let key = (request.scenario.clone(), request.seed);
        let next = self.counters.get(&key).copied().unwrap_or(0) + 1;
        let eval = request.eval.unwrap_or(next);
        self.counters.insert(key, eval.max(next));
        let catalog = self.catalog.clone();
        let bench = self.bench(&request.scenario)?;
        let objective = &bench.scenario.objective;
        let direction = match objective.direction {
            Direction::Minimize => "minimize",
            Direction::Maximize => "maximize",
        };
        let mut answer = EvalAnswer {
            scenario: request.scenario.clone(),
            seed: request.seed,
            eval,
            valid: false,
            failed: false,
            feasible: false,
            value: None,
            direction,
            constraint_violations: Vec::new(),
            metrics: BTreeMap::new(),
            error: None,
            true_value: None,
        };
        let spec = match spec_of(&bench.scenario, &catalog, &request.config) {
            Ok(spec) => spec,
            Err(e) => {
                answer.error = Some(e.to_string());
                return Ok(answer);
            }
        };
        let (truth, seen) = bench.measure(&spec, request.seed, eval);
        answer.valid = true;
        answer.failed = truth.failure.is_some();
        answer.error = truth.failure.clone();
        answer.feasible = !answer.failed && objective.is_feasible(&seen);
        answer.value = if answer.failed { None } else { objective.value(&seen) };
        answer.constraint_violations = objective
            .constraints
            .iter()
            .map(|c| {
                let v = seen.get(&c.metric).copied().unwrap_or(f64::INFINITY);
                match c.op {
                    autodebug_core::Comparison::AtLeast => c.bound - v,
                    _ => v - c.bound,
                }
            })
            .map(|v| if answer.failed { 1.0 } else { v })
            .collect();
        answer.metrics = seen;
        if request.with_truth {
            answer.true_value = Some(bench.value(&spec));
        }
        Ok(answer)
    }
}

/// The spaces of `scenarios` as JSON: name, description, objective and constraints, knobs with
/// their levels (the first is the start), and the noise a measurement gets.
pub fn describe(scenarios: &[Scenario], noise_scale: f64) -> serde_json::Value {
    let catalog = SearchSpace::for_engine(EngineKind::Sglang);
    let items: Vec<serde_json::Value> = scenarios
        .iter()
        .map(|s| {
            let start = s.space.encode(&catalog, &s.base.flags).unwrap_or_default();
            let knobs: Vec<serde_json::Value> = s
                .space
                .dims
                .iter()
                .enumerate()
                .map(|(d, dim)| {
                    serde_json::json!({
                        "flag": dim.flag,
                        "levels": dim.levels.iter().map(|l| l.as_deref().unwrap_or("default")).collect::<Vec<_>>(),
                        "ordinal": dim.ordinal,
                        "start": start.get(d).and_then(|l| dim.levels.get(*l)).map(|l| l.as_deref().unwrap_or("default")),
                        "requires": dim.requires,
                    })
                })
                .collect();
            let noise = Bench::new(s.clone(), noise_scale).noise;
            serde_json::json!({
                "name": s.name,
                "description": s.description,
                "gpu": s.gpu,
                "model": s.model,
                "objective": {
                    "metric": s.objective.metric,
                    "direction": match s.objective.direction { Direction::Minimize => "minimize", Direction::Maximize => "maximize" },
                    "constraints": s.objective.constraints.iter().map(|c| serde_json::json!({
                        "metric": c.metric,
                        "op": match c.op { autodebug_core::Comparison::AtLeast => ">=", _ => "<=" },
                        "bound": c.bound,
                    })).collect::<Vec<_>>(),
                    "text": s.objective.describe(),
                },
                "knobs": knobs,
                "configurations": s.space.size() as u64,
                "noise": {
                    "objective_relative_sd": noise.sd(&s.objective.metric),
                    "source": noise.source,
                },
            })
        })
        .collect();
    serde_json::Value::Array(items)
}
