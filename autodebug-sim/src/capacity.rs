//! Capacity under an SLO in virtual time: the highest open-loop request rate at which a simulated
//! engine (the built-in model or a fitted twin) holds a [`CapacityGoal`], found by the same
//! bracket-then-bisect walk as the real search (`autodebug bench --find-max-rate`).
//!
//! A virtual step costs milliseconds, so each one is long enough in requests for its p99 to be a
//! percentile rather than the step's slowest request, and the arrival trace is fixed: the answer
//! is the rate the engine model sustains, with none of a short real step's luck. A real search
//! with short steps can therefore land above it near a noisy boundary.
//!
//! ```
//! use autodebug_core::CapacityGoal;
//! use autodebug_sim::{EngineKind, SimConfig, SimWorkload, simulated_capacity};
//! let serial = SimConfig::from_args(EngineKind::Sglang, "H100", "qwen1.5-0.5b", &["--max-running-requests".into(), "1".into()]).unwrap();
//! let batched = SimConfig::from_args(EngineKind::Sglang, "H100", "qwen1.5-0.5b", &["--max-running-requests".into(), "64".into()]).unwrap();
//! let goal = CapacityGoal::ttft_p99_ms(500.0);
//! let workload = SimWorkload::sequential(32, 256, 128);
//! let (one, many) = (simulated_capacity(&serial, &workload, &goal, 1), simulated_capacity(&batched, &workload, &goal, 1));
//! assert!(many.capacity > 2.0 * one.capacity, "{one:?} {many:?}");
//! ```

use std::collections::BTreeMap;

use autodebug_core::CapacityGoal;

use crate::simulate::{SimResult, SimWorkload, Simulated};

/// Requests per virtual step at least: a p99 over 400 requests sits between the 4th and 5th
/// slowest, so one straggler does not decide a step.
pub const MIN_STEP_REQUESTS: usize = 400;
/// Requests per virtual step at most, so a high rate with long steps stays cheap to screen.
const MAX_STEP_REQUESTS: usize = 4_000;
/// Steps at most; the walk needs about `log2(max/min)` to bracket and a handful to bisect.
const MAX_STEPS: usize = 40;

/// What [`simulated_capacity`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct SimCapacity {
    /// The highest rate that held, req/s; 0 when even the goal's `min_rate` broke the SLO.
    pub capacity: f64,
    /// The lowest rate that broke it; `None` when the goal's `max_rate` held.
    pub broke_at: Option<f64>,
    /// Every rate tried, in order, and whether it held.
    pub steps: Vec<(f64, bool)>,
    /// The figures of the step at `capacity` (those of the lowest rate tried when none held), as
    /// the real search reports the figures of the rate that held.
    pub metrics: BTreeMap<String, f64>,
}

impl SimCapacity {
    /// `metrics` with the capacity figures under the bench's names (`capacity`,
    /// `capacity_broke_at`, `capacity_steps`).
    pub fn all_metrics(&self) -> BTreeMap<String, f64> {
        let mut out = self.metrics.clone();
        out.insert(autodebug_core::CAPACITY_METRIC.into(), self.capacity);
        if let Some(broke_at) = self.broke_at {
            out.insert("capacity_broke_at".into(), broke_at);
        }
        out.insert("capacity_steps".into(), self.steps.len() as f64);
        out
    }
}

/// Whether one step's run holds `goal`.
fn holds(run: &SimResult, goal: &CapacityGoal) -> bool {
    let metrics = run.metrics();
    let under = |metric: &str, bound: f64| metrics.get(metric).is_some_and(|v| v.is_finite() && *v <= bound);
    !run.failed
        && under("ttft.p99", goal.ttft_p99_ms)
        && goal.tpot_p99_ms.is_none_or(|bound| under("tpot.p99", bound))
        && metrics.get("error_rate").is_some_and(|rate| *rate <= goal.max_error_rate)
}

