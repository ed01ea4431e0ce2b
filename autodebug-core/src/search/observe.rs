//! What a search learns from the [`History`]: one observation per distinct configuration, with
//! repeated trials averaged, and the noise-aware champion.

use std::collections::BTreeMap;

use crate::{Comparison, History, IterationStatus, LaunchFlags, Objective, Resources, SearchSpace};

use super::space::{Config, TuneSpace};

/// How a configuration fared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Ran and met every constraint; the loss is the objective oriented so lower is better.
    Feasible { loss: f64 },
    /// Ran but broke a constraint; `violation` grows with how far off it was.
    Infeasible { violation: f64 },
    /// Never ran: the deploy failed (startup OOM, crash) or the benchmark could not start.
    Failed,
}

/// One distinct configuration and what its trials measured.
#[derive(Debug, Clone)]
pub struct Observation {
    pub flags: LaunchFlags,
    pub resources: Resources,
    /// Its place in the tuned space (numeric values off the ladder snap to the nearest level).
    pub config: Option<Config>,
    pub outcome: Outcome,
    /// Iterations that ran it (failed or not).
    pub trials: usize,
    /// Mean of each metric over the trials that ran.
    pub metrics: BTreeMap<String, f64>,
    /// Objective values of the trials that ran, in order.
    pub values: Vec<f64>,
    /// 0-based index in the history of its first trial.
    pub first: usize,
}

/// Relative amount by which `metrics` breaks `objective`'s constraints (a missing metric is 1).
pub fn violation(objective: &Objective, metrics: &BTreeMap<String, f64>) -> f64 {
    let mut total = 0.0;
    if objective.value(metrics).is_none() {
        total += 1.0;
    }
    for c in objective.violations(metrics) {
        total += match metrics.get(&c.metric).filter(|v| v.is_finite()) {
            None => 1.0,
            Some(v) => {
                let excess = match c.op {
                    Comparison::AtMost => v - c.bound,
                    Comparison::AtLeast => c.bound - v,
                    Comparison::Equal => (v - c.bound).abs(),
                };
                // Relative to the bound, but a zero bound (`error_rate == 0`) counts the raw excess.
                excess.max(0.0) / c.bound.abs().max(1.0)
            }
        };
    }
    total
}

/// Lower is better: the objective's value for minimize, its negation for maximize.
pub fn loss(objective: &Objective, value: f64) -> f64 {
    match objective.direction {
        crate::Direction::Minimize => value,
        crate::Direction::Maximize => -value,
    }
}

/// Groups the history by configuration (flags and resources), in order of first trial.
pub fn observe(history: &History, objective: &Objective, space: &SearchSpace, tune: &TuneSpace) -> Vec<Observation> {
    let mut out: Vec<Observation> = Vec::new();
    let mut sums: Vec<(BTreeMap<String, f64>, usize)> = Vec::new();
    for (index, it) in history.iterations.iter().enumerate() {
        let ran = it.status == IterationStatus::Ok;
        let failed = matches!(it.status, IterationStatus::DeployFailed | IterationStatus::BenchFailed);
        if !ran && !failed {
            continue;
        }
        let slot = match out.iter().position(|o| o.flags == it.spec.flags && o.resources == it.spec.resources) {
            Some(i) => i,
            None => {
                out.push(Observation {
                    flags: it.spec.flags.clone(),
                    resources: it.spec.resources.clone(),
                    config: tune.encode(space, &it.spec.flags),
                    outcome: Outcome::Failed,
                    trials: 0,
                    metrics: BTreeMap::new(),
                    values: Vec::new(),
                    first: index,
                });
                sums.push((BTreeMap::new(), 0));
                out.len() - 1
            }
        };
        out[slot].trials += 1;
        if ran {
            let (sum, n) = &mut sums[slot];
            *n += 1;
            for (k, v) in &it.metrics {
                if v.is_finite() {
                    *sum.entry(k.clone()).or_insert(0.0) += v;
                }
            }
            if let Some(v) = objective.value(&it.metrics) {
                out[slot].values.push(v);
            }
        }
    }
    for (obs, (sum, n)) in out.iter_mut().zip(sums) {
        if n == 0 {
            continue;
        }
        obs.metrics = sum.into_iter().map(|(k, v)| (k, v / n as f64)).collect();
        obs.outcome = match objective.value(&obs.metrics) {
            Some(v) if objective.is_feasible(&obs.metrics) => Outcome::Feasible { loss: loss(objective, v) },
            _ => Outcome::Infeasible { violation: violation(objective, &obs.metrics) },
        };
    }
    out
}

/// The best feasible observation by mean, ignoring noise (what a search should refine).
pub fn best(observations: &[Observation]) -> Option<usize> {
    observations
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match o.outcome {
            Outcome::Feasible { loss } => Some((i, loss)),
            _ => None,
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// The noise-aware champion: the first feasible configuration, replaced in order of discovery
/// only by one whose mean beats it by more than the objective's noise margin.
pub fn champion(observations: &[Observation], objective: &Objective) -> Option<usize> {
    let mut incumbent: Option<usize> = None;
    for (i, o) in observations.iter().enumerate() {
        if !matches!(o.outcome, Outcome::Feasible { .. }) {
            continue;
        }
        match incumbent {
            Some(c) if !objective.beats_outside_noise(&o.metrics, &observations[c].metrics) => {}
            _ => incumbent = Some(i),
        }
    }
    incumbent
}

/// Sample standard deviation (0 for fewer than two values).
pub fn std_dev(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64).sqrt()
}
