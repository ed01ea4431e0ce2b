//! Hardware and model profiles: the numbers the roofline cost model is built from.

/// One GPU model. Memory is what the driver reports as usable (GiB); bandwidths are peak figures.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuProfile {
    pub name: &'static str,
    /// Usable device memory, GiB (what `torch.cuda.mem_get_info` reports as total).
    pub memory_gb: f64,
    /// Peak HBM/GDDR bandwidth, GB/s.
    pub hbm_gb_s: f64,
    /// Dense BF16 tensor-core peak, TFLOP/s.
    pub bf16_tflops: f64,
    /// Per-direction GPU-to-GPU bandwidth used by all-reduce, GB/s (PCIe for cards without NVLink).
    pub nvlink_gb_s: f64,
    /// CUDA compute capability ×10 (90 = Hopper), which decides default kernels.
    pub sm: u32,
    /// Other spellings accepted by [`GpuProfile::lookup`] (lowercase, no `nvidia` prefix).
    pub aliases: &'static [&'static str],
}

static GPUS: [GpuProfile; 4] = [
    GpuProfile {
        name: "H100",
        memory_gb: 79.1,
        hbm_gb_s: 3350.0,
        bf16_tflops: 989.0,
        nvlink_gb_s: 450.0,
        sm: 90,
        aliases: &["h100", "h100-80gb", "h100-sxm", "h100-sxm5", "h100 80gb hbm3"],
    },
    GpuProfile {
        name: "H200",
        memory_gb: 139.8,
        hbm_gb_s: 4800.0,
        bf16_tflops: 989.0,
        nvlink_gb_s: 450.0,
        sm: 90,
        aliases: &["h200", "h200-141gb", "h200-sxm"],
    },
    GpuProfile {
        name: "A100",
        memory_gb: 79.2,
        hbm_gb_s: 2039.0,
        bf16_tflops: 312.0,
        nvlink_gb_s: 300.0,
        sm: 80,
        aliases: &["a100", "a100-80gb", "a100-sxm4-80gb", "a100 80gb", "a100-sxm"],
    },
    GpuProfile {
        name: "L4",
        memory_gb: 22.0,
        hbm_gb_s: 300.0,
        bf16_tflops: 121.0,
        nvlink_gb_s: 32.0,
        sm: 89,
        aliases: &["l4", "l4-24gb"],
    },
];

impl GpuProfile {
    /// Finds a GPU by name, case-insensitively: `H100`, `h100-80gb`, `NVIDIA H100 80GB HBM3`,
    /// and the `NAME:MEM:COUNT` resource spelling (`H100:80GB:2`) all name the H100.
    ///
    /// ```
    /// use autodebug_sim::GpuProfile;
    /// assert_eq!(GpuProfile::lookup("h100-80gb").unwrap().name, "H100");
    /// assert_eq!(GpuProfile::lookup("A100:80GB:2").unwrap().name, "A100");
    /// assert!(GpuProfile::lookup("V100").is_none());
    /// ```
    pub fn lookup(name: &str) -> Option<&'static GpuProfile> {
        let key = normalize_gpu(name);
        GPUS.iter().find(|g| g.aliases.iter().any(|a| *a == key))
    }

    pub fn all() -> &'static [GpuProfile] {
        &GPUS
    }
}

fn normalize_gpu(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    let lower = lower.strip_prefix("nvidia").unwrap_or(&lower).trim_start_matches([' ', '-', '_']);
    let mut parts = lower.split(':');
    let base = parts.next().unwrap_or_default().replace('_', "-");
    // `A100:80GB` is the same card as `A100`, and `a100-80gb` already is an alias.
    match parts.next() {
        Some(mem) if mem.ends_with("gb") && !base.ends_with("gb") => {
            let candidate = format!("{base}-{mem}");
            if GPUS.iter().any(|g| g.aliases.contains(&candidate.as_str())) { candidate } else { base }
        }
        _ => base,
    }
}

/// One served model: the shape numbers that decide weight size, KV-cache size and FLOPs.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelProfile {
    /// Short name, e.g. `qwen1.5-0.5b`.
    pub name: &'static str,
    /// Hugging Face repository id.
    pub hf_id: &'static str,
    /// Parameters, billions (embeddings included: they are read every step too).
    pub params_b: f64,
    pub layers: u32,
    pub hidden: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    /// Longest context the model config allows.
    pub max_context: u32,
    pub heads: u32,
    pub vocab: u32,
    /// The architecture class the engines log (`type=Qwen2ForCausalLM`).
    pub architecture: &'static str,
}

