//! Fault injection for chaos campaigns: the fault classes, a seeded schedule that picks at most one
//! fault per iteration, and decorators around the five traits that inject the faults of their
//! stage. Faults of the service itself (a server that never gets healthy, a stream cut in the
//! middle, garbage on `/metrics`...) are asked of the simulator through [`FAULT_ENV`] in the
//! deployed configuration's environment; the simulator plays them over real HTTP.
//!
//! The decorators also keep the counts a campaign checks: how many configurations were deployed
//! and how many of those the catalog refuses (a planner fault that got through).
//!
//! ```
//! use std::sync::Arc;
//! use autodebug_core::chaos::{ChaosPlanner, FaultClass, FaultSchedule};
//! use autodebug_core::rules::RulePlanner;
//!
//! let schedule = Arc::new(FaultSchedule::new(7, 1.0, vec![FaultClass::UnknownFlag]));
//! assert_eq!(schedule.begin_iteration(1), Some(FaultClass::UnknownFlag));
//! let planner = ChaosPlanner::new(RulePlanner::new(), schedule.clone());
//! # let _ = planner;
//! assert_eq!(FaultClass::parse("stream_cut"), Some(FaultClass::StreamCut));
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::rng::SplitMix64;
use crate::{
    Analysis, Analyzer, Artifact, BenchPlan, BenchReport, Benchmarker, Deployer, Deployment, Domain, Endpoint, Error,
    Evidence, LogLine, Plan, PlanInput, Planner, Result, SearchSpace, ServiceSpec, Target, TelemetrySnapshot,
    TelemetrySource, TimeWindow,
};

/// The environment variable through which a deployed simulator is asked to play a fault
/// (its value is a [`FaultClass::name`]).
pub const FAULT_ENV: &str = "AUTODEBUG_SIM_FAULT";

/// The environment variable that marks every engine process a campaign starts, so a scan of the
/// process table finds the ones left behind.
pub const RUN_TAG_ENV: &str = "AUTODEBUG_CHAOS_RUN";

/// Where in the loop a fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The deployer wrapper fails the deploy.
    Deploy,
    /// The simulated engine misbehaves (startup, API, telemetry endpoints, log).
    Server,
    /// A wrapper around a benchmarker, telemetry source or analyzer fails.
    Measure,
    /// The planner wrapper proposes something the loop must refuse, or fails.
    Plan,
    /// The language model the LLM planner asks answers nonsense.
    Llm,
    /// The campaign's supervisor acts on the autodebug process or its store.
    Process,
}

macro_rules! fault_classes {
    ($($variant:ident => $name:literal, $stage:ident;)*) => {
        /// A kind of fault a campaign injects.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum FaultClass { $($variant,)* }

        impl FaultClass {
            /// Every class, in a stable order.
            pub const ALL: &'static [FaultClass] = &[$(FaultClass::$variant,)*];

            /// The class's name in `--faults`, reports and [`FAULT_ENV`].
            pub fn name(self) -> &'static str {
                match self { $(FaultClass::$variant => $name,)* }
            }

            pub fn stage(self) -> Stage {
                match self { $(FaultClass::$variant => Stage::$stage,)* }
            }
        }
    };
}

fault_classes! {
    DeployError => "deploy_error", Deploy;
    NeverHealthy => "never_healthy", Server;
    StartupOom => "startup_oom", Server;
    EngineRejectsFlag => "engine_rejects_flag", Server;
    EngineCrash => "engine_crash", Server;
    StreamCut => "stream_cut", Server;
    Stall => "stall", Server;
    GarbageSse => "garbage_sse", Server;
    MalformedJson => "malformed_json", Server;
    HttpErrors => "http_errors", Server;
    SlowHeaders => "slow_headers", Server;
    MetricsDown => "metrics_down", Server;
    MetricsUnauthorized => "metrics_unauthorized", Server;
    MetricsGarbage => "metrics_garbage", Server;
    HostileLog => "hostile_log", Server;
    BenchmarkerError => "benchmarker_error", Measure;
    TelemetryError => "telemetry_error", Measure;
    AnalyzerError => "analyzer_error", Measure;
    UnknownFlag => "unknown_flag", Plan;
    InvalidValue => "invalid_value", Plan;
    PlannerError => "planner_error", Plan;
    LlmGarbage => "llm_garbage", Llm;
    LlmShellCommand => "llm_shell_command", Llm;
    LlmOutOfCatalog => "llm_out_of_catalog", Llm;
    Sigkill => "sigkill", Process;
    DiskFull => "disk_full", Process;
    CorruptStore => "corrupt_store", Process;
}

