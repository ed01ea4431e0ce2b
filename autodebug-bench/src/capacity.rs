//! Capacity under an SLO: the highest request rate at which an open-loop run still holds a
//! latency SLO (`ttft.p99`, optionally the p99 of per-request TPOT, and an error budget).
//!
//! The search brackets the capacity by doubling or halving from a start rate, then bisects at
//! geometric midpoints until the bracket is within `tolerance`. Once the bracket is narrow, each
//! probe is repeated (`boundary_trials`, fresh prompts and arrivals each time) and holds only when
//! every trial does, and the rate finally reported is confirmed the same way: it held every time it
//! was tried. Each step ends as soon as its SLO can no longer hold: more completed requests over
//! the TTFT bound than its p99 allows, more failures than the error budget, or every in-flight slot
//! busy when a request is due (the server completes fewer requests than are offered). An
//! overloaded step then costs seconds instead of its whole duration plus the drain of its queue.
//! After a step cut short the search waits for the server to settle (one request at a time until
//! one's first token comes within half the bound), and every step opens with a warmup request,
//! sent alone and left out, so no step inherits another's backlog.
//!
//! In the loop a [`BenchPlan`] asks for the search with a [`CapacityGoal`]
//! ([`BenchPlan::capacity`]); [`SseBenchmarker`] then runs [`CapacitySearch::run_report`], which
//! returns one [`BenchReport`]: the records and summary of the highest rate that held (every trial
//! at it), the window of the whole search, and the outcome in `summary.capacity`, whose flat
//! metric `capacity` the objective can maximize. A search in which no rate held reports capacity 0
//! with a warning and the figures of the lowest rate tried, not an error.
//!
//! ```no_run
//! use autodebug_bench::{CapacitySearch, CapacitySlo, RequestSource, SseBenchmarker};
//! use autodebug_core::{BenchPlan, Endpoint, Load, Workload};
//!
//! # async fn demo() -> Result<(), autodebug_bench::BenchError> {
//! let plan = BenchPlan::new("capacity", Workload::new(512, 128), Load::Sequential, 1);
//! let search = CapacitySearch::new(plan, CapacitySlo::ttft_p99_ms(2000.0));
//! let endpoint = Endpoint::new("http://127.0.0.1:30000", "Qwen/Qwen1.5-0.5B-Chat");
//! let source = RequestSource::from_workload(&search.plan.workload);
//! let capacity = search.run(&SseBenchmarker::default(), &endpoint, &source).await?;
//! println!("{}", capacity.to_table());
//! # Ok(()) }
//! ```

use std::sync::Mutex;
use std::time::{Duration, Instant};

use autodebug_core::{
    Arrival, BenchPlan, BenchReport, CapacityGoal, CapacityOutcome, CapacityProbe, Endpoint, Load, TimeWindow,
};
use serde::Serialize;

use crate::benchmarker::{SseBenchmarker, aggregate};
use crate::error::BenchError;
use crate::workloads::RequestSource;

/// What a rate must hold to count as within capacity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CapacitySlo {
    /// Bound on the p99 of time to first token (queueing in the client included), ms.
    pub ttft_p99_ms: f64,
    /// Bound on the p99 of per-request time per output token, ms.
    pub tpot_p99_ms: Option<f64>,
    /// Largest share of failed requests (0.01 = 1%).
    pub max_error_rate: f64,
}

impl CapacitySlo {
    /// A TTFT bound alone, with a 1% error budget.
    pub fn ttft_p99_ms(ms: f64) -> Self {
        CapacitySlo { ttft_p99_ms: ms, tpot_p99_ms: None, max_error_rate: 0.01 }
    }
}

/// The search: doubling or halving from `start_rate` until the SLO both holds and breaks, then
/// bisection, repeated trials near the boundary, and every overloaded step cut short.
#[derive(Debug, Clone)]
pub struct CapacitySearch {
    /// Workload, warmup, timeouts and endpoint path of every step; its load and length are set per step.
    pub plan: BenchPlan,
    pub slo: CapacitySlo,
    pub arrival: Arrival,
    /// First rate tried, req/s.
    pub start_rate: f64,
    /// The search does not go below or above these, req/s.
    pub min_rate: f64,
    pub max_rate: f64,
    /// Measured time of a step that runs to its end: `ceil(rate * step)` requests (at least
    /// [`MIN_STEP_REQUESTS`] while they fit in three step lengths).
    pub step: Duration,
    /// Stop when the lowest rate that broke the SLO is within this share above the highest that held it.
    pub tolerance: f64,
    /// Trials of each probe once the bracket is within four tolerances, and of the rate reported.
    pub boundary_trials: u32,
    /// At most this many steps in all.
    pub max_steps: usize,
}

