//! `autodebug.yaml`: what a configured session runs, and the built-in demo configuration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use autodebug_core::Secret;
use autodebug_core::rules::KnowledgeBase;
use autodebug_core::session::SessionConfig;
use autodebug_core::{
    BenchPlan, CAPACITY_METRIC, CapacityGoal, Comparison, Constraint, EngineKind, Error, LaunchFlags, Load, Objective,
    Result, ServiceSpec, Workload,
};
use autodebug_deploy::KubernetesDeployer;
use autodebug_deploy::dstack::DstackDeployer;
use autodebug_llm::LlmBudget;
use autodebug_llm::{LlmConfig, Provider};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A configured session, as read from `autodebug.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Session name in the store; defaults to `<engine>-<ISO time>`.
    #[serde(default)]
    pub session: Option<String>,
    /// Where the store and the trail go.
    #[serde(default = "default_sessions_dir")]
    pub sessions_dir: PathBuf,
    /// Where and how the service is deployed (`kind` picks the deployer).
    pub deployer: DeployerConfig,
    /// The service to tune: its baseline configuration.
    pub service: ServiceConfig,
    /// Benchmarks run every iteration; the first is the primary one.
    pub bench: Vec<BenchConfig>,
    /// What to optimize and the constraints every candidate must meet.
    pub objective: ObjectiveConfig,
    #[serde(default)]
    /// How the next configuration is chosen.
    pub planner: PlannerKind,
    /// Seed of the search planners (random, bayes, hybrid): the same seed replays the same proposals.
    #[serde(default = "default_planner_seed")]
    pub seed: u64,
    /// The model the `llm` planner asks, its key and its limits; read only when `planner: llm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmSection>,
    /// Your own rule files (YAML `rules:` lists, as `autodebug-core/rules/builtin.yaml`), added to
    /// the shipped knowledge base for the rule analyzer, the rule planner and the hybrid's rule
    /// phase; a rule with a shipped id replaces it. Relative paths start at this file's directory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<PathBuf>,
    #[serde(default)]
    /// When to stop.
    pub budget: BudgetConfig,
    /// Telemetry sources read each iteration.
    #[serde(default = "default_telemetry")]
    pub telemetry: Vec<TelemetryKind>,
    /// Write each iteration's config as this target's deployable file (for the real engine)
    /// while measuring on `deployer`: a preview of what a real campaign would apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub render_as: Option<RenderTarget>,
    /// Candidates per round, deployed and measured side by side (each its own deployment,
    /// endpoint and telemetry window); 1 is the serial loop.
    #[serde(default = "default_parallel")]
    pub parallel: u32,
    /// Environment per slot of a round (slot `i` gets entry `i` modulo their number), to pin
    /// side-by-side engines to their own devices, e.g. `[{CUDA_VISIBLE_DEVICES: "0"}, {CUDA_VISIBLE_DEVICES: "1"}]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slot_env: Vec<std::collections::BTreeMap<String, String>>,
    /// Generate the load beside the service instead of from this machine (when this machine would
    /// be the bottleneck: many slots, high rates): each plan runs as `autodebug bench` next to the
    /// engine (a child process for `simulator`/`local`, a step of the service's job for `slurm`),
    /// and its report is read back; its window is still the one telemetry is fetched for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bench_beside: Option<BenchBesideConfig>,
    /// The file this configuration was read from, for error messages.
    #[serde(skip)]
    pub origin: Option<PathBuf>,
}

/// How benchmarks run beside the service (`bench_beside:`). The endpoint's token reaches them in
/// their environment (`AUTODEBUG_BENCH_TOKEN`), never on their command line.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BenchBesideConfig {
    /// The `autodebug` binary as the service's machine sees it (on a cluster: a path on the shared
    /// file system; on dstack: inside the service's container, e.g. on a volume it mounts);
    /// default: this very binary.
    #[serde(default)]
    pub program: Option<PathBuf>,
    /// Seconds a run may take before it is stopped (and its job step cancelled); default: the
    /// longest its plan can take with every request running into its timeout, plus 120.
    #[serde(default)]
    pub timeout_s: Option<f64>,
}

impl BenchBesideConfig {
    /// What serde cannot check; the reason says which field and what to do.
    fn check(&self, deployer: &DeployerConfig) -> std::result::Result<(), String> {
        if let Some(t) = self.timeout_s
            && !(t.is_finite() && t > 0.0)
        {
            return Err(format!("`timeout_s` is {t}; give a positive number of seconds"));
        }
        match deployer {
            DeployerConfig::Simulator { .. }
            | DeployerConfig::Local { .. }
            | DeployerConfig::Slurm { .. }
            | DeployerConfig::Dstack { .. } => Ok(()),
            DeployerConfig::Kubernetes { .. } => Err(
                "the kubernetes deployer cannot run a benchmark beside its service yet; use simulator, local, slurm or dstack, or remove `bench_beside`"
                    .into(),
            ),
        }
    }
}

/// A platform whose deployable file the trail can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum RenderTarget {
    /// A shell script running the real engine command.
    Local,
    /// An sbatch script.
    Slurm,
    /// A dstack service configuration.
    Dstack,
    /// Kubernetes manifests (Deployment + Service), multi-document YAML.
    Kubernetes,
}

fn default_parallel() -> u32 {
    1
}

fn default_sessions_dir() -> PathBuf {
    PathBuf::from("sessions")
}

fn default_telemetry() -> Vec<TelemetryKind> {
    vec![TelemetryKind::Prometheus, TelemetryKind::Graphsignal, TelemetryKind::Logs]
}

/// Where and how the service is deployed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DeployerConfig {
    /// The built-in simulated engine, run as a local child process (`autodebug sim serve`).
    Simulator {
        #[serde(default = "default_ready_timeout")]
        /// Seconds to wait for the service to report healthy.
        ready_timeout_s: f64,
    },
    /// Any engine command run locally; `args` may use `{port}`, `{host}`, `{model}`, `{flags}`.
    Local {
        /// The engine executable.
        program: PathBuf,
        #[serde(default)]
        /// Arguments; `{flags}` expands to the iteration's launch flags as separate arguments.
        args: Vec<String>,
        #[serde(default = "default_health_path")]
        /// Path polled until it answers 200.
        health_path: String,
        #[serde(default = "default_ready_timeout")]
        /// Seconds to wait for the service to report healthy.
        ready_timeout_s: f64,
    },
    /// A dstack service through the dstack server's REST API; server, project and token come from
    /// `~/.dstack/config.yml` or `DSTACK_SERVER_URL`, `DSTACK_TOKEN`, `DSTACK_PROJECT`.
    Dstack {
        /// Your own dstack service YAML: kept intact except for the knobs a plan changes. A relative
        /// path is read from the configuration file's folder.
        #[serde(default)]
        base_file: Option<PathBuf>,
        /// Seconds to wait for the run to be provisioned and healthy.
        #[serde(default = "default_cloud_ready_timeout")]
        ready_timeout_s: f64,
        /// The dstack CLI, used only by `bench_beside` to reach the run's container
        /// (`dstack attach`, then `ssh`); default `dstack` on PATH.
        #[serde(default)]
        cli: Option<PathBuf>,
    },
    /// A Slurm batch job running the engine (`sbatch`, `scontrol`, `scancel` on PATH); the job's node
    /// must be reachable from here and its output directory shared.
    Slurm {
        /// The engine executable on the node (default: the engine's usual launcher).
        #[serde(default)]
        program: Option<PathBuf>,
        /// Argument templates, as for `local` (default: the engine's usual command line).
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        partition: Option<String>,
        /// `--time` of each job.
        #[serde(default)]
        time_limit: Option<String>,
        #[serde(default)]
        cpus_per_task: Option<u32>,
        /// `--mem`, e.g. `64G`.
        #[serde(default)]
        mem: Option<String>,
        /// Ask for the service's GPUs with `--gres`.
        #[serde(default = "default_true")]
        gres: bool,
        /// Where job scripts and output go (must be visible from the nodes).
        #[serde(default)]
        output_dir: Option<PathBuf>,
        /// The address the engine listens on, on the node (default `0.0.0.0`).
        #[serde(default)]
        bind_host: Option<String>,
        /// How to reach the node from here (default: the node name Slurm reports).
        #[serde(default)]
        connect_host: Option<String>,
        #[serde(default = "default_cloud_ready_timeout")]
        ready_timeout_s: f64,
    },
    /// A Kubernetes Deployment + Service by server-side apply (kubeconfig found the usual way).
    Kubernetes {
        #[serde(default)]
        namespace: Option<String>,
        /// Your own manifests (multi-document YAML): kept intact except for the planned knobs. A
        /// relative path is read from the configuration file's folder.
        #[serde(default)]
        base_file: Option<PathBuf>,
        /// How to reach the service from here, e.g. `http://localhost:8000` behind a port-forward
        /// (default: the Service's cluster DNS name).
        #[serde(default)]
        base_url: Option<String>,
        #[serde(default = "default_cloud_ready_timeout")]
        ready_timeout_s: f64,
    },
}

