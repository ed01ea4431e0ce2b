//! The [`Scenario`] type, how one is built from knob ladders, and the six hand-written scenarios.

use autodebug_core::search::{Config, Dimension, TuneSpace};
use autodebug_core::{Objective, SearchSpace, ServiceSpec};

use crate::{EngineKind, SimWorkload};

/// A model on a GPU under a workload, with what to optimize and which knobs to search.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// `H100`, `A100:4`...
    pub gpu: String,
    pub model: String,
    pub workload: SimWorkload,
    pub objective: Objective,
    pub space: TuneSpace,
    /// The starting configuration: the first value listed for every knob (mostly the engine's
    /// defaults; the TP degree the GPUs were bought for).
    pub base: ServiceSpec,
}

/// A space and its starting point: each knob's ladder, starting at the first value listed
/// (the ladder itself is sorted, so `["4", "2", "8"]` starts a TP search at 4).
pub(crate) struct Ladders {
    space: TuneSpace,
    start: Config,
}

pub(crate) fn dims(levels: &[(&str, &[&str])]) -> Ladders {
    let catalog = SearchSpace::for_engine(EngineKind::Sglang);
    // The ladders below are written against the catalog; a typo is a programming error.
    let dims: Vec<(Dimension, usize)> = levels
        .iter()
        .filter_map(|(flag, l)| {
            let dim = Dimension::new(&catalog, flag, l).ok()?;
            let first = l.first().copied().filter(|v| *v != "default");
            let start = dim.level_of(first).unwrap_or(0);
            Some((dim, start))
        })
        .collect();
    let start = dims.iter().map(|(_, s)| *s).collect();
    Ladders { space: TuneSpace::new(dims.into_iter().map(|(d, _)| d).collect()), start }
}

fn constraint(text: &str) -> autodebug_core::Constraint {
    text.parse().unwrap_or_else(|_| autodebug_core::Constraint {
        metric: text.to_string(),
        op: autodebug_core::Comparison::AtMost,
        bound: f64::INFINITY,
    })
}

pub(crate) fn scenario(
    name: &str,
    description: &str,
    gpu: &str,
    model: &str,
    workload: SimWorkload,
    objective: Objective,
    ladders: Ladders,
) -> Scenario {
    let catalog = SearchSpace::for_engine(EngineKind::Sglang);
    let bare = ServiceSpec::new(name, EngineKind::Sglang, model).with_gpu(gpu);
    let Ladders { space, start } = ladders;
    let start = space.canonical(start);
    let base = space.to_spec(&catalog, &bare, &start).unwrap_or(bare);
    Scenario {
        name: name.to_string(),
        description: description.to_string(),
        gpu: gpu.to_string(),
        model: model.to_string(),
        workload,
        objective,
        space,
        base,
    }
}

