//! Engine-independent signal names.
//!
//! Telemetry sources keep each signal under the engine's own name (so a citation reads like the
//! engine's docs) and tag it with one of these in [`Signal::canonical`](crate::Signal::canonical),
//! so analyzers work the same on SGLang, vLLM and llama.cpp.

/// Time to first token, seconds (a quantile or mean; see the signal's labels).
pub const TTFT_S: &str = "ttft_s";
/// Inter-token latency / time per output token, seconds.
pub const ITL_S: &str = "itl_s";
/// End-to-end request latency, seconds.
pub const E2E_S: &str = "e2e_s";
/// Time a request waited in the server's queue, seconds.
pub const QUEUE_TIME_S: &str = "queue_time_s";
/// Requests running (in the batch).
pub const RUNNING: &str = "running";
/// Requests waiting in the server's queue.
pub const QUEUE_LEN: &str = "queue_len";
/// KV-cache usage, 0..1.
pub const KV_USAGE: &str = "kv_usage";
/// Prefix-cache hit rate, 0..1.
pub const PREFIX_HIT_RATE: &str = "prefix_hit_rate";
/// Preemptions / retractions in the window.
pub const PREEMPTIONS: &str = "preemptions";
/// Generation throughput, tokens/s.
pub const GEN_THROUGHPUT: &str = "gen_throughput";
/// Prompt tokens processed in the window.
pub const PROMPT_TOKENS: &str = "prompt_tokens";
/// Generation tokens produced in the window.
pub const GENERATION_TOKENS: &str = "generation_tokens";
/// Requests deferred for lack of a free slot (llama.cpp).
pub const DEFERRED: &str = "requests_deferred";
/// Share of scheduler-loop time not spent in the model forward, 0..1.
pub const SCHEDULER_OVERHEAD_SHARE: &str = "scheduler_overhead_share";
/// Time per scheduler step (profile of the batch loop), ms.
pub const SCHEDULER_STEP_MS: &str = "scheduler_step_ms";
/// Time per model forward, ms.
pub const FORWARD_MS: &str = "forward_ms";
/// GPU memory left free after the KV pool was allocated, GB.
pub const AVAILABLE_GPU_MEM_GB: &str = "available_gpu_mem_gb";
/// Tokens the KV pool can hold.
pub const MAX_TOTAL_TOKENS: &str = "max_total_tokens";
/// Prompt tokens served from the prefix cache in the window.
pub const CACHED_TOKENS: &str = "cached_tokens";
/// An error the engine logged (OOM, CUDA error, bad argument).
pub const ENGINE_ERROR: &str = "engine_error";
/// Mean tokens per engine step (batch fill) in the window.
pub const TOKENS_PER_STEP: &str = "tokens_per_step";
/// Time a request spent in its prefill phase, seconds.
pub const PREFILL_TIME_S: &str = "prefill_time_s";
/// Time a request spent in its decode phase, seconds.
pub const DECODE_TIME_S: &str = "decode_time_s";
/// Time a request spent running (prefill and decode, queue excluded), seconds.
pub const INFERENCE_TIME_S: &str = "inference_time_s";
/// CPU kernels the engine could not use and replaced by a slower path (vLLM's oneDNN fallback).
pub const CPU_KERNEL_FALLBACKS: &str = "cpu_kernel_fallbacks";
/// Compute threads the engine started, as it reported them (llama.cpp's threadpool line).
pub const ENGINE_THREADS: &str = "engine_threads";