/// The longest step [`CapacitySearch`] takes: one measurement of one rate, so a day is a typo.
const MAX_STEP: Duration = Duration::from_secs(86_400);

/// Fewest requests a step sends, so that a p99 at a low rate rests on more than a handful.
pub const MIN_STEP_REQUESTS: usize = 10;

impl CapacitySearch {
    /// Defaults: Poisson arrivals from 1 req/s, within 0.05-1000 req/s, 20 s steps, 5% tolerance,
    /// 2 trials at the boundary, 40 steps at most.
    pub fn new(plan: BenchPlan, slo: CapacitySlo) -> Self {
        CapacitySearch {
            plan,
            slo,
            arrival: Arrival::Poisson,
            start_rate: 1.0,
            min_rate: 0.05,
            max_rate: 1000.0,
            step: Duration::from_secs(20),
            tolerance: 0.05,
            boundary_trials: 2,
            max_steps: 40,
        }
    }

    /// The search a plan's [`CapacityGoal`] asks for: its SLO and search settings, the plan's
    /// arrival process when its load is open-loop (Poisson otherwise).
    pub fn for_goal(plan: BenchPlan, goal: &CapacityGoal) -> Self {
        let arrival = match plan.load {
            Load::Rate { arrival, .. } => arrival,
            _ => Arrival::Poisson,
        };
        CapacitySearch {
            slo: CapacitySlo {
                ttft_p99_ms: goal.ttft_p99_ms,
                tpot_p99_ms: goal.tpot_p99_ms,
                max_error_rate: goal.max_error_rate,
            },
            arrival,
            start_rate: goal.start_rate,
            min_rate: goal.min_rate,
            max_rate: goal.max_rate,
            step: Duration::from_millis(goal.step_ms),
            tolerance: goal.tolerance,
            boundary_trials: goal.boundary_trials,
            max_steps: goal.max_steps as usize,
            plan,
        }
    }

