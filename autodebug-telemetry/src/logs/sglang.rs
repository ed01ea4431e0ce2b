//! SGLang's startup facts and its `Prefill batch` / `Decode batch` lines.

use autodebug_core::canonical;

use super::collector::{Collector, Reduce};
use super::{number_after, word_after};

pub(crate) fn read(text: &str, in_window: bool, collector: &mut Collector) {
    if text.contains("Load weight end") {
        if let Some(gb) = number_after(text, "avail mem=") {
            collector.startup("sglang.log.load_weight.avail_mem_gb", gb, "GB", None, text);
        }
        if let Some(gb) = number_after(text, "mem usage=") {
            collector.startup("sglang.log.load_weight.mem_usage_gb", gb, "GB", None, text);
        }
    } else if text.contains("KV Cache is allocated") {
        if let Some(tokens) = number_after(text, "#tokens:") {
            collector.startup("sglang.log.kv_cache.tokens", tokens, "tokens", Some(canonical::MAX_TOTAL_TOKENS), text);
        }
        for (key, name) in [("K size:", "sglang.log.kv_cache.k_size_gb"), ("V size:", "sglang.log.kv_cache.v_size_gb")]
        {
            if let Some(gb) = number_after(text, key) {
                collector.startup(name, gb, "GB", None, text);
            }
        }
    } else if text.contains("max_total_num_tokens=") {
        read_server_limits(text, collector);
    } else if text.contains("Capture cuda graph end") || text.contains("Capture cuda graph end.") {
        if let Some(seconds) = number_after(text, "Time elapsed:") {
            collector.startup("sglang.log.cuda_graph.capture_s", seconds, "s", None, text);
        }
        if let Some(gb) = number_after(text, "mem usage=") {
            collector.startup("sglang.log.cuda_graph.mem_usage_gb", gb, "GB", None, text);
        }
    } else if in_window && text.contains("Prefill batch") {
        read_prefill(text, collector);
    } else if in_window && text.contains("Decode batch") {
        read_decode(text, collector);
    } else if in_window && text.contains("KV cache pool is full. Retract requests.") {
        let retracted = number_after(text, "#retracted_reqs:").unwrap_or(1.0);
        collector.observe(
            "sglang.log.retracted_reqs",
            retracted,
            "requests",
            Reduce::Sum,
            Some(canonical::PREEMPTIONS),
            text,
        );
    }
}

fn read_server_limits(text: &str, collector: &mut Collector) {
    let facts: [(&str, &str, &str, Option<&str>); 6] = [
        ("max_total_num_tokens=", "sglang.log.max_total_num_tokens", "tokens", Some(canonical::MAX_TOTAL_TOKENS)),
        ("chunked_prefill_size=", "sglang.log.chunked_prefill_size", "tokens", None),
        ("max_prefill_tokens=", "sglang.log.max_prefill_tokens", "tokens", None),
        ("max_running_requests=", "sglang.log.max_running_requests", "requests", None),
        ("context_len=", "sglang.log.context_len", "tokens", None),
        ("available_gpu_mem=", "sglang.log.available_gpu_mem_gb", "GB", Some(canonical::AVAILABLE_GPU_MEM_GB)),
    ];
    for (key, name, unit, canonical) in facts {
        if let Some(value) = number_after(text, key) {
            collector.startup(name, value, unit, canonical, text);
        }
    }
}

fn read_prefill(text: &str, collector: &mut Collector) {
    let new_tokens = number_after(text, "#new-token:");
    let cached_tokens = number_after(text, "#cached-token:");
    if let Some(n) = new_tokens {
        collector.observe("sglang.log.prefill.new_tokens", n, "tokens", Reduce::Sum, None, text);
    }
    if let Some(n) = cached_tokens {
        collector.observe(
            "sglang.log.prefill.cached_tokens",
            n,
            "tokens",
            Reduce::Sum,
            Some(canonical::CACHED_TOKENS),
            text,
        );
    }
    if let (Some(new), Some(cached)) = (new_tokens, cached_tokens)
        && new + cached > 0.0
    {
        // Weighted by the batch's tokens, so the mean is cached / (cached + new) over the window.
        collector.observe_weighted(
            "sglang.log.prefill.cached_ratio",
            cached / (new + cached),
            new + cached,
            "ratio",
            Reduce::Mean,
            Some(canonical::PREFIX_HIT_RATE),
            text,
        );
    }
    if let Some(n) = number_after(text, "#new-seq:") {
        collector.observe("sglang.log.prefill.new_seqs", n, "requests", Reduce::Sum, None, text);
    }
    if let Some(q) = number_after(text, "#queue-req:") {
        collector.observe("sglang.log.prefill.max_queue_req", q, "requests", Reduce::Max, None, text);
    }
}

fn read_decode(text: &str, collector: &mut Collector) {
    if let Some(t) = number_after(text, "gen throughput (token/s):") {
        collector.observe(
            "sglang.log.decode.gen_throughput",
            t,
            "tok/s",
            Reduce::Mean,
            Some(canonical::GEN_THROUGHPUT),
            text,
        );
    }
    if let Some(q) = number_after(text, "#queue-req:") {
        collector.observe(
            "sglang.log.decode.max_queue_req",
            q,
            "requests",
            Reduce::Max,
            Some(canonical::QUEUE_LEN),
            text,
        );
    }
    if let Some(u) = number_after(text, "token usage:") {
        collector.observe(
            "sglang.log.decode.max_token_usage",
            u,
            "ratio",
            Reduce::Max,
            Some(canonical::KV_USAGE),
            text,
        );
    }
    if let Some(r) = number_after(text, "#running-req:") {
        collector.observe(
            "sglang.log.decode.max_running_req",
            r,
            "requests",
            Reduce::Max,
            Some(canonical::RUNNING),
            text,
        );
    }
    if let Some(graph) = word_after(text, "cuda graph:") {
        collector.startup_text("sglang.log.decode.cuda_graph", graph, text);
    }
}
