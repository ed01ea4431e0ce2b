//! Roofline cost model: how long one forward pass and one scheduler round trip take.
//!
//! GPU time is the larger of memory time (weights + KV read at a sustained share of HBM
//! bandwidth) and compute time (2·params FLOPs per token plus attention at a sustained share of
//! peak), plus tensor-parallel all-reduces and kernel launches. Decode is memory-bound and
//! prefill compute-bound, as on real hardware. CPU time is the Python scheduler: a cost per
//! round trip, a cost per forward pass that grows with the batch, and, without CUDA graphs,
//! the kernel launches themselves (they hold the GIL, so overlap scheduling cannot hide them).

use autodebug_core::EngineKind;

use crate::config::SimConfig;

const NS_PER_MS: f64 = 1e6;
const HBM_EFFICIENCY: f64 = 0.8;
const COMPUTE_EFFICIENCY: f64 = 0.6;
const KERNELS_PER_LAYER: f64 = 14.0;
const EAGER_LAUNCH_NS: f64 = 3_500.0;
const GRAPH_LAUNCH_BASE_NS: f64 = 15_000.0;
const GRAPH_LAUNCH_PER_LAYER_NS: f64 = 4_000.0;
const SAMPLING_NS: f64 = 40_000.0;
const ALLREDUCE_LATENCY_NS: f64 = 8_000.0;

/// Scheduler CPU constants of one engine, in ms (calibrated on SGLang + Qwen1.5-0.5B + H100).
#[derive(Debug, Clone, Copy)]
struct CpuProfile {
    per_round_trip_ms: f64,
    per_pass_ms: f64,
    /// Multiplies `batch^0.6`: per-request bookkeeping grows sublinearly with batching.
    per_pass_batch_ms: f64,
    per_prefill_request_ms: f64,
    per_prefill_token_ms: f64,
    /// Share of the shorter of CPU and GPU time that overlap scheduling hides.
    overlap_hidden: f64,
    /// The same share when the engine does not overlap at all.
    baseline_hidden: f64,
}

const SGLANG_CPU: CpuProfile = CpuProfile {
    per_round_trip_ms: 0.09,
    per_pass_ms: 1.0,
    per_pass_batch_ms: 0.33,
    per_prefill_request_ms: 0.25,
    per_prefill_token_ms: 0.0002,
    overlap_hidden: 0.9,
    baseline_hidden: 0.0,
};

const VLLM_CPU: CpuProfile = CpuProfile {
    per_round_trip_ms: 0.15,
    per_pass_ms: 0.9,
    per_pass_batch_ms: 0.25,
    per_prefill_request_ms: 0.2,
    per_prefill_token_ms: 0.0002,
    overlap_hidden: 0.5,
    baseline_hidden: 0.5,
};

/// One forward pass to cost.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PassShape {
    /// Tokens computed (decode: one per request, times draft tokens + 1 when speculating).
    pub(crate) tokens: u64,
    /// KV tokens read by attention across the batch.
    pub(crate) context_tokens: u64,
    /// Query×key pairs of prefill attention.
    pub(crate) attention_pairs: f64,
    pub(crate) cuda_graph: bool,
}

/// The cost of one forward pass, split by who pays it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PassCost {
    pub(crate) gpu_ns: f64,
    /// Kernel launches done eagerly from Python.
    pub(crate) launch_cpu_ns: f64,
}

#[derive(Debug, Clone)]
pub(crate) struct CostModel {
    weight_read_ns: f64,
    kv_read_ns_per_token: f64,
    linear_ns_per_token: f64,
    attention_ns_per_pair: f64,
    allreduce_fixed_ns: f64,
    allreduce_ns_per_token: f64,
    graph_launch_ns: f64,
    eager_launch_ns: f64,
    cpu: CpuProfile,
    overlap: bool,
    speculative_cpu_ns_per_request: f64,
    speculative_cpu_ns_per_pass: f64,
}