    /// Whether the SLO and the search settings are usable; the error names the field.
    pub fn validate(&self) -> Result<(), BenchError> {
        let invalid = |field: &'static str, message: String| BenchError::InvalidPlan {
            plan: self.plan.name.clone(),
            field,
            message,
        };
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !positive(self.slo.ttft_p99_ms) {
            return Err(invalid(
                "slo.ttft_p99_ms",
                format!("must be a positive number of ms, got {}", self.slo.ttft_p99_ms),
            ));
        }
        if let Some(tpot) = self.slo.tpot_p99_ms.filter(|t| !positive(*t)) {
            return Err(invalid("slo.tpot_p99_ms", format!("must be a positive number of ms, got {tpot}")));
        }
        if !(0.0..1.0).contains(&self.slo.max_error_rate) {
            return Err(invalid("slo.max_error_rate", format!("must be in [0, 1), got {}", self.slo.max_error_rate)));
        }
        if !(positive(self.min_rate) && self.min_rate <= self.start_rate && self.start_rate <= self.max_rate) {
            return Err(invalid(
                "start_rate",
                format!(
                    "needs 0 < min ({}) <= start ({}) <= max ({}) req/s",
                    self.min_rate, self.start_rate, self.max_rate
                ),
            ));
        }
        if !(self.tolerance > 0.0 && self.tolerance < 1.0) {
            return Err(invalid("tolerance", format!("must be in (0, 1), got {}", self.tolerance)));
        }
        if self.step.is_zero() || self.step > MAX_STEP {
            return Err(invalid(
                "step",
                format!("must be longer than 0 and at most {} s, got {:?}", MAX_STEP.as_secs(), self.step),
            ));
        }
        if self.max_steps == 0 {
            return Err(invalid("max_steps", "must be at least 1".into()));
        }
        Ok(())
    }

    /// Runs the search against `endpoint` with the requests of `source`.
    pub async fn run(
        &self,
        bench: &SseBenchmarker,
        endpoint: &Endpoint,
        source: &RequestSource,
    ) -> Result<Capacity, BenchError> {
        self.search(bench, endpoint, source, None).await
    }

    /// Runs the search and reports it as one [`BenchReport`], as the loop's benchmarker does for
    /// a plan with a [`CapacityGoal`]: `plan` is this search's plan; `records` and `summary` are
    /// those of every trial at the highest rate that held (so latency figures exist for the
    /// analyzer and for constraints), `summary.capacity` the outcome, `window` spans the whole
    /// search (telemetry covers every step), and `context` says which rate the figures are from.
    /// When no rate held, capacity is 0, the figures are those of the lowest rate tried, and a
    /// warning says so: an overloaded configuration is a result, not a failure.
    pub async fn run_report(
        &self,
        bench: &SseBenchmarker,
        endpoint: &Endpoint,
        source: &RequestSource,
    ) -> Result<BenchReport, BenchError> {
        let mut kept = Kept::default();
        let capacity = self.search(bench, endpoint, source, Some(&mut kept)).await?;
        self.report(&capacity, kept)
    }

    /// The search's one report (see [`CapacitySearch::run_report`]) from what it kept.
    fn report(&self, capacity: &Capacity, kept: Kept) -> Result<BenchReport, BenchError> {
        let (figures_rate, chosen) = match capacity.rate {
            Some(rate) => (rate, kept.held.into_iter().filter(|(r, _)| *r == rate).map(|(_, report)| report).collect()),
            None => match kept.lowest_broken {
                Some((rate, reports)) => (rate, reports),
                None => (0.0, Vec::new()),
            },
        };
        if chosen.is_empty() {
            return Err(BenchError::InvalidPlan {
                plan: self.plan.name.clone(),
                field: "max_steps",
                message: "allowed no step of the capacity search to run".into(),
            });
        }
        let mut report = aggregate(&chosen);
        let outcome = capacity.outcome();
        let slo = self.goal_text();
        report.plan = self.plan.clone();
        report.window = kept.window.unwrap_or(report.window);
        report.context.load = format!(
            "capacity search ({slo}): {} open-loop {:?} steps of {} s from {} req/s; figures at {} req/s",
            capacity.steps.len(),
            self.arrival,
            autodebug_core::format_number(self.step.as_secs_f64()),
            autodebug_core::format_number(self.start_rate),
            autodebug_core::format_number(figures_rate),
        );
        if !outcome.found() {
            let warning = format!(
                "capacity 0: no rate tried held the SLO ({slo}) every time, down to {} req/s, the lowest tried; \
                 the figures are those of that rate. Lower `min_rate` to search below it, or relax the SLO",
                autodebug_core::format_number(figures_rate)
            );
            tracing::warn!(plan = %self.plan.name, "{warning}");
            report.warnings.insert(0, warning);
        }
        report.summary.capacity = Some(outcome);
        Ok(report)
    }

    /// The SLO as the report's context and warnings state it.
    fn goal_text(&self) -> String {
        CapacityGoal {
            tpot_p99_ms: self.slo.tpot_p99_ms,
            max_error_rate: self.slo.max_error_rate,
            ..CapacityGoal::ttft_p99_ms(self.slo.ttft_p99_ms)
        }
        .describe_slo()
    }

    /// The search itself; with `kept`, the reports [`CapacitySearch::run_report`] may need are kept.
    async fn search(
        &self,
        bench: &SseBenchmarker,
        endpoint: &Endpoint,
        source: &RequestSource,
        mut kept: Option<&mut Kept>,
    ) -> Result<Capacity, BenchError> {
        self.validate()?;
        let started = Instant::now();
        let mut probes = Probes::default();
        let mut next_trial = 0u32;
        let boundary_trials = self.boundary_trials.max(1);
        while probes.steps.len() < self.max_steps {
            let (held, broke) = (probes.held(), probes.broke());
            let (rate, trials) = match (held, broke) {
                (None, None) => (self.start_rate, 1),
                (Some(lo), None) if lo >= self.max_rate => break,
                (Some(lo), None) => ((lo * 2.0).min(self.max_rate), 1),
                (None, Some(hi)) if hi <= self.min_rate => break,
                (None, Some(hi)) => ((hi / 2.0).max(self.min_rate), 1),
                (Some(lo), Some(hi)) if hi / lo <= 1.0 + self.tolerance => {
                    // Narrow enough: the rate to report must have held every time it was tried.
                    let tried = probes.trials_at(lo);
                    if tried >= boundary_trials {
                        break;
                    }
                    (lo, boundary_trials - tried)
                }
                (Some(lo), Some(hi)) => {
                    let narrow = hi / lo <= 1.0 + 4.0 * self.tolerance;
                    ((lo * hi).sqrt(), if narrow { boundary_trials } else { 1 })
                }
            };
            for _ in 0..trials {
                if probes.steps.len() >= self.max_steps {
                    break;
                }
                let (step, report) = self.step_at(bench, endpoint, source, rate, next_trial).await?;
                next_trial += 1;
                let holds = step.holds;
                probes.record(step);
                if let Some(kept) = kept.as_deref_mut() {
                    kept.keep(rate, holds, report, probes.broke());
                }
                if !holds {
                    break;
                }
            }
        }
        let rate = probes.held();
        Ok(Capacity {
            rate,
            broke_at: probes.broke(),
            trials_at_rate: rate.map_or(0, |r| probes.trials_at(r)),
            slo: self.slo,
            bench_seconds: started.elapsed().as_secs_f64(),
            steps: probes.steps,
        })
    }

    /// One open-loop step at `rate`, stopped as soon as its SLO can no longer hold; its verdict
    /// and its report.
    async fn step_at(
        &self,
        bench: &SseBenchmarker,
        endpoint: &Endpoint,
        source: &RequestSource,
        rate: f64,
        trial: u32,
    ) -> Result<(CapacityStep, BenchReport), BenchError> {
        let mut plan = self.plan.clone();
        plan.load = Load::Rate { requests_per_s: rate, arrival: self.arrival };
        plan.requests = ((rate * self.step.as_secs_f64()).ceil() as usize).max(MIN_STEP_REQUESTS);
        // At a low rate the minimum count would stretch a step far past its length; the server is
        // mostly idle there, and three lengths' worth of requests say enough.
        plan.duration_ms = Some(3 * self.step.as_millis() as u64);
        plan.trials = 1;
        // A closed-loop warmup request queues behind whatever an aborted step left in the server,
        // so a step starts on an idle server instead of inheriting the last one's backlog.
        plan.warmup_requests = plan.warmup_requests.max(1);
        let watch = std::sync::Arc::new(SloWatch::new(&self.slo, plan.requests));
        let started = Instant::now();
        let report = bench.run_watched(endpoint, &plan, source, trial, Some(watch.clone())).await?;
        if watch.stopped().is_some() {
            self.settle(bench, endpoint, source, trial).await?;
        }
        let step = CapacityStep::judge(&report, rate, trial, &self.slo, watch.stopped(), started.elapsed());
        tracing::info!(rate, trial, holds = step.holds, ttft_p99_ms = step.ttft_p99_ms, stopped_early = ?step.stopped_early,
            "capacity step");
        Ok((step, report))
    }
}

