//! The loop: deploy → wait ready → benchmark → logs → telemetry → analyze → plan → record → redeploy.
//!
//! A [`Session`] owns one implementation of each trait and runs iterations until its budget
//! (iterations, wall time) is spent, the planner has nothing left, or the stop flag is raised
//! (Ctrl-C). It never dies on a failed deploy, a failed benchmark, a missing telemetry source or a
//! bad plan: it records the failure, rolls back to the best configuration so far and goes on.
//! Every step is written to the [experiment store](crate::store) before the next begins, so a
//! killed process loses nothing already finished and [`Session::resume`] picks up from there.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

mod confirmation;
mod failed;
mod rounds;

pub use crate::history::{ERROR_SIGNAL, ROOT_CAUSE_SIGNAL};
pub use confirmation::Confirmation;
use failed::{Failed, failure_finding, nothing_measured, same_failure_twice, telemetry_gaps, without_blamed_settings};
use rounds::Slot;

use crate::beside::BenchBeside;
use crate::pricing::{PriceTable, derive_cost_metrics};
use crate::store::{SessionRecord, Store};
use crate::trail::Trail;
use crate::{
    Analysis, Analyzer, BenchPlan, BenchReport, BenchSummary, Benchmarker, Deployer, Deployment, EngineArgs, Error,
    ErrorKind, Evidence, History, Iteration, IterationStatus, LogLine, Objective, Plan, PlanInput, Planner, Result,
    SearchSpace, ServiceSpec, Target, TelemetrySnapshot, TelemetrySource, TimeWindow,
};

/// What a session runs and for how long.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionConfig {
    /// Session name in the store (several sessions share one database).
    pub name: String,
    pub objective: Objective,
    /// Benchmarks run each iteration; the first is the primary one whose metrics are unprefixed.
    pub bench: Vec<BenchPlan>,
    pub max_iterations: u32,
    /// Stop starting new iterations after this much wall time.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_secs")]
    pub max_wall: Option<Duration>,
    /// How long a deployment may take to become healthy.
    #[serde(with = "secs")]
    pub ready_timeout: Duration,
    /// Where the store (`autodebug.db`) and the trail (`debug-*.md`, configs) are written.
    pub sessions_dir: PathBuf,
    /// After the budget, re-measure the baseline and the champion this many times each, interleaved
    /// (baseline, champion, baseline, ...), and judge the champion on those trials alone
    /// ([`Confirmation`]); 0 skips it.
    #[serde(default)]
    pub confirm_trials: u32,
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

mod opt_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v = Option::<f64>::deserialize(d)?;
        v.map(|v| Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)).transpose()
    }
}

/// Progress of a session, for progress bars and logs.
// A handful per iteration: their size costs nothing worth boxing each variant.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum SessionEvent {
    IterationStarted { number: u32, spec: ServiceSpec },
    Deploying { number: u32 },
    Ready { number: u32, base_url: String },
    Benchmarking { number: u32, plan: String },
    Benchmarked { number: u32, plan: String, summary: BenchSummary },
    IterationFinished { iteration: Box<Iteration> },
    Stopped { reason: String },
}

type Observer = Box<dyn Fn(&SessionEvent) + Send + Sync>;

/// Why a session stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Iterations,
    WallTime,
    Interrupted,
    PlannerExhausted,
    /// Two iterations in a row measured nothing (no request of a plan succeeded), for the same reason.
    SameFailureTwice,
}

impl StopReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            StopReason::Iterations => "iteration budget spent",
            StopReason::WallTime => "wall-time budget spent",
            StopReason::Interrupted => "interrupted",
            StopReason::PlannerExhausted => "planner has nothing left to try",
            StopReason::SameFailureTwice => "two iterations in a row measured nothing, for the same reason",
        }
    }
}

/// What a finished session reports.
#[derive(Debug, Clone)]
pub struct SessionOutcome {
    pub session: SessionRecord,
    /// Every finished iteration of the session (earlier runs included when resumed).
    pub history: History,
    pub stop_reason: StopReason,
    /// The champion re-run against the baseline, when `confirm_trials` asked for it.
    pub confirmation: Option<Confirmation>,
}

impl SessionOutcome {
    /// The first iteration that ran, the reference for improvements.
    pub fn baseline(&self) -> Option<&Iteration> {
        self.history.baseline()
    }

    pub fn champion(&self) -> Option<&Iteration> {
        self.history.champion(&self.session.objective)
    }

    /// Champion over baseline, in percent of the baseline (positive = better).
    pub fn improvement_pct(&self) -> Option<f64> {
        self.history.improvement_pct(&self.session.objective)
    }
}

