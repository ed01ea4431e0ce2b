//! Service-level budgets judged per iteration, for CI gates on serving configurations:
//! `ttft.p99 <= 200`, `itl.p95 <= 20`, `output_throughput >= 300`, `error_rate <= 0`.
//!
//! A budget is a [`Constraint`]; unlike an objective's feasibility check, a verdict tells a
//! failed budget apart from one that cannot be judged because the metric is missing.

use serde::Serialize;

use autodebug_core::{Comparison, Constraint, Iteration, IterationStatus};

/// The outcome of one budget on one iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// The metric is not recorded (or not a finite number), so the budget cannot be judged.
    Missing,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Missing => "missing",
        }
    }
}

/// One budget judged on one iteration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetResult {
    pub budget: String,
    pub metric: String,
    pub bound: f64,
    pub value: Option<f64>,
    pub verdict: Verdict,
}

/// Every budget judged on one iteration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IterationVerdict {
    pub iteration: u32,
    pub status: IterationStatus,
    pub results: Vec<BudgetResult>,
}

impl IterationVerdict {
    /// Whether every budget passed.
    pub fn passed(&self) -> bool {
        self.results.iter().all(|r| r.verdict == Verdict::Pass)
    }

    pub fn count(&self, verdict: Verdict) -> usize {
        self.results.iter().filter(|r| r.verdict == verdict).count()
    }
}

/// Judges one budget against a metric value.
pub fn judge(budget: &Constraint, value: Option<f64>) -> Verdict {
    let Some(value) = value.filter(|v| v.is_finite()) else {
        return Verdict::Missing;
    };
    let holds = match budget.op {
        Comparison::AtMost => value <= budget.bound,
        Comparison::AtLeast => value >= budget.bound,
        Comparison::Equal => (value - budget.bound).abs() <= 1e-9 * budget.bound.abs().max(1.0),
    };
    if holds { Verdict::Pass } else { Verdict::Fail }
}

/// Judges every budget on one iteration. An iteration that did not finish successfully has no
/// trustworthy metrics: all its budgets are [`Verdict::Missing`].
///
/// ```
/// use autodebug_report::budget::{check_iteration, Verdict};
/// use autodebug_core::{Analysis, EngineKind, Iteration, IterationStatus, ServiceSpec};
///
/// let it = Iteration {
///     number: 1,
///     spec: ServiceSpec::new("s", EngineKind::Vllm, "m"),
///     artifact: None,
///     status: IterationStatus::Ok,
///     metrics: [("ttft.p99".to_string(), 180.0), ("output_throughput".to_string(), 250.0)].into(),
///     bench: Default::default(),
///     analysis: Analysis::default(),
///     plan: None,
///     error: None,
///     started_ns: 0,
///     finished_ns: 0,
///     timings: Default::default(),
///     round: None,
/// };
/// let budgets = ["ttft.p99 <= 200ms", "output_throughput >= 300", "itl.p95 <= 20"].map(|b| b.parse().unwrap());
/// let verdict = check_iteration(&budgets, &it);
/// let verdicts: Vec<Verdict> = verdict.results.iter().map(|r| r.verdict).collect();
/// assert_eq!(verdicts, [Verdict::Pass, Verdict::Fail, Verdict::Missing]);
/// assert!(!verdict.passed());
/// ```
pub fn check_iteration(budgets: &[Constraint], iteration: &Iteration) -> IterationVerdict {
    let results = budgets
        .iter()
        .map(|budget| {
            let value = if iteration.is_ok() { iteration.metrics.get(&budget.metric).copied() } else { None };
            BudgetResult {
                budget: budget.to_string(),
                metric: budget.metric.clone(),
                bound: budget.bound,
                value: value.filter(|v| v.is_finite()),
                verdict: judge(budget, value),
            }
        })
        .collect();
    IterationVerdict { iteration: iteration.number, status: iteration.status, results }
}

/// Judges every budget on every iteration, in order.
pub fn check(budgets: &[Constraint], iterations: &[Iteration]) -> Vec<IterationVerdict> {
    iterations.iter().map(|it| check_iteration(budgets, it)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodebug_core::{Analysis, EngineKind, ServiceSpec};

    fn iteration(status: IterationStatus, metrics: &[(&str, f64)]) -> Iteration {
        Iteration {
            number: 7,
            spec: ServiceSpec::new("s", EngineKind::Sglang, "m"),
            artifact: None,
            status,
            metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            bench: Default::default(),
            analysis: Analysis::default(),
            plan: None,
            error: None,
            started_ns: 0,
            finished_ns: 0,
            timings: Default::default(),
            round: None,
        }
    }

    #[test]
    fn bounds_are_inclusive_and_nan_is_missing() {
        let at_most: Constraint = "error_rate <= 0".parse().unwrap();
        assert_eq!(judge(&at_most, Some(0.0)), Verdict::Pass);
        assert_eq!(judge(&at_most, Some(0.01)), Verdict::Fail);
        assert_eq!(judge(&at_most, Some(f64::NAN)), Verdict::Missing);
        assert_eq!(judge(&at_most, None), Verdict::Missing);
        let at_least: Constraint = "output_throughput >= 300".parse().unwrap();
        assert_eq!(judge(&at_least, Some(300.0)), Verdict::Pass);
        assert_eq!(judge(&at_least, Some(299.9)), Verdict::Fail);
    }

    #[test]
    fn a_failed_iteration_cannot_pass_any_budget() {
        let budgets: Vec<Constraint> = vec!["ttft.p99 <= 200".parse().unwrap()];
        let failed = iteration(IterationStatus::DeployFailed, &[("ttft.p99", 10.0)]);
        let verdict = check_iteration(&budgets, &failed);
        assert_eq!(verdict.results[0].verdict, Verdict::Missing);
        assert_eq!(verdict.count(Verdict::Missing), 1);
        let ok = iteration(IterationStatus::Ok, &[("ttft.p99", 10.0)]);
        assert!(check(&budgets, &[ok])[0].passed());
    }
}