impl FaultClass {
    pub fn parse(name: &str) -> Option<FaultClass> {
        FaultClass::ALL.iter().copied().find(|c| c.name() == name.trim())
    }

    /// Reads `all`, `none` or a comma-separated list of names; the error names the unknown one.
    pub fn parse_list(text: &str) -> std::result::Result<Vec<FaultClass>, String> {
        match text.trim() {
            "all" => return Ok(FaultClass::ALL.to_vec()),
            "none" => return Ok(Vec::new()),
            _ => {}
        }
        text.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|name| {
                FaultClass::parse(name).ok_or_else(|| {
                    let known: Vec<&str> = FaultClass::ALL.iter().map(|c| c.name()).collect();
                    format!("unknown fault class `{}`; known: all, none, {}", name.trim(), known.join(", "))
                })
            })
            .collect()
    }

    /// Whether the class is injected within an iteration (the schedule draws it), rather than by
    /// the supervisor on the process.
    pub fn per_iteration(self) -> bool {
        self.stage() != Stage::Process
    }

    /// Whether a planning turn goes to the LLM planner so that the model's reply, or the engine log
    /// it reads, is the fault.
    pub fn asks_llm(self) -> bool {
        self.stage() == Stage::Llm || self == FaultClass::HostileLog
    }
}

/// Picks at most one fault per iteration, from a seed, and counts the ones actually injected.
///
/// The wrappers share one schedule: the session's observer calls
/// [`begin_iteration`](Self::begin_iteration), and the wrapper of the fault's stage
/// [`take`](Self::take)s it when it acts.
#[derive(Debug)]
pub struct FaultSchedule {
    rate: f64,
    classes: Vec<FaultClass>,
    state: Mutex<ScheduleState>,
}

#[derive(Debug)]
struct ScheduleState {
    rng: SplitMix64,
    current: Option<FaultClass>,
    taken: bool,
    injected: BTreeMap<FaultClass, u64>,
}