fn default_true() -> bool {
    true
}

fn default_cloud_ready_timeout() -> f64 {
    1800.0
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
            DeployerConfig::Simulator { ready_timeout_s }
            | DeployerConfig::Local { ready_timeout_s, .. }
            | DeployerConfig::Dstack { ready_timeout_s, .. }
            | DeployerConfig::Slurm { ready_timeout_s, .. }
            | DeployerConfig::Kubernetes { ready_timeout_s, .. } => *ready_timeout_s,
        };
        Duration::from_secs_f64(s.max(1.0))
    }
}

/// The baseline service configuration.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    #[serde(default = "default_service_name")]
    pub name: String,
    #[schemars(schema_with = "crate::cmd::config_reference::engine_schema")]
    pub engine: EngineKind,
    pub model: String,
    /// `NAME[:MEMORY]:COUNT`, e.g. `H100:1`.
    #[serde(default)]
    pub gpu: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
    /// Engine launch flags (`--flag: value`, `--switch: null`).
    #[serde(default)]
    #[schemars(schema_with = "crate::cmd::config_reference::flags_schema")]
    pub flags: LaunchFlags,
    /// The engine's environment that is not tuned (`HF_HUB_OFFLINE: "1"`); variables that are
    /// knobs (`VLLM_CPU_KVCACHE_SPACE`) go under `flags` so a plan can change them. Values of
    /// credential-like names are never written to the trail or the store.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
}

fn default_service_name() -> String {
    "autodebug".to_string()
}

/// One benchmark plan.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BenchConfig {
    /// Plan name; metrics are named `<name>.<metric>`.
    pub name: String,
    /// Prompt length in tokens.
    pub prompt_tokens: u32,
    /// Completion length in tokens.
    pub output_tokens: u32,
    #[serde(default)]
    /// Tokens every prompt shares at its start (a system prompt), for prefix-cache effects.
    pub shared_prefix_tokens: u32,
    #[serde(default)]
    /// Send the same prompt every time.
    pub repeat_prompt: bool,
    /// 1 = sequential.
    #[serde(default = "one")]
    pub concurrency: usize,
    /// Open-loop Poisson arrivals at this rate instead of a closed loop.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Measured requests.
    pub requests: usize,
    #[serde(default)]
    /// Requests sent first and not measured.
    pub warmup: usize,
}

fn one() -> usize {
    1
}

/// What to optimize.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveConfig {
    #[serde(default)]
    /// Metric to minimize, e.g. `chat.e2e.mean`; set this or `maximize`.
    pub minimize: Option<String>,
    #[serde(default)]
    /// Metric to maximize, e.g. `concurrent.output_throughput`. `capacity` (the primary plan) or
    /// `<plan>.capacity` makes that plan a capacity search: configurations are ranked by the
    /// highest request rate (req/s) at which `slo` holds.
    pub maximize: Option<String>,
    /// e.g. `ttft.p99 <= 200ms`, `error_rate == 0`.
    #[serde(default)]
    pub constraints: Vec<String>,
    /// With `maximize: capacity`: the SLO every rate is held to, in the syntax of `constraints`:
    /// `ttft.p99 <= 2000ms` (required), `tpot.p99 <= 100ms`, `error_rate <= 1%` (default 1%).
    /// A configuration that breaks it even at `capacity_search.min_rate` has capacity 0 and is
    /// infeasible.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slo: Vec<String>,
    /// With `maximize: capacity`: how the search steps (defaults shown per field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_search: Option<CapacitySearchConfig>,
}

/// How the capacity search of `maximize: capacity` steps: doubling or halving from `start_rate`
/// until the SLO both holds and breaks, then bisecting; an unset field keeps the default shown.
/// The capacity plan's workload and warmup are kept; its `concurrency` and `requests` give way to
/// the search's open-loop steps.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CapacitySearchConfig {
    /// First rate tried, req/s (default: the plan's `rate` when it has one, else 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_rate: Option<f64>,
    /// Lowest rate tried, req/s (default 0.05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rate: Option<f64>,
    /// Highest rate tried, req/s (default 1000); a configuration that holds the SLO there has
    /// capacity `max_rate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rate: Option<f64>,
    /// Measured seconds of a step that runs to its end (default 20); an overloaded step ends as
    /// soon as its p99 cannot hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_s: Option<f64>,
    /// Stop once the lowest rate that broke the SLO is within this share above the highest that
    /// held it (default 0.05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// Most trials pooled at one rate before its verdict is taken from the point estimate
    /// (default 3): a rate holds or breaks once a binomial test on its pooled requests decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boundary_trials: Option<u32>,
    /// Confidence of a decided verdict (default 0.95), between 0.5 and 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Most steps per search (default 40).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u32>,
}

/// The longest capacity step accepted, s: a step is one measurement of a rate, and an hour of
/// it is a typo, not a plan.
const MAX_CAPACITY_STEP_S: f64 = 3600.0;

/// The metrics a capacity search can hold every rate to, and what each bounds.
const SLO_METRICS: [&str; 3] = ["ttft.p99", "tpot.p99", "error_rate"];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum PlannerKind {
    /// Rules while they fire, then Bayesian (TPE) search, then repeated trials of the champion
    /// with a DRAFT / VERDICT statement.
    #[default]
    Hybrid,
    /// The built-in rule planner: each change follows from a finding and cites its signals.
    Rules,
    /// Constrained, failure-aware TPE search over the catalog's knobs.
    Bayes,
    /// Every combination of the catalog's search candidates, in order.
    Grid,
    /// Uniform random search (a yardstick).
    Random,
    /// One knob at a time from the champion (coordinate descent).
    Oat,
    /// A language model reads the analysis and proposes a JSON plan, checked against the catalog;
    /// a rejected plan is recorded with its reason and the `llm.fallback` planner plans instead.
    Llm,
    /// The hybrid for 3 real iterations, then a twin fitted to them screens the whole space in
    /// virtual time and its best predicted configuration is deployed; refitted after every
    /// measurement, and distrusted (the hybrid plans) while it misses the latest runs by more than 20%.
    Twin,
}

