//! The parser and the window computation on real and generated engine scrapes.

use std::path::PathBuf;
use std::time::Duration;

use autodebug_core::{Signal, canonical};
use autodebug_telemetry::prometheus::{
    GaugeTracker, MetricFamily, MetricType, histogram_quantile, parse_exposition, window_signals,
};

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const SCRAPES: [&str; 4] = [
    "sglang_docs_production_metrics_llama31_8b_busy.prom",
    "generated_vllm_0.33.0_single.prom",
    "generated_sglang_0.5.23_multiproc.prom",
    "llamacpp_smollm2_metrics.prom",
];

fn family<'a>(families: &'a [MetricFamily], name: &str) -> &'a MetricFamily {
    families.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("no family {name}"))
}

/// Every sample line of the text (not comments, not blank) lands in exactly one family.
#[test]
fn every_fixture_parses_and_keeps_every_sample() {
    for name in SCRAPES {
        let text = fixture(name);
        let families = parse_exposition(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let sample_lines = text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).count();
        let samples: usize = families.iter().map(|f| f.samples.len()).sum();
        assert_eq!(samples, sample_lines, "{name}");
        // Every TYPE'd family other than folded `_created` gauges is present with its type.
        for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let mut words = line.split_whitespace();
            let (Some(fname), Some(ftype)) = (words.next(), words.next()) else { continue };
            if fname.ends_with("_created") {
                assert!(families.iter().all(|f| f.name != fname), "{name}: {fname} must fold into its parent");
                continue;
            }
            assert_eq!(family(&families, fname).metric_type.to_string(), ftype, "{name}: {fname}");
        }
    }
}

#[test]
fn histograms_gather_sum_count_and_buckets_in_any_layout() {
    for name in SCRAPES {
        let families = parse_exposition(&fixture(name)).unwrap();
        for f in families.iter().filter(|f| f.metric_type == MetricType::Histogram) {
            for series in f.series() {
                assert!(series.sum.is_some() && series.count.is_some(), "{name}: {} lacks sum/count", f.name);
                let (last_le, last_count) = *series.buckets.last().unwrap();
                assert_eq!(last_le, f64::INFINITY, "{name}: {}", f.name);
                assert_eq!(Some(last_count), series.count, "{name}: {} +Inf bucket equals count", f.name);
                assert!(series.buckets.windows(2).all(|w| w[0].0 < w[1].0), "{name}: sorted buckets");
            }
        }
    }
}

#[test]
fn vllm_counters_keep_created_and_total_names() {
    let families = parse_exposition(&fixture("generated_vllm_0.33.0_single.prom")).unwrap();
    let counter = family(&families, "vllm:prompt_tokens_total");
    let series = counter.series();
    assert!(series[0].created.is_some_and(|c| c > 1.7e9));
    assert_eq!(series[0].value_name.as_deref(), Some("vllm:prompt_tokens_total"));
    // A histogram whose name ends in `_total` is not mistaken for a counter.
    assert_eq!(family(&families, "vllm:iteration_tokens_total").metric_type, MetricType::Histogram);
}

fn stat<'a>(signals: &'a [Signal], canonical_name: &str, stat: &str) -> Option<&'a Signal> {
    signals.iter().find(|s| {
        s.canonical.as_deref() == Some(canonical_name) && s.labels.get("stat").map(String::as_str) == Some(stat)
    })
}

/// Without a start scrape, the numbers are the server's lifetime; the quantile must equal what
/// `histogram_quantile` gives on the raw cumulative buckets.
#[test]
fn lifetime_quantiles_match_the_raw_buckets() {
    let families = parse_exposition(&fixture("sglang_docs_production_metrics_llama31_8b_busy.prom")).unwrap();
    let out = window_signals(None, &GaugeTracker::default(), &families, Duration::from_secs(60));
    assert!(!out.warnings.is_empty(), "a missing start scrape is reported");
    let buckets = family(&families, "sglang:time_to_first_token_seconds").series()[0].buckets.clone();
    for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
        let signal = stat(&out.signals, canonical::TTFT_S, name).unwrap();
        assert_eq!(signal.as_f64(), histogram_quantile(q, &buckets), "{name}");
        assert_eq!(signal.name, "sglang:time_to_first_token_seconds");
    }
    // 0.4.x names map too.
    assert!(stat(&out.signals, canonical::ITL_S, "p50").is_some());
    assert_eq!(stat(&out.signals, canonical::QUEUE_LEN, "last").unwrap().as_f64(), Some(2826.0));
}

