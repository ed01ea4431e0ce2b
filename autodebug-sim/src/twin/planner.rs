//! Twin-screened search: after a few real iterations, fit a twin, screen the whole space in virtual
//! time, deploy the best predicted candidate, refit with each new measurement, and hand planning
//! back to a black-box planner while the twin's latest predictions miss.

use std::collections::BTreeMap;

use autodebug_core::search::{TuneSpace, plan_to};
use autodebug_core::{
    BenchPlan, History, Objective, Plan, PlanInput, Planner, Result, Signal, SignalKind, async_trait, format_number,
};

use super::{FitOptions, Observation, Twin, fit, observations};
use crate::rng::{SplitMix64, seeded};

/// The rule id of twin proposals, as it appears in `Change::rule`.
pub const TWIN_RULE: &str = "search.twin";
/// The evidence signal carrying a twin's prediction of one metric (label `metric`).
pub const PREDICTED_SIGNAL: &str = "twin.predicted";

/// When the twin plans and when it is trusted.
#[derive(Debug, Clone)]
pub struct TwinSearch {
    /// Real iterations measured before the first fit; the wrapped planner plans them.
    pub warmup: usize,
    /// The twin is distrusted while its median error on the last two measured iterations, each
    /// predicted by a twin fitted to the runs before it (on the objective's metric and the
    /// constraints'), is above this many percent; it is trusted again when that error falls.
    pub error_bound_pct: f64,
    /// Candidates screened at most (drawn at random when the space is larger).
    pub max_candidates: usize,
    /// Candidates the twin can predict that are screened at most when a plan searches for its
    /// capacity: each prediction is then a whole capacity search in virtual time (tens of runs).
    pub max_capacity_candidates: usize,
    pub seed: u64,
}

impl Default for TwinSearch {
    fn default() -> Self {
        TwinSearch {
            warmup: 3,
            error_bound_pct: 20.0,
            max_candidates: 20_000,
            max_capacity_candidates: 300,
            seed: 0x7477,
        }
    }
}

/// A planner decorator: `inner` plans until the twin is fitted and whenever it is distrusted; in
/// between, the twin's best predicted configuration is proposed, with its predictions as evidence
/// and the previous proposal's predicted-versus-measured in the notes.
pub struct TwinPlanner<P> {
    inner: P,
    plans: Vec<BenchPlan>,
    base: Twin,
    search: TwinSearch,
    space: Option<TuneSpace>,
}

impl<P: Planner> TwinPlanner<P> {
    /// `plans` are the session's bench plans (the first is the primary one, as in the session);
    /// `base` names the engine, the model and the engine's defaults.
    pub fn new(inner: P, plans: Vec<BenchPlan>, base: Twin) -> Self {
        TwinPlanner { inner, plans, base, search: TwinSearch::default(), space: None }
    }

    /// Screens exactly this space (default: the one the loop's catalog gives).
    pub fn with_space(mut self, space: TuneSpace) -> Self {
        self.space = Some(space);
        self
    }

    pub fn with_search(mut self, search: TwinSearch) -> Self {
        self.search = search;
        self
    }

    /// Predicted metrics under the session's names: `<plan>.<metric>`, the primary plan's also bare.
    fn predict_all(&self, twin: &Twin, flags: &autodebug_core::LaunchFlags) -> Option<BTreeMap<String, f64>> {
        // Checked before running anything: a capacity prediction is tens of runs.
        if !twin.unseen(flags).is_empty() {
            return None;
        }
        let mut out = BTreeMap::new();
        for (index, plan) in self.plans.iter().enumerate() {
            let workload = twin.workload(plan);
            let prediction = match &plan.capacity {
                Some(goal) => twin.predict_capacity(flags, &workload, goal),
                None => twin.predict(flags, &workload),
            }
            .ok()?;
            if !prediction.unseen.is_empty() {
                return None;
            }
            for (metric, value) in prediction.metrics {
                if index == 0 {
                    out.insert(metric.clone(), value);
                }
                out.insert(format!("{}.{metric}", plan.name), value);
            }
        }
        Some(out)
    }
}