impl CapacitySearch {
    /// After a step cut short: the requests it abandoned may still be queued in the server (an
    /// engine may notice a closed stream only when it writes the first token), and the next step
    /// would inherit them. Sends one request at a time until one gets its first token within half
    /// the TTFT bound, which FCFS admission gives only once what was queued ahead is gone.
    async fn settle(
        &self,
        bench: &SseBenchmarker,
        endpoint: &Endpoint,
        source: &RequestSource,
        trial: u32,
    ) -> Result<(), BenchError> {
        let mut probe = self.plan.clone();
        probe.name = format!("{} settle", self.plan.name);
        probe.load = Load::Sequential;
        (probe.requests, probe.warmup_requests, probe.trials, probe.duration_ms) = (1, 0, 1, None);
        let deadline = Instant::now() + SETTLE_LIMIT;
        while Instant::now() < deadline {
            let report = bench.run_once(endpoint, &probe, source, trial).await?;
            if report.summary.succeeded > 0 && report.summary.ttft_ms.max <= self.slo.ttft_p99_ms / 2.0 {
                return Ok(());
            }
        }
        tracing::warn!(limit_s = SETTLE_LIMIT.as_secs(), "the server did not settle after an overloaded step");
        Ok(())
    }
}

/// The step reports [`CapacitySearch::run_report`] may still need, and the span of every step.
#[derive(Default)]
struct Kept {
    /// Reports of steps that held, at rates below the lowest that broke so far (the final
    /// capacity is one of them; a rate at or above one that broke never is).
    held: Vec<(f64, BenchReport)>,
    /// Every trial at the lowest rate that broke: the figures reported when no rate holds.
    lowest_broken: Option<(f64, Vec<BenchReport>)>,
    /// From the first step's first send to the last step's last byte.
    window: Option<TimeWindow>,
}

impl Kept {
    fn keep(&mut self, rate: f64, holds: bool, report: BenchReport, broke: Option<f64>) {
        let window = report.window;
        self.window = Some(match self.window {
            Some(w) => TimeWindow::new(w.start_ns.min(window.start_ns), w.end_ns.max(window.end_ns)),
            None => window,
        });
        if holds {
            self.held.push((rate, report));
        } else {
            match &mut self.lowest_broken {
                Some((lowest, reports)) if *lowest == rate => reports.push(report),
                Some((lowest, _)) if *lowest < rate => {}
                _ => self.lowest_broken = Some((rate, vec![report])),
            }
        }
        if let Some(broke) = broke {
            self.held.retain(|(r, _)| *r < broke);
        }
    }
}