#[test]
fn each_engine_maps_onto_the_canonical_signals() {
    let expectations: [(&str, &[&str]); 4] = [
        (
            "generated_vllm_0.33.0_single.prom",
            &[
                canonical::TTFT_S,
                canonical::ITL_S,
                canonical::E2E_S,
                canonical::QUEUE_TIME_S,
                canonical::RUNNING,
                canonical::QUEUE_LEN,
                canonical::KV_USAGE,
                canonical::PREFIX_HIT_RATE,
                canonical::PREEMPTIONS,
                canonical::GEN_THROUGHPUT,
                canonical::PROMPT_TOKENS,
                canonical::GENERATION_TOKENS,
                canonical::CACHED_TOKENS,
            ],
        ),
        (
            "generated_sglang_0.5.23_multiproc.prom",
            &[
                canonical::TTFT_S,
                canonical::ITL_S,
                canonical::E2E_S,
                canonical::QUEUE_TIME_S,
                canonical::RUNNING,
                canonical::QUEUE_LEN,
                canonical::KV_USAGE,
                canonical::PREFIX_HIT_RATE,
                canonical::PREEMPTIONS,
                canonical::GEN_THROUGHPUT,
                canonical::PROMPT_TOKENS,
                canonical::GENERATION_TOKENS,
                canonical::CACHED_TOKENS,
            ],
        ),
        (
            "sglang_docs_production_metrics_llama31_8b_busy.prom",
            &[canonical::TTFT_S, canonical::ITL_S, canonical::E2E_S, canonical::KV_USAGE, canonical::GEN_THROUGHPUT],
        ),
        (
            "llamacpp_smollm2_metrics.prom",
            &[
                canonical::RUNNING,
                canonical::DEFERRED,
                canonical::GEN_THROUGHPUT,
                canonical::PROMPT_TOKENS,
                canonical::GENERATION_TOKENS,
                canonical::CACHED_TOKENS,
            ],
        ),
    ];
    for (name, wanted) in expectations {
        let families = parse_exposition(&fixture(name)).unwrap();
        let out = window_signals(None, &GaugeTracker::default(), &families, Duration::from_secs(30));
        for canonical_name in wanted {
            assert!(
                out.signals.iter().any(|s| s.canonical.as_deref() == Some(*canonical_name)),
                "{name}: nothing tagged {canonical_name}"
            );
        }
    }
}

/// Scale every sample of a scrape to fake "later": counters and buckets grow, so the window's
/// delta is known exactly.
fn grown(text: &str, factor: f64) -> String {
    text.lines()
        .map(|line| {
            if line.starts_with('#') || line.trim().is_empty() {
                return line.to_string();
            }
            let (head, value) = line.rsplit_once(' ').unwrap();
            if head.ends_with("_created") || head.contains("_created{") {
                return line.to_string();
            }
            let v: f64 = value.parse().unwrap();
            format!("{head} {}", v * factor)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn vllm_window_deltas_and_hit_rate() {
    let text = fixture("generated_vllm_0.33.0_single.prom");
    let start = parse_exposition(&text).unwrap();
    let end = parse_exposition(&grown(&text, 3.0)).unwrap();
    let out = window_signals(Some(&start), &GaugeTracker::default(), &end, Duration::from_secs(20));
    let start_prompt = family(&start, "vllm:prompt_tokens_total").series()[0].value.unwrap();
    let increase = stat(&out.signals, canonical::PROMPT_TOKENS, "increase").unwrap().as_f64().unwrap();
    assert!((increase - 2.0 * start_prompt).abs() < 1e-6, "{increase} vs {start_prompt}");
    let throughput = stat(&out.signals, canonical::GEN_THROUGHPUT, "rate").unwrap();
    assert_eq!(throughput.name, "vllm:generation_tokens_total");
    // Hits and queries both tripled, so the window's ratio equals the lifetime ratio.
    let hits = family(&start, "vllm:prefix_cache_hits_total").series()[0].value.unwrap();
    let queries = family(&start, "vllm:prefix_cache_queries_total").series()[0].value.unwrap();
    let rate = out.signals.iter().find(|s| s.canonical.as_deref() == Some(canonical::PREFIX_HIT_RATE)).unwrap();
    assert!((rate.as_f64().unwrap() - hits / queries).abs() < 1e-9);
    // The window's TTFT histogram is the lifetime one doubled: same quantiles.
    let lifetime = window_signals(None, &GaugeTracker::default(), &start, Duration::from_secs(20));
    let a = stat(&out.signals, canonical::TTFT_S, "p90").unwrap().as_f64().unwrap();
    let b = stat(&lifetime.signals, canonical::TTFT_S, "p90").unwrap().as_f64().unwrap();
    assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    // Labels every series shares (engine, model_name) stay out of the citation.
    assert!(
        stat(&out.signals, canonical::TTFT_S, "p90")
            .unwrap()
            .citation()
            .starts_with("Prometheus metric `vllm:time_to_first_token_seconds{stat=\"p90\"}`")
    );
}

#[test]
fn sglang_multiproc_series_combine_for_canonical_signals() {
    let text = fixture("generated_sglang_0.5.23_multiproc.prom");
    let start = parse_exposition(&text).unwrap();
    let end = parse_exposition(&grown(&text, 2.0)).unwrap();
    let out = window_signals(Some(&start), &GaugeTracker::default(), &end, Duration::from_secs(10));
    let cached: f64 = family(&start, "sglang:cached_tokens_total").series().iter().filter_map(|s| s.value).sum();
    let tagged: Vec<&Signal> =
        out.signals.iter().filter(|s| s.canonical.as_deref() == Some(canonical::CACHED_TOKENS)).collect();
    assert_eq!(tagged.len(), 1, "one combined signal carries the canonical tag");
    assert!((tagged[0].as_f64().unwrap() - cached).abs() < 1e-9);
    let per_source: Vec<&Signal> = out
        .signals
        .iter()
        .filter(|s| s.name == "sglang:cached_tokens_total" && s.labels.contains_key("cache_source"))
        .collect();
    assert_eq!(per_source.len(), 3 * 2, "increase and rate per cache source");
}
