//! Startup memory plan: weights, KV pool, CUDA graphs, and the engine's OOM when they do not fit.

use autodebug_core::EngineKind;

use crate::config::{SimConfig, SimError};

const GIB: f64 = (1u64 << 30) as f64;
/// CUDA context and the framework's own allocations before the weights load.
const CONTEXT_GIB: f64 = 0.6;
/// cuBLAS workspaces, allocator fragmentation, sampling buffers: what must stay free at runtime.
const RUNTIME_RESERVE_GIB: f64 = 1.25;

/// Where the GPU memory goes, per GPU, in GiB.
#[derive(Debug, Clone)]
pub(crate) struct MemoryPlan {
    pub(crate) before_load_gib: f64,
    pub(crate) weights_gib: f64,
    pub(crate) kv_pool_gib: f64,
    pub(crate) after_pool_gib: f64,
    pub(crate) graph_gib: f64,
    pub(crate) after_graph_gib: f64,
    pub(crate) max_total_tokens: u64,
    pub(crate) max_running_requests: usize,
    pub(crate) graph_capture_s: f64,
}

impl MemoryPlan {
    pub(crate) fn new(config: &SimConfig) -> Result<MemoryPlan, SimError> {
        let model = config.model;
        let tp = config.tp_size.max(1);
        let total = config.gpu.memory_gb;
        let before_load = total - CONTEXT_GIB;
        let weights = model.weight_bytes_per_gpu(tp) / GIB;
        let kv_bytes_per_token = model.kv_bytes_per_token_per_gpu(tp, config.kv_cache_dtype.bytes());
        if weights > before_load {
            return Err(oom(
                config,
                weights,
                before_load,
                format!(
                    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate {:.2} GiB. GPU 0 has a total capacity of {total:.2} GiB of which {:.2} GiB is free. Loading {} needs {weights:.2} GiB of weights per GPU at tensor parallel size {tp}: use more GPUs (tensor parallelism) or a bigger GPU.",
                    weights - before_load.min(weights) + 0.5,
                    before_load,
                    model.hf_id
                ),
            ));
        }
        let after_load = before_load - weights;
        let chunk = config.chunked_prefill_size.unwrap_or(config.max_prefill_tokens) as f64;
        let activation = chunk * model.hidden as f64 * 26.0 / tp as f64 / GIB
            + 256.0f64.max(config.cuda_graph_max_bs as f64) * model.vocab as f64 * 4.0 / GIB;
        let graph = if config.cuda_graph {
            0.05 + config.cuda_graph_max_bs as f64 * model.hidden as f64 * 2.0 * model.layers as f64 * 8.0
                / tp as f64
                / GIB
        } else {
            0.0
        };
        let nccl = if tp > 1 { 0.5 } else { 0.0 };
        let fraction = config.mem_fraction_static;
        let (kv_pool, after_pool) = match config.engine {
            EngineKind::Vllm => {
                // vLLM budgets weights + profiled activations inside `total × utilization`.
                let kv = total * fraction - CONTEXT_GIB - weights - activation - nccl;
                (kv, total * (1.0 - fraction))
            }
            _ => {
                let kv = after_load - total * (1.0 - fraction);
                (kv, after_load - kv.max(0.0))
            }
        };
        if kv_pool <= 0.0 {
            let message = match config.engine {
                EngineKind::Vllm => "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine.".to_string(),
                _ => "RuntimeError: Not enough memory. Please try to increase --mem-fraction-static.".to_string(),
            };
            return Err(oom(config, weights + activation, total * fraction, message));
        }
        let needed_after_pool = match config.engine {
            EngineKind::Vllm => graph + RUNTIME_RESERVE_GIB * 0.5,
            _ => graph + activation + nccl + RUNTIME_RESERVE_GIB,
        };
        if after_pool < needed_after_pool {
            let message = match config.engine {
                EngineKind::Vllm => format!(
                    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate {:.2} GiB. GPU 0 has a total capacity of {total:.2} GiB of which {:.2} MiB is free. Lower --gpu-memory-utilization (now {fraction}) or pass --enforce-eager.",
                    needed_after_pool,
                    after_pool.max(0.0) * 1024.0
                ),
                _ => format!(
                    "Capture cuda graph failed: CUDA out of memory. Tried to allocate {:.2} GiB. GPU 0 has a total capacity of {total:.2} GiB of which {:.2} MiB is free.\nPossible solutions:\n1. set --mem-fraction-static to a smaller value (e.g., 0.8 or 0.7); it is {fraction} now\n2. set --cuda-graph-max-bs to a smaller value (e.g., 16)\n3. disable torch compile by not using --enable-torch-compile\n4. disable CUDA graph by --disable-cuda-graph. (Not recommended. Huge performance loss)",
                    needed_after_pool,
                    after_pool.max(0.0) * 1024.0
                ),
            };
            return Err(oom(config, needed_after_pool, after_pool, message));
        }
        let max_total_tokens = (kv_pool * GIB / kv_bytes_per_token).floor() as u64;
        if config.engine == EngineKind::Vllm && max_total_tokens < config.context_length as u64 {
            let needed = config.context_length as f64 * kv_bytes_per_token / GIB;
            return Err(oom(
                config,
                needed,
                kv_pool,
                format!(
                    "ValueError: To serve at least one request with the models's max seq len ({}), ({needed:.2} GiB KV cache is needed, which is larger than the available KV cache memory ({kv_pool:.2} GiB). Based on the available memory, the estimated maximum model length is {max_total_tokens}. Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.",
                    config.context_length
                ),
            ));
        }
        let max_running_requests = match config.max_running_requests {
            Some(cap) => cap as usize,
            None => {
                let derived = max_total_tokens as f64 / config.context_length as f64 * 512.0;
                derived.clamp(2048.0, 4096.0) as usize
            }
        };
        Ok(MemoryPlan {
            before_load_gib: before_load,
            weights_gib: weights,
            kv_pool_gib: kv_pool,
            after_pool_gib: after_pool,
            graph_gib: graph,
            after_graph_gib: after_pool - graph,
            max_total_tokens,
            max_running_requests,
            graph_capture_s: if config.cuda_graph { 0.5 + config.cuda_graph_max_bs as f64 * 0.012 } else { 0.0 },
        })
    }

