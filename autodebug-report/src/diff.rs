//! What changed between two iterations: configuration, metrics, and (from per-request records)
//! whether a latency difference is real or run-to-run noise.
//!
//! Two tests back the per-request verdict, since a latency distribution is skewed and heavy
//! tailed: a Mann-Whitney U test (rank based, no normality assumption) and a percentile
//! bootstrap interval of the change of the median. A difference counts as significant only when
//! both agree (p < 0.05 and the 95% interval excludes zero).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use autodebug_core::rng::SplitMix64;
use autodebug_core::{Direction, Iteration, RequestRecord, stats};

/// One knob that differs. Values follow [`Change`](autodebug_core::Change): `None` is unset, a switch is `"true"`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigChange {
    /// A launch flag (`--schedule-policy`) or a spec field (`model`, `image`, `resources.gpu`).
    pub knob: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// One metric in both iterations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricDelta {
    pub name: String,
    pub a: Option<f64>,
    pub b: Option<f64>,
    /// Change from `a` to `b` in percent of `a`.
    pub change_pct: Option<f64>,
    pub direction: Direction,
    /// Whether `b` is better than `a` in the metric's direction (`None` when either is missing or equal).
    pub better: Option<bool>,
    /// Whether the change is bigger than the objective's noise margin.
    pub outside_noise: bool,
}

/// A per-request comparison of one latency between two iterations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleComparison {
    /// The bench plan the records belong to.
    pub plan: String,
    /// `e2e` or `ttft`.
    pub metric: String,
    pub n_a: usize,
    pub n_b: usize,
    pub median_a_ms: f64,
    pub median_b_ms: f64,
    pub median_change_pct: Option<f64>,
    /// Two-sided p-value of the Mann-Whitney U test (normal approximation with tie correction).
    pub mann_whitney_p: f64,
    /// 95% percentile-bootstrap interval of the change of the median, percent of `a`'s median.
    pub bootstrap_ci_pct: Option<(f64, f64)>,
    /// p < 0.05 and the bootstrap interval excludes zero.
    pub significant: bool,
}

/// Everything that differs between iteration `a` and iteration `b`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IterationDiff {
    pub a: u32,
    pub b: u32,
    pub noise_pct: f64,
    pub config: Vec<ConfigChange>,
    pub metrics: Vec<MetricDelta>,
    /// Filled by [`compare_records`] when both iterations have per-request records.
    pub samples: Vec<SampleComparison>,
}

/// Compares two iterations. `metrics` picks the metrics to compare (in that order); `None`
/// compares every metric either iteration has.
///
/// ```
/// use autodebug_report::diff::diff;
/// use autodebug_core::{Analysis, EngineKind, Iteration, IterationStatus, ServiceSpec};
///
/// let it = |n: u32, policy: &str, e2e: f64| Iteration {
///     number: n,
///     spec: ServiceSpec::new("s", EngineKind::Sglang, "m").with_flag("--schedule-policy", Some(policy)),
///     artifact: None,
///     status: IterationStatus::Ok,
///     metrics: [("e2e.mean".to_string(), e2e)].into(),
///     bench: Default::default(),
///     analysis: Analysis::default(),
///     plan: None,
///     error: None,
///     started_ns: 0,
///     finished_ns: 0,
///     timings: Default::default(),
///     round: None,
/// };
/// let d = diff(&it(1, "fcfs", 200.0), &it(2, "lpm", 150.0), 2.0, None);
/// assert_eq!(d.config[0].knob, "--schedule-policy");
/// assert_eq!(d.metrics[0].change_pct, Some(-25.0));
/// assert_eq!(d.metrics[0].better, Some(true));
/// assert!(d.metrics[0].outside_noise);
/// ```
pub fn diff(a: &Iteration, b: &Iteration, noise_pct: f64, metrics: Option<&[String]>) -> IterationDiff {
    let names: Vec<String> = match metrics {
        Some(names) => names.to_vec(),
        None => a.metrics.keys().chain(b.metrics.keys()).cloned().collect::<BTreeSet<_>>().into_iter().collect(),
    };
    let metrics = names
        .into_iter()
        .map(|name| metric_delta(&name, a.metrics.get(&name).copied(), b.metrics.get(&name).copied(), noise_pct))
        .collect();
    IterationDiff { a: a.number, b: b.number, noise_pct, config: config_changes(a, b), metrics, samples: Vec::new() }
}

fn metric_delta(name: &str, a: Option<f64>, b: Option<f64>, noise_pct: f64) -> MetricDelta {
    let a = a.filter(|v| v.is_finite());
    let b = b.filter(|v| v.is_finite());
    let direction = Direction::for_metric(name);
    let change = a.zip(b).and_then(|(x, y)| change_pct(x, y));
    let better = a.zip(b).filter(|(x, y)| x != y).map(|(x, y)| match direction {
        Direction::Minimize => y < x,
        Direction::Maximize => y > x,
    });
    let outside_noise = match (a, b, change) {
        (_, _, Some(pct)) => pct.abs() > noise_pct,
        // From zero to anything else (an error rate leaving 0) is never noise.
        (Some(x), Some(y), None) => x != y,
        _ => false,
    };
    MetricDelta { name: name.to_string(), a, b, change_pct: change, direction, better, outside_noise }
}

