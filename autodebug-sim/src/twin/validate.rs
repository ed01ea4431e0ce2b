//! How well a twin predicts configurations it was not fitted to.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{FitOptions, Observation, PREDICTED_METRICS, Twin, TwinError, fit};
use crate::simulate::{SimResult, SimWorkload};

/// Which iterations are held out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holdout {
    /// Each iteration in turn, fitted on all the others.
    LeaveOneOut,
    /// The last `k` iterations, fitted on the ones before: the twin as the loop would use it.
    Last(usize),
}

impl Holdout {
    fn describe(self) -> String {
        match self {
            Holdout::LeaveOneOut => "leave-one-out".into(),
            Holdout::Last(k) => format!("last {k}"),
        }
    }
}

/// A held-out observation: what the twin predicted, what was measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HoldoutPoint {
    pub iteration: u32,
    pub plan: String,
    pub flags: String,
    /// Iterations the predicting twin was fitted on.
    pub fitted_on: usize,
    pub predicted: BTreeMap<String, f64>,
    pub measured: BTreeMap<String, f64>,
    /// Absolute percentage error per metric.
    pub ape: BTreeMap<String, f64>,
    /// Flag values the fitting data never held (their multiplier was a guess of 1).
    pub unseen: Vec<String>,
    /// The twin could not run this configuration (why), though the engine did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub infeasible: Option<String>,
}

/// Held-out errors, per point and summarized per metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Validation {
    pub holdout: String,
    pub points: Vec<HoldoutPoint>,
    /// Median absolute percentage error per metric over every held-out point.
    pub median_ape: BTreeMap<String, f64>,
    pub p90_ape: BTreeMap<String, f64>,
    /// Median APE per bench plan, then per metric.
    pub median_ape_by_plan: BTreeMap<String, BTreeMap<String, f64>>,
    /// The yardstick without a model: the median APE of predicting each held-out point as the median
    /// of its plan's fitted measurements. A twin that does not beat it has learned nothing.
    pub naive_median_ape: BTreeMap<String, f64>,
}

/// Fits on the kept iterations and predicts the held-out ones, for each fold of `holdout`.
pub fn validate(
    base: &Twin,
    observations: &[Observation],
    holdout: Holdout,
    options: &FitOptions,
) -> Result<Validation, TwinError> {
    let mut iterations: Vec<u32> = observations.iter().map(|o| o.iteration).collect();
    iterations.sort_unstable();
    iterations.dedup();
    let folds: Vec<Vec<u32>> = match holdout {
        Holdout::LeaveOneOut => iterations.iter().map(|i| vec![*i]).collect(),
        Holdout::Last(k) => {
            if k == 0 || k >= iterations.len() {
                return Err(TwinError::Fit(format!(
                    "cannot hold out {k} of {} measured iterations: keep at least one to fit and hold out at least one",
                    iterations.len()
                )));
            }
            vec![iterations[iterations.len() - k..].to_vec()]
        }
    };
    if iterations.len() < 2 {
        return Err(TwinError::Fit(format!("{} measured iteration(s): nothing to hold out", iterations.len())));
    }
    let mut points = Vec::new();
    let mut naive: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for held in &folds {
        let (test, train): (Vec<Observation>, Vec<Observation>) =
            observations.iter().cloned().partition(|o| held.contains(&o.iteration));
        let fitted_on = iterations.len() - held.len();
        let twin = fit(base, &train, options)?;
        // A held-out point is predicted from what the training data says of its plan's workload,
        // not from its own measurement of it.
        for observation in &test {
            for (metric, measured) in &with_capacity(observation) {
                let mut seen: Vec<f64> = train
                    .iter()
                    .filter(|o| o.plan == observation.plan)
                    .filter_map(|o| with_capacity(o).get(metric).copied())
                    .collect();
                if seen.is_empty() {
                    continue;
                }
                seen.sort_by(f64::total_cmp);
                let guess = SimResult::percentile(&seen, 50.0);
                naive.entry(metric.clone()).or_default().push(((guess - measured) / measured).abs() * 100.0);
            }
        }
        for observation in test {
            let workload = twin.shaped(&observation.plan, observation.workload.clone());
            points.push(point(&twin, observation, &workload, fitted_on));
        }
    }
    let mut all: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut by_plan: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for point in &points {
        for (metric, ape) in &point.ape {
            all.entry(metric.clone()).or_default().push(*ape);
            by_plan.entry(point.plan.clone()).or_default().entry(metric.clone()).or_default().push(*ape);
        }
    }
    let summarize = |values: &BTreeMap<String, Vec<f64>>, p: f64| -> BTreeMap<String, f64> {
        values.iter().map(|(metric, apes)| (metric.clone(), SimResult::percentile(apes, p))).collect()
    };
    Ok(Validation {
        holdout: holdout.describe(),
        median_ape: summarize(&all, 50.0),
        p90_ape: summarize(&all, 90.0),
        median_ape_by_plan: by_plan.iter().map(|(plan, values)| (plan.clone(), summarize(values, 50.0))).collect(),
        naive_median_ape: summarize(&naive, 50.0),
        points,
    })
}

/// The measured metrics with the measured capacity, where the plan searched for it.
fn with_capacity(observation: &Observation) -> BTreeMap<String, f64> {
    let mut out = observation.measured.clone();
    if let Some((_, rate)) = &observation.capacity {
        out.insert(autodebug_core::CAPACITY_METRIC.into(), *rate);
    }
    out
}

fn point(twin: &Twin, observation: Observation, workload: &SimWorkload, fitted_on: usize) -> HoldoutPoint {
    let mut point = HoldoutPoint {
        iteration: observation.iteration,
        plan: observation.plan.clone(),
        flags: observation.describe_flags(),
        fitted_on,
        predicted: BTreeMap::new(),
        measured: observation.measured.clone(),
        ape: BTreeMap::new(),
        unseen: Vec::new(),
        infeasible: None,
    };
    match twin.predict(&observation.flags, workload) {
        Ok(prediction) => {
            point.unseen = prediction.unseen;
            for metric in PREDICTED_METRICS {
                let (Some(predicted), Some(measured)) =
                    (prediction.metrics.get(*metric), observation.measured.get(*metric))
                else {
                    continue;
                };
                point.predicted.insert(metric.to_string(), *predicted);
                point.ape.insert(metric.to_string(), ((predicted - measured) / measured).abs() * 100.0);
            }
        }
        Err(error) => {
            // The engine served it, so the twin is wrong: a 100% miss on every metric measured.
            point.infeasible = Some(error.to_string());
            point.ape = observation.measured.keys().map(|metric| (metric.clone(), 100.0)).collect();
        }
    }
    if let Some((goal, measured)) = &observation.capacity {
        let metric = autodebug_core::CAPACITY_METRIC.to_string();
        point.measured.insert(metric.clone(), *measured);
        let predicted = point
            .infeasible
            .is_none()
            .then(|| twin.predict_capacity(&observation.flags, workload, goal).ok())
            .flatten()
            .and_then(|p| p.metrics.get(&metric).copied());
        let ape = match predicted {
            Some(predicted) => {
                point.predicted.insert(metric.clone(), predicted);
                ((predicted - measured) / measured).abs() * 100.0
            }
            None => 100.0,
        };
        point.ape.insert(metric, ape);
    }
    point
}