impl FaultSchedule {
    /// Faults from `classes` (the per-iteration ones; process-level classes are left out), one in
    /// an iteration with probability `rate`.
    pub fn new(seed: u64, rate: f64, classes: Vec<FaultClass>) -> FaultSchedule {
        FaultSchedule {
            rate: rate.clamp(0.0, 1.0),
            classes: classes.into_iter().filter(|c| c.per_iteration()).collect(),
            state: Mutex::new(ScheduleState {
                rng: SplitMix64::new(seed),
                current: None,
                taken: false,
                injected: BTreeMap::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ScheduleState> {
        // A panic elsewhere must not stop the campaign from counting.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Draws this iteration's fault (or none). `iteration` only names it in the log.
    pub fn begin_iteration(&self, iteration: u32) -> Option<FaultClass> {
        let mut state = self.state();
        let strike = !self.classes.is_empty() && state.rng.next_f64() < self.rate;
        state.current = strike.then(|| self.classes[state.rng.below(self.classes.len())]);
        state.taken = false;
        if let Some(class) = state.current {
            tracing::debug!(iteration, fault = class.name(), "chaos: fault drawn");
        }
        state.current
    }

    /// This iteration's fault, whether or not it was injected yet.
    pub fn current(&self) -> Option<FaultClass> {
        self.state().current
    }

    /// Whether the current fault is `class`; if so it counts as injected (once per iteration).
    pub fn take(&self, class: FaultClass) -> bool {
        let mut state = self.state();
        if state.current != Some(class) {
            return false;
        }
        if !state.taken {
            state.taken = true;
            *state.injected.entry(class).or_default() += 1;
        }
        true
    }

    /// The fault injected in this iteration so far.
    pub fn injected_now(&self) -> Option<FaultClass> {
        let state = self.state();
        state.current.filter(|_| state.taken)
    }

    /// Injected faults so far, per class.
    pub fn injected(&self) -> BTreeMap<FaultClass, u64> {
        self.state().injected.clone()
    }
}

/// Deploys through `inner`, failing the deploy when the schedule says so, asking the simulator
/// for its fault through [`FAULT_ENV`], marking every engine with [`RUN_TAG_ENV`], and counting
/// the configurations it was asked to deploy that `space` refuses.
pub struct ChaosDeployer<D> {
    inner: D,
    schedule: Arc<FaultSchedule>,
    space: SearchSpace,
    run_tag: String,
    counts: Arc<DeployCounts>,
}

/// What a [`ChaosDeployer`] was asked to deploy.
#[derive(Debug, Default)]
pub struct DeployCounts {
    pub deployed: AtomicU64,
    /// Configurations the catalog refuses: a refused plan that reached the deployer.
    pub outside_catalog: AtomicU64,
}

impl<D: Deployer> ChaosDeployer<D> {
    pub fn new(inner: D, schedule: Arc<FaultSchedule>, space: SearchSpace, run_tag: impl Into<String>) -> Self {
        ChaosDeployer { inner, schedule, space, run_tag: run_tag.into(), counts: Arc::default() }
    }

    /// Counts into `counts`, which the caller keeps: they stay readable after the deployer moved
    /// into a session, and the deployers of several sessions can share them.
    pub fn with_counts(mut self, counts: Arc<DeployCounts>) -> Self {
        self.counts = counts;
        self
    }
}

#[async_trait]
impl<D: Deployer> Deployer for ChaosDeployer<D> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn render(&self, spec: &ServiceSpec) -> Result<Artifact> {
        self.inner.render(spec)
    }

    async fn deploy(&self, spec: &ServiceSpec) -> Result<Deployment> {
        if self.schedule.take(FaultClass::DeployError) {
            return Err(Error::deploy("chaos: injected deploy error (the deployer's API failed)"));
        }
        self.counts.deployed.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = self.space.validate(spec) {
            self.counts.outside_catalog.fetch_add(1, Ordering::SeqCst);
            tracing::error!(error = %e, "chaos: a configuration outside the catalog reached the deployer");
        }
        let mut marked = spec.clone();
        marked.env.push((RUN_TAG_ENV.to_string(), self.run_tag.clone()));
        if let Some(class) = self.schedule.current().filter(|c| c.stage() == Stage::Server) {
            self.schedule.take(class);
            marked.env.push((FAULT_ENV.to_string(), class.name().to_string()));
        }
        self.inner.deploy(&marked).await
    }

    async fn wait_ready(&self, deployment: &Deployment, timeout: Duration) -> Result<Endpoint> {
        self.inner.wait_ready(deployment, timeout).await
    }

    async fn logs(&self, deployment: &Deployment, since_ns: Option<i128>) -> Result<Vec<LogLine>> {
        self.inner.logs(deployment, since_ns).await
    }

    async fn teardown(&self, deployment: &Deployment) -> Result<()> {
        self.inner.teardown(deployment).await
    }

    async fn run_beside(
        &self,
        deployment: &Deployment,
        command: &crate::beside::BesideCommand,
    ) -> Result<crate::beside::BesideOutput> {
        self.inner.run_beside(deployment, command).await
    }
}

/// A benchmarker that fails the whole run when the schedule says so.
pub struct ChaosBenchmarker<B> {
    inner: B,
    schedule: Arc<FaultSchedule>,
}

impl<B: Benchmarker> ChaosBenchmarker<B> {
    pub fn new(inner: B, schedule: Arc<FaultSchedule>) -> Self {
        ChaosBenchmarker { inner, schedule }
    }
}

#[async_trait]
impl<B: Benchmarker> Benchmarker for ChaosBenchmarker<B> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn run(&self, endpoint: &Endpoint, plan: &BenchPlan) -> Result<BenchReport> {
        if self.schedule.take(FaultClass::BenchmarkerError) {
            return Err(Error::Bench("chaos: injected benchmarker failure (the load generator died)".into()));
        }
        self.inner.run(endpoint, plan).await
    }
}

/// A telemetry source whose fetch fails when the schedule says so.
pub struct ChaosTelemetry<T> {
    inner: T,
    schedule: Arc<FaultSchedule>,
}

impl<T: TelemetrySource> ChaosTelemetry<T> {
    pub fn new(inner: T, schedule: Arc<FaultSchedule>) -> Self {
        ChaosTelemetry { inner, schedule }
    }
}

#[async_trait]
impl<T: TelemetrySource> TelemetrySource for ChaosTelemetry<T> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn begin(&self, target: &Target<'_>) -> Result<()> {
        self.inner.begin(target).await
    }

    async fn fetch(&self, target: &Target<'_>, window: TimeWindow) -> Result<TelemetrySnapshot> {
        if self.schedule.take(FaultClass::TelemetryError) {
            return Err(Error::telemetry(self.inner.name(), "chaos: injected failure of the telemetry backend"));
        }
        self.inner.fetch(target, window).await
    }
}

/// An analyzer that fails when the schedule says so.
pub struct ChaosAnalyzer<A> {
    inner: A,
    schedule: Arc<FaultSchedule>,
}

impl<A: Analyzer> ChaosAnalyzer<A> {
    pub fn new(inner: A, schedule: Arc<FaultSchedule>) -> Self {
        ChaosAnalyzer { inner, schedule }
    }
}

#[async_trait]
impl<A: Analyzer> Analyzer for ChaosAnalyzer<A> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn analyze(&self, evidence: &Evidence<'_>) -> Result<Analysis> {
        if self.schedule.take(FaultClass::AnalyzerError) {
            return Err(Error::Plan(format!("chaos: injected failure of the {} analyzer", self.inner.name())));
        }
        self.inner.analyze(evidence).await
    }
}

/// Plans with `inner`, except when the schedule says otherwise: a proposal with a flag the engine
/// does not have or a value outside its knob's domain, a planner error, or a turn handed to the
/// LLM planner (whose model then answers the fault, or reads the hostile log).
pub struct ChaosPlanner<P> {
    inner: P,
    llm: Option<Box<dyn Planner>>,
    schedule: Arc<FaultSchedule>,
}

/// The flag a planner fault proposes; no engine has it.
pub const UNKNOWN_FLAG: &str = "--chaos-unknown-flag";

impl<P: Planner> ChaosPlanner<P> {
    pub fn new(inner: P, schedule: Arc<FaultSchedule>) -> Self {
        ChaosPlanner { inner, llm: None, schedule }
    }

