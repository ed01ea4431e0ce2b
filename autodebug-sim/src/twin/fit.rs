//! Fitting a twin's step costs and flag multipliers to measured observations: Levenberg–Marquardt
//! on log-ratios of predicted to measured metrics, parameters in log space (so every cost stays
//! positive and a 2x error weighs the same either way).

use std::collections::{BTreeMap, BTreeSet};

use super::scheduler::{self, Scales, Schedule};
use autodebug_core::EngineKind;

use super::observe::plan_shapes;
use super::{CostFactor, FactorScope, FitProvenance, Observation, StepCosts, Twin, TwinError};
use crate::simulate::SimResult;

/// The metrics fitted, and their weights. ITL p99 is predicted and validated but not fitted:
/// it is the client's and the OS's jitter as much as the engine's.
const FITTED: &[(&str, f64)] =
    &[("ttft.p50", 1.0), ("ttft.p99", 0.5), ("tpot.mean", 1.0), ("output_throughput", 1.0), ("e2e.mean", 0.5)];
/// Residual of a metric the twin could not produce for a configuration that ran for real.
const INFEASIBLE_RESIDUAL: f64 = 3.0;
const COSTS: usize = 5;

/// How a fit runs.
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// Levenberg–Marquardt steps at most.
    pub max_iterations: usize,
    /// Pull of each flag multiplier toward 1 (in log space, against one residual of weight 1): a value
    /// seen once cannot explain away that observation's noise alone.
    pub ridge: f64,
    /// Start from the given twin's costs and multipliers instead of a guess from the data (a refit
    /// after one more measurement, or leave-one-out folds).
    pub warm_start: bool,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions { max_iterations: 60, ridge: 1.5, warm_start: false }
    }
}

/// A factor key the data set holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct FactorKey {
    flag: String,
    value: String,
    scope: FactorScope,
}

/// An observation prepared once: its schedule, which parameters scale it, and the parameter of
/// its plan's cached share when that is fitted.
struct Prepared<'a> {
    observation: &'a Observation,
    schedule: Option<Schedule>,
    factors: Vec<(usize, FactorScope)>,
    cached_share: Option<usize>,
}

struct Problem<'a> {
    prepared: Vec<Prepared<'a>>,
    keys: Vec<FactorKey>,
    /// Plans whose cached share is fitted (their parameters follow the multipliers').
    shared_plans: Vec<String>,
    ridge: f64,
    /// The per-context-token cost's starting point: the data rarely separates it from the
    /// per-sequence cost, so it is held near its guess as the multipliers are held near 1.
    context_anchor: f64,
}