impl<P: Planner> TwinPlanner<P> {
    /// The twin's error on the latest real points, whoever proposed them: each of the last two
    /// measured iterations predicted by a twin fitted to the iterations before it, as the median
    /// absolute percentage error on the objective's and the constraints' metrics.
    fn recent_error(&self, observed: &[Observation], input: &PlanInput<'_>) -> Option<(f64, Vec<u32>)> {
        let mut iterations: Vec<u32> = observed.iter().map(|o| o.iteration).collect();
        iterations.dedup();
        let metrics = checked_metrics(input.objective);
        let (mut errors, mut checked) = (Vec::new(), Vec::new());
        for (position, number) in iterations.iter().enumerate().rev().take(2) {
            if position < self.search.warmup {
                continue;
            }
            let before: Vec<Observation> = observed.iter().filter(|o| o.iteration < *number).cloned().collect();
            let Some(iteration) = input.history.iterations.iter().find(|i| i.number == *number) else { continue };
            let Ok(twin) = fit(&self.base, &before, &FitOptions::default()) else { continue };
            let Some(predicted) = self.predict_all(&twin, &iteration.spec.flags) else { continue };
            for metric in &metrics {
                if let (Some(p), Some(m)) =
                    (predicted.get(metric), iteration.metrics.get(metric).filter(|m| **m != 0.0))
                {
                    errors.push(((p - m) / m).abs() * 100.0);
                }
            }
            checked.push(*number);
        }
        if errors.is_empty() {
            return None;
        }
        errors.sort_by(f64::total_cmp);
        checked.reverse();
        Some((errors[errors.len() / 2], checked))
    }
}

/// A twin proposal and what its iteration then measured.
#[derive(Debug, Clone, PartialEq)]
pub struct TwinCheck {
    pub iteration: u32,
    /// Metric, predicted, measured, absolute percentage error.
    pub metrics: Vec<(String, f64, f64, f64)>,
}

impl TwinCheck {
    fn describe(&self) -> String {
        let parts: Vec<String> = self
            .metrics
            .iter()
            .map(|(metric, p, m, ape)| {
                format!("{metric} predicted {} measured {} ({ape:.0}%)", format_number(*p), format_number(*m))
            })
            .collect();
        format!("twin check, iteration {}: {}", self.iteration, parts.join("; "))
    }
}

/// Every twin-proposed iteration that finished, with its predictions against its measurements.
pub fn twin_checks(history: &History) -> Vec<TwinCheck> {
    let mut out = Vec::new();
    for pair in history.iterations.windows(2) {
        let (planned, measured) = (&pair[0], &pair[1]);
        let Some(plan) = planned.plan.as_ref().filter(|p| p.changes.iter().any(|c| c.rule == TWIN_RULE)) else {
            continue;
        };
        if !measured.is_ok() || measured.spec.flags != plan.next.flags {
            continue;
        }
        let mut metrics = Vec::new();
        for signal in plan.changes.iter().flat_map(|c| c.evidence.iter()).filter(|s| s.name == PREDICTED_SIGNAL) {
            let (Some(metric), Some(predicted)) = (signal.labels.get("metric"), signal.as_f64()) else { continue };
            if metrics.iter().any(|(m, ..): &(String, f64, f64, f64)| m == metric) {
                continue;
            }
            if let Some(actual) = measured.metrics.get(metric).filter(|v| **v != 0.0) {
                metrics.push((metric.clone(), predicted, *actual, ((predicted - actual) / actual).abs() * 100.0));
            }
        }
        if !metrics.is_empty() {
            out.push(TwinCheck { iteration: measured.number, metrics });
        }
    }
    out
}

/// The metrics a proposal's predictions are checked on: the objective's and the constraints'.
fn checked_metrics(objective: &Objective) -> Vec<String> {
    let mut metrics = vec![objective.metric.clone()];
    for constraint in &objective.constraints {
        if !metrics.contains(&constraint.metric) && constraint.metric != "error_rate" {
            metrics.push(constraint.metric.clone());
        }
    }
    metrics
}

#[async_trait]
impl<P: Planner> Planner for TwinPlanner<P> {
    fn name(&self) -> &str {
        "twin"
    }