    /// The planner that takes the turns the LLM faults are about.
    pub fn with_llm(mut self, llm: impl Planner + 'static) -> Self {
        self.llm = Some(Box::new(llm));
        self
    }
}

#[async_trait]
impl<P: Planner> Planner for ChaosPlanner<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn plan(&self, input: PlanInput<'_>) -> Result<Plan> {
        if self.schedule.take(FaultClass::PlannerError) {
            return Err(Error::Plan("chaos: injected planner failure".into()));
        }
        if let Some(llm) = &self.llm
            && let Some(class) = self.schedule.current().filter(|c| c.asks_llm())
        {
            // A hostile log was injected when the engine started; this turn shows it to the model.
            if class.stage() == Stage::Llm {
                self.schedule.take(class);
            }
            return llm.plan(input).await;
        }
        let space = input.space;
        let mut plan = self.inner.plan(input).await?;
        if self.schedule.take(FaultClass::UnknownFlag) {
            plan.next.flags.set(UNKNOWN_FLAG, Some("1"));
        } else if self.schedule.take(FaultClass::InvalidValue) {
            let knob = space.knobs.iter().find(|k| matches!(k.domain, Domain::Int { .. }));
            if let Some(knob) = knob {
                plan.next.flags.set(&knob.flag, Some("not-a-number; rm -rf /"));
            }
        }
        Ok(plan)
    }
}