/// How long [`CapacitySearch`] waits for a server to settle after an overloaded step.
const SETTLE_LIMIT: Duration = autodebug_core::CapacityGoal::SETTLE_LIMIT;

/// The steps so far and what they say about the bracket.
#[derive(Default)]
struct Probes {
    steps: Vec<CapacityStep>,
}

impl Probes {
    fn record(&mut self, step: CapacityStep) {
        self.steps.push(step);
    }

    /// The lowest rate that broke the SLO in any trial.
    fn broke(&self) -> Option<f64> {
        self.steps.iter().filter(|s| !s.holds).map(|s| s.rate).min_by(f64::total_cmp)
    }

    /// The highest rate below [`Probes::broke`] that held the SLO in every trial.
    fn held(&self) -> Option<f64> {
        let broke = self.broke().unwrap_or(f64::INFINITY);
        self.steps.iter().filter(|s| s.holds && s.rate < broke).map(|s| s.rate).max_by(f64::total_cmp)
    }

    fn trials_at(&self, rate: f64) -> u32 {
        self.steps.iter().filter(|s| s.rate == rate).count() as u32
    }
}

/// One step of the search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapacityStep {
    /// Offered rate, req/s.
    pub rate: f64,
    pub trial: u32,
    pub holds: bool,
    /// Why the step ended before its last request, when it did.
    pub stopped_early: Option<String>,
    pub requests: u64,
    pub failed: u64,
    /// Failed requests by error class.
    pub errors: std::collections::BTreeMap<String, u64>,
    pub ttft_p99_ms: f64,
    pub tpot_p99_ms: f64,
    pub output_throughput: f64,
    /// Wall time of the step, warmup and drain included.
    pub seconds: f64,
}

impl CapacityStep {
    fn judge(
        report: &BenchReport,
        rate: f64,
        trial: u32,
        slo: &CapacitySlo,
        stopped_early: Option<String>,
        took: Duration,
    ) -> Self {
        let s = &report.summary;
        let error_rate = if s.requests == 0 { 1.0 } else { s.failed as f64 / s.requests as f64 };
        let holds = stopped_early.is_none()
            && s.succeeded > 0
            && s.ttft_ms.p99 <= slo.ttft_p99_ms
            && slo.tpot_p99_ms.is_none_or(|bound| s.tpot_ms.p99 <= bound)
            && error_rate <= slo.max_error_rate;
        CapacityStep {
            rate,
            trial,
            holds,
            stopped_early,
            requests: s.requests,
            failed: s.failed,
            errors: s.errors.clone(),
            ttft_p99_ms: s.ttft_ms.p99,
            tpot_p99_ms: s.tpot_ms.p99,
            output_throughput: s.output_throughput,
            seconds: took.as_secs_f64(),
        }
    }
}

/// What the search found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Capacity {
    /// The highest rate that held the SLO in every trial, req/s; `None` when even the lowest tried did not.
    pub rate: Option<f64>,
    /// The lowest rate that broke it; `None` when the highest allowed still held.
    pub broke_at: Option<f64>,
    /// Trials run at `rate` (all held).
    pub trials_at_rate: u32,
    pub slo: CapacitySlo,
    pub steps: Vec<CapacityStep>,
    /// Wall time of the whole search.
    pub bench_seconds: f64,
}

impl Capacity {
    /// The outcome as a [`BenchReport`] carries it (`summary.capacity`): rate 0 when none held.
    pub fn outcome(&self) -> CapacityOutcome {
        CapacityOutcome {
            rate: self.rate.unwrap_or(0.0),
            broke_at: self.broke_at,
            trials_at_rate: self.trials_at_rate,
            steps: self
                .steps
                .iter()
                .map(|s| CapacityProbe {
                    rate: s.rate,
                    holds: s.holds,
                    requests: s.requests,
                    failed: s.failed,
                    ttft_p99_ms: s.ttft_p99_ms,
                    tpot_p99_ms: s.tpot_p99_ms,
                    stopped_early: s.stopped_early.clone(),
                })
                .collect(),
            search_s: self.bench_seconds,
        }
    }

    /// How far above `rate` the capacity may be: `broke_at / rate - 1`.
    pub fn bracket_width(&self) -> Option<f64> {
        Some(self.broke_at? / self.rate? - 1.0)
    }

