//! `autodebug.yaml`: what a configured session runs, and the built-in demo configuration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use autodebug_core::session::SessionConfig;
use autodebug_core::{BenchPlan, Constraint, EngineKind, Error, LaunchFlags, Load, Objective, Result, ServiceSpec, Workload};
use serde::{Deserialize, Serialize};

/// A configured session, as read from `autodebug.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Session name in the store; defaults to `<engine>-<ISO time>`.
    #[serde(default)]
    pub session: Option<String>,
    /// Where the store and the trail go.
    #[serde(default = "default_sessions_dir")]
    pub sessions_dir: PathBuf,
    pub deployer: DeployerConfig,
    /// The service to tune: its baseline configuration.
    pub service: ServiceConfig,
    /// Benchmarks run every iteration; the first is the primary one.
    pub bench: Vec<BenchConfig>,
    pub objective: ObjectiveConfig,
    #[serde(default)]
    pub planner: PlannerKind,
    #[serde(default)]
    pub budget: BudgetConfig,
    /// Telemetry sources read each iteration.
    #[serde(default = "default_telemetry")]
    pub telemetry: Vec<TelemetryKind>,
}

fn default_sessions_dir() -> PathBuf {
    PathBuf::from("sessions")
}

fn default_telemetry() -> Vec<TelemetryKind> {
    vec![TelemetryKind::Prometheus, TelemetryKind::Graphsignal, TelemetryKind::Logs]
}

/// Where and how the service is deployed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DeployerConfig {
    /// The built-in simulated engine, run as a local child process (`autodebug sim serve`).
    Simulator {
        #[serde(default = "default_ready_timeout")]
        ready_timeout_s: f64,
    },
    /// Any engine command run locally; `args` may use `{port}`, `{host}`, `{model}`, `{flags}`.
    Local {
        program: PathBuf,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default = "default_health_path")]
        health_path: String,
        #[serde(default = "default_ready_timeout")]
        ready_timeout_s: f64,
    },
}

fn default_ready_timeout() -> f64 {
    120.0
}

fn default_health_path() -> String {
    "/health".to_string()
}

impl DeployerConfig {
    pub fn ready_timeout(&self) -> Duration {
        let s = match self {
            DeployerConfig::Simulator { ready_timeout_s } | DeployerConfig::Local { ready_timeout_s, .. } => *ready_timeout_s,
        };
        Duration::from_secs_f64(s.max(1.0))
    }
}

/// The baseline service configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    #[serde(default = "default_service_name")]
    pub name: String,
    pub engine: EngineKind,
    pub model: String,
    /// `NAME[:MEMORY]:COUNT`, e.g. `H100:1`.
    #[serde(default)]
    pub gpu: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
    /// Engine launch flags (`--flag: value`, `--switch: null`).
    #[serde(default)]
    pub flags: LaunchFlags,
}

fn default_service_name() -> String {
    "autodebug".to_string()
}

/// One benchmark plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchConfig {
    pub name: String,
    pub prompt_tokens: u32,
    pub output_tokens: u32,
    #[serde(default)]
    pub shared_prefix_tokens: u32,
    #[serde(default)]
    pub repeat_prompt: bool,
    /// 1 = sequential.
    #[serde(default = "one")]
    pub concurrency: usize,
    /// Open-loop Poisson arrivals at this rate instead of a closed loop.
    #[serde(default)]
    pub rate: Option<f64>,
    pub requests: usize,
    #[serde(default)]
    pub warmup: usize,
}

fn one() -> usize {
    1
}

/// What to optimize.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveConfig {
    #[serde(default)]
    pub minimize: Option<String>,
    #[serde(default)]
    pub maximize: Option<String>,
    /// e.g. `ttft.p99 <= 200ms`, `error_rate == 0`.
    #[serde(default)]
    pub constraints: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlannerKind {
    #[default]
    Rules,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TelemetryKind {
    /// Scrape the engine's `/metrics` at the window's start and end.
    Prometheus,
    /// A Graphsignal debug context; for the simulator, served by the engine itself.
    Graphsignal,
    /// Parse the engine's log lines.
    Logs,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    #[serde(default = "default_iterations")]
    pub iterations: u32,
    #[serde(default)]
    pub wall_time_s: Option<f64>,
}

fn default_iterations() -> u32 {
    5
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig { iterations: default_iterations(), wall_time_s: None }
    }
}

