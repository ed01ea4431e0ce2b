//! Which kind of work a GPU event is, read from its category and kernel name.

use serde::{Deserialize, Serialize};

/// The class of a GPU event, the level at which a bottleneck is usually named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelCategory {
    /// Matrix multiplies and convolutions (cuBLAS, CUTLASS, hipBLASLt/Tensile, implicit-GEMM conv).
    Gemm,
    /// Attention kernels (FlashAttention, FlashInfer, paged attention, CK FMHA).
    Attention,
    /// Collectives (NCCL, RCCL, custom all-reduce).
    Communication,
    /// Copies between host and device or device and device.
    Memcpy,
    Memset,
    /// Layer/RMS/batch normalization.
    Norm,
    /// Element-wise maths, activations, casts and fills.
    Elementwise,
    Other,
}

impl KernelCategory {
    pub const ALL: [KernelCategory; 8] = [
        KernelCategory::Gemm,
        KernelCategory::Attention,
        KernelCategory::Communication,
        KernelCategory::Memcpy,
        KernelCategory::Memset,
        KernelCategory::Norm,
        KernelCategory::Elementwise,
        KernelCategory::Other,
    ];

    /// The name used in signals (`gpu.compute.gemm`) and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            KernelCategory::Gemm => "gemm",
            KernelCategory::Attention => "attention",
            KernelCategory::Communication => "communication",
            KernelCategory::Memcpy => "memcpy",
            KernelCategory::Memset => "memset",
            KernelCategory::Norm => "norm",
            KernelCategory::Elementwise => "elementwise",
            KernelCategory::Other => "other",
        }
    }

    /// Compute as opposed to data movement: what communication can overlap with.
    pub fn is_compute(self) -> bool {
        !matches!(self, KernelCategory::Communication | KernelCategory::Memcpy | KernelCategory::Memset)
    }

    /// A kernel launch, as opposed to a memcpy or memset: the analysis totals those two apart so
    /// that "GPU kernel time" means kernels only.
    pub fn is_kernel(self) -> bool {
        !matches!(self, KernelCategory::Memcpy | KernelCategory::Memset)
    }

    /// Classifies one GPU event by its trace category (`kernel`, `gpu_memcpy`, `Memset`...) and name.
    ///
    /// ```
    /// use autodebug_telemetry::trace::KernelCategory;
    /// assert_eq!(KernelCategory::classify("kernel", "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn"), KernelCategory::Gemm);
    /// assert_eq!(KernelCategory::classify("kernel", "ncclKernel_AllReduce_RING_LL_Sum_float(...)"), KernelCategory::Communication);
    /// assert_eq!(KernelCategory::classify("Memcpy", "Memcpy HtoD (Pageable -> Device)"), KernelCategory::Memcpy);
    /// ```
    pub fn classify(cat: &str, name: &str) -> KernelCategory {
        let cat_lower = cat.to_ascii_lowercase();
        if cat_lower.contains("memcpy") {
            return KernelCategory::Memcpy;
        }
        if cat_lower.contains("memset") {
            return KernelCategory::Memset;
        }
        let lower = name.to_ascii_lowercase();
        let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
        if has(&[
            "nccl",
            "rccl",
            "allreduce",
            "all_reduce",
            "allgather",
            "all_gather",
            "reducescatter",
            "reduce_scatter",
            "alltoall",
            "all_to_all",
            "cross_device_reduce",
            "sendrecv",
        ]) {
            KernelCategory::Communication
        } else if lower.starts_with("memcpy") || lower.contains("copybuffer") {
            KernelCategory::Memcpy
        } else if lower.starts_with("memset") || lower.contains("fillbuffer") {
            KernelCategory::Memset
        } else if has(&[
            "flash",
            "fmha",
            "attention",
            "attn",
            "mha_",
            "sdpa",
            "flashinfer",
            "batchprefill",
            "batchdecode",
            "paged_kv",
            "pagedkv",
            "mla_",
        ]) {
            KernelCategory::Attention
        } else if has(&[
            "gemm",
            "gemv",
            "cutlass",
            "cublas",
            "xmma",
            "cijk_",
            "matmul",
            "nvjet",
            "wgmma",
            "hipblaslt",
            "sgemm",
            "hgemm",
            "_mm_",
            "implicit_convolve",
            "conv2d",
            "convolution",
            "winograd",
            "fprop",
            "dgrad",
            "wgrad",
        ]) {
            KernelCategory::Gemm
        } else if has(&["norm", "bn_fw", "bn_bw"]) {
            KernelCategory::Norm
        } else if has(&[
            "elementwise",
            "triton_poi",
            "act_and_mul",
            "silu",
            "gelu",
            "relu",
            "fill",
            "copy",
            "cast",
            "rotary",
            "index",
            "gather",
            "scatter",
            "cat_",
            "unrolled",
            "vectorized",
        ]) {
            KernelCategory::Elementwise
        } else {
            KernelCategory::Other
        }
    }
}

impl std::fmt::Display for KernelCategory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_kernel_names() {
        let cases = [
            ("Cijk_Alik_Bljk_BBS_BH_Bias_HA_S_SAV_UserArgs_MT320x224x64_MI16x16x1", KernelCategory::Gemm),
            (
                "void cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm_bf16_32x32_128x2_tn_align8>",
                KernelCategory::Gemm,
            ),
            (
                "void pytorch_flash::flash_fwd_kernel<pytorch_flash::Flash_fwd_kernel_traits<64, 128, 128>",
                KernelCategory::Attention,
            ),
            (
                "_ZN7ck_tile6kentryILi2ENS_38FmhaBatchPrefillWithPagedKVCacheKernelINS_40BlockFmhaBatchPref",
                KernelCategory::Attention,
            ),
            (
                "_ZN5aiter24add_rmsnorm_quant_kernelIDF16bDF16bLi64ELi8ELb0ELb0ELb1ELi1EEEvPT0_PT_PfS4_S4_S",
                KernelCategory::Norm,
            ),
            (
                "void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<c10::BFloat16, float>",
                KernelCategory::Norm,
            ),
            (
                "void cudnn::bn_fw_tr_1C11_singleread<float, 512, true, 1, 2, 0>(cudnnTensorStruct)",
                KernelCategory::Norm,
            ),
            (
                "void at::native::vectorized_elementwise_kernel<4, at::native::AddFunctor<float>>",
                KernelCategory::Elementwise,
            ),
            ("triton_poi_fused_add_cos_sin_0", KernelCategory::Elementwise),
            ("at::cuda::(anonymous namespace)::spin_kernel(long)", KernelCategory::Other),
        ];
        for (name, expected) in cases {
            assert_eq!(KernelCategory::classify("kernel", name), expected, "{name}");
        }
        assert_eq!(KernelCategory::classify("gpu_memset", "Memset (Device)"), KernelCategory::Memset);
    }
}
