//! Rigor: spread across trials with a seeded bootstrap confidence interval, goodput against
//! SLOs, and the verdict of an A/B comparison.

use std::collections::BTreeMap;

use autodebug_core::rng::SplitMix64;
use autodebug_core::{BenchSummary, Direction, RequestRecord, stats};
use serde::{Deserialize, Serialize};

/// Bootstrap resamples; enough for a stable 95% percentile interval, cheap for a few trials.
pub const BOOTSTRAP_RESAMPLES: usize = 2_000;

/// One metric across trials: mean ± sample std, and a percentile bootstrap confidence interval
/// of the mean (resampling the trials with replacement, seeded, so it is reproducible).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricStats {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n − 1); 0 for a single trial.
    pub std: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    /// The confidence level of `[ci_low, ci_high]`, e.g. 0.95.
    pub confidence: f64,
    pub values: Vec<f64>,
}

impl MetricStats {
    /// Stats of `values` (non-finite values are dropped); `None` when none is left.
    pub fn of(values: &[f64], confidence: f64, seed: u64) -> Option<MetricStats> {
        let values: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let n = values.len();
        if n == 0 {
            return None;
        }
        let (ci_low, ci_high) = bootstrap_ci(&values, &[], confidence, seed, |a, _| mean(a));
        let mean = mean(&values);
        let std =
            if n > 1 { (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt() } else { 0.0 };
        Some(MetricStats { n, mean, std, ci_low, ci_high, confidence, values })
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// A percentile bootstrap interval of `statistic(a*, b*)` where `a*`, `b*` are resamples with
/// replacement of `a` and `b` (an empty `b` stays empty). Seeded: same inputs, same interval.
pub fn bootstrap_ci(
    a: &[f64],
    b: &[f64],
    confidence: f64,
    seed: u64,
    statistic: impl Fn(&[f64], &[f64]) -> f64,
) -> (f64, f64) {
    let mut rng = SplitMix64::new(seed ^ 0xb007_57a9);
    let estimates = stats::bootstrap(a, b, BOOTSTRAP_RESAMPLES, &mut rng, statistic);
    let tail = (1.0 - confidence.clamp(0.0, 1.0)) / 2.0;
    (stats::nearest_rank(&estimates, tail), stats::nearest_rank(&estimates, 1.0 - tail))
}

/// Stats of every flat metric ([`BenchSummary::metrics`]) across trial summaries.
pub fn trial_stats(trials: &[&BenchSummary], confidence: f64, seed: u64) -> BTreeMap<String, MetricStats> {
    let mut columns: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for summary in trials {
        for (name, value) in summary.metrics() {
            columns.entry(name).or_default().push(value);
        }
    }
    columns.into_iter().filter_map(|(name, values)| Some((name, MetricStats::of(&values, confidence, seed)?))).collect()
}

/// Service-level objectives a request must meet to count towards goodput; unset bounds are not checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpot_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2e_ms: Option<f64>,
}

impl Slo {
    pub fn is_empty(&self) -> bool {
        self.ttft_ms.is_none() && self.tpot_ms.is_none() && self.e2e_ms.is_none()
    }

    /// Whether `record` succeeded and meets every bound. A TPOT bound is met by a request with
    /// fewer than two output tokens (it has no TPOT).
    pub fn met_by(&self, record: &RequestRecord) -> bool {
        const NS_PER_MS: f64 = 1e6;
        let within = |bound: Option<f64>, ns: Option<f64>| match (bound, ns) {
            (None, _) => true,
            (Some(bound), Some(ns)) => ns / NS_PER_MS <= bound,
            (Some(_), None) => false,
        };
        record.error.is_none()
            && within(self.ttft_ms, record.ttft_ns.map(|v| v as f64))
            && within(self.e2e_ms, record.e2e_ns.map(|v| v as f64))
            && (self.tpot_ms.is_none() || record.tpot_ns().is_none() || within(self.tpot_ms, record.tpot_ns()))
    }
}

/// Requests meeting all SLOs, as a share of all measured requests and per second.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Goodput {
    pub slo: Slo,
    pub good_requests: u64,
    /// `good_requests` / measured requests (failures included).
    pub good_fraction: f64,
    /// `good_requests` / the run's duration (`summary.duration_s`).
    pub goodput_rps: f64,
}

/// Goodput of `records` measured over `duration_s` seconds.
pub fn goodput(records: &[RequestRecord], slo: Slo, duration_s: f64) -> Goodput {
    let good = records.iter().filter(|r| slo.met_by(r)).count() as u64;
    Goodput {
        slo,
        good_requests: good,
        good_fraction: if records.is_empty() { 0.0 } else { good as f64 / records.len() as f64 },
        goodput_rps: if duration_s > 0.0 { good as f64 / duration_s } else { 0.0 },
    }
}

/// How arm B compares with arm A.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Better,
    Worse,
    WithinNoise,
}

