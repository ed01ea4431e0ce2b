//! What a configured engine says about itself: the model name it serves and its effective
//! settings, as its startup log and Graphsignal report them.

use autodebug_core::EngineKind;

use super::{KvCacheDtype, SimConfig};

fn python_bool(value: bool) -> String {
    if value { "True".into() } else { "False".into() }
}

impl SimConfig {
    /// The model name the server answers to.
    pub fn served_model_name(&self) -> &str {
        self.served_model_name.as_deref().unwrap_or(&self.model_path)
    }

    /// Effective value of every engine option after defaults (what SGLang logs as `server_args`,
    /// and Graphsignal reports as `sglang.startup.*`), Python-style: `True`/`False`/`None`.
    /// The API key is never shown.
    pub fn startup_attributes(&self) -> Vec<(String, String)> {
        let none = || "None".to_string();
        let opt = |v: Option<String>| v.unwrap_or_else(none);
        let spec = self.speculative.as_ref();
        let key = if self.api_key.is_some() { "***".to_string() } else { none() };
        let pairs: Vec<(&str, String)> = match self.engine {
            EngineKind::Vllm => vec![
                ("model", self.model_path.clone()),
                ("served_model_name", self.served_model_name().to_string()),
                ("host", self.host.clone()),
                ("port", self.port.to_string()),
                ("api_key", key),
                ("trust_remote_code", python_bool(self.trust_remote_code)),
                ("tensor_parallel_size", self.tp_size.to_string()),
                ("gpu_memory_utilization", self.mem_fraction_static.to_string()),
                ("max_num_seqs", opt(self.max_running_requests.map(|v| v.to_string()))),
                ("max_num_batched_tokens", self.max_prefill_tokens.to_string()),
                ("enable_prefix_caching", python_bool(self.radix_cache)),
                ("enable_chunked_prefill", python_bool(self.chunked_prefill_size.is_some())),
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
                ("attention_backend", self.attention_backend.as_str().to_string()),
                (
                    "speculative_config",
                    opt(spec.map(|s| format!("{{'method': 'ngram', 'num_speculative_tokens': {}}}", s.draft_tokens))),
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
                ("max_running_requests", opt(self.max_running_requests.map(|v| v.to_string()))),
                ("max_prefill_tokens", self.max_prefill_tokens.to_string()),
                ("chunked_prefill_size", self.chunked_prefill_size.map_or(-1, |v| v as i64).to_string()),
                ("schedule_policy", self.schedule_policy.as_str().to_string()),
                ("schedule_conservativeness", format!("{:?}", self.schedule_conservativeness)),
                ("cuda_graph_max_bs", self.cuda_graph_max_bs.to_string()),
                ("disable_cuda_graph", python_bool(!self.cuda_graph)),
                ("disable_radix_cache", python_bool(!self.radix_cache)),
                ("disable_overlap_schedule", python_bool(!self.overlap_schedule)),
                ("enable_mixed_chunk", python_bool(self.mixed_chunk)),
                ("num_continuous_decode_steps", self.continuous_decode_steps.to_string()),
                ("speculative_algorithm", opt(spec.map(|s| s.algorithm.as_str().to_string()))),
                ("speculative_num_draft_tokens", opt(spec.map(|s| s.draft_tokens.to_string()))),
                ("speculative_num_steps", opt(spec.map(|s| s.num_steps.to_string()))),
                ("speculative_draft_model_path", opt(self.speculative_draft_model.clone())),
                ("kv_cache_dtype", self.kv_cache_dtype.as_str().to_string()),
                ("attention_backend", self.attention_backend.as_str().to_string()),
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
