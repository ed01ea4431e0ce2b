//! Engine flags, parsed the way each engine's argparse does, and the effective settings after
//! the engine's own defaults.

mod attributes;
mod defaults;
mod errors;
mod flags;
mod settings;
#[cfg(test)]
mod tests;

use autodebug_core::{EngineKind, Secret};

use crate::profiles::{GpuProfile, ModelProfile};

pub use errors::SimError;
pub use settings::{AttentionBackend, KvCacheDtype, SchedulePolicy, Speculative, SpeculativeAlgorithm};

/// A simulated deployment: hardware, model, and every engine setting after defaults.
/// Its `Debug` output hides the value of `--api-key` in `args`.
#[derive(Clone)]
pub struct SimConfig {
    pub engine: EngineKind,
    pub gpu: &'static GpuProfile,
    pub gpu_count: u32,
    pub model: &'static ModelProfile,
    /// The raw engine flags, as given.
    pub args: Vec<String>,
    /// Multiplicative noise (log-sigma) on every step's CPU and GPU time; 0 = deterministic timing.
    pub noise: f64,
    /// `--model-path` / `--model` / vLLM's positional model, as given (default: the HF id).
    pub model_path: String,
    pub served_model_name: Option<String>,
    pub host: String,
    pub port: u16,
    pub api_key: Option<Secret>,
    pub schedule_policy: SchedulePolicy,
    pub continuous_decode_steps: u32,
    /// Chunked-prefill tokens ride along with decode batches (always on for vLLM V1).
    pub mixed_chunk: bool,
    /// Max tokens per prefill chunk; `None` = chunking off (`-1`).
    pub chunked_prefill_size: Option<u32>,
    /// Token budget of one prefill batch (vLLM: `--max-num-batched-tokens`).
    pub max_prefill_tokens: u32,
    /// `None` = derived from the KV pool at startup, as SGLang does.
    pub max_running_requests: Option<u32>,
    /// SGLang `--mem-fraction-static` or vLLM `--gpu-memory-utilization`.
    pub mem_fraction_static: f64,
    pub cuda_graph: bool,
    pub cuda_graph_max_bs: u32,
    /// Prefix caching (SGLang radix cache, vLLM automatic prefix caching).
    pub radix_cache: bool,
    pub overlap_schedule: bool,
    pub schedule_conservativeness: f64,
    pub speculative: Option<Speculative>,
    pub tp_size: u32,
    pub kv_cache_dtype: KvCacheDtype,
    pub attention_backend: AttentionBackend,
    /// Longest prompt + output served (SGLang `--context-length`, vLLM `--max-model-len`).
    pub context_length: u32,
    pub enable_metrics: bool,
    /// SGLang reports `cached_tokens` in responses only with `--enable-cache-report`.
    pub enable_cache_report: bool,
    pub trust_remote_code: bool,
    /// Lines the engine logs at startup about settings it overrode.
    pub adjustments: Vec<String>,
    speculative_draft_model: Option<String>,
    random_seed: Option<u64>,
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("engine", &self.engine)
            .field("gpu", &self.gpu.name)
            .field("gpu_count", &self.gpu_count)
            .field("model", &self.model.name)
            .field("args", &redacted_args(&self.args))
            .field("noise", &self.noise)
            .field("attributes", &self.startup_attributes())
            .field("adjustments", &self.adjustments)
            .finish()
    }
}

/// `args` with the values of secret flags (`--api-key`) replaced, for anything that prints them:
/// the one decision in [`autodebug_core::secret::redact_args`].
pub fn redacted_args(args: &[String]) -> Vec<String> {
    autodebug_core::secret::redact_args(args)
}
