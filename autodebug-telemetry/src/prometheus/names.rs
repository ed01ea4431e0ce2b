//! Which engine metric means which canonical signal, for vLLM (current and older names),
//! SGLang (0.4.x and 0.5.x) and llama.cpp.
//!
//! Each engine names the same quantity differently (`vllm:kv_cache_usage_perc`,
//! `vllm:gpu_cache_usage_perc`, `sglang:token_usage`, `llamacpp:kv_cache_usage_ratio`); analyzers
//! read the canonical name so they work on all of them, while citations keep the engine's own.

use autodebug_core::canonical;

/// Which of a metric's window statistics carries the canonical tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaggedStat {
    /// Every statistic emitted for the metric (gauge mean/max/min/last, histogram mean/quantiles).
    All,
    /// Only the counter's increase over the window.
    Increase,
    /// Only the counter's per-second rate over the window.
    Rate,
    /// Only the histogram's window mean (Δsum/Δcount), for a distribution whose quantiles are
    /// not the quantity (tokens per engine step: the mean is the batch fill).
    Mean,
}

/// How several series of one metric (per rank, per `is_streaming`, per cache source) combine
/// into the one canonical value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Combine {
    /// Counts add up (tokens, requests running or waiting).
    Sum,
    /// Ratios and throughputs of replicas average.
    Mean,
}

/// One engine metric and the canonical signal it maps onto.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameMapping {
    /// The metric as the engine exposes it (counters with their `_total`).
    pub metric: &'static str,
    pub canonical: &'static str,
    pub stat: TaggedStat,
    pub combine: Combine,
}

const fn map(metric: &'static str, canonical: &'static str, stat: TaggedStat, combine: Combine) -> NameMapping {
    NameMapping { metric, canonical, stat, combine }
}

use Combine::{Mean, Sum};
use TaggedStat::{All, Increase, Mean as WindowMean, Rate};

/// Every known mapping. A metric may appear twice with different statistics
/// (`vllm:generation_tokens_total` is both the window's generation tokens and its throughput).
pub const NAME_MAP: &[NameMapping] = &[
    // vLLM, current (V1 engine) names.
    map("vllm:time_to_first_token_seconds", canonical::TTFT_S, All, Sum),
    map("vllm:inter_token_latency_seconds", canonical::ITL_S, All, Sum),
    map("vllm:e2e_request_latency_seconds", canonical::E2E_S, All, Sum),
    map("vllm:request_queue_time_seconds", canonical::QUEUE_TIME_S, All, Sum),
    map("vllm:num_requests_running", canonical::RUNNING, All, Sum),
    map("vllm:num_requests_waiting", canonical::QUEUE_LEN, All, Sum),
    map("vllm:kv_cache_usage_perc", canonical::KV_USAGE, All, Mean),
    map("vllm:num_preemptions_total", canonical::PREEMPTIONS, Increase, Sum),
    map("vllm:prompt_tokens_total", canonical::PROMPT_TOKENS, Increase, Sum),
    map("vllm:generation_tokens_total", canonical::GENERATION_TOKENS, Increase, Sum),
    map("vllm:generation_tokens_total", canonical::GEN_THROUGHPUT, Rate, Sum),
    map("vllm:prompt_tokens_cached_total", canonical::CACHED_TOKENS, Increase, Sum),
    map("vllm:iteration_tokens_total", canonical::TOKENS_PER_STEP, WindowMean, Sum),
    map("vllm:request_prefill_time_seconds", canonical::PREFILL_TIME_S, All, Sum),
    map("vllm:request_decode_time_seconds", canonical::DECODE_TIME_S, All, Sum),
    map("vllm:request_inference_time_seconds", canonical::INFERENCE_TIME_S, All, Sum),
    // vLLM, older names (V0 engine and early V1).
    map("vllm:gpu_cache_usage_perc", canonical::KV_USAGE, All, Mean),
    map("vllm:time_per_output_token_seconds", canonical::ITL_S, All, Sum),
    map("vllm:gpu_prefix_cache_hit_rate", canonical::PREFIX_HIT_RATE, All, Mean),
    map("vllm:avg_generation_throughput_toks_per_s", canonical::GEN_THROUGHPUT, All, Sum),
    // SGLang 0.4.x.
    map("sglang:time_to_first_token_seconds", canonical::TTFT_S, All, Sum),
    map("sglang:time_per_output_token_seconds", canonical::ITL_S, All, Sum),
    map("sglang:e2e_request_latency_seconds", canonical::E2E_S, All, Sum),
    map("sglang:num_running_reqs", canonical::RUNNING, All, Sum),
    map("sglang:num_queue_reqs", canonical::QUEUE_LEN, All, Sum),
    map("sglang:token_usage", canonical::KV_USAGE, All, Mean),
    map("sglang:cache_hit_rate", canonical::PREFIX_HIT_RATE, All, Mean),
    map("sglang:gen_throughput", canonical::GEN_THROUGHPUT, All, Sum),
    map("sglang:prompt_tokens_total", canonical::PROMPT_TOKENS, Increase, Sum),
    map("sglang:generation_tokens_total", canonical::GENERATION_TOKENS, Increase, Sum),
    // SGLang 0.5.x additions.
    map("sglang:inter_token_latency_seconds", canonical::ITL_S, All, Sum),
    map("sglang:queue_time_seconds", canonical::QUEUE_TIME_S, All, Sum),
    map("sglang:num_retracted_requests_total", canonical::PREEMPTIONS, Increase, Sum),
    map("sglang:cached_tokens_total", canonical::CACHED_TOKENS, Increase, Sum),
    // llama.cpp `llama-server --metrics`.
    map("llamacpp:requests_processing", canonical::RUNNING, All, Sum),
    map("llamacpp:requests_deferred", canonical::DEFERRED, All, Sum),
    map("llamacpp:kv_cache_usage_ratio", canonical::KV_USAGE, All, Mean),
    map("llamacpp:predicted_tokens_seconds", canonical::GEN_THROUGHPUT, All, Mean),
    map("llamacpp:prompt_tokens_total", canonical::PROMPT_TOKENS, Increase, Sum),
    map("llamacpp:tokens_predicted_total", canonical::GENERATION_TOKENS, Increase, Sum),
    map("llamacpp:prompt_tokens_cached_total", canonical::CACHED_TOKENS, Increase, Sum),
];