/// How often `needle` occurs in `haystack` (overlapping occurrences count once each start).
pub fn occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() || haystack.len() < needle.len() {
        return 0;
    }
    haystack.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Terminal control bytes (ESC, BEL, other C0 controls but tab/newline/CR, and DEL) in `bytes`.
pub fn control_bytes(bytes: &[u8]) -> usize {
    bytes.iter().filter(|b| matches!(b, 0x00..=0x08 | 0x0b | 0x0c | 0x0e..=0x1f | 0x7f)).count()
}

/// Processes of this user whose environment carries `RUN_TAG_ENV=<tag>`: engines a campaign
/// started and nobody stopped. Reads `/proc`; empty where there is none.
pub fn tagged_processes(tag: &str) -> Vec<u32> {
    let needle = format!("{RUN_TAG_ENV}={tag}");
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let own = std::process::id();
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == own {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        // A zombie has an empty environment; it is already gone but for its exit status.
        if environ.split(|b| *b == 0).any(|var| var == needle.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

/// This process's resident memory in KiB (`VmRSS`), where `/proc` has it.
pub fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_class() {
        for class in FaultClass::ALL {
            assert_eq!(FaultClass::parse(class.name()), Some(*class));
        }
        assert_eq!(FaultClass::parse_list("all").unwrap().len(), FaultClass::ALL.len());
        assert!(FaultClass::parse_list("none").unwrap().is_empty());
        let err = FaultClass::parse_list("stall,nope").unwrap_err();
        assert!(err.contains("`nope`"), "{err}");
    }

    #[test]
    fn the_schedule_draws_at_its_rate_and_counts_only_taken_faults() {
        let schedule = FaultSchedule::new(3, 0.5, FaultClass::ALL.to_vec());
        let mut drawn = 0;
        for i in 0..1000 {
            if let Some(class) = schedule.begin_iteration(i) {
                assert!(class.per_iteration(), "{class:?} is the supervisor's");
                drawn += 1;
                if i % 2 == 0 {
                    assert!(schedule.take(class));
                    assert!(schedule.take(class), "taking twice is still the same fault");
                }
            }
        }
        assert!((400..600).contains(&drawn), "{drawn} of 1000 at rate 0.5");
        let injected: u64 = schedule.injected().values().sum();
        assert!(injected > 150 && injected < drawn, "{injected} injected of {drawn} drawn");
    }

    #[test]
    fn a_fault_of_another_class_is_not_taken() {
        let schedule = FaultSchedule::new(1, 1.0, vec![FaultClass::Stall]);
        schedule.begin_iteration(1);
        assert!(!schedule.take(FaultClass::StreamCut));
        assert_eq!(schedule.injected_now(), None);
        assert!(schedule.take(FaultClass::Stall));
        assert_eq!(schedule.injected_now(), Some(FaultClass::Stall));
    }

    #[test]
    fn scans_count_needles_and_control_bytes() {
        assert_eq!(occurrences(b"a-CANARY-b-CANARY", b"CANARY"), 2);
        assert_eq!(occurrences(b"short", b"longer needle"), 0);
        assert_eq!(control_bytes(b"ok\ttab\nline\r\n"), 0);
        assert_eq!(control_bytes(b"\x1b[31mred\x07"), 2);
    }
}
