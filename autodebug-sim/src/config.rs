//! Engine flags, parsed the way each engine's argparse does, and the effective settings after
//! the engine's own defaults.

use autodebug_core::{EngineKind, Secret};

use crate::profiles::{GpuProfile, ModelProfile};

/// What goes wrong before a single token is served.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Flags the engine's argument parser does not know (argparse wording).
    #[error("{program}: error: unrecognized arguments: {}", args.join(" "))]
    UnknownFlag {
        program: &'static str,
        args: Vec<String>,
    },
    /// A known flag with a value the parser or the engine's checks reject (argparse wording).
    #[error("{program}: error: argument {flag}: {reason}")]
    BadValue {
        program: &'static str,
        flag: String,
        value: String,
        reason: String,
    },
    #[error(
        "unknown GPU `{0}`: the simulator knows H100, H200, A100 and L4 (write e.g. `H100`, `h100-80gb` or `H100:80GB:2`)"
    )]
    UnknownGpu(String),
    #[error(
        "unknown model `{0}`: the simulator knows Qwen/Qwen1.5-0.5B-Chat, Qwen/Qwen2.5-7B-Instruct, meta-llama/Llama-3.1-8B-Instruct and meta-llama/Llama-3.1-70B-Instruct (short names such as `qwen1.5-0.5b` work too)"
    )]
    UnknownModel(String),
    #[error(
        "the simulator models sglang and vllm, not {0}; point the loop at a real {0} server instead"
    )]
    UnsupportedEngine(EngineKind),
    /// The weights, KV pool, CUDA graphs and activations do not fit: the engine's own OOM text.
    #[error("{message}")]
    StartupOom {
        message: String,
        needed_gb: f64,
        available_gb: f64,
    },
    /// Any other startup failure, in the engine's words.
    #[error("{message}")]
    Startup { message: String },
    /// A request the engine refuses (prompt longer than the context window...).
    #[error("{message}")]
    InvalidRequest { message: String },
}

/// Order in which the waiting queue is admitted (`--schedule-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulePolicy {
    Fcfs,
    /// Longest prefix match first (raises radix-cache reuse).
    Lpm,
    Random,
    DfsWeight,
    /// Longest output first.
    Lof,
    Priority,
}

impl SchedulePolicy {
    const NAMES: [&'static str; 6] = ["lpm", "random", "fcfs", "dfs-weight", "lof", "priority"];

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "fcfs" => SchedulePolicy::Fcfs,
            "lpm" => SchedulePolicy::Lpm,
            "random" => SchedulePolicy::Random,
            "dfs-weight" => SchedulePolicy::DfsWeight,
            "lof" => SchedulePolicy::Lof,
            "priority" => SchedulePolicy::Priority,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SchedulePolicy::Fcfs => "fcfs",
            SchedulePolicy::Lpm => "lpm",
            SchedulePolicy::Random => "random",
            SchedulePolicy::DfsWeight => "dfs-weight",
            SchedulePolicy::Lof => "lof",
            SchedulePolicy::Priority => "priority",
        }
    }
}

/// KV-cache element type (`--kv-cache-dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvCacheDtype {
    Auto,
    Fp8E5m2,
    Fp8E4m3,
}

impl KvCacheDtype {
    pub fn bytes(self) -> f64 {
        match self {
            KvCacheDtype::Auto => 2.0,
            KvCacheDtype::Fp8E5m2 | KvCacheDtype::Fp8E4m3 => 1.0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KvCacheDtype::Auto => "auto",
            KvCacheDtype::Fp8E5m2 => "fp8_e5m2",
            KvCacheDtype::Fp8E4m3 => "fp8_e4m3",
        }
    }
}

/// Attention kernels (`--attention-backend`); they differ in attention speed only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionBackend {
    Fa3,
    Flashinfer,
    Triton,
    TorchNative,
    /// vLLM's FlashAttention backend.
    FlashAttn,
}

impl AttentionBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            AttentionBackend::Fa3 => "fa3",
            AttentionBackend::Flashinfer => "flashinfer",
            AttentionBackend::Triton => "triton",
            AttentionBackend::TorchNative => "torch_native",
            AttentionBackend::FlashAttn => "FLASH_ATTN",
        }
    }

    /// Attention time relative to the best kernel.
    pub(crate) fn slowdown(self) -> f64 {
        match self {
            AttentionBackend::Fa3 | AttentionBackend::FlashAttn => 1.0,
            AttentionBackend::Flashinfer => 1.05,
            AttentionBackend::Triton => 1.3,
            AttentionBackend::TorchNative => 3.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeculativeAlgorithm {
    Ngram,
    Eagle,
    Eagle3,
    Standalone,
}

impl SpeculativeAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            SpeculativeAlgorithm::Ngram => "NGRAM",
            SpeculativeAlgorithm::Eagle => "EAGLE",
            SpeculativeAlgorithm::Eagle3 => "EAGLE3",
            SpeculativeAlgorithm::Standalone => "STANDALONE",
        }
    }
}

