use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Whether bigger or smaller is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    // The aliases read A/B comparisons saved when the benchmarker had its own direction type.
    #[serde(alias = "lower_is_better")]
    Minimize,
    #[serde(alias = "higher_is_better")]
    Maximize,
}

impl Direction {
    /// The direction a metric improves in, from its name: rates of useful work (throughputs,
    /// goodput, capacity under an SLO, anything `*_per_s`), cache hits, speculative acceptance and
    /// completed requests go up; latencies, errors, costs, durations and everything unknown go
    /// down. A plan prefix (`chat.`) and a statistic suffix (`.p99`, `.mean`) do not change it.
    ///
    /// ```
    /// use autodebug_core::Direction;
    /// assert_eq!(Direction::for_metric("chat.ttft.p99"), Direction::Minimize);
    /// assert_eq!(Direction::for_metric("output_throughput"), Direction::Maximize);
    /// ```
    pub fn for_metric(metric: &str) -> Direction {
        let leaf = metric.rsplit('.').find(|part| !is_statistic(part)).unwrap_or(metric);
        let maximized = leaf.contains("throughput")
            || leaf.contains("goodput")
            || leaf.ends_with("_per_s")
            || leaf.ends_with("_per_second")
            || leaf.ends_with("hit_rate")
            || leaf.ends_with("acceptance_rate")
            || leaf == "cached_token_ratio"
            || leaf == "accept_length"
            // Capacity under an SLO (req/s) and the rate above it that broke the SLO.
            || leaf == crate::CAPACITY_METRIC
            || leaf == "capacity_broke_at"
            // Requests a run measured: within a fixed duration more is more served (failures count
            // against `errors` and `error_rate`).
            || leaf == "requests";
        if maximized { Direction::Maximize } else { Direction::Minimize }
    }
}

/// `min`/`minimize` or `max`/`maximize`, any case.
///
/// ```
/// use autodebug_core::Direction;
/// assert_eq!("MAX".parse::<Direction>().unwrap(), Direction::Maximize);
/// assert!("down".parse::<Direction>().is_err());
/// ```
impl FromStr for Direction {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        match text.to_ascii_lowercase().as_str() {
            "min" | "minimize" | "minimise" => Ok(Direction::Minimize),
            "max" | "maximize" | "maximise" => Ok(Direction::Maximize),
            other => Err(Error::config("direction", format!("`{other}`: expected `min` or `max`"))),
        }
    }
}

fn is_statistic(part: &str) -> bool {
    matches!(part, "mean" | "avg" | "std" | "min" | "max" | "median")
        || part.strip_prefix('p').is_some_and(|digits| !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()))
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
        let (metric, op, rest) =
            ["<=", ">=", "=="].iter().find_map(|op| text.split_once(op).map(|(m, r)| (m, *op, r))).ok_or_else(
                || Error::config("constraint", format!("`{text}`: expected `METRIC <= VALUE`, `>=` or `==`")),
            )?;
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