/// The highest open-loop rate at which `engine` holds `goal` on `workload`'s requests (its lengths
/// and prefix sharing; its load gives way to the rates tried). Deterministic for one `seed`: every
/// step replays the arrival trace of `seed`, scaled to its rate.
pub fn simulated_capacity(
    engine: &impl Simulated,
    workload: &SimWorkload,
    goal: &CapacityGoal,
    seed: u64,
) -> SimCapacity {
    let step_s = goal.step_ms as f64 / 1000.0;
    let run_at = |rate: f64| {
        let requests = ((rate * step_s).ceil() as usize).clamp(MIN_STEP_REQUESTS, MAX_STEP_REQUESTS);
        let mut step = workload.clone().with_arrival_rate(rate).with_arrival_seed(seed);
        step.requests = requests;
        crate::simulate::simulate(engine, &step, seed)
    };
    let (min, max) = (goal.min_rate.max(f64::MIN_POSITIVE), goal.max_rate.max(goal.min_rate));
    let mut rate = goal.start_rate.clamp(min, max);
    let (mut held, mut broke): (Option<(f64, SimResult)>, Option<f64>) = (None, None);
    let mut lowest: Option<(f64, SimResult)> = None;
    let mut steps = Vec::new();
    while steps.len() < MAX_STEPS {
        let run = run_at(rate);
        let ok = holds(&run, goal);
        steps.push((rate, ok));
        if lowest.as_ref().is_none_or(|(low, _)| rate < *low) {
            lowest = Some((rate, run.clone()));
        }
        if ok {
            held = Some((rate, run));
        } else {
            broke = Some(broke.map_or(rate, |b: f64| b.min(rate)));
        }
        rate = match (&held, broke) {
            (None, _) if rate <= min => break,
            (None, _) => (rate / 2.0).max(min),
            (Some((low, _)), None) if *low >= max => break,
            (Some((low, _)), None) => (low * 2.0).min(max),
            (Some((low, _)), Some(high)) if high <= low * (1.0 + goal.tolerance) => break,
            (Some((low, _)), Some(high)) => (low * high).sqrt(),
        };
    }
    let (capacity, figures) = match held {
        Some((rate, run)) => (rate, run),
        None => (0.0, lowest.map(|(_, run)| run).unwrap_or_default()),
    };
    SimCapacity { capacity, broke_at: broke, steps, metrics: figures.metrics() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EngineKind, SimConfig};

    fn sglang(flags: &[&str]) -> SimConfig {
        let args: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        SimConfig::from_args(EngineKind::Sglang, "H100", "qwen1.5-0.5b", &args).unwrap()
    }

    fn goal() -> CapacityGoal {
        let mut goal = CapacityGoal::ttft_p99_ms(500.0);
        goal.tpot_p99_ms = Some(30.0);
        goal
    }

    /// The answer is a boundary: the capacity holds, the rate that broke is within the tolerance
    /// above it, and the rate just past the bracket breaks when run on its own.
    #[test]
    fn the_capacity_holds_and_the_rate_past_the_bracket_breaks() {
        let engine = sglang(&["--max-running-requests", "4"]);
        let workload = SimWorkload::sequential(32, 256, 128);
        let found = simulated_capacity(&engine, &workload, &goal(), 3);
        let broke = found.broke_at.expect("a 4-request cap breaks below the default max rate");
        assert!(found.capacity > 0.0 && broke > found.capacity, "{found:?}");
        assert!(broke <= found.capacity * (1.0 + goal().tolerance) + 1e-9, "{found:?}");
        assert!(found.metrics["ttft.p99"] <= 500.0, "{:?}", found.metrics);
        assert!(found.steps.iter().any(|(r, ok)| *r == found.capacity && *ok), "{found:?}");
        assert_eq!(found, simulated_capacity(&engine, &workload, &goal(), 3), "one seed, one answer");
    }

    #[test]
    fn an_engine_that_breaks_at_the_lowest_rate_has_capacity_zero_and_its_figures() {
        let engine = sglang(&["--max-running-requests", "1"]);
        let mut impossible = goal();
        impossible.ttft_p99_ms = 1.0;
        let found = simulated_capacity(&engine, &SimWorkload::sequential(8, 256, 128), &impossible, 1);
        assert_eq!(found.capacity, 0.0);
        assert_eq!(found.steps.last().map(|s| s.0), Some(impossible.min_rate));
        assert!(found.all_metrics()["ttft.p99"] > 1.0, "{:?}", found.metrics);
        assert_eq!(found.all_metrics()["capacity"], 0.0);
    }

    #[test]
    fn an_engine_that_holds_the_highest_rate_scores_it_with_no_broken_rate() {
        let engine = sglang(&[]);
        let mut easy = goal();
        (easy.max_rate, easy.ttft_p99_ms, easy.tpot_p99_ms) = (4.0, 60_000.0, None);
        let found = simulated_capacity(&engine, &SimWorkload::sequential(8, 16, 8), &easy, 1);
        assert_eq!((found.capacity, found.broke_at), (4.0, None), "{found:?}");
        assert!(!found.all_metrics().contains_key("capacity_broke_at"));
    }
}