impl PlannerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PlannerKind::Hybrid => "hybrid",
            PlannerKind::Rules => "rules",
            PlannerKind::Bayes => "bayes",
            PlannerKind::Grid => "grid",
            PlannerKind::Random => "random",
            PlannerKind::Oat => "oat",
            PlannerKind::Llm => "llm",
            PlannerKind::Twin => "twin",
        }
    }
}

/// The API dialect of the `llm` planner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LlmProvider {
    /// `POST {base_url}/v1/chat/completions` with a bearer key: OpenAI, llama-server, vLLM, SGLang.
    #[default]
    Openai,
    /// `POST {base_url}/v1/messages`, the Anthropic Messages API.
    Anthropic,
}

impl From<LlmProvider> for Provider {
    fn from(provider: LlmProvider) -> Provider {
        match provider {
            LlmProvider::Openai => Provider::OpenAi,
            LlmProvider::Anthropic => Provider::Anthropic,
        }
    }
}

/// The `llm` planner's model, key and limits. The key itself never goes in this file: name the
/// environment variable that holds it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LlmSection {
    #[serde(default)]
    pub provider: LlmProvider,
    /// Base URL without `/v1`; default `https://api.openai.com` or `https://api.anthropic.com`.
    /// A local OpenAI-compatible server: `http://127.0.0.1:8080`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Model name sent with each request; default `gpt-4o-mini` or `claude-sonnet-4-5`.
    #[serde(default)]
    pub model: Option<String>,
    /// Environment variable holding the API key; default `OPENAI_API_KEY` or `ANTHROPIC_API_KEY`.
    /// `""` sends no key (a local server that needs none).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Calls, tokens and dollars the planner may spend in one session.
    #[serde(default)]
    pub budget: LlmBudgetConfig,
    /// Seconds per request, connect to last byte.
    #[serde(default = "default_llm_timeout")]
    pub timeout_s: f64,
    /// The planner (any but `llm`) that plans whenever the model's plan is rejected, a call fails
    /// or the budget is spent.
    #[serde(default = "default_llm_fallback")]
    pub fallback: PlannerKind,
}

fn default_llm_timeout() -> f64 {
    60.0
}

fn default_llm_fallback() -> PlannerKind {
    PlannerKind::Rules
}

/// Limits of the `llm` planner; an unset field keeps the default shown.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LlmBudgetConfig {
    /// Model calls per session (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_calls: Option<u32>,
    /// Completion tokens asked for per call, `max_tokens` (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens_per_call: Option<u32>,
    /// Dollars the session may spend on planning (default 2.0); a call whose worst case would
    /// pass it is not made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    /// Price of 1000 prompt tokens in dollars (default 0.003).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_1k_input_tokens: Option<f64>,
    /// Price of 1000 completion tokens in dollars (default 0.015).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_1k_output_tokens: Option<f64>,
}

impl LlmSection {
    /// What serde cannot check; the reason says which field and what to do.
    fn check(&self) -> std::result::Result<(), String> {
        if self.fallback == PlannerKind::Llm {
            return Err(
                "`fallback: llm` would ask the same model again; pick rules, hybrid, bayes, grid, random or oat".into(),
            );
        }
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            return Err(format!("`timeout_s` is {}; give a positive number of seconds", self.timeout_s));
        }
        if let Some(url) = &self.base_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!("`base_url` {url} is not an http(s) URL; write e.g. http://127.0.0.1:8080"));
        }
        if let Some(cost) = self.budget.max_cost_usd
            && !(cost.is_finite() && cost >= 0.0)
        {
            return Err(format!("`budget.max_cost_usd` is {cost}; give a non-negative number of dollars"));
        }
        Ok(())
    }
}

impl LlmBudgetConfig {
    pub fn budget(&self) -> LlmBudget {
        let default = LlmBudget::default();
        LlmBudget {
            max_tokens_per_call: self.max_tokens_per_call.unwrap_or(default.max_tokens_per_call),
            max_calls: self.max_calls.unwrap_or(default.max_calls),
            max_cost_usd: self.max_cost_usd.unwrap_or(default.max_cost_usd),
            usd_per_1k_input_tokens: self.usd_per_1k_input_tokens.unwrap_or(default.usd_per_1k_input_tokens),
            usd_per_1k_output_tokens: self.usd_per_1k_output_tokens.unwrap_or(default.usd_per_1k_output_tokens),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TelemetryKind {
    /// Scrape the engine's `/metrics` at the window's start and end.
    Prometheus,
    /// A Graphsignal debug context; for the simulator, served by the engine itself.
    Graphsignal,
    /// Parse the engine's log lines.
    Logs,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    #[serde(default = "default_iterations")]
    /// Iterations to run, the baseline included.
    pub iterations: u32,
    #[serde(default)]
    /// Stop after this many seconds (checked between steps).
    pub wall_time_s: Option<f64>,
    #[serde(default)]
    /// After the search, re-run the baseline and the champion this many times each, interleaved,
    /// and judge the champion on those trials (3 gives p = 0.05 when every trial is better).
    pub confirm_trials: u32,
}

fn default_planner_seed() -> u64 {
    0x5EED
}

fn default_iterations() -> u32 {
    5
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig { iterations: default_iterations(), wall_time_s: None, confirm_trials: 0 }
    }
}

impl RunConfig {
    /// Reads and checks a config file; errors name the file and the field.
    pub fn load(path: &Path) -> Result<RunConfig> {
        let text = read_config_text(path)?;
        let mut config: RunConfig = serde_yaml::from_str(&text).map_err(|e| {
            let at = e.location().map(|l| format!(":{}:{}", l.line(), l.column())).unwrap_or_default();
            Error::config(format!("{}{at}", path.display()), e.to_string())
        })?;
        // Paths in the file may start with `~/`, as people write them.
        if let DeployerConfig::Local { program, .. } | DeployerConfig::Dstack { cli: Some(program), .. } =
            &mut config.deployer
        {
            *program = PathBuf::from(expand_home(&program.to_string_lossy()));
        }
        let dir = path.parent().unwrap_or(Path::new(""));
        // A base file sits next to the configuration that names it, as `rules` files do.
        if let DeployerConfig::Dstack { base_file: Some(f), .. }
        | DeployerConfig::Kubernetes { base_file: Some(f), .. } = &mut config.deployer
        {
            let expanded = PathBuf::from(expand_home(&f.to_string_lossy()));
            *f = if expanded.is_relative() { dir.join(expanded) } else { expanded };
        }
        config.service.model = expand_home(&config.service.model);
        config.sessions_dir = PathBuf::from(expand_home(&config.sessions_dir.to_string_lossy()));
        // Its own errors name the file and the field (`objective.slo`, ...).
        config.origin = Some(path.to_path_buf());
        config.capacity_goal()?;
        config.objective().map_err(|e| Error::config(format!("{} objective", path.display()), e.to_string()))?;
        for rules in &mut config.rules {
            let expanded = PathBuf::from(expand_home(&rules.to_string_lossy()));
            *rules = if expanded.is_relative() { dir.join(expanded) } else { expanded };
        }
        if let Some(llm) = &config.llm {
            llm.check().map_err(|why| Error::config(format!("{} llm", path.display()), why))?;
        }
        if let Some(beside) = &mut config.bench_beside {
            beside
                .check(&config.deployer)
                .map_err(|why| Error::config(format!("{} bench_beside", path.display()), why))?;
            if let Some(program) = &mut beside.program {
                *program = PathBuf::from(expand_home(&program.to_string_lossy()));
            }
        }
        config.origin = Some(path.to_path_buf());
        if config.bench.is_empty() {
            return Err(Error::config(format!("{} bench", path.display()), "add at least one benchmark plan"));
        }
        Ok(config)
    }

    /// The configuration `autodebug demo` runs: the published autodebug baseline (Qwen1.5-0.5B-Chat,
    /// SGLang defaults, 1x H100) on the simulator, with the original's sequential repeated-prompt
    /// test (31 prompt / 150 completion tokens) and a concurrent one.
    pub fn demo(out: &Path, iterations: u32) -> RunConfig {
        let concurrent = BenchConfig {
            name: "concurrent".into(),
            prompt_tokens: 256,
            output_tokens: 128,
            shared_prefix_tokens: 0,
            repeat_prompt: false,
            concurrency: 8,
            rate: None,
            requests: 32,
            warmup: 0,
        };
        let mut constraints = vec!["chat.error_rate == 0".to_string(), "concurrent.error_rate == 0".to_string()];
        constraints.extend(
            demo_concurrent_e2e_bound_ms(&concurrent).map(|bound| format!("concurrent.e2e.mean <= {bound:.1}ms")),
        );
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
                env: Default::default(),
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
                concurrent,
            ],
            objective: ObjectiveConfig {
                minimize: Some("chat.e2e.mean".into()),
                maximize: None,
                constraints,
                slo: Vec::new(),
                capacity_search: None,
            },
            planner: PlannerKind::Rules,
            seed: default_planner_seed(),
            llm: None,
            rules: Vec::new(),
            budget: BudgetConfig { iterations, ..Default::default() },
            telemetry: default_telemetry(),
            render_as: None,
            parallel: 1,
            slot_env: Vec::new(),
            bench_beside: None,
            origin: None,
        }
    }

