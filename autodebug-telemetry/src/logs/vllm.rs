//! vLLM's startup facts, preemption warnings and periodic `Avg prompt throughput` lines.

use autodebug_core::canonical;

use super::collector::{Collector, Reduce};
use super::number_after;

pub(crate) fn read(text: &str, in_window: bool, collector: &mut Collector) {
    if text.contains("Model loading took") {
        if let Some(gib) = number_after(text, "Model loading took") {
            collector.startup("vllm.log.model_loading.memory_gib", gib, "GiB", None, text);
        }
        if let Some(seconds) = number_after(text, " and ") {
            collector.startup("vllm.log.model_loading.seconds", seconds, "s", None, text);
        }
    } else if text.contains("Available KV cache memory:") {
        if let Some(gib) = number_after(text, "Available KV cache memory:") {
            collector.startup("vllm.log.available_kv_cache_memory_gib", gib, "GiB", None, text);
        }
    } else if text.contains("GPU KV cache size:") {
        if let Some(tokens) = number_after(text, "GPU KV cache size:") {
            collector.startup(
                "vllm.log.gpu_kv_cache_tokens",
                tokens,
                "tokens",
                Some(canonical::MAX_TOTAL_TOKENS),
                text,
            );
        }
    } else if text.contains("Maximum concurrency for") {
        if let Some(x) = number_after(text, "tokens per request:") {
            collector.startup("vllm.log.maximum_concurrency", x, "x", None, text);
        }
    } else if text.contains("Graph capturing finished") {
        if let Some(seconds) = number_after(text, "finished in") {
            collector.startup("vllm.log.cuda_graph.capture_s", seconds, "s", None, text);
        }
        if let Some(gib) = number_after(text, "took") {
            collector.startup("vllm.log.cuda_graph.memory_gib", gib, "GiB", None, text);
        }
    } else if in_window && text.contains("preempted") {
        collector.observe("vllm.log.preemptions", 1.0, "requests", Reduce::Count, Some(canonical::PREEMPTIONS), text);
    } else if in_window && text.contains("Avg prompt throughput:") {
        read_stats(text, collector);
    }
}

fn read_stats(text: &str, collector: &mut Collector) {
    // (key, signal name, unit, how lines combine, canonical, scale to the unit)
    type Fact = (&'static str, &'static str, &'static str, Reduce, Option<&'static str>, f64);
    let facts: [Fact; 7] = [
        ("Avg prompt throughput:", "vllm.log.avg_prompt_throughput", "tok/s", Reduce::Mean, None, 1.0),
        (
            "Avg generation throughput:",
            "vllm.log.avg_generation_throughput",
            "tok/s",
            Reduce::Mean,
            Some(canonical::GEN_THROUGHPUT),
            1.0,
        ),
        ("Running:", "vllm.log.max_running", "requests", Reduce::Max, Some(canonical::RUNNING), 1.0),
        ("Waiting:", "vllm.log.max_waiting", "requests", Reduce::Max, Some(canonical::QUEUE_LEN), 1.0),
        // V0 engines call the queue `Pending`.
        ("Pending:", "vllm.log.max_waiting", "requests", Reduce::Max, Some(canonical::QUEUE_LEN), 1.0),
        (
            "GPU KV cache usage:",
            "vllm.log.max_gpu_kv_cache_usage",
            "ratio",
            Reduce::Max,
            Some(canonical::KV_USAGE),
            0.01,
        ),
        (
            "Prefix cache hit rate:",
            "vllm.log.prefix_cache_hit_rate",
            "ratio",
            Reduce::Mean,
            Some(canonical::PREFIX_HIT_RATE),
            0.01,
        ),
    ];
    for (key, name, unit, reduce, canonical, scale) in facts {
        if let Some(value) = number_after(text, key) {
            collector.observe(name, value * scale, unit, reduce, canonical, text);
        }
    }
}