impl Problem<'_> {
    fn costs(theta: &[f64]) -> StepCosts {
        StepCosts {
            step_us: theta[0].exp(),
            prefill_token_us: theta[1].exp(),
            decode_seq_us: theta[2].exp(),
            context_token_ns: theta[3].exp(),
            request_ms: theta[4].exp(),
        }
    }

    fn run(&self, theta: &[f64], prepared: &Prepared) -> Option<scheduler::Run> {
        let schedule = prepared.schedule.as_ref()?;
        let mut scales = Scales::default();
        for (index, scope) in &prepared.factors {
            scales.apply(*scope, theta[COSTS + index].exp());
        }
        let workload = match prepared.cached_share {
            Some(index) => {
                let mut workload = prepared.observation.workload.clone();
                let share = sigmoid(theta[self.share_offset() + index]);
                workload.shared_prefix_tokens = (share * f64::from(workload.prompt_tokens)).round() as u32;
                std::borrow::Cow::Owned(workload)
            }
            None => std::borrow::Cow::Borrowed(&prepared.observation.workload),
        };
        scheduler::run(schedule, &Self::costs(theta), scales, &workload, Twin::PREDICTION_SEED).ok()
    }

    fn share_offset(&self) -> usize {
        COSTS + self.keys.len()
    }

    fn residuals(&self, theta: &[f64]) -> Vec<f64> {
        let names: Vec<&str> = FITTED.iter().map(|(name, _)| *name).collect();
        let mut out = Vec::with_capacity(self.prepared.len() * FITTED.len() + self.keys.len() + 1);
        for prepared in &self.prepared {
            let predicted = self.run(theta, prepared).map(|run| run.values(&names));
            for (index, (metric, weight)) in FITTED.iter().enumerate() {
                let Some(measured) = prepared.observation.measured.get(*metric) else { continue };
                let residual = match predicted.as_ref().and_then(|p| p[index]).filter(|v| *v > 0.0) {
                    Some(value) => (value / measured).ln(),
                    None => INFEASIBLE_RESIDUAL,
                };
                out.push(weight * residual);
            }
        }
        out.extend(theta[COSTS..self.share_offset()].iter().map(|log| self.ridge * log));
        out.push(self.ridge * (theta[3] - self.context_anchor));
        out
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn squared(values: &[f64]) -> f64 {
    values.iter().map(|v| v * v).sum()
}

/// Solves `a · x = b` (Gaussian elimination with partial pivoting); `None` when singular.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for column in 0..n {
        let pivot = (column..n).max_by(|&i, &j| a[i][column].abs().total_cmp(&a[j][column].abs()))?;
        if a[pivot][column].abs() < 1e-300 {
            return None;
        }
        a.swap(column, pivot);
        b.swap(column, pivot);
        let (above, below) = a.split_at_mut(column + 1);
        let pivot_row = &above[column];
        for (offset, row) in below.iter_mut().enumerate() {
            let factor = row[column] / pivot_row[column];
            for (cell, pivot_cell) in row[column..].iter_mut().zip(&pivot_row[column..]) {
                *cell -= factor * pivot_cell;
            }
            b[column + 1 + offset] -= factor * b[column];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row][row];
    }
    Some(x)
}

/// Starting costs read off the data: a sequential stream's TPOT is one step, its TTFT one prefill.
fn initial_costs(observations: &[Observation]) -> StepCosts {
    let median = |values: Vec<f64>| (!values.is_empty()).then(|| SimResult::percentile(&values, 50.0));
    let sequential: Vec<&Observation> =
        observations.iter().filter(|o| o.workload.concurrency <= 1 && o.workload.arrival_rate.is_none()).collect();
    let pool = if sequential.is_empty() { observations.iter().collect() } else { sequential };
    let tpot_ms = median(pool.iter().filter_map(|o| o.measured.get("tpot.mean").copied()).collect()).unwrap_or(10.0);
    let ttft_ms = median(pool.iter().filter_map(|o| o.measured.get("ttft.p50").copied()).collect()).unwrap_or(50.0);
    let prompt = median(pool.iter().map(|o| f64::from(o.workload.prompt_tokens.max(1))).collect()).unwrap_or(100.0);
    let output = median(pool.iter().map(|o| f64::from(o.workload.output_tokens.max(1))).collect()).unwrap_or(100.0);
    StepCosts {
        step_us: 0.6 * tpot_ms * 1e3,
        prefill_token_us: ((ttft_ms - tpot_ms).max(0.2 * ttft_ms) * 1e3 / prompt).max(1e-3),
        decode_seq_us: 0.4 * tpot_ms * 1e3,
        context_token_ns: 0.02 * tpot_ms * 1e6 / (prompt + output / 2.0),
        request_ms: (0.05 * ttft_ms).max(0.1),
    }
}

/// The metrics a capacity plan's figures are fitted on (see [`fit`]).
const SMOOTH_AT_CAPACITY: &[&str] = &["tpot.mean", "output_throughput"];

