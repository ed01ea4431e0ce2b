//! # autodebug-deploy
//!
//! [`Deployer`](autodebug_core::Deployer) implementations for the autodebug loop, and
//! decorators that add behaviour to any of them.
//!
//! - [`LocalDeployer`] runs any engine command (the simulator, `llama-server`, `python -m
//!   sglang.launch_server`...) as a child process: it picks a free port, waits for the health
//!   endpoint, keeps the output, and never leaves a process behind (own process group,
//!   parent-death signal, group-wide teardown, kill on drop).
//! - [`Retrying`] retries failed starts; [`DryRun`] renders without starting anything.
//! - `dstack::DstackDeployer` and `KubernetesDeployer` are behind the `dstack` and `kubernetes`
//!   features (both on by default); `default-features = false` builds the local and Slurm
//!   deployers without an HTTP or Kubernetes client.
//!
//! ```
//! use std::time::Duration;
//! use autodebug_core::{Deployer, EngineKind, ServiceSpec};
//! use autodebug_deploy::{DryRun, LocalDeployer, Retrying};
//!
//! # fn main() -> autodebug_core::Result<()> {
//! let local = LocalDeployer::builder()
//!     .program("llama-server")
//!     .args_template(["-m", "{model}", "--host", "{host}", "--port", "{port}", "{flags}"])
//!     .health_path("/health")
//!     .build()?;
//! let deployer = Retrying::new(local, 3).backoff(Duration::from_millis(200), Duration::from_secs(5));
//!
//! let spec = ServiceSpec::new("smol", EngineKind::LlamaCpp, "SmolLM2-135M.gguf").with_flag("-np", Some("2"));
//! let script = deployer.render(&spec)?;
//! assert!(script.content.contains("-np 2"));
//!
//! // Render-only: nothing is started, and waiting for readiness says why.
//! let dry = DryRun::new(LocalDeployer::simulator("autodebug".into()));
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let deployment = dry.deploy(&spec).await?;
//! let err = dry.wait_ready(&deployment, Duration::from_secs(1)).await.unwrap_err();
//! assert!(err.to_string().contains("dry run"));
//! # Ok::<_, autodebug_core::Error>(()) })?;
//! # Ok(()) }
//! ```

mod beside;
pub mod decorators;
#[cfg(feature = "dstack")]
pub mod dstack;
pub mod engine_args;
mod health;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod local;
mod logbuf;
mod process;
pub mod slurm;
pub mod template;

pub use decorators::{DryRun, RenderAs, Retrying};
#[cfg(feature = "kubernetes")]
pub use kubernetes::{KubernetesDeployer, KubernetesDeployerBuilder};
pub use local::{LocalDeployer, LocalDeployerBuilder};
pub use logbuf::{DEFAULT_LOG_CAPACITY, MAX_LINE_BYTES};
pub use slurm::{SlurmDeployer, SlurmDeployerBuilder};
pub use template::CommandTemplate;