/// Speculative decoding settings (SGLang `--speculative-*`, vLLM `--speculative-config`).
#[derive(Debug, Clone, PartialEq)]
pub struct Speculative {
    pub algorithm: SpeculativeAlgorithm,
    /// Draft tokens verified per request per step.
    pub draft_tokens: u32,
    /// Longest chain of drafts that can be accepted in one step.
    pub num_steps: u32,
}

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

#[derive(Clone, Copy)]
enum Arity {
    Switch,
    Value,
}

const SGLANG_FLAGS: &[(&str, Arity)] = &[
    ("--model-path", Arity::Value),
    ("--model", Arity::Value),
    ("--tokenizer-path", Arity::Value),
    ("--host", Arity::Value),
    ("--port", Arity::Value),
    ("--served-model-name", Arity::Value),
    ("--trust-remote-code", Arity::Switch),
    ("--api-key", Arity::Value),
    ("--schedule-policy", Arity::Value),
    ("--num-continuous-decode-steps", Arity::Value),
    ("--enable-mixed-chunk", Arity::Switch),
    ("--chunked-prefill-size", Arity::Value),
    ("--max-prefill-tokens", Arity::Value),
    ("--max-running-requests", Arity::Value),
    ("--mem-fraction-static", Arity::Value),
    ("--cuda-graph-max-bs", Arity::Value),
    ("--disable-cuda-graph", Arity::Switch),
    ("--disable-radix-cache", Arity::Switch),
    ("--disable-overlap-schedule", Arity::Switch),
    ("--schedule-conservativeness", Arity::Value),
    ("--speculative-algorithm", Arity::Value),
    ("--speculative-num-draft-tokens", Arity::Value),
    ("--speculative-num-steps", Arity::Value),
    ("--speculative-eagle-topk", Arity::Value),
    ("--speculative-draft-model-path", Arity::Value),
    ("--tp-size", Arity::Value),
    ("--tp", Arity::Value),
    ("--kv-cache-dtype", Arity::Value),
    ("--attention-backend", Arity::Value),
    ("--context-length", Arity::Value),
    ("--enable-metrics", Arity::Switch),
    ("--enable-cache-report", Arity::Switch),
    ("--log-level", Arity::Value),
    ("--log-requests", Arity::Switch),
    ("--random-seed", Arity::Value),
    ("--dtype", Arity::Value),
    ("--show-time-cost", Arity::Switch),
    ("--watchdog-timeout", Arity::Value),
];

const VLLM_FLAGS: &[(&str, Arity)] = &[
    ("--model", Arity::Value),
    ("--model-path", Arity::Value),
    ("--tokenizer", Arity::Value),
    ("--host", Arity::Value),
    ("--port", Arity::Value),
    ("--served-model-name", Arity::Value),
    ("--trust-remote-code", Arity::Switch),
    ("--api-key", Arity::Value),
    ("--max-num-seqs", Arity::Value),
    ("--max-num-batched-tokens", Arity::Value),
    ("--gpu-memory-utilization", Arity::Value),
    ("--enable-prefix-caching", Arity::Switch),
    ("--no-enable-prefix-caching", Arity::Switch),
    ("--enable-chunked-prefill", Arity::Switch),
    ("--no-enable-chunked-prefill", Arity::Switch),
    ("--enforce-eager", Arity::Switch),
    ("--tensor-parallel-size", Arity::Value),
    ("-tp", Arity::Value),
    ("--kv-cache-dtype", Arity::Value),
    ("--speculative-config", Arity::Value),
    ("--max-model-len", Arity::Value),
    ("--dtype", Arity::Value),
    ("--seed", Arity::Value),
    ("--disable-log-requests", Arity::Switch),
    ("--enable-log-requests", Arity::Switch),
    ("--disable-log-stats", Arity::Switch),
    ("--uvicorn-log-level", Arity::Value),
    ("--block-size", Arity::Value),
    ("--swap-space", Arity::Value),
];

fn program(engine: EngineKind) -> &'static str {
    match engine {
        EngineKind::Vllm => "vllm serve",
        _ => "launch_server.py",
    }
}

fn python_bool(value: bool) -> String {
    if value { "True".into() } else { "False".into() }
}