/// Fits `base`'s engine model to `observations`: the returned twin has `base`'s engine, model and
/// defaults, fitted costs, one multiplier per flag value the data holds, and its fit error.
///
/// Closed-loop predictions do not depend on the order of step durations, only on their sizes, so
/// the residuals are smooth in the parameters and a few dozen steps suffice.
pub fn fit(base: &Twin, observations: &[Observation], options: &FitOptions) -> Result<Twin, TwinError> {
    if observations.is_empty() {
        return Err(TwinError::Fit("no successful iteration with bench results to fit".into()));
    }
    let all = observations;
    // At a capacity boundary, TTFT (and so e2e) sits on the queueing cliff: a small change of a
    // cost moves it by multiples, and fitted to it the costs land in a wrong basin (seen on
    // noise-free data). TPOT and throughput there stay smooth, and they alone tie the costs to
    // the load the configuration sustained.
    let smooth: Vec<Observation> = all
        .iter()
        .cloned()
        .map(|mut observation| {
            if observation.capacity.is_some() {
                observation.measured.retain(|metric, _| SMOOTH_AT_CAPACITY.contains(&metric.as_str()));
            }
            observation
        })
        .filter(|observation| !observation.measured.is_empty())
        .collect();
    let observations = if smooth.is_empty() { all } else { &smooth[..] };
    let mut keys = BTreeSet::new();
    let mut prepared = Vec::with_capacity(observations.len());
    for observation in observations {
        let values = scheduler::factor_values(base.engine, &observation.flags, &base.defaults);
        for (flag, value, scopes) in &values {
            for scope in *scopes {
                keys.insert(FactorKey { flag: flag.clone(), value: value.clone(), scope: *scope });
            }
        }
        prepared.push((observation, values));
    }
    let keys: Vec<FactorKey> = keys.into_iter().collect();
    // A server that does not report cached prompt tokens (vLLM's usage does not) leaves the share of
    // each plan's prompts its prefix cache serves unknown; it is fitted, between on and off runs.
    let mut shapes = plan_shapes(all);
    let shared_plans: Vec<String> = if base.engine == EngineKind::LlamaCpp {
        Vec::new()
    } else {
        shapes.iter().filter(|(_, shape)| shape.cached_prompt_tokens == 0).map(|(plan, _)| plan.clone()).collect()
    };
    let prepared: Vec<Prepared> = prepared
        .into_iter()
        .map(|(observation, values)| Prepared {
            cached_share: shared_plans.iter().position(|p| *p == observation.plan),
            observation,
            schedule: Schedule::from_flags(base.engine, &observation.flags, &base.defaults).ok(),
            factors: values
                .into_iter()
                .flat_map(|(flag, value, scopes)| {
                    scopes.iter().map(move |scope| FactorKey {
                        flag: flag.clone(),
                        value: value.clone(),
                        scope: *scope,
                    })
                })
                .filter_map(|key| keys.binary_search(&key).ok().map(|index| (index, key.scope)))
                .collect(),
        })
        .collect();
    let start = if options.warm_start { base.costs } else { initial_costs(observations) };
    let mut theta = vec![
        start.step_us.max(1e-6).ln(),
        start.prefill_token_us.max(1e-6).ln(),
        start.decode_seq_us.max(1e-6).ln(),
        start.context_token_ns.max(1e-6).ln(),
        start.request_ms.max(1e-6).ln(),
    ];
    for key in &keys {
        let warm = base
            .factors
            .iter()
            .find(|f| options.warm_start && f.flag == key.flag && f.value == key.value && f.scope == key.scope)
            .map_or(0.0, |f| f.multiplier.ln());
        theta.push(warm);
    }
    for plan in &shared_plans {
        let warm = base.plans.get(plan).filter(|_| options.warm_start).map(|shape| shape.cached_share());
        theta.push(logit(warm.unwrap_or(0.3)));
    }
    let problem = Problem { context_anchor: theta[3], prepared, keys, shared_plans, ridge: options.ridge };
    let mut steps = vec![1e-3; problem.share_offset()];
    // A cached share moves whole tokens: a step too small to move one sees no slope.
    steps.resize(theta.len(), 0.05);
    let theta = levenberg_marquardt(&problem, theta, &steps, options.max_iterations);
    for (index, plan) in problem.shared_plans.iter().enumerate() {
        if let Some(shape) = shapes.get_mut(plan) {
            let share = sigmoid(theta[problem.share_offset() + index]);
            shape.cached_prompt_tokens = (share * f64::from(shape.prompt_tokens)).round() as u32;
        }
    }

    let mut twin = base.clone();
    twin.plans = shapes;
    twin.costs = Problem::costs(&theta);
    twin.factors = problem
        .keys
        .iter()
        .enumerate()
        .map(|(index, key)| CostFactor {
            flag: key.flag.clone(),
            value: key.value.clone(),
            scope: key.scope,
            multiplier: theta[COSTS + index].exp(),
        })
        .collect();
    let mut apes: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for prepared in &problem.prepared {
        let Some(predicted) = problem.run(&theta, prepared).map(|run| run.metrics()) else { continue };
        for (metric, measured) in &prepared.observation.measured {
            if let Some(value) = predicted.get(metric) {
                apes.entry(metric.clone()).or_default().push(((value - measured) / measured).abs() * 100.0);
            }
        }
    }
    let mut iterations: Vec<u32> = observations.iter().map(|o| o.iteration).collect();
    iterations.dedup();
    twin.fitted_on = Some(FitProvenance {
        session: base.fitted_on.as_ref().map(|f| f.session.clone()).unwrap_or_default(),
        iterations,
        observations: observations.len(),
        fit_median_ape: apes
            .into_iter()
            .map(|(metric, values)| (metric, SimResult::percentile(&values, 50.0)))
            .collect(),
    });
    Ok(twin)
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-3, 1.0 - 1e-3);
    (p / (1.0 - p)).ln()
}