/// Builds a [`Session`]; every part is a trait object so downstream programs plug in their own.
pub struct SessionBuilder {
    deployer: Option<Box<dyn Deployer>>,
    benchmarker: Option<Box<dyn Benchmarker>>,
    telemetry: Vec<Box<dyn TelemetrySource>>,
    analyzers: Vec<Box<dyn Analyzer>>,
    planner: Option<Box<dyn Planner>>,
    space: Option<SearchSpace>,
    observer: Option<Observer>,
    stop: Option<Arc<AtomicBool>>,
    prices: Option<PriceTable>,
    engine_args: Option<EngineArgs>,
    parallel: usize,
    slot_env: Vec<Vec<(String, String)>>,
    bench_beside: Option<BenchBeside>,
}

impl SessionBuilder {
    pub fn deployer(mut self, deployer: impl Deployer + 'static) -> Self {
        self.deployer = Some(Box::new(deployer));
        self
    }

    pub fn deployer_boxed(mut self, deployer: Box<dyn Deployer>) -> Self {
        self.deployer = Some(deployer);
        self
    }

    pub fn benchmarker(mut self, benchmarker: impl Benchmarker + 'static) -> Self {
        self.benchmarker = Some(Box::new(benchmarker));
        self
    }

    pub fn telemetry(mut self, source: impl TelemetrySource + 'static) -> Self {
        self.telemetry.push(Box::new(source));
        self
    }

    pub fn analyzer(mut self, analyzer: impl Analyzer + 'static) -> Self {
        self.analyzers.push(Box::new(analyzer));
        self
    }

    pub fn planner(mut self, planner: impl Planner + 'static) -> Self {
        self.planner = Some(Box::new(planner));
        self
    }

    pub fn planner_boxed(mut self, planner: Box<dyn Planner>) -> Self {
        self.planner = Some(planner);
        self
    }

    /// The knob catalog plans are validated against (default: the engine's built-in catalog).
    pub fn search_space(mut self, space: SearchSpace) -> Self {
        self.space = Some(space);
        self
    }

    pub fn observer(mut self, observer: impl Fn(&SessionEvent) + Send + Sync + 'static) -> Self {
        self.observer = Some(Box::new(observer));
        self
    }

    /// The installed engine's own argument list: the baseline and every plan are checked against
    /// it before anything is deployed, so a flag that version lacks is refused, not deployed.
    pub fn engine_args(mut self, args: EngineArgs) -> Self {
        self.engine_args = Some(args);
        self
    }

    /// GPU prices for the derived `cost_per_mtok` metrics (default: the shipped table).
    pub fn price_table(mut self, prices: PriceTable) -> Self {
        self.prices = Some(prices);
        self
    }

    /// Runs rounds of `k` candidates side by side (deployed, benchmarked and analyzed at once,
    /// each on its own endpoint and telemetry window), planned together by
    /// [`Planner::plan_batch`]; 1 (the default) is the serial loop.
    pub fn parallel(mut self, k: usize) -> Self {
        self.parallel = k.max(1);
        self
    }

    /// Environment per slot of a parallel round (slot `i` gets entry `i` modulo their number),
    /// e.g. `CUDA_VISIBLE_DEVICES` or a CPU set, so side-by-side engines do not share devices.
    pub fn slot_env(mut self, slots: Vec<Vec<(String, String)>>) -> Self {
        self.slot_env = slots;
        self
    }

    /// Runs every benchmark plan as `autodebug bench` beside the service, through the deployer's
    /// [`run_beside`](Deployer::run_beside), instead of with the benchmarker from this machine
    /// (for loads this machine could not generate); its report is used exactly like a local one.
    /// See [`beside`](crate::beside).
    pub fn bench_beside(mut self, beside: BenchBeside) -> Self {
        self.bench_beside = Some(beside);
        self
    }

    /// A flag that, once raised (e.g. by a Ctrl-C handler), lets the current step finish, records
    /// the iteration and stops.
    pub fn stop_flag(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = Some(stop);
        self
    }

    pub fn build(self, config: SessionConfig) -> Result<Session> {
        let missing = |what: &str| Error::config("session", format!("no {what} given to Session::builder()"));
        if config.bench.is_empty() {
            return Err(Error::config("bench", "at least one benchmark plan is needed"));
        }
        let store = Store::open(&config.sessions_dir.join("autodebug.db"))?;
        let trail = Trail::new(&config.sessions_dir)?.with_session(config.name.clone());
        Ok(Session {
            deployer: self.deployer.ok_or_else(|| missing("deployer"))?,
            benchmarker: self.benchmarker.ok_or_else(|| missing("benchmarker"))?,
            telemetry: self.telemetry,
            analyzers: self.analyzers,
            planner: self.planner.ok_or_else(|| missing("planner"))?,
            space: self.space,
            observer: self.observer,
            stop: self.stop.unwrap_or_default(),
            prices: self.prices.unwrap_or_default(),
            engine_args: self.engine_args,
            parallel: self.parallel.max(1),
            slot_env: self.slot_env,
            bench_beside: self.bench_beside,
            config,
            store: Mutex::new(store),
            trail,
        })
    }
}