/// Counter pairs whose window increases divide into a hit rate: `(hits, queries)`.
pub const HIT_RATE_PAIRS: &[(&str, &str)] = &[
    ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"),
    ("vllm:gpu_prefix_cache_hits_total", "vllm:gpu_prefix_cache_queries_total"),
];

/// Whether a metric reports settings in its labels (`vllm:cache_config_info`): its signal keeps
/// every label, since the labels are the information.
///
/// ```
/// use autodebug_telemetry::prometheus::names::is_info_metric;
/// assert!(is_info_metric("vllm:cache_config_info"));
/// assert!(!is_info_metric("vllm:num_requests_running"));
/// ```
pub fn is_info_metric(metric: &str) -> bool {
    metric.ends_with("_info")
}

/// The mappings for one engine metric (counters by their `_total` name).
///
/// ```
/// use autodebug_telemetry::prometheus::names::mappings_for;
/// assert_eq!(mappings_for("vllm:gpu_cache_usage_perc")[0].canonical, "kv_usage");
/// assert!(mappings_for("vllm:request_params_n").is_empty());
/// ```
pub fn mappings_for(metric: &str) -> Vec<&'static NameMapping> {
    NAME_MAP.iter().filter(|m| m.metric == metric).collect()
}

/// The unit a metric's values are in, guessed from the naming conventions engines follow.
pub fn unit_for(metric: &str) -> &'static str {
    let name = metric.strip_suffix("_total").unwrap_or(metric);
    if name.ends_with("_seconds") && !name.ends_with("tokens_seconds") {
        "s"
    } else if name.ends_with("tokens_seconds") || name.ends_with("gen_throughput") || name.ends_with("_toks_per_s") {
        "tok/s"
    } else if name.ends_with("_bytes") {
        "bytes"
    } else if name.ends_with("_perc")
        || name.ends_with("_ratio")
        || name.ends_with("token_usage")
        || name.ends_with("hit_rate")
        || name.ends_with("utilization")
    {
        "ratio"
    } else if name.contains("tokens") || name.ends_with("_token") {
        "tokens"
    } else if name.ends_with("_reqs") || name.contains("requests") || name.contains("preemptions") {
        "requests"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_canonical_the_brief_names_has_a_source_per_engine_family() {
        for canonical in [
            canonical::TTFT_S,
            canonical::ITL_S,
            canonical::E2E_S,
            canonical::QUEUE_TIME_S,
            canonical::RUNNING,
            canonical::QUEUE_LEN,
            canonical::KV_USAGE,
            canonical::PREEMPTIONS,
            canonical::GEN_THROUGHPUT,
            canonical::PROMPT_TOKENS,
            canonical::GENERATION_TOKENS,
            canonical::CACHED_TOKENS,
        ] {
            for prefix in ["vllm:", "sglang:"] {
                assert!(
                    NAME_MAP.iter().any(|m| m.canonical == canonical && m.metric.starts_with(prefix)),
                    "{prefix} has no metric for {canonical}"
                );
            }
        }
    }

    #[test]
    fn units_follow_names() {
        assert_eq!(unit_for("vllm:time_to_first_token_seconds"), "s");
        assert_eq!(unit_for("llamacpp:prompt_tokens_seconds"), "tok/s");
        assert_eq!(unit_for("vllm:prompt_tokens_total"), "tokens");
        assert_eq!(unit_for("vllm:kv_cache_usage_perc"), "ratio");
        assert_eq!(unit_for("sglang:num_queue_reqs"), "requests");
        assert_eq!(unit_for("process_resident_memory_bytes"), "bytes");
    }
}
