//! A capacity plan from an engine's startup log: where the GPU memory went (weights, KV pool,
//! CUDA graphs, headroom), how many requests of a given size the KV pool holds at once, and
//! which limit binds first, with each concern as a citable signal.

use autodebug_core::{EngineKind, LogLine, Signal, SignalKind, TelemetrySnapshot, format_number};
use serde::Serialize;

use super::{SOURCE, number_after};

const GIB_IN_GB: f64 = 1.073_741_824;

/// Free GPU memory below this after startup leaves no room for activation peaks.
pub const LOW_HEADROOM_GB: f64 = 1.0;

/// The request shape a plan is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RequestShape {
    /// Prompt (input) tokens per request.
    pub isl: u64,
    /// Generated (output) tokens per request.
    pub osl: u64,
}

impl RequestShape {
    pub fn tokens(&self) -> u64 {
        self.isl + self.osl
    }
}

/// What the engine's memory holds and how many requests fit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapacityPlan {
    pub engine: String,
    pub weights_gb: Option<f64>,
    pub kv_pool_gb: Option<f64>,
    /// Tokens the KV pool holds (all slots together for llama.cpp).
    pub kv_tokens: Option<f64>,
    pub kv_bytes_per_token: Option<f64>,
    pub cuda_graph_gb: Option<f64>,
    /// GPU memory left free once everything was allocated.
    pub headroom_gb: Option<f64>,
    /// The engine's cap on concurrent requests (`max_running_requests`, llama.cpp slots).
    pub max_running_requests: Option<f64>,
    pub context_len: Option<f64>,
    pub request: Option<RequestShape>,
    /// Requests of `request`'s size that can run at once.
    pub max_concurrency: Option<f64>,
    /// `kv_pool`, `max_running_requests`, `slots` or `context_len`: what caps `max_concurrency`.
    pub limited_by: Option<String>,
    /// Concerns as citable signals (`capacity.low_headroom`, `capacity.kv_bound`...), plus the
    /// engine errors and preemptions the log already showed.
    pub warnings: Vec<Signal>,
}

/// Guesses which engine wrote `lines` from the phrases each one prints.
///
/// ```
/// use autodebug_core::{EngineKind, LogLine};
/// use autodebug_telemetry::logs::capacity::guess_engine;
/// let line = |t: &str| LogLine { time_ns: 0, text: t.into() };
/// assert_eq!(guess_engine(&[line("INFO 03-24 20:39:14 [kv_cache_utils.py:715] GPU KV cache size: 5,364,512 tokens")]), Some(EngineKind::Vllm));
/// assert_eq!(guess_engine(&[line("hello")]), None);
/// ```
pub fn guess_engine(lines: &[LogLine]) -> Option<EngineKind> {
    const CLUES: &[(EngineKind, &[&str])] = &[
        (
            EngineKind::Sglang,
            &[
                "sglang",
                "Prefill batch",
                "Decode batch",
                "max_total_num_tokens",
                "KV Cache is allocated",
                "Load weight end",
            ],
        ),
        (
            EngineKind::Vllm,
            &["vllm", "vLLM", "Avg prompt throughput", "GPU KV cache size", "Model loading took", "kv_cache_utils.py"],
        ),
        (EngineKind::LlamaCpp, &["llama_", "llama-server", "print_timing", "n_slots", "srv ", "slot "]),
    ];
    let mut scores = [0usize; 3];
    for line in lines.iter().take(5000) {
        for (i, (_, clues)) in CLUES.iter().enumerate() {
            if clues.iter().any(|c| line.text.contains(c)) {
                scores[i] += 1;
            }
        }
    }
    let (best, score) = scores.iter().enumerate().max_by_key(|(_, s)| **s)?;
    (*score > 0).then(|| CLUES[best].0)
}

fn value(snapshot: &TelemetrySnapshot, name: &str) -> Option<f64> {
    snapshot.get(name).and_then(Signal::as_f64)
}

fn warning(name: &str, value: f64, unit: &str, detail: String) -> Signal {
    Signal::number(SOURCE, SignalKind::LogLine, name, value, unit).with_detail(detail)
}