fn levenberg_marquardt(problem: &Problem, mut theta: Vec<f64>, steps: &[f64], max_iterations: usize) -> Vec<f64> {
    let n = theta.len();
    let mut residuals = problem.residuals(&theta);
    let mut cost = squared(&residuals);
    let mut damping = 1e-2;
    for _ in 0..max_iterations {
        let columns: Vec<Vec<f64>> = (0..n)
            .map(|j| {
                let mut moved = theta.clone();
                moved[j] += steps[j];
                problem.residuals(&moved).iter().zip(&residuals).map(|(a, b)| (a - b) / steps[j]).collect()
            })
            .collect();
        let normal: Vec<Vec<f64>> = (0..n)
            .map(|i| (0..n).map(|j| columns[i].iter().zip(&columns[j]).map(|(a, b)| a * b).sum()).collect())
            .collect();
        let gradient: Vec<f64> = (0..n).map(|i| columns[i].iter().zip(&residuals).map(|(a, r)| a * r).sum()).collect();
        let mut improved = false;
        while damping < 1e10 {
            let mut system = normal.clone();
            for (i, row) in system.iter_mut().enumerate() {
                row[i] += damping * (row[i] + 1e-6);
            }
            let Some(delta) = solve(system, gradient.iter().map(|g| -g).collect()) else {
                damping *= 10.0;
                continue;
            };
            let candidate: Vec<f64> = theta.iter().zip(&delta).map(|(t, d)| (t + d).clamp(-25.0, 25.0)).collect();
            let candidate_residuals = problem.residuals(&candidate);
            let candidate_cost = squared(&candidate_residuals);
            if candidate_cost < cost {
                let gain = (cost - candidate_cost) / cost.max(1e-300);
                theta = candidate;
                residuals = candidate_residuals;
                cost = candidate_cost;
                damping = (damping / 3.0).max(1e-9);
                improved = gain > 1e-7;
                break;
            }
            damping *= 4.0;
        }
        if !improved {
            break;
        }
    }
    theta
}