/// Flags (in `a`'s order, then flags new in `b`) and spec fields that differ.
pub fn config_changes(a: &Iteration, b: &Iteration) -> Vec<ConfigChange> {
    fn flag_value(value: Option<&str>) -> String {
        value.map(str::to_string).unwrap_or_else(|| "true".to_string())
    }
    let mut out = Vec::new();
    let mut field = |knob: &str, from: Option<String>, to: Option<String>| {
        if from != to {
            out.push(ConfigChange { knob: knob.to_string(), from, to });
        }
    };
    field("engine", Some(a.spec.engine.to_string()), Some(b.spec.engine.to_string()));
    field("model", Some(a.spec.model.clone()), Some(b.spec.model.clone()));
    field("image", a.spec.image.clone(), b.spec.image.clone());
    field("resources.gpu", a.spec.resources.gpu.clone(), b.spec.resources.gpu.clone());
    field("resources.cpu", a.spec.resources.cpu.clone(), b.spec.resources.cpu.clone());
    field("resources.memory", a.spec.resources.memory.clone(), b.spec.resources.memory.clone());
    let env = |it: &Iteration| it.spec.env.iter().cloned().collect::<BTreeMap<String, String>>();
    let (env_a, env_b) = (env(a), env(b));
    for name in env_a.keys().chain(env_b.keys()).collect::<BTreeSet<_>>() {
        field(&format!("env.{name}"), env_a.get(name).cloned(), env_b.get(name).cloned());
    }
    for (name, value) in a.spec.flags.iter() {
        field(name, Some(flag_value(value)), b.spec.flags.get(name).map(flag_value));
    }
    for (name, value) in b.spec.flags.iter().filter(|(name, _)| !a.spec.flags.contains(name)) {
        field(name, None, Some(flag_value(value)));
    }
    out
}

/// Per-request comparisons of e2e latency and TTFT for one bench plan (successful requests only).
/// Empty when either side has fewer than 3 measured requests.
pub fn compare_records(plan: &str, a: &[RequestRecord], b: &[RequestRecord]) -> Vec<SampleComparison> {
    let ms = |records: &[RequestRecord], pick: fn(&RequestRecord) -> Option<u64>| -> Vec<f64> {
        records.iter().filter(|r| r.error.is_none()).filter_map(pick).map(|ns| ns as f64 / 1e6).collect()
    };
    let mut out = Vec::new();
    for (metric, pick) in
        [("e2e", (|r: &RequestRecord| r.e2e_ns) as fn(&RequestRecord) -> Option<u64>), ("ttft", |r| r.ttft_ns)]
    {
        if let Some(c) = compare_samples(plan, metric, &ms(a, pick), &ms(b, pick)) {
            out.push(c);
        }
    }
    out
}

/// Resamples drawn for the bootstrap interval.
const BOOTSTRAP_RESAMPLES: usize = 2000;
/// Fixed so the same data always gives the same interval.
const BOOTSTRAP_SEED: u64 = 0x5eed_a0d1_ebb6_0001;

/// Compares two samples of one latency (ms). `None` when either has fewer than 3 values.
pub fn compare_samples(plan: &str, metric: &str, a: &[f64], b: &[f64]) -> Option<SampleComparison> {
    let a: Vec<f64> = a.iter().copied().filter(|v| v.is_finite()).collect();
    let b: Vec<f64> = b.iter().copied().filter(|v| v.is_finite()).collect();
    if a.len() < 3 || b.len() < 3 {
        return None;
    }
    let (median_a, median_b) = (median(&a), median(&b));
    let p = mann_whitney_p(&a, &b);
    let ci = bootstrap_median_change_ci(&a, &b, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED);
    let excludes_zero = ci.is_some_and(|(lo, hi)| lo > 0.0 || hi < 0.0);
    Some(SampleComparison {
        plan: plan.to_string(),
        metric: metric.to_string(),
        n_a: a.len(),
        n_b: b.len(),
        median_a_ms: median_a,
        median_b_ms: median_b,
        median_change_pct: change_pct(median_a, median_b),
        mann_whitney_p: p,
        bootstrap_ci_pct: ci,
        significant: p < 0.05 && excludes_zero,
    })
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

/// Two-sided p-value of the Mann-Whitney U test, normal approximation with tie correction and
/// continuity correction. 1 when every value is the same.
pub fn mann_whitney_p(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    if a.is_empty() || b.is_empty() {
        return 1.0;
    }
    let mut all: Vec<(f64, bool)> = a.iter().map(|&v| (v, true)).chain(b.iter().map(|&v| (v, false))).collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = all.len();
    let (mut rank_sum_a, mut tie_term) = (0.0, 0.0);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        // Tied values share the average of the ranks they span (1-based).
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        let ties = (j - i + 1) as f64;
        tie_term += ties * ties * ties - ties;
        rank_sum_a += all[i..=j].iter().filter(|(_, from_a)| *from_a).count() as f64 * average_rank;
        i = j + 1;
    }
    let u = rank_sum_a - n1 * (n1 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let total = n as f64;
    let variance = n1 * n2 / 12.0 * ((total + 1.0) - tie_term / (total * (total - 1.0)));
    if variance <= 0.0 {
        return 1.0;
    }
    let z = ((u - mean).abs() - 0.5).max(0.0) / variance.sqrt();
    erfc(z / std::f64::consts::SQRT_2).clamp(0.0, 1.0)
}

/// Complementary error function (Numerical Recipes `erfcc`, fractional error below 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let value = t * poly.exp();
    if x >= 0.0 { value } else { 2.0 - value }
}