/// Builds the capacity plan from the signals [`parse_engine_logs`](super::parse_engine_logs)
/// found; `request` adds the concurrency figures for that request size.
///
/// ```
/// use autodebug_core::{EngineKind, LogLine};
/// use autodebug_telemetry::logs::capacity::{capacity_plan, RequestShape};
/// use autodebug_telemetry::parse_engine_logs;
/// let lines: Vec<LogLine> = [
///     "[2026-03-24 20:39:07 TP0] Load weight end. type=Qwen2ForCausalLM, avail mem=77.50 GB, mem usage=15.2 GB.",
///     "[2026-03-24 20:39:07 TP0] KV Cache is allocated. #tokens: 400000, K size: 24.00 GB, V size: 24.00 GB",
///     "[2026-03-24 20:39:20 TP0] max_total_num_tokens=400000, chunked_prefill_size=8192, max_prefill_tokens=16384, max_running_requests=256, context_len=32768, available_gpu_mem=0.60 GB",
/// ].iter().map(|t| LogLine { time_ns: 0, text: t.to_string() }).collect();
/// let snapshot = parse_engine_logs(EngineKind::Sglang, &lines, None);
/// let plan = capacity_plan(EngineKind::Sglang, &snapshot, Some(RequestShape { isl: 2000, osl: 500 }));
/// assert_eq!(plan.max_concurrency, Some(160.0));
/// assert_eq!(plan.limited_by.as_deref(), Some("kv_pool"));
/// assert!(plan.warnings.iter().any(|w| w.name == "capacity.low_headroom"));
/// ```
pub fn capacity_plan(engine: EngineKind, snapshot: &TelemetrySnapshot, request: Option<RequestShape>) -> CapacityPlan {
    let mut plan = CapacityPlan {
        engine: engine.to_string(),
        weights_gb: None,
        kv_pool_gb: None,
        kv_tokens: None,
        kv_bytes_per_token: None,
        cuda_graph_gb: None,
        headroom_gb: None,
        max_running_requests: None,
        context_len: None,
        request,
        max_concurrency: None,
        limited_by: None,
        warnings: Vec::new(),
    };
    let mut slots_cap = false;
    match engine {
        EngineKind::Sglang => {
            plan.weights_gb = value(snapshot, "sglang.log.load_weight.mem_usage_gb");
            plan.kv_pool_gb = match (
                value(snapshot, "sglang.log.kv_cache.k_size_gb"),
                value(snapshot, "sglang.log.kv_cache.v_size_gb"),
            ) {
                (Some(k), Some(v)) => Some(k + v),
                (Some(k), None) => Some(k),
                _ => None,
            };
            plan.kv_tokens = value(snapshot, "sglang.log.max_total_num_tokens")
                .or_else(|| value(snapshot, "sglang.log.kv_cache.tokens"));
            plan.cuda_graph_gb = value(snapshot, "sglang.log.cuda_graph.mem_usage_gb");
            plan.headroom_gb = value(snapshot, "sglang.log.available_gpu_mem_gb");
            plan.max_running_requests = value(snapshot, "sglang.log.max_running_requests");
            plan.context_len = value(snapshot, "sglang.log.context_len");
        }
        EngineKind::Vllm => {
            plan.weights_gb = value(snapshot, "vllm.log.model_loading.memory_gib").map(|g| g * GIB_IN_GB);
            // The CPU build states the pool it was given (VLLM_CPU_KVCACHE_SPACE) instead of what was left.
            plan.kv_pool_gb = value(snapshot, "vllm.log.available_kv_cache_memory_gib")
                .or_else(|| value(snapshot, "vllm.log.cpu_kv_cache_space_gib"))
                .map(|g| g * GIB_IN_GB);
            plan.kv_tokens =
                value(snapshot, "vllm.log.gpu_kv_cache_tokens").or_else(|| value(snapshot, "vllm.log.kv_cache_tokens"));
            plan.cuda_graph_gb = value(snapshot, "vllm.log.cuda_graph.memory_gib").map(|g| g * GIB_IN_GB);
            // vLLM states its per-request length in the concurrency line: `for 32,768 tokens per request`.
            plan.context_len = snapshot
                .get("vllm.log.maximum_concurrency")
                .and_then(|s| s.detail.as_deref())
                .and_then(|d| number_after(d, "Maximum concurrency for"));
        }
        EngineKind::LlamaCpp => {
            let slots = value(snapshot, "llamacpp.log.n_slots");
            let per_slot = value(snapshot, "llamacpp.log.n_ctx_slot");
            plan.max_running_requests = slots;
            plan.context_len = per_slot;
            plan.kv_tokens = slots.zip(per_slot).map(|(s, c)| s * c);
            slots_cap = true;
        }
    }
    if let (Some(gb), Some(tokens)) = (plan.kv_pool_gb, plan.kv_tokens)
        && tokens > 0.0
    {
        plan.kv_bytes_per_token = Some(gb * 1e9 / tokens);
    }
    if let Some(headroom) = plan.headroom_gb.filter(|h| *h < LOW_HEADROOM_GB) {
        plan.warnings.push(warning(
            "capacity.low_headroom",
            headroom,
            "GB",
            format!(
                "only {} GB of GPU memory left after weights, KV pool and CUDA graphs: activation peaks of large prefills can run out of memory; lower the static memory fraction (SGLang --mem-fraction-static) or --chunked-prefill-size",
                format_number(headroom)
            ),
        ));
    }
    if let Some(shape) = request {
        concurrency(&mut plan, shape, slots_cap);
    }
    for signal in &snapshot.signals {
        if signal.name.starts_with("engine.error.")
            || signal.canonical.as_deref() == Some(autodebug_core::canonical::PREEMPTIONS)
        {
            plan.warnings.push(signal.clone());
        }
    }
    plan
}