    /// Where errors about this configuration point: its file, or `autodebug.yaml` for a built one.
    fn location(&self, field: &str) -> String {
        let file = self.origin.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "autodebug.yaml".into());
        format!("{file} {field}")
    }

    /// The shipped rules plus the user's `rules` files, in order; errors name the file and the rule.
    pub fn knowledge_base(&self) -> Result<KnowledgeBase> {
        let mut kb = KnowledgeBase::builtin();
        for path in &self.rules {
            let user = KnowledgeBase::load(path).map_err(|e| match e {
                Error::Io { path, source } => Error::config(
                    self.location("rules"),
                    format!("cannot read the rules file {}: {source}; fix the path (relative paths start at the config file's directory)", path.display()),
                ),
                other => other,
            })?;
            kb.extend(user);
        }
        Ok(kb)
    }

    /// The `llm` planner's client configuration, with the API key read from the environment now.
    pub fn llm_config(&self) -> Result<LlmConfig> {
        let section = self.llm.clone().unwrap_or_else(|| LlmSection {
            timeout_s: default_llm_timeout(),
            fallback: default_llm_fallback(),
            ..LlmSection::default()
        });
        section.check().map_err(|why| Error::config(self.location("llm"), why))?;
        let provider = Provider::from(section.provider);
        let base_url = section.base_url.clone().unwrap_or_else(|| provider.default_base_url().to_string());
        let model = section.model.clone().unwrap_or_else(|| provider.default_model().to_string());
        let mut config = LlmConfig::new(provider, base_url, model)
            .with_budget(section.budget.budget())
            .with_timeout(Duration::from_secs_f64(section.timeout_s));
        let key_env = section.api_key_env.clone().unwrap_or_else(|| provider.default_key_env().to_string());
        let key_env = key_env.trim();
        if !key_env.is_empty() {
            let key = Secret::from_env(key_env).ok_or_else(|| {
                Error::config(
                    self.location("llm.api_key_env"),
                    format!(
                        "the environment variable {key_env} holding the API key for {} is not set; export {key_env}=<your key>, or name another variable in `llm.api_key_env` (\"\" for a server that needs no key)",
                        config.url()
                    ),
                )
            })?;
            config = config.with_key(key);
        }
        Ok(config)
    }

    /// The `llm` planner's fallback (the rule planner unless the file names another).
    pub fn llm_fallback(&self) -> PlannerKind {
        self.llm.as_ref().map(|l| l.fallback).unwrap_or_else(default_llm_fallback)
    }

    /// The objective; with `maximize: capacity` it also holds `capacity >= min_rate`, so a
    /// configuration that broke the SLO at every rate (capacity 0) is infeasible: any configuration
    /// that holds it at some rate beats it, and a 0 never becomes the baseline every later
    /// improvement is measured against as a percentage.
    pub fn objective(&self) -> Result<Objective> {
        let mut objective = match (&self.objective.minimize, &self.objective.maximize) {
            (Some(m), None) => Objective::minimize(m.clone()),
            (None, Some(m)) => Objective::maximize(m.clone()),
            _ => return Err(Error::config("objective", "set exactly one of `minimize` or `maximize`")),
        };
        if let Some((_, goal)) = self.capacity_goal()? {
            let floor = Constraint { metric: objective.metric.clone(), op: Comparison::AtLeast, bound: goal.min_rate };
            objective = objective.with_constraint(floor);
        }
        for text in &self.objective.constraints {
            objective = objective.with_constraint(text.parse::<Constraint>()?);
        }
        Ok(objective)
    }

    /// With `maximize: capacity` (the primary plan) or `maximize: <plan>.capacity`: the index of
    /// the plan that searches for its capacity, and the goal built from `objective.slo` and
    /// `objective.capacity_search`. `None` for any other objective. Errors name the field.
    pub fn capacity_goal(&self) -> Result<Option<(usize, CapacityGoal)>> {
        let objective = &self.objective;
        let names: Vec<&str> = self.bench.iter().map(|b| b.name.as_str()).collect();
        let capacity_plan = |metric: &str| -> Result<Option<usize>> {
            if metric == CAPACITY_METRIC {
                return Ok(Some(0));
            }
            let Some(plan) = metric.strip_suffix(CAPACITY_METRIC).and_then(|p| p.strip_suffix('.')) else {
                return Ok(None);
            };
            match names.iter().position(|n| *n == plan) {
                Some(index) => Ok(Some(index)),
                None => Err(Error::config(
                    self.location("objective.maximize"),
                    format!(
                        "`{metric}` names no bench plan `{plan}`; the plans are {}: write `capacity` for the first or \
                         `<plan>.capacity`",
                        quoted_list(&names)
                    ),
                )),
            }
        };
        if let Some(metric) = &objective.minimize
            && capacity_plan(metric).ok().flatten().is_some()
        {
            return Err(Error::config(
                self.location("objective.minimize"),
                format!("`{metric}` is a rate that improves upward; write `maximize: {metric}`"),
            ));
        }
        let target = match &objective.maximize {
            Some(metric) => capacity_plan(metric)?,
            None => None,
        };
        let Some(index) = target else {
            if !objective.slo.is_empty() {
                return Err(Error::config(
                    self.location("objective.slo"),
                    "is read only with `maximize: capacity` (or `<plan>.capacity`); bounds on any other objective \
                     go in `constraints`",
                ));
            }
            if objective.capacity_search.is_some() {
                return Err(Error::config(
                    self.location("objective.capacity_search"),
                    "is read only with `maximize: capacity` (or `<plan>.capacity`); remove it or maximize capacity",
                ));
            }
            return Ok(None);
        };
        let Some(plan) = self.bench.get(index) else {
            // `load` refuses a file without plans; a configuration built in code may have none.
            return Err(Error::config(self.location("bench"), "add the benchmark plan whose capacity is maximized"));
        };
        if objective.slo.is_empty() {
            return Err(Error::config(
                self.location("objective.slo"),
                "`maximize: capacity` needs the SLO every rate is held to, e.g. `slo: [\"ttft.p99 <= 2000ms\"]`",
            ));
        }
        let mut goal = self.slo_goal()?;
        let search = objective.capacity_search.clone().unwrap_or_default();
        let field = |name: &str| self.location(&format!("objective.capacity_search.{name}"));
        let positive = |name: &str, value: Option<f64>| -> Result<Option<f64>> {
            match value {
                Some(v) if !(v.is_finite() && v > 0.0) => {
                    Err(Error::config(field(name), format!("is {v}; give a positive number")))
                }
                other => Ok(other),
            }
        };
        if let Some(rate) = positive("start_rate", search.start_rate)?.or(plan.rate) {
            goal.start_rate = rate;
        }
        if let Some(rate) = positive("min_rate", search.min_rate)? {
            goal.min_rate = rate;
        }
        if let Some(rate) = positive("max_rate", search.max_rate)? {
            goal.max_rate = rate;
        }
        if let Some(step_s) = positive("step_s", search.step_s)? {
            if !(0.001..=MAX_CAPACITY_STEP_S).contains(&step_s) {
                return Err(Error::config(
                    field("step_s"),
                    format!(
                        "is {step_s}; give the seconds one rate is measured for, between 0.001 and {MAX_CAPACITY_STEP_S}"
                    ),
                ));
            }
            goal.step_ms = (step_s * 1000.0).round() as u64;
        }
        if let Some(tolerance) = search.tolerance {
            goal.tolerance = tolerance;
        }
        if let Some(trials) = search.boundary_trials {
            goal.boundary_trials = trials;
        }
        if let Some(steps) = search.max_steps {
            goal.max_steps = steps;
        }
        if let Some(confidence) = search.confidence {
            goal.confidence = confidence;
        }
        // The same checks the benchmarker makes before the first step, made before any deploy.
        autodebug_bench::CapacitySearch::for_goal(self.bench_plans().swap_remove(index), &goal)
            .validate()
            .map_err(|e| Error::config(self.location("objective.capacity_search"), e.to_string()))?;
        Ok(Some((index, goal)))
    }

    /// `objective.slo` read into a goal with the default search settings.
    fn slo_goal(&self) -> Result<CapacityGoal> {
        let at = || self.location("objective.slo");
        let mut bounds: Vec<(String, f64)> = Vec::new();
        for text in &self.objective.slo {
            let constraint: Constraint = text.parse().map_err(|e| match e {
                Error::Config { message, .. } => Error::config(at(), message),
                other => other,
            })?;
            let metric = constraint.metric.as_str();
            if !SLO_METRICS.contains(&metric) {
                return Err(Error::config(
                    at(),
                    format!(
                        "`{text}`: a capacity search can hold each rate to {} (of the capacity plan's own requests, \
                         without a plan prefix); other bounds go in `constraints`",
                        quoted_list(&SLO_METRICS)
                    ),
                ));
            }
            if constraint.op != Comparison::AtMost {
                return Err(Error::config(
                    at(),
                    format!("`{text}`: an SLO is an upper bound; write `{metric} <= VALUE`"),
                ));
            }
            let valid = match metric {
                "error_rate" => (0.0..1.0).contains(&constraint.bound),
                _ => constraint.bound.is_finite() && constraint.bound > 0.0,
            };
            if !valid {
                let expected =
                    if metric == "error_rate" { "a share in [0, 1), e.g. 1%" } else { "a positive time, e.g. 2000ms" };
                return Err(Error::config(at(), format!("`{text}`: the bound must be {expected}")));
            }
            if bounds.iter().any(|(m, _)| m == metric) {
                return Err(Error::config(at(), format!("`{metric}` is bounded twice; keep one bound")));
            }
            bounds.push((metric.to_string(), constraint.bound));
        }
        let bound = |metric: &str| bounds.iter().find(|(m, _)| m == metric).map(|(_, b)| *b);
        let Some(ttft) = bound("ttft.p99") else {
            return Err(Error::config(
                at(),
                "bounds no `ttft.p99`, which every capacity search holds each rate to; add e.g. `ttft.p99 <= 2000ms`",
            ));
        };
        let mut goal = CapacityGoal::ttft_p99_ms(ttft);
        goal.tpot_p99_ms = bound("tpot.p99");
        if let Some(error_rate) = bound("error_rate") {
            goal.max_error_rate = error_rate;
        }
        Ok(goal)
    }

    /// The configuration the session starts from: the user's base file when the deployer names
    /// one (its flags, image, resources and the untouched rest), then `service` on top.
    pub fn baseline(&self) -> Result<ServiceSpec> {
        let s = &self.service;
        let from_file = match &self.deployer {
            DeployerConfig::Dstack { base_file: Some(path), .. } => Some(DstackDeployer::base_spec_from_file(path)?),
            DeployerConfig::Kubernetes { base_file: Some(path), .. } => {
                Some(KubernetesDeployer::base_spec_from_file(path)?)
            }
            _ => None,
        };
        let mut spec = ServiceSpec::new(s.name.clone(), s.engine, s.model.clone());
        if let Some(base) = from_file {
            spec.flags = base.flags;
            spec.image = base.image;
            spec.resources = base.resources;
            spec.env = base.env;
            spec.base = base.base;
        }
        if s.image.is_some() {
            spec.image = s.image.clone();
        }
        if s.gpu.is_some() {
            spec.resources.gpu = s.gpu.clone();
        }
        for (name, value) in s.flags.iter() {
            spec.flags.set(name, value);
        }
        for (name, value) in &s.env {
            match spec.env.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = value.clone(),
                None => spec.env.push((name.clone(), value.clone())),
            }
        }
        Ok(spec)
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

    /// The flags the deployer's command template passes on every launch (`--max-model-len 1024`
    /// in a local `args`), those with a `{placeholder}` left out: the catalog checks the engine's
    /// startup constraints against them where a plan does not set the flag.
    pub fn template_flags(&self) -> LaunchFlags {
        let args = match &self.deployer {
            DeployerConfig::Local { args, .. } | DeployerConfig::Slurm { args, .. } => args,
            _ => return LaunchFlags::default(),
        };
        let mut flags = LaunchFlags::default();
        let mut tokens = args.iter().peekable();
        while let Some(token) = tokens.next() {
            if !token.starts_with("--") {
                continue;
            }
            // `{flags}` expands to the plan's flags, so the flag before it is a switch.
            let value = tokens.next_if(|next| !next.starts_with("--") && *next != "{flags}");
            if token.contains('{') || value.is_some_and(|v| v.contains('{')) {
                continue;
            }
            flags.set(token, value.cloned());
        }
        flags
    }

    /// The plans the loop runs: [`RunConfig::bench_plans`], the one whose capacity is maximized
    /// with its [`CapacityGoal`].
    pub fn loop_bench_plans(&self) -> Result<Vec<BenchPlan>> {
        let mut plans = self.bench_plans();
        if let Some((index, goal)) = self.capacity_goal()?
            && let Some(plan) = plans.get_mut(index)
        {
            plan.capacity = Some(goal);
        }
        Ok(plans)
    }

    pub fn session_config(&self, name: String, iterations: Option<u32>) -> Result<SessionConfig> {
        if self.parallel == 0 {
            return Err(Error::config(self.location("parallel"), "must be at least 1 (1 is the serial loop)"));
        }
        Ok(SessionConfig {
            name,
            objective: self.objective()?,
            bench: self.loop_bench_plans()?,
            max_iterations: iterations.unwrap_or(self.budget.iterations),
            max_wall: self.budget.wall_time_s.map(|s| Duration::from_secs_f64(s.max(0.0))),
            ready_timeout: self.deployer.ready_timeout(),
            sessions_dir: self.sessions_dir.clone(),
            confirm_trials: self.budget.confirm_trials,
        })
    }
}