/// 95% percentile-bootstrap interval of `(median(b) - median(a)) / median(a)` in percent; `None`
/// when more than half of the resamples have no defined change (a zero median).
fn bootstrap_median_change_ci(a: &[f64], b: &[f64], resamples: usize, seed: u64) -> Option<(f64, f64)> {
    let changes = stats::bootstrap(a, b, resamples, &mut SplitMix64::new(seed), |ra, rb| {
        change_pct(median(ra), median(rb)).unwrap_or(f64::NAN)
    });
    if changes.len() < resamples / 2 {
        return None;
    }
    Some((stats::nearest_rank(&changes, 0.025), stats::nearest_rank(&changes, 0.975)))
}

/// Change of `to` relative to `from`, in percent of `from` (`None` when `from` is zero).
///
/// ```
/// use autodebug_report::diff::change_pct;
/// assert_eq!(change_pct(200.0, 150.0), Some(-25.0));
/// assert_eq!(change_pct(0.0, 1.0), None);
/// ```
pub fn change_pct(from: f64, to: f64) -> Option<f64> {
    (from != 0.0 && from.is_finite() && to.is_finite()).then(|| (to - from) / from.abs() * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_known_values() {
        for (x, expected) in
            [(0.0, 1.0), (0.5, 0.479_500_122), (1.0, 0.157_299_207), (2.0, 0.004_677_735), (-1.0, 1.842_700_793)]
        {
            assert!((erfc(x) - expected).abs() < 1e-6, "erfc({x}) = {}", erfc(x));
        }
    }

    #[test]
    fn mann_whitney_matches_a_hand_computed_case() {
        // a = 1..=5, b = 6..=10: U = 0, mean 12.5, variance 22.917, z = (12.5 - 0.5) / 4.787 = 2.507.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        let b = [6.0, 7.0, 8.0, 9.0, 10.0];
        let p = mann_whitney_p(&a, &b);
        assert!((p - 0.01219).abs() < 2e-4, "p = {p}");
        assert!((mann_whitney_p(&b, &a) - p).abs() < 1e-12, "two-sided");
        assert_eq!(mann_whitney_p(&[3.0; 4], &[3.0; 5]), 1.0);
    }

    // Printed by this module's own bootstrap before it moved to `autodebug_core::stats`: the same records
    // must keep giving the same interval in reports people have already read.
    #[test]
    fn the_interval_is_the_one_the_previous_bootstrap_gave() {
        let a = [100.0, 102.0, 98.0, 101.0, 99.0, 103.0, 97.0];
        let b = [90.0, 91.0, 89.5, 92.0, 88.0, 90.5];
        assert_eq!(
            bootstrap_median_change_ci(&a, &b, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED),
            Some((-12.128712871287128, -7.3979591836734695))
        );
    }

    #[test]
    fn shifted_samples_differ_and_identical_ones_do_not() {
        // Two noisy samples around 100 ms and 120 ms, and a resample of the first.
        let noise = |i: usize| ((i * 7919) % 23) as f64 - 11.0;
        let a: Vec<f64> = (0..60).map(|i| 100.0 + noise(i)).collect();
        let b: Vec<f64> = (0..60).map(|i| 120.0 + noise(i + 5)).collect();
        let shifted = compare_samples("chat", "e2e", &a, &b).unwrap();
        assert!(shifted.significant, "{shifted:?}");
        let (lo, hi) = shifted.bootstrap_ci_pct.unwrap();
        assert!(lo > 5.0 && hi < 40.0 && lo <= hi, "{lo}..{hi}");

        let same: Vec<f64> = (0..60).map(|i| 100.0 + noise(i + 3)).collect();
        let noise_only = compare_samples("chat", "e2e", &a, &same).unwrap();
        assert!(!noise_only.significant, "{noise_only:?}");
        assert!(noise_only.mann_whitney_p > 0.05);
        assert!(compare_samples("chat", "e2e", &a[..2], &b).is_none());
    }
}
