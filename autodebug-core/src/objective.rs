use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Whether bigger or smaller is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Minimize,
    Maximize,
}

/// Comparison used by a constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparison {
    #[serde(rename = "<=")]
    AtMost,
    #[serde(rename = ">=")]
    AtLeast,
    #[serde(rename = "==")]
    Equal,
}

/// A service-level constraint such as `ttft.p99 <= 200ms` or `error_rate == 0`.
///
/// Metric names are those of [`BenchSummary::metrics`](crate::BenchSummary::metrics), optionally
/// prefixed by a bench plan name (`concurrent.ttft.p99`). Latencies are in ms; a `ms` or `s`
/// suffix on the bound is understood.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Constraint {
    pub metric: String,
    pub op: Comparison,
    pub bound: f64,
}

impl Constraint {
    /// Whether `metrics` satisfies this constraint; a missing metric does not.
    pub fn holds(&self, metrics: &BTreeMap<String, f64>) -> bool {
        match metrics.get(&self.metric) {
            None => false,
            Some(v) if !v.is_finite() => false,
            Some(&v) => match self.op {
                Comparison::AtMost => v <= self.bound,
                Comparison::AtLeast => v >= self.bound,
                Comparison::Equal => (v - self.bound).abs() <= 1e-9 * self.bound.abs().max(1.0),
            },
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            Comparison::AtMost => "<=",
            Comparison::AtLeast => ">=",
            Comparison::Equal => "==",
        };
        write!(f, "{} {} {}", self.metric, op, crate::format_number(self.bound))
    }
}

impl FromStr for Constraint {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let (metric, op, rest) = ["<=", ">=", "=="]
            .iter()
            .find_map(|op| text.split_once(op).map(|(m, r)| (m, *op, r)))
            .ok_or_else(|| Error::config("constraint", format!("`{text}`: expected `METRIC <= VALUE`, `>=` or `==`")))?;
        let rest = rest.trim();
        let (number, scale) = if let Some(n) = rest.strip_suffix("ms") {
            (n, 1.0)
        } else if let Some(n) = rest.strip_suffix("us") {
            (n, 1e-3)
        } else if let Some(n) = rest.strip_suffix('s') {
            (n, 1000.0)
        } else if let Some(n) = rest.strip_suffix('%') {
            (n, 0.01)
        } else {
            (rest, 1.0)
        };
        let bound: f64 = number
            .trim()
            .parse()
            .map_err(|_| Error::config("constraint", format!("`{text}`: `{rest}` is not a number")))?;
        let op = match op {
            "<=" => Comparison::AtMost,
            ">=" => Comparison::AtLeast,
            _ => Comparison::Equal,
        };
        Ok(Constraint { metric: metric.trim().to_string(), op, bound: bound * scale })
    }
}

/// What the loop optimizes: one metric, a direction, and constraints that must hold.
///
/// ```
/// use autodebug_core::Objective;
/// let objective = Objective::minimize("e2e.mean").with_constraint("error_rate == 0".parse().unwrap());
/// let better = [("e2e.mean".to_string(), 200.0), ("error_rate".to_string(), 0.0)].into();
/// let worse = [("e2e.mean".to_string(), 300.0), ("error_rate".to_string(), 0.0)].into();
/// assert!(objective.is_better(&better, &worse));
/// assert!((objective.improvement_pct(300.0, 200.0) - 33.33).abs() < 0.01);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    pub metric: String,
    pub direction: Direction,
    #[serde(default)]
    pub constraints: Vec<Constraint>,
    /// A challenger must beat the champion by more than this many percent to replace it, so a
    /// difference inside run-to-run noise never crowns a configuration.
    #[serde(default = "default_noise_pct")]
    pub noise_pct: f64,
}

fn default_noise_pct() -> f64 {
    2.0
}

impl Objective {
    pub fn minimize(metric: impl Into<String>) -> Self {
        Objective { metric: metric.into(), direction: Direction::Minimize, constraints: Vec::new(), noise_pct: default_noise_pct() }
    }

    pub fn maximize(metric: impl Into<String>) -> Self {
        Objective { metric: metric.into(), direction: Direction::Maximize, constraints: Vec::new(), noise_pct: default_noise_pct() }
    }

    pub fn with_noise_pct(mut self, noise_pct: f64) -> Self {
        self.noise_pct = noise_pct.max(0.0);
        self
    }

    /// Whether `challenger` beats `incumbent` by more than the noise margin (feasibility first).
    pub fn beats_outside_noise(&self, challenger: &BTreeMap<String, f64>, incumbent: &BTreeMap<String, f64>) -> bool {
        self.beats_by(challenger, incumbent, self.noise_pct)
    }

    pub fn with_constraint(mut self, constraint: Constraint) -> Self {
        self.constraints.push(constraint);
        self
    }

    pub fn value(&self, metrics: &BTreeMap<String, f64>) -> Option<f64> {
        metrics.get(&self.metric).copied().filter(|v| v.is_finite())
    }

    /// Constraints that `metrics` breaks (a missing metric breaks its constraint).
    pub fn violations(&self, metrics: &BTreeMap<String, f64>) -> Vec<&Constraint> {
        self.constraints.iter().filter(|c| !c.holds(metrics)).collect()
    }

    pub fn is_feasible(&self, metrics: &BTreeMap<String, f64>) -> bool {
        self.value(metrics).is_some() && self.violations(metrics).is_empty()
    }

    /// Whether `a` is strictly better than `b`: feasible beats infeasible, then the objective decides.
    pub fn is_better(&self, a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> bool {
        self.beats_by(a, b, 0.0)
    }

    /// Feasible beats infeasible; between feasible ones, an improvement above `margin_pct` percent.
    fn beats_by(&self, a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>, margin_pct: f64) -> bool {
        match (self.is_feasible(a), self.is_feasible(b)) {
            (true, false) => true,
            (false, _) => false,
            (true, true) => match (self.value(a), self.value(b)) {
                (Some(x), Some(y)) if margin_pct == 0.0 => self.better_value(x, y),
                (Some(x), Some(y)) => self.improvement_pct(y, x) > margin_pct,
                _ => false,
            },
        }
    }

    pub fn better_value(&self, candidate: f64, incumbent: f64) -> bool {
        match self.direction {
            Direction::Minimize => candidate < incumbent,
            Direction::Maximize => candidate > incumbent,
        }
    }

    /// Improvement of `candidate` over `baseline` in percent of the baseline, positive when
    /// better in the objective's direction (a minimized 300 → 200 is 33.3%).
    pub fn improvement_pct(&self, baseline: f64, candidate: f64) -> f64 {
        if baseline == 0.0 {
            return 0.0;
        }
        match self.direction {
            Direction::Minimize => (baseline - candidate) / baseline * 100.0,
            Direction::Maximize => (candidate - baseline) / baseline * 100.0,
        }
    }

    pub fn describe(&self) -> String {
        let dir = match self.direction {
            Direction::Minimize => "minimize",
            Direction::Maximize => "maximize",
        };
        let mut text = format!("{dir} {}", self.metric);
        if !self.constraints.is_empty() {
            let cons: Vec<String> = self.constraints.iter().map(|c| c.to_string()).collect();
            text.push_str(&format!(" subject to {}", cons.join(", ")));
        }
        text
    }
}
