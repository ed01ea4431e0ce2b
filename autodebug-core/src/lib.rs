//! # autodebug-core
//!
//! The vocabulary every autodebug crate speaks: domain types ([`ServiceSpec`], [`Signal`],
//! [`BenchReport`], [`Finding`], [`Plan`], [`Objective`]...), the five traits of the loop
//! ([`Deployer`], [`Benchmarker`], [`TelemetrySource`], [`Analyzer`], [`Planner`]), the engines'
//! knob catalogs ([`SearchSpace`]), and the pieces that compose them: the rule analyzer and
//! planner, the session loop, the SQLite experiment store and the markdown/YAML session trail.
//!
//! It depends on no HTTP client and no engine; the other crates implement its traits. The
//! `session` feature (on by default) adds the loop, the store and the trail, and with them SQLite;
//! an embedder that only needs the vocabulary (a benchmarker, a telemetry source) turns it off.
//!
//! ```
//! use autodebug_core::{EngineKind, SearchSpace, ServiceSpec};
//!
//! let spec = ServiceSpec::new("qwen", EngineKind::Sglang, "Qwen/Qwen1.5-0.5B-Chat")
//!     .with_flag("--schedule-policy", Some("lpm"))
//!     .with_gpu("H100:1");
//! SearchSpace::for_engine(EngineKind::Sglang).validate(&spec).unwrap();
//! ```

mod analysis;
mod bench;
pub mod beside;
pub mod canonical;
pub mod chaos;
mod error;
pub mod failure;
mod history;
pub mod knobs;
mod objective;
mod plan;
pub mod secret;
mod signal;
mod spec;
mod traits;
mod window;

pub use analysis::{Analysis, Bottleneck, Evidence, Finding, Severity};
pub use bench::{
    Arrival, BenchContext, BenchPlan, BenchReport, BenchSummary, CAPACITY_METRIC, CapacityGoal, CapacityOutcome,
    CapacityProbe, Distribution, ErrorClass, Load, RequestRecord, Timeouts, Workload, duration_ms,
};
pub use error::{BoxError, Error, ErrorKind, Result};
pub use failure::{FailureClass, RootCause};
pub use history::{BlamedSetting, History, Iteration, IterationStatus};
pub use knobs::{DeploymentKnobs, Domain, EngineArgs, Knob, Platform, SearchSpace};
pub use objective::{Comparison, Constraint, Direction, Objective};
pub use plan::{Change, Plan};
pub use secret::Secret;
pub use signal::{Signal, SignalKind, SignalValue, TelemetrySnapshot, format_number};
pub use spec::{
    Artifact, Deployment, Endpoint, EngineKind, LaunchFlags, LogLine, Resources, ServiceSpec, is_env_knob, printable,
    shell_quote,
};
pub use traits::{Analyzer, Benchmarker, Deployer, PlanInput, Planner, Target, TelemetrySource};
pub use window::{TimeWindow, parse_duration};

/// Re-exported so implementors name the same `async_trait` the traits use.
pub use async_trait::async_trait;

pub mod pricing;
pub mod rng;
pub mod rules;
pub mod rx_stamp;
pub mod search;
#[cfg(feature = "session")]
pub mod session;
pub mod startup_args;
pub mod stats;
#[cfg(feature = "session")]
pub mod store;
pub mod testing;
#[cfg(feature = "session")]
pub mod trail;