/// The six built-in scenarios.
///
/// Each space is chosen so the within-2% region is sparse: every knob has levels that cost
/// more than 2% under the scenario's workload (through the engine model's own mechanisms: CPU
/// overhead per round trip, CUDA-graph batch limits, KV capacity and retraction, chunked prefill
/// against decode, prefix reuse, tensor-parallel memory), and several knobs interact.
pub fn scenarios() -> Vec<Scenario> {
    let no_errors = || constraint("error_rate == 0");
    vec![
        scenario(
            "qwen-chat-latency",
            "Qwen1.5-0.5B on 1x H100, latency-bound chat at concurrency 8: minimize mean e2e",
            "H100",
            "qwen1.5-0.5b",
            SimWorkload::sequential(48, 200, 150).with_concurrency(8),
            Objective::minimize("e2e.mean").with_constraint(no_errors()),
            dims(&[
                ("--num-continuous-decode-steps", &["1", "2", "4", "8", "16", "32", "64"]),
                ("--disable-overlap-schedule", &["false", "true"]),
                ("--disable-cuda-graph", &["false", "true"]),
                ("--cuda-graph-max-bs", &["default", "2", "4"]),
                ("--max-running-requests", &["default", "2", "4", "6", "8"]),
                ("--chunked-prefill-size", &["default", "64", "128", "256"]),
            ]),
        ),
        scenario(
            "llama8b-throughput-ttft",
            "Llama-3.1-8B on 1x A100, 512-token prompts, concurrency 8: maximize output throughput with ttft.p99 <= 500ms",
            "A100",
            "llama-3.1-8b",
            SimWorkload::sequential(96, 512, 256).with_concurrency(8),
            Objective::maximize("output_throughput")
                .with_constraint(no_errors())
                .with_constraint(constraint("ttft.p99 <= 500ms")),
            dims(&[
                ("--max-running-requests", &["default", "2", "4", "6", "8"]),
                ("--chunked-prefill-size", &["default", "256", "512", "1024", "2048"]),
                ("--num-continuous-decode-steps", &["1", "2", "4", "8"]),
                ("--enable-mixed-chunk", &["false", "true"]),
                ("--disable-overlap-schedule", &["false", "true"]),
                ("--attention-backend", &["default", "flashinfer", "triton"]),
            ]),
        ),
        scenario(
            "llama70b-tp",
            "Llama-3.1-70B on H100s (as many as the TP degree), 1024-token prompts, 512-token answers, concurrency 32: minimize mean e2e with ttft.p99 <= 2s",
            "H100",
            "llama-3.1-70b",
            SimWorkload::sequential(96, 1024, 512).with_concurrency(32),
            Objective::minimize("e2e.mean").with_constraint(no_errors()).with_constraint(constraint("ttft.p99 <= 2s")),
            dims(&[
                ("--tp-size", &["4", "2", "8"]),
                ("--attention-backend", &["default", "flashinfer", "triton", "torch_native"]),
                ("--max-running-requests", &["default", "16", "32", "64"]),
                ("--chunked-prefill-size", &["default", "1024", "2048", "4096", "8192"]),
                ("--enable-mixed-chunk", &["false", "true"]),
                ("--disable-cuda-graph", &["false", "true"]),
                ("--disable-overlap-schedule", &["false", "true"]),
            ]),
        ),
        scenario(
            "rag-shared-prefix",
            "Qwen2.5-7B on 1x H100, RAG: 3000-token prompts sharing a 2500-token prefix, concurrency 16: minimize mean TTFT",
            "H100",
            "qwen2.5-7b",
            SimWorkload::sequential(96, 3000, 64).with_shared_prefix(2500).with_concurrency(16),
            Objective::minimize("ttft.mean").with_constraint(no_errors()),
            dims(&[
                ("--schedule-policy", &["fcfs", "lpm", "dfs-weight", "random"]),
                ("--disable-radix-cache", &["false", "true"]),
                ("--chunked-prefill-size", &["default", "1024", "2048", "4096", "8192"]),
                ("--max-running-requests", &["default", "8", "16", "32"]),
                ("--enable-mixed-chunk", &["false", "true"]),
                ("--num-continuous-decode-steps", &["1", "2", "4"]),
            ]),
        ),
        scenario(
            "long-prompt",
            "Llama-3.1-8B on 1x H100, 16k-token prompts, 64-token answers, concurrency 8: minimize mean e2e with itl.p99 <= 100ms",
            "H100",
            "llama-3.1-8b",
            SimWorkload::sequential(32, 16000, 64).with_concurrency(8),
            Objective::minimize("e2e.mean")
                .with_constraint(no_errors())
                .with_constraint(constraint("itl.p99 <= 100ms")),
            dims(&[
                ("--chunked-prefill-size", &["default", "1024", "2048", "4096", "8192", "16384"]),
                ("--enable-mixed-chunk", &["false", "true"]),
                ("--max-running-requests", &["default", "2", "4", "8"]),
                ("--num-continuous-decode-steps", &["1", "2", "4"]),
                ("--attention-backend", &["default", "flashinfer", "triton"]),
                ("--disable-overlap-schedule", &["false", "true"]),
            ]),
        ),
        scenario(
            "kv-starved",
            "Qwen2.5-7B on 1x L4 (24 GB), 1000-token prompts, 512-token answers, concurrency 48: maximize output throughput",
            "L4",
            "qwen2.5-7b",
            SimWorkload::sequential(96, 1000, 512).with_concurrency(48),
            Objective::maximize("output_throughput").with_constraint(no_errors()),
            dims(&[
                ("--mem-fraction-static", &["default", "0.7", "0.75", "0.8", "0.95"]),
                ("--max-running-requests", &["default", "8", "16", "24", "32", "48"]),
                ("--schedule-conservativeness", &["1.0", "0.3"]),
                ("--chunked-prefill-size", &["default", "512", "1024", "4096"]),
                ("--num-continuous-decode-steps", &["1", "2", "4", "8"]),
                ("--enable-mixed-chunk", &["false", "true"]),
            ]),
        ),
    ]
}