    /// The engine's startup lines, in its own wording.
    pub(crate) fn startup_log(&self, config: &SimConfig) -> Vec<String> {
        let model = config.model;
        let mut lines = Vec::new();
        match config.engine {
            EngineKind::Vllm => {
                lines.push(format!("non-default args: {}", non_default_args(config)));
                lines.extend(config.adjustments.iter().cloned());
                lines.push(format!("Starting to load model {}...", config.model_path));
                lines.push(format!(
                    "Model loading took {:.4} GiB and {:.6} seconds",
                    self.weights_gib,
                    1.0 + self.weights_gib * 0.35
                ));
                lines.push(format!("Available KV cache memory: {:.2} GiB", self.kv_pool_gib));
                lines.push(format!("GPU KV cache size: {} tokens", group_thousands(self.max_total_tokens)));
                lines.push(format!(
                    "Maximum concurrency for {} tokens per request: {:.2}x",
                    group_thousands(config.context_length as u64),
                    self.max_total_tokens as f64 / config.context_length as f64
                ));
                if config.cuda_graph {
                    lines.push(format!(
                        "Graph capturing finished in {:.0} secs, took {:.2} GiB",
                        self.graph_capture_s.ceil(),
                        self.graph_gib
                    ));
                }
                lines.push(format!(
                    "init engine (profile, create kv cache, warmup model) took {:.2} seconds",
                    2.0 + self.graph_capture_s
                ));
            }
            _ => {
                let attributes: Vec<String> = config
                    .startup_attributes()
                    .into_iter()
                    .map(|(key, value)| {
                        let quoted =
                            value.parse::<f64>().is_err() && !matches!(value.as_str(), "True" | "False" | "None");
                        if quoted { format!("{key}='{value}'") } else { format!("{key}={value}") }
                    })
                    .collect();
                lines.push(format!("server_args=ServerArgs({})", attributes.join(", ")));
                lines.extend(config.adjustments.iter().cloned());
                lines.push(format!("Load weight begin. avail mem={:.2} GB", self.before_load_gib));
                lines.push(format!(
                    "Load weight end. type={}, dtype=torch.bfloat16, avail mem={:.2} GB, mem usage={:.2} GB.",
                    model.architecture,
                    self.before_load_gib - self.weights_gib,
                    self.weights_gib
                ));
                let half = self.kv_pool_gib / 2.0;
                lines.push(format!(
                    "KV Cache is allocated. #tokens: {}, K size: {half:.2} GB, V size: {half:.2} GB",
                    self.max_total_tokens
                ));
                lines.push(format!("Memory pool end. avail mem={:.2} GB", self.after_pool_gib));
                if config.cuda_graph {
                    lines.push(format!(
                        "Capture cuda graph begin. This can take up to several minutes. avail mem={:.2} GB",
                        self.after_pool_gib
                    ));
                    lines.push(format!(
                        "Capture cuda graph end. Time elapsed: {:.2} s. mem usage={:.2} GB. avail mem={:.2} GB.",
                        self.graph_capture_s, self.graph_gib, self.after_graph_gib
                    ));
                }
                lines.push(format!(
                    "max_total_num_tokens={}, chunked_prefill_size={}, max_prefill_tokens={}, max_running_requests={}, context_len={}, available_gpu_mem={:.2} GB",
                    self.max_total_tokens,
                    config.chunked_prefill_size.map_or(-1, |v| v as i64),
                    config.max_prefill_tokens,
                    self.max_running_requests,
                    config.context_length,
                    self.after_graph_gib
                ));
            }
        }
        lines
    }
}

fn oom(config: &SimConfig, needed: f64, available: f64, message: String) -> SimError {
    let _ = config;
    SimError::StartupOom { message, needed_gb: needed, available_gb: available.max(0.0) }
}

fn non_default_args(config: &SimConfig) -> String {
    let pairs: Vec<String> = config
        .args
        .chunks(1)
        .filter_map(|chunk| chunk.first())
        .filter(|arg| arg.starts_with("--") && !arg.starts_with("--api-key"))
        .map(|arg| {
            format!("'{}'", arg.trim_start_matches("--").split('=').next().unwrap_or_default().replace('-', "_"))
        })
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

fn group_thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
