//! Capacity under an SLO in virtual time: the highest open-loop request rate at which a simulated
//! engine (the built-in model or a fitted twin) holds a [`CapacityGoal`], found by the same walk
//! as the real search (`autodebug bench --find-max-rate`), so that a prediction is of what that
//! search measures.
//!
//! The real search screens each rate with one short step from an idle server
//! ([`CapacityGoal::screening_requests`]: ten requests or a step's worth), judged by the share of
//! its requests over the bound; with `boundary_trials` above 1 it then confirms the bracket's two
//! ends with hundreds of pooled requests. A short step's verdict is a draw: a queue has little
//! time to build and a handful of requests rarely shows a 1% tail. Here each screening step is run
//! on [`SCREENING_DRAWS`] arrival traces and holds when most of them hold (the search's median
//! outcome); a confirmation is one long run judged by its p99. Deterministic for one seed.
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

/// Requests per confirming run at least: a p99 over 400 requests sits between the 4th and 5th
/// slowest, so one straggler does not decide it (the real search pools about as many, 408 at its
/// defaults, before a rate can be shown to hold).
pub const MIN_STEP_REQUESTS: usize = 400;
/// Requests per run at most, so a high rate with long steps stays cheap to screen.
const MAX_STEP_REQUESTS: usize = 4_000;
/// Arrival traces each short screening step is run on; odd, so a majority always exists.
pub const SCREENING_DRAWS: u64 = 9;
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

/// Whether a long run holds `goal`: its p99s within the bounds.
fn p99_holds(run: &SimResult, goal: &CapacityGoal) -> bool {
    let metrics = run.metrics();
    let under = |metric: &str, bound: f64| metrics.get(metric).is_some_and(|v| v.is_finite() && *v <= bound);
    !run.failed
        && under("ttft.p99", goal.ttft_p99_ms)
        && goal.tpot_p99_ms.is_none_or(|bound| under("tpot.p99", bound))
        && metrics.get("error_rate").is_some_and(|rate| *rate <= goal.max_error_rate)
}

/// Whether a short step holds `goal` as the real search's point estimate judges one: at most the
/// p99's share of its requests over each bound, and errors within the budget.
fn share_holds(run: &SimResult, goal: &CapacityGoal) -> bool {
    let sent = run.ttft_ms.len() + run.errors;
    let allowed = CapacityGoal::P99_TAIL * sent as f64;
    let over = |values: &[f64], bound: f64| values.iter().filter(|v| **v > bound).count() as f64;
    !run.failed
        && sent > 0
        && over(&run.ttft_ms, goal.ttft_p99_ms) <= allowed
        && goal.tpot_p99_ms.is_none_or(|bound| over(&run.tpot_ms, bound) <= allowed)
        && run.errors as f64 <= goal.max_error_rate * sent as f64
}

/// Runs pooled into one, as the real search pools the trials at a rate.
fn pooled(runs: Vec<SimResult>) -> SimResult {
    let mut runs = runs.into_iter();
    let mut out = runs.next().unwrap_or_default();
    for run in runs {
        out.ttft_ms.extend(run.ttft_ms);
        out.tpot_ms.extend(run.tpot_ms);
        out.e2e_ms.extend(run.e2e_ms);
        out.errors += run.errors;
        out.failed |= run.failed;
        out.prompt_tokens += run.prompt_tokens;
        out.output_tokens += run.output_tokens;
        out.duration_s += run.duration_s;
    }
    if out.duration_s > 0.0 {
        out.output_throughput = out.output_tokens as f64 / out.duration_s;
        out.request_throughput = out.e2e_ms.len() as f64 / out.duration_s;
    }
    out
}

/// One rate's verdict so far.
struct Probe {
    rate: f64,
    holds: bool,
    /// Confirmed, or screened by a search that confirms nothing (`boundary_trials: 1`).
    settled: bool,
    figures: SimResult,
}