static MODELS: [ModelProfile; 4] = [
    ModelProfile {
        name: "qwen1.5-0.5b",
        hf_id: "Qwen/Qwen1.5-0.5B-Chat",
        params_b: 0.62,
        layers: 24,
        hidden: 1024,
        kv_heads: 16,
        head_dim: 64,
        max_context: 32768,
        heads: 16,
        vocab: 151936,
        architecture: "Qwen2ForCausalLM",
    },
    ModelProfile {
        name: "qwen2.5-7b",
        hf_id: "Qwen/Qwen2.5-7B-Instruct",
        params_b: 7.62,
        layers: 28,
        hidden: 3584,
        kv_heads: 4,
        head_dim: 128,
        max_context: 32768,
        heads: 28,
        vocab: 152064,
        architecture: "Qwen2ForCausalLM",
    },
    ModelProfile {
        name: "llama-3.1-8b",
        hf_id: "meta-llama/Llama-3.1-8B-Instruct",
        params_b: 8.03,
        layers: 32,
        hidden: 4096,
        kv_heads: 8,
        head_dim: 128,
        max_context: 131072,
        heads: 32,
        vocab: 128256,
        architecture: "LlamaForCausalLM",
    },
    ModelProfile {
        name: "llama-3.1-70b",
        hf_id: "meta-llama/Llama-3.1-70B-Instruct",
        params_b: 70.55,
        layers: 80,
        hidden: 8192,
        kv_heads: 8,
        head_dim: 128,
        max_context: 131072,
        heads: 64,
        vocab: 128256,
        architecture: "LlamaForCausalLM",
    },
];

impl ModelProfile {
    /// Finds a model by short name or Hugging Face id, case-insensitively; the `-chat`/`-instruct`
    /// suffix and the org prefix are optional (`Qwen/Qwen1.5-0.5B-Chat`, `qwen1.5-0.5b`,
    /// `meta-llama/Meta-Llama-3.1-8B-Instruct`, `llama-3.1-8b`).
    ///
    /// ```
    /// use autodebug_sim::ModelProfile;
    /// assert_eq!(ModelProfile::lookup("Qwen/Qwen1.5-0.5B-Chat").unwrap().name, "qwen1.5-0.5b");
    /// assert_eq!(ModelProfile::lookup("llama-3.1-70b").unwrap().layers, 80);
    /// assert!(ModelProfile::lookup("gpt-5").is_none());
    /// ```
    pub fn lookup(name: &str) -> Option<&'static ModelProfile> {
        let key = normalize_model(name);
        MODELS.iter().find(|m| normalize_model(m.name) == key || normalize_model(m.hf_id) == key)
    }

    pub fn all() -> &'static [ModelProfile] {
        &MODELS
    }

    /// Bytes of weights on one GPU (BF16) at tensor-parallel degree `tp`.
    pub fn weight_bytes_per_gpu(&self, tp: u32) -> f64 {
        self.params_b * 1e9 * 2.0 / tp.max(1) as f64
    }

    /// KV-cache bytes one token occupies on one GPU; KV heads are split across ranks, but a
    /// rank always holds at least one head (replicated when `tp > kv_heads`).
    pub fn kv_bytes_per_token_per_gpu(&self, tp: u32, dtype_bytes: f64) -> f64 {
        let heads_per_rank = (self.kv_heads as f64 / tp.max(1) as f64).max(1.0);
        2.0 * self.layers as f64 * heads_per_rank * self.head_dim as f64 * dtype_bytes
    }
}

fn normalize_model(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    let base = lower.rsplit('/').next().unwrap_or_default();
    let base = base.strip_prefix("meta-").unwrap_or(base);
    let base = base.strip_suffix("-chat").or_else(|| base.strip_suffix("-instruct")).unwrap_or(base);
    base.replace('_', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_finds_itself_by_every_alias() {
        for gpu in GpuProfile::all() {
            for alias in gpu.aliases {
                assert_eq!(GpuProfile::lookup(alias).map(|g| g.name), Some(gpu.name));
            }
            assert_eq!(GpuProfile::lookup(&gpu.name.to_ascii_uppercase()).map(|g| g.name), Some(gpu.name));
        }
        for model in ModelProfile::all() {
            assert_eq!(ModelProfile::lookup(model.hf_id).map(|m| m.name), Some(model.name));
            assert_eq!(ModelProfile::lookup(model.name).map(|m| m.name), Some(model.name));
        }
    }

    #[test]
    fn gpu_spellings_from_resource_specs_and_nvidia_smi() {
        assert_eq!(GpuProfile::lookup("NVIDIA H100 80GB HBM3").map(|g| g.name), Some("H100"));
        assert_eq!(GpuProfile::lookup("H100:80GB:2").map(|g| g.name), Some("H100"));
        assert_eq!(GpuProfile::lookup("l4:1").map(|g| g.name), Some("L4"));
        assert_eq!(ModelProfile::lookup("meta-llama/Meta-Llama-3.1-8B-Instruct").map(|m| m.name), Some("llama-3.1-8b"));
    }

    #[test]
    fn gqa_shrinks_the_kv_cache() {
        let llama = ModelProfile::lookup("llama-3.1-8b").unwrap();
        let qwen = ModelProfile::lookup("qwen1.5-0.5b").unwrap();
        // 8 KV heads of 128 over 32 layers vs 16 heads of 64 over 24 layers.
        assert!(llama.kv_bytes_per_token_per_gpu(1, 2.0) > qwen.kv_bytes_per_token_per_gpu(1, 2.0));
        assert_eq!(llama.kv_bytes_per_token_per_gpu(2, 2.0) * 2.0, llama.kv_bytes_per_token_per_gpu(1, 2.0));
        assert_eq!(llama.kv_bytes_per_token_per_gpu(16, 2.0), llama.kv_bytes_per_token_per_gpu(8, 2.0));
    }
}
