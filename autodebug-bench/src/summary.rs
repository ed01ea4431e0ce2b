//! From per-request records to the summary figures (see the crate docs, `## Metric definitions`).

use std::collections::BTreeMap;

use autodebug_core::{BenchSummary, Distribution, RequestRecord, TimeWindow};
use hdrhistogram::Histogram;

/// Collects one distribution: exact count/mean/std/min/max, percentiles from an HDR histogram
/// of whole microseconds with 3 significant digits.
pub(crate) struct DistributionBuilder {
    histogram: Histogram<u64>,
    count: u64,
    mean: f64,
    /// Sum of squared deviations (Welford), for a numerically stable std.
    m2: f64,
    min: f64,
    max: f64,
}

impl DistributionBuilder {
    pub(crate) fn new() -> Self {
        DistributionBuilder {
            // 3 significant digits is a valid precision (0..=5), so this cannot fail.
            histogram: Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is always valid")),
            count: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// Adds one sample in nanoseconds.
    pub(crate) fn record_ns(&mut self, ns: f64) {
        if !ns.is_finite() || ns < 0.0 {
            return;
        }
        self.count += 1;
        let delta = ns - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (ns - self.mean);
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
        let us = (ns / 1_000.0).round() as u64;
        // `record` grows the histogram as needed; only a value beyond what it can ever hold fails,
        // and that one is clamped to the largest trackable value.
        if self.histogram.record(us).is_err() {
            self.histogram.saturating_record(us);
        }
    }

    /// The distribution in milliseconds.
    pub(crate) fn finish_ms(&self) -> Distribution {
        if self.count == 0 {
            return Distribution::default();
        }
        const NS_PER_MS: f64 = 1e6;
        let (min, max) = (self.min / NS_PER_MS, self.max / NS_PER_MS);
        let quantile = |q: f64| {
            let us = self.histogram.median_equivalent(self.histogram.value_at_quantile(q));
            (us as f64 / 1_000.0).clamp(min, max)
        };
        Distribution {
            count: self.count,
            mean: self.mean / NS_PER_MS,
            std: (self.m2 / self.count as f64).sqrt() / NS_PER_MS,
            min,
            p50: quantile(0.50),
            p90: quantile(0.90),
            p95: quantile(0.95),
            p99: quantile(0.99),
            p999: quantile(0.999),
            max,
        }
    }
}

/// Per-token inter-token latencies of one request, ns: a gap followed by a chunk of `k` tokens
/// gives `k` samples of `gap / k`; a chunk with no tokens passes its gap on to the next chunk.
pub(crate) fn per_token_itl_ns(gaps_ns: &[u64], chunk_tokens: &[u32], mut sample: impl FnMut(f64)) {
    let mut carried = 0u64;
    for (&gap, &tokens) in gaps_ns.iter().zip(chunk_tokens) {
        let span = carried + gap;
        if tokens == 0 {
            carried = span;
            continue;
        }
        carried = 0;
        let each = span as f64 / f64::from(tokens);
        for _ in 0..tokens {
            sample(each);
        }
    }
}

/// Summarizes measured records over the window they ran in.
///
/// Latency distributions use successful requests only; queue delay uses every request (it is
/// the client's own delay and happens whatever the server does). Throughput divides by
/// `window`'s duration.
///
/// ```
/// use autodebug_bench::summarize;
/// use autodebug_core::{RequestRecord, TimeWindow};
///
/// let record = RequestRecord {
///     ttft_ns: Some(100_000_000),
///     e2e_ns: Some(1_000_000_000),
///     output_tokens: Some(10),
///     prompt_tokens: Some(5),
///     ..RequestRecord::default()
/// };
/// let summary = summarize(&[record], TimeWindow::new(0, 2_000_000_000));
/// assert_eq!(summary.tpot_ms.mean, 100.0); // (1000 ms - 100 ms) / (10 - 1)
/// assert_eq!(summary.output_throughput, 5.0); // 10 tokens / 2 s
/// ```
pub fn summarize(records: &[RequestRecord], window: TimeWindow) -> BenchSummary {
    let mut ttft = DistributionBuilder::new();
    let mut ttst = DistributionBuilder::new();
    let mut tpot = DistributionBuilder::new();
    let mut itl = DistributionBuilder::new();
    let mut inter_chunk = DistributionBuilder::new();
    let mut e2e = DistributionBuilder::new();
    let mut queue_delay = DistributionBuilder::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let (mut succeeded, mut prompt_tokens, mut output_tokens) = (0u64, 0u64, 0u64);
    let (mut cached_sum, mut cached_prompt_sum, mut any_cache_details) = (0u64, 0u64, false);
    let (mut predicted, mut considered) = (0u64, 0u64);

    for record in records {
        queue_delay.record_ns(record.queue_delay_ns as f64);
        if let Some(class) = record.error {
            *errors.entry(class.as_str().to_string()).or_default() += 1;
            continue;
        }
        succeeded += 1;
        let prompt = u64::from(record.prompt_tokens.unwrap_or(0));
        prompt_tokens += prompt;
        output_tokens += u64::from(record.output_tokens.unwrap_or(0));
        if let Some((hit, seen)) = record.ngram_predicted {
            predicted += u64::from(hit);
            considered += u64::from(seen);
        }
        if let Some(cached) = record.cached_tokens {
            any_cache_details = true;
            cached_sum += u64::from(cached);
            cached_prompt_sum += prompt;
        }
        let optional = [(&mut ttft, record.ttft_ns), (&mut ttst, record.ttst_ns), (&mut e2e, record.e2e_ns)];
        for (builder, value) in optional {
            if let Some(ns) = value {
                builder.record_ns(ns as f64);
            }
        }
        if let Some(ns) = record.tpot_ns() {
            tpot.record_ns(ns);
        }
        for &gap in &record.chunk_gaps_ns {
            inter_chunk.record_ns(gap as f64);
        }
        per_token_itl_ns(&record.chunk_gaps_ns, &record.chunk_tokens, |ns| itl.record_ns(ns));
    }

    let duration_s = window.duration().as_secs_f64();
    let per_second = |n: u64| if duration_s > 0.0 { n as f64 / duration_s } else { 0.0 };
    BenchSummary {
        requests: records.len() as u64,
        succeeded,
        failed: records.len() as u64 - succeeded,
        duration_s,
        ttft_ms: ttft.finish_ms(),
        ttst_ms: ttst.finish_ms(),
        tpot_ms: tpot.finish_ms(),
        itl_ms: itl.finish_ms(),
        inter_chunk_ms: inter_chunk.finish_ms(),
        e2e_ms: e2e.finish_ms(),
        queue_delay_ms: queue_delay.finish_ms(),
        request_throughput: per_second(succeeded),
        output_throughput: per_second(output_tokens),
        total_token_throughput: per_second(prompt_tokens + output_tokens),
        prompt_tokens,
        output_tokens,
        cached_token_ratio: (any_cache_details && cached_prompt_sum > 0)
            .then(|| cached_sum as f64 / cached_prompt_sum as f64),
        output_ngram_predictability: (considered > 0).then(|| predicted as f64 / considered as f64),
        errors,
        capacity: None,
    }
}

#[cfg(test)]
mod tests {
    use autodebug_core::ErrorClass;

    use super::*;

    const MS: u64 = 1_000_000;

    fn close(actual: f64, expected: f64) -> bool {
        // HDR percentiles carry up to 0.1% relative error; exact stats should match to rounding.
        (actual - expected).abs() <= expected.abs() * 1e-3 + 1e-9
    }

    /// Request A: 1 token at 100 ms, then a 2-token chunk after 40 ms, then 1 token after 10 ms,
    /// done at 200 ms. Request B: 3 tokens at 50 ms, then a 3-token chunk after 90 ms, done at 140 ms.
    fn hand_made_records() -> Vec<RequestRecord> {
        vec![
            RequestRecord {
                index: 0,
                ttft_ns: Some(100 * MS),
                ttst_ns: Some(140 * MS),
                e2e_ns: Some(200 * MS),
                prompt_tokens: Some(10),
                output_tokens: Some(4),
                cached_tokens: Some(4),
                chunks: 3,
                chunk_gaps_ns: vec![40 * MS, 10 * MS],
                chunk_tokens: vec![2, 1],
                ..RequestRecord::default()
            },
            RequestRecord {
                index: 1,
                queue_delay_ns: 30 * MS,
                ttft_ns: Some(50 * MS),
                ttst_ns: Some(50 * MS),
                e2e_ns: Some(140 * MS),
                prompt_tokens: Some(10),
                output_tokens: Some(6),
                cached_tokens: Some(0),
                chunks: 2,
                chunk_gaps_ns: vec![90 * MS],
                chunk_tokens: vec![3],
                ..RequestRecord::default()
            },
            RequestRecord {
                index: 2,
                queue_delay_ns: 60 * MS,
                ttft_ns: Some(5 * MS),
                error: Some(ErrorClass::TimeoutIdle),
                ..RequestRecord::default()
            },
        ]
    }

    #[test]
    fn hand_computed_tpot_itl_and_inter_chunk() {
        let summary = summarize(&hand_made_records(), TimeWindow::new(0, 500 * MS as i128));
        // TPOT: A (200-100)/(4-1) = 33.333 ms, B (140-50)/(6-1) = 18 ms
        assert_eq!(summary.tpot_ms.count, 2);
        assert!(close(summary.tpot_ms.mean, (100.0 / 3.0 + 18.0) / 2.0), "{:?}", summary.tpot_ms);
        assert!(close(summary.tpot_ms.max, 100.0 / 3.0));
        assert!(close(summary.tpot_ms.min, 18.0));
        // Per-token ITL: A gives 20, 20, 10; B gives 30, 30, 30 -> mean 140/6
        assert_eq!(summary.itl_ms.count, 6);
        assert!(close(summary.itl_ms.mean, 140.0 / 6.0), "{:?}", summary.itl_ms);
        assert!(close(summary.itl_ms.min, 10.0));
        assert!(close(summary.itl_ms.max, 30.0));
        assert!(close(summary.itl_ms.p50, 20.0), "p50 {}", summary.itl_ms.p50);
        // Inter-chunk: 40, 10, 90 as received
        assert_eq!(summary.inter_chunk_ms.count, 3);
        assert!(close(summary.inter_chunk_ms.mean, 140.0 / 3.0));
        assert!(close(summary.inter_chunk_ms.max, 90.0));
        // The failed request is counted, classed, and kept out of latency figures.
        assert_eq!((summary.requests, summary.succeeded, summary.failed), (3, 2, 1));
        assert_eq!(summary.errors.get("timeout_idle"), Some(&1));
        assert_eq!(summary.ttft_ms.count, 2);
        assert!(close(summary.ttft_ms.min, 50.0));
        assert!(close(summary.ttst_ms.mean, 95.0));
        // Queue delay covers all three: 0, 30, 60 ms
        assert_eq!(summary.queue_delay_ms.count, 3);
        assert!(close(summary.queue_delay_ms.mean, 30.0));
        assert!(close(summary.queue_delay_ms.std, (600.0f64).sqrt()), "population std {:?}", summary.queue_delay_ms);
        // Throughput over the 0.5 s window
        assert!(close(summary.request_throughput, 4.0));
        assert!(close(summary.output_throughput, 20.0));
        assert!(close(summary.total_token_throughput, 60.0));
        assert_eq!(summary.cached_token_ratio, Some(4.0 / 20.0));
    }

    #[test]
    fn zero_token_chunk_passes_its_gap_on() {
        let mut samples = Vec::new();
        per_token_itl_ns(&[10, 30, 40], &[1, 0, 2], |s| samples.push(s));
        assert_eq!(samples, vec![10.0, 35.0, 35.0]);
        let total: f64 = samples.iter().sum();
        assert_eq!(total, 80.0, "per-token ITL accounts for all the streaming time");
    }

    #[test]
    fn percentiles_follow_nearest_rank_within_hdr_precision() {
        let mut builder = DistributionBuilder::new();
        for ms in 1..=1000u64 {
            builder.record_ns((ms * MS) as f64);
        }
        let d = builder.finish_ms();
        assert!(close(d.p50, 500.0), "{d:?}");
        assert!(close(d.p90, 900.0), "{d:?}");
        assert!(close(d.p99, 990.0), "{d:?}");
        assert!(close(d.p999, 999.0), "{d:?}");
        assert_eq!((d.min, d.max), (1.0, 1000.0));
        assert!(close(d.mean, 500.5));
    }

    #[test]
    fn empty_input_gives_zero_figures_and_no_cache_ratio() {
        let summary = summarize(&[], TimeWindow::new(0, 0));
        assert_eq!(summary.requests, 0);
        assert_eq!(summary.ttft_ms, Distribution::default());
        assert_eq!(summary.request_throughput, 0.0);
        assert_eq!(summary.cached_token_ratio, None);
    }
}