impl CostModel {
    pub(crate) fn new(config: &SimConfig) -> Self {
        let model = config.model;
        let gpu = config.gpu;
        let tp = config.tp_size.max(1);
        let hbm = gpu.hbm_gb_s * 1e9 * HBM_EFFICIENCY;
        let flops = gpu.bf16_tflops * 1e12 * COMPUTE_EFFICIENCY;
        let attention = config.attention_backend.slowdown();
        let kv_bytes = model.kv_bytes_per_token_per_gpu(tp, config.kv_cache_dtype.bytes());
        let allreduce = tp > 1;
        let hidden_bytes = model.hidden as f64 * 2.0;
        let ring = 2.0 * (tp as f64 - 1.0) / tp as f64;
        let cpu = match config.engine {
            EngineKind::Vllm => VLLM_CPU,
            _ => SGLANG_CPU,
        };
        CostModel {
            weight_read_ns: model.weight_bytes_per_gpu(tp) / hbm * 1e9,
            kv_read_ns_per_token: kv_bytes / hbm * 1e9 * attention,
            linear_ns_per_token: 2.0 * model.params_b * 1e9 / tp as f64 / flops * 1e9,
            // QK^T and PV: 4 FLOPs per pair per head dimension, heads split across ranks.
            attention_ns_per_pair: 4.0 * model.layers as f64 * (model.heads * model.head_dim) as f64
                / tp as f64
                / flops
                * 1e9
                * attention,
            allreduce_fixed_ns: if allreduce { 2.0 * model.layers as f64 * ALLREDUCE_LATENCY_NS } else { 0.0 },
            allreduce_ns_per_token: if allreduce {
                2.0 * model.layers as f64 * hidden_bytes * ring / (gpu.nvlink_gb_s * 1e9) * 1e9
            } else {
                0.0
            },
            graph_launch_ns: GRAPH_LAUNCH_BASE_NS + GRAPH_LAUNCH_PER_LAYER_NS * model.layers as f64,
            eager_launch_ns: EAGER_LAUNCH_NS
                * KERNELS_PER_LAYER
                * model.layers as f64
                * if allreduce { 1.2 } else { 1.0 },
            cpu,
            overlap: config.overlap_schedule,
            // An assumption, fitted to nothing: 0.45 ms per pass plus 0.1 ms per request. Published
            // figures bracket it without pinning it down: vLLM's n-gram proposer took 1.5-2.2 ms
            // per step on one H100 at batch 1 (input 550 / output 150) once its lookup moved to the
            // CPU (vllm-project/vllm PR #9333), and after the Numba rewrite drafting was 5-8% of the
            // critical path for a small model (opt-125m) and 0.9% for Llama4 Scout
            // (vllm-project/vllm issue #22408), about 0.1 ms of this model's 1.5 ms step. SGLang's
            // C++ n-gram trie has no published per-step cost.
            speculative_cpu_ns_per_request: 0.1 * NS_PER_MS,
            speculative_cpu_ns_per_pass: 0.45 * NS_PER_MS,
        }
    }

    pub(crate) fn pass(&self, shape: PassShape) -> PassCost {
        let tokens = shape.tokens as f64;
        let memory = self.weight_read_ns + self.kv_read_ns_per_token * shape.context_tokens as f64;
        let compute = self.linear_ns_per_token * tokens + self.attention_ns_per_pair * shape.attention_pairs;
        let comm = self.allreduce_fixed_ns + self.allreduce_ns_per_token * tokens;
        let exec = memory.max(compute) + comm + SAMPLING_NS;
        if shape.cuda_graph {
            PassCost { gpu_ns: exec + self.graph_launch_ns, launch_cpu_ns: 0.0 }
        } else {
            PassCost { gpu_ns: exec, launch_cpu_ns: self.eager_launch_ns }
        }
    }

    pub(crate) fn round_trip_cpu_ns(&self) -> f64 {
        self.cpu.per_round_trip_ms * NS_PER_MS
    }

    /// Scheduler work per forward pass: sampling bookkeeping, stop checks, streaming outputs.
    pub(crate) fn pass_cpu_ns(&self, batch: usize) -> f64 {
        (self.cpu.per_pass_ms + self.cpu.per_pass_batch_ms * (batch.max(1) as f64).powf(0.6)) * NS_PER_MS
    }

    pub(crate) fn prefill_cpu_ns(&self, requests: usize, tokens: u64) -> f64 {
        (self.cpu.per_prefill_request_ms * requests as f64 + self.cpu.per_prefill_token_ms * tokens as f64) * NS_PER_MS
    }

    /// N-gram lookup and draft-tree bookkeeping of one speculative pass.
    pub(crate) fn speculative_cpu_ns(&self, batch: usize) -> f64 {
        self.speculative_cpu_ns_per_pass + self.speculative_cpu_ns_per_request * batch as f64
    }

    /// Wall time of a round trip given its CPU and GPU totals.
    pub(crate) fn wall_ns(&self, cpu_ns: f64, gpu_ns: f64) -> f64 {
        let hidden = if self.overlap { self.cpu.overlap_hidden } else { self.cpu.baseline_hidden };
        cpu_ns.max(gpu_ns) + (1.0 - hidden) * cpu_ns.min(gpu_ns)
    }
}
