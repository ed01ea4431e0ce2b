//! Runs of optimizers outside this process, and how they are scored on the suite's truth.

use std::collections::BTreeMap;

use autodebug_core::SearchSpace;

use super::bench::Bench;
use super::drive::Trace;
use super::eval;
use crate::EngineKind;

/// One run of an outside optimizer (e.g. `benches/optuna_tpe.py` through `autodebug sim eval`):
/// the configurations it evaluated, in order, and whether each failed as measured.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ExternalRun {
    pub planner: String,
    pub scenario: String,
    pub seed: u64,
    pub evals: Vec<ExternalEval>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct ExternalEval {
    /// Flag -> level text (`null` or `"default"`: unset).
    pub config: BTreeMap<String, serde_json::Value>,
    /// The answer said the engine failed to start or a constraint was broken.
    #[serde(default)]
    pub failed: bool,
}

/// Scores an outside optimizer's run against the scenario's truth.
pub(super) fn external_trace(bench: &Bench, run: &ExternalRun, budget: usize) -> Trace {
    let catalog = SearchSpace::for_engine(EngineKind::Sglang);
    let mut trace = Trace::default();
    for e in run.evals.iter().take(budget) {
        if e.failed {
            trace.failed += 1;
        }
        match eval::spec_of(&bench.scenario, &catalog, &e.config) {
            Ok(spec) => trace.values.push(bench.value(&spec)),
            Err(_) => {
                trace.invalid += 1;
                trace.values.push(None);
            }
        }
    }
    trace
}
