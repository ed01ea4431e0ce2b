//! # autodebug-sim
//!
//! A simulated SGLang/vLLM-flavoured inference engine, driven by the engines' real flag names,
//! for machines without a GPU. One model, two clocks:
//!
//! - **virtual time**: [`simulate`] runs a whole benchmark (thousands of requests) in
//!   milliseconds, for tests and for measuring planners;
//! - **real time**: the [`server`] module calls [`Engine::step`] from a thread and sleeps each
//!   step's duration, behind an OpenAI-compatible HTTP API.
//!
//! The model: a scheduler loop with per-step CPU overhead (hidden by overlap scheduling,
//! amortized by continuous decode steps), continuous batching up to the running-request cap,
//! a KV pool sized by the memory fraction (queueing and retraction when it runs out, a startup
//! OOM when set too high), a prefix cache whose hit rate depends on the workload and on `lpm`
//! ordering, chunked prefill and mixed chunks, roofline forward times on [`GpuProfile`]s and
//! [`ModelProfile`]s, CUDA-graph launch savings, n-gram speculative decoding, tensor
//! parallelism, and seeded noise.
//!
//! ```
//! use autodebug_sim::{simulate, EngineKind, SimConfig, SimWorkload};
//!
//! let flags = |text: &str| text.split_whitespace().map(str::to_string).collect::<Vec<_>>();
//! let workload = SimWorkload::sequential(20, 31, 150).with_repeated_prompt();
//! let default = SimConfig::from_args(EngineKind::Sglang, "H100", "Qwen/Qwen1.5-0.5B-Chat", &[]).unwrap();
//! let eager = SimConfig::from_args(EngineKind::Sglang, "H100", "Qwen/Qwen1.5-0.5B-Chat", &flags("--disable-cuda-graph")).unwrap();
//! let tpot = |config: &SimConfig| simulate(config, &workload, 42).metrics()["tpot.mean"];
//! assert!(tpot(&eager) > tpot(&default));
//! ```

mod capacity;
mod config;
mod cost;
mod deployer;
mod engine;
mod memory;
mod prefix_cache;
mod profiles;
mod rng;
pub mod server;
mod simulate;
mod tokenizer;
pub mod tune_suite;
pub mod twin;

pub use autodebug_core::EngineKind;
pub use capacity::{SimCapacity, simulated_capacity};
pub use config::{
    AttentionBackend, KvCacheDtype, SchedulePolicy, SimConfig, SimError, Speculative, SpeculativeAlgorithm,
    redacted_args,
};
pub use deployer::SimDeployer;
pub use engine::{Engine, EngineStats, SimRequest, StepKind, StepOutcome, TokenEvent};
pub use profiles::{GpuProfile, ModelProfile};
pub use simulate::{SimResult, SimWorkload, Simulated, simulate};
pub use tokenizer::tokenize;