    async fn plan(&self, input: PlanInput<'_>) -> Result<Plan> {
        let delegate = |note: String| async move {
            let mut plan = self.inner.plan(input).await?;
            plan.notes.insert(0, note);
            Ok::<Plan, autodebug_core::Error>(plan)
        };
        let observed: Vec<Observation> = observations(&self.plans, &input.history.iterations);
        let mut measured: Vec<u32> = observed.iter().map(|o| o.iteration).collect();
        measured.dedup();
        if measured.len() < self.search.warmup {
            return delegate(format!(
                "twin: {} of {} real iterations before the first fit; {} plans",
                measured.len(),
                self.search.warmup,
                self.inner.name()
            ))
            .await;
        }
        let mut notes: Vec<String> = twin_checks(input.history).last().map(TwinCheck::describe).into_iter().collect();
        if let Some((error, checked)) = self.recent_error(&observed, &input) {
            if error > self.search.error_bound_pct {
                notes.push(format!(
                    "twin distrusted: fitted to the runs before each, it missed iteration(s) {checked:?} by {error:.0}% \
                     (bound {:.0}%); {} plans",
                    self.search.error_bound_pct,
                    self.inner.name()
                ));
                let mut plan = self.inner.plan(input).await?;
                notes.append(&mut plan.notes);
                plan.notes = notes;
                return Ok(plan);
            }
            notes.push(format!(
                "twin trusted: {error:.0}% error on iteration(s) {checked:?}, each predicted from the runs before it"
            ));
        }
        let twin = match fit(&self.base, &observed, &FitOptions::default()) {
            Ok(twin) => twin,
            Err(error) => return delegate(format!("twin: {error}; {} plans", self.inner.name())).await,
        };
        let tune = self.space.clone().unwrap_or_else(|| TuneSpace::from_space(input.space, input.current));
        let size = usize::try_from(tune.size()).unwrap_or(usize::MAX);
        let most_screened = if self.plans.iter().any(|p| p.capacity.is_some()) {
            self.search.max_capacity_candidates
        } else {
            usize::MAX
        };
        let candidates: Vec<Vec<usize>> = if size <= self.search.max_candidates {
            tune.enumerate().collect()
        } else {
            let mut rng: SplitMix64 = seeded(self.search.seed ^ input.history.iterations.len() as u64);
            (0..self.search.max_candidates)
                .map(|_| tune.canonical(tune.dims.iter().map(|d| rng.below(d.len())).collect()))
                .collect()
        };
        let objective = input.objective;
        let mut best: Option<(autodebug_core::ServiceSpec, BTreeMap<String, f64>)> = None;
        let mut screened = 0usize;
        for config in &candidates {
            if screened >= most_screened {
                break;
            }
            let Ok(spec) = tune.to_spec(input.space, input.current, config) else { continue };
            if input.history.tried(&spec) {
                continue;
            }
            let Some(predicted) = self.predict_all(&twin, &spec.flags) else { continue };
            screened += 1;
            if best.as_ref().is_none_or(|(_, incumbent)| objective.is_better(&predicted, incumbent)) {
                best = Some((spec, predicted));
            }
        }
        let Some((next, predicted)) = best.filter(|(_, p)| objective.is_feasible(p)) else {
            return delegate(format!(
                "twin: none of {screened} untried configurations it can predict is predicted to meet the objective; {} plans",
                self.inner.name()
            ))
            .await;
        };
        let champion = input.history.champion(objective).and_then(|c| objective.value(&c.metrics));
        let value = objective.value(&predicted).unwrap_or(f64::NAN);
        let reason = format!(
            "twin predicts {} {} (best measured {}) for the best of {screened} screened configurations",
            objective.metric,
            format_number(value),
            champion.map_or("none".into(), format_number)
        );
        let mut plan = plan_to(self.name(), &input, next, TWIN_RULE, &reason, Vec::new());
        let evidence: Vec<Signal> = checked_metrics(objective)
            .into_iter()
            .filter_map(|metric| {
                let value = *predicted.get(&metric)?;
                Some(
                    Signal::number("twin", SignalKind::Metric, PREDICTED_SIGNAL, value, "")
                        .with_label("metric", &metric),
                )
            })
            .collect();
        for change in &mut plan.changes {
            change.evidence = evidence.clone();
        }
        notes.push(reason);
        plan.notes = notes;
        Ok(plan)
    }
}
