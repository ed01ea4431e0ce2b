//! vLLM's startup facts (GPU and CPU), the settings it reports (`non-default args`, the engine
//! config line) as `vllm.startup.*` attributes, CPU kernel fallbacks, preemption warnings and the
//! periodic `Avg prompt throughput` lines.

use autodebug_core::canonical;

use super::collector::{Collector, Reduce};
use super::number_after;

/// Settings of the `Initializing a V1 LLM engine (v…) with config:` line reported as
/// `vllm.startup.<key>`: the ones a tuning change can move.
const ENGINE_CONFIG_KEYS: &[&str] = &[
    "dtype",
    "max_seq_len",
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "data_parallel_size",
    "quantization",
    "enforce_eager",
    "kv_cache_dtype",
    "device_config",
    "enable_prefix_caching",
    "enable_chunked_prefill",
];

pub(crate) fn read(text: &str, in_window: bool, collector: &mut Collector) {
    read_startup(text, collector);
    // Printed once at startup but a fact about every step served: counted over the whole log.
    if text.contains("Failed to create oneDNN linear, fallback to torch linear") {
        collector.count_whole_log("vllm.log.onednn_fallback", "lines", Some(canonical::CPU_KERNEL_FALLBACKS), text);
    } else if text.contains("Downcasting torch.float32 to torch.bfloat16") {
        collector.count_whole_log("vllm.log.downcast_to_bf16", "lines", None, text);
    } else if text.contains("Downcasting torch.float32 to torch.float16") {
        collector.count_whole_log("vllm.log.downcast_to_fp16", "lines", None, text);
    } else if in_window && text.contains("preempted") {
        collector.observe("vllm.log.preemptions", 1.0, "requests", Reduce::Count, Some(canonical::PREEMPTIONS), text);
    } else if in_window && text.contains("Avg prompt throughput:") {
        read_stats(text, collector);
    }
}

fn read_startup(text: &str, collector: &mut Collector) {
    if text.contains("non-default args:") {
        for (key, value) in autodebug_core::startup_args::pairs(after(text, "non-default args:")) {
            collector.startup_attribute(&format!("vllm.startup.{key}"), &value, text);
        }
        return;
    }
    if text.contains("LLM engine (v") && text.contains("with config:") {
        if let Some(version) = text.split("LLM engine (v").nth(1).and_then(|r| r.split(')').next()) {
            collector.startup_attribute("vllm.startup.version", version, text);
        }
        for (key, value) in autodebug_core::startup_args::pairs(after(text, "with config:")) {
            if ENGINE_CONFIG_KEYS.contains(&key.as_str()) {
                let value = value.strip_prefix("torch.").unwrap_or(&value);
                collector.startup_attribute(&format!("vllm.startup.{key}"), value, text);
            }
        }
        return;
    }
    // The banner (`version 0.32.0`) and older servers' `vLLM API server version 0.9.1`.
    if let Some(version) = version_in(text) {
        collector.startup_attribute("vllm.startup.version", version, text);
    }
    // vLLM 0.32 prints the CPU pool and the concurrency on one line, the GPU build on two.
    for (key, name) in
        [("GPU KV cache size:", "vllm.log.gpu_kv_cache_tokens"), ("CPU KV cache size:", "vllm.log.kv_cache_tokens")]
    {
        if let Some(tokens) = number_after(text, key) {
            collector.startup(name, tokens, "tokens", Some(canonical::MAX_TOTAL_TOKENS), text);
        }
    }
    if text.contains("Maximum concurrency for")
        && let Some(x) = number_after(text, "tokens per request:")
    {
        collector.startup("vllm.log.maximum_concurrency", x, "x", None, text);
    }
    if text.contains("Model loading took") {
        if let Some(gib) = number_after(text, "Model loading took") {
            collector.startup("vllm.log.model_loading.memory_gib", gib, "GiB", None, text);
        }
        if let Some(seconds) = number_after(text, " and ") {
            collector.startup("vllm.log.model_loading.seconds", seconds, "s", None, text);
        }
    }
    // `(key, signal, unit)`: one number after the key.
    let facts: [(&str, &str, &str); 9] = [
        ("Available KV cache memory:", "vllm.log.available_kv_cache_memory_gib", "GiB"),
        ("Loading weights took", "vllm.log.loading_weights_s", "s"),
        ("Initializing model took", "vllm.log.initializing_model_s", "s"),
        ("Checkpoint size:", "vllm.log.checkpoint_size_gib", "GiB"),
        ("Available RAM:", "vllm.log.available_ram_gib", "GiB"),
        ("Initial profiling/warmup run took", "vllm.log.warmup_s", "s"),
        ("init engine (profile, create kv cache, warmup model) took", "vllm.log.init_engine_s", "s"),
        ("Using max model len", "vllm.log.max_model_len", "tokens"),
        ("Chunked prefill is enabled with max_num_batched_tokens=", "vllm.log.max_num_batched_tokens", "tokens"),
    ];
    for (key, name, unit) in facts {
        if text.contains(key)
            && let Some(value) = number_after(text, key)
        {
            collector.startup(name, value, unit, None, text);
        }
    }
    // `Explicitly set (2.0/23.54) GiB for KV cache on node 0.`: VLLM_CPU_KVCACHE_SPACE of the node's memory.
    if text.contains("GiB for KV cache")
        && let Some(gib) = number_after(text, "Explicitly set (")
    {
        collector.startup("vllm.log.cpu_kv_cache_space_gib", gib, "GiB", None, text);
    }
    if text.contains("Reducing Torch threads from")
        && let Some(threads) = number_after(text, " to ")
    {
        collector.startup("vllm.log.torch_threads", threads, "threads", None, text);
    }
    if text.contains("Graph capturing finished") {
        if let Some(seconds) = number_after(text, "finished in") {
            collector.startup("vllm.log.cuda_graph.capture_s", seconds, "s", None, text);
        }
        if let Some(gib) = number_after(text, "took") {
            collector.startup("vllm.log.cuda_graph.memory_gib", gib, "GiB", None, text);
        }
    }
}

/// The text after `key`.
fn after<'a>(text: &'a str, key: &str) -> &'a str {
    text.find(key).map_or("", |i| &text[i + key.len()..])
}

/// `0.32.0` from the banner's `… version 0.32.0` or `vLLM API server version 0.9.1`.
fn version_in(text: &str) -> Option<&str> {
    if !(text.contains("vLLM API server version") || text.contains("█  version ")) {
        return None;
    }
    let word = after(text, "version ").split_whitespace().next()?;
    word.starts_with(|c: char| c.is_ascii_digit()).then_some(word)
}

fn read_stats(text: &str, collector: &mut Collector) {
    // (key, signal name, unit, how lines combine, canonical, scale to the unit)
    type Fact = (&'static str, &'static str, &'static str, Reduce, Option<&'static str>, f64);
    let facts: [Fact; 6] = [
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
    // `GPU KV cache usage: 41.5%`; builds that split the pool say `KV cache usage: active 41.5%, …`.
    let usage = number_after(text, "KV cache usage:").or_else(|| number_after(text, "KV cache usage: active"));
    if let Some(percent) = usage {
        let name = if text.contains("GPU KV cache usage:") {
            "vllm.log.max_gpu_kv_cache_usage"
        } else {
            "vllm.log.max_kv_cache_usage"
        };
        collector.observe(name, percent * 0.01, "ratio", Reduce::Max, Some(canonical::KV_USAGE), text);
    }
}