/// The optimization loop. See the [module docs](self).
pub struct Session {
    deployer: Box<dyn Deployer>,
    benchmarker: Box<dyn Benchmarker>,
    telemetry: Vec<Box<dyn TelemetrySource>>,
    analyzers: Vec<Box<dyn Analyzer>>,
    planner: Box<dyn Planner>,
    space: Option<SearchSpace>,
    observer: Option<Observer>,
    stop: Arc<AtomicBool>,
    prices: PriceTable,
    engine_args: Option<EngineArgs>,
    parallel: usize,
    slot_env: Vec<Vec<(String, String)>>,
    bench_beside: Option<BenchBeside>,
    config: SessionConfig,
    store: Mutex<Store>,
    trail: Trail,
}

/// Where the loop stands between iterations.
struct Cursor {
    record: SessionRecord,
    history: History,
    next_number: u32,
    next_spec: ServiceSpec,
    /// Parallel sessions: where the rounds stand.
    rounds: rounds::RoundCursor,
}

impl Session {
    pub fn builder() -> SessionBuilder {
        SessionBuilder {
            deployer: None,
            benchmarker: None,
            telemetry: Vec::new(),
            analyzers: Vec::new(),
            planner: None,
            space: None,
            observer: None,
            stop: None,
            prices: None,
            engine_args: None,
            parallel: 1,
            slot_env: Vec::new(),
            bench_beside: None,
        }
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Starts a new session from `baseline` (the user's current configuration).
    pub async fn run(&self, baseline: ServiceSpec) -> Result<SessionOutcome> {
        let space = self.space_for(&baseline);
        space.validate(&baseline).map_err(|e| Error::config("baseline", e.to_string()))?;
        for unchecked in space.unchecked_constraints(&baseline) {
            tracing::warn!("baseline: {unchecked}");
        }
        if let Some(args) = &self.engine_args {
            args.check_flags(&baseline.flags).map_err(|e| Error::config("baseline", e.to_string()))?;
        }
        let config_json = serde_json::to_value(&self.config).unwrap_or_default();
        let record = self.with_store(|s| {
            s.create_session(
                &self.config.name,
                self.deployer.name(),
                baseline.engine.as_str(),
                &self.config.objective,
                &config_json,
                TimeWindow::now_ns(),
            )
        })?;
        let rounds = rounds::RoundCursor::starting(&baseline);
        let cursor = Cursor { record, history: History::default(), next_number: 1, next_spec: baseline, rounds };
        self.drive(cursor).await
    }

    /// Continues the stored session `name` (the latest when `None`) where it stopped: finished
    /// iterations are kept, an iteration left running by a killed process is redone.
    pub async fn resume(&self, name: Option<&str>) -> Result<SessionOutcome> {
        self.resume_with(name, None).await
    }

    /// [`resume`](Self::resume), with the secrets the store masked (`***`) filled back from
    /// `source`, the user's configuration, so a resumed run deploys real values.
    pub async fn resume_with(&self, name: Option<&str>, source: Option<&ServiceSpec>) -> Result<SessionOutcome> {
        let (record, mut history, unfinished) = self.with_store(|s| {
            let record = s.find_session(name)?;
            let history = s.history(record.id)?;
            let unfinished = s.unfinished(record.id)?;
            Ok((record, history, unfinished))
        })?;
        if let Some(source) = source {
            for it in &mut history.iterations {
                it.spec = crate::secret::restore_spec(&it.spec, source);
                if let Some(plan) = &mut it.plan {
                    plan.next = crate::secret::restore_spec(&plan.next, source);
                }
            }
        }
        let last = history.iterations.last().ok_or_else(|| Error::Store {
            path: self.config.sessions_dir.join("autodebug.db"),
            message: format!("session `{}` has no finished iteration to resume from; start it again", record.name),
        })?;
        let next_spec = last
            .plan
            .as_ref()
            .map(|p| p.next.clone())
            .or_else(|| history.champion(&record.objective).map(|c| c.spec.clone()))
            .unwrap_or_else(|| last.spec.clone());
        let finished_max = history.iterations.iter().map(|i| i.number).max().unwrap_or(0);
        let next_number = unfinished.iter().copied().min().unwrap_or(finished_max + 1).min(finished_max + 1);
        tracing::info!(session = %record.name, next_number, "resuming");
        let mut redo = Vec::new();
        for number in &unfinished {
            if let Some(it) = self.with_store(|s| s.iteration(record.id, *number))? {
                let spec =
                    source.map_or_else(|| it.spec.clone(), |source| crate::secret::restore_spec(&it.spec, source));
                redo.push((*number, spec));
            }
        }
        let rounds = rounds::RoundCursor::resumed(&history, redo);
        let cursor = Cursor { record, history, next_number, next_spec, rounds };
        self.drive(cursor).await
    }

    fn space_for(&self, spec: &ServiceSpec) -> SearchSpace {
        let space = self.space.clone().unwrap_or_else(|| SearchSpace::for_engine(spec.engine));
        // Constraint refusals name the version that enforces them, as the argument checks do.
        match self.engine_args.as_ref().and_then(|a| a.version.clone()) {
            Some(version) if space.engine_version.is_none() => space.with_engine_version(version),
            _ => space,
        }
    }

    fn with_store<T>(&self, f: impl FnOnce(&Store) -> Result<T>) -> Result<T> {
        let store = self.store.lock().map_err(|_| Error::Store {
            path: self.config.sessions_dir.join("autodebug.db"),
            message: "store lock poisoned by an earlier panic".into(),
        })?;
        f(&store)
    }

    fn emit(&self, event: SessionEvent) {
        if let Some(observer) = &self.observer {
            observer(&event);
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    async fn drive(&self, mut cursor: Cursor) -> Result<SessionOutcome> {
        if self.parallel > 1 {
            return self.drive_rounds(cursor).await;
        }
        let started = Instant::now();
        let last_number = cursor.history.iterations.iter().map(|i| i.number).max().unwrap_or(0);
        let budget_end = last_number.max(cursor.next_number - 1) + self.config.max_iterations;
        let stop_reason = loop {
            if self.stopping() {
                break StopReason::Interrupted;
            }
            if cursor.next_number > budget_end {
                break StopReason::Iterations;
            }
            if self.config.max_wall.is_some_and(|w| started.elapsed() >= w) {
                break StopReason::WallTime;
            }
            let iteration = self.iterate(&cursor).await?;
            let exhausted = iteration.plan.as_ref().is_some_and(|p| p.exhausted);
            let interrupted = iteration.status == IterationStatus::Interrupted;
            cursor.history.iterations.retain(|i| i.number != iteration.number);
            cursor.history.iterations.push(iteration.clone());
            cursor.next_number = iteration.number + 1;
            cursor.next_spec = match &iteration.plan {
                Some(plan) => plan.next.clone(),
                None => self.rollback_spec(&cursor.history, &cursor.record.objective, &iteration.spec),
            };
            self.emit(SessionEvent::IterationFinished { iteration: Box::new(iteration) });
            if interrupted {
                break StopReason::Interrupted;
            }
            if same_failure_twice(&cursor.history) {
                break StopReason::SameFailureTwice;
            }
            if exhausted {
                break StopReason::PlannerExhausted;
            }
        };
        self.conclude(cursor, stop_reason).await
    }

    /// After the last iteration: the confirmation trials where the budget ran out, then the
    /// session's end in the store.
    async fn conclude(&self, mut cursor: Cursor, stop_reason: StopReason) -> Result<SessionOutcome> {
        let confirmation = match stop_reason {
            StopReason::Iterations | StopReason::PlannerExhausted | StopReason::WallTime => {
                self.confirm(&mut cursor).await?
            }
            StopReason::Interrupted | StopReason::SameFailureTwice => None,
        };
        let note = match &confirmation {
            Some(c) => format!("{}; {}", stop_reason.as_str(), c.describe()),
            None => stop_reason.as_str().to_string(),
        };
        self.with_store(|s| s.finish_session(cursor.record.id, TimeWindow::now_ns(), &note))?;
        self.emit(SessionEvent::Stopped { reason: note });
        Ok(SessionOutcome { session: cursor.record, history: cursor.history, stop_reason, confirmation })
    }

    /// Re-runs the baseline and the champion `confirm_trials` times each, interleaved so drift hits
    /// both alike, and judges the champion on those trials alone. Each trial is a recorded
    /// iteration (no plan is made from it).
    async fn confirm(&self, cursor: &mut Cursor) -> Result<Option<Confirmation>> {
        let trials = self.config.confirm_trials;
        let objective = cursor.record.objective.clone();
        let (Some(baseline), Some(champion)) = (
            cursor.history.iterations.iter().find(|i| i.is_ok()).cloned(),
            cursor.history.champion(&objective).cloned(),
        ) else {
            return Ok(None);
        };
        if trials == 0 || champion.spec.flags == baseline.spec.flags {
            return Ok(None);
        }
        let (mut base, mut champ) = (Vec::new(), Vec::new());
        for trial in 1..=trials {
            for (which, of) in [("baseline", &baseline), ("champion", &champion)] {
                if self.stopping() {
                    return Ok(None);
                }
                let note =
                    format!("confirmation trial {trial} of {trials}: the {which} (iteration {}) again", of.number);
                cursor.next_spec = of.spec.clone();
                let iteration = self.iterate_as(cursor, Some(note)).await?;
                let value = iteration.is_ok().then(|| objective.value(&iteration.metrics)).flatten();
                cursor.history.iterations.push(iteration.clone());
                cursor.next_number = iteration.number + 1;
                self.emit(SessionEvent::IterationFinished { iteration: Box::new(iteration) });
                match (which, value) {
                    ("baseline", Some(v)) => base.push(v),
                    (_, Some(v)) => champ.push(v),
                    // A trial that failed to run counts against the configuration it ran.
                    ("baseline", None) => {}
                    (_, None) => {
                        champ.push(if objective.direction == crate::Direction::Maximize { 0.0 } else { f64::INFINITY })
                    }
                }
            }
        }
        Ok(Some(Confirmation::judge(baseline.number, champion.number, base, champ, &objective)))
    }

    /// The configuration to go back to after a failure: the champion, else the last that ran.
    fn rollback_spec(&self, history: &History, objective: &Objective, failed: &ServiceSpec) -> ServiceSpec {
        history
            .champion(objective)
            .or_else(|| history.last_ok())
            .map(|i| i.spec.clone())
            .unwrap_or_else(|| failed.clone())
    }

    /// Runs one iteration and records it; errors here are store/trail errors only.
    async fn iterate(&self, cursor: &Cursor) -> Result<Iteration> {
        self.iterate_as(cursor, None).await
    }

    /// [`iterate`](Self::iterate); a `confirmation` note makes it a re-run that plans nothing.
    async fn iterate_as(&self, cursor: &Cursor, confirmation: Option<String>) -> Result<Iteration> {
        let spec = cursor.next_spec.clone();
        let objective = &cursor.record.objective;
        let mut iteration =
            self.run_measured(cursor.record.id, cursor.next_number, spec.clone(), &cursor.history, None).await?;
        if let Some(note) = confirmation {
            iteration.plan = Some(Plan {
                planner: "confirmation".into(),
                changes: Vec::new(),
                next: spec.clone(),
                exhausted: false,
                notes: vec![note],
            });
        } else if iteration.status != IterationStatus::Interrupted && !self.stopping() {
            let step = Instant::now();
            iteration.plan = self.plan_next(&iteration, &cursor.history, objective).await;
            iteration.timings.insert("plan".into(), step.elapsed().as_secs_f64());
        }
        self.record(cursor.record.id, &mut iteration, &cursor.history, objective)?;
        Ok(iteration)
    }

    /// Writes the finished `iteration` to the store and the trail; `history` is what came before it.
    fn record(
        &self,
        session_id: i64,
        iteration: &mut Iteration,
        history: &History,
        objective: &Objective,
    ) -> Result<()> {
        iteration.finished_ns = TimeWindow::now_ns();
        self.with_store(|s| s.finish_iteration(session_id, iteration))?;
        let previous_ok = history.last_ok();
        let previous = if iteration.is_ok() { previous_ok } else { history.champion(objective).or(previous_ok) };
        let context = self.context_line(iteration);
        self.trail.write_iteration(iteration, previous, objective, &context)?;
        Ok(())
    }

    /// Starts iteration `number` on `spec` (in a slot of a parallel round, or alone), deploys,
    /// measures and analyzes it, and returns it unplanned and not yet recorded as finished.
    /// Errors are the store's only: every other failure is the iteration's result.
    async fn run_measured(
        &self,
        session_id: i64,
        number: u32,
        spec: ServiceSpec,
        history: &History,
        slot: Option<Slot>,
    ) -> Result<Iteration> {
        let started_ns = TimeWindow::now_ns();
        // Before anything prints the spec (progress, logs), so its secret values are masked there.
        crate::secret::register_spec(&spec);
        self.emit(SessionEvent::IterationStarted { number, spec: spec.clone() });
        tracing::info!(number, flags = %spec.flags.to_command_line(), "iteration starts");

        // The artifact is what this slot deploys (its own name and pinning), not the candidate.
        let artifact = match &slot {
            Some(slot) => self.deployer.render(&slot.spec_for(&spec, &self.slot_env)),
            None => self.deployer.render(&spec),
        };
        let mut iteration = Iteration {
            number,
            spec: spec.clone(),
            artifact: artifact.as_ref().ok().cloned(),
            status: IterationStatus::Running,
            metrics: BTreeMap::new(),
            bench: BTreeMap::new(),
            analysis: Analysis::default(),
            plan: None,
            error: None,
            started_ns,
            finished_ns: started_ns,
            timings: BTreeMap::new(),
            round: slot.as_ref().map(|s| s.round),
        };
        self.with_store(|s| s.begin_iteration(session_id, number, &spec, iteration.artifact.as_ref(), started_ns))?;

        let outcome = match artifact {
            Err(e) => Err(Failed::of(&e, IterationStatus::DeployFailed, format!("render failed: {e}"), Vec::new())),
            Ok(_) => self.measure(session_id, &mut iteration, history, slot.as_ref()).await,
        };
        match outcome {
            Ok(()) => iteration.status = IterationStatus::Ok,
            Err(Failed { status, message, logs, kind }) => {
                tracing::warn!(number, %message, kind = kind.map(ErrorKind::as_str), "iteration failed");
                iteration.status = status;
                iteration.error = Some(message.clone());
                if status != IterationStatus::Interrupted {
                    iteration.analysis.findings.push(failure_finding(status, &message, kind, &logs, &iteration.spec));
                    // A start that failed leaves only the engine's log, but it says why (out of
                    // memory, a bad flag), and the startup rules turn that into a change.
                    if status == IterationStatus::DeployFailed && !logs.is_empty() {
                        let evidence =
                            Evidence { spec: &iteration.spec, bench: &[], logs: &logs, telemetry: &[], history };
                        let mut gaps = Vec::new();
                        let failed = self.analyze(&evidence, &mut gaps).await;
                        iteration.analysis.merge(failed);
                        iteration.analysis.findings.extend(telemetry_gaps(&gaps));
                    }
                }
            }
        }
        Ok(iteration)
    }

    /// Deploy, benchmark, read logs and telemetry, analyze. Fills `iteration`; on failure returns
    /// the status to record, the message and the logs that explain it. Always tears down.
    async fn measure(
        &self,
        session_id: i64,
        iteration: &mut Iteration,
        history: &History,
        slot: Option<&Slot>,
    ) -> std::result::Result<(), Failed> {
        let number = iteration.number;
        let step = Instant::now();
        self.emit(SessionEvent::Deploying { number });
        let deployed = match slot {
            Some(slot) => slot.spec_for(&iteration.spec, &self.slot_env),
            None => iteration.spec.clone(),
        };
        let deployment = match self.deployer.deploy(&deployed).await {
            Ok(d) => d,
            Err(e) => return Err(Failed::of(&e, IterationStatus::DeployFailed, e.to_string(), Vec::new())),
        };
        let ready = self.deployer.wait_ready(&deployment, self.config.ready_timeout).await;
        iteration.timings.insert("deploy".into(), step.elapsed().as_secs_f64());
        let mut endpoint = match ready {
            Ok(endpoint) => endpoint,
            Err(e) => {
                let logs = self.deployer.logs(&deployment, None).await.unwrap_or_default();
                self.teardown(&deployment).await;
                return Err(Failed::of(&e, IterationStatus::DeployFailed, e.to_string(), logs));
            }
        };
        // An engine started with `--api-key` answers only requests that carry that key.
        if endpoint.token.is_none()
            && let Some(Some(key)) = iteration.spec.flags.get("--api-key")
        {
            endpoint.token = Some(crate::Secret::new(key));
        }
        self.emit(SessionEvent::Ready { number, base_url: endpoint.base_url.clone() });
        if self.stopping() {
            self.teardown(&deployment).await;
            return Err(Failed::new(IterationStatus::Interrupted, "interrupted after deploy", Vec::new()));
        }

        let result = self.benchmark_and_analyze(session_id, iteration, history, &deployment, &endpoint).await;
        self.teardown(&deployment).await;
        result
    }

    async fn benchmark_and_analyze(
        &self,
        session_id: i64,
        iteration: &mut Iteration,
        history: &History,
        deployment: &Deployment,
        endpoint: &crate::Endpoint,
    ) -> std::result::Result<(), Failed> {
        let number = iteration.number;
        let mut warnings = Vec::new();
        let startup_logs = self.engine_logs(deployment, &mut warnings).await;
        let target = Target { deployment, endpoint, logs: &startup_logs };
        for source in &self.telemetry {
            if let Err(e) = source.begin(&target).await {
                warnings.push(format!("telemetry source {} could not start: {e}", source.name()));
            }
        }

        let step = Instant::now();
        let mut reports: Vec<BenchReport> = Vec::new();
        let mut beside_runs = Vec::new();
        for plan in &self.config.bench {
            if self.stopping() {
                break;
            }
            self.emit(SessionEvent::Benchmarking { number, plan: plan.name.clone() });
            let run = match &self.bench_beside {
                None => self.benchmarker.run(endpoint, plan).await,
                Some(beside) => self.bench_beside(beside, deployment, endpoint, plan).await.map(|run| {
                    beside_runs.push((run.signal, run.skew_warning));
                    run.report
                }),
            };
            match run {
                Ok(report) => {
                    self.emit(SessionEvent::Benchmarked {
                        number,
                        plan: plan.name.clone(),
                        summary: report.summary.clone(),
                    });
                    reports.push(report);
                }
                Err(e) => {
                    let logs = self.deployer.logs(deployment, None).await.unwrap_or_default();
                    return Err(Failed::of(
                        &e,
                        IterationStatus::BenchFailed,
                        format!("benchmark `{}`: {e}", plan.name),
                        logs,
                    ));
                }
            }
        }
        iteration.timings.insert("bench".into(), step.elapsed().as_secs_f64());
        if let Some(message) = nothing_measured(&reports, endpoint) {
            let logs = self.deployer.logs(deployment, None).await.unwrap_or_default();
            return Err(Failed::new(IterationStatus::BenchFailed, message, logs));
        }
        if reports.len() < self.config.bench.len() {
            return Err(Failed::new(IterationStatus::Interrupted, "interrupted during the benchmark", Vec::new()));
        }
        let window = TimeWindow::new(
            reports.iter().map(|r| r.window.start_ns).min().unwrap_or(iteration.started_ns),
            reports.iter().map(|r| r.window.end_ns).max().unwrap_or_else(TimeWindow::now_ns),
        );
        for report in &reports {
            iteration.bench.insert(report.plan.name.clone(), report.summary.clone());
            if let Err(e) =
                self.with_store(|s| s.save_bench_records(session_id, number, &report.plan.name, &report.records))
            {
                tracing::warn!(error = %e, "per-request records not stored");
            }
        }
        iteration.metrics = bench_metrics(&reports);
        derive_cost_metrics(&iteration.spec, &mut iteration.metrics, &self.prices);

        let step = Instant::now();
        let logs = self.engine_logs(deployment, &mut warnings).await;
        let target = Target { deployment, endpoint, logs: &logs };
        let mut snapshots: Vec<TelemetrySnapshot> = Vec::new();
        for source in &self.telemetry {
            match source.fetch(&target, window).await {
                Ok(snapshot) => snapshots.push(snapshot),
                Err(e) => warnings.push(format!("telemetry source {} skipped: {e}", source.name())),
            }
        }
        if !warnings.is_empty() {
            let mut notes = TelemetrySnapshot::new("session", Some(window));
            notes.warnings = warnings.clone();
            snapshots.push(notes);
        }
        iteration.timings.insert("telemetry".into(), step.elapsed().as_secs_f64());

        let step = Instant::now();
        let evidence = Evidence { spec: &iteration.spec, bench: &reports, logs: &logs, telemetry: &snapshots, history };
        let mut analysis = Analysis { metrics: iteration.metrics.clone(), ..Default::default() };
        analysis.merge(self.analyze(&evidence, &mut warnings).await);
        if let Some(gaps) = telemetry_gaps(&warnings) {
            analysis.findings.push(gaps);
        }
        analysis.findings.extend(crate::beside::finding(&beside_runs));
        iteration.metrics = analysis.metrics.clone();
        iteration.analysis = analysis;
        iteration.timings.insert("analyze".into(), step.elapsed().as_secs_f64());
        Ok(())
    }

    /// Runs `plan` as `autodebug bench` beside the service and reads its report back, its window
    /// held against this machine's clock around the call.
    async fn bench_beside(
        &self,
        beside: &BenchBeside,
        deployment: &Deployment,
        endpoint: &crate::Endpoint,
        plan: &BenchPlan,
    ) -> Result<crate::beside::BesideRun> {
        let command = beside.command(plan, endpoint)?;
        let before = TimeWindow::now_ns();
        let output = self.deployer.run_beside(deployment, &command).await?;
        let bracket = TimeWindow::new(before, TimeWindow::now_ns());
        let run = crate::beside::read_run(plan, &command, &output, bracket)?;
        if let Some(warning) = &run.skew_warning {
            tracing::warn!(plan = %plan.name, "{warning}");
        }
        tracing::info!(plan = %plan.name, ran_as = %output.ran_as, "benchmark ran beside the service");
        Ok(run)
    }

    /// The engine's log as the deployer serves it; a failed read is tried once more (a loaded
    /// cluster API times out now and then) and then recorded as a gap, never dropped silently.
    async fn engine_logs(&self, deployment: &Deployment, warnings: &mut Vec<String>) -> Vec<LogLine> {
        let mut last_error = None;
        for _ in 0..2 {
            match self.deployer.logs(deployment, None).await {
                Ok(lines) => return lines.into_iter().map(|l| LogLine::new(l.time_ns, l.text)).collect(),
                Err(e) => last_error = Some(e),
            }
        }
        if let Some(e) = last_error {
            warnings.push(format!("engine log unavailable from {}: {e}", self.deployer.name()));
        }
        Vec::new()
    }

    async fn teardown(&self, deployment: &Deployment) {
        if let Err(e) = self.deployer.teardown(deployment).await {
            tracing::warn!(id = %deployment.id, error = %e, "teardown failed");
        }
    }

    /// Every analyzer's reading of `evidence`, merged; one that fails is skipped and named in
    /// `gaps`, so the iteration records that its findings are missing.
    async fn analyze(&self, evidence: &Evidence<'_>, gaps: &mut Vec<String>) -> Analysis {
        let mut analysis = Analysis::default();
        for analyzer in &self.analyzers {
            match analyzer.analyze(evidence).await {
                Ok(a) => analysis.merge(a),
                Err(e) => {
                    tracing::warn!(analyzer = analyzer.name(), error = %e, "analyzer failed; its findings are missing");
                    gaps.push(format!("analyzer {} failed, its findings are missing: {e}", analyzer.name()));
                }
            }
        }
        analysis
    }

    /// Asks the planner for the next configuration, from the champion (the last good config);
    /// while nothing has run yet (a baseline that does not start), from the failed config and
    /// its analysis, so a startup rule can repair it instead of redeploying it unchanged.
    /// A plan that fails validation is recorded as a note and replaced by a rollback.
    async fn plan_next(&self, iteration: &Iteration, history: &History, objective: &Objective) -> Option<Plan> {
        let mut full = history.clone();
        full.iterations.retain(|i| i.number != iteration.number);
        full.iterations.push(iteration.clone());
        let current = full
            .champion(objective)
            .or_else(|| full.last_ok())
            .map_or_else(|| iteration.spec.clone(), |i| i.spec.clone());
        let space = self.space_for(&current);
        let analysis = match full.champion(objective) {
            Some(champion) if !iteration.is_ok() => champion.analysis.clone(),
            _ => iteration.analysis.clone(),
        };
        let input = PlanInput { history: &full, analysis: &analysis, space: &space, current: &current, objective };
        let previous = history.iterations.iter().rev().find(|i| i.number < iteration.number);
        Some(self.checked_plan(self.planner.plan(input).await, &current, &full, &space, previous))
    }

    /// The planner's answer as the session takes it: a proposal outside the catalog or the
    /// installed engine's arguments is refused (staying on `current`), settings that failed for a
    /// reason that still holds are stripped, and a planner error is a note, not the end.
    fn checked_plan(
        &self,
        proposal: Result<Plan>,
        current: &ServiceSpec,
        history: &History,
        space: &SearchSpace,
        previous: Option<&Iteration>,
    ) -> Plan {
        let installed = |plan: &Plan| self.engine_args.as_ref().map_or(Ok(()), |a| a.check_flags(&plan.next.flags));
        let staying = |notes: Vec<String>, exhausted: bool| Plan {
            planner: self.planner.name().to_string(),
            changes: Vec::new(),
            next: current.clone(),
            exhausted,
            notes,
        };
        match proposal {
            Ok(plan) => match space.validate(&plan.next).and_then(|()| installed(&plan)) {
                Ok(()) => {
                    let mut plan = without_blamed_settings(plan, current, history, space);
                    let unchecked = space.unchecked_constraints(&plan.next);
                    plan.notes.extend(unchecked.into_iter().map(|u| format!("not checked before deploy: {u}")));
                    plan
                }
                Err(e) => staying(
                    vec![format!("rejected the planner's proposal: {e}; staying on the last good config")],
                    false,
                ),
            },
            // One failure may be passing (a model API that timed out); the second in a row ends
            // the session instead of spending the budget on re-runs of the same configuration.
            Err(e) => staying(
                vec![format!("{PLANNER_FAILED}: {e}; staying on the last good config")],
                planner_failed(previous),
            ),
        }
    }

    fn context_line(&self, iteration: &Iteration) -> String {
        let plans: Vec<String> = self
            .config
            .bench
            .iter()
            .map(|p| {
                let cache =
                    if p.workload.repeat_prompt || p.workload.shared_prefix_tokens > 0 { "warm" } else { "cold" };
                match &p.capacity {
                    // The search sets the load and the length of each of its steps itself.
                    Some(goal) => format!(
                        "`{}`: {}, the highest open-loop rate holding {} ({} s steps, at most {}), {cache}",
                        p.name,
                        p.workload.describe(),
                        goal.describe_slo(),
                        crate::format_number(goal.step_ms as f64 / 1e3),
                        goal.max_steps
                    ),
                    None => format!(
                        "`{}`: {}, {}, {} requests, 1 trial, {cache}",
                        p.name,
                        p.workload.describe(),
                        p.load.describe(),
                        p.requests
                    ),
                }
            })
            .collect();
        let beside = match &self.bench_beside {
            Some(beside) => format!(" Benchmarks run beside the service as `{} bench`.", beside.program.display()),
            None => String::new(),
        };
        format!(
            "Deployer `{}`, model `{}`. Benchmarks: {}.{beside}",
            self.deployer.name(),
            iteration.spec.model,
            plans.join("; ")
        )
    }
}

/// The note that opens a plan whose planner failed.
const PLANNER_FAILED: &str = "planner failed";

fn planner_failed(iteration: Option<&Iteration>) -> bool {
    iteration.and_then(|i| i.plan.as_ref()).is_some_and(|p| p.notes.iter().any(|n| n.starts_with(PLANNER_FAILED)))
}

/// Flat metrics of every report, `<plan>.<metric>`, plus the first (primary) report unprefixed.
pub fn bench_metrics(reports: &[BenchReport]) -> BTreeMap<String, f64> {
    let mut metrics = BTreeMap::new();
    for (i, report) in reports.iter().enumerate() {
        let flat = report.summary.metrics();
        for (k, v) in &flat {
            metrics.insert(format!("{}.{k}", report.plan.name), *v);
        }
        if i == 0 {
            metrics.extend(flat);
        }
    }
    metrics
}