/// `minimize e2e.mean`, `maximize output_throughput`, `min ttft.p99` or a bare metric name (whose
/// direction comes from [`Direction::for_metric`]); no constraints.
///
/// ```
/// use autodebug_core::{Direction, Objective};
/// assert_eq!("MAX output_throughput".parse::<Objective>().unwrap(), Objective::maximize("output_throughput"));
/// assert_eq!("ttft.p99".parse::<Objective>().unwrap().direction, Direction::Minimize);
/// assert!("shrink ttft.p99".parse::<Objective>().unwrap_err().to_string().contains("shrink"));
/// ```
impl FromStr for Objective {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let bad = || {
            Error::config(
                "objective",
                format!("`{text}`: expected `minimize METRIC` or `maximize METRIC`, e.g. `minimize e2e.mean`"),
            )
        };
        match words.as_slice() {
            [metric] => Ok(match Direction::for_metric(metric) {
                Direction::Minimize => Objective::minimize(*metric),
                Direction::Maximize => Objective::maximize(*metric),
            }),
            [verb, metric] => match verb.parse::<Direction>() {
                Ok(Direction::Minimize) => Ok(Objective::minimize(*metric)),
                Ok(Direction::Maximize) => Ok(Objective::maximize(*metric)),
                Err(_) => Err(bad()),
            },
            _ => Err(bad()),
        }
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
        Objective {
            metric: metric.into(),
            direction: Direction::Minimize,
            constraints: Vec::new(),
            noise_pct: default_noise_pct(),
        }
    }

    pub fn maximize(metric: impl Into<String>) -> Self {
        Objective {
            metric: metric.into(),
            direction: Direction::Maximize,
            constraints: Vec::new(),
            noise_pct: default_noise_pct(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BenchSummary, Distribution, canonical, pricing, rules};

    /// Every flat metric a benchmark run emits, with each distribution present.
    fn bench_metric_names() -> Vec<String> {
        let filled = Distribution { count: 1, ..Default::default() };
        let summary = BenchSummary {
            ttft_ms: filled,
            ttst_ms: filled,
            tpot_ms: filled,
            itl_ms: filled,
            inter_chunk_ms: filled,
            e2e_ms: filled,
            queue_delay_ms: filled,
            cached_token_ratio: Some(0.5),
            output_ngram_predictability: Some(0.5),
            capacity: Some(crate::CapacityOutcome { rate: 2.0, broke_at: Some(2.5), ..Default::default() }),
            ..Default::default()
        };
        summary.metrics().into_keys().collect()
    }

    #[test]
    fn every_metric_the_project_emits_improves_in_the_direction_its_meaning_says() {
        use Direction::{Maximize as Up, Minimize as Down};
        let latencies = ["ttft", "ttst", "tpot", "itl", "inter_chunk", "e2e", "queue_delay"];
        let mut expected: BTreeMap<String, Direction> = latencies
            .iter()
            .flat_map(|name| Distribution::STATS.iter().map(move |stat| (format!("{name}.{stat}"), Down)))
            .collect();
        let named = [
            // BenchSummary::metrics beyond the latency distributions.
            ("request_throughput", Up),
            ("output_throughput", Up),
            ("total_token_throughput", Up),
            ("requests", Up),
            ("cached_token_ratio", Up),
            ("errors", Down),
            ("error_rate", Down),
            ("output_ngram_predictability", Down),
            // A capacity search's outcome: the rate that held, the one that broke, the steps it took.
            ("capacity", Up),
            ("capacity_broke_at", Up),
            ("capacity_steps", Down),
        ];
        expected.extend(named.iter().map(|(n, d)| (n.to_string(), *d)));
        let emitted = bench_metric_names();
        let undecided: Vec<&String> = emitted.iter().filter(|n| !expected.contains_key(*n)).collect();
        assert!(undecided.is_empty(), "decide a direction for {undecided:?} in this table");

        let elsewhere = [
            // Plan-prefixed copies (Session::bench_metrics) and other statistic spellings.
            ("chat.output_throughput", Up),
            ("concurrent.request_throughput", Up),
            ("chat.e2e.mean", Down),
            ("chat.error_rate", Down),
            ("chat.capacity", Up),
            ("long_prompt.capacity_broke_at", Up),
            ("ttft.median", Down),
            ("ttft.avg", Down),
            // Ingested reports (vLLM, SGLang, GuideLLM, AIPerf).
            ("goodput", Up),
            ("input_throughput", Up),
            ("accept_length", Up),
            ("request_goodput", Up),
            ("tokens_per_second", Up),
            ("requests_per_second", Up),
            ("output_tokens_per_second", Up),
            // Cost metrics the session derives.
            (pricing::COST_PER_MTOK, Down),
            ("chat.cost_per_mtok", Down),
            (pricing::GPU_HOUR_USD, Down),
            // Telemetry and analyzer signals.
            (canonical::GEN_THROUGHPUT, Up),
            ("sglang.gen_throughput", Up),
            ("vllm.log.avg_generation_throughput", Up),
            ("vllm:avg_generation_throughput_toks_per_s", Up),
            (canonical::PREFIX_HIT_RATE, Up),
            ("sglang.cache_hit_rate", Up),
            (rules::derived::SPEC_ACCEPTANCE_RATE, Up),
            ("derived.spec_acceptance_rate", Up),
            (canonical::TTFT_S, Down),
            (canonical::QUEUE_TIME_S, Down),
            (canonical::PREEMPTIONS, Down),
            (canonical::SCHEDULER_OVERHEAD_SHARE, Down),
            (canonical::SCHEDULER_STEP_MS, Down),
            ("kernel_total_us", Down),
            ("vllm.log.init_engine_s", Down),
        ];
        expected.extend(elsewhere.iter().map(|(n, d)| (n.to_string(), *d)));
        for (metric, direction) in &expected {
            assert_eq!(Direction::for_metric(metric), *direction, "{metric}");
        }
    }

    #[test]
    fn old_benchmark_direction_names_still_read() {
        let read = |text: &str| serde_json::from_str::<Direction>(text).unwrap();
        assert_eq!(read("\"higher_is_better\""), Direction::Maximize);
        assert_eq!(read("\"lower_is_better\""), Direction::Minimize);
        assert_eq!(serde_json::to_string(&Direction::Maximize).unwrap(), "\"maximize\"");
    }
}