fn concurrency(plan: &mut CapacityPlan, shape: RequestShape, slots_cap: bool) {
    let tokens = shape.tokens() as f64;
    if tokens <= 0.0 {
        return;
    }
    if let Some(context) = plan.context_len.filter(|c| tokens > *c) {
        plan.max_concurrency = Some(0.0);
        plan.limited_by = Some("context_len".into());
        plan.warnings.push(warning(
            "capacity.context_exceeded",
            tokens,
            "tokens",
            format!(
                "a request of {} + {} = {} tokens exceeds the context length of {} tokens: it will be rejected or truncated; raise the context length or shorten the workload",
                shape.isl,
                shape.osl,
                format_number(tokens),
                format_number(context)
            ),
        ));
        return;
    }
    let by_kv = if slots_cap { None } else { plan.kv_tokens.map(|kv| (kv / tokens).floor()) };
    let (max, limit) = match (by_kv, plan.max_running_requests) {
        (Some(kv), Some(cap)) if kv < cap => (kv, "kv_pool"),
        (Some(_), Some(cap)) => (cap, if slots_cap { "slots" } else { "max_running_requests" }),
        (Some(kv), None) => (kv, "kv_pool"),
        (None, Some(cap)) => (cap, if slots_cap { "slots" } else { "max_running_requests" }),
        (None, None) => return,
    };
    plan.max_concurrency = Some(max);
    plan.limited_by = Some(limit.to_string());
    if max < 1.0 {
        plan.warnings.push(warning(
            "capacity.request_does_not_fit",
            tokens,
            "tokens",
            format!(
                "the KV pool holds {} tokens, less than one request of {} tokens",
                format_number(plan.kv_tokens.unwrap_or(0.0)),
                format_number(tokens)
            ),
        ));
    } else if let (Some(kv), Some(cap)) = (by_kv, plan.max_running_requests)
        && kv < cap
    {
        plan.warnings.push(warning(
                "capacity.kv_bound",
                kv,
                "requests",
                format!(
                    "the KV pool ({} tokens) holds {} requests of {} tokens at once, fewer than the {} the scheduler admits: past that, requests queue or are retracted; shorten requests, raise the KV memory fraction or quantize the KV cache",
                    format_number(plan.kv_tokens.unwrap_or(0.0)),
                    format_number(kv),
                    format_number(tokens),
                    format_number(cap)
                ),
            ));
    }
}