impl RunConfig {
    /// Reads and checks a config file; errors name the file and the field.
    pub fn load(path: &Path) -> Result<RunConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let config: RunConfig = serde_yaml::from_str(&text).map_err(|e| {
            let at = e.location().map(|l| format!(":{}:{}", l.line(), l.column())).unwrap_or_default();
            Error::config(format!("{}{at}", path.display()), e.to_string())
        })?;
        config.objective().map_err(|e| Error::config(format!("{} objective", path.display()), e.to_string()))?;
        if config.bench.is_empty() {
            return Err(Error::config(format!("{} bench", path.display()), "add at least one benchmark plan"));
        }
        Ok(config)
    }

    /// The configuration `autodebug demo` runs: the published autodebug baseline (Qwen1.5-0.5B-Chat,
    /// SGLang defaults, 1x H100) on the simulator, with the original's sequential repeated-prompt
    /// test (31 prompt / 150 completion tokens) and a concurrent one.
    pub fn demo(out: &Path, iterations: u32) -> RunConfig {
        RunConfig {
            session: None,
            sessions_dir: out.to_path_buf(),
            deployer: DeployerConfig::Simulator { ready_timeout_s: 60.0 },
            service: ServiceConfig {
                name: "qwen-sglang".to_string(),
                engine: EngineKind::Sglang,
                model: "Qwen/Qwen1.5-0.5B-Chat".to_string(),
                gpu: Some("H100:1".to_string()),
                image: Some("lmsysorg/sglang:latest".to_string()),
                flags: LaunchFlags::new(),
            },
            bench: vec![
                BenchConfig {
                    name: "chat".into(),
                    prompt_tokens: 31,
                    output_tokens: 150,
                    shared_prefix_tokens: 0,
                    repeat_prompt: true,
                    concurrency: 1,
                    rate: None,
                    requests: 12,
                    warmup: 1,
                },
                BenchConfig {
                    name: "concurrent".into(),
                    prompt_tokens: 256,
                    output_tokens: 128,
                    shared_prefix_tokens: 0,
                    repeat_prompt: false,
                    concurrency: 8,
                    rate: None,
                    requests: 32,
                    warmup: 0,
                },
            ],
            objective: ObjectiveConfig {
                minimize: Some("chat.e2e.mean".into()),
                maximize: None,
                constraints: vec!["chat.error_rate == 0".into(), "concurrent.error_rate == 0".into()],
            },
            planner: PlannerKind::Rules,
            budget: BudgetConfig { iterations, wall_time_s: None },
            telemetry: default_telemetry(),
        }
    }

    pub fn objective(&self) -> Result<Objective> {
        let mut objective = match (&self.objective.minimize, &self.objective.maximize) {
            (Some(m), None) => Objective::minimize(m.clone()),
            (None, Some(m)) => Objective::maximize(m.clone()),
            _ => return Err(Error::config("objective", "set exactly one of `minimize` or `maximize`")),
        };
        for text in &self.objective.constraints {
            objective = objective.with_constraint(text.parse::<Constraint>()?);
        }
        Ok(objective)
    }

    pub fn baseline(&self) -> ServiceSpec {
        let s = &self.service;
        let mut spec = ServiceSpec::new(s.name.clone(), s.engine, s.model.clone());
        spec.image = s.image.clone();
        spec.flags = s.flags.clone();
        spec.resources.gpu = s.gpu.clone();
        spec
    }

    pub fn bench_plans(&self) -> Vec<BenchPlan> {
        self.bench
            .iter()
            .map(|b| {
                let mut workload = Workload::new(b.prompt_tokens, b.output_tokens);
                workload.shared_prefix_tokens = b.shared_prefix_tokens;
                workload.repeat_prompt = b.repeat_prompt;
                let load = match (b.rate, b.concurrency) {
                    (Some(rate), _) => Load::Rate { requests_per_s: rate, arrival: Default::default() },
                    (None, 0 | 1) => Load::Sequential,
                    (None, c) => Load::Concurrent { concurrency: c },
                };
                BenchPlan::new(b.name.clone(), workload, load, b.requests).with_warmup(b.warmup)
            })
            .collect()
    }

    pub fn session_config(&self, name: String, iterations: Option<u32>) -> Result<SessionConfig> {
        Ok(SessionConfig {
            name,
            objective: self.objective()?,
            bench: self.bench_plans(),
            max_iterations: iterations.unwrap_or(self.budget.iterations),
            max_wall: self.budget.wall_time_s.map(|s| Duration::from_secs_f64(s.max(0.0))),
            ready_timeout: self.deployer.ready_timeout(),
            sessions_dir: self.sessions_dir.clone(),
        })
    }
}
