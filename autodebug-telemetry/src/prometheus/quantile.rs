//! Quantiles from cumulative histogram buckets, computed the way PromQL's `histogram_quantile`
//! does, so a number in a session log matches what a user sees in Grafana for the same buckets.

/// The `q` quantile (0..=1) of cumulative `(le, count)` buckets; `None` where PromQL returns NaN
/// (no `+Inf` bucket, fewer than two buckets, no observations).
///
/// Linear interpolation inside the bucket that holds the rank; the lowest bucket starts at 0
/// unless its upper bound is not positive; a rank in the `+Inf` bucket returns the highest finite
/// bound.
///
/// ```
/// use autodebug_telemetry::prometheus::histogram_quantile;
/// let buckets = [(0.1, 10.0), (0.2, 30.0), (f64::INFINITY, 40.0)];
/// // rank 20 lies halfway through the (0.1, 0.2] bucket (counts 10..30).
/// assert!((histogram_quantile(0.5, &buckets).unwrap() - 0.15).abs() < 1e-12);
/// assert_eq!(histogram_quantile(0.99, &buckets), Some(0.2));
/// ```
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if q.is_nan() {
        return None;
    }
    if q < 0.0 {
        return Some(f64::NEG_INFINITY);
    }
    if q > 1.0 {
        return Some(f64::INFINITY);
    }
    let mut sorted: Vec<(f64, f64)> = buckets.iter().copied().filter(|(le, _)| !le.is_nan()).collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Coalesce buckets with the same bound (several series summed into one).
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(sorted.len());
    for (le, count) in sorted {
        match merged.last_mut() {
            Some(last) if last.0 == le => last.1 += count,
            _ => merged.push((le, count)),
        }
    }
    if merged.last().is_none_or(|(le, _)| *le != f64::INFINITY) || merged.len() < 2 {
        return None;
    }
    // Counts scraped at slightly different moments can dip; PromQL forces them monotonic.
    let mut running_max = f64::NEG_INFINITY;
    for bucket in &mut merged {
        running_max = running_max.max(bucket.1);
        bucket.1 = running_max;
    }
    let observations = merged[merged.len() - 1].1;
    if observations <= 0.0 || observations.is_nan() {
        return None;
    }
    let mut rank = q * observations;
    let last_finite = merged.len() - 1;
    let b = merged[..last_finite].iter().position(|(_, count)| *count >= rank).unwrap_or(last_finite);
    if b == last_finite {
        return Some(merged[last_finite - 1].0);
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return Some(merged[0].0);
    }
    let bucket_end = merged[b].0;
    let mut count = merged[b].1;
    let mut bucket_start = 0.0;
    if b > 0 {
        bucket_start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    let fraction = rank / count;
    if fraction.is_nan() {
        return None;
    }
    Some(bucket_start + (bucket_end - bucket_start) * fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_promql_edge_cases() {
        let inf = f64::INFINITY;
        assert_eq!(histogram_quantile(0.5, &[(inf, 3.0)]), None, "one bucket is NaN in PromQL");
        assert_eq!(histogram_quantile(0.5, &[(1.0, 0.0), (inf, 0.0)]), None, "no observations");
        assert_eq!(histogram_quantile(0.5, &[(1.0, 1.0), (2.0, 2.0)]), None, "no +Inf bucket");
        // Lowest bucket starts at 0: rank 0.5 of 2 observations in (0, 4] is a quarter of the way.
        assert_eq!(histogram_quantile(0.25, &[(4.0, 2.0), (inf, 2.0)]), Some(1.0));
        // Non-positive lowest bound is returned as is.
        assert_eq!(histogram_quantile(0.1, &[(-1.0, 5.0), (inf, 10.0)]), Some(-1.0));
        // Non-monotonic counts are repaired rather than producing a negative width.
        let q = histogram_quantile(0.9, &[(1.0, 5.0), (2.0, 4.0), (3.0, 10.0), (inf, 10.0)]).unwrap();
        assert!((2.0..=3.0).contains(&q), "{q}");
        assert_eq!(histogram_quantile(1.5, &[(1.0, 1.0), (inf, 1.0)]), Some(inf));
    }

    #[test]
    fn unsorted_input_is_sorted_first() {
        let inf = f64::INFINITY;
        let a = histogram_quantile(0.9, &[(inf, 100.0), (0.5, 50.0), (0.1, 10.0), (1.0, 100.0)]);
        let b = histogram_quantile(0.9, &[(0.1, 10.0), (0.5, 50.0), (1.0, 100.0), (inf, 100.0)]);
        assert_eq!(a, b);
        // rank 90 lies 40/50 through (0.5, 1.0].
        assert!((a.unwrap() - 0.9).abs() < 1e-12);
    }
}
