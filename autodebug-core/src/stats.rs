//! The percentile bootstrap every interval in the workspace is computed with (the benchmarker's
//! trial statistics and A/B verdicts, the history diff's change of the median).
//!
//! ```
//! use autodebug_core::rng::SplitMix64;
//! use autodebug_core::stats::{bootstrap, nearest_rank};
//!
//! let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
//! let estimates = bootstrap(&[2.0, 4.0, 6.0], &[], 500, &mut SplitMix64::new(1), |a, _| mean(a));
//! let (low, high) = (nearest_rank(&estimates, 0.025), nearest_rank(&estimates, 0.975));
//! assert!(2.0 <= low && low < 4.0 && 4.0 < high && high <= 6.0);
//! ```

use crate::rng::SplitMix64;

/// `statistic(a*, b*)` over `resamples` resamples with replacement of `a` and `b` (an empty `b`
/// stays empty), drawn from `rng` in that order; the finite estimates come back sorted.
pub fn bootstrap(
    a: &[f64],
    b: &[f64],
    resamples: usize,
    rng: &mut SplitMix64,
    mut statistic: impl FnMut(&[f64], &[f64]) -> f64,
) -> Vec<f64> {
    let mut resample = |from: &[f64], into: &mut Vec<f64>| {
        into.clear();
        into.extend((0..from.len()).map(|_| from[rng.below(from.len())]));
    };
    let (mut sample_a, mut sample_b) = (Vec::with_capacity(a.len()), Vec::with_capacity(b.len()));
    let mut estimates: Vec<f64> = (0..resamples)
        .map(|_| {
            resample(a, &mut sample_a);
            resample(b, &mut sample_b);
            statistic(&sample_a, &sample_b)
        })
        .filter(|v| v.is_finite())
        .collect();
    estimates.sort_by(f64::total_cmp);
    estimates
}

/// The `q` quantile of sorted values by nearest rank (NaN when there are none).
pub fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return f64::NAN;
    };
    sorted[((q.clamp(0.0, 1.0) * last as f64).round() as usize).min(last)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resamples_are_seeded_and_drop_undefined_estimates() {
        let first_difference = |a: &[f64], b: &[f64]| if a[0] == b[0] { f64::NAN } else { a[0] - b[0] };
        let run = |seed| bootstrap(&[1.0, 2.0, 3.0], &[1.0, 5.0], 400, &mut SplitMix64::new(seed), first_difference);
        let (first, again, other) = (run(1), run(1), run(2));
        assert_eq!(first, again);
        assert_ne!(first, other);
        assert!(first.len() < 400 && first.len() > 200, "{} estimates kept", first.len());
        assert!(first.windows(2).all(|w| w[0] <= w[1]));
        assert!(first.iter().all(|v| [-4.0, -3.0, -2.0, 1.0, 2.0].contains(v)));
    }

    #[test]
    fn nearest_rank_rounds_to_the_closest_index() {
        let sorted = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(nearest_rank(&sorted, 0.0), 1.0);
        assert_eq!(nearest_rank(&sorted, 0.5), 3.0);
        assert_eq!(nearest_rank(&sorted, 0.6), 3.0);
        assert_eq!(nearest_rank(&sorted, 0.63), 4.0);
        assert_eq!(nearest_rank(&sorted, 1.0), 5.0);
        assert!(nearest_rank(&[], 0.5).is_nan());
    }
}