    /// The steps and the verdict, for a terminal.
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "{:>9}  {:>5}  {:>5}  {:>8}  {:>12}  {:>12}  {:>9}  {:>7}  stopped early\n",
            "rate/s", "trial", "holds", "requests", "ttft.p99 ms", "tpot.p99 ms", "out tok/s", "seconds"
        );
        for s in &self.steps {
            out.push_str(&format!(
                "{:>9.3}  {:>5}  {:>5}  {:>8}  {:>12.1}  {:>12.2}  {:>9.1}  {:>7.1}  {}\n",
                s.rate,
                s.trial,
                if s.holds { "yes" } else { "no" },
                s.requests,
                s.ttft_p99_ms,
                s.tpot_p99_ms,
                s.output_throughput,
                s.seconds,
                s.stopped_early.as_deref().unwrap_or("-"),
            ));
        }
        let slo = match self.slo.tpot_p99_ms {
            Some(tpot) => format!("ttft.p99 <= {} ms, tpot.p99 <= {tpot} ms", self.slo.ttft_p99_ms),
            None => format!("ttft.p99 <= {} ms", self.slo.ttft_p99_ms),
        };
        let verdict = match (self.rate, self.broke_at) {
            (Some(rate), Some(broke)) => format!(
                "capacity {rate:.3} req/s (held {} of {} trials); broke at {broke:.3} req/s, so within +{:.1}%",
                self.trials_at_rate,
                self.trials_at_rate,
                100.0 * (broke / rate - 1.0)
            ),
            (Some(rate), None) => format!("held up to {rate:.3} req/s, the highest rate allowed: raise --max-rate"),
            (None, Some(broke)) => format!("broke already at {broke:.3} req/s, the lowest rate allowed"),
            (None, None) => "no step ran".to_string(),
        };
        out.push_str(&format!(
            "{verdict} ({slo}, error rate <= {}%); {} steps in {:.0} s\n",
            100.0 * self.slo.max_error_rate,
            self.steps.len(),
            self.bench_seconds
        ));
        out
    }
}

/// How often a watched open loop looks at its requests in flight while nothing else wakes it.
pub(crate) const WATCH_TICK: Duration = Duration::from_millis(100);

/// Watches an open-loop step's requests and says when its SLO can no longer hold: a request
/// counts as over the TTFT bound when its first token came later than the bound, or when it is
/// still waiting for one past the bound (it can only be later).
pub(crate) struct SloWatch {
    ttft_limit_ns: u64,
    /// Requests over the TTFT bound that the p99 of `planned` requests still allows (nearest
    /// rank: `planned - ceil(0.99 planned)`); one more and the p99 is over the bound.
    allowed_slow: usize,
    allowed_failed: usize,
    state: Mutex<WatchState>,
    stopped_now: tokio::sync::Notify,
}

#[derive(Default)]
struct WatchState {
    /// Requests due and still without a first token, by index: when each was due.
    awaiting: std::collections::HashMap<usize, Instant>,
    slow: usize,
    failed: usize,
    stopped: Option<String>,
}

