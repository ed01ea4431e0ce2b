//! Each engine's defaults: the settings before any flag, and what the engine derives from the
//! hardware after parsing, with its cross-flag checks.

use autodebug_core::EngineKind;

use super::errors::{bad, program};
use super::{AttentionBackend, KvCacheDtype, SchedulePolicy, SimConfig, SimError, SpeculativeAlgorithm};
use crate::profiles::{GpuProfile, ModelProfile};

impl SimConfig {
    pub(super) fn defaults(
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
            host: if vllm { "0.0.0.0".into() } else { "127.0.0.1".into() },
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

    /// Fills in the defaults the engine derives from the hardware, and its cross-flag checks.
    pub(super) fn finish(&mut self, explicit_count: Option<u32>, explicit: &Explicit) -> Result<(), SimError> {
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
        if let Some(named) = ModelProfile::lookup(&self.model_path).filter(|m| m.name != self.model.name) {
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
                if self.engine == EngineKind::Vllm { "--max-model-len" } else { "--context-length" },
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
                spec.num_steps = explicit.num_steps.unwrap_or(spec.draft_tokens).min(spec.draft_tokens);
                if spec.algorithm != SpeculativeAlgorithm::Ngram && self.speculative_draft_model.is_none() {
                    return Err(bad(
                        prog,
                        "--speculative-algorithm",
                        spec.algorithm.as_str(),
                        format!("{} needs a draft model: add --speculative-draft-model-path", spec.algorithm.as_str()),
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
                    self.adjustments
                        .push("Mixed chunked prefill is disabled because of using speculative decoding.".into());
                }
            }
        } else if explicit.draft_tokens.is_some() || explicit.num_steps.is_some() {
            self.adjustments.push(
                "--speculative-num-draft-tokens/--speculative-num-steps are ignored without --speculative-algorithm."
                    .into(),
            );
        }
        if self.chunked_prefill_size.is_none() && self.engine == EngineKind::Sglang && self.mixed_chunk {
            self.mixed_chunk = false;
            self.adjustments.push(
                "--enable-mixed-chunk needs chunked prefill; it is off because --chunked-prefill-size is -1.".into(),
            );
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
}

#[derive(Default)]
pub(super) struct Explicit {
    pub(super) mem_fraction: bool,
    pub(super) chunked_prefill_size: bool,
    pub(super) context_length: bool,
    pub(super) draft_tokens: Option<u32>,
    pub(super) num_steps: Option<u32>,
}
