//! The engine settings that take one of a few named values, and speculative decoding's settings.

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
    pub(super) const NAMES: [&'static str; 6] = ["lpm", "random", "fcfs", "dfs-weight", "lof", "priority"];

    pub(super) fn parse(text: &str) -> Option<Self> {
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