/// The largest configuration file read. A real one is a few KB; a path that names something else
/// (a log, a model file, `/dev/zero`) is refused after this many bytes instead of read whole.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The most flow brackets (`[`, `{`) a configuration file may hold. libyaml parses nested flow
/// collections in time quadratic in their depth (100 000 `{a: ` take minutes, long before
/// serde_yaml's depth limit refuses them), and a real configuration has a few dozen.
const MAX_CONFIG_BRACKETS: usize = 4096;

/// The file's text, at most [`MAX_CONFIG_BYTES`] of it and [`MAX_CONFIG_BRACKETS`] brackets.
fn read_config_text(path: &Path) -> Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(Error::config(
            path.display().to_string(),
            format!("larger than {MAX_CONFIG_BYTES} bytes; a configuration is a few KB (is this the right file?)"),
        ));
    }
    let brackets = bytes.iter().filter(|&&b| b == b'[' || b == b'{').count();
    if brackets > MAX_CONFIG_BRACKETS {
        return Err(Error::config(
            path.display().to_string(),
            format!(
                "{brackets} `[`/`{{` brackets, more than {MAX_CONFIG_BRACKETS}; a configuration has a few dozen (is this the right file?)"
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|e| Error::io(path, std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// `a`, `b` and `c` as backquoted names for an error message.
fn quoted_list(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// `~/x` → `$HOME/x`; anything else unchanged.
pub fn expand_home(text: &str) -> String {
    match (text.strip_prefix("~/"), std::env::var("HOME")) {
        (Some(rest), Ok(home)) if !home.is_empty() => format!("{}/{rest}", home.trim_end_matches('/')),
        _ => text.to_string(),
    }
}

/// How much slower than the baseline the demo lets its concurrent plan get.
const DEMO_CONCURRENT_SLACK: f64 = 1.2;

/// The demo minimizes the sequential chat's latency; without a guard the champion could buy it
/// with a much slower concurrent workload (more decode steps per round trip hold new prefills
/// back). The objective language has absolute bounds only, so the bound comes from the baseline
/// before the session starts: the simulator's own prediction, in virtual time, of the mean e2e
/// the baseline (SGLang defaults) serves the concurrent plan, times 1.2. The demo deploys that
/// very model in real time, so its measured baseline lands near the prediction.
fn demo_concurrent_e2e_bound_ms(plan: &BenchConfig) -> Option<f64> {
    use autodebug_sim::{SimConfig, SimWorkload, simulate};
    let config = SimConfig::from_args(EngineKind::Sglang, "H100", "Qwen/Qwen1.5-0.5B-Chat", &[]).ok()?;
    let workload = SimWorkload::sequential(plan.requests, plan.prompt_tokens, plan.output_tokens)
        .with_concurrency(plan.concurrency);
    let result = simulate(&config, &workload, 0);
    let mean = autodebug_sim::SimResult::mean(&result.e2e_ms);
    (!result.failed && mean.is_finite()).then_some(mean * DEMO_CONCURRENT_SLACK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_bound_rules_out_a_champion_that_buys_chat_latency_with_the_concurrent_plan() {
        use autodebug_sim::{SimConfig, SimResult, SimWorkload, simulate};
        let config = RunConfig::demo(Path::new("sessions"), 4);
        let bound_text = config.objective.constraints.iter().find(|c| c.starts_with("concurrent.e2e.mean <="));
        let bound = bound_text.expect("the demo bounds the concurrent plan").parse::<Constraint>().unwrap().bound;
        // The champion of earlier builds: n-gram drafts pay on the chat plan, whose repeated
        // prompt gets the same answer each time, and cost the concurrent plan's fresh answers.
        let flags = "--num-continuous-decode-steps 16 --enable-mixed-chunk --schedule-policy lpm \
                     --speculative-algorithm NGRAM --speculative-num-draft-tokens 3 --speculative-num-steps 3";
        let args: Vec<String> = flags.split_whitespace().map(str::to_string).collect();
        let e2e = |args: &[String], plan: &BenchConfig| {
            let sim = SimConfig::from_args(EngineKind::Sglang, "H100", "Qwen/Qwen1.5-0.5B-Chat", args).unwrap();
            let mut workload = SimWorkload::sequential(plan.requests, plan.prompt_tokens, plan.output_tokens)
                .with_concurrency(plan.concurrency);
            workload.repeat_prompt = plan.repeat_prompt;
            SimResult::mean(&simulate(&sim, &workload, 1).e2e_ms)
        };
        let (chat, concurrent) = (&config.bench[0], &config.bench[1]);
        let (base_chat, spec_chat) = (e2e(&[], chat), e2e(&args, chat));
        let (base_concurrent, spec_concurrent) = (e2e(&[], concurrent), e2e(&args, concurrent));
        println!(
            "chat e2e {base_chat:.1} -> {spec_chat:.1} ms, concurrent e2e {base_concurrent:.1} -> {spec_concurrent:.1} ms (bound {bound:.1})"
        );
        assert!(spec_chat < base_chat * 0.9, "the objective alone would crown it: {spec_chat} vs {base_chat}");
        assert!(base_concurrent <= bound, "the baseline must meet its own bound: {base_concurrent} vs {bound}");
        assert!(spec_concurrent > bound, "the bound lets it through: {spec_concurrent} vs {bound}");
    }

    #[test]
    fn bench_beside_is_taken_where_the_deployer_can_run_beside_its_service() {
        let beside = BenchBesideConfig { timeout_s: Some(60.0), ..Default::default() };
        let deployer = |yaml: &str| serde_yaml::from_str::<DeployerConfig>(yaml).unwrap();
        for yaml in ["{kind: simulator}", "{kind: dstack, cli: /opt/dstack/bin/dstack}"] {
            assert_eq!(beside.check(&deployer(yaml)), Ok(()), "{yaml}");
        }
        let why = beside.check(&deployer("{kind: kubernetes}")).unwrap_err();
        assert!(why.contains("kubernetes") && why.contains("dstack"), "{why}");
        let why = BenchBesideConfig { timeout_s: Some(0.0), ..Default::default() }
            .check(&deployer("{kind: dstack}"))
            .unwrap_err();
        assert!(why.contains("timeout_s"), "{why}");
    }

    /// Loads a simulator configuration with plans `chat` and `long` and `objective` as given
    /// (YAML flow mapping), plus top-level `extra`.
    fn load_objective(objective: &str, extra: &str) -> Result<RunConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("autodebug.yaml");
        let text = format!(
            "deployer: {{kind: simulator}}\nservice: {{engine: sglang, model: m}}\nbench:\n  - {{name: chat, prompt_tokens: 8, output_tokens: 8, requests: 4}}\n  - {{name: long, prompt_tokens: 512, output_tokens: 8, requests: 4, rate: 2}}\nobjective: {objective}\n{extra}"
        );
        std::fs::write(&path, text).unwrap();
        RunConfig::load(&path)
    }

    /// The error `objective` gives; it must name the file and `field`.
    fn objective_error(objective: &str, field: &str) -> String {
        let message = load_objective(objective, "").map(|_| ()).unwrap_err().to_string();
        assert!(message.contains("autodebug.yaml") && message.contains(field), "{field} not named: {message}");
        message
    }

    #[test]
    fn maximize_capacity_gives_the_primary_plan_a_capacity_goal_from_the_slo() {
        let config = load_objective(
            r#"{maximize: capacity, slo: ["ttft.p99 <= 2s", "tpot.p99 <= 100", "error_rate <= 0.5%"], capacity_search: {min_rate: 0.5, max_rate: 40, step_s: 2.5, max_steps: 9}}"#,
            "",
        )
        .unwrap();
        let plans = config.loop_bench_plans().unwrap();
        let goal = plans[0].capacity.clone().expect("the primary plan searches");
        assert_eq!(
            goal,
            CapacityGoal {
                tpot_p99_ms: Some(100.0),
                max_error_rate: 0.005,
                min_rate: 0.5,
                max_rate: 40.0,
                step_ms: 2500,
                max_steps: 9,
                ..CapacityGoal::ttft_p99_ms(2000.0)
            }
        );
        assert_eq!(plans[1].capacity, None, "only the plan whose capacity is maximized searches");
        // A configuration that holds the SLO at no rate (capacity 0) is infeasible.
        let objective = config.objective().unwrap();
        assert_eq!(objective.metric, "capacity");
        assert_eq!(objective.direction, autodebug_core::Direction::Maximize);
        assert_eq!(objective.describe(), "maximize capacity subject to capacity >= 0.5000");
        let measured = |capacity: f64| [("capacity".to_string(), capacity)].into_iter().collect();
        assert!(!objective.is_feasible(&measured(0.0)));
        assert!(objective.is_better(&measured(3.0), &measured(2.0)));
        assert!(config.session_config("s".into(), None).unwrap().bench[0].capacity.is_some());
    }

    #[test]
    fn a_named_plan_searches_from_its_own_rate() {
        let config = load_objective(r#"{maximize: long.capacity, slo: ["ttft.p99 <= 1500ms"]}"#, "").unwrap();
        let plans = config.loop_bench_plans().unwrap();
        assert_eq!(plans[0].capacity, None);
        let goal = plans[1].capacity.clone().expect("the named plan searches");
        assert_eq!((goal.ttft_p99_ms, goal.start_rate, goal.tpot_p99_ms), (1500.0, 2.0, None));
        assert_eq!(goal.min_rate, CapacityGoal::ttft_p99_ms(1.0).min_rate);
        assert_eq!(config.objective().unwrap().constraints[0].metric, "long.capacity");
        // Any other objective has no capacity plan.
        let plain = load_objective(r#"{maximize: output_throughput}"#, "").unwrap();
        assert!(plain.loop_bench_plans().unwrap().iter().all(|p| p.capacity.is_none()));
    }

    #[test]
    fn bad_capacity_objectives_are_errors_that_name_the_field() {
        let slo = r#"slo: ["ttft.p99 <= 2000"]"#;
        let cases = [
            (format!("{{maximize: output_throughput, {slo}}}"), "objective.slo", "only with `maximize: capacity`"),
            (
                "{maximize: output_throughput, capacity_search: {max_rate: 5}}".to_string(),
                "objective.capacity_search",
                "only with",
            ),
            ("{maximize: capacity}".to_string(), "objective.slo", "needs the SLO"),
            (
                r#"{maximize: capacity, slo: ["e2e.mean <= 100"]}"#.to_string(),
                "objective.slo",
                "`ttft.p99`, `tpot.p99`, `error_rate`",
            ),
            (
                r#"{maximize: capacity, slo: ["chat.ttft.p99 <= 100"]}"#.to_string(),
                "objective.slo",
                "without a plan prefix",
            ),
            (r#"{maximize: capacity, slo: ["ttft.p99 >= 100"]}"#.to_string(), "objective.slo", "upper bound"),
            (r#"{maximize: capacity, slo: ["ttft.p99 <= fast"]}"#.to_string(), "objective.slo", "is not a number"),
            (r#"{maximize: capacity, slo: ["ttft.p99 <= 0"]}"#.to_string(), "objective.slo", "positive time"),
            (
                r#"{maximize: capacity, slo: ["ttft.p99 <= 100", "error_rate <= 100%"]}"#.to_string(),
                "objective.slo",
                "[0, 1)",
            ),
            (
                r#"{maximize: capacity, slo: ["ttft.p99 <= 100", "ttft.p99 <= 200"]}"#.to_string(),
                "objective.slo",
                "twice",
            ),
            (r#"{maximize: capacity, slo: ["tpot.p99 <= 100"]}"#.to_string(), "objective.slo", "no `ttft.p99`"),
            (format!("{{minimize: capacity, {slo}}}"), "objective.minimize", "maximize: capacity"),
            (format!("{{maximize: short.capacity, {slo}}}"), "objective.maximize", "`chat`, `long`"),
            (
                format!("{{maximize: capacity, {slo}, capacity_search: {{step_s: -1}}}}"),
                "objective.capacity_search.step_s",
                "positive",
            ),
            (
                format!("{{maximize: capacity, {slo}, capacity_search: {{step_s: 1e9}}}}"),
                "objective.capacity_search.step_s",
                "between",
            ),
            (
                format!("{{maximize: capacity, {slo}, capacity_search: {{max_rate: .nan}}}}"),
                "objective.capacity_search.max_rate",
                "positive",
            ),
            (
                format!("{{maximize: capacity, {slo}, capacity_search: {{start_rate: 50, max_rate: 10}}}}"),
                "objective.capacity_search",
                "start (50) <= max (10)",
            ),
            (
                format!("{{maximize: capacity, {slo}, capacity_search: {{tolerance: 2}}}}"),
                "objective.capacity_search",
                "tolerance",
            ),
            (
                format!("{{maximize: capacity, {slo}, capacity_search: {{max_steps: 0}}}}"),
                "objective.capacity_search",
                "max_steps",
            ),
            (
                format!("{{maximize: capacity, {slo}, capacity_search: {{confidence: 1.5}}}}"),
                "objective.capacity_search",
                "confidence",
            ),
            (
                format!("{{maximize: capacity, {slo}, capacity_search: {{steps: 3}}}}"),
                "unknown field `steps`",
                "max_steps",
            ),
        ];
        for (objective, field, says) in &cases {
            let message = objective_error(objective, field);
            assert!(message.contains(says), "{objective}: {message}");
        }
        // The twin predicts capacity (a capacity search in virtual time), so it may plan for it.
        assert!(load_objective(&format!("{{maximize: capacity, {slo}}}"), "planner: twin\n").is_ok());
    }

    /// The vLLM example fixes `--max-model-len 1024` in its command template: the catalog's
    /// constraints read it, so a token budget that covers 1024 but not the model's own 2048
    /// positions is accepted with chunked prefill off, and one below 1024 is refused.
    #[test]
    fn the_vllm_examples_template_context_is_what_the_constraints_check() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/vllm-cpu.yaml");
        let config = RunConfig::load(&path).unwrap();
        let fixed = config.template_flags();
        assert_eq!(fixed.to_args(), ["--max-model-len", "1024"], "placeholders are left out");
        let cpu = autodebug_core::Platform::Cpu { cores: 2, numa_nodes: 1, bf16: true };
        let space = autodebug_core::SearchSpace::for_platform(EngineKind::Vllm, &cpu).with_launch_flags(fixed);
        let spec = |budget: &str| {
            ServiceSpec::new("s", EngineKind::Vllm, "hub/model-without-a-local-config")
                .with_flag("--max-num-batched-tokens", Some(budget))
                .with_flag("--no-enable-chunked-prefill", None::<&str>)
        };
        assert!(space.validate(&spec("1536")).is_ok());
        let refused = space.validate(&spec("512")).unwrap_err().to_string();
        assert!(refused.contains("--max-model-len 1024"), "{refused}");
        let mut switch = config.clone();
        switch.deployer = DeployerConfig::Local {
            program: "vllm".into(),
            args: ["serve", "{model}", "--port", "{port}", "--enforce-eager", "{flags}"].map(String::from).to_vec(),
            health_path: default_health_path(),
            ready_timeout_s: default_ready_timeout(),
        };
        assert_eq!(switch.template_flags().to_args(), ["--enforce-eager"], "a switch before `{{flags}}`");
    }

    #[test]
    fn the_capacity_examples_search_their_chat_plan() {
        for (example, slo) in
            [("capacity-sim.yaml", (500.0, Some(30.0), 0.01)), ("llamacpp-capacity.yaml", (1000.0, None, 0.01))]
        {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(example);
            let config = RunConfig::load(&path).unwrap();
            let plans = config.loop_bench_plans().unwrap();
            assert_eq!(plans[0].name, "chat", "{example}");
            let goal = plans[0].capacity.clone().expect("a capacity goal");
            assert_eq!((goal.ttft_p99_ms, goal.tpot_p99_ms, goal.max_error_rate), slo, "{example}");
            assert!(plans[1..].iter().all(|p| p.capacity.is_none()), "{example}: only the first plan searches");
        }
    }

    #[test]
    fn a_relative_base_file_is_read_next_to_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("conf");
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("autodebug.yaml");
        let write = |base: &str| {
            let text = format!(
                "deployer: {{kind: dstack, base_file: {base}}}\nservice: {{name: svc, engine: llamacpp, model: m}}\nbench: [{{name: b, prompt_tokens: 8, output_tokens: 8, requests: 1}}]\nobjective: {{maximize: output_throughput}}\n"
            );
            std::fs::write(&path, text).unwrap();
            match RunConfig::load(&path).unwrap().deployer {
                DeployerConfig::Dstack { base_file, .. } => base_file.unwrap(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(write("service.dstack.yml"), sub.join("service.dstack.yml"));
        assert_eq!(write("/abs/service.dstack.yml"), PathBuf::from("/abs/service.dstack.yml"));
    }
}

/// Property tests of [`RunConfig::load`] on hostile files: whatever `autodebug.yaml` holds, loading
/// it gives a configuration or an error naming the file, never a panic, a stack overflow or an
/// unbounded read.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// The example configurations shipped in the repository: real files to mutate.
    fn examples() -> &'static [String] {
        static EXAMPLES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        EXAMPLES.get_or_init(|| {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
            ["llamacpp-local.yaml", "vllm-cpu.yaml", "llm-planner.yaml", "dstack-llamacpp.yaml"]
                .iter()
                .map(|name| std::fs::read_to_string(dir.join(name)).unwrap())
                .collect()
        })
    }

    /// Writes `bytes` as a configuration and loads it; an error must name the file.
    fn load_bytes(dir: &Path, bytes: &[u8]) -> Result<RunConfig> {
        let path = dir.join("autodebug.yaml");
        std::fs::write(&path, bytes).unwrap();
        let loaded = RunConfig::load(&path);
        if let Err(e) = &loaded {
            let message = e.to_string();
            assert!(message.contains("autodebug.yaml"), "the error does not name the file: {message}");
        }
        loaded
    }

    fn mutate(base: &str, edits: &[(usize, u8, u8)]) -> Vec<u8> {
        const SIGNIFICANT: &[u8] = b":-[]{}&*!|>'\"#,? \n\t0123456789~%@`";
        let mut bytes = base.as_bytes().to_vec();
        for &(at, byte, kind) in edits {
            let at = at % (bytes.len() + 1);
            let significant = SIGNIFICANT[byte as usize % SIGNIFICANT.len()];
            match kind {
                0 if at < bytes.len() => bytes[at] = byte,
                1 if at < bytes.len() => bytes[at] = significant,
                2 => bytes.insert(at, significant),
                3 if at < bytes.len() => {
                    bytes.remove(at);
                }
                4 if at < bytes.len() => {
                    let end = (at + 1 + byte as usize).min(bytes.len());
                    let copy = bytes[at..end].to_vec();
                    bytes.splice(at..at, copy);
                }
                5 => bytes.truncate(at),
                _ => {}
            }
        }
        bytes
    }

    #[test]
    fn every_example_loads() {
        let dir = tempfile::tempdir().unwrap();
        for text in examples() {
            load_bytes(dir.path(), text.as_bytes()).unwrap();
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1_000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_load_or_name_the_file(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let dir = tempfile::tempdir().unwrap();
            let _ = load_bytes(dir.path(), &bytes);
        }

        #[test]
        fn mutated_examples_load_or_name_the_file(
            which in 0usize..4,
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..6), 1..10),
        ) {
            let dir = tempfile::tempdir().unwrap();
            if let Ok(config) = load_bytes(dir.path(), &mutate(&examples()[which], &edits)) {
                // What loads is usable: the parts the session reads next must not panic either.
                let _ = config.objective();
                let _ = config.bench_plans();
                let _ = config.llm_config();
                let _ = config.session_config("s".to_string(), None);
            }
        }

        #[test]
        fn spliced_examples_load_or_name_the_file(a in 0usize..4, b in 0usize..4, cut in any::<usize>(), from in any::<usize>()) {
            let (a, b) = (&examples()[a], &examples()[b]);
            let cut = (0..=cut % (a.len() + 1)).rev().find(|&c| a.is_char_boundary(c)).unwrap_or(0);
            let from = (from % (b.len() + 1)..=b.len()).find(|&c| b.is_char_boundary(c)).unwrap_or(b.len());
            let dir = tempfile::tempdir().unwrap();
            let _ = load_bytes(dir.path(), format!("{}{}", &a[..cut], &b[from..]).as_bytes());
        }
    }

    #[test]
    fn hostile_sizes_depths_and_aliases_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let base = &examples()[0];
        // Deep flow nesting is refused by its bracket count before libyaml spends quadratic time.
        for nested in ["[".repeat(100_000), "{a: ".repeat(100_000)] {
            let error = load_bytes(dir.path(), nested.as_bytes()).unwrap_err().to_string();
            assert!(error.contains(&format!("more than {MAX_CONFIG_BRACKETS}")), "{error}");
        }
        // Under the bracket count, and in block style, serde_yaml's depth limit (not the stack)
        // ends them.
        for nested in ["[".repeat(MAX_CONFIG_BRACKETS), "{a: ".repeat(2_000), "- ".repeat(100_000)] {
            load_bytes(dir.path(), nested.as_bytes()).unwrap_err();
            load_bytes(dir.path(), format!("{base}\nsession: {nested}\n").as_bytes()).unwrap_err();
        }
        // A billion laughs: aliases that expand exponentially.
        let mut laughs =
            String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        for level in 1..12 {
            let prev = (b'a' + level - 1) as char;
            let this = (b'a' + level) as char;
            laughs.push_str(&format!(
                "{this}: &{this} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
        }
        load_bytes(dir.path(), laughs.as_bytes()).unwrap_err();
        load_bytes(dir.path(), format!("{base}\n{}", laughs.replace("a: &a", "x: &a")).as_bytes()).unwrap_err();
        // A file over the limit is refused by size, whatever it holds.
        let path = dir.path().join("autodebug.yaml");
        std::fs::File::create(&path).unwrap().set_len(64 << 20).unwrap();
        let error = RunConfig::load(&path).unwrap_err().to_string();
        assert!(error.contains(&format!("larger than {MAX_CONFIG_BYTES} bytes")), "{error}");
        // An endless file: read up to the limit, then refused.
        if Path::new("/dev/zero").exists() {
            let error = RunConfig::load(Path::new("/dev/zero")).unwrap_err().to_string();
            assert!(error.contains(&format!("larger than {MAX_CONFIG_BYTES} bytes")), "{error}");
        }
    }
}
