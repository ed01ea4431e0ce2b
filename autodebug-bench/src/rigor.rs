//! Runs that are more than one plan: sweeps over concurrency or rate, and interleaved A/B
//! comparisons of two endpoints.

use autodebug_core::{Arrival, BenchPlan, BenchReport, Direction, Endpoint, Load};
use serde::{Deserialize, Serialize};

use crate::benchmarker::{SseBenchmarker, TrialRun, aggregate};
use crate::error::BenchError;
use crate::stats::{MetricStats, Verdict, verdict};
use crate::workloads::RequestSource;

/// What a sweep varies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "axis", rename_all = "snake_case")]
pub enum SweepAxis {
    /// Closed loop at each concurrency.
    Concurrency { values: Vec<usize> },
    /// Open loop at each rate (requests per second).
    Rate { values: Vec<f64>, arrival: Arrival },
}

/// One plan per point of an axis, run in order; each point is named `<plan>@c<N>` or `<plan>@r<R>`.
///
/// ```
/// use autodebug_bench::{Sweep, SweepAxis};
/// use autodebug_core::{BenchPlan, Load, Workload};
///
/// let base = BenchPlan::new("chat", Workload::new(128, 32), Load::Sequential, 16);
/// let sweep = Sweep { plan: base, axis: SweepAxis::Concurrency { values: vec![1, 4, 8] } };
/// let plans = sweep.plans();
/// assert_eq!(plans[2].load, Load::Concurrent { concurrency: 8 });
/// assert_eq!(plans[2].name, "chat@c8");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    pub plan: BenchPlan,
    pub axis: SweepAxis,
}

impl Sweep {
    /// The plan of every point.
    pub fn plans(&self) -> Vec<BenchPlan> {
        let point = |name: String, load: Load| BenchPlan { name, load, ..self.plan.clone() };
        match &self.axis {
            SweepAxis::Concurrency { values } => values
                .iter()
                .map(|&c| point(format!("{}@c{c}", self.plan.name), Load::Concurrent { concurrency: c }))
                .collect(),
            SweepAxis::Rate { values, arrival } => values
                .iter()
                .map(|&r| {
                    point(format!("{}@r{r}", self.plan.name), Load::Rate { requests_per_s: r, arrival: *arrival })
                })
                .collect(),
        }
    }

    /// Runs every point against `endpoint` with requests from `source`; one [`TrialRun`] per point.
    pub async fn run(
        &self,
        bench: &SseBenchmarker,
        endpoint: &Endpoint,
        source: &RequestSource,
    ) -> Result<Vec<TrialRun>, BenchError> {
        let mut runs = Vec::new();
        for plan in self.plans() {
            runs.push(bench.run_trials(endpoint, &plan, source).await?);
        }
        Ok(runs)
    }
}

/// An A/B comparison: `plan.trials` trials per arm, interleaved A, B, A, B… so drift (thermal,
/// neighbours, caches) hits both arms alike; trial *k* of both arms sends the same prompts. The
/// verdict compares the per-trial values of `metric` (a [`BenchSummary::metrics`] name) with
/// [`verdict`]: bootstrap CI of the difference of means, plus a minimum relative effect.
///
/// [`BenchSummary::metrics`]: autodebug_core::BenchSummary::metrics
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbTest {
    pub plan: BenchPlan,
    pub metric: String,
    pub direction: Direction,
    /// Confidence level of the interval, e.g. 0.95.
    pub confidence: f64,
    /// Smallest relative difference reported as `Better`/`Worse`, e.g. 0.02 for 2%.
    pub min_relative_effect: f64,
    /// Seeds the bootstrap.
    pub seed: u64,
}

impl AbTest {
    /// Compares `metric` of `plan`, in the metric's usual direction, at 95% with a 2% minimum effect.
    pub fn new(plan: BenchPlan, metric: impl Into<String>) -> Self {
        let metric = metric.into();
        AbTest {
            direction: Direction::for_metric(&metric),
            plan,
            metric,
            confidence: 0.95,
            min_relative_effect: 0.02,
            seed: 0,
        }
    }

    /// Runs both arms interleaved and returns the comparison with both arms' aggregated reports.
    pub async fn run(
        &self,
        bench: &SseBenchmarker,
        a: &Endpoint,
        b: &Endpoint,
        source: &RequestSource,
    ) -> Result<AbOutcome, BenchError> {
        let trials = self.plan.trials.max(2);
        let (mut a_trials, mut b_trials) = (Vec::new(), Vec::new());
        for trial in 0..trials {
            a_trials.push(bench.run_once(a, &self.plan, source, trial).await?);
            b_trials.push(bench.run_once(b, &self.plan, source, trial).await?);
        }
        let values = |reports: &[BenchReport]| -> Result<Vec<f64>, BenchError> {
            reports
                .iter()
                .map(|r| {
                    r.summary.metrics().get(&self.metric).copied().ok_or_else(|| BenchError::InvalidPlan {
                        plan: self.plan.name.clone(),
                        field: "metric",
                        message: format!(
                            "{:?} is not a metric of this run; use one of: {}",
                            self.metric,
                            r.summary.metrics().keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    })
                })
                .collect()
        };
        let (a_values, b_values) = (values(&a_trials)?, values(&b_trials)?);
        let (verdict, difference, (ci_low, ci_high)) =
            verdict(&a_values, &b_values, self.direction, self.confidence, self.min_relative_effect, self.seed);
        let stats = |v: &[f64]| MetricStats::of(v, self.confidence, self.seed);
        let comparison = Comparison {
            metric: self.metric.clone(),
            direction: self.direction,
            verdict,
            a_endpoint: a.base_url.clone(),
            b_endpoint: b.base_url.clone(),
            a: stats(&a_values),
            b: stats(&b_values),
            difference,
            ci_low,
            ci_high,
            confidence: self.confidence,
            min_relative_effect: self.min_relative_effect,
            trials_per_arm: trials,
        };
        tracing::info!(metric = %self.metric, verdict = ?verdict, difference, ci_low, ci_high, "A/B comparison finished");
        Ok(AbOutcome {
            comparison,
            a: TrialRun { report: aggregate(&a_trials), trials: a_trials },
            b: TrialRun { report: aggregate(&b_trials), trials: b_trials },
        })
    }
}

/// The result of an [`AbTest`]: B relative to A.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub metric: String,
    pub direction: Direction,
    pub verdict: Verdict,
    pub a_endpoint: String,
    pub b_endpoint: String,
    pub a: Option<MetricStats>,
    pub b: Option<MetricStats>,
    /// mean(B) − mean(A).
    pub difference: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub confidence: f64,
    pub min_relative_effect: f64,
    pub trials_per_arm: u32,
}

/// Both arms of an A/B comparison and its verdict.
#[derive(Debug, Clone)]
pub struct AbOutcome {
    pub comparison: Comparison,
    pub a: TrialRun,
    pub b: TrialRun,
}