/// The highest open-loop rate at which `engine` holds `goal` on `workload`'s requests (its lengths
/// and prefix sharing; its load gives way to the rates tried). Deterministic for one `seed`.
pub fn simulated_capacity(
    engine: &impl Simulated,
    workload: &SimWorkload,
    goal: &CapacityGoal,
    seed: u64,
) -> SimCapacity {
    let step_s = goal.step_ms as f64 / 1000.0;
    let run_at = |rate: f64, requests: usize, seed: u64| {
        let mut step = workload.clone().with_arrival_rate(rate).with_arrival_seed(seed);
        step.requests = requests.min(MAX_STEP_REQUESTS);
        crate::simulate::simulate(engine, &step, seed)
    };
    let screen = |rate: f64| -> (bool, SimResult) {
        let requests = goal.screening_requests(rate);
        if requests >= MIN_STEP_REQUESTS {
            let run = run_at(rate, requests, seed);
            return (share_holds(&run, goal), run);
        }
        let runs: Vec<SimResult> = (0..SCREENING_DRAWS).map(|draw| run_at(rate, requests, seed + draw)).collect();
        let held = runs.iter().filter(|run| share_holds(run, goal)).count() as u64;
        (2 * held > SCREENING_DRAWS, pooled(runs))
    };
    let confirm = |rate: f64| -> (bool, SimResult) {
        let run = run_at(rate, ((rate * step_s).ceil() as usize).max(MIN_STEP_REQUESTS), seed);
        (p99_holds(&run, goal), run)
    };
    let (min, max) = (goal.min_rate.max(f64::MIN_POSITIVE), goal.max_rate.max(goal.min_rate));
    let max_steps = MAX_STEPS.min(goal.max_steps.max(1) as usize);
    let mut probes: Vec<Probe> = Vec::new();
    let mut steps = Vec::new();
    while steps.len() < max_steps {
        let held = probes.iter().filter(|p| p.holds).map(|p| p.rate).reduce(f64::max);
        let broke = probes.iter().filter(|p| !p.holds).map(|p| p.rate).reduce(f64::min);
        let unsettled = |rate: f64| probes.iter().any(|p| p.rate == rate && !p.settled);
        // The real search's next trial, step for step: bracket by doubling or halving, bisect,
        // then confirm the bracket's ends.
        let (rate, confirming) = match (held, broke) {
            (None, None) => (goal.start_rate.clamp(min, max), false),
            (Some(low), None) if low >= max => match unsettled(low) {
                true => (low, true),
                false => break,
            },
            (Some(low), None) => ((low * 2.0).min(max), false),
            (None, Some(high)) if high <= min => match unsettled(high) {
                true => (high, true),
                false => break,
            },
            (None, Some(high)) => ((high / 2.0).max(min), false),
            (Some(low), Some(high)) if high / low <= 1.0 + goal.tolerance => {
                if unsettled(low) {
                    (low, true)
                } else if unsettled(high) {
                    (high, true)
                } else {
                    break;
                }
            }
            (Some(low), Some(high)) => ((low * high).sqrt(), false),
        };
        let (holds, figures) = if confirming { confirm(rate) } else { screen(rate) };
        let settled = confirming || goal.boundary_trials <= 1;
        steps.push((rate, holds));
        probes.retain(|p| p.rate != rate);
        probes.push(Probe { rate, holds, settled, figures });
    }
    let held = probes.iter().filter(|p| p.holds).max_by(|a, b| a.rate.total_cmp(&b.rate));
    let broke_at = probes.iter().filter(|p| !p.holds).map(|p| p.rate).reduce(f64::min);
    let (capacity, figures) = match held {
        Some(probe) => (probe.rate, probe.figures.metrics()),
        None => (
            0.0,
            probes.iter().min_by(|a, b| a.rate.total_cmp(&b.rate)).map(|p| p.figures.metrics()).unwrap_or_default(),
        ),
    };
    SimCapacity { capacity, broke_at, steps, metrics: figures }
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

    /// A search that confirms nothing (`boundary_trials: 1`) answers from short steps started on
    /// an idle server, where a queue has little time to build: it lands above the rate a long
    /// confirming run holds, as the real search does, and the twin must predict that search.
    #[test]
    fn a_search_of_short_unconfirmed_steps_holds_a_higher_rate_than_a_confirmed_one() {
        let engine = sglang(&["--max-running-requests", "1"]);
        let workload = SimWorkload::sequential(32, 256, 128);
        let mut confirmed = goal();
        (confirmed.tpot_p99_ms, confirmed.step_ms, confirmed.tolerance) = (None, 2_000, 0.05);
        let screened = CapacityGoal { boundary_trials: 1, ..confirmed.clone() };
        let (long, short) = (
            simulated_capacity(&engine, &workload, &confirmed, 5),
            simulated_capacity(&engine, &workload, &screened, 5),
        );
        assert!(long.capacity > 0.0, "{long:?}");
        assert!(short.capacity > long.capacity * (1.0 + confirmed.tolerance), "{short:?} vs {long:?}");
        let requests = confirmed.screening_requests(short.capacity);
        assert!(requests < MIN_STEP_REQUESTS, "{requests} requests: a short step");
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