/// The verdict rule, on per-trial values of one metric: the difference of means (B − A) with a
/// seeded bootstrap CI (each arm's trials resampled independently). B is `Better`/`Worse` only
/// when the CI excludes 0 AND the relative difference |B − A| / |A| is at least
/// `min_relative_effect` (a few trials underestimate their spread, so tiny effects are not
/// trusted); otherwise `WithinNoise`.
pub fn verdict(
    a: &[f64],
    b: &[f64],
    direction: Direction,
    confidence: f64,
    min_relative_effect: f64,
    seed: u64,
) -> (Verdict, f64, (f64, f64)) {
    if a.is_empty() || b.is_empty() {
        return (Verdict::WithinNoise, f64::NAN, (f64::NAN, f64::NAN));
    }
    let difference = mean(b) - mean(a);
    let ci = bootstrap_ci(a, b, confidence, seed, |ra, rb| mean(rb) - mean(ra));
    let relative = if mean(a) != 0.0 { difference.abs() / mean(a).abs() } else { f64::INFINITY };
    let excludes_zero = ci.0 > 0.0 || ci.1 < 0.0;
    let verdict = if !excludes_zero || relative < min_relative_effect {
        Verdict::WithinNoise
    } else if (difference > 0.0) == (direction == Direction::Maximize) {
        Verdict::Better
    } else {
        Verdict::Worse
    };
    (verdict, difference, ci)
}

#[cfg(test)]
mod tests {
    use autodebug_core::ErrorClass;

    use super::*;

    #[test]
    fn stats_match_hand_computed_values_and_bootstrap_is_seeded() {
        let stats = MetricStats::of(&[2.0, 4.0, 6.0], 0.95, 1).unwrap();
        assert_eq!((stats.n, stats.mean, stats.std), (3, 4.0, 2.0));
        assert!(stats.ci_low >= 2.0 && stats.ci_high <= 6.0 && stats.ci_low < 4.0 && stats.ci_high > 4.0);
        assert_eq!(stats, MetricStats::of(&[2.0, 4.0, 6.0], 0.95, 1).unwrap());
        let one = MetricStats::of(&[5.0, f64::NAN], 0.95, 1).unwrap();
        assert_eq!((one.n, one.std, one.ci_low, one.ci_high), (1, 0.0, 5.0, 5.0));
        assert!(MetricStats::of(&[], 0.95, 1).is_none());
    }

    // Printed by this module's own bootstrap before it moved to `autodebug_core::stats`: saved
    // reports keep their intervals for the same trials and seed.
    #[test]
    fn intervals_are_those_the_previous_bootstrap_gave() {
        assert_eq!(bootstrap_ci(&[2.0, 4.0, 6.0], &[], 0.95, 1, |a, _| mean(a)), (2.0, 6.0));
        assert_eq!(bootstrap_ci(&[2.0, 4.0, 6.0, 7.5, 1.25], &[], 0.9, 3, |a, _| mean(a)), (2.5, 5.95));
        let (a, b) = ([100.0, 104.0, 98.0, 101.0], [80.0, 83.0, 79.0, 81.5]);
        assert_eq!(bootstrap_ci(&a, &b, 0.9, 7, |ra, rb| mean(rb) - mean(ra)), (-22.0, -17.75));
    }

    #[test]
    fn goodput_counts_requests_meeting_every_bound() {
        let ms = 1_000_000u64;
        let record = |ttft: u64, e2e: u64, out: u32| RequestRecord {
            ttft_ns: Some(ttft * ms),
            e2e_ns: Some(e2e * ms),
            output_tokens: Some(out),
            ..RequestRecord::default()
        };
        // TPOTs: (100-10)/9 = 10 ms, (200-50)/3 = 50 ms, single token: none.
        let records = vec![
            record(10, 100, 10),
            record(50, 200, 4),
            record(300, 300, 1),
            RequestRecord { error: Some(ErrorClass::Connect), ..RequestRecord::default() },
        ];
        let slo = Slo { ttft_ms: Some(100.0), tpot_ms: Some(20.0), e2e_ms: None };
        let g = goodput(&records, slo, 2.0);
        assert_eq!((g.good_requests, g.good_fraction, g.goodput_rps), (1, 0.25, 0.5));
        let slo = Slo { ttft_ms: Some(400.0), tpot_ms: Some(20.0), e2e_ms: Some(1000.0) };
        assert_eq!(goodput(&records, slo, 2.0).good_requests, 2, "the 1-token request has no TPOT to miss");
        assert_eq!(goodput(&records, Slo::default(), 1.0).good_requests, 3, "no bounds: every success counts");
    }

    #[test]
    fn verdicts_follow_direction_and_noise() {
        let a = [100.0, 102.0, 98.0, 101.0];
        let faster = [80.0, 82.0, 79.0, 81.0];
        assert_eq!(verdict(&a, &faster, Direction::Minimize, 0.95, 0.02, 7).0, Verdict::Better);
        assert_eq!(verdict(&a, &faster, Direction::Maximize, 0.95, 0.02, 7).0, Verdict::Worse);
        let same = [101.0, 99.0, 100.0, 102.0];
        assert_eq!(verdict(&a, &same, Direction::Minimize, 0.95, 0.02, 7).0, Verdict::WithinNoise);
        // A clear but tiny shift stays within noise under a 2% minimum effect.
        let tiny = [100.5, 102.5, 98.5, 101.5];
        assert_eq!(verdict(&a, &tiny, Direction::Minimize, 0.95, 0.02, 7).0, Verdict::WithinNoise);
        let (_, diff, (lo, hi)) = verdict(&a, &faster, Direction::Minimize, 0.95, 0.02, 7);
        assert!((diff - (-19.75)).abs() < 1e-9 && lo <= diff && diff <= hi && hi < 0.0);
    }
}