impl SimConfig {
    /// Parses engine flags the way the engine does; an unknown flag or a bad value is an error
    /// whose message reads like the engine's own (argparse style:
    /// `error: unrecognized arguments: --foo`). `gpu` may carry a count (`H100:2`, `H100:80GB:2`);
    /// without one the deployment gets as many GPUs as the tensor-parallel degree asks for.
    ///
    /// ```
    /// use autodebug_sim::{EngineKind, SimConfig};
    /// let args: Vec<String> = ["--schedule-policy", "lpm", "--enable-mixed-chunk"].iter().map(|s| s.to_string()).collect();
    /// let config = SimConfig::from_args(EngineKind::Sglang, "H100", "qwen1.5-0.5b", &args).unwrap();
    /// assert!(config.mixed_chunk);
    /// let bad = SimConfig::from_args(EngineKind::Sglang, "H100", "qwen1.5-0.5b", &["--foo".to_string()]);
    /// assert!(bad.unwrap_err().to_string().ends_with("error: unrecognized arguments: --foo"));
    /// ```
    pub fn from_args(
        engine: EngineKind,
        gpu: &str,
        model: &str,
        args: &[String],
    ) -> Result<SimConfig, SimError> {
        if engine == EngineKind::LlamaCpp {
            return Err(SimError::UnsupportedEngine(engine));
        }
        let (gpu_profile, explicit_count) = parse_gpu(gpu)?;
        let model_profile =
            ModelProfile::lookup(model).ok_or_else(|| SimError::UnknownModel(model.to_string()))?;
        let mut config = SimConfig::defaults(engine, gpu_profile, model_profile, args);
        let mut explicit = Explicit::default();
        let flags = match engine {
            EngineKind::Vllm => VLLM_FLAGS,
            _ => SGLANG_FLAGS,
        };
        let prog = program(engine);
        let mut unknown = Vec::new();
        let mut index = 0;
        while index < args.len() {
            let arg = &args[index];
            index += 1;
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) if arg.starts_with('-') => (name, Some(value.to_string())),
                _ => (arg.as_str(), None),
            };
            let Some(&(_, arity)) = flags.iter().find(|(flag, _)| *flag == name) else {
                if !arg.starts_with('-') && engine == EngineKind::Vllm && index == 1 {
                    config.model_path = arg.clone();
                    continue;
                }
                unknown.push(arg.clone());
                // argparse also leaves the unknown flag's value unconsumed.
                while index < args.len() && !args[index].starts_with("--") {
                    unknown.push(args[index].clone());
                    index += 1;
                }
                continue;
            };
            let value = match arity {
                Arity::Switch => {
                    if let Some(value) = inline {
                        return Err(bad(
                            prog,
                            name,
                            &value,
                            format!("ignored explicit argument '{value}'"),
                        ));
                    }
                    None
                }
                Arity::Value => match inline {
                    Some(value) => Some(value),
                    None if index < args.len() && !looks_like_flag(&args[index]) => {
                        index += 1;
                        Some(args[index - 1].clone())
                    }
                    None => return Err(bad(prog, name, "", "expected one argument".to_string())),
                },
            };
            config.apply(name, value.as_deref().unwrap_or(""), &mut explicit)?;
        }
        if !unknown.is_empty() {
            return Err(SimError::UnknownFlag {
                program: prog,
                args: unknown,
            });
        }
        config.finish(explicit_count, &explicit)?;
        Ok(config)
    }

    fn defaults(
        engine: EngineKind,
        gpu: &'static GpuProfile,
        model: &'static ModelProfile,
        args: &[String],
    ) -> SimConfig {
        let vllm = engine == EngineKind::Vllm;
        SimConfig {
            engine,
            gpu,
            gpu_count: 1,
            model,
            args: args.to_vec(),
            noise: 0.02,
            model_path: model.hf_id.to_string(),
            served_model_name: None,
            host: if vllm {
                "0.0.0.0".into()
            } else {
                "127.0.0.1".into()
            },
            port: if vllm { 8000 } else { 30000 },
            api_key: None,
            schedule_policy: SchedulePolicy::Fcfs,
            continuous_decode_steps: 1,
            mixed_chunk: vllm,
            chunked_prefill_size: Some(if vllm { 8192 } else { 0 }),
            max_prefill_tokens: if vllm { 8192 } else { 16384 },
            max_running_requests: vllm.then_some(256),
            mem_fraction_static: if vllm { 0.9 } else { 0.0 },
            cuda_graph: true,
            cuda_graph_max_bs: 0,
            radix_cache: true,
            overlap_schedule: !vllm,
            schedule_conservativeness: 1.0,
            speculative: None,
            tp_size: 1,
            kv_cache_dtype: KvCacheDtype::Auto,
            attention_backend: if vllm {
                AttentionBackend::FlashAttn
            } else if gpu.sm >= 90 {
                AttentionBackend::Fa3
            } else {
                AttentionBackend::Flashinfer
            },
            context_length: model.max_context,
            enable_metrics: vllm,
            enable_cache_report: false,
            trust_remote_code: false,
            adjustments: Vec::new(),
            speculative_draft_model: None,
            random_seed: None,
        }
    }

    fn apply(&mut self, flag: &str, value: &str, explicit: &mut Explicit) -> Result<(), SimError> {
        let prog = program(self.engine);
        match flag {
            "--model-path" | "--model" => self.model_path = value.to_string(),
            "--tokenizer-path"
            | "--tokenizer"
            | "--log-level"
            | "--dtype"
            | "--watchdog-timeout"
            | "--uvicorn-log-level"
            | "--block-size"
            | "--swap-space" => {}
            "--host" => self.host = value.to_string(),
            "--port" => self.port = parse_int(prog, flag, value)?,
            "--served-model-name" => self.served_model_name = Some(value.to_string()),
            "--trust-remote-code" => self.trust_remote_code = true,
            "--api-key" => self.api_key = Some(Secret::new(value)),
            "--schedule-policy" => {
                self.schedule_policy = SchedulePolicy::parse(value)
                    .ok_or_else(|| bad_choice(prog, flag, value, &SchedulePolicy::NAMES))?;
            }
            "--num-continuous-decode-steps" => {
                self.continuous_decode_steps = parse_int(prog, flag, value)?;
                if self.continuous_decode_steps == 0 {
                    return Err(bad(prog, flag, value, "must be at least 1".into()));
                }
            }
            "--enable-mixed-chunk" => self.mixed_chunk = true,
            "--chunked-prefill-size" => {
                let size: i64 = parse_int(prog, flag, value)?;
                self.chunked_prefill_size = if size <= 0 { None } else { Some(size as u32) };
                explicit.chunked_prefill_size = true;
            }
            "--max-prefill-tokens" => self.max_prefill_tokens = parse_positive(prog, flag, value)?,
            "--max-num-batched-tokens" => {
                let budget = parse_positive(prog, flag, value)?;
                self.max_prefill_tokens = budget;
                self.chunked_prefill_size = Some(budget);
            }
            "--max-running-requests" | "--max-num-seqs" => {
                self.max_running_requests = Some(parse_positive(prog, flag, value)?)
            }
            "--mem-fraction-static" | "--gpu-memory-utilization" => {
                let fraction: f64 = parse_float(prog, flag, value)?;
                if !(fraction > 0.0 && fraction <= 1.0) {
                    return Err(bad(
                        prog,
                        flag,
                        value,
                        format!("must be in (0, 1], got {fraction}"),
                    ));
                }
                self.mem_fraction_static = fraction;
                explicit.mem_fraction = true;
            }
            "--cuda-graph-max-bs" => self.cuda_graph_max_bs = parse_positive(prog, flag, value)?,
            "--disable-cuda-graph" | "--enforce-eager" => self.cuda_graph = false,
            "--disable-radix-cache" | "--no-enable-prefix-caching" => self.radix_cache = false,
            "--enable-prefix-caching" => self.radix_cache = true,
            "--enable-chunked-prefill" => {}
            "--no-enable-chunked-prefill" => {
                self.chunked_prefill_size = None;
                self.mixed_chunk = false;
            }
            "--disable-overlap-schedule" => self.overlap_schedule = false,
            "--schedule-conservativeness" => {
                self.schedule_conservativeness = parse_float(prog, flag, value)?;
                if self.schedule_conservativeness <= 0.0 {
                    return Err(bad(prog, flag, value, "must be positive".into()));
                }
            }
            "--speculative-algorithm" => {
                let algorithm = match value {
                    "NGRAM" => SpeculativeAlgorithm::Ngram,
                    "EAGLE" => SpeculativeAlgorithm::Eagle,
                    "EAGLE3" => SpeculativeAlgorithm::Eagle3,
                    "STANDALONE" => SpeculativeAlgorithm::Standalone,
                    _ => {
                        return Err(bad_choice(
                            prog,
                            flag,
                            value,
                            &["EAGLE", "EAGLE3", "NEXTN", "STANDALONE", "NGRAM"],
                        ));
                    }
                };
                self.speculative = Some(Speculative {
                    algorithm,
                    draft_tokens: 0,
                    num_steps: 0,
                });
            }
            "--speculative-num-draft-tokens" => {
                explicit.draft_tokens = Some(parse_positive(prog, flag, value)?)
            }
            "--speculative-num-steps" => {
                explicit.num_steps = Some(parse_positive(prog, flag, value)?)
            }
            "--speculative-eagle-topk" => {
                let _: u32 = parse_positive(prog, flag, value)?;
            }
            "--speculative-draft-model-path" => {
                self.speculative_draft_model = Some(value.to_string())
            }
            "--speculative-config" => {
                self.speculative = Some(parse_vllm_speculative(prog, flag, value)?)
            }
            "--tp-size" | "--tp" | "--tensor-parallel-size" | "-tp" => {
                self.tp_size = parse_positive(prog, flag, value)?
            }
            "--kv-cache-dtype" => {
                self.kv_cache_dtype = match (self.engine, value) {
                    (_, "auto") => KvCacheDtype::Auto,
                    (_, "fp8_e5m2") => KvCacheDtype::Fp8E5m2,
                    (_, "fp8_e4m3") => KvCacheDtype::Fp8E4m3,
                    (EngineKind::Vllm, "fp8") => KvCacheDtype::Fp8E4m3,
                    (EngineKind::Vllm, _) => {
                        return Err(bad_choice(
                            prog,
                            flag,
                            value,
                            &["auto", "fp8", "fp8_e4m3", "fp8_e5m2"],
                        ));
                    }
                    _ => {
                        return Err(bad_choice(
                            prog,
                            flag,
                            value,
                            &["auto", "fp8_e5m2", "fp8_e4m3"],
                        ));
                    }
                };
            }
            "--attention-backend" => {
                self.attention_backend = match value {
                    "fa3" => AttentionBackend::Fa3,
                    "flashinfer" => AttentionBackend::Flashinfer,
                    "triton" => AttentionBackend::Triton,
                    "torch_native" => AttentionBackend::TorchNative,
                    _ => {
                        return Err(bad_choice(
                            prog,
                            flag,
                            value,
                            &["triton", "torch_native", "flashinfer", "fa3"],
                        ));
                    }
                };
            }
            "--context-length" | "--max-model-len" => {
                self.context_length = parse_positive(prog, flag, value)?;
                explicit.context_length = true;
            }
            "--enable-metrics" => self.enable_metrics = true,
            "--enable-cache-report" => self.enable_cache_report = true,
            "--random-seed" | "--seed" => self.random_seed = Some(parse_int(prog, flag, value)?),
            // Logging switches change nothing the model simulates.
            "--log-requests"
            | "--show-time-cost"
            | "--disable-log-requests"
            | "--enable-log-requests"
            | "--disable-log-stats" => {}
            _ => {
                return Err(SimError::UnknownFlag {
                    program: prog,
                    args: vec![flag.to_string()],
                });
            }
        }
        Ok(())
    }

    /// Fills in the defaults the engine derives from the hardware, and its cross-flag checks.
    fn finish(&mut self, explicit_count: Option<u32>, explicit: &Explicit) -> Result<(), SimError> {
        let prog = program(self.engine);
        self.gpu_count = match explicit_count {
            Some(count) if count < self.tp_size => {
                return Err(SimError::Startup {
                    message: format!(
                        "RuntimeError: tensor parallel size {} needs {} GPUs, but the deployment has {count} {}; ask for `{}:{}` or lower the TP size",
                        self.tp_size, self.tp_size, self.gpu.name, self.gpu.name, self.tp_size
                    ),
                });
            }
            Some(count) => count,
            None => self.tp_size,
        };
        // The model the engine loads is the one its flags name, when the simulator knows it.
        if let Some(named) =
            ModelProfile::lookup(&self.model_path).filter(|m| m.name != self.model.name)
        {
            self.model = named;
            if !explicit.context_length {
                self.context_length = named.max_context;
            }
        }
        let memory = self.gpu.memory_gb;
        if self.engine == EngineKind::Sglang {
            if !explicit.mem_fraction {
                self.mem_fraction_static = match self.tp_size {
                    16.. => 0.79,
                    8.. => 0.81,
                    4.. => 0.85,
                    2.. => 0.87,
                    _ => 0.88,
                };
            }
            if !explicit.chunked_prefill_size {
                self.chunked_prefill_size = Some(if memory < 25.0 {
                    2048
                } else if memory < 60.0 {
                    4096
                } else {
                    8192
                });
            }
            if self.cuda_graph_max_bs == 0 {
                self.cuda_graph_max_bs = if memory < 25.0 {
                    8
                } else if memory < 60.0 {
                    160
                } else {
                    256
                };
            }
        } else if self.cuda_graph_max_bs == 0 {
            self.cuda_graph_max_bs = 512.min(self.max_running_requests.unwrap_or(256) * 2);
        }
        if self.context_length > self.model.max_context && explicit.context_length {
            return Err(bad(
                prog,
                if self.engine == EngineKind::Vllm {
                    "--max-model-len"
                } else {
                    "--context-length"
                },
                &self.context_length.to_string(),
                format!(
                    "is longer than the model's max_position_embeddings ({}) in {}/config.json",
                    self.model.max_context, self.model.hf_id
                ),
            ));
        }
        if let Some(spec) = &mut self.speculative {
            if self.engine == EngineKind::Sglang {
                spec.draft_tokens = explicit.draft_tokens.unwrap_or(4);
                spec.num_steps = explicit
                    .num_steps
                    .unwrap_or(spec.draft_tokens)
                    .min(spec.draft_tokens);
                if spec.algorithm != SpeculativeAlgorithm::Ngram
                    && self.speculative_draft_model.is_none()
                {
                    return Err(bad(
                        prog,
                        "--speculative-algorithm",
                        spec.algorithm.as_str(),
                        format!(
                            "{} needs a draft model: add --speculative-draft-model-path",
                            spec.algorithm.as_str()
                        ),
                    ));
                }
                if self.overlap_schedule {
                    self.overlap_schedule = false;
                    self.adjustments.push(format!(
                        "Overlap scheduler is disabled because of using {} speculative decoding.",
                        spec.algorithm.as_str().to_ascii_lowercase()
                    ));
                }
                if self.mixed_chunk {
                    self.mixed_chunk = false;
                    self.adjustments.push(
                        "Mixed chunked prefill is disabled because of using speculative decoding."
                            .into(),
                    );
                }
            }
        } else if explicit.draft_tokens.is_some() || explicit.num_steps.is_some() {
            self.adjustments.push(
                "--speculative-num-draft-tokens/--speculative-num-steps are ignored without --speculative-algorithm.".into(),
            );
        }
        if self.chunked_prefill_size.is_none()
            && self.engine == EngineKind::Sglang
            && self.mixed_chunk
        {
            self.mixed_chunk = false;
            self.adjustments.push("--enable-mixed-chunk needs chunked prefill; it is off because --chunked-prefill-size is -1.".into());
        }
        if self.attention_backend == AttentionBackend::Fa3 && !(80..=90).contains(&self.gpu.sm) {
            return Err(SimError::Startup {
                message: format!(
                    "AssertionError: FlashAttention v3 Backend requires SM>=80 and SM<=90. Please use `--attention-backend flashinfer` (this {} is SM{}).",
                    self.gpu.name, self.gpu.sm
                ),
            });
        }
        Ok(())
    }

    /// The model name the server answers to.
    pub fn served_model_name(&self) -> &str {
        self.served_model_name
            .as_deref()
            .unwrap_or(&self.model_path)
    }

    /// Effective value of every engine option after defaults (what SGLang logs as `server_args`,
    /// and Graphsignal reports as `sglang.startup.*`), Python-style: `True`/`False`/`None`.
    /// The API key is never shown.
    pub fn startup_attributes(&self) -> Vec<(String, String)> {
        let none = || "None".to_string();
        let opt = |v: Option<String>| v.unwrap_or_else(none);
        let spec = self.speculative.as_ref();
        let key = if self.api_key.is_some() {
            "***".to_string()
        } else {
            none()
        };
        let pairs: Vec<(&str, String)> = match self.engine {
            EngineKind::Vllm => vec![
                ("model", self.model_path.clone()),
                ("served_model_name", self.served_model_name().to_string()),
                ("host", self.host.clone()),
                ("port", self.port.to_string()),
                ("api_key", key),
                ("trust_remote_code", python_bool(self.trust_remote_code)),
                ("tensor_parallel_size", self.tp_size.to_string()),
                (
                    "gpu_memory_utilization",
                    self.mem_fraction_static.to_string(),
                ),
                (
                    "max_num_seqs",
                    opt(self.max_running_requests.map(|v| v.to_string())),
                ),
                (
                    "max_num_batched_tokens",
                    self.max_prefill_tokens.to_string(),
                ),
                ("enable_prefix_caching", python_bool(self.radix_cache)),
                (
                    "enable_chunked_prefill",
                    python_bool(self.chunked_prefill_size.is_some()),
                ),
                ("enforce_eager", python_bool(!self.cuda_graph)),
                ("max_model_len", self.context_length.to_string()),
                (
                    "kv_cache_dtype",
                    if self.kv_cache_dtype == KvCacheDtype::Auto {
                        "auto".into()
                    } else {
                        self.kv_cache_dtype.as_str().into()
                    },
                ),
                (
                    "attention_backend",
                    self.attention_backend.as_str().to_string(),
                ),
                (
                    "speculative_config",
                    opt(spec.map(|s| {
                        format!(
                            "{{'method': 'ngram', 'num_speculative_tokens': {}}}",
                            s.draft_tokens
                        )
                    })),
                ),
                ("seed", opt(self.random_seed.map(|v| v.to_string()))),
            ],
            _ => vec![
                ("model_path", self.model_path.clone()),
                ("served_model_name", self.served_model_name().to_string()),
                ("host", self.host.clone()),
                ("port", self.port.to_string()),
                ("api_key", key),
                ("trust_remote_code", python_bool(self.trust_remote_code)),
                ("tp_size", self.tp_size.to_string()),
                ("mem_fraction_static", self.mem_fraction_static.to_string()),
                (
                    "max_running_requests",
                    opt(self.max_running_requests.map(|v| v.to_string())),
                ),
                ("max_prefill_tokens", self.max_prefill_tokens.to_string()),
                (
                    "chunked_prefill_size",
                    self.chunked_prefill_size
                        .map_or(-1, |v| v as i64)
                        .to_string(),
                ),
                ("schedule_policy", self.schedule_policy.as_str().to_string()),
                (
                    "schedule_conservativeness",
                    format!("{:?}", self.schedule_conservativeness),
                ),
                ("cuda_graph_max_bs", self.cuda_graph_max_bs.to_string()),
                ("disable_cuda_graph", python_bool(!self.cuda_graph)),
                ("disable_radix_cache", python_bool(!self.radix_cache)),
                (
                    "disable_overlap_schedule",
                    python_bool(!self.overlap_schedule),
                ),
                ("enable_mixed_chunk", python_bool(self.mixed_chunk)),
                (
                    "num_continuous_decode_steps",
                    self.continuous_decode_steps.to_string(),
                ),
                (
                    "speculative_algorithm",
                    opt(spec.map(|s| s.algorithm.as_str().to_string())),
                ),
                (
                    "speculative_num_draft_tokens",
                    opt(spec.map(|s| s.draft_tokens.to_string())),
                ),
                (
                    "speculative_num_steps",
                    opt(spec.map(|s| s.num_steps.to_string())),
                ),
                (
                    "speculative_draft_model_path",
                    opt(self.speculative_draft_model.clone()),
                ),
                ("kv_cache_dtype", self.kv_cache_dtype.as_str().to_string()),
                (
                    "attention_backend",
                    self.attention_backend.as_str().to_string(),
                ),
                ("context_length", self.context_length.to_string()),
                ("enable_metrics", python_bool(self.enable_metrics)),
                ("enable_cache_report", python_bool(self.enable_cache_report)),
                ("random_seed", opt(self.random_seed.map(|v| v.to_string()))),
                ("device", "cuda".to_string()),
                ("dtype", "auto".to_string()),
            ],
        };
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
}

