//! Measurement noise the planners cannot see through.
//!
//! The truth of a configuration is one noise-free run (the engine's per-step timing noise off,
//! the reference seed's prompts). What a planner sees is that run's latencies and throughputs,
//! each multiplied by a mean-one lognormal factor drawn from a stream seeded by (scenario, run
//! seed, evaluation index): a repeat measurement of the same configuration is a fresh draw, and
//! the first draw is never the truth. The factor's spread per metric is the measured
//! seed-to-seed spread of that metric: [`NoiseLevels::measure`] runs the scenario's starting
//! configuration under [`NOISE_SEEDS`] seeds with the simulator's own noise on (per-step CPU and
//! GPU time, prompts, output lengths) and takes each metric's relative standard deviation. An
//! open-loop workload keeps one arrival trace across those runs (a benchmark replays the same
//! trace on every configuration it compares), so arrival-time luck is not counted as noise.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::rng::{SimDraws, SplitMix64, seeded};
use crate::{SimConfig, SimWorkload, simulate};

/// Runs per scenario that the noise levels are measured from.
pub const NOISE_SEEDS: u64 = 8;

/// Relative standard deviation of each measured metric, with where the figure came from.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NoiseLevels {
    /// Metric name -> standard deviation over the mean, across runs (0.01 = 1%).
    pub relative_sd: BTreeMap<String, f64>,
    /// Multiplier applied to every measured level (1 = as measured, 0 = no noise).
    pub scale: f64,
    pub source: String,
}

/// Whether a metric is a timing (latency or throughput) that run-to-run variation moves;
/// counts such as `errors` and `requests` are exact.
fn timed(metric: &str) -> bool {
    ["ttft.", "tpot.", "itl.", "e2e."].iter().any(|p| metric.starts_with(p)) || metric.ends_with("_throughput")
}

impl NoiseLevels {
    /// Measures `config`'s seed-to-seed spread under `workload` ([`NOISE_SEEDS`] runs with the
    /// simulator's default step noise); `None` when the configuration does not run.
    pub fn measure(config: &SimConfig, workload: &SimWorkload, scale: f64) -> Option<Self> {
        // An open-loop benchmark replays one arrival trace (the reference run's) on every
        // evaluation, as real load generators replay a recorded trace: its spread is the
        // engine's and the prompts', not that of a fresh Poisson draw per measurement.
        let mut workload = workload.clone();
        if workload.arrival_rate.is_some() && workload.arrival_seed.is_none() {
            workload.arrival_seed = Some(super::REFERENCE_SEED);
        }
        let mut runs: Vec<BTreeMap<String, f64>> = Vec::new();
        for seed in 1..=NOISE_SEEDS {
            let result = simulate(config, &workload, 1000 + seed);
            if result.failed {
                return None;
            }
            runs.push(result.metrics());
        }
        let mut relative_sd = BTreeMap::new();
        for name in runs[0].keys().filter(|k| timed(k)) {
            let values: Vec<f64> = runs.iter().filter_map(|r| r.get(name).copied()).collect();
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            if !(mean.is_finite() && mean > 0.0) || values.len() < 2 {
                continue;
            }
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
            relative_sd.insert(name.clone(), var.sqrt() / mean);
        }
        Some(NoiseLevels {
            relative_sd,
            scale,
            source: format!(
                "simulator seed-to-seed spread of the starting configuration: {NOISE_SEEDS} virtual-time runs, \
                 step noise log-sigma {:.3}, prompts and output lengths reseeded{}",
                config.noise,
                if workload.arrival_rate.is_some() { ", arrival trace replayed" } else { "" }
            ),
        })
    }

    /// No noise at all.
    pub fn none() -> Self {
        NoiseLevels { relative_sd: BTreeMap::new(), scale: 0.0, source: "noise off".into() }
    }

    /// The relative standard deviation a measurement of `metric` gets (scale included).
    pub fn sd(&self, metric: &str) -> f64 {
        self.scale * self.relative_sd.get(metric).copied().unwrap_or(0.0)
    }

    /// `truth` as one noisy measurement would show it.
    pub(crate) fn apply(&self, truth: &BTreeMap<String, f64>, stream: &mut SplitMix64) -> BTreeMap<String, f64> {
        truth
            .iter()
            .map(|(name, value)| {
                let sd = self.sd(name);
                // A lognormal with this log-sigma has (for small sigma) this relative spread.
                let v = if sd > 0.0 && timed(name) { value * stream.noise_factor(sd) } else { *value };
                (name.clone(), v)
            })
            .collect()
    }
}

/// The noise stream of evaluation `eval` of run `run_seed` on `scenario`: the same for every
/// planner and for `autodebug sim eval`, different for every evaluation.
pub(crate) fn stream(scenario: &str, run_seed: u64, eval: u64) -> SplitMix64 {
    // FNV-1a of the name, then the two numbers mixed in through splitmix's finalizer.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in scenario.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut mix = seeded(h ^ run_seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let a = mix.next_u64();
    seeded(a ^ eval.wrapping_mul(0xD1B5_4A32_D192_ED03))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_by_seed_and_by_evaluation_and_repeat_for_the_same_pair() {
        let draw = |s: &str, seed, eval| stream(s, seed, eval).next_u64();
        assert_eq!(draw("a", 1, 1), draw("a", 1, 1));
        assert_ne!(draw("a", 1, 1), draw("a", 1, 2));
        assert_ne!(draw("a", 1, 1), draw("a", 2, 1));
        assert_ne!(draw("a", 1, 1), draw("b", 1, 1));
    }

    // Printed before the generator moved into autodebug-core: the published tuning-suite figures
    // depend on these draws.
    #[test]
    fn a_stream_draws_what_it_drew_before_the_generator_moved() {
        let mut noise = stream("kv-starved", 3, 2);
        assert_eq!(noise.next_u64(), 10882119652374640751);
        assert_eq!(noise.noise_factor(0.05), 0.9789858830786397);
    }

    #[test]
    fn counts_stay_exact_and_timings_move() {
        let levels = NoiseLevels {
            relative_sd: BTreeMap::from([("e2e.mean".to_string(), 0.05), ("errors".to_string(), 0.5)]),
            scale: 1.0,
            source: String::new(),
        };
        let truth = BTreeMap::from([("e2e.mean".to_string(), 100.0), ("errors".to_string(), 0.0)]);
        let seen = levels.apply(&truth, &mut stream("x", 1, 1));
        assert_ne!(seen["e2e.mean"], 100.0);
        assert_eq!(seen["errors"], 0.0);
        let off = NoiseLevels::none().apply(&truth, &mut stream("x", 1, 1));
        assert_eq!(off, truth);
    }
}