impl SloWatch {
    pub(crate) fn new(slo: &CapacitySlo, planned: usize) -> Self {
        SloWatch {
            ttft_limit_ns: (slo.ttft_p99_ms * 1e6) as u64,
            allowed_slow: planned - (0.99 * planned as f64).ceil() as usize,
            allowed_failed: (slo.max_error_rate * planned as f64).floor() as usize,
            state: Mutex::new(WatchState::default()),
            stopped_now: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn due(&self, index: usize, scheduled: Instant) {
        self.lock().awaiting.insert(index, scheduled);
    }

    pub(crate) fn first_token(&self, index: usize, ttft_ns: u64) {
        let mut state = self.lock();
        state.awaiting.remove(&index);
        if ttft_ns > self.ttft_limit_ns {
            state.slow += 1;
        }
    }

    pub(crate) fn ended(&self, index: usize, failed: bool) {
        let mut state = self.lock();
        state.awaiting.remove(&index);
        if failed {
            state.failed += 1;
        }
    }

    /// The reason to stop, once there is one; looks at the requests still waiting at `now`.
    pub(crate) fn check(&self, now: Instant) -> Option<String> {
        let mut state = self.lock();
        if state.stopped.is_none() {
            let limit = Duration::from_nanos(self.ttft_limit_ns);
            let overdue = state.awaiting.values().filter(|due| now.saturating_duration_since(**due) > limit).count();
            let slow = state.slow + overdue;
            if slow > self.allowed_slow {
                state.stopped = Some(format!(
                    "{slow} requests over the TTFT bound of {} ms ({overdue} still waiting), more than the p99 allows ({})",
                    self.ttft_limit_ns / 1_000_000,
                    self.allowed_slow
                ));
            } else if state.failed > self.allowed_failed {
                state.stopped = Some(format!(
                    "{} requests failed, more than the error budget allows ({})",
                    state.failed, self.allowed_failed
                ));
            }
            if state.stopped.is_some() {
                self.stopped_now.notify_waiters();
            }
        }
        state.stopped.clone()
    }

    pub(crate) fn stop(&self, reason: String) {
        self.lock().stopped.get_or_insert(reason);
        self.stopped_now.notify_waiters();
    }

    pub(crate) fn stopped(&self) -> Option<String> {
        self.lock().stopped.clone()
    }

    /// Sleeps until `until`, looking at the requests in flight every [`WATCH_TICK`]; returns
    /// early once the step should stop.
    pub(crate) async fn sleep_until(&self, until: Instant) {
        loop {
            if self.check(Instant::now()).is_some() {
                return;
            }
            let wake = until.min(Instant::now() + WATCH_TICK);
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = self.stopped_now.notified() => return,
            }
            if Instant::now() >= until {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(rate: f64, holds: bool) -> CapacityStep {
        CapacityStep {
            rate,
            trial: 0,
            holds,
            stopped_early: None,
            requests: 10,
            failed: 0,
            errors: Default::default(),
            ttft_p99_ms: 0.0,
            tpot_p99_ms: 0.0,
            output_throughput: 0.0,
            seconds: 1.0,
        }
    }

    /// A step's report: `requests` records with TTFT `ttft_ms`, measured from `start_s` for 1 s.
    fn step_report(requests: usize, ttft_ms: u64, start_s: i128) -> BenchReport {
        let plan = BenchPlan::new("capacity", autodebug_core::Workload::new(8, 8), Load::Sequential, requests);
        let records: Vec<autodebug_core::RequestRecord> = (0..requests)
            .map(|index| autodebug_core::RequestRecord {
                index,
                ttft_ns: Some(ttft_ms * 1_000_000),
                e2e_ns: Some(2 * ttft_ms * 1_000_000),
                output_tokens: Some(8),
                ..Default::default()
            })
            .collect();
        let window = TimeWindow::new(start_s * 1_000_000_000, (start_s + 1) * 1_000_000_000);
        BenchReport {
            plan,
            context: Default::default(),
            summary: crate::summarize(&records, window),
            records,
            window,
            warnings: Vec::new(),
        }
    }

    fn searched(steps: Vec<CapacityStep>) -> (CapacitySearch, Capacity) {
        let plan = BenchPlan::new("chat", autodebug_core::Workload::new(8, 8), Load::Sequential, 1);
        let goal = CapacityGoal { start_rate: 2.0, min_rate: 1.0, ..CapacityGoal::ttft_p99_ms(100.0) };
        let search = CapacitySearch::for_goal(plan.with_capacity(goal.clone()), &goal);
        let mut probes = Probes::default();
        for step in steps {
            probes.record(step);
        }
        let rate = probes.held();
        let capacity = Capacity {
            rate,
            broke_at: probes.broke(),
            trials_at_rate: rate.map_or(0, |r| probes.trials_at(r)),
            slo: search.slo,
            steps: probes.steps,
            bench_seconds: 9.0,
        };
        (search, capacity)
    }

    #[test]
    fn a_goal_searches_with_the_same_defaults_as_the_command_line() {
        let plan = BenchPlan::new("chat", autodebug_core::Workload::new(8, 8), Load::Sequential, 1);
        let from_goal = CapacitySearch::for_goal(plan.clone(), &CapacityGoal::ttft_p99_ms(500.0));
        let from_new = CapacitySearch::new(plan, CapacitySlo::ttft_p99_ms(500.0));
        assert_eq!(format!("{from_goal:?}"), format!("{from_new:?}"));
        let open_loop = BenchPlan::new(
            "chat",
            autodebug_core::Workload::new(8, 8),
            Load::Rate { requests_per_s: 3.0, arrival: Arrival::Constant },
            1,
        );
        assert_eq!(CapacitySearch::for_goal(open_loop, &CapacityGoal::ttft_p99_ms(500.0)).arrival, Arrival::Constant);
    }

    #[test]
    fn the_report_holds_the_figures_of_every_trial_at_the_rate_that_held_and_spans_the_search() {
        let (search, capacity) = searched(vec![step(2.0, true), step(4.0, true), step(8.0, false), step(4.0, true)]);
        let mut kept = Kept::default();
        // The kept reports in the order run: 2 held, 4 held, 8 broke, 4 held again.
        for (at, (rate, holds, ttft)) in
            [(2.0, true, 10), (4.0, true, 40), (8.0, false, 900), (4.0, true, 50)].into_iter().enumerate()
        {
            kept.keep(
                rate,
                holds,
                step_report(5, ttft, 10 * at as i128),
                if rate == 8.0 || at == 3 { Some(8.0) } else { None },
            );
        }
        let report = search.report(&capacity, kept).unwrap();
        let outcome = report.summary.capacity.clone().expect("the outcome");
        assert_eq!(
            (outcome.rate, outcome.broke_at, outcome.trials_at_rate, outcome.steps.len()),
            (4.0, Some(8.0), 2, 4)
        );
        // Both trials at 4 req/s, nothing of the others.
        assert_eq!(report.records.len(), 10);
        assert_eq!((report.summary.ttft_ms.min, report.summary.ttft_ms.max), (40.0, 50.0));
        assert_eq!(report.window, TimeWindow::new(0, 31_000_000_000), "the window spans every step");
        assert_eq!(report.plan.name, "chat");
        assert!(report.context.load.contains("figures at 4 req/s"), "{}", report.context.load);
        assert!(report.warnings.iter().all(|w| !w.contains("capacity 0")), "{:?}", report.warnings);
        assert_eq!(report.summary.metrics().get("capacity"), Some(&4.0));
    }

    #[test]
    fn a_search_where_no_rate_held_reports_capacity_zero_with_a_warning_not_an_error() {
        let (search, capacity) = searched(vec![step(2.0, false), step(1.0, false)]);
        let mut kept = Kept::default();
        kept.keep(2.0, false, step_report(3, 300, 0), Some(2.0));
        kept.keep(1.0, false, step_report(4, 200, 10), Some(1.0));
        let report = search.report(&capacity, kept).unwrap();
        assert_eq!(report.summary.capacity.as_ref().map(|c| c.rate), Some(0.0));
        assert_eq!(report.summary.metrics().get("capacity"), Some(&0.0));
        // The figures of the lowest rate tried, so the analyzer still sees why it broke.
        assert_eq!((report.records.len(), report.summary.ttft_ms.max), (4, 200.0));
        let warning = &report.warnings[0];
        assert!(warning.starts_with("capacity 0") && warning.contains("down to 1 req/s"), "{warning}");
        assert!(warning.contains("ttft.p99 <= 100 ms"), "{warning}");
    }

    #[test]
    fn the_bracket_is_the_highest_rate_that_always_held_below_the_lowest_that_broke() {
        let mut probes = Probes::default();
        for (rate, holds) in [(1.0, true), (2.0, true), (4.0, false), (2.8, true), (3.4, false), (2.8, false)] {
            probes.record(step(rate, holds));
        }
        // 2.8 broke on its second trial: it no longer counts as held.
        assert_eq!((probes.held(), probes.broke()), (Some(2.0), Some(2.8)));
        assert_eq!(probes.trials_at(2.8), 2);
    }

    #[test]
    fn the_watch_stops_a_step_once_its_p99_cannot_hold() {
        let slo = CapacitySlo::ttft_p99_ms(100.0);
        // 200 planned requests: the p99 (rank 198) allows two over the bound, not three.
        let watch = SloWatch::new(&slo, 200);
        assert_eq!(watch.allowed_slow, 2);
        let t0 = Instant::now();
        for index in 0..4 {
            watch.due(index, t0);
        }
        watch.first_token(0, 50_000_000);
        watch.first_token(1, 150_000_000);
        watch.first_token(2, 150_000_000);
        assert_eq!(watch.check(t0 + Duration::from_millis(90)), None, "request 3 may still be on time");
        // Request 3 has waited past the bound without a first token: it can only be late.
        let reason = watch.check(t0 + Duration::from_millis(101)).expect("stopped");
        assert!(reason.contains("3 requests over the TTFT bound of 100 ms (1 still waiting)"), "{reason}");
        // 50 planned requests: none may be over the bound, and one failure is past a 1% budget.
        let watch = SloWatch::new(&slo, 50);
        assert_eq!((watch.allowed_slow, watch.allowed_failed), (0, 0));
        watch.due(0, t0);
        watch.ended(0, true);
        assert!(watch.check(t0).expect("stopped").contains("1 requests failed"));
    }
}