#[derive(Default)]
struct Explicit {
    mem_fraction: bool,
    chunked_prefill_size: bool,
    context_length: bool,
    draft_tokens: Option<u32>,
    num_steps: Option<u32>,
}

fn parse_gpu(gpu: &str) -> Result<(&'static GpuProfile, Option<u32>), SimError> {
    let unknown = || SimError::UnknownGpu(gpu.to_string());
    let (count, name) = match gpu.split_once(['x', 'X']) {
        Some((n, rest)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => {
            (n.parse::<u32>().ok(), rest)
        }
        _ => (None, gpu),
    };
    let trailing = name
        .rsplit_once(':')
        .and_then(|(_, last)| last.parse::<u32>().ok());
    let profile = GpuProfile::lookup(name).ok_or_else(unknown)?;
    let count = count.or(trailing);
    if count == Some(0) {
        return Err(unknown());
    }
    Ok((profile, count))
}

fn looks_like_flag(arg: &str) -> bool {
    arg.starts_with("--") || (arg.starts_with('-') && arg.parse::<f64>().is_err())
}

fn bad(program: &'static str, flag: &str, value: &str, reason: String) -> SimError {
    SimError::BadValue {
        program,
        flag: flag.to_string(),
        value: value.to_string(),
        reason,
    }
}

fn bad_choice(program: &'static str, flag: &str, value: &str, choices: &[&str]) -> SimError {
    let listed: Vec<String> = choices.iter().map(|c| format!("'{c}'")).collect();
    bad(
        program,
        flag,
        value,
        format!(
            "invalid choice: '{value}' (choose from {})",
            listed.join(", ")
        ),
    )
}

fn parse_int<T: std::str::FromStr>(
    program: &'static str,
    flag: &str,
    value: &str,
) -> Result<T, SimError> {
    value.parse().map_err(|_| {
        bad(
            program,
            flag,
            value,
            format!("invalid int value: '{value}'"),
        )
    })
}

fn parse_positive(program: &'static str, flag: &str, value: &str) -> Result<u32, SimError> {
    let number: u32 = parse_int(program, flag, value)?;
    if number == 0 {
        return Err(bad(program, flag, value, "must be at least 1".into()));
    }
    Ok(number)
}

fn parse_float(program: &'static str, flag: &str, value: &str) -> Result<f64, SimError> {
    value
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| {
            bad(
                program,
                flag,
                value,
                format!("invalid float value: '{value}'"),
            )
        })
}

fn parse_vllm_speculative(
    program: &'static str,
    flag: &str,
    value: &str,
) -> Result<Speculative, SimError> {
    let json: serde_json::Value = serde_json::from_str(value).map_err(|e| {
        bad(
            program,
            flag,
            value,
            format!("invalid loads value: '{value}' ({e})"),
        )
    })?;
    let method = json
        .get("method")
        .and_then(|m| m.as_str())
        .unwrap_or_default();
    let algorithm = match method {
        "ngram" => SpeculativeAlgorithm::Ngram,
        "eagle" => SpeculativeAlgorithm::Eagle,
        "eagle3" => SpeculativeAlgorithm::Eagle3,
        "draft_model" => SpeculativeAlgorithm::Standalone,
        other => {
            return Err(bad(
                program,
                flag,
                value,
                format!(
                    "unsupported speculative method '{other}' (use \"ngram\", \"eagle\", \"eagle3\")"
                ),
            ));
        }
    };
    let tokens = json
        .get("num_speculative_tokens")
        .and_then(|n| n.as_u64())
        .filter(|n| (1..=64).contains(n))
        .ok_or_else(|| {
            bad(
                program,
                flag,
                value,
                "needs \"num_speculative_tokens\": a positive integer".into(),
            )
        })? as u32;
    Ok(Speculative {
        algorithm,
        draft_tokens: tokens,
        num_steps: tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn equals_form_and_space_form_agree() {
        let a = SimConfig::from_args(
            EngineKind::Sglang,
            "H100",
            "qwen1.5-0.5b",
            &args("--tp-size=2 --port 31000"),
        )
        .unwrap();
        let b = SimConfig::from_args(
            EngineKind::Sglang,
            "H100",
            "qwen1.5-0.5b",
            &args("--tp-size 2 --port=31000"),
        )
        .unwrap();
        assert_eq!((a.tp_size, a.port, a.gpu_count), (2, 31000, 2));
        assert_eq!((b.tp_size, b.port), (2, 31000));
    }

    #[test]
    fn the_model_flag_names_the_model_loaded() {
        let config = SimConfig::from_args(
            EngineKind::Sglang,
            "H100",
            "qwen1.5-0.5b",
            &args("--model-path meta-llama/Llama-3.1-8B-Instruct"),
        )
        .unwrap();
        assert_eq!(
            (config.model.name, config.context_length),
            ("llama-3.1-8b", 131072)
        );
        let local = SimConfig::from_args(
            EngineKind::Sglang,
            "H100",
            "qwen1.5-0.5b",
            &args("--model-path /models/q"),
        )
        .unwrap();
        assert_eq!(
            (local.model.name, local.served_model_name()),
            ("qwen1.5-0.5b", "/models/q")
        );
    }

    #[test]
    fn gpu_count_must_cover_tp() {
        let err = SimConfig::from_args(
            EngineKind::Sglang,
            "H100:1",
            "qwen1.5-0.5b",
            &args("--tp-size 2"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("needs 2 GPUs"), "{err}");
        let ok = SimConfig::from_args(
            EngineKind::Sglang,
            "2xH100",
            "qwen1.5-0.5b",
            &args("--tp-size 2"),
        )
        .unwrap();
        assert_eq!(ok.gpu_count, 2);
    }

    #[test]
    fn vllm_positional_model_and_json_speculative_config() {
        let config = SimConfig::from_args(
            EngineKind::Vllm,
            "H100",
            "qwen1.5-0.5b",
            &[
                "Qwen/Qwen1.5-0.5B-Chat".to_string(),
                "--speculative-config".to_string(),
                r#"{"method":"ngram","num_speculative_tokens":5,"prompt_lookup_max":4}"#
                    .to_string(),
                "--no-enable-prefix-caching".to_string(),
            ],
        )
        .unwrap();
        assert_eq!(config.speculative.as_ref().map(|s| s.draft_tokens), Some(5));
        assert!(!config.radix_cache);
        assert_eq!(config.model_path, "Qwen/Qwen1.5-0.5B-Chat");
        let err = SimConfig::from_args(
            EngineKind::Vllm,
            "H100",
            "qwen1.5-0.5b",
            &args("--speculative-config {oops"),
        );
        assert!(err.is_err());
    }

    #[test]
    fn ngram_turns_off_overlap_and_says_so() {
        let config = SimConfig::from_args(
            EngineKind::Sglang,
            "H100",
            "qwen1.5-0.5b",
            &args("--speculative-algorithm NGRAM --speculative-num-draft-tokens 3 --speculative-num-steps 3"),
        )
        .unwrap();
        assert!(!config.overlap_schedule);
        assert!(
            config
                .adjustments
                .iter()
                .any(|line| line.contains("Overlap scheduler is disabled"))
        );
        let eagle = SimConfig::from_args(
            EngineKind::Sglang,
            "H100",
            "qwen1.5-0.5b",
            &args("--speculative-algorithm EAGLE"),
        );
        assert!(
            eagle
                .unwrap_err()
                .to_string()
                .contains("--speculative-draft-model-path")
        );
    }
}
